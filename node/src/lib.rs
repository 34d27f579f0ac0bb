//! The Ordinal replica daemon as a library: configuration and cluster generation, used by the
//! `ordinal-node` binary and its tests. The QUIC transport, the RocksDB store and the driver
//! around the protocol core come next.
#![warn(missing_docs)]

pub mod config;
pub mod testnet;
