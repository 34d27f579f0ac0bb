//! The ordered log as a replica holds it, shared by PBFT and the linear mode: admitting client
//! requests, executing committed batches in order (de-duplication, the running log hash),
//! persisting them and answering clients, checkpoints with garbage collection (PBFT 4.3), and
//! state transfer of certified batches (the TOCS paper, section 5.3, simplified: the state is
//! the certified log itself).
//!
//! A protocol decides *what* commits at which sequence number; everything after that is here,
//! once, so both protocols produce the same log, the same receipts and the same checkpoints.

use std::collections::BTreeMap;

use ordinal_crypto::{Committee, Digest, KeyPair, ReplicaId, Signable, Signed, Verified};

use crate::batch::CommittedBatch;
use crate::config::{ProtocolConfig, RequestAuth};
use crate::epoch::{entry_nonce, Committees, LatencyReport, QuorumEntry, WeightChange};
use crate::error::Invalid;
use crate::io::{Action, Time};
use crate::messages::{extend_log_digest, genesis_log_digest, CheckpointVote, Message, StableCheckpoint};
use crate::pool::RequestPool;
use crate::quorum::{Inserted, VoteSet};
use crate::reliability::{DetectorBounds, PeerMonitor};
use crate::request::{ClientTable, Position, Request, RequestKey, Seen};
use crate::safety::SafetyUpdate;

/// What [`Ledger::admit`] did with a client request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// It now waits in the pool.
    New(RequestKey),
    /// Already waiting, or already ordered (then answered with its original position).
    Known,
}

/// One replica's identity, outbox and ordered log.
pub(crate) struct Ledger {
    pub(crate) id: ReplicaId,
    pub(crate) key: KeyPair,
    /// The weight schedule derived from the executed log; `signers()` for keys, `current()`
    /// for the membership in force.
    pub(crate) committees: Committees,
    pub(crate) config: ProtocolConfig,
    pub(crate) now: Time,
    pub(crate) actions: Vec<Action>,

    pub(crate) pool: RequestPool,
    pub(crate) clients: ClientTable,

    pub(crate) last_executed: u64,
    pub(crate) log_digest: Digest,
    /// Committed batches waiting for earlier ones (within the window).
    pub(crate) committed: BTreeMap<u64, CommittedBatch>,
    pub(crate) persisted: u64,
    awaiting_persist: BTreeMap<u64, Vec<(RequestKey, Position)>>,
    /// When a batch last executed live.
    pub(crate) last_progress: Time,

    pub(crate) stable: StableCheckpoint,
    checkpoint_votes: BTreeMap<u64, VoteSet<CheckpointVote>>,
    own_checkpoints: BTreeMap<u64, Digest>,
    sent_checkpoint_upto: u64,

    pub(crate) known_high_seq: u64,
    seq_seen: BTreeMap<ReplicaId, u64>,
    pub(crate) catch_up_peer: usize,
    /// The peer to ask next, when one just proved useful.
    pub(crate) catch_up_hint: Option<ReplicaId>,
    served: BTreeMap<ReplicaId, (Time, u64)>,
    /// Per-peer measurements and the failure detector.
    pub(crate) monitor: PeerMonitor,
    /// A checkpoint proved the log behind: ask a peer for batches once the protocol adds its
    /// view to the request ([`Ledger::flush_catch_up`]).
    catch_up_due: bool,
    /// A stable checkpoint made a latency report due ([`Ledger::take_report_due`]).
    report_due: bool,
}

impl Ledger {
    /// An empty log whose stable checkpoint is `stable` (genesis for a fresh replica).
    pub(crate) fn new(
        id: ReplicaId,
        key: KeyPair,
        committee: Committee,
        config: ProtocolConfig,
        now: Time,
        stable: StableCheckpoint,
    ) -> Self {
        let monitor = PeerMonitor::new(id, committee.size(), DetectorBounds::from_config(&config), now);
        let committees = Committees::with_policy(
            committee,
            config.weight_bounds,
            config.weight_reports_every > 0,
            config.checkpoint_interval,
            config.log_window,
        )
        .with_operator(config.membership_operator);
        Ledger {
            id,
            key,
            clients: ClientTable::new(config.client_nonce_window),
            committees,
            config,
            now,
            actions: Vec::new(),
            pool: RequestPool::default(),
            last_executed: 0,
            log_digest: genesis_log_digest(),
            committed: BTreeMap::new(),
            persisted: 0,
            awaiting_persist: BTreeMap::new(),
            last_progress: now,
            stable,
            checkpoint_votes: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
            sent_checkpoint_upto: 0,
            known_high_seq: 0,
            seq_seen: BTreeMap::new(),
            catch_up_peer: id.index(),
            catch_up_hint: None,
            monitor,
            served: BTreeMap::new(),
            catch_up_due: false,
            report_due: false,
        }
    }

