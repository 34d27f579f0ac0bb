//! The linear mode: two-chain HotStuff as in **Jolteon** (Gelashvili, Kokoris-Kogias,
//! Sonnino, Spiegelman and Xiang, "Jolteon and Ditto: Network-Adaptive Efficient Consensus
//! with Asynchronous Fallback", FC 2022), as a pure state machine beside PBFT.
//!
//! Why Jolteon: it keeps HotStuff's linear, chained steady state (one proposal broadcast, votes
//! to one collector, the certificate carried in the next proposal) but commits on a two-chain
//! (a certified block whose certified child is in the next round), one round trip sooner than
//! chained HotStuff's three-chain. The price is a timeout certificate in view changes, which
//! the issue asks for anyway. The voting and commit rules are in [`voting`], the pacemaker's
//! bookkeeping in [`pacemaker`].
//!
//! Steady state, per round `r`: the leader of `r` proposes a block extending the highest
//! certificate; replicas that may vote (see [`voting::safe_to_vote`]) make their vote durable
//! and send it to the leader of `r + 1` only; that leader aggregates a quorum certificate and
//! proposes in `r + 1`. A certificate for a block whose parent has the round just before it
//! commits the parent and every ancestor.
//!
//! Differences from the paper, each for a reason:
//! - Timeouts go to the next leader only, which aggregates the timeout certificate (as the
//!   issue's O(n) view synchronisation asks); a replica whose timer fires again broadcasts, and
//!   the (F+1)-weight join rule of Bracha then synchronises rounds. See [`pacemaker`].
//! - Receipts need the same commit certificate as PBFT: a quorum signing
//!   [`CommitVote`]`{view, seq, digest}`. A vote for a block whose parent is in the round just
//!   before is also a vote to commit that parent (the two-chain rule), so the voter signs a
//!   commit vote for the parent's batch and for every ancestor batch the proposal lists, all
//!   with `view` = the parent's round. A quorum of them is a quorum that voted in the next
//!   round for children of the one block certified in that round: exactly the locking
//!   condition Jolteon's commit rests on. Commit votes from different rounds never add up. The
//!   proposal lists them as headers that chain by id from the certified parent, so a voter
//!   that never saw those blocks can still check them. The collector aggregates the commit
//!   votes with the block votes and hands the certificates out in its proposal; a replica
//!   executes a batch when it holds both the batch and its certificate, like a PBFT batch.
//! - Empty blocks (which only drive commits) take no sequence number, so the ordered log,
//!   checkpoints and state transfer are the shared [`crate::ledger::Ledger`]'s, as in PBFT.
//! - Leaders are not round-robin: each block names the next round's leader among the
//!   replicas whose votes (or timeouts) it carries, and round-robin is only the fallback
//!   after a timeout certificate, so a crashed replica stops leading within a round or two
//!   (Carousel's reputation idea; see [`crate::leader`]). Votes go to the leader the block
//!   names.
//! - A leader proposes only when it has work (requests, uncommitted batches, certificates to
//!   hand out), so an idle cluster is quiet and never changes leaders.
//! - Weight and membership epochs (see [`crate::epoch`]) each run a chain of their own, as in
//!   DiemBFT's reconfiguration: every block, vote and timeout names its epoch and counts with
//!   that epoch's committee, and rounds start again from 1 over a genesis certificate that
//!   needs no votes. An epoch's blocks carry only batches of its own sequence numbers: once
//!   the chain reaches the last one, leaders propose empty blocks until it is certified, and a
//!   replica enters the next epoch when its log has executed it. Jolteon's lock therefore
//!   never spans two committees: each epoch is plain Jolteon with one committee, and it
//!   starts from a log prefix the one before fixed by its commit certificates.

mod chain;
pub mod pacemaker;
pub mod voting;

use std::collections::BTreeMap;

use ordinal_crypto::{Certificate, Committee, Digest, KeyPair, ReplicaId, Signed, Verified};

use crate::batch::{Batch, CommittedBatch};
use crate::config::ProtocolConfig;
use crate::epoch::Weights;
use crate::error::Invalid;
use crate::io::{Action, Footprint, Input, Protocol, Status, Time};
use crate::leader::{epoch_round, fallback_leader, leader_of, opening_leader};
use crate::ledger::Ledger;
use crate::messages::{
    epoch_genesis_qc, Block, BlockHeader, BlockVote, CommitVote, Message, QuorumCert, TimeoutCert,
    TimeoutVote, VerifiedMessage,
};
use crate::quorum::{Inserted, VoteSet};
use crate::request::Request;
use crate::safety::{SafetyState, SafetyUpdate};
use chain::Chain;
use pacemaker::TimeoutCollector;

/// How many blocks a replica holds at most: room for the window's batches and for the empty
/// or abandoned blocks of a run of timeouts between them.
pub fn chain_capacity(config: &ProtocolConfig) -> usize {
    4 * config.log_window as usize + 16
}

/// Blocks sent in answer to one fetch.
const BLOCKS_PER_FETCH: usize = 16;

/// One linear-mode replica.
pub struct Replica {
    /// Identity, outbox, request pool, and the ordered log with its checkpoints.
    ledger: Ledger,

    /// The epoch whose chain this replica follows: the one in force at its next sequence
    /// number, or a later one it already voted in before a restart (its log then catches up
    /// before it acts).
    epoch: u64,
    /// When this replica last asked a peer for the log because a message came from an epoch
    /// it has not reached.
    epoch_catch_up_at: Option<Time>,

    // Pacemaker.
    round: u64,
    /// When the round timer last (re)started: on entering a round, or on timing it out.
    timer_start: Time,
    /// When the replica started waiting for progress (requests or batches in flight).
    waiting_since: Option<Time>,
    /// Consecutive rounds entered by a timeout certificate (the backoff exponent).
    failed_rounds: u32,
    /// Whether this round's timeout went to everyone (its next leader did not answer in time).
    timeout_broadcast: bool,
    timeouts_total: u64,
    timeouts: TimeoutCollector,
    /// The timeout certificate for the round before the current one, if that is how it began.
    last_tc: Option<TimeoutCert>,

    // Safety (durable).
    voted_round: u64,
    high_qc: QuorumCert,

    chain: Chain,
    /// Commit certificates for batches this replica does not hold (yet): the block may still
    /// arrive, or state transfer brings the batch.
    early_certificates: BTreeMap<u64, Certificate<CommitVote>>,

    // Collector (the next round's leader).
    votes: BTreeMap<u64, VoteSet<BlockVote>>,
    /// Commit votes by (seq, view): one statement per voting round, never mixed across rounds.
    commit_votes: BTreeMap<(u64, u64), VoteSet<CommitVote>>,
    fresh_certificates: BTreeMap<u64, Certificate<CommitVote>>,
    proposed_round: u64,

