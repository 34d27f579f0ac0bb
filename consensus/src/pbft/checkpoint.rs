//! Checkpoints, garbage collection and state transfer (PBFT 4.3, and the state transfer of the
//! TOCS paper, section 5.3, simplified: the state is the certified log itself).

use ordinal_crypto::{ReplicaId, Verified};

use super::Replica;
use crate::batch::CommittedBatch;
use crate::error::Invalid;
use crate::io::Action;
use crate::messages::{CheckpointVote, Message, StableCheckpoint};
use crate::quorum::Inserted;
use crate::safety::SafetyUpdate;

impl Replica {
    /// Sends CHECKPOINT for every executed checkpoint that is now durable: a replica vouches
    /// only for state it will still have after a crash.
    pub(super) fn announce_checkpoints(&mut self) {
        let ready: Vec<(u64, ordinal_crypto::Digest)> = self
            .own_checkpoints
            .range(self.sent_checkpoint_upto + 1..=self.persisted)
            .map(|(seq, digest)| (*seq, *digest))
            .collect();
        for (seq, log_digest) in ready {
            self.sent_checkpoint_upto = seq;
            if seq <= self.stable.seq {
                continue;
            }
            let vote = self.sign(CheckpointVote { seq, log_digest });
            if seq > self.window_high() {
                // Executed past the window by state transfer: vouch, but keep no vote set
                // beyond the watermarks; catch-up brings the stable proof.
                self.broadcast(Message::Checkpoint(vote));
                continue;
            }
            self.checkpoint_votes
                .entry(seq)
                .or_default()
                .insert(Verified::new_unchecked_own(vote.clone()));
            self.broadcast(Message::Checkpoint(vote));
            self.check_stable(seq);
        }
    }

    /// Re-sends the latest own checkpoint vote that has not become stable yet.
    pub(super) fn resend_checkpoint(&mut self) {
        let latest = self
            .checkpoint_votes
            .iter()
            .rev()
            .find_map(|(_, votes)| votes.vote_of(self.id).map(|v| v.signed().clone()));
        if let Some(vote) = latest {
            self.broadcast(Message::Checkpoint(vote));
        }
    }

    pub(super) fn on_checkpoint(&mut self, vote: Verified<CheckpointVote>) -> Result<(), Invalid> {
        let body = *vote.body();
        if body.seq % self.config.checkpoint_interval != 0 {
            return Err(Invalid::OutsideWindow {
                seq: body.seq,
                low: self.stable.seq,
                high: self.window_high(),
            });
        }
        if body.seq <= self.stable.seq {
            return Err(Invalid::Stale);
        }
        self.note_seq(vote.signer(), body.seq);
        // Votes beyond the window only tell us we are behind; catch-up fetches the proof.
        self.check_window(body.seq)?;
        let from = vote.signer();
        if self.checkpoint_votes.entry(body.seq).or_default().insert(vote) == Inserted::Conflict {
            return Err(Invalid::DuplicateVote {
                from,
                view: self.view,
                seq: body.seq,
            });
        }
        self.check_stable(body.seq);
        Ok(())
    }

    pub(super) fn check_stable(&mut self, seq: u64) {
        let Some(votes) = self.checkpoint_votes.get(&seq) else {
            return;
        };
        let proof = votes
            .statements()
            .into_iter()
            .find_map(|statement| votes.certificate(&statement, &self.committee));
        if let Some(certificate) = proof {
            self.make_stable(StableCheckpoint {
                seq,
                log_digest: certificate.statement.log_digest,
                certificate: Some(certificate),
            });
        }
    }

    /// PBFT 4.3: a proven checkpoint becomes the low watermark; everything at or below it is
    /// discarded. A replica that has not executed that far fetches the batches.
    pub(super) fn make_stable(&mut self, stable: StableCheckpoint) {
        if stable.seq <= self.stable.seq {
            return;
        }
        let seq = stable.seq;
        self.stable = stable.clone();
        self.persist(SafetyUpdate::Stable(stable));
        let keep = seq + 1;
        self.slots = self.slots.split_off(&keep);
        self.prepared = self.prepared.split_off(&keep);
        self.prepare_votes = self.prepare_votes.split_off(&keep);
        self.checkpoint_votes = self.checkpoint_votes.split_off(&keep);
        self.own_checkpoints = self.own_checkpoints.split_off(&seq);
        self.known_high_seq = self.known_high_seq.max(seq);
        self.next_seq = self.next_seq.max(keep);
        if self.last_executed < seq {
            self.request_catch_up();
        }
    }

