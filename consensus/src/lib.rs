//! Ordinal's protocol core: PBFT and a HotStuff-style linear mode (Jolteon) as deterministic,
//! sans-IO state machines behind one [`Protocol`] trait, and the simulator that tests them.
//!
//! **Promise:** nothing in this crate performs I/O, reads a clock, spawns a thread or draws OS
//! randomness. Time comes in as an argument, timers go out through
//! [`Protocol::poll_timeout`], and everything the world must do comes out as [`Action`]s. Given
//! the same inputs, a replica produces the same outputs. The crate's `Cargo.toml` keeps the
//! promise: its dependencies are cryptography, serialisation, and a seedable RNG (ChaCha, built
//! without OS entropy) that only the simulator uses.
//!
//! A host drives a replica like this:
//!
//! ```
//! use std::time::Duration;
//! use ordinal_consensus::{pbft::Replica, Action, Input, Protocol, ProtocolConfig};
//! use ordinal_crypto::{Committee, Digest, KeyPair, ReplicaId};
//!
//! let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed([i; 32])).collect();
//! let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
//! let committee = Committee::equal_weights(Digest::of(b"doc"), &publics).unwrap();
//! let key = KeyPair::from_seed([1; 32]);
//! let mut replica = Replica::new(ReplicaId(0), key, committee, ProtocolConfig::default(), Duration::ZERO);
//!
//! let now = Duration::from_millis(5);
//! replica.handle(now, Input::Timeout).unwrap();
//! for action in replica.drain_actions() {
//!     match action {
//!         Action::PersistSafety(_) => { /* write and sync before anything after it */ }
//!         Action::Send { .. } | Action::Broadcast { .. } => { /* hand to the transport */ }
//!         Action::PersistBatch(_) => { /* store; then feed Input::Persisted */ }
//!         Action::Reply { .. } => { /* build a receipt for the client */ }
//!         Action::ServeBatches { .. } => { /* read stored batches, send Message::Batches */ }
//!         Action::Settled(_) => { /* note it: later votes for it may skip their signature check */ }
//!     }
//! }
//! let _next_wakeup = replica.poll_timeout();
//! ```
#![warn(missing_docs)]

pub mod admitted;
pub mod batch;
pub mod cluster;
pub mod config;
pub mod epoch;
pub mod error;
pub mod io;
pub mod late;
pub mod leader;
mod ledger;
pub mod linear;
pub mod messages;
pub mod pbft;
mod pool;
pub mod quorum;
pub mod receipt;
pub mod reliability;
pub mod replica;
pub mod request;
pub mod safety;
pub mod sim;
pub mod weighting;

pub use admitted::{AdmittedCache, AdmittedRequests, NoneAdmitted};
pub use batch::{Batch, CommittedBatch};
pub use cluster::{ClusterConfig, ConfigError, MembershipConfig, ProtocolKind, ReplicaEntry, WeightsConfig};
pub use config::{ProtocolConfig, RequestAuth};
pub use error::Invalid;
pub use io::{Action, Footprint, Input, Protocol, Status, Time};
pub use late::{LateVote, Settled, SettledStatements, Sorted};
pub use messages::{GroupVerification, Message, VerifiedMessage};
pub use receipt::Receipt;
pub use reliability::{PeerMonitor, PeerReport};
pub use replica::start_replica;
pub use request::{CheckedRequest, ClientId, Position, Request, RequestKey};
pub use safety::{SafetyState, SafetyUpdate};
