//! The normal case: requests, PRE-PREPARE, PREPARE, COMMIT and in-order execution (PBFT 4.2).

use ordinal_crypto::{ReplicaId, Verified};

use super::{Replica, SlotProposal};
use crate::batch::{Batch, CommittedBatch};
use crate::error::Invalid;
use crate::late::{LateVote, Settled};
use crate::ledger::Admitted;
use crate::messages::{CommitVote, Message, PrepareVote, PreparedProof, Proposal};
use crate::quorum::Inserted;
use crate::request::Request;
use crate::safety::SafetyUpdate;

impl Replica {
    /// A client request, directly or `forwarded` by a backup (PBFT 4.1).
    pub(super) fn on_request(&mut self, request: Request, forwarded: bool) -> Result<(), Invalid> {
        let Admitted::New(key) = self.ledger.admit(request, forwarded)? else {
            return Ok(());
        };
        if self.is_primary() {
            self.ledger.pool.enqueue(key);
            if self.batch_deadline.is_none() {
                self.batch_deadline = Some(self.ledger.now + self.ledger.config.batch_delay);
            }
        } else if !forwarded
            && (self.ledger.config.request_auth == crate::config::RequestAuth::Signed
                || key.client == self.ledger.key.public())
        {
            // PBFT 4.1: make sure the primary has it before suspecting the primary of
            // ignoring it, so a client cannot force view changes by skipping the primary. Our
            // own weight changes go to the primary in every mode (they are member-signed).
            let primary = self.primary();
            if let Some(request) = self.ledger.pool.get(&key) {
                let message = Message::Request(request.clone());
                self.ledger.send(primary, message);
            }
        }
        Ok(())
    }

    /// The primary proposes batches while it has requests, room in the pipeline and the window,
    /// and either a full batch or a due partial one.
    ///
    /// A partial batch is due once the batching delay has passed, or at once while the pipeline
    /// is empty: under light load a request then waits for nothing but the protocol, and once
    /// batches are in flight what arrives meanwhile waits for the delay (or a full batch), so
    /// batches grow with the load. Each batch costs every replica its signatures, packets and an
    /// fsync; at a few thousand transactions per second those per-batch costs were most of the
    /// machine.
    ///
    /// A due partial batch goes out only on a timer input (`on_timer`). The host feeds one as
    /// soon as `poll_timeout` is due, after the inputs it already holds, so requests that
    /// arrived together travel in one batch instead of the first alone.
    pub(super) fn try_propose(&mut self, on_timer: bool) {
        if !self.is_primary() || self.changing.is_some() {
            return;
        }
        let due = on_timer && self.batch_deadline.is_some_and(|d| d <= self.ledger.now);
        loop {
            if self.ledger.pool.queue_is_empty()
                || !self.has_room()
                || !(due || self.ledger.pool.queued() >= self.ledger.config.max_batch_requests)
            {
                break;
            }
            let batch = self.ledger.pool.take_batch(&self.ledger.config);
            if batch.requests().is_empty() {
                continue;
            }
            self.propose(batch);
        }
        if self.ledger.pool.queue_is_empty() {
            self.batch_deadline = None;
        } else if self.in_flight() == 0 {
            self.batch_deadline = Some(self.ledger.now);
        } else if self.batch_deadline.is_none() {
            self.batch_deadline = Some(self.ledger.now + self.ledger.config.batch_delay);
        }
        // When the pipeline is full a due deadline stays: once an execution frees room,
        // `poll_timeout` reports it due again and the next timer input flushes.
    }

    /// Sequence numbers assigned and not yet executed: the batches in flight, and after a
    /// stable checkpoint learnt from peers, the gap up to it until state transfer fills it
    /// (meanwhile partial batches wait for the delay).
    fn in_flight(&self) -> u64 {
        self.next_seq.saturating_sub(self.ledger.last_executed + 1)
    }

    /// Whether the pipeline and the window leave room for another proposal.
    pub(super) fn has_room(&self) -> bool {
        self.in_flight() < self.ledger.config.max_inflight_batches
            && self.next_seq <= self.ledger.window_high()
            && self.ledger.committees.for_seq(self.next_seq).is_some()
    }