    // Retransmission and catch-up.
    last_vote: Option<(ReplicaId, u64, Message)>,
    last_timeout: Option<(u64, Message)>,
    last_proposal: Option<(u64, Message)>,
    last_fetch: Option<(Digest, Time)>,
    next_tick: Time,
    /// When this replica first had the proposal of each recent round: votes for it are timed
    /// from then. Pruned with the votes; rounds beyond the window are not recorded.
    proposals_seen: BTreeMap<u64, Time>,
}

impl Replica {
    /// A fresh replica with an empty log, in round 1.
    pub fn new(id: ReplicaId, key: KeyPair, committee: Committee, config: ProtocolConfig, now: Time) -> Self {
        Self::restore(
            id,
            key,
            committee,
            config,
            now,
            SafetyState::default(),
            Vec::new(),
        )
    }

    /// A replica restarted from its durable safety state (last voted round, highest
    /// certificate, stable checkpoint) and its committed log, contiguous from 1.
    pub fn restore(
        id: ReplicaId,
        key: KeyPair,
        committee: Committee,
        config: ProtocolConfig,
        now: Time,
        safety: SafetyState,
        log: impl IntoIterator<Item = CommittedBatch>,
    ) -> Self {
        let mut ledger = Ledger::new(id, key, committee, config, now, safety.stable.clone());
        ledger.replay(log);
        // A replica that voted in a later epoch than its stored log reaches never acts in the
        // earlier one again (it may have voted there in rounds it no longer records): it
        // waits in the later epoch until state transfer brings its log there.
        let held_qc_epoch = safety.high_qc.as_ref().map_or(0, |qc| qc.statement.epoch);
        let epoch = ledger.weight_epoch().max(safety.voted_epoch).max(held_qc_epoch);
        let start = Self::start_of(&ledger, epoch);
        let high_qc = safety
            .high_qc
            .clone()
            .filter(|qc| qc.statement.epoch == epoch)
            .unwrap_or_else(|| epoch_genesis_qc(epoch, start));
        let voted_round = if safety.voted_epoch == epoch {
            safety.voted_round
        } else {
            0
        };
        let capacity = chain_capacity(&ledger.config);
        let chain = Chain::new(capacity, &epoch_genesis_qc(epoch, start).statement);
        let round = voted_round.max(high_qc.statement.round + 1).max(1);
        let mut replica = Replica {
            next_tick: now + ledger.config.retransmit_interval,
            ledger,
            epoch,
            epoch_catch_up_at: None,
            round,
            timer_start: now,
            waiting_since: None,
            failed_rounds: 0,
            timeout_broadcast: false,
            timeouts_total: 0,
            timeouts: TimeoutCollector::default(),
            last_tc: None,
            voted_round,
            high_qc,
            chain,
            early_certificates: BTreeMap::new(),
            votes: BTreeMap::new(),
            commit_votes: BTreeMap::new(),
            fresh_certificates: BTreeMap::new(),
            proposed_round: voted_round,
            last_vote: None,
            last_timeout: None,
            last_proposal: None,
            last_fetch: None,
            proposals_seen: BTreeMap::new(),
        };
        replica.ledger.announce_checkpoints();
        replica
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.ledger.id
    }

    /// The running hash of the executed log.
    pub fn log_digest(&self) -> Digest {
        self.ledger.log_digest
    }

    /// The first sequence number of `epoch`, or `u64::MAX` while the log has not scheduled it
    /// (a restarted replica whose votes ran ahead of its stored log).
    fn start_of(ledger: &Ledger, epoch: u64) -> u64 {
        ledger
            .committees
            .epoch_of_number(epoch)
            .map_or(u64::MAX, |(_, start)| start)
    }

    /// The committee of `epoch`, counting its votes, timeouts and certificates; `None` while
    /// the log has not scheduled it (nothing is counted then).
    fn committee_of(committees: &crate::epoch::Committees, epoch: u64) -> Option<&Committee> {
        committees.by_number(epoch)
    }

    /// The committee of this replica's epoch.
    fn committee(&self) -> Option<&Committee> {
        Self::committee_of(&self.ledger.committees, self.epoch)
    }

    /// Whether this replica's log has reached its epoch's chain: executed everything before
    /// the epoch's first sequence number.
    fn in_epoch(&self) -> bool {
        self.ledger.last_executed.saturating_add(1) >= Self::start_of(&self.ledger, self.epoch)
    }

    /// Whether this replica votes, times out and leads in its epoch: a member, with its log
    /// at the epoch's chain. A replica joining (or gone) follows the log without a voice.
    fn has_voice(&self) -> bool {
        self.in_epoch() && self.committee().is_some_and(|c| c.contains(self.ledger.id))
    }

    /// Enters the epoch in force at the next sequence number once the log has executed the
    /// previous epoch's last batch; returns whether it did. A restarted replica whose epoch
    /// was not scheduled yet when it started also gets that epoch's genesis here.
    fn follow_epoch(&mut self) -> bool {
        let log_epoch = self.ledger.weight_epoch();
        if log_epoch > self.epoch {
            self.enter_epoch(log_epoch);
            return true;
        }
        // The placeholder genesis of an epoch not scheduled at restart (its start unknown):
        // checked by its numbers, not its id, since this runs on every input.
        let genesis_seq = self.high_qc.statement.seq;
        if self.high_qc.statement.round == 0 && genesis_seq == BlockVote::epoch_genesis_seq(u64::MAX) {
            let genesis = epoch_genesis_qc(self.epoch, Self::start_of(&self.ledger, self.epoch));
            if self.high_qc != genesis {
                self.chain = Chain::new(chain_capacity(&self.ledger.config), &genesis.statement);
                self.high_qc = genesis;
            }
        }
        false
    }

    /// Starts `epoch`'s chain: its genesis certificate, round 1, nothing voted. Everything
    /// held for the epoch before is dropped; its votes and timeouts can never count here, and
    /// its batches are all executed. Commit certificates this replica aggregated and has not
    /// handed out yet stay: they go with its next proposal, whose certificates replicas still
    /// in the epoch before read too.
    fn enter_epoch(&mut self, epoch: u64) {
        let start = Self::start_of(&self.ledger, epoch);
        self.epoch = epoch;
        self.high_qc = epoch_genesis_qc(epoch, start);
        self.chain = Chain::new(chain_capacity(&self.ledger.config), &self.high_qc.statement);
        self.round = 1;
        self.voted_round = 0;
        self.proposed_round = 0;
        self.timer_start = self.ledger.now;
        self.failed_rounds = 0;
        self.timeout_broadcast = false;
        self.timeouts = TimeoutCollector::default();
        self.last_tc = None;
        self.votes.clear();
        self.commit_votes.clear();
        self.proposals_seen.clear();
        self.last_vote = None;
        self.last_timeout = None;
        self.last_proposal = None;
        self.last_fetch = None;
    }

