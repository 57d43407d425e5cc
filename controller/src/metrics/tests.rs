//! The metrics layer's tests that read whole expositions into snapshots.

use dimmer_decide::counts::{shadow_key, Snapshot, VersionCounts, INF_BOUND};

use super::exposition::{self, parse_exposition};

const TEXT: &str = r#"# TYPE dimmer_requests counter
dimmer_requests{rollout="checkout",version="v1",class="2xx"} 990
dimmer_requests{rollout="checkout",version="v1",class="5xx"} 10
dimmer_requests{rollout="checkout",version="v2",class="2xx"} 95
dimmer_requests{rollout="checkout",version="v2",class="reset"} 5
dimmer_requests{rollout="search",version="v2",class="5xx"} 1000
# TYPE dimmer_latency_ms histogram
dimmer_latency_ms_bucket{rollout="checkout",version="v2",le="10"} 50
dimmer_latency_ms_bucket{rollout="checkout",version="v2",le="100"} 90
dimmer_latency_ms_bucket{rollout="checkout",version="v2",le="+Inf"} 100
# TYPE dimmer_shadow_requests counter
dimmer_shadow_requests{rollout="checkout",version="v2",class="2xx"} 7
dimmer_shadow_requests{rollout="checkout",version="v2",class="5xx"} 3
# TYPE dimmer_shadow_latency_ms histogram
dimmer_shadow_latency_ms_bucket{rollout="checkout",version="v2",le="10"} 9
dimmer_shadow_latency_ms_bucket{rollout="checkout",version="v2",le="+Inf"} 10
"#;

#[test]
fn reads_one_rollout() {
    let s = parse_exposition(TEXT, "checkout");
    assert_eq!(s.version("v1").requests(), 1000.0);
    assert_eq!(s.version("v1").error_rate(), Some(0.01));
    assert_eq!(s.version("v2").errors(), 5.0);
    assert_eq!(s.version("v2").latency.len(), 3);
    assert_eq!(s.version("v2").slower_than(100.0), 10.0);
    assert_eq!(s.version("v2").slower_than(50.0), 50.0);
    let p50 = s.version("v2").latency_quantile(0.5).unwrap();
    assert!((p50 - 10.0).abs() < 1e-9, "{p50}");
    let p70 = s.version("v2").latency_quantile(0.7).unwrap();
    assert!((p70 - 55.0).abs() < 1e-9, "{p70}");
    // Mirrored requests are apart from the users' requests of v2.
    assert_eq!(s.version("v2").requests(), 100.0);
    let shadow = s.version(&shadow_key("v2"));
    assert_eq!((shadow.requests(), shadow.errors()), (10.0, 3.0));
    assert_eq!(shadow.slower_than(10.0), 1.0);
}

#[test]
fn envoys_cluster_stats_become_a_rollouts_versions() {
    let text = r#"# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="app-v1"} 900
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="app-v1"} 9
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="app-v2"} 80
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="app-v2"} 20
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="dimmer-controller"} 50
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="app-v2",le="10"} 70
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="app-v2",le="+Inf"} 100
"#;
    let clusters = exposition::parse_clusters(text);
    let versions = [
        ("v1".to_string(), "app-v1".to_string()),
        ("v2".into(), "app-v2".into()),
    ]
    .into();
    let s = Snapshot::of_clusters(&clusters, &versions);
    assert_eq!(s.version("v1").requests(), 909.0);
    assert_eq!(s.version("v2").error_rate(), Some(0.2));
    assert_eq!(s.version("v2").slower_than(10.0), 30.0);
    assert_eq!(s.sources[""].len(), 2, "only the rollout's clusters");
}

#[test]
fn a_cluster_without_responses_yet_is_there_at_zero() {
    // Before a cluster's first response Envoy has its total, but no class
    // counters and no time histogram: the rollout is reported, at zero, so
    // its step's baseline comes before the first requests.
    let text = r#"envoy_cluster_upstream_rq_total{envoy_cluster_name="app-v1"} 0
envoy_cluster_upstream_rq_total{envoy_cluster_name="app-v2"} 0
"#;
    let versions = [
        ("v1".to_string(), "app-v1".to_string()),
        ("v2".into(), "app-v2".into()),
    ]
    .into();
    let s = Snapshot::of_clusters(&exposition::parse_clusters(text), &versions);
    assert!(!s.is_empty());
    assert_eq!(s.version("v1").requests(), 0.0);
    assert!(Snapshot::of_clusters(&exposition::parse_clusters(""), &versions).is_empty());
}