    /// Whether this replica has evidence that it is behind: a certified or F+1-vouched higher
    /// sequence number, or more than F weight of peers in higher views.
    fn behind(&self) -> bool {
        let ahead = self
            .views_seen
            .iter()
            .filter(|(_, view)| **view > self.view)
            .map(|(id, _)| *id);
        self.known_high_seq.max(self.evidenced_seq()) > self.last_executed
            || self.last_executed > self.window_high()
            || self.committee.includes_correct(ahead)
    }

    /// On each tick, tell the next peer in turn how far this replica got. The message doubles
    /// as a status ping: a peer that is behind learns it from it, and a peer that is ahead
    /// answers with what we lack. Rotating peers gets past silent Byzantine ones.
    pub(super) fn ping_peer(&mut self) {
        self.catch_up_peer = (self.catch_up_peer + 1) % self.committee.size();
        self.request_catch_up();
    }

    pub(super) fn request_catch_up(&mut self) {
        let n = self.committee.size();
        if n < 2 {
            return;
        }
        if self.catch_up_peer % n == self.id.index() {
            self.catch_up_peer = (self.catch_up_peer + 1) % n;
        }
        let peer = ReplicaId(self.catch_up_peer as u16);
        let message = Message::CatchUp {
            next_seq: self.last_executed + 1,
            view: self.view,
            stable_seq: self.stable.seq,
        };
        self.send(peer, message);
    }

    /// Whether to answer a request for help (catch-up, a stale view change) from `peer` now:
    /// when it asks for more than last time (it made progress), or else at most once per
    /// quarter retransmission interval. That bounds the work and traffic any peer, or a replay
    /// of old messages, can cause, without slowing a real catch-up.
    pub(super) fn may_help(&mut self, peer: ReplicaId, progress: u64) -> bool {
        let min_gap = self.config.retransmit_interval / 4;
        if let Some((last, last_progress)) = self.served.get(&peer) {
            if progress <= *last_progress && self.now < *last + min_gap {
                return false;
            }
        }
        self.served.insert(peer, (self.now, progress));
        true
    }

    /// A peer is behind: send what proves our progress (NEW-VIEW, stable checkpoint) and ask
    /// the host to serve stored batches.
    pub(super) fn on_catch_up(&mut self, from: ReplicaId, next_seq: u64, view: u64, stable_seq: u64) {
        if from == self.id || !self.committee.contains(from) {
            return;
        }
        self.note_seq(from, next_seq.saturating_sub(1));
        if view > self.view {
            let seen = self.views_seen.entry(from).or_insert(0);
            *seen = (*seen).max(view);
        }
        let useful = (view < self.view && self.changing.is_none() && self.last_new_view.is_some())
            || self.stable.seq > stable_seq
            || self.persisted >= next_seq;
        // Bound the disk reads one peer can cause.
        if !useful || !self.may_help(from, next_seq) {
            return;
        }
        if view < self.view && self.changing.is_none() {
            if let Some(new_view) = &self.last_new_view {
                let message = Message::NewView(new_view.clone());
                self.send(from, message);
            }
        }
        if self.stable.seq > stable_seq {
            let message = Message::Stable(self.stable.clone());
            self.send(from, message);
        }
        if self.persisted >= next_seq {
            let to_seq = self
                .persisted
                .min(next_seq + self.config.state_transfer_chunk - 1);
            self.actions.push(Action::ServeBatches {
                to: from,
                from_seq: next_seq,
                to_seq,
            });
        }
    }

    /// Certified batches from a peer: buffer those we lack, execute what is now in order, and
    /// ask for more at once while still behind.
    pub(super) fn on_batches(&mut self, from: ReplicaId, batches: Vec<CommittedBatch>) {
        let before = self.last_executed;
        let limit = self.last_executed + self.config.log_window;
        for batch in batches {
            let seq = batch.seq();
            if seq > self.last_executed && seq <= limit {
                self.committed.entry(seq).or_insert(batch);
            }
        }
        self.execute_ready();
        if self.last_executed > before && self.behind() {
            self.catch_up_peer = from.index();
            self.request_catch_up();
        }
    }

    pub(super) fn on_stable_proof(&mut self, stable: StableCheckpoint) {
        if stable.seq > self.stable.seq {
            self.make_stable(stable);
        }
    }
}
