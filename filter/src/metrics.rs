//! Stat ids. Envoy hands out a new id on every `define_metric`, so each VM
//! defines a name once and keeps the id; a config change only defines the
//! names it adds.

use dimmer_core::stats::{self, StatusClass};
use std::cell::{Cell, RefCell};

use dimmer_core::mix::{self, Slot, TopValues};
use dimmer_core::{Compiled, CompiledFlags};
use hashbrown::HashMap;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

#[derive(Default)]
pub struct Registry {
    ids: HashMap<String, u32>,
}

impl Registry {
    pub fn id(&mut self, kind: MetricType, name: &str) -> Option<u32> {
        if let Some(&id) = self.ids.get(name) {
            return Some(id);
        }
        match hostcalls::define_metric(kind, name) {
            Ok(id) => {
                self.ids.insert(name.to_owned(), id);
                Some(id)
            }
            Err(status) => {
                log::warn!("cannot define stat {name}: {status:?}");
                None
            }
        }
    }
}

/// The stats of one version of one rollout.
#[derive(Debug, Clone, Copy, Default)]
pub struct VersionStats {
    requests: [Option<u32>; StatusClass::ALL.len()],
    latency_ms: Option<u32>,
}

impl VersionStats {
    /// Whether it records latency (the request must then be timed).
    pub fn timed(&self) -> bool {
        self.latency_ms.is_some()
    }

    pub fn record(&self, class: StatusClass, latency_ms: u64) {
        if let Some(id) = self.requests[class.index()] {
            let _ = hostcalls::increment_metric(id, 1);
        }
        if let Some(id) = self.latency_ms {
            let _ = hostcalls::record_metric(id, latency_ms);
        }
    }
}

/// The stats of one variant of one flag. Status classes are counted in VM
/// memory and added to Envoy's counters on each tick (and when the config
/// that holds them is dropped), so ten flags cost one histogram call each
/// per request, not two host calls each.
#[derive(Debug, Default)]
pub struct VariantStats {
    ids: VersionStats,
    pending: [Cell<u64>; StatusClass::ALL.len()],
}

impl VariantStats {
    pub fn record(&self, class: StatusClass, latency_ms: u64) {
        let c = &self.pending[class.index()];
        c.set(c.get().saturating_add(1));
        if let Some(id) = self.ids.latency_ms {
            let _ = hostcalls::record_metric(id, latency_ms);
        }
    }

    pub fn flush(&self) {
        for class in StatusClass::ALL {
            let n = self.pending[class.index()].replace(0);
            if n > 0 {
                if let Some(id) = self.ids.requests[class.index()] {
                    let _ = hostcalls::increment_metric(id, n as i64);
                }
            }
        }
    }
}

/// `table[flag][variant]`. A flag's variants carry the same stat names as
/// a rollout's versions (the key in the `rollout` tag), so the controller
/// reads them alike; validation keeps keys apart from rollout names.
pub fn variant_table(flags: &CompiledFlags, registry: &mut Registry) -> Vec<Vec<VariantStats>> {
    flags
        .flags
        .iter()
        .map(|f| {
            f.variants
                .iter()
                .map(|v| VariantStats {
                    ids: define(registry, &f.key, v, f.record_latency),
                    pending: Default::default(),
                })
                .collect()
        })
        .collect()
}

/// Counters for every class, and the histogram if `latency`: a histogram
/// defined and never fed would still be exported, empty.
fn define(registry: &mut Registry, name: &str, version: &str, latency: bool) -> VersionStats {
    let mut s = VersionStats::default();
    for class in StatusClass::ALL {
        s.requests[class.index()] =
            registry.id(MetricType::Counter, &stats::requests(name, version, class));
    }
    if latency {
        s.latency_ms = registry.id(MetricType::Histogram, &stats::latency_ms(name, version));
    }
    s
}

/// `table[rollout]`: the stats of the requests mirrored to the rollout's
/// shadow version, where it names one and the filter counts it.
pub fn shadow_table(cfg: &Compiled, registry: &mut Registry) -> Vec<Option<VersionStats>> {
    cfg.rollouts
        .iter()
        .map(|r| {
            let version = r.versions.get(r.shadow?)?;
            if !r.count {
                return None;
            }
            let mut s = VersionStats::default();
            for class in StatusClass::ALL {
                s.requests[class.index()] = registry.id(
                    MetricType::Counter,
                    &stats::shadow_requests(&r.name, version, class),
                );
            }
            s.latency_ms = registry.id(
                MetricType::Histogram,
                &stats::shadow_latency_ms(&r.name, version),
            );
            Some(s)
        })
        .collect()
}

/// `table[rollout][version]`, in the compiled config's order.
pub fn version_table(cfg: &Compiled, registry: &mut Registry) -> Vec<Vec<VersionStats>> {
    cfg.rollouts
        .iter()
        .map(|r| {
            r.versions
                .iter()
                .map(|v| match r.count {
                    true => define(registry, &r.name, v, true),
                    // Envoy counts it: no stats of the filter's at all.
                    false => VersionStats::default(),
                })
                .collect()
        })
        .collect()
}

/// The filter's own health stats.
#[derive(Debug, Clone, Copy, Default)]
pub struct Health {
    revision: Option<u32>,
    updates: Option<u32>,
    rejected: Option<u32>,
    polls: Option<u32>,
    poll_failures: Option<u32>,
    age_seconds: Option<u32>,
    vm_memory: Option<u32>,
    apply_us: Option<u32>,
}

