//! The root context: one per VM. Holds the parsed config, swaps it when a new
//! one arrives, and (on the VM that holds the lease) polls the controller.

use std::cell::Cell;
use std::rc::Rc;

use dimmer_core::{parse_config_doc, parse_plugin_config, Compiled};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::active::Active;
use crate::host::{self, now_ms, now_us, property, random_seed};
use crate::metrics::{mix_table, shadow_table, variant_table, version_table, Health, Registry};
use crate::poller::Poller;
use crate::request::DimmerRequest;

/// How often a VM without a poller adds its flags' counts to Envoy's.
const FLUSH_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

pub struct DimmerRoot {
    me: u64,
    rng_seed: Rc<Cell<u64>>,
    registry: Registry,
    health: Health,
    route_header: String,
    flags_header: String,
    active: Rc<Active>,
    poller: Option<Poller>,
}

impl DimmerRoot {
    pub fn new() -> Self {
        let me = random_seed();
        DimmerRoot {
            me,
            rng_seed: Rc::new(Cell::new(random_seed() ^ me.rotate_left(17))),
            registry: Registry::default(),
            health: Health::default(),
            route_header: String::new(),
            flags_header: String::new(),
            active: Rc::new(Active {
                cfg: Compiled::new(0, "", &[]),
                stats: Vec::new(),
                shadow_stats: Vec::new(),
                flag_stats: Vec::new(),
                mix: Vec::new(),
                scratch: Default::default(),
            }),
            poller: None,
        }
    }

    fn install(&mut self, cfg: Compiled) {
        let stats = version_table(&cfg, &mut self.registry);
        let flag_stats = variant_table(&cfg.flags, &mut self.registry);
        let shadow_stats = shadow_table(&cfg, &mut self.registry);
        let mix = mix_table(&cfg, &mut self.registry, &self.active.mix);
        self.active = Rc::new(Active {
            cfg,
            stats,
            shadow_stats,
            flag_stats,
            mix,
            scratch: Default::default(),
        });
    }

    /// Applies a controller config body; `Err` leaves the last good one serving.
    fn apply_doc(&mut self, body: &[u8]) -> Result<u64, dimmer_core::ConfigError> {
        let started = now_us();
        let doc = parse_config_doc(body)?;
        let cfg = Compiled::new(doc.revision, &self.route_header, &doc.rollouts)
            .with_flags(&self.flags_header, &doc.flags);
        self.install(cfg);
        self.health.apply_took(now_us().saturating_sub(started));
        Ok(doc.revision)
    }

    fn poll(&mut self, now: u64) {
        let Some(p) = self.poller.as_ref() else {
            return;
        };
        let s = &p.settings;
        let revision = self.active.cfg.revision.to_string();
        let bearer = s.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            (":method", "GET"),
            (":path", s.path.as_str()),
            (":authority", s.authority.as_deref().unwrap_or(&s.cluster)),
            ("x-dimmer-proxy-id", p.proxy_id.as_str()),
            ("x-dimmer-revision", revision.as_str()),
        ];
        if !p.etag.is_empty() {
            headers.push(("if-none-match", p.etag.as_str()));
        }
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let timeout = std::time::Duration::from_millis(s.timeout_ms);
        let result = host::dispatch_http_call(&s.cluster, headers, timeout);
        let cluster = s.cluster.clone();
        let Some(p) = self.poller.as_mut() else {
            return;
        };
        match result {
            Ok(_) => p.sent(now),
            Err(status) => {
                // Still wait an interval: a missing cluster must not become a busy loop.
                p.sent(now);
                p.answered();
                self.health.poll_failed();
                log::warn!("cannot poll cluster {cluster:?}: {status:?}");
            }
        }
    }
}

impl Context for DimmerRoot {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _: usize) {
        let now = now_ms();
        let status = host::call_response_header(":status");
        let etag = host::call_response_header("etag")
            .map(|e| String::from_utf8_lossy(&e).into_owned())
            .unwrap_or_default();
        let body = host::call_response_body(body_size);
        let Some(p) = self.poller.as_mut() else {
            return;
        };
        p.answered();
        self.health.polled();
        match status.as_deref() {
            Some(b"200") => match self.apply_doc(&body) {
                Ok(revision) => {
                    if let Some(p) = self.poller.as_mut() {
                        p.good(now);
                        p.publish(&etag, &body);
                    }
                    self.health.applied(revision);
                    log::info!("applied config revision {revision}");
                }
                Err(e) => {
                    // The controller is reachable, so the config is not stale:
                    // the weights are just not taken.
                    self.health.rejected();
                    log::warn!("rejected config from controller: {e}");
                }
            },
            Some(b"304") => p.good(now),
            other => {
                self.health.poll_failed();
                let shown = other.map(|s| String::from_utf8_lossy(s).into_owned());
                log::warn!("poll failed, status {shown:?}; keeping the last good config");
            }
        }
    }
}

impl RootContext for DimmerRoot {
    // Envoy first runs this in a throw-away VM to validate the config, so it
    // only parses, defines stats and sets the tick: no shared data, no calls.
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = host::plugin_configuration();
        let cfg = match parse_plugin_config(&bytes) {
            Ok(cfg) => cfg,
            Err(e) => {
                log::error!("refusing plugin configuration: {e}");
                return false;
            }
        };
        self.health = Health::define(&mut self.registry);
        self.route_header = cfg.route_header.clone();
        self.flags_header = cfg.flags_header.clone();
        self.install(
            Compiled::new(0, &cfg.route_header, &cfg.rollouts)
                .with_flags(&cfg.flags_header, &cfg.flags),
        );
        if cfg.controller.is_none() && !cfg.flags.is_empty() {
            host::set_tick_period(FLUSH_PERIOD);
        }
        if let Some(controller) = cfg.controller {
            let plugin = property(vec!["plugin_name"]).unwrap_or_else(|| "dimmer".into());
            // Envoy 1.40 answers `xds.node.id`; older ones `node.id`.
            let proxy_id = property(vec!["xds", "node", "id"])
                .or_else(|| property(vec!["node", "id"]))
                .unwrap_or_else(|| format!("envoy-{:016x}", self.me));
            let poller = Poller::new(controller, &plugin, proxy_id, self.me, now_ms());
            host::set_tick_period(poller.tick_period());
            self.poller = Some(poller);
        }
        true
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        self.health.vm_memory(host::vm_memory_bytes());
        self.active.flush();
        let Some(p) = self.poller.as_mut() else {
            return;
        };
        if let Some(body) = p.take_shared_config() {
            if let Err(e) = self.apply_doc(&body) {
                log::warn!("shared config unreadable, keeping the last good one: {e}");
            }
        }
        let Some(p) = self.poller.as_mut() else {
            return;
        };
        if !p.hold_lease(now) {
            return;
        }
        self.health.age(p.age_seconds(now));
        if p.due(now) {
            self.poll(now);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(DimmerRequest::new(
            Rc::clone(&self.active),
            Rc::clone(&self.rng_seed),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