    /// Replays the stored log (contiguous from sequence number 1, read lazily) to rebuild the
    /// de-duplication table and the running log hash. Stops at the first gap.
    pub(crate) fn replay(&mut self, log: impl IntoIterator<Item = CommittedBatch>) {
        for committed in log {
            if committed.seq() != self.last_executed + 1 {
                break;
            }
            self.apply(committed, false);
        }
        self.persisted = self.last_executed;
        self.known_high_seq = self.stable.seq.max(self.last_executed);
    }

    /// A weight change for the next epoch, signed by this replica, as a request to order.
    pub(crate) fn weight_change_request(&self, weights: Vec<u64>) -> Request {
        let change = WeightChange {
            epoch: self.committees.latest().epoch() + 1,
            weights,
        };
        let nonce = entry_nonce(self.last_executed, 0);
        QuorumEntry::Weights(change).to_request(&self.key, &self.committees.base().cluster_id(), nonce)
    }

    /// This replica's measurements of its peers for the latest epoch, as a request to order.
    pub(crate) fn latency_report_request(&self) -> Request {
        let mut latencies_us = vec![None; self.committees.latest().slots()];
        for report in self.monitor.reports(self.now) {
            if let Some(slot) = latencies_us.get_mut(report.peer.index()) {
                *slot = report
                    .vote_latency
                    .map(|l| u32::try_from(l.as_micros()).unwrap_or(u32::MAX));
            }
        }
        let report = LatencyReport {
            epoch: self.committees.latest().epoch(),
            latencies_us,
        };
        let nonce = entry_nonce(self.last_executed, 1);
        QuorumEntry::Latencies(report).to_request(&self.key, &self.committees.base().cluster_id(), nonce)
    }

    /// Whether a latency report is due (set at every `weight_reports_every`-th stable
    /// checkpoint); clears it.
    pub(crate) fn take_report_due(&mut self) -> bool {
        std::mem::take(&mut self.report_due)
    }

    /// Whether `request` is a quorum-manager entry signed by a member.
    pub(crate) fn is_member_entry(&self, request: &Request) -> bool {
        QuorumEntry::from_request(request, self.committees.signers(), self.committees.operator()).is_some()
    }

    /// The weight epoch in force at the next sequence number to execute.
    pub(crate) fn weight_epoch(&self) -> u64 {
        self.committees
            .for_seq(self.last_executed + 1)
            .unwrap_or(self.committees.latest())
            .epoch()
    }

    /// Whether this replica votes at `seq`: a member of the epoch in force there. A replica
    /// that is joining, or has left, follows the log without voting.
    pub(crate) fn votes_at(&self, seq: u64) -> bool {
        self.committees.for_seq(seq).is_some_and(|c| c.contains(self.id))
    }

    /// Whether this replica is a member of the epoch in force at its next sequence number.
    pub(crate) fn is_member(&self) -> bool {
        self.votes_at(self.last_executed + 1)
    }

    pub(crate) fn sign<T: Signable>(&self, body: T) -> Signed<T> {
        Signed::sign(body, self.id, &self.key, self.committees.signers())
    }

    pub(crate) fn broadcast(&mut self, message: Message) {
        self.actions.push(Action::Broadcast { message });
    }

    pub(crate) fn send(&mut self, to: ReplicaId, message: Message) {
        if to != self.id {
            self.actions.push(Action::Send { to, message });
        }
    }

    pub(crate) fn persist(&mut self, update: SafetyUpdate) {
        self.actions.push(Action::PersistSafety(update));
    }