    /// Accepts a message of `epoch` from `from` only in this replica's epoch, once its log is
    /// there. An older epoch's message is stale: its sender is behind, and gets (rate-limited)
    /// this replica's certificate, whose newer epoch makes it ask for the log. A newer
    /// epoch's message means this replica is behind, so it asks the sender for the log (at most
    /// once per quarter retransmission interval).
    fn check_epoch(&mut self, epoch: u64, from: ReplicaId) -> Result<(), Invalid> {
        if epoch < self.epoch {
            if from != self.ledger.id && self.in_epoch() && self.ledger.may_help(from, 0) {
                let sync = self.sync_message();
                self.ledger.send(from, sync);
            }
            return Err(Invalid::Stale);
        }
        if epoch == self.epoch && self.in_epoch() {
            return Ok(());
        }
        let now = self.ledger.now;
        let gap = self.ledger.config.retransmit_interval / 4;
        if from != self.ledger.id && self.epoch_catch_up_at.is_none_or(|at| now >= at + gap) {
            self.epoch_catch_up_at = Some(now);
            self.ledger.catch_up_hint = Some(from);
            self.ledger.request_catch_up(self.round);
        }
        Err(Invalid::FutureEpoch { epoch })
    }

    /// Who this replica expects to lead `round`: the leader its highest certificate's block
    /// named when that certificate is for the round just before, else (the round began with a
    /// timeout certificate) the fallback leader that certificate gives. `None` while that
    /// block is not here.
    fn leader(&self, round: u64) -> Option<ReplicaId> {
        let committee = self.committee()?;
        let justify = &self.high_qc.statement;
        if justify.round + 1 != round {
            return Some(match &self.last_tc {
                Some(tc) if tc.round + 1 == round => fallback_leader(
                    epoch_round(self.epoch, round),
                    tc.timeouts.iter().map(|t| t.signer),
                    committee,
                ),
                _ => leader_of(epoch_round(self.epoch, round), committee),
            });
        }
        if justify.round == 0 {
            let previous = self.ledger.committees.committee_before(self.epoch);
            return Some(opening_leader(
                epoch_round(self.epoch, round),
                committee,
                previous,
            ));
        }
        self.chain
            .get(&justify.block)
            .map(|stored| stored.block.next_leader)
    }

    /// Whether this replica leads its current round.
    fn leads_current_round(&self) -> bool {
        self.leader(self.round) == Some(self.ledger.id)
    }

    /// The round timeout: the base doubled for each consecutive failed round, capped.
    fn timeout(&self) -> Time {
        let config = &self.ledger.config;
        // A dead replica can fail two rounds in a row (the one whose votes it would collect,
        // then the round-robin round after the timeout, if it is its turn): doubling starts
        // after the first failure.
        let factor = 1u32 << self.failed_rounds.saturating_sub(1).min(16);
        config
            .view_timeout
            .checked_mul(factor)
            .unwrap_or(config.view_timeout_max)
            .min(config.view_timeout_max)
    }

    /// Whether this replica waits for the cluster to make progress: requests waiting, or
    /// batches proposed or decided but not yet certified. An idle cluster runs no timers.
    fn expects_progress(&self) -> bool {
        if self.ledger.pool.len() > 0 {
            return true;
        }
        self.chain
            .carries_uncommitted_batch(&self.high_qc.statement.block)
    }

    /// When the round timer fires: the full timeout while waiting in the round; after timing
    /// it out, half of it for the next leader's timeout certificate before telling everyone.
    fn round_deadline(&self) -> Option<Time> {
        let since = self.waiting_since?;
        let start = since.max(self.timer_start);
        if self.timed_out_here() {
            let wait = if self.timeout_broadcast {
                self.timeout()
            } else {
                self.timeout() / 2
            };
            return Some(start + wait);
        }
        let full = start + self.timeout();
        Some(
            self.suspicion_deadline(start)
                .map_or(full, |early| early.min(full)),
        )
    }

    /// Who this replica waits for in its round: the collector its vote went to; else, while it
    /// lacks the round's proposal, the round's leader. `None` when it collects the round's
    /// votes itself (it waits for many then, and a quorum certificate or the full timeout
    /// settles it) or leads the round.
    fn awaited_peer(&self) -> Option<ReplicaId> {
        let awaited = match &self.last_vote {
            Some((collector, round, _)) if *round == self.round => *collector,
            _ if self.proposals_seen.contains_key(&self.round) => return None,
            _ => self.leader(self.round)?,
        };
        (awaited != self.ledger.id).then_some(awaited)
    }

    /// Gives up on the round early when the replica it waits for (the collector its vote went
    /// to, or else the round's leader) is suspected by the failure detector: a crashed
    /// collector then costs a quarter of the round timeout instead of all of it. The quarter
    /// keeps stalls that pause every replica at once (storage flushes, an overloaded machine)
    /// from ending rounds that would have finished. A round ended early costs one timeout
    /// certificate; nothing here touches safety.
    fn suspicion_deadline(&self, start: Time) -> Option<Time> {
        let awaited = self.awaited_peer()?;
        let silent = self.ledger.monitor.suspected_at(awaited)? + Time::from_micros(1);
        Some(silent.max(start + self.timeout() / 4))
    }

    fn timed_out_here(&self) -> bool {
        self.last_timeout
            .as_ref()
            .is_some_and(|(round, _)| *round == self.round)
    }

    /// Enters `round`; `certified` when a quorum certificate for the round before led here
    /// (progress), not a timeout.
    fn enter_round(&mut self, round: u64, certified: bool) {
        if round <= self.round {
            return;
        }
        self.round = round;
        self.timer_start = self.ledger.now;
        self.timeout_broadcast = false;
        self.failed_rounds = if certified {
            0
        } else {
            self.failed_rounds.saturating_add(1)
        };
        if self.last_tc.as_ref().is_some_and(|tc| tc.round + 1 != round) {
            self.last_tc = None;
        }
        let keep = round.saturating_sub(1);
        let kept = self.votes.split_off(&keep);
        let pruned = std::mem::replace(&mut self.votes, kept);
        self.count_missed_votes(pruned.values());
        self.proposals_seen = self.proposals_seen.split_off(&keep);
        self.timeouts.prune_below(keep);
        let oldest_view = round.saturating_sub(3);
        self.commit_votes.retain(|(_, view), _| *view >= oldest_view);
    }

