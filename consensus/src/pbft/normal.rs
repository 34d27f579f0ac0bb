//! The normal case: requests, PRE-PREPARE, PREPARE, COMMIT and in-order execution (PBFT 4.2).

use ordinal_crypto::Verified;

use super::{PendingRequest, Replica, SlotProposal};
use crate::batch::{Batch, CommittedBatch};
use crate::error::Invalid;
use crate::io::Action;
use crate::messages::{extend_log_digest, CommitVote, Message, PrepareVote, PreparedProof, Proposal};
use crate::quorum::Inserted;
use crate::request::{Position, Request, Seen};
use crate::safety::SafetyUpdate;

impl Replica {
    /// A client request, directly or `forwarded` by a backup (PBFT 4.1).
    pub(super) fn on_request(&mut self, request: Request, forwarded: bool) -> Result<(), Invalid> {
        request.check_shape(&self.config)?;
        if forwarded && self.config.request_auth == crate::config::RequestAuth::Unsigned {
            // Without client signatures a forwarded request proves nothing about its client:
            // any Byzantine replica could forge one.
            return Err(Invalid::UnsignedRequest);
        }
        let key = request.key(self.config.request_auth);
        match self.clients.check(&key) {
            Seen::Ordered(position) => {
                // A retry of an ordered request: answer with the original position, never
                // order it again.
                if position.seq <= self.persisted {
                    self.actions.push(Action::Reply { key, position });
                }
                return Ok(());
            }
            Seen::Stale => return Err(Invalid::Duplicate),
            Seen::New => {}
        }
        if self.pending.contains_key(&key) {
            return Ok(());
        }
        if self.pending.len() >= self.config.max_pending_requests {
            return Err(Invalid::Overloaded);
        }
        self.arrival_counter += 1;
        let arrival = (self.now, self.arrival_counter);
        self.arrivals.insert(arrival, key);
        self.pending.insert(
            key,
            PendingRequest {
                request,
                arrival,
                proposed: false,
            },
        );
        if self.is_primary() {
            self.queue.push_back(key);
            if self.batch_deadline.is_none() {
                self.batch_deadline = Some(self.now + self.config.batch_delay);
            }
        } else if !forwarded && self.config.request_auth == crate::config::RequestAuth::Signed {
            // PBFT 4.1: make sure the primary has it before suspecting the primary of
            // ignoring it, so a client cannot force view changes by skipping the primary.
            let primary = self.primary();
            if let Some(pending) = self.pending.get(&key) {
                let message = Message::Request(pending.request.clone());
                self.send(primary, message);
            }
        }
        Ok(())
    }

    /// The primary proposes batches while it has requests, room in the pipeline and the window,
    /// and either a full batch or an expired batching delay.
    pub(super) fn try_propose(&mut self) {
        if !self.is_primary() || self.changing.is_some() {
            return;
        }
        let flush = self.batch_deadline.is_some_and(|d| d <= self.now);
        loop {
            if self.queue.is_empty()
                || !self.has_room()
                || !(flush || self.queue.len() >= self.config.max_batch_requests)
            {
                break;
            }
            let batch = self.take_batch();
            if batch.requests.is_empty() {
                continue;
            }
            self.propose(batch);
        }
        if self.queue.is_empty() {
            self.batch_deadline = None;
        } else if self.batch_deadline.is_none() {
            self.batch_deadline = Some(self.now + self.config.batch_delay);
        }
        // When the pipeline is full an expired deadline stays: the input that frees room
        // (an execution) flushes at once. `poll_timeout` ignores it meanwhile.
    }

    /// Whether the pipeline and the window leave room for another proposal.
    pub(super) fn has_room(&self) -> bool {
        self.next_seq.saturating_sub(self.last_executed + 1) < self.config.max_inflight_batches
            && self.next_seq <= self.window_high()
    }

