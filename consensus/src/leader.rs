//! Who leads a view. Round-robin for now; both protocols call this one function so that a
//! reputation-driven rule can replace it in one place.

use ordinal_crypto::{Committee, ReplicaId};

/// The primary (PBFT) or leader (linear mode) of `view`: `view mod n`.
pub fn leader_of(view: u64, committee: &Committee) -> ReplicaId {
    ReplicaId((view % committee.size() as u64) as u16)
}
