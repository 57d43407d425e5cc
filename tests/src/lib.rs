//! The end-to-end harness: starts a real Envoy with the Dimmer filter, real
//! upstream servers and a stand-in controller on loopback, and talks to them
//! over real HTTP. Used by the tests in `tests/tests/`, by `make demo` and by
//! the benchmarks.

pub mod bench;
pub mod client;
pub mod controller;
pub mod envoy;
pub mod etcd;
pub mod faults;
pub mod fixtures;
pub mod load;
pub mod netns;
pub mod oci;
pub mod oidc;
pub mod paths;
pub mod ports;
pub mod prometheus;
pub mod stats;
pub mod stub_controller;
pub mod tls;
pub mod upstream;
pub mod wrapped;

pub use client::Client;
pub use envoy::{Envoy, EnvoyOptions};
pub use stub_controller::StubController;
pub use upstream::Upstream;
