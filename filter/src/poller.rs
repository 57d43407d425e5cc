//! The controller poll, seen from one VM: who polls (the lease), when, and the
//! config record the poller shares with every other VM of the Envoy.

use std::time::Duration;

use dimmer_core::config::ControllerConfig;
use dimmer_core::shared::{
    decode_config_record, encode_config_record, lease_step, Lease, LeaseStep,
};
use proxy_wasm::hostcalls;

pub struct Poller {
    pub settings: ControllerConfig,
    pub proxy_id: String,
    me: u64,
    lease_key: String,
    config_key: String,
    good_key: String,
    seen_cas: Option<u32>,
    in_flight_since: Option<u64>,
    next_poll_ms: u64,
    pub etag: String,
    started_ms: u64,
}

impl Poller {
    pub fn new(
        settings: ControllerConfig,
        plugin: &str,
        proxy_id: String,
        me: u64,
        now: u64,
    ) -> Self {
        // Istio gives every WasmPlugin the same vm_id, so keys carry the plugin name.
        let key = |k: &str| format!("dimmer/{plugin}/{k}");
        Poller {
            settings,
            proxy_id,
            me,
            lease_key: key("lease"),
            config_key: key("config"),
            good_key: key("good_at"),
            seen_cas: None,
            in_flight_since: None,
            next_poll_ms: 0,
            etag: String::new(),
            started_ms: now,
        }
    }

    /// Workers tick four times per poll interval, so a config the poller
    /// publishes reaches every worker well within one interval.
    pub fn tick_period(&self) -> Duration {
        Duration::from_millis((self.settings.poll_interval_ms / 4).clamp(50, 1000))
    }

    fn lease_ttl_ms(&self) -> u64 {
        3 * self.tick_period().as_millis() as u64
    }

    /// The config body another VM published since we last looked, if any.
    pub fn take_shared_config(&mut self) -> Option<Vec<u8>> {
        let (record, cas) = hostcalls::get_shared_data(&self.config_key).ok()?;
        if cas.is_none() || cas == self.seen_cas {
            return None;
        }
        self.seen_cas = cas;
        let record = record?;
        let (etag, body) = decode_config_record(&record)?;
        self.etag = String::from_utf8_lossy(etag).into_owned();
        Some(body.to_vec())
    }

    /// Whether this VM is the poller for this tick.
    pub fn hold_lease(&mut self, now: u64) -> bool {
        let (value, cas) = hostcalls::get_shared_data(&self.lease_key).unwrap_or((None, None));
        let current = value.as_deref().and_then(Lease::decode);
        let renewed = Lease {
            holder: self.me,
            expires_ms: now + self.lease_ttl_ms(),
        }
        .encode();
        match lease_step(current, self.me, now) {
            LeaseStep::Renew => {
                hostcalls::set_shared_data(&self.lease_key, Some(renewed.as_bytes()), cas).is_ok()
            }
            LeaseStep::Take => {
                let _ = hostcalls::set_shared_data(&self.lease_key, Some(renewed.as_bytes()), cas);
                false
            }
            LeaseStep::Wait => false,
        }
    }

    /// Whether a poll is due now; clears a call that never answered, which
    /// Envoy should not allow but must not wedge the poller if it does.
    pub fn due(&mut self, now: u64) -> bool {
        if let Some(since) = self.in_flight_since {
            if now < since + 2 * self.settings.timeout_ms + 1000 {
                return false;
            }
            self.in_flight_since = None;
        }
        now >= self.next_poll_ms
    }

    pub fn sent(&mut self, now: u64) {
        self.in_flight_since = Some(now);
        self.next_poll_ms = now + self.settings.poll_interval_ms;
    }

    pub fn answered(&mut self) {
        self.in_flight_since = None;
    }

    pub fn good(&mut self, now: u64) {
        let _ = hostcalls::set_shared_data(&self.good_key, Some(now.to_string().as_bytes()), None);
    }

    /// Seconds since any poller of this Envoy last heard from the controller.
    pub fn age_seconds(&self, now: u64) -> u64 {
        let good = hostcalls::get_shared_data(&self.good_key)
            .ok()
            .and_then(|(v, _)| v)
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
            .unwrap_or(self.started_ms);
        now.saturating_sub(good) / 1000
    }

    /// Shares a validated config with the other VMs.
    pub fn publish(&mut self, etag: &str, body: &[u8]) {
        let record = encode_config_record(etag, body);
        if hostcalls::set_shared_data(&self.config_key, Some(&record), None).is_ok() {
            self.etag = etag.to_owned();
            // Our own write must not be read back as news on the next tick.
            self.seen_cas = hostcalls::get_shared_data(&self.config_key)
                .ok()
                .and_then(|(_, cas)| cas);
        }
    }
}
