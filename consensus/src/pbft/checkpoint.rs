//! PBFT's side of checkpoints and state transfer: the shared [`crate::ledger::Ledger`] keeps the
//! log, the checkpoint votes and the catch-up bookkeeping; a view adds only the evidence that
//! a replica is behind in views, and the NEW-VIEW that proves where the cluster went.

use ordinal_crypto::{ReplicaId, Verified};

use super::Replica;
use crate::batch::CommittedBatch;
use crate::error::Invalid;
use crate::messages::{CheckpointVote, Message, StableCheckpoint};

impl Replica {
    pub(super) fn on_checkpoint(&mut self, vote: Verified<CheckpointVote>) -> Result<(), Invalid> {
        self.ledger.on_checkpoint(vote, self.view)
    }

    /// Whether this replica has evidence that it is behind: a certified or F+1-vouched higher
    /// sequence number, or more than F weight of peers in higher views.
    fn behind(&self) -> bool {
        let ahead = self
            .views_seen
            .iter()
            .filter(|(_, view)| **view > self.view)
            .map(|(id, _)| *id);
        self.ledger.log_behind() || self.ledger.committees.current().includes_correct(ahead)
    }

    pub(super) fn ping_peer(&mut self) {
        self.ledger.ping_peer(self.view);
    }

    pub(super) fn request_catch_up(&mut self) {
        self.ledger.request_catch_up(self.view);
    }

    /// A peer is behind: send what proves our progress (NEW-VIEW, stable checkpoint) and ask
    /// the host to serve stored batches.
    pub(super) fn on_catch_up(&mut self, from: ReplicaId, next_seq: u64, view: u64, stable_seq: u64) {
        if view > self.view && from != self.ledger.id && self.ledger.committees.signers().contains(from) {
            let seen = self.views_seen.entry(from).or_insert(0);
            *seen = (*seen).max(view);
        }
        let view_proof = view < self.view && self.changing.is_none() && self.last_new_view.is_some();
        if self.ledger.on_catch_up(from, next_seq, stable_seq, view_proof) && view_proof {
            if let Some(new_view) = &self.last_new_view {
                let message = Message::NewView(new_view.clone());
                self.ledger.send(from, message);
            }
        }
    }

    /// Certified batches from a peer: the ledger executes what is now in order; ask the same
    /// peer for more at once while still behind.
    pub(super) fn on_batches(&mut self, from: ReplicaId, batches: Vec<CommittedBatch>) {
        if self.ledger.on_batches(batches) && self.behind() {
            self.ledger.catch_up_hint = Some(from);
            self.request_catch_up();
        }
    }

    pub(super) fn on_stable_proof(&mut self, stable: StableCheckpoint) {
        self.ledger.make_stable(stable);
    }
}
