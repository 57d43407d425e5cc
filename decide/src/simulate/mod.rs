//! `dimmer simulate`: synthetic rollouts through the same analysis the
//! controller runs, beside reference detectors, to measure how often each
//! stops a healthy canary and how fast each catches a bad one.
//!
//! May import: `spec`, `counts`, `analysis`, `engine` (`evidence` walks whole
//! rollouts through it).

pub mod counts;
pub mod evidence;
pub mod signals;

pub use counts::{simulate, DetectorResult, Scenario};
pub use evidence::{simulate_evidence, EvidenceResult, EvidenceScenario, Signal as EvidenceSignal};
pub use signals::{simulate_signal, Signal, SignalResult, SignalScenario};