    /// Tells the host that later votes for `statement` build nothing (see [`crate::late`]).
    pub(crate) fn settled(&mut self, statement: crate::late::Settled) {
        self.actions.push(Action::Settled(statement));
    }

    /// A late vote this replica cannot credit unchecked: verified here, as the host would have
    /// (a failure counts against the sender like one refused at the edge).
    pub(crate) fn verify_late_vote(
        &mut self,
        from: ReplicaId,
        vote: crate::late::LateVote,
    ) -> Result<crate::messages::VerifiedMessage, Invalid> {
        vote.verify(self.committees.signers()).inspect_err(|e| {
            if e.is_fault() {
                self.monitor.refused(from);
            }
        })
    }

    /// The high watermark: no sequence number above it is voted on.
    pub(crate) fn window_high(&self) -> u64 {
        self.stable.seq + self.config.log_window
    }

    /// Accepts sequence numbers inside the watermarks.
    pub(crate) fn check_window(&self, seq: u64) -> Result<(), Invalid> {
        if seq <= self.stable.seq {
            return Err(Invalid::Stale);
        }
        if seq > self.window_high() {
            return Err(Invalid::OutsideWindow {
                seq,
                low: self.stable.seq,
                high: self.window_high(),
            });
        }
        // A replica behind its own stable checkpoint may not know the weights here yet
        // (`crate::epoch`): it votes only once its log has caught up.
        if self.committees.for_seq(seq).is_none() {
            return Err(Invalid::UnknownEpoch { seq });
        }
        Ok(())
    }