    /// As a collector: a round whose votes formed a certificate, leaving without a peer's
    /// vote, counts as a vote that peer missed.
    fn count_missed_votes<'a>(&mut self, rounds: impl Iterator<Item = &'a VoteSet<BlockVote>>) {
        let Some(committee) = Self::committee_of(&self.ledger.committees, self.epoch) else {
            return;
        };
        for votes in rounds {
            let certified = votes
                .statements()
                .iter()
                .any(|statement| votes.certificate(statement, committee).is_some());
            if !certified {
                continue;
            }
            for peer in committee.ids() {
                if votes.vote_of(peer).is_none() {
                    self.ledger.monitor.missed_vote(peer);
                }
            }
        }
    }

    /// Learns a quorum certificate from any source: a higher one becomes the high certificate
    /// (durable before anything that reports it), moves the round, and may commit.
    fn on_qc(&mut self, qc: QuorumCert) {
        let round = qc.statement.round;
        if round > self.high_qc.statement.round {
            self.high_qc = qc.clone();
            self.ledger.persist(SafetyUpdate::HighQc(qc.clone()));
        }
        self.enter_round(round + 1, true);
        self.try_commit(&qc);
    }

    fn on_tc(&mut self, tc: TimeoutCert) {
        self.enter_round(tc.round + 1, false);
        if tc.round + 1 == self.round {
            self.last_tc = Some(tc);
        }
    }

    /// Jolteon's two-chain rule: the certificate's block and its parent in consecutive rounds
    /// commit the parent and every ancestor. Their batches reach the ledger with their commit
    /// certificates; here the chain only drops what is settled.
    fn try_commit(&mut self, qc: &QuorumCert) {
        let Some(child) = self.chain.get(&qc.statement.block) else {
            return;
        };
        let parent_id = child.block.parent();
        let child_round = child.block.round;
        let Some(parent) = self.chain.get(&parent_id) else {
            return;
        };
        let parent_round = parent.block.round;
        if voting::commits_parent(parent_round, child_round) {
            self.chain.mark_committed(parent_id, parent_round);
        }
    }

    /// A commit certificate: the batch it covers goes to the ledger, from the chain if the
    /// block is here, or later (the block arrives, or state transfer brings the batch).
    fn on_commit_certificate(&mut self, certificate: Certificate<CommitVote>) {
        let seq = certificate.statement.seq;
        if seq <= self.ledger.last_executed || seq > self.ledger.last_executed + self.ledger.config.log_window
        {
            return;
        }
        match self.chain.batch_with(seq, &certificate.statement.digest).cloned() {
            Some(batch) => {
                self.early_certificates.remove(&seq);
                self.ledger.commit(CommittedBatch { batch, certificate });
            }
            None => {
                self.early_certificates.insert(seq, certificate);
            }
        }
    }

    /// A block arrived: a certificate may have been waiting for its batch.
    fn use_early_certificate(&mut self, seq: u64) {
        if let Some(certificate) = self.early_certificates.get(&seq).cloned() {
            self.on_commit_certificate(certificate);
        }
    }

    /// As a collector: commit votes aggregate into certificates, handed out with the next
    /// proposal.
    fn on_commit_vote(&mut self, vote: Verified<CommitVote>) {
        let statement = *vote.body();
        let seq = statement.seq;
        if seq <= self.ledger.last_executed || seq > self.ledger.last_executed + self.ledger.config.log_window
        {
            return;
        }
        if self.fresh_certificates.contains_key(&seq) {
            return;
        }
        // Only votes of the rounds a collector still aggregates (the view is the voted block's
        // parent round, checked against the vote's round at verification).
        if statement.view.saturating_add(3) < self.round
            || statement.view > self.round.saturating_add(self.ledger.config.log_window)
        {
            return;
        }
        // Counted with the weights at the batch's sequence number: an epoch's blocks carry only
        // its own numbers, so these are the weights of the epoch the votes were cast in.
        let Some(committee) = self.ledger.committees.for_seq(seq) else {
            return;
        };
        let votes = self.commit_votes.entry((seq, statement.view)).or_default();
        votes.insert(vote);
        if let Some(certificate) = votes.certificate(&statement, committee) {
            self.commit_votes.retain(|(voted_seq, _), _| *voted_seq != seq);
            self.fresh_certificates.insert(seq, certificate.clone());
            self.on_commit_certificate(certificate);
        }
    }

    /// Jolteon, on receiving a proposal: learn its certificates, then vote if the rules allow,
    /// the vote durable first and sent to the next round's leader only.
    fn on_propose(
        &mut self,
        block: Verified<Block>,
        batch: Batch,
        certified: Vec<Certificate<CommitVote>>,
        ancestry: Vec<BlockHeader>,
    ) -> Result<(), Invalid> {
        let leader = block.signer();
        let mut certified = certified;
        if block.body().epoch != self.epoch || !self.in_epoch() {
            // Commit certificates count with the weights of their own sequence numbers: the
            // next epoch's leader hands out the last certificates of the epoch before, which
            // take a replica that missed them into the new epoch, where this block belongs.
            let executed_before = self.ledger.last_executed;
            for certificate in std::mem::take(&mut certified) {
                self.on_commit_certificate(certificate);
            }
            self.follow_ledger(executed_before);
            self.follow_epoch();
            self.check_epoch(block.body().epoch, leader)?;
        }
        let body = block.body().clone();
        let signature = block.signature();
        let message = Message::Propose {
            block: block.into_signed(),
            batch: batch.clone(),
            certified: certified.clone(),
            ancestry: ancestry.clone(),
        };
        self.ledger.note_seq(leader, body.justify.statement.seq);
        if body.round >= self.round.saturating_sub(1)
            && body.round <= self.round + self.ledger.config.log_window
        {
            self.proposals_seen.entry(body.round).or_insert(self.ledger.now);
        }
        let parent_header = ancestry.first().cloned();
        let stored = self.chain.insert(
            body.clone(),
            batch,
            leader,
            signature,
            parent_header,
            &self.high_qc.statement.block,
        );
        self.use_early_certificate(body.seq);
        for certificate in certified {
            self.on_commit_certificate(certificate);
        }
        self.on_qc(body.justify.clone());
        if let Some(tc) = &body.timeout {
            self.on_tc(tc.clone());
        }
        if let Err(error) = stored {
            // Blocks may be relayed (served by fetch): a conflict is the signer's doing.
            if matches!(error, Invalid::Equivocation { .. }) {
                self.ledger.monitor.refused(leader);
            }
            return Err(error);
        }
        self.fetch_missing(leader);
        if body.round < self.round {
            return Err(Invalid::Stale);
        }
        if self
            .last_proposal
            .as_ref()
            .is_none_or(|(round, _)| *round < body.round)
        {
            self.last_proposal = Some((body.round, message));
        }
        if !voting::safe_to_vote(&body, self.voted_round) || !self.has_voice() {
            return Ok(());
        }
        if body.seq > self.ledger.window_high() {
            return Err(Invalid::OutsideWindow {
                seq: body.seq,
                low: self.ledger.stable.seq,
                high: self.ledger.window_high(),
            });
        }
        // A batch belongs to the epoch in force at its sequence number (inside the window the
        // executed log fixes it): the chain of an epoch ends at its last number.
        if body.seq != body.justify.statement.seq
            && self.ledger.committees.for_seq(body.seq).map(Committee::epoch) != Some(self.epoch)
        {
            return Err(Invalid::BadBlock("a batch past the end of the block's epoch"));
        }
        self.vote(&body, &ancestry);
        Ok(())
    }

    /// Votes for `block`. When its certificate is for the round just before, certifying it
    /// commits the parent and its ancestors: the vote carries a commit vote for each batch in
    /// `ancestry` (already checked to chain by id from the parent).
    fn vote(&mut self, block: &Block, ancestry: &[BlockHeader]) {
        self.voted_round = block.round;
        self.ledger.persist(SafetyUpdate::Voted {
            epoch: self.epoch,
            round: block.round,
        });
        self.send_vote(block, ancestry);
    }

    /// Signs and sends the vote for `block`; the caller made the round durable as voted.
    fn send_vote(&mut self, block: &Block, ancestry: &[BlockHeader]) {
        let vote = self.ledger.sign(BlockVote {
            epoch: self.epoch,
            round: block.round,
            block: block.id(),
            seq: block.seq,
        });
        // The commit votes all name the parent's round: a quorum of them is a quorum that
        // voted in the next round for children of the one block certified there, which is
        // what commits it (and its ancestors) under the two-chain rule. Votes cast in different
        // rounds never add up.
        let mut commits: Vec<Signed<CommitVote>> = Vec::new();
        let parent_round = block.justify.statement.round;
        if voting::commits_parent(parent_round, block.round) {
            let high = self.ledger.last_executed + self.ledger.config.log_window;
            for header in ancestry {
                // The parent's header comes first even when its batch is certified already.
                let certified = self.ledger.committed.contains_key(&header.seq)
                    || self.early_certificates.contains_key(&header.seq);
                if header.carries_batch()
                    && !certified
                    && header.seq > self.ledger.last_executed
                    && header.seq <= high
                {
                    commits.push(self.ledger.sign(CommitVote {
                        view: parent_round,
                        seq: header.seq,
                        digest: header.batch_digest,
                    }));
                }
            }
        }
        // The block named its round's successor (checked on receipt): it collects the votes
        // and, with their certificate, leads the next round.
        let collector = block.next_leader;
        if collector == self.ledger.id {
            for commit in commits {
                self.on_commit_vote(Verified::new_unchecked_own(commit));
            }
            let _ = self.on_vote(Verified::new_unchecked_own(vote));
        } else {
            let message = Message::Vote { vote, commits };
            self.ledger.send(collector, message.clone());
            self.last_vote = Some((collector, block.round, message));
        }
    }

    /// As the next round's leader: votes aggregate into the round's certificate.
    fn on_vote(&mut self, vote: Verified<BlockVote>) -> Result<(), Invalid> {
        let statement = *vote.body();
        let round = statement.round;
        self.check_epoch(statement.epoch, vote.signer())?;
        // Votes name the block, and the block names its collector. A vote for a block not here
        // yet is kept (bounded by the round window below): its proposal is on the way.
        if let Some(stored) = self.chain.get(&statement.block) {
            let expected = stored.block.next_leader;
            if expected != self.ledger.id {
                return Err(Invalid::WrongLeader {
                    view: round + 1,
                    expected,
                    got: self.ledger.id,
                });
            }
        }
        if round + 1 < self.round {
            return Err(Invalid::Stale);
        }
        if round > self.round + self.ledger.config.log_window {
            return Err(Invalid::WrongView {
                current: self.round,
                got: round,
            });
        }
        // A vote after its round's certificate formed still shows the voter alive and how
        // slow it is: recorded while this collector holds the round's votes, never counted
        // towards anything.
        let late = round <= self.high_qc.statement.round;
        if late && !self.votes.contains_key(&round) {
            return Err(Invalid::Stale);
        }
        let from = vote.signer();
        let votes = self.votes.entry(round).or_default();
        match votes.insert(vote) {
            Inserted::Conflict => {
                return Err(Invalid::DuplicateVote {
                    from,
                    view: round,
                    seq: statement.seq,
                })
            }
            Inserted::New => {
                let latency = self
                    .proposals_seen
                    .get(&round)
                    .map(|at| self.ledger.now.saturating_sub(*at));
                self.ledger.monitor.vote(from, latency);
                if late {
                    self.ledger.monitor.late_vote(from);
                }
            }
            Inserted::Repeat => {}
        }
        if late {
            return Err(Invalid::Stale);
        }
        let committee = Self::committee_of(&self.ledger.committees, self.epoch);
        if let Some(qc) = committee.and_then(|committee| votes.certificate(&statement, committee)) {
            self.on_qc(qc);
        }
        Ok(())
    }

    /// Certificates that moved a peer on: only those of this replica's epoch count (an older
    /// epoch's are settled, a newer one's wait for the log to get there).
    fn on_sync(
        &mut self,
        from: ReplicaId,
        high_qc: QuorumCert,
        last_tc: Option<TimeoutCert>,
    ) -> Result<(), Invalid> {
        self.check_epoch(high_qc.statement.epoch, from)?;
        self.on_qc(high_qc);
        if let Some(tc) = last_tc.filter(|tc| tc.epoch == self.epoch) {
            self.on_tc(tc);
        }
        Ok(())
    }

    /// What justifies this replica's round, for a peer behind.
    fn sync_message(&self) -> Message {
        Message::Sync {
            high_qc: self.high_qc.clone(),
            last_tc: self.last_tc.clone(),
        }
    }

    fn on_timeout_message(
        &mut self,
        from: ReplicaId,
        timeout: Verified<TimeoutVote>,
        high_qc: QuorumCert,
        last_tc: Option<TimeoutCert>,
    ) -> Result<(), Invalid> {
        self.on_sync(from, high_qc, last_tc)?;
        let round = timeout.body().round;
        if round < self.round {
            // The sender is behind. Show it what moved us on; and if we never timed its round
            // out, do it now for its sake: we will never vote there again anyway, so a
            // timeout certificate for its round costs us nothing and unblocks it.
            if self.ledger.may_help(from, round) {
                let sync = self.sync_message();
                self.ledger.send(from, sync);
                if self.high_qc.statement.round < round {
                    // Never vote in that round after a restart either.
                    if self.voted_round < round {
                        self.voted_round = round;
                        self.ledger.persist(SafetyUpdate::Voted {
                            epoch: self.epoch,
                            round,
                        });
                    }
                    let helping = self.ledger.sign(TimeoutVote {
                        epoch: self.epoch,
                        round,
                        high_qc_round: self.high_qc.statement.round,
                    });
                    let message = Message::Timeout {
                        timeout: helping,
                        high_qc: self.high_qc.clone(),
                        last_tc: None,
                    };
                    self.ledger.send(from, message);
                }
            }
            if round + 1 < self.round {
                return Err(Invalid::Stale);
            }
        }
        if round > self.round + self.ledger.config.log_window {
            return Err(Invalid::WrongView {
                current: self.round,
                got: round,
            });
        }
        self.timeouts.insert(timeout);
        // Bracha's amplification: more than F weight gave up on a round at or beyond ours, so
        // a correct replica did; give up there too.
        let join = Self::committee_of(&self.ledger.committees, self.epoch)
            .and_then(|committee| self.timeouts.join_round(committee));
        if let Some(join) = join.filter(|_| self.has_voice()) {
            if join >= self.round && join > self.voted_round {
                if join > self.round {
                    self.round = join;
                    self.timer_start = self.ledger.now;
                }
                self.time_out(false);
            }
        }
        self.check_timeout_certificate(round);
        Ok(())
    }

    fn check_timeout_certificate(&mut self, round: u64) {
        let committee = Self::committee_of(&self.ledger.committees, self.epoch);
        if let Some(tc) = committee.and_then(|committee| self.timeouts.certificate(round, committee)) {
            self.on_tc(tc);
        }
    }

    /// The round timer fired (or F+1 gave up on this round): never vote in it again, durable
    /// first, and tell the next leader; everyone, if its certificate does not come in time.
    fn time_out(&mut self, blame: bool) {
        let round = self.round;
        self.timeouts_total += 1;
        // The replica this one waited for failed it: the collector its vote went to, or the
        // round's leader. Not when others' timeouts carried it along (Bracha's rule): it
        // waited for nobody then.
        if blame {
            if let Some(awaited) = self.awaited_peer() {
                self.ledger.monitor.leader_timed_out(awaited);
            }
        }
        self.timer_start = self.ledger.now;
        if self.voted_round < round {
            self.voted_round = round;
            self.ledger.persist(SafetyUpdate::Voted {
                epoch: self.epoch,
                round,
            });
        }
        let timeout = self.ledger.sign(TimeoutVote {
            epoch: self.epoch,
            round,
            high_qc_round: self.high_qc.statement.round,
        });
        self.timeouts.insert(Verified::new_unchecked_own(timeout.clone()));
        let message = Message::Timeout {
            timeout,
            high_qc: self.high_qc.clone(),
            last_tc: self.last_tc.clone(),
        };
        self.send_timeout(message.clone());
        self.last_timeout = Some((round, message));
        self.check_timeout_certificate(round);
    }

    fn send_timeout(&mut self, message: Message) {
        // A timeout certificate makes the round-robin leader the next round's, so it collects
        // the timeouts; but not if it has been silent for a whole view timeout (a crash, most
        // likely): then everyone collects at once, instead of half a timeout later.
        let Some(committee) = self.committee() else {
            return;
        };
        let next = leader_of(epoch_round(self.epoch, self.round + 1), committee);
        if !self.timeout_broadcast && self.suspects(next) {
            self.timeout_broadcast = true;
        }
        if self.timeout_broadcast {
            self.ledger.broadcast(message);
        } else {
            self.ledger.send(next, message);
        }
    }

    /// Whether the failure detector suspects `peer`: silent for longer than its usual gap
    /// between messages allows. Every live replica is heard from regularly: votes, proposals,
    /// checkpoints, and the catch-up ping each replica sends to one peer in turn on every
    /// retransmission tick. A fixed limit (the view timeout, before) suspected live replicas
    /// of larger idle clusters, whose pings come round less often.
    fn suspects(&self, peer: ReplicaId) -> bool {
        self.ledger.monitor.suspects(peer, self.ledger.now)
    }

    /// As the leader of the current round, holding its justification: propose when there is
    /// work, extending the highest certificate.
    fn try_propose(&mut self) {
        let round = self.round;
        if !self.has_voice()
            || !self.leads_current_round()
            || self.proposed_round >= round
            || self.voted_round >= round
        {
            return;
        }
        let timeout = if self.high_qc.statement.round + 1 == round {
            None
        } else {
            match &self.last_tc {
                // Voters require the certificate to be at least as high as every timeout in
                // the TC reported; without it, wait for it (timeouts and sync carry it).
                Some(tc)
                    if tc.round + 1 == round && self.high_qc.statement.round >= tc.max_high_qc_round() =>
                {
                    Some(tc.clone())
                }
                _ => return,
            }
        };
        let auth = self.ledger.config.request_auth;
        let (carried, chain_busy) = self.chain.uncommitted_requests(
            &self.high_qc.statement.block,
            self.high_qc.statement.seq,
            self.ledger.last_executed,
            auth,
        );
        // The epoch's chain ends at its last sequence number: past it, only empty blocks, until
        // the last batches are certified and the next epoch's chain takes over.
        let next_seq = self.high_qc.statement.seq + 1;
        let epoch_full = self.ledger.committees.for_seq(next_seq).map(Committee::epoch) != Some(self.epoch);
        let window_full = epoch_full || next_seq > self.ledger.window_high();
        // A certificate can form from votes before the block itself arrives. Without every
        // block back to the executed log, this leader cannot tell which requests they carry:
        // it proposes no requests (an empty block if other work is due) until they arrive.
        let has_requests = !window_full
            && carried
                .as_ref()
                .is_some_and(|carried| self.ledger.pool.has_unproposed(carried));
        let carried_len = carried.as_ref().map_or(0, |carried| carried.len());
        let ripe = has_requests
            && (self.ledger.pool.len() >= carried_len + self.ledger.config.max_batch_requests
                || self
                    .ledger
                    .pool
                    .oldest_arrival()
                    .is_some_and(|t| t + self.ledger.config.batch_delay <= self.ledger.now));
        // Batches committed but not yet certified need a certified child in a consecutive
        // round: keep proposing (empty blocks if nothing else) until they have one.
        let uncertified = !self
            .uncertified_ancestry(&self.high_qc.statement.block)
            .is_empty();
        let work = ripe || chain_busy || uncertified || !self.fresh_certificates.is_empty();
        if !work {
            return;
        }
        let parent_seq = self.high_qc.statement.seq;
        let mut batch = if let (true, Some(carried)) = (ripe, &carried) {
            self.ledger.pool.oldest_batch(&self.ledger.config, carried)
        } else {
            Batch::default()
        };
        if window_full {
            // The window is full: an empty block still drives commits and checkpoints.
            batch = Batch::default();
        }
        let mut block = Block {
            epoch: self.epoch,
            round,
            seq: parent_seq + u64::from(!batch.requests().is_empty()),
            batch_digest: batch.digest(),
            justify: self.high_qc.clone(),
            timeout,
            next_leader: self.ledger.id,
            recent_leaders: Vec::new(),
        };
        let parent = self
            .chain
            .get(&self.high_qc.statement.block)
            .map(|stored| stored.block.header());
        let Some(committee) = Self::committee_of(&self.ledger.committees, self.epoch) else {
            return;
        };
        let Some(recent) = block.expected_recent_leaders(self.ledger.id, parent.as_ref(), committee) else {
            // Unreachable: leading a round that extends the one before needs the parent here.
            return;
        };
        block.recent_leaders = recent;
        block.next_leader = block.successor_for(self.ledger.id, committee);
        let signed = self.ledger.sign(block.clone());
        let signature = signed.signature;
        // Voters refuse more certificates than the window; the rest wait for the next proposal.
        let keep = self
            .fresh_certificates
            .keys()
            .nth(self.ledger.config.log_window as usize)
            .copied();
        let later = keep.map(|seq| self.fresh_certificates.split_off(&seq));
        let certified: Vec<Certificate<CommitVote>> =
            std::mem::replace(&mut self.fresh_certificates, later.unwrap_or_default())
                .into_values()
                .collect();
        let ancestry = if voting::commits_parent(self.high_qc.statement.round, round) {
            let mut ancestry = self.uncertified_ancestry(&self.high_qc.statement.block);
            // The parent's header always leads: it names this block's proposer.
            if ancestry.is_empty() {
                if let Some(parent) = self.chain.get(&self.high_qc.statement.block) {
                    ancestry.push(parent.block.header());
                }
            }
            ancestry
        } else {
            Vec::new()
        };
        self.proposed_round = round;
        self.proposals_seen.entry(round).or_insert(self.ledger.now);
        let _ = self.chain.insert(
            block.clone(),
            batch.clone(),
            self.ledger.id,
            signature,
            ancestry.first().cloned(),
            &block.parent(),
        );
        // The round is durable as voted before the proposal leaves: a leader restarted after
        // sending it never proposes a second block in the same round.
        let votes_for_it = voting::safe_to_vote(&block, self.voted_round);
        self.voted_round = round;
        self.ledger.persist(SafetyUpdate::Voted {
            epoch: self.epoch,
            round,
        });
        let message = Message::Propose {
            block: signed,
            batch,
            certified,
            ancestry: ancestry.clone(),
        };
        self.ledger.broadcast(message.clone());
        self.last_proposal = Some((round, message));
        if votes_for_it {
            self.send_vote(&block, &ancestry);
        }
    }

    /// Headers from `id` back to the oldest block whose batch this replica holds no
    /// certificate for: the batches a certificate for `id`'s child commits and still needs
    /// certificates. Empty when every batch on the way is certified; stops at a block it lacks.
    fn uncertified_ancestry(&self, id: &Digest) -> Vec<BlockHeader> {
        let mut headers = Vec::new();
        let mut needed = 0;
        let mut cursor = *id;
        while let Some(stored) = self.chain.get(&cursor) {
            if stored.block.seq <= self.ledger.last_executed
                || headers.len() >= chain_capacity(&self.ledger.config)
            {
                break;
            }
            let header = stored.block.header();
            let needs_certificate =
                header.carries_batch() && !self.ledger.committed.contains_key(&header.seq);
            headers.push(header);
            if needs_certificate {
                needed = headers.len();
            }
            cursor = stored.block.parent();
        }
        headers.truncate(needed);
        headers
    }

    /// Asks `peer` for the first block this replica lacks between its highest certificate and
    /// the last executed batch: without it, it can neither execute nor prove ancestry. At most
    /// one request per retransmission interval.
    fn fetch_missing(&mut self, peer: ReplicaId) {
        let Some((id, _)) = self.chain.first_missing(
            &self.high_qc.statement.block,
            self.high_qc.statement.seq,
            self.ledger.last_executed,
        ) else {
            return;
        };
        let now = self.ledger.now;
        if self
            .last_fetch
            .is_some_and(|(last, at)| last == id && now < at + self.ledger.config.retransmit_interval)
        {
            return;
        }
        self.last_fetch = Some((id, now));
        self.ledger.send(peer, Message::FetchBlocks { id });
    }

    /// Serves a peer the block `id` and its ancestors (a bounded chunk, rate-limited per peer).
    fn on_fetch_blocks(&mut self, from: ReplicaId, id: Digest) {
        if self.chain.get(&id).is_none() || !self.ledger.may_help(from, 0) {
            return;
        }
        let mut cursor = id;
        for _ in 0..BLOCKS_PER_FETCH {
            let Some(stored) = self.chain.get(&cursor) else {
                break;
            };
            cursor = stored.block.parent();
            // The parent's header lets the receiver check who proposed this block.
            let ancestry = stored.parent_header.iter().cloned().collect();
            let message = Message::Propose {
                block: Signed {
                    body: stored.block.clone(),
                    signer: stored.proposer,
                    signature: stored.signature,
                },
                batch: stored.batch.clone(),
                certified: Vec::new(),
                ancestry,
            };
            self.ledger.send(from, message);
        }
    }

    fn on_timer(&mut self) {
        let now = self.ledger.now;
        if now >= self.next_tick {
            self.next_tick = now + self.ledger.config.retransmit_interval;
            self.tick();
        }
        if self.round_deadline().is_some_and(|deadline| now >= deadline) {
            self.ledger.pool.purge(&self.ledger.clients);
            // Without a voice in the epoch (joining, gone, or its log not there yet) a replica
            // has no round to give up on: it follows the log.
            if self.expects_progress() && self.has_voice() {
                if self
                    .last_timeout
                    .as_ref()
                    .is_some_and(|(round, _)| *round == self.round)
                {
                    // Timed out here already: the next leader failed too. Say it to everyone.
                    self.timeout_broadcast = true;
                    self.timer_start = now;
                    if let Some((_, message)) = self.last_timeout.clone() {
                        self.ledger.broadcast(message);
                    }
                } else {
                    self.time_out(true);
                }
            } else {
                self.waiting_since = None;
            }
        }
    }

    /// Periodic retransmission, so that lost messages delay the protocol instead of stalling it.
    fn tick(&mut self) {
        if let Some((collector, round, message)) = self.last_vote.clone() {
            if round == self.round {
                self.ledger.send(collector, message);
            }
        }
        if let Some((round, message)) = self.last_proposal.clone() {
            let own = matches!(&message, Message::Propose { block, .. } if block.signer == self.ledger.id);
            if round == self.round && own {
                self.ledger.broadcast(message);
            }
        }
        if let Some((round, message)) = self.last_timeout.clone() {
            if round == self.round {
                self.send_timeout(message);
            }
        }
        self.ledger.resend_checkpoint();
        self.ledger.ping_peer(self.round);
    }

    fn on_catch_up(&mut self, from: ReplicaId, next_seq: u64, round: u64, stable_seq: u64) {
        // A peer one round behind is normal in a pipeline; two or more, it missed certificates.
        let view_proof = round.saturating_add(1) < self.round;
        if self.ledger.on_catch_up(from, next_seq, stable_seq, view_proof) && view_proof {
            let sync = self.sync_message();
            self.ledger.send(from, sync);
        }
    }

    fn on_batches(&mut self, from: ReplicaId, batches: Vec<CommittedBatch>) {
        if self.ledger.on_batches(batches) && self.ledger.log_behind() {
            self.ledger.catch_up_hint = Some(from);
            self.ledger.request_catch_up(self.round);
        }
    }

    fn on_request(&mut self, request: Request, forwarded: bool) -> Result<(), Invalid> {
        self.ledger.admit(request, forwarded).map(|_| ())
    }

    /// Drops what the ledger has moved past: batches executed (maybe by state transfer) need
    /// no votes, and no certificates for this replica any more.
    fn follow_ledger(&mut self, executed_before: u64) {
        // Entries at or below the executed log are never added, so pruning is only due when
        // the log moved (not on every input).
        let executed = self.ledger.last_executed;
        if executed > executed_before {
            let keep = executed + 1;
            self.early_certificates = self.early_certificates.split_off(&keep);
            self.commit_votes = self.commit_votes.split_off(&(keep, 0));
            // Certificates this replica aggregated are still owed to everyone else, who learn
            // them from its next proposal: the collector executes its batch as soon as the
            // certificate forms, and dropping it here left the others to state transfer (on
            // the retransmission tick) for every batch. Past the stable checkpoint, state
            // transfer serves them anyway; that also bounds what waits here.
            self.fresh_certificates = self.fresh_certificates.split_off(&(self.ledger.stable.seq + 1));
            self.chain.prune(executed);
        }
        self.ledger.flush_catch_up(self.round);
        if self.expects_progress() {
            self.waiting_since.get_or_insert(self.ledger.now);
        } else {
            self.waiting_since = None;
        }
    }
}

