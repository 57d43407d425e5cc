//! `make bench-registry`: what sharing the proxy lists costs a fleet's
//! controllers (docs/operations.md, "The proxies, fleet-wide"). For a fleet
//! of P proxies polling three controllers evenly, one controller's side of
//! an exchange: its own list as JSON (size, encoding), two peers' lists
//! decoded and absorbed, and the merged view every status and every look
//! reads. The controller's own registry code; no network (the HTTP round
//! trip is one request per peer per second).

use std::time::{Duration, Instant};

use dimmer::service::registry::{Limits, ProxySeen, Registry};

const CONTROLLERS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider: one for the process.
    dimmer::tls::install_provider();
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    println!(
        "| proxies | one list's JSON | encode | decode + absorb (2 peers) | merged view rebuilt | a look, all applied | a look, all behind | the sorted listing |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for proxies in sizes {
        let per = proxies / CONTROLLERS;
        let now = 1_800_000_000_000u64;
        let limits = Limits {
            max_proxies: proxies,
            ..Limits::default()
        };
        let registry = Registry::new(limits);
        for i in 0..per {
            registry.record(
                &format!("edge-c0-{i:06}.prod.example"),
                41,
                now - (i as u64 % 900),
            )?;
        }
        let peer_list = |c: usize| -> Vec<ProxySeen> {
            (0..per)
                .map(|i| ProxySeen {
                    id: format!("edge-c{c}-{i:06}.prod.example"),
                    revision: 41,
                    last_seen_ms: now - (i as u64 % 900),
                    interval_ms: 0,
                })
                .collect()
        };
        let peers: Vec<Vec<u8>> = (1..CONTROLLERS)
            .map(|c| serde_json::to_vec(&peer_list(c)))
            .collect::<Result<_, _>>()?;
        let mine = registry.local(now);
        let bytes = serde_json::to_vec(&mine)?.len();
        let reps = if proxies > 20_000 { 7 } else { 21 };
        let encode = time(reps, || serde_json::to_vec(&registry.local(now)));
        let absorb = time(reps, || {
            for (i, body) in peers.iter().enumerate() {
                if let Ok(list) = serde_json::from_slice::<Vec<ProxySeen>>(body) {
                    registry.absorb(&format!("http://peer-{i}"), list);
                }
            }
        });
        assert_eq!(registry.all(now).len(), per * CONTROLLERS);
        // Each later `now` is past the view's 250 ms: rebuilt every time.
        let mut later = now;
        let rebuilt = time(reps, || {
            later += 300;
            registry.standing(41, now - 1000, later)
        });
        let applied = time(reps, || registry.standing(41, now - 1000, later));
        let behind = time(reps, || registry.standing(42, now - 1000, later));
        let listing = time(reps, || registry.all(later));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {proxies} | {:.2} MB ({:.0} B a proxy) | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} ms | {:.1} ms | {:.1} ms |",
            bytes as f64 / 1e6,
            bytes as f64 / per as f64,
            ms(encode),
            ms(absorb),
            ms(rebuilt),
            ms(applied),
            ms(behind),
            ms(listing),
        );
    }
    Ok(())
}
