//! State changes, POSTed as JSON to the configured URLs, so people can wire
//! chat and paging. Deliveries leave through a bounded queue and are retried
//! with backoff by a task of their own: a slow or dead receiver never delays
//! a decision, and every failure is counted per URL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

/// How a delivery is tried.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub queue: usize,
    pub attempts: u32,
    pub first_backoff: Duration,
    pub timeout: Duration,
    /// Deliveries in flight at once, across URLs.
    pub concurrency: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            queue: 1024,
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
            concurrency: 16,
        }
    }
}

/// What happened to one URL's deliveries.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HookStats {
    pub delivered: u64,
    /// Attempts that failed and were tried again.
    pub retried: u64,
    /// Deliveries given up after every attempt failed.
    pub failed: u64,
    /// Deliveries never tried: the queue was full.
    pub dropped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

struct Delivery {
    url: String,
    body: serde_json::Value,
}

#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Delivery>,
    stats: Arc<Mutex<BTreeMap<String, HookStats>>>,
}

impl Notifier {
    /// Starts the delivery task on the current runtime.
    pub fn start(policy: Policy) -> Notifier {
        let (tx, rx) = mpsc::channel(policy.queue.max(1));
        let stats = Arc::new(Mutex::new(BTreeMap::new()));
        tokio::spawn(deliver_all(rx, policy, Arc::clone(&stats)));
        Notifier { tx, stats }
    }

    /// Queues `body` for each URL; never waits.
    pub fn notify(&self, urls: &[String], body: &serde_json::Value) {
        for url in urls {
            let sent = self.tx.try_send(Delivery {
                url: url.clone(),
                body: body.clone(),
            });
            if sent.is_err() {
                tracing::warn!(%url, "webhook queue full: delivery dropped");
                self.update(url, |s| s.dropped += 1);
            }
        }
    }

    pub fn stats(&self) -> BTreeMap<String, HookStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, url: &str, f: impl FnOnce(&mut HookStats)) {
        update(&self.stats, url, f);
    }
}

fn update(stats: &Mutex<BTreeMap<String, HookStats>>, url: &str, f: impl FnOnce(&mut HookStats)) {
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    f(s.entry(url.to_owned()).or_default());
}

async fn deliver_all(
    mut rx: mpsc::Receiver<Delivery>,
    policy: Policy,
    stats: Arc<Mutex<BTreeMap<String, HookStats>>>,
) {
    let http = crate::tls::client_builder()
        .connect_timeout(Duration::from_secs(1).min(policy.timeout))
        .timeout(policy.timeout)
        .build()
        .unwrap_or_default();
    let slots = Arc::new(Semaphore::new(policy.concurrency.max(1)));
    while let Some(d) = rx.recv().await {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (http, stats) = (http.clone(), Arc::clone(&stats));
        tokio::spawn(async move {
            deliver(&http, &d, policy, &stats).await;
            drop(permit);
        });
    }
}

async fn deliver(
    http: &reqwest::Client,
    d: &Delivery,
    policy: Policy,
    stats: &Mutex<BTreeMap<String, HookStats>>,
) {
    let mut backoff = policy.first_backoff;
    for attempt in 1..=policy.attempts.max(1) {
        let error = match http.post(&d.url).json(&d.body).send().await {
            Ok(r) if r.status().is_success() => {
                update(stats, &d.url, |s| s.delivered += 1);
                return;
            }
            Ok(r) => format!("answered {}", r.status().as_u16()),
            Err(e) => e.to_string(),
        };
        tracing::warn!(url = %d.url, attempt, %error, "webhook delivery failed");
        if attempt == policy.attempts.max(1) {
            update(stats, &d.url, |s| {
                s.failed += 1;
                s.last_error = Some(error);
            });
            return;
        }
        update(stats, &d.url, |s| {
            s.retried += 1;
            s.last_error = Some(error);
        });
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_receiver_is_retried_then_counted_and_a_full_queue_drops() {
        // Nothing listens on this port: every attempt is refused at once.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/hook", l.local_addr().unwrap())
        };
        let n = Notifier::start(Policy {
            queue: 2,
            attempts: 3,
            first_backoff: Duration::from_millis(10),
            timeout: Duration::from_millis(500),
            concurrency: 1,
        });
        let body = serde_json::json!({"x": 1});
        for _ in 0..10 {
            n.notify(std::slice::from_ref(&dead), &body);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let s = n.stats().remove(&dead).unwrap_or_default();
        assert!(s.dropped > 0, "{s:?}");
        assert!(s.failed > 0, "{s:?}");
        assert_eq!(s.retried, 2 * s.failed, "{s:?}");
        assert_eq!(s.failed + s.dropped, 10, "{s:?}");
        assert!(s.last_error.is_some());
    }
}
