//! The per-request context: route on request headers, note the status on
//! response headers, count on log.

use std::cell::Cell;
use std::rc::Rc;

use dimmer_core::decide::set_cookie_value;
use dimmer_core::flags::{write_header_value, HeaderContext};
use dimmer_core::stats::StatusClass;
use dimmer_core::{decide, Decision, HeaderPairs};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use smallvec::SmallVec;

use crate::active::{Active, Scratch};
use crate::host::{self, now_us};
use crate::metrics::VersionStats;

pub struct DimmerRequest {
    active: Rc<Active>,
    rng_seed: Rc<Cell<u64>>,
    stats: Option<VersionStats>,
    /// `(flag, variant)` of every flag that applied, to count on log.
    flags: SmallVec<[(u16, u16); 16]>,
    /// Whether something records this request's latency: the clock is
    /// read only then.
    timed: bool,
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
            flags: SmallVec::new(),
            timed: false,
            started_us: 0,
            class: StatusClass::Reset,
            set_cookie: None,
        }
    }

    fn route(&mut self) {
        let active = Rc::clone(&self.active);
        // The VM's buffers, or fresh ones should they be held (never: a VM
        // runs one callback at a time).
        let mut held = active.scratch.try_borrow_mut();
        let mut fresh = Scratch::default();
        let scratch = match held.as_deref_mut() {
            Ok(s) => s,
            Err(_) => &mut fresh,
        };
        // Every header in one host call, laid out in the kept index: the
        // rollout's identity and overrides, the flags', the client's copies
        // of the two headers the filter writes, are then lookups here, not
        // calls (bench/RESULTS.md).
        let req = host::request_header_pairs(std::mem::take(&mut scratch.index));
        self.route_by(&active, &req, scratch);
        scratch.index = req.into_index();
    }

    fn route_by(&mut self, active: &Active, req: &HeaderPairs, scratch: &mut Scratch) {
        let cfg = &active.cfg;
        let mut rng = fastrand::Rng::with_seed(self.rng_seed.get());
        let decision = decide(cfg, req, &mut || rng.u64(..));
        if cfg.flags.is_empty() {
            if req.may_have(&cfg.flags_header) {
                // A client must not set flags for the app either.
                host::set_request_header(&cfg.flags_header, None);
            }
        } else {
            self.flags(active, req, scratch, &mut rng);
        }
        self.rng_seed.set(rng.get_seed());
        match decision {
            Decision::NoMatch | Decision::Shadow { version: None, .. } => {
                // A client must not steer routes by sending the header itself.
                if req.may_have(&cfg.route_header) {
                    host::set_request_header(&cfg.route_header, None);
                }
            }
            Decision::Shadow {
                rollout,
                version: Some(v),
            } => {
                // A mirror joins no cohort and sets no cookie; it goes to the
                // shadow version and is counted apart from users' requests.
                let Some(version) = cfg.rollouts.get(rollout).and_then(|r| r.versions.get(v))
                else {
                    return;
                };
                host::set_request_header(&cfg.route_header, Some(version));
                self.stats = active.shadow_stats.get(rollout).copied().flatten();
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
                // Counted by Envoy's cluster stats instead: no status, no
                // clock, nothing recorded.
                if rollout.count {
                    self.stats = active
                        .stats
                        .get(route.rollout)
                        .and_then(|versions| versions.get(route.version))
                        .copied();
                }
                self.set_cookie = route.new_cookie.map(|id| set_cookie_value(rollout, &id));
                // Who the request is from, for the cohort's mix: only for
                // rollouts that name dimensions, so others read nothing more.
                if let Some(dims) = active.mix.get(route.rollout) {
                    for (d, stats) in rollout.dimensions.iter().zip(dims) {
                        let raw = dimmer_core::mix::raw_value(d, req);
                        let Ok(mut top) = stats.top.try_borrow_mut() else {
                            continue;
                        };
                        let slot = top.observe(raw.as_deref());
                        drop(top);
                        stats.count(slot, route.version);
                    }
                }
            }
        }
        self.timed |= self.stats.is_some_and(|s| s.timed());
        if self.timed {
            self.started_us = now_us();
        }
    }

    /// Evaluates every flag and writes the flags header, replacing the
    /// client's (or removing it when no flag applies).
    fn flags(
        &mut self,
        active: &Active,
        req: &HeaderPairs,
        scratch: &mut Scratch,
        rng: &mut fastrand::Rng,
    ) {
        let flags = &active.cfg.flags;
        let name = &active.cfg.flags_header;
        let Scratch {
            results, header, ..
        } = scratch;
        flags.evaluate_into(
            &HeaderContext::new(flags, req),
            &mut || rng.u64(..),
            results,
        );
        for (f, (flag, e)) in flags.flags.iter().zip(results.iter()).enumerate() {
            if let Some(e) = e {
                self.flags.push((f as u16, e.variant as u16));
                // Its variants' histograms exactly when it records latency.
                self.timed |= flag.record_latency;
            }
        }
        write_header_value(flags, results, header);
        if header.is_empty() {
            if req.may_have(name) {
                host::set_request_header(name, None);
            }
        } else {
            host::set_request_header(name, Some(header));
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
        if self.stats.is_some() || !self.flags.is_empty() {
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
        if self.stats.is_none() && self.flags.is_empty() {
            return;
        }
        let elapsed_ms = if self.timed {
            now_us().saturating_sub(self.started_us) / 1000
        } else {
            0
        };
        if let Some(stats) = &self.stats {
            stats.record(self.class, elapsed_ms);
        }
        for &(f, v) in &self.flags {
            let stats = self.active.flag_stats.get(usize::from(f));
            if let Some(s) = stats.and_then(|variants| variants.get(usize::from(v))) {
                s.record(self.class, elapsed_ms);
            }
        }
    }
}
