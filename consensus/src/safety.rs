//! The state a replica must keep on disk so that, after a restart, it never contradicts a vote
//! it already sent. The core emits [`SafetyUpdate`]s; the host makes each durable before it
//! sends any message that follows it in the same action list, and hands the accumulated
//! [`SafetyState`] back on restart. A host may leave out a prepared certificate whose
//! sequence number committed with another batch: no later view can prepare its batch, so its
//! VIEW-CHANGE messages lose nothing without it.

use std::collections::BTreeMap;

use ordinal_crypto::Digest;
use serde::{Deserialize, Serialize};

use crate::messages::{PreparedProof, QuorumCert, StableCheckpoint};

/// One change to the durable safety state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SafetyUpdate {
    /// The replica moved to `view` (`changing`: it sent VIEW-CHANGE and awaits NEW-VIEW).
    /// It will never again act in a lower view.
    EnterView {
        /// The view.
        view: u64,
        /// Whether a view change is under way.
        changing: bool,
    },
    /// The replica is about to PREPARE `digest` at (view, seq): it may never prepare another
    /// digest there.
    Prepare {
        /// View.
        view: u64,
        /// Sequence number.
        seq: u64,
        /// Digest voted for.
        digest: Digest,
    },
    /// The replica holds a prepared certificate and is about to COMMIT; the proof must survive
    /// so that its VIEW-CHANGE messages keep reporting it (unless its sequence number commits
    /// with another batch; see the module's notes).
    Prepared(PreparedProof),
    /// A new stable checkpoint: records at or below it can be dropped.
    Stable(StableCheckpoint),
    /// Linear mode: the replica is about to vote for a block of `round` in `epoch`'s chain, or
    /// to time it out; it may never vote in `round` or below of that epoch, nor in an earlier
    /// epoch, again (Jolteon's last voted round).
    Voted {
        /// The epoch.
        epoch: u64,
        /// The round.
        round: u64,
    },
    /// Linear mode: a higher quorum certificate (by epoch, then round). Its round is what the
    /// replica's timeouts report, so forgetting it after a crash could let a conflicting block
    /// be certified.
    HighQc(QuorumCert),
}

/// Everything the safety updates add up to. Bounded: entries below the stable checkpoint are
/// pruned, and the protocol only votes inside its window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyState {
    /// Highest view entered.
    pub view: u64,
    /// Whether that view was still being changed into.
    pub changing: bool,
    /// Per sequence number, the latest (view, digest) prepared.
    pub prepares: BTreeMap<u64, (u64, Digest)>,
    /// Per sequence number, the highest-view prepared certificate.
    pub prepared: BTreeMap<u64, PreparedProof>,
    /// The latest stable checkpoint.
    pub stable: StableCheckpoint,
    /// Linear mode: the epoch of `voted_round`.
    #[serde(default)]
    pub voted_epoch: u64,
    /// Linear mode: the highest round voted or timed out in, in `voted_epoch`.
    #[serde(default)]
    pub voted_round: u64,
    /// Linear mode: the highest quorum certificate held (`None`: genesis).
    #[serde(default)]
    pub high_qc: Option<QuorumCert>,
}

impl Default for SafetyState {
    fn default() -> Self {
        SafetyState {
            view: 0,
            changing: false,
            prepares: BTreeMap::new(),
            prepared: BTreeMap::new(),
            stable: StableCheckpoint::genesis(),
            voted_epoch: 0,
            voted_round: 0,
            high_qc: None,
        }
    }
}

impl SafetyState {
    /// Applies one update.
    pub fn apply(&mut self, update: &SafetyUpdate) {
        match update {
            SafetyUpdate::EnterView { view, changing } => {
                if *view > self.view || (*view == self.view && !*changing) {
                    self.view = *view;
                    self.changing = *changing;
                }
            }
            SafetyUpdate::Prepare { view, seq, digest } => {
                if *seq > self.stable.seq {
                    self.prepares.insert(*seq, (*view, *digest));
                }
            }
            SafetyUpdate::Prepared(proof) => {
                let seq = proof.seq();
                let newer = self.prepared.get(&seq).is_none_or(|p| p.view() < proof.view());
                if seq > self.stable.seq && newer {
                    self.prepared.insert(seq, proof.clone());
                }
            }
            SafetyUpdate::Stable(stable) => {
                if stable.seq > self.stable.seq {
                    self.stable = stable.clone();
                    self.prepares = self.prepares.split_off(&(stable.seq + 1));
                    self.prepared = self.prepared.split_off(&(stable.seq + 1));
                }
            }
            SafetyUpdate::Voted { epoch, round } => {
                if (*epoch, *round) > (self.voted_epoch, self.voted_round) {
                    self.voted_epoch = *epoch;
                    self.voted_round = *round;
                }
            }
            SafetyUpdate::HighQc(qc) => {
                let newer = |held: &QuorumCert| {
                    (held.statement.epoch, held.statement.round) < (qc.statement.epoch, qc.statement.round)
                };
                if self.high_qc.as_ref().is_none_or(newer) {
                    self.high_qc = Some(qc.clone());
                }
            }
        }
    }
}
