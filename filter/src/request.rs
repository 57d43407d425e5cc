//! The per-request context: route on request headers, note the status on
//! response headers, count on log.

use std::cell::Cell;
use std::rc::Rc;

use dimmer_core::decide::set_cookie_value;
use dimmer_core::stats::StatusClass;
use dimmer_core::{decide, Decision, Request};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::host::{self, now_us, EnvoyRequest};
use crate::metrics::VersionStats;
use crate::root::Active;

pub struct DimmerRequest {
    active: Rc<Active>,
    rng_seed: Rc<Cell<u64>>,
    stats: Option<VersionStats>,
    started_us: u64,
    class: StatusClass,
    set_cookie: Option<String>,
}

impl DimmerRequest {
    pub fn new(active: Rc<Active>, rng_seed: Rc<Cell<u64>>) -> Self {
        DimmerRequest {
            active,
            rng_seed,
            stats: None,
            started_us: 0,
            class: StatusClass::Reset,
            set_cookie: None,
        }
    }

    fn route(&mut self) {
        let cfg = &self.active.cfg;
        let mut rng = fastrand::Rng::with_seed(self.rng_seed.get());
        let decision = decide(cfg, &EnvoyRequest, &mut || rng.u64(..));
        self.rng_seed.set(rng.get_seed());
        match decision {
            Decision::NoMatch => {
                // A client must not steer routes by sending the header itself.
                if EnvoyRequest.header(&cfg.route_header).is_some() {
                    host::set_request_header(&cfg.route_header, None);
                }
            }
            Decision::Route(route) => {
                let Some(rollout) = cfg.rollouts.get(route.rollout) else {
                    return;
                };
                let Some(version) = rollout.versions.get(route.version) else {
                    return;
                };
                // Envoy clears its route cache itself when a wasm filter
                // changes request headers (ABI 0.2.1), so the route follows.
                host::set_request_header(&cfg.route_header, Some(version));
                self.stats = self
                    .active
                    .stats
                    .get(route.rollout)
                    .and_then(|versions| versions.get(route.version))
                    .copied();
                self.started_us = now_us();
                self.set_cookie = route.new_cookie.map(|id| set_cookie_value(rollout, &id));
            }
        }
    }
}

impl Context for DimmerRequest {}

impl HttpContext for DimmerRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.route();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.stats.is_some() {
            if let Some(status) = host::response_header(":status") {
                self.class = StatusClass::from_status(&status);
            }
        }
        if let Some(cookie) = self.set_cookie.take() {
            host::add_response_header("set-cookie", &cookie);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(stats) = &self.stats {
            let elapsed_ms = now_us().saturating_sub(self.started_us) / 1000;
            stats.record(self.class, elapsed_ms);
        }
    }
}
