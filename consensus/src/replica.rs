//! Choosing the protocol: one constructor for hosts (the node, the simulator) that hold a
//! replica as a [`Protocol`] and never name PBFT or the linear mode.

use ordinal_crypto::{Committee, KeyPair, ReplicaId};

use crate::batch::CommittedBatch;
use crate::cluster::ProtocolKind;
use crate::config::ProtocolConfig;
use crate::io::{Protocol, Time};
use crate::safety::SafetyState;

/// A replica of `kind`, restored from its durable safety state and committed log (both empty
/// for a fresh replica).
#[allow(clippy::too_many_arguments)]
pub fn start_replica(
    kind: ProtocolKind,
    id: ReplicaId,
    key: KeyPair,
    committee: Committee,
    config: ProtocolConfig,
    now: Time,
    safety: SafetyState,
    log: impl IntoIterator<Item = CommittedBatch>,
) -> Box<dyn Protocol + Send> {
    match kind {
        ProtocolKind::Pbft => Box::new(crate::pbft::Replica::restore(
            id, key, committee, config, now, safety, log,
        )),
        ProtocolKind::Linear => Box::new(crate::linear::Replica::restore(
            id, key, committee, config, now, safety, log,
        )),
    }
}