impl Health {
    pub fn define(registry: &mut Registry) -> Self {
        Health {
            revision: registry.id(MetricType::Gauge, stats::CONFIG_REVISION),
            updates: registry.id(MetricType::Counter, stats::CONFIG_UPDATES),
            rejected: registry.id(MetricType::Counter, stats::CONFIG_REJECTED),
            polls: registry.id(MetricType::Counter, stats::POLLS),
            poll_failures: registry.id(MetricType::Counter, stats::POLL_FAILURES),
            age_seconds: registry.id(MetricType::Gauge, stats::CONFIG_AGE_SECONDS),
            vm_memory: registry.id(MetricType::Gauge, stats::VM_MEMORY_BYTES),
            apply_us: registry.id(MetricType::Gauge, stats::CONFIG_APPLY_MICROSECONDS),
        }
    }

    pub fn applied(&self, revision: u64) {
        set(self.revision, revision);
        inc(self.updates);
    }
    pub fn rejected(&self) {
        inc(self.rejected);
    }
    pub fn polled(&self) {
        inc(self.polls);
    }
    pub fn poll_failed(&self) {
        inc(self.poll_failures);
    }
    pub fn age(&self, seconds: u64) {
        set(self.age_seconds, seconds);
    }
    pub fn vm_memory(&self, bytes: u64) {
        set(self.vm_memory, bytes);
    }
    pub fn apply_took(&self, micros: u64) {
        set(self.apply_us, micros);
    }
}

fn inc(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

fn set(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = hostcalls::record_metric(id, value);
    }
}

/// The counters of one cohort dimension of one rollout (`dimmer_mix`):
/// one per version for each value the sketch found frequent, and for
/// `_other` and `_none`. Values are promoted on the request path, at most
/// `max_values` per dimension; the sketch carries over config changes.
#[derive(Debug)]
pub struct DimensionStats {
    rollout: String,
    dimension: String,
    versions: Vec<String>,
    pub top: RefCell<TopValues>,
    /// `ids[value][version]`, `value` indexing `top.promoted()`.
    ids: RefCell<Vec<Vec<Option<u32>>>>,
    other: Vec<Option<u32>>,
    none: Vec<Option<u32>>,
}

impl DimensionStats {
    fn define_value(&self, value: &str, registry: Option<&mut Registry>) -> Vec<Option<u32>> {
        let mut fallback = Registry::default();
        let registry = registry.unwrap_or(&mut fallback);
        self.versions
            .iter()
            .map(|v| {
                registry.id(
                    MetricType::Counter,
                    &stats::mix(&self.rollout, v, &self.dimension, value),
                )
            })
            .collect()
    }

    /// Counts one request of `version` whose dimension came to `slot`.
    pub fn count(&self, slot: Slot, version: usize) {
        let id = match slot {
            Slot::Value(i) => self
                .ids
                .try_borrow()
                .ok()
                .and_then(|ids| ids.get(i).and_then(|v| v.get(version).copied())),
            Slot::Promoted(i) => {
                let value = self
                    .top
                    .try_borrow()
                    .ok()
                    .and_then(|t| t.promoted().get(i).cloned());
                let ids = value
                    .map(|v| self.define_value(&v, None))
                    .unwrap_or_default();
                let id = ids.get(version).copied();
                if let Ok(mut all) = self.ids.try_borrow_mut() {
                    all.push(ids);
                }
                id
            }
            Slot::Other => self.other.get(version).copied(),
            Slot::None => self.none.get(version).copied(),
        };
        if let Some(id) = id.flatten() {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

/// `table[rollout][dimension]`, carrying each dimension's sketch and
/// promoted values over from `old` where the rollout and dimension are the
/// same, so a step does not forget which values are frequent.
pub fn mix_table(
    cfg: &Compiled,
    registry: &mut Registry,
    old: &[Vec<DimensionStats>],
) -> Vec<Vec<DimensionStats>> {
    cfg.rollouts
        .iter()
        .map(|r| {
            r.dimensions
                .iter()
                .map(|d| {
                    let dimension = d.name();
                    let previous = old
                        .iter()
                        .flatten()
                        .find(|o| o.rollout == r.name && o.dimension == dimension);
                    let top = previous.map_or_else(
                        || TopValues::new(usize::from(d.max_values)),
                        |p| {
                            p.top.try_borrow().map_or_else(
                                |_| TopValues::new(usize::from(d.max_values)),
                                |t| t.clone(),
                            )
                        },
                    );
                    let mut s = DimensionStats {
                        rollout: r.name.clone(),
                        dimension,
                        versions: r.versions.clone(),
                        top: RefCell::new(TopValues::new(0)),
                        ids: RefCell::new(Vec::new()),
                        other: Vec::new(),
                        none: Vec::new(),
                    };
                    s.other = s.define_value(mix::OTHER, Some(registry));
                    s.none = s.define_value(mix::NONE, Some(registry));
                    let ids = top
                        .promoted()
                        .iter()
                        .map(|v| s.define_value(v, Some(registry)))
                        .collect();
                    s.ids = RefCell::new(ids);
                    s.top = RefCell::new(top);
                    s
                })
                .collect()
        })
        .collect()
}