#[test]
fn snapshots_survive_json_with_their_inf_bucket() {
    let s = parse_exposition(TEXT, "checkout");
    let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert_eq!(
        back.version("v2").latency.last().map(|b| b.0),
        Some(INF_BOUND)
    );
}

#[test]
fn deltas_survive_counter_resets() {
    let before = parse_exposition(TEXT, "checkout");
    let mut after = before.clone();
    after
        .counts_mut("", "v1")
        .by_class
        .insert("2xx".into(), 1090.0);
    // An Envoy restart: v2 counts start again from zero.
    after
        .counts_mut("", "v2")
        .by_class
        .insert("2xx".into(), 7.0);
    let d = after.since(&before);
    assert_eq!(d.version("v1").by_class["2xx"], 100.0);
    assert_eq!(d.version("v1").by_class["5xx"], 0.0);
    assert_eq!(d.version("v2").by_class["2xx"], 7.0);
}

#[test]
fn one_proxy_restarting_does_not_make_the_others_old_counts_new() {
    let ok = |n: f64| {
        let mut c = VersionCounts::default();
        c.by_class.insert("2xx".into(), n);
        c.latency = vec![(100.0, n), (INF_BOUND, n)];
        c
    };
    let mut before = Snapshot::default();
    *before.counts_mut("edge-a", "v2") = ok(1000.0);
    *before.counts_mut("edge-b", "v2") = ok(1000.0);
    let mut after = Snapshot::default();
    *after.counts_mut("edge-a", "v2") = ok(1010.0);
    // edge-b restarted: its counters start again.
    *after.counts_mut("edge-b", "v2") = ok(5.0);
    let d = after.since(&before).version("v2");
    assert_eq!(d.requests(), 15.0);
    assert_eq!(d.latency, vec![(100.0, 15.0), (INF_BOUND, 15.0)]);
    // Summed first, the restart would have counted edge-a's old 1000 again.
    assert_eq!(after.version("v2").requests(), 1015.0);
    assert!(!after.is_empty());
    assert!(Snapshot::default().is_empty());
}

/// A source that accepts the connection and never answers, and one that
/// cannot be connected to, are told apart — by the metrics sources and by
/// the team-metric providers alike.
mod hangs {
    use std::time::Duration;

    use crate::metrics::envoy_admin::EnvoyAdmin;
    use crate::metrics::providers::{HttpQuery, Query};
    use crate::metrics::MetricsSource;

    /// A listener that accepts and never answers; its address.
    async fn silent() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        format!("http://{addr}")
    }

    /// An address nothing listens on.
    async fn closed() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_hanging_source_did_not_answer_and_a_closed_one_cannot_be_reached() {
        let hang = EnvoyAdmin::new(&silent().await, Duration::from_millis(300));
        let e = hang.health().await.unwrap_err().to_string();
        assert!(e.contains("did not answer within 300ms"), "{e}");
        let gone = EnvoyAdmin::new(&closed().await, Duration::from_millis(300));
        let e = gone.health().await.unwrap_err().to_string();
        assert!(e.contains("cannot reach"), "{e}");
    }

    #[tokio::test]
    async fn a_hanging_provider_did_not_answer_and_a_closed_one_cannot_be_reached() {
        let spec = |addr: &str| -> dimmer_decide::spec::metric::Provider {
            serde_json::from_value(serde_json::json!({"prometheus": {"address": addr}})).unwrap()
        };
        let q = HttpQuery::new(None, Duration::from_millis(300));
        let e = q.value(&spec(&silent().await), "up").await.unwrap_err();
        assert!(e.contains("did not answer within 300ms"), "{e}");
        let e = q.value(&spec(&closed().await), "up").await.unwrap_err();
        assert!(e.contains("cannot reach"), "{e}");
    }
}