impl Protocol for Replica {
    fn handle(&mut self, now: Time, input: Input) -> Result<(), Invalid> {
        self.ledger.now = self.ledger.now.max(now);
        let executed_before = self.ledger.last_executed;
        let mut sender = None;
        let result = match input {
            // The linear mode announces no settled statements, so a host has no late votes to
            // hand in; one handed in anyway is checked like any message.
            Input::LateVote { from, vote } => {
                let message = self.ledger.verify_late_vote(from, vote)?;
                return self.handle(now, Input::Message { from, message });
            }
            Input::Request(request) => self.on_request(request, false),
            Input::ProposeWeights { weights } => {
                let request = self.ledger.weight_change_request(weights);
                self.on_request(request, false)
            }
            Input::Timeout => {
                self.on_timer();
                Ok(())
            }
            Input::Persisted { seq } => {
                self.ledger.on_persisted(seq);
                Ok(())
            }
            Input::Refused { from, count } => {
                self.ledger.monitor.refused_many(from, count);
                Ok(())
            }
            Input::Message { from, message } => {
                self.ledger.monitor.heard(from, now);
                sender = Some(from);
                match message {
                    VerifiedMessage::Request(request) => self.on_request(request, true),
                    VerifiedMessage::Propose {
                        block,
                        batch,
                        certified,
                        ancestry,
                    } => self.on_propose(block, batch, certified, ancestry),
                    VerifiedMessage::Vote { vote, commits } => {
                        // Commit votes name rounds of the vote's epoch.
                        if vote.body().epoch == self.epoch {
                            for commit in commits {
                                self.on_commit_vote(commit);
                            }
                        }
                        self.on_vote(vote)
                    }
                    VerifiedMessage::Timeout {
                        timeout,
                        high_qc,
                        last_tc,
                    } => self.on_timeout_message(from, timeout, high_qc, last_tc),
                    VerifiedMessage::FetchBlocks { id } => {
                        self.on_fetch_blocks(from, id);
                        Ok(())
                    }
                    VerifiedMessage::Sync { high_qc, last_tc } => self.on_sync(from, high_qc, last_tc),
                    VerifiedMessage::Checkpoint(vote) => self.ledger.on_checkpoint(vote, self.round),
                    VerifiedMessage::CatchUp {
                        next_seq,
                        view,
                        stable_seq,
                    } => {
                        self.on_catch_up(from, next_seq, view, stable_seq);
                        Ok(())
                    }
                    VerifiedMessage::Batches(batches) => {
                        self.on_batches(from, batches);
                        Ok(())
                    }
                    VerifiedMessage::Stable(stable) => {
                        self.ledger.make_stable(stable);
                        Ok(())
                    }
                    VerifiedMessage::PrePrepare { .. }
                    | VerifiedMessage::Prepare(_)
                    | VerifiedMessage::Commit(_)
                    | VerifiedMessage::ViewChange(_)
                    | VerifiedMessage::NewView(_) => Err(Invalid::WrongProtocol),
                }
            }
        };
        self.follow_ledger(executed_before);
        if self.ledger.take_report_due() {
            let report = self.ledger.latency_report_request();
            // A refusal (a full pool) only skips this report; the next checkpoint sends one.
            let _ = self.on_request(report, false);
        }
        self.try_propose();
        // After the proposal above: a leader that just certified its epoch's last batch hands
        // the certificate out in its epoch's chain before it leaves for the next one.
        if self.follow_epoch() {
            self.follow_ledger(self.ledger.last_executed);
            self.try_propose();
        }
        if let (Some(from), Err(e)) = (sender, &result) {
            if e.blames_sender() {
                self.ledger.monitor.refused(from);
            }
        }
        result
    }

