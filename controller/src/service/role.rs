//! The role this controller plays in a fleet: whether it leads, who does,
//! and whether etcd still answers it. The service reads it before every
//! decision and every answer to a proxy; the fleet's election sets it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What this controller is in the fleet now.
#[derive(Debug)]
pub struct Role {
    leading: AtomicBool,
    /// The leader's advertised URL, as the election says.
    leader_url: Mutex<Option<String>>,
    /// This controller's own advertised URL.
    pub me: String,
    /// When etcd last answered this controller's lease keep-alive (or
    /// granted its lease): the one clock for "in touch" and for "lost the
    /// lease".
    contact: Mutex<Option<Instant>>,
    /// The lease's time to live.
    pub ttl: Duration,
    /// What controllers of this fleet call each other with.
    peer_secret: String,
    /// The client for calls to peers (forwarding, the proxy exchange): it
    /// verifies their certificates against `--ca` when given.
    pub peers: reqwest::Client,
}

impl Role {
    pub fn new(me: &str, ttl: Duration, peer_secret: String, peers: reqwest::Client) -> Role {
        Role {
            me: me.to_owned(),
            ttl,
            peer_secret,
            peers,
            leading: AtomicBool::new(false),
            leader_url: Mutex::new(None),
            contact: Mutex::new(None),
        }
    }

    /// Whether `given` is the fleet's peer secret (in constant time).
    pub fn is_peer(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        !self.peer_secret.is_empty()
            && bool::from(self.peer_secret.as_bytes().ct_eq(given.as_bytes()))
    }

    /// Whether etcd answered this controller's keep-alive within ⅔ of the
    /// lease TTL. A controller cut off from etcd cannot know the state has
    /// not moved on (an abort by the new leader), so it must not serve the
    /// config it last saw as if it were current.
    pub fn in_touch(&self) -> bool {
        self.contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < self.ttl * 2 / 3)
    }

    /// etcd answered this controller's keep-alive just now.
    pub fn touched(&self) {
        *self.contact.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    pub fn leader_url(&self) -> Option<String> {
        self.leader_url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_leader_url(&self, url: Option<String>) {
        *self.leader_url.lock().unwrap_or_else(|e| e.into_inner()) = url;
    }

    /// Sets whether this controller leads; returns whether it did.
    pub fn set_leading(&self, leading: bool) -> bool {
        self.leading.swap(leading, Ordering::SeqCst)
    }

    /// What controllers of this fleet call each other with.
    pub fn peer_secret(&self) -> &str {
        &self.peer_secret
    }
}