    /// PBFT 4.2: the primary assigns the next sequence number and multicasts PRE-PREPARE.
    fn propose(&mut self, batch: Batch) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let digest = batch.digest();
        let proposal = self.ledger.sign(Proposal {
            view: self.view,
            seq,
            digest,
        });
        self.ledger.persist(SafetyUpdate::Prepare {
            view: self.view,
            seq,
            digest,
        });
        self.prepare_votes.insert(seq, (self.view, digest));
        self.ledger.broadcast(Message::PrePrepare {
            proposal: proposal.clone(),
            batch: batch.clone(),
        });
        let slot = self.slots.entry(seq).or_default();
        slot.proposal = Some(SlotProposal {
            digest,
            batch,
            signed: Some(proposal),
        });
        slot.proposed_at = Some(self.ledger.now);
        self.send_prepare(seq, digest, false);
        self.check_prepared(seq);
    }

    /// Signs, records and multicasts this replica's PREPARE; the vote record is made durable
    /// first unless the caller already did.
    pub(super) fn send_prepare(&mut self, seq: u64, digest: ordinal_crypto::Digest, persist: bool) {
        if !self.ledger.votes_at(seq) {
            return;
        }
        if persist {
            self.ledger.persist(SafetyUpdate::Prepare {
                view: self.view,
                seq,
                digest,
            });
            self.prepare_votes.insert(seq, (self.view, digest));
        }
        let vote = self.ledger.sign(PrepareVote {
            view: self.view,
            seq,
            digest,
        });
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.prepares.insert(Verified::new_unchecked_own(vote.clone()));
            slot.sent_prepare = true;
        }
        self.ledger.broadcast(Message::Prepare(vote));
    }

    /// PBFT 4.2: a backup accepts a PRE-PREPARE in its view, inside the watermarks, if it has
    /// not accepted a different one for the same (view, seq).
    pub(super) fn on_pre_prepare(
        &mut self,
        proposal: Verified<Proposal>,
        batch: Batch,
    ) -> Result<(), Invalid> {
        let body = *proposal.body();
        self.ledger.note_seq(proposal.signer(), body.seq);
        self.check_view(proposal.signer(), body.view)?;
        if proposal.signer() != self.primary() {
            return Err(Invalid::WrongLeader {
                view: body.view,
                expected: self.primary(),
                got: proposal.signer(),
            });
        }
        self.ledger.check_window(body.seq)?;
        if let Some((view, digest)) = self.prepare_votes.get(&body.seq) {
            if *view == body.view && *digest != body.digest {
                return Err(Invalid::Equivocation {
                    view: body.view,
                    seq: body.seq,
                    first: *digest,
                    second: body.digest,
                });
            }
        }
        let slot = self.slots.entry(body.seq).or_default();
        if let Some(existing) = &slot.proposal {
            if existing.digest == body.digest {
                return Ok(());
            }
            let error = Invalid::Equivocation {
                view: body.view,
                seq: body.seq,
                first: existing.digest,
                second: body.digest,
            };
            // Two signed proposals for one slot prove the primary faulty: replace it now
            // rather than waiting for a timeout.
            self.ledger.monitor.refused(proposal.signer());
            self.start_view_change(self.view.saturating_add(1));
            return Err(error);
        }
        slot.proposal = Some(SlotProposal {
            digest: body.digest,
            batch,
            signed: Some(proposal.into_signed()),
        });
        slot.proposed_at = Some(self.ledger.now);
        if !self.is_primary() {
            self.send_prepare(body.seq, body.digest, true);
        }
        self.check_prepared(body.seq);
        self.check_committed(body.seq);
        Ok(())
    }

    pub(super) fn on_prepare(&mut self, vote: Verified<PrepareVote>) -> Result<(), Invalid> {
        let body = *vote.body();
        self.ledger.note_seq(vote.signer(), body.seq);
        self.check_view(vote.signer(), body.view)?;
        self.ledger.check_window(body.seq)?;
        let from = vote.signer();
        let slot = self.slots.entry(body.seq).or_default();
        if slot.contradicts(&slot.late_prepares, from, &body.digest) {
            return Err(Invalid::DuplicateVote {
                from,
                view: body.view,
                seq: body.seq,
            });
        }
        match slot.prepares.insert(vote) {
            Inserted::Conflict => {
                return Err(Invalid::DuplicateVote {
                    from,
                    view: body.view,
                    seq: body.seq,
                })
            }
            // Counted, not timed: see `on_commit`. A vote already credited unchecked is not
            // counted twice.
            Inserted::New if !slot.late_prepares.contains(&from) => {
                self.ledger.monitor.vote(from, None);
                if slot.prepared || slot.committed {
                    self.ledger.monitor.late_vote(from);
                }
            }
            Inserted::New => {}
            Inserted::Repeat => {}
        }
        self.check_prepared(body.seq);
        Ok(())
    }

    pub(super) fn on_commit(&mut self, vote: Verified<CommitVote>) -> Result<(), Invalid> {
        let body = *vote.body();
        self.ledger.note_seq(vote.signer(), body.seq);
        self.check_view(vote.signer(), body.view)?;
        self.ledger.check_window(body.seq)?;
        let from = vote.signer();
        let slot = self.slots.entry(body.seq).or_default();
        if slot.contradicts(&slot.late_commits, from, &body.digest) {
            return Err(Invalid::DuplicateVote {
                from,
                view: body.view,
                seq: body.seq,
            });
        }
        match slot.commits.insert(vote) {
            Inserted::Conflict => {
                return Err(Invalid::DuplicateVote {
                    from,
                    view: body.view,
                    seq: body.seq,
                })
            }
            // A peer's vote latency is timed to its COMMIT: every replica, the primary too,
            // sends it only after hearing a quorum of PREPAREs, so a replica slow to receive
            // shows as slow whatever its role.
            Inserted::New if !slot.late_commits.contains(&from) => {
                if let Some(at) = slot.proposed_at {
                    self.ledger
                        .monitor
                        .vote_latency(from, self.ledger.now.saturating_sub(at));
                }
                if slot.committed {
                    self.ledger.monitor.late_vote(from);
                }
            }
            Inserted::New | Inserted::Repeat => {}
        }
        self.check_committed(body.seq);
        Ok(())
    }

    /// What to make of a late vote (`crate::late`) without checking its signature, where
    /// that is possible: credited, a repeat of the sender's vote already held, or refused as
    /// stale the way its checked copy would be (an older view, below the stable checkpoint).
    /// `None` leaves it to be verified. So a peer replaying its own counted votes, or votes of
    /// a view since changed, costs the protocol thread no signature checks.
    pub(super) fn answer_late_vote(
        &mut self,
        from: ReplicaId,
        vote: &LateVote,
    ) -> Option<Result<(), Invalid>> {
        if vote.signer() != from {
            return None;
        }
        let (view, seq) = match vote {
            LateVote::Prepare(v) => (v.body.view, v.body.seq),
            LateVote::Commit(v) => (v.body.view, v.body.seq),
        };
        if view < self.view || seq <= self.ledger.stable.seq {
            return Some(Err(Invalid::Stale));
        }
        let now = self.ledger.now;
        let repeat = self.slots.get(&seq).is_some_and(|slot| match vote {
            LateVote::Prepare(v) => slot
                .prepares
                .vote_of(from)
                .is_some_and(|held| *held.body() == v.body),
            LateVote::Commit(v) => slot
                .commits
                .vote_of(from)
                .is_some_and(|held| *held.body() == v.body),
        });
        if repeat || self.credit_late_vote(from, vote) {
            self.ledger.monitor.heard(from, now);
            return Some(Ok(()));
        }
        None
    }

    /// A vote the host handed in unchecked as late (`crate::late`): credited as `on_prepare`
    /// or `on_commit` would credit it, if this replica's own state agrees that the vote is
    /// from a member of the slot's committee, for the statement settled in this view, and the
    /// sender's first vote there. `false` leaves the vote to be verified and handled as a
    /// message (which also answers a repeat of a vote already held, and a conflicting one).
    pub(super) fn credit_late_vote(&mut self, from: ReplicaId, vote: &LateVote) -> bool {
        if vote.signer() != from || self.changing.is_some() {
            return false;
        }
        let seq = vote.seq();
        if !self
            .ledger
            .committees
            .for_seq(seq)
            .is_some_and(|committee| committee.contains(from))
        {
            return false;
        }
        let Some(slot) = self.slots.get_mut(&seq) else {
            return false;
        };
        let Some(digest) = slot.proposal.as_ref().map(|p| p.digest) else {
            return false;
        };
        let monitor = &mut self.ledger.monitor;
        match vote {
            LateVote::Prepare(vote) => {
                let settled = slot.prepared || slot.committed;
                if vote.body.view != self.view
                    || vote.body.digest != digest
                    || !settled
                    || slot.prepares.vote_of(from).is_some()
                {
                    return false;
                }
                if !slot.late_prepares.contains(&from) {
                    slot.late_prepares.push(from);
                    monitor.vote(from, None);
                    monitor.late_vote(from);
                }
            }
            LateVote::Commit(vote) => {
                if vote.body.view != self.view
                    || vote.body.digest != digest
                    || !slot.committed
                    || slot.commits.vote_of(from).is_some()
                {
                    return false;
                }
                if !slot.late_commits.contains(&from) {
                    slot.late_commits.push(from);
                    if let Some(at) = slot.proposed_at {
                        monitor.vote_latency(from, self.ledger.now.saturating_sub(at));
                    }
                    monitor.late_vote(from);
                }
            }
        }
        self.ledger.note_seq(from, seq);
        true
    }

    /// PBFT 4.2: prepared once the proposal and a quorum of matching PREPAREs are held; the
    /// prepared certificate is made durable, then COMMIT goes out.
    pub(super) fn check_prepared(&mut self, seq: u64) {
        let view = self.view;
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        let Some(proposal) = &slot.proposal else {
            return;
        };
        if slot.prepared {
            return;
        }
        let statement = PrepareVote {
            view,
            seq,
            digest: proposal.digest,
        };
        let Some(committee) = self.ledger.committees.for_seq(seq) else {
            return;
        };
        let Some(certificate) = slot.prepares.certificate(&statement, committee) else {
            return;
        };
        let proof = PreparedProof {
            certificate,
            batch: proposal.batch.clone(),
        };
        let digest = proposal.digest;
        self.prepared.insert(seq, proof.clone());
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.prepared = true;
        }
        self.ledger.settled(Settled::Prepare(statement));
        if !self.ledger.votes_at(seq) {
            // Following the log without a vote: the prepared proof still serves view changes'
            // evidence here, and the commit certificate comes from the members.
            self.check_committed(seq);
            return;
        }
        self.ledger.persist(SafetyUpdate::Prepared(proof));
        let vote = self.ledger.sign(CommitVote { view, seq, digest });
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.sent_commit = true;
            slot.commits.insert(Verified::new_unchecked_own(vote.clone()));
        }
        self.ledger.broadcast(Message::Commit(vote));
        self.check_committed(seq);
    }

    /// PBFT 4.2: committed once a quorum of matching COMMITs is held. The commit certificate
    /// alone proves the batch committed, so a replica that missed the PREPAREs may still use it.
    pub(super) fn check_committed(&mut self, seq: u64) {
        let view = self.view;
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        let Some(proposal) = &slot.proposal else {
            return;
        };
        if slot.committed {
            return;
        }
        let statement = CommitVote {
            view,
            seq,
            digest: proposal.digest,
        };
        let Some(committee) = self.ledger.committees.for_seq(seq) else {
            return;
        };
        let Some(certificate) = slot.commits.certificate(&statement, committee) else {
            return;
        };
        slot.committed = true;
        let batch = proposal.batch.clone();
        self.ledger.settled(Settled::Commit(statement));
        self.ledger.commit(CommittedBatch { batch, certificate });
    }
}
