//! The Ordinal replica daemon: configuration, RocksDB store, QUIC transport, the protocol
//! thread that drives the sans-IO core, metrics, and the `testnet`/`run`/`local` commands.
#![warn(missing_docs)]

pub mod config;
pub mod driver;
pub mod local;
pub mod membership;
pub mod metrics;
pub mod service;
pub mod store;
pub mod testnet;
pub mod transport;
