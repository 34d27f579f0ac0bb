//! The Ordinal client SDK.
//!
//! [`Client`] connects to every replica of a cluster over QUIC with mutual TLS (each replica
//! pinned to the key `client.toml` lists), submits transactions, and returns [`Receipt`]s whose
//! commit certificates it has verified against the cluster's keys and weights. It also reads
//! the ordered log ([`Client::subscribe`]) and replica status ([`Client::status`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ordinal_client::ClientError> {
//! use ordinal_client::{load_cluster, Client, ClientOptions};
//!
//! let cluster = load_cluster("cluster/client.toml".as_ref())?;
//! let client = Client::connect(cluster, ClientOptions::default()).await?;
//! let receipt = client.submit(b"pay alice 5".to_vec()).await?;
//! println!("seq {} index {} view {}", receipt.seq, receipt.index, receipt.view());
//!
//! let mut log = client.subscribe(1);
//! let batch = log.next().await?; // certificate-verified, in order
//! println!("batch {} holds {} transactions", batch.seq(), batch.batch.requests().len());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod client;
mod retransmit;
pub mod wire;

pub use client::{load_cluster, Client, ClientError, ClientOptions, ReplicaReport, Subscription};
pub use ordinal_consensus::receipt::{Receipt, ReceiptError};
pub use ordinal_consensus::{ClusterConfig, CommittedBatch, Request};
