//! The one clock the service reads: milliseconds since the Unix epoch.
//! Decisions get the time passed in from here; nothing in
//! `dimmer_decide` reads a clock of its own.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
