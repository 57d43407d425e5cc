//! Steady load through Envoy from many users, with a log of who was served
//! by which version when: enough to measure a split over time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;

use crate::Client;

#[derive(Debug, Clone)]
pub struct Served {
    /// When the request was sent, in ms since the epoch.
    pub at_ms: u64,
    pub version: String,
    pub status: u16,
    /// The flags header the app received.
    pub flags: String,
    /// Who sent it (`x-user-id`).
    pub user: String,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Served>>>,
    task: Option<JoinHandle<()>>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Load {
    /// About `rps` requests a second, each from one of `users` users.
    pub fn start(client: Client, users: usize, rps: u32) -> Load {
        Self::start_with(client, users, rps, "user", Vec::new())
    }

    /// The same from users `{prefix}-N`, each request carrying `headers` too.
    pub fn start_with(
        client: Client,
        users: usize,
        rps: u32,
        prefix: &str,
        headers: Vec<(String, String)>,
    ) -> Load {
        let prefix = prefix.to_owned();
        let headers = Arc::new(headers);
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (Arc::clone(&stop), Arc::clone(&log));
        let task = tokio::spawn(async move {
            let tick = Duration::from_millis(10);
            let per_tick = (rps as f64 / 100.0).max(0.01);
            let mut owed = 0.0;
            let mut interval = tokio::time::interval(tick);
            let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
            while !s.load(Ordering::Relaxed) {
                interval.tick().await;
                owed += per_tick;
                while owed >= 1.0 {
                    owed -= 1.0;
                    let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                        continue;
                    };
                    let (c, l, extra) = (client.clone(), Arc::clone(&l), Arc::clone(&headers));
                    let id = format!("{prefix}-{}", fastrand::usize(0..users.max(1)));
                    tokio::spawn(async move {
                        let at_ms = now_ms();
                        let mut sent: Vec<(&str, &[u8])> = vec![("x-user-id", id.as_bytes())];
                        sent.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
                        let reply = c.get("/", &sent).await;
                        let (version, status, flags) = match reply {
                            Ok(r) => (r.version, r.status, r.saw_flags),
                            Err(_) => (String::new(), 0, String::new()),
                        };
                        l.lock().unwrap_or_else(|e| e.into_inner()).push(Served {
                            at_ms,
                            version,
                            status,
                            flags,
                            user: id,
                        });
                        drop(permit);
                    });
                }
            }
        });
        Load {
            stop,
            log,
            task: Some(task),
        }
    }

    pub fn served(&self) -> Vec<Served> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}
