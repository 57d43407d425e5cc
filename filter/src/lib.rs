//! Dimmer's proxy-wasm filter: the thin glue between Envoy and `dimmer-core`.
//! Each callback reads what it needs from the host, asks the core, and writes
//! the answer back; every rule lives in the core crate and is tested there.

mod active;
mod host;
mod metrics;
mod poller;
mod request;
mod root;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    host::log_panics();
    proxy_wasm::set_root_context(|_| Box::new(root::DimmerRoot::new()));
}}