    fn take_batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        let mut bytes = 0usize;
        if self.queue.len() > 2 * self.pending.len() + self.config.max_batch_requests {
            // Drop keys ordered meanwhile, so the queue stays proportional to what waits.
            let pending = &self.pending;
            self.queue
                .retain(|key| pending.get(key).is_some_and(|p| !p.proposed));
        }
        while let Some(key) = self.queue.front().copied() {
            let Some(pending) = self.pending.get_mut(&key) else {
                self.queue.pop_front();
                continue;
            };
            if pending.proposed {
                self.queue.pop_front();
                continue;
            }
            let size = pending.request.payload.len();
            if batch.requests.len() >= self.config.max_batch_requests
                || (bytes + size > self.config.max_batch_bytes && !batch.requests.is_empty())
            {
                break;
            }
            self.queue.pop_front();
            pending.proposed = true;
            bytes += size;
            batch.requests.push(pending.request.clone());
        }
        batch
    }

    /// PBFT 4.2: the primary assigns the next sequence number and multicasts PRE-PREPARE.
    fn propose(&mut self, batch: Batch) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let digest = batch.digest();
        let proposal = self.sign(Proposal {
            view: self.view,
            seq,
            digest,
        });
        self.persist(SafetyUpdate::Prepare {
            view: self.view,
            seq,
            digest,
        });
        self.prepare_votes.insert(seq, (self.view, digest));
        self.broadcast(Message::PrePrepare {
            proposal: proposal.clone(),
            batch: batch.clone(),
        });
        let slot = self.slots.entry(seq).or_default();
        slot.proposal = Some(SlotProposal {
            digest,
            batch,
            signed: Some(proposal),
        });
        self.send_prepare(seq, digest, false);
        self.check_prepared(seq);
    }

    /// Signs, records and multicasts this replica's PREPARE; the vote record is made durable
    /// first unless the caller already did.
    pub(super) fn send_prepare(&mut self, seq: u64, digest: ordinal_crypto::Digest, persist: bool) {
        if persist {
            self.persist(SafetyUpdate::Prepare {
                view: self.view,
                seq,
                digest,
            });
            self.prepare_votes.insert(seq, (self.view, digest));
        }
        let vote = self.sign(PrepareVote {
            view: self.view,
            seq,
            digest,
        });
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.prepares.insert(Verified::new_unchecked_own(vote.clone()));
            slot.sent_prepare = true;
        }
        self.broadcast(Message::Prepare(vote));
    }

    /// PBFT 4.2: a backup accepts a PRE-PREPARE in its view, inside the watermarks, if it has
    /// not accepted a different one for the same (view, seq).
    pub(super) fn on_pre_prepare(
        &mut self,
        proposal: Verified<Proposal>,
        batch: Batch,
    ) -> Result<(), Invalid> {
        let body = *proposal.body();
        self.note_seq(proposal.signer(), body.seq);
        self.check_view(proposal.signer(), body.view)?;
        if proposal.signer() != self.primary() {
            return Err(Invalid::WrongLeader {
                view: body.view,
                expected: self.primary(),
                got: proposal.signer(),
            });
        }
        self.check_window(body.seq)?;
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
            self.start_view_change(self.view.saturating_add(1));
            return Err(error);
        }
        slot.proposal = Some(SlotProposal {
            digest: body.digest,
            batch,
            signed: Some(proposal.into_signed()),
        });
        if !self.is_primary() {
            self.send_prepare(body.seq, body.digest, true);
        }
        self.check_prepared(body.seq);
        self.check_committed(body.seq);
        Ok(())
    }

    pub(super) fn on_prepare(&mut self, vote: Verified<PrepareVote>) -> Result<(), Invalid> {
        let body = *vote.body();
        self.note_seq(vote.signer(), body.seq);
        self.check_view(vote.signer(), body.view)?;
        self.check_window(body.seq)?;
        let from = vote.signer();
        let slot = self.slots.entry(body.seq).or_default();
        if slot.prepares.insert(vote) == Inserted::Conflict {
            return Err(Invalid::DuplicateVote {
                from,
                view: body.view,
                seq: body.seq,
            });
        }
        self.check_prepared(body.seq);
        Ok(())
    }

    pub(super) fn on_commit(&mut self, vote: Verified<CommitVote>) -> Result<(), Invalid> {
        let body = *vote.body();
        self.note_seq(vote.signer(), body.seq);
        self.check_view(vote.signer(), body.view)?;
        self.check_window(body.seq)?;
        let from = vote.signer();
        let slot = self.slots.entry(body.seq).or_default();
        if slot.commits.insert(vote) == Inserted::Conflict {
            return Err(Invalid::DuplicateVote {
                from,
                view: body.view,
                seq: body.seq,
            });
        }
        self.check_committed(body.seq);
        Ok(())
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
        if slot.sent_commit {
            return;
        }
        let statement = PrepareVote {
            view,
            seq,
            digest: proposal.digest,
        };
        let Some(certificate) = slot.prepares.certificate(&statement, &self.committee) else {
            return;
        };
        let proof = PreparedProof {
            certificate,
            batch: proposal.batch.clone(),
        };
        let digest = proposal.digest;
        self.prepared.insert(seq, proof.clone());
        self.persist(SafetyUpdate::Prepared(proof));
        let vote = self.sign(CommitVote { view, seq, digest });
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.sent_commit = true;
            slot.commits.insert(Verified::new_unchecked_own(vote.clone()));
        }
        self.broadcast(Message::Commit(vote));
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
        let Some(certificate) = slot.commits.certificate(&statement, &self.committee) else {
            return;
        };
        slot.committed = true;
        let batch = proposal.batch.clone();
        // A replica far behind does not hoard new batches; state transfer brings them in order.
        if seq > self.last_executed && seq <= self.last_executed + self.config.log_window {
            self.committed
                .entry(seq)
                .or_insert(CommittedBatch { batch, certificate });
            self.execute_ready();
        }
    }

    /// Executes committed batches strictly in sequence order.
    pub(super) fn execute_ready(&mut self) {
        while let Some(next) = self.committed.remove(&(self.last_executed + 1)) {
            self.apply(next, true);
        }
        let executed = self.last_executed;
        self.committed.retain(|seq, _| *seq > executed);
    }

    /// Applies one committed batch to the ordered log: de-duplicates its requests, extends the
    /// running log hash and, when `live`, asks the host to persist it.
    pub(super) fn apply(&mut self, committed: CommittedBatch, live: bool) {
        let seq = committed.seq();
        let auth = self.config.request_auth;
        let mut replies = Vec::with_capacity(committed.batch.requests.len());
        for (index, request) in committed.batch.requests.iter().enumerate() {
            let key = request.key(auth);
            let position = Position {
                seq,
                index: index as u32,
            };
            match self.clients.check(&key) {
                Seen::New => {
                    self.clients.record(&key, position);
                    replies.push((key, position));
                }
                Seen::Ordered(original) => replies.push((key, original)),
                Seen::Stale => {}
            }
            if let Some(pending) = self.pending.remove(&key) {
                self.arrivals.remove(&pending.arrival);
            }
        }
        self.log_digest = extend_log_digest(&self.log_digest, seq, &committed.certificate.statement.digest);
        self.last_executed = seq;
        self.known_high_seq = self.known_high_seq.max(seq);
        self.next_seq = self.next_seq.max(seq + 1);
        if seq % self.config.checkpoint_interval == 0 && seq > self.stable.seq {
            self.own_checkpoints.insert(seq, self.log_digest);
        }
        if live {
            self.last_progress = self.now;
            if self.changing.is_none() {
                self.failed_views = 0;
            }
            self.awaiting_persist.insert(seq, replies);
            self.actions.push(Action::PersistBatch(committed));
        }
    }

    /// The host reports batches durable through `seq`: receipts and checkpoint votes may go.
    pub(super) fn on_persisted(&mut self, seq: u64) {
        let seq = seq.min(self.last_executed);
        if seq <= self.persisted {
            return;
        }
        self.persisted = seq;
        let rest = self.awaiting_persist.split_off(&(seq + 1));
        let done = std::mem::replace(&mut self.awaiting_persist, rest);
        for (key, position) in done.into_values().flatten() {
            self.actions.push(Action::Reply { key, position });
        }
        self.announce_checkpoints();
    }
}