    /// A client request, directly or `forwarded` by a replica (PBFT 4.1): checks it, answers
    /// a retry of an ordered request with its original position, and otherwise makes it wait.
    pub(crate) fn admit(&mut self, request: Request, forwarded: bool) -> Result<Admitted, Invalid> {
        request.check_shape(&self.config)?;
        if forwarded && self.config.request_auth == RequestAuth::Unsigned && !self.is_member_entry(&request) {
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
                return Ok(Admitted::Known);
            }
            Seen::Stale => return Err(Invalid::Duplicate),
            Seen::New => {}
        }
        if self.pool.contains(&key) {
            return Ok(Admitted::Known);
        }
        self.pool.insert(key, request, self.now, &self.config)?;
        Ok(Admitted::New(key))
    }

    /// A protocol decided `committed`: buffer it and execute whatever is now in order. A
    /// replica far behind does not hoard new batches; state transfer brings them in order.
    pub(crate) fn commit(&mut self, committed: CommittedBatch) {
        let seq = committed.seq();
        if seq > self.last_executed && seq <= self.last_executed + self.config.log_window {
            self.committed.entry(seq).or_insert(committed);
            self.execute_ready();
        }
    }

    /// Executes committed batches strictly in sequence order.
    pub(crate) fn execute_ready(&mut self) {
        while let Some(next) = self.committed.remove(&(self.last_executed + 1)) {
            self.apply(next, true);
        }
        let executed = self.last_executed;
        self.committed.retain(|seq, _| *seq > executed);
    }

    /// Applies one committed batch to the ordered log: de-duplicates its requests, extends the
    /// running log hash and, when `live`, asks the host to persist it.
    fn apply(&mut self, committed: CommittedBatch, live: bool) {
        let seq = committed.seq();
        let auth = self.config.request_auth;
        let mut replies = Vec::with_capacity(committed.batch.requests().len());
        for (index, request) in committed.batch.requests().iter().enumerate() {
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
            self.pool.remove(&key);
        }
        self.log_digest = extend_log_digest(&self.log_digest, seq, &committed.certificate.statement.digest);
        // Quorum-manager entries count wherever they appear (a repeat is recognised by its
        // nonce), so that a client replaying the certified log derives the same schedule.
        // (What became of each entry is counted there too: `Committees::refusals`.)
        self.committees.apply_batch(seq, &committed.batch);
        self.monitor.grow(self.committees.latest().slots(), self.now);
        self.last_executed = seq;
        self.known_high_seq = self.known_high_seq.max(seq);
        if seq % self.config.checkpoint_interval == 0 && seq > self.stable.seq {
            self.own_checkpoints.insert(seq, self.log_digest);
        }
        if live {
            self.last_progress = self.now;
            self.awaiting_persist.insert(seq, replies);
            self.actions.push(Action::PersistBatch(committed));
        }
    }

    /// The host reports batches durable through `seq`: receipts and checkpoint votes may go.
    pub(crate) fn on_persisted(&mut self, seq: u64) {
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

    /// Remembers the highest sequence number a peer has shown it reached. One peer's claim
    /// proves nothing; see [`Ledger::evidenced_seq`].
    pub(crate) fn note_seq(&mut self, from: ReplicaId, seq: u64) {
        if self.committees.signers().contains(from) && from != self.id {
            let seen = self.seq_seen.entry(from).or_insert(0);
            *seen = (*seen).max(seq);
        }
    }

    /// The highest sequence number that peers holding more than F weight have all reached: at
    /// least one correct replica vouches for it, so a Byzantine peer cannot fake being ahead.
    pub(crate) fn evidenced_seq(&self) -> u64 {
        let mut seen: Vec<(u64, ReplicaId)> = self.seq_seen.iter().map(|(id, seq)| (*seq, *id)).collect();
        seen.sort_unstable_by(|a, b| b.cmp(a));
        let mut weight = 0;
        let committee = self.committees.current();
        for (seq, id) in seen {
            weight += committee.weight(id).unwrap_or(0);
            if weight > committee.faulty_weight() {
                return seq;
            }
        }
        0
    }

    /// Whether the log is evidently behind the cluster's.
    pub(crate) fn log_behind(&self) -> bool {
        self.known_high_seq.max(self.evidenced_seq()) > self.last_executed
            || self.last_executed > self.window_high()
    }

    /// Sends CHECKPOINT for every executed checkpoint that is now durable: a replica vouches
    /// only for state it will still have after a crash.
    pub(crate) fn announce_checkpoints(&mut self) {
        let ready: Vec<(u64, Digest)> = self
            .own_checkpoints
            .range(self.sent_checkpoint_upto + 1..=self.persisted)
            .map(|(seq, digest)| (*seq, *digest))
            .collect();
        for (seq, log_digest) in ready {
            self.sent_checkpoint_upto = seq;
            if seq <= self.stable.seq || !self.votes_at(seq) {
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
    pub(crate) fn resend_checkpoint(&mut self) {
        let latest = self
            .checkpoint_votes
            .iter()
            .rev()
            .find_map(|(_, votes)| votes.vote_of(self.id).map(|v| v.signed().clone()));
        if let Some(vote) = latest {
            self.broadcast(Message::Checkpoint(vote));
        }
    }

    /// A CHECKPOINT vote (PBFT 4.3); `view` only labels a refusal.
    pub(crate) fn on_checkpoint(&mut self, vote: Verified<CheckpointVote>, view: u64) -> Result<(), Invalid> {
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
                view,
                seq: body.seq,
            });
        }
        self.check_stable(body.seq);
        Ok(())
    }

    fn check_stable(&mut self, seq: u64) {
        let Some(votes) = self.checkpoint_votes.get(&seq) else {
            return;
        };
        let Some(committee) = self.committees.for_seq(seq) else {
            return;
        };
        let proof = votes
            .statements()
            .into_iter()
            .find_map(|statement| votes.certificate(&statement, committee));
        if let Some(certificate) = proof {
            self.make_stable(StableCheckpoint {
                seq,
                log_digest: certificate.statement.log_digest,
                certificate: Some(certificate),
            });
        }
    }

    /// PBFT 4.3: a proven checkpoint becomes the low watermark; everything at or below it is
    /// discarded (the protocol prunes its own records when it sees `stable` move). A replica
    /// that has not executed that far fetches the batches.
    pub(crate) fn make_stable(&mut self, stable: StableCheckpoint) {
        if stable.seq <= self.stable.seq {
            return;
        }
        let seq = stable.seq;
        self.stable = stable.clone();
        self.persist(SafetyUpdate::Stable(stable));
        self.checkpoint_votes = self.checkpoint_votes.split_off(&(seq + 1));
        self.own_checkpoints = self.own_checkpoints.split_off(&seq);
        self.known_high_seq = self.known_high_seq.max(seq);
        if self.last_executed < seq {
            self.catch_up_due = true;
        }
        let every = self.config.weight_reports_every;
        if every > 0
            && self.committees.changes_enabled()
            && (seq / self.config.checkpoint_interval) % every == 0
        {
            self.report_due = true;
        }
    }

    /// On each tick, tell the next peer in turn how far this replica got. The message doubles
    /// as a status ping: a peer that is behind learns it from it, and a peer that is ahead
    /// answers with what we lack. Rotating peers gets past silent Byzantine ones.
    pub(crate) fn ping_peer(&mut self, view: u64) {
        self.catch_up_peer = self.catch_up_peer.wrapping_add(1);
        self.request_catch_up(view);
    }

    /// Sends the catch-up request a new stable checkpoint made due, if any.
    pub(crate) fn flush_catch_up(&mut self, view: u64) {
        if std::mem::take(&mut self.catch_up_due) {
            self.request_catch_up(view);
        }
    }

    pub(crate) fn request_catch_up(&mut self, view: u64) {
        // The members in force, or the latest ones while this replica is not among them yet
        // (it is joining and catching up).
        let committee = match self.committees.current() {
            current if current.contains(self.id) => current,
            _ => self.committees.latest(),
        };
        let peers: Vec<ReplicaId> = committee.ids().filter(|id| *id != self.id).collect();
        if peers.is_empty() {
            return;
        }
        let peer = match self.catch_up_hint.take() {
            Some(hint) if peers.contains(&hint) => hint,
            _ => peers[self.catch_up_peer % peers.len()],
        };
        let message = Message::CatchUp {
            next_seq: self.last_executed + 1,
            view,
            stable_seq: self.stable.seq,
        };
        self.send(peer, message);
    }

    /// Whether to answer a request for help (catch-up, a stale view change) from `peer` now:
    /// when it asks for more than last time (it made progress), or else at most once per
    /// quarter retransmission interval. That bounds the work and traffic any peer, or a replay
    /// of old messages, can cause, without slowing a real catch-up.
    pub(crate) fn may_help(&mut self, peer: ReplicaId, progress: u64) -> bool {
        let min_gap = self.config.retransmit_interval / 4;
        if let Some((last, last_progress)) = self.served.get(&peer) {
            if progress <= *last_progress && self.now < *last + min_gap {
                return false;
            }
        }
        self.served.insert(peer, (self.now, progress));
        true
    }

    /// A peer is behind (it lacks `next_seq` and has checkpoint `stable_seq`): send the stable
    /// checkpoint proof and ask the host to serve stored batches. `view_proof` says the
    /// protocol has a proof of its view the peer lacks. Returns whether to help at all (the
    /// protocol then sends its view proof), which also rate-limits the peer.
    pub(crate) fn on_catch_up(
        &mut self,
        from: ReplicaId,
        next_seq: u64,
        stable_seq: u64,
        view_proof: bool,
    ) -> bool {
        if from == self.id || !self.committees.signers().contains(from) {
            return false;
        }
        self.note_seq(from, next_seq.saturating_sub(1));
        let useful = view_proof || self.stable.seq > stable_seq || self.persisted >= next_seq;
        // Bound the disk reads one peer can cause.
        if !useful || !self.may_help(from, next_seq) {
            return false;
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
        true
    }

    /// Certified batches from a peer: buffer those we lack and execute what is now in order.
    /// Returns whether the log advanced (the protocol then asks for more while behind).
    pub(crate) fn on_batches(&mut self, batches: Vec<CommittedBatch>) -> bool {
        let before = self.last_executed;
        let limit = self.last_executed + self.config.log_window;
        for batch in batches {
            let seq = batch.seq();
            if seq > self.last_executed && seq <= limit {
                self.committed.entry(seq).or_insert(batch);
            }
        }
        self.execute_ready();
        self.last_executed > before
    }

    /// Checkpoint vote sets held.
    pub(crate) fn checkpoint_sets(&self) -> usize {
        self.checkpoint_votes.len()
    }

    /// Batches executed but not yet known durable.
    pub(crate) fn unpersisted(&self) -> usize {
        self.awaiting_persist.len()
    }
}