    fn poll_timeout(&self) -> Option<Time> {
        // Only deadlines still ahead: one that passed without effect (a leader that may not
        // propose yet) waits for the input that changes that, never spins.
        let now = self.ledger.now;
        let mut next = self.next_tick;
        if let Some(deadline) = self.round_deadline().filter(|d| *d > now) {
            next = next.min(deadline);
        }
        if self.leads_current_round() && self.proposed_round < self.round {
            if let Some(flush) = self
                .ledger
                .pool
                .oldest_arrival()
                .map(|arrival| arrival + self.ledger.config.batch_delay)
                .filter(|d| *d > now)
            {
                next = next.min(flush);
            }
        }
        Some(next)
    }

    fn drain_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.ledger.actions)
    }

    fn status(&self) -> Status {
        Status {
            weight_epoch: self.ledger.weight_epoch(),
            view: self.round,
            leader: self
                .leader(self.round)
                .or_else(|| {
                    self.committee()
                        .map(|committee| leader_of(epoch_round(self.epoch, self.round), committee))
                })
                .unwrap_or(self.ledger.id),
            changing_view: self.voted_round >= self.round
                && self.proposed_round < self.round
                && self.last_timeout.as_ref().is_some_and(|(r, _)| *r == self.round),
            committed_seq: self.ledger.last_executed,
            stable_seq: self.ledger.stable.seq,
            view_changes: self.timeouts_total,
            pending_requests: self.ledger.pool.len(),
        }
    }

    fn peers(&self) -> Vec<crate::reliability::PeerReport> {
        self.ledger.monitor.reports(self.ledger.now)
    }

    fn committees(&self) -> &crate::epoch::Committees {
        &self.ledger.committees
    }

    fn footprint(&self) -> Footprint {
        Footprint {
            slots: 0,
            blocks: self.chain.len(),
            prepared: self.early_certificates.len(),
            committed_unexecuted: self.ledger.committed.len(),
            checkpoints: self.ledger.checkpoint_sets(),
            pending_requests: self.ledger.pool.len(),
            pending_bytes: self.ledger.pool.bytes(),
            queued: 0,
            view_changes: self.timeouts.len(),
            early_messages: 0,
            unpersisted: self.ledger.unpersisted(),
            client_entries: self.ledger.clients.entries(),
        }
    }
}
