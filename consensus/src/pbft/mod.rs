//! PBFT (Castro and Liskov, OSDI 1999 / TOCS 2002) as a pure state machine.
//!
//! Section references in comments (`PBFT 4.2`) are to the OSDI paper. Differences from the
//! paper, each for a reason:
//! - The primary also sends PREPARE, so a prepared certificate is simply a quorum certificate
//!   of PREPARE votes over (view, seq, digest), the same certificate type the linear mode uses.
//! - NEW-VIEW carries only the quorum of VIEW-CHANGE messages; every replica recomputes the
//!   re-proposed batches from them ([`view_change::NewViewPlan`]) instead of checking a list.
//! - Requests are de-duplicated when a batch executes, not when it is proposed, so a Byzantine
//!   primary that proposes a request twice cannot get it ordered twice.
//! - State transfer moves certified batches: the ordered log is the replicated state, and each
//!   batch carries its commit certificate, so any single peer can serve it.
//! - A replica holds the PRE-PREPARE, PREPARE and COMMIT messages of the view it is changing
//!   to (or the next one), bounded per sender, and handles them once it installs that view:
//!   replicas install a view at different moments, and the paper's rule of accepting only the
//!   current view's messages made the later ones wait for re-sends.

mod checkpoint;
mod normal;
pub mod view_change;

use std::collections::BTreeMap;

use ordinal_crypto::{Committee, Digest, KeyPair, ReplicaId, Signed};

use crate::batch::{Batch, CommittedBatch};
use crate::config::ProtocolConfig;
use crate::error::Invalid;
use crate::io::{Action, Footprint, Input, Protocol, Status, Time};
use crate::leader::leader_of;
use crate::ledger::Ledger;
use crate::messages::{
    CommitVote, Message, NewView, PrepareVote, PreparedProof, Proposal, VerifiedMessage, ViewChange,
};
use crate::quorum::VoteSet;
use crate::reliability::PeerReport;
use crate::safety::SafetyState;

/// The proposal held in a slot.
#[derive(Clone, Debug)]
struct SlotProposal {
    digest: Digest,
    batch: Batch,
    /// The primary's signed PRE-PREPARE, kept for retransmission. `None` for batches that a
    /// NEW-VIEW re-proposed (the NEW-VIEW itself is their proof).
    signed: Option<Signed<Proposal>>,
}

/// Agreement state for one sequence number in the current view.
#[derive(Clone, Debug, Default)]
struct Slot {
    proposal: Option<SlotProposal>,
    prepares: VoteSet<PrepareVote>,
    commits: VoteSet<CommitVote>,
    sent_prepare: bool,
    sent_commit: bool,
    /// The prepared certificate formed here (whether or not this replica votes).
    prepared: bool,
    committed: bool,
    /// Peers credited with a PREPARE or COMMIT for the settled statement that the host handed
    /// in unchecked (`crate::late`): each counted once, none in a certificate.
    late_prepares: Vec<ReplicaId>,
    late_commits: Vec<ReplicaId>,
    /// When this replica had the proposal: each peer's COMMIT is timed from here.
    proposed_at: Option<Time>,
    /// When this replica's messages for the slot are sent again.
    resend: Backoff,
}

impl Slot {
    /// Whether `from`, one of the peers `credited` with a vote for this slot's digest without a
    /// signature check, now votes for another `digest`: equivocation, as a conflicting vote
    /// after a checked one is.
    fn contradicts(&self, credited: &[ReplicaId], from: ReplicaId, digest: &Digest) -> bool {
        credited.contains(&from) && self.proposal.as_ref().is_some_and(|p| p.digest != *digest)
    }
}

/// When to send a message again that has not had its effect yet: first one interval after it
/// was first looked at, then after intervals doubling up to 16 of them.
///
/// Links are reliable streams, so a resend helps only a peer that reconnected, restarted or
/// dropped a full queue. Re-sending everything every interval did not only waste bandwidth:
/// under load each re-sent PRE-PREPARE (its whole batch) and VIEW-CHANGE (every prepared batch
/// since the stable checkpoint) was decoded and verified again by every peer, so an
/// overloaded or view-changing cluster spent its CPU re-checking what it already had, and
/// after its primary died under load it never finished a view change.
#[derive(Clone, Copy, Debug, Default)]
struct Backoff {
    next_at: Option<Time>,
    sent: u32,
}

impl Backoff {
    /// Whether to re-send now; the first call only starts the clock.
    fn due(&mut self, now: Time, interval: Time) -> bool {
        match self.next_at {
            None => {
                self.next_at = Some(now + interval);
                false
            }
            Some(at) if now >= at => {
                self.sent = self.sent.saturating_add(1);
                self.next_at = Some(now + interval * (1u32 << self.sent.min(4)));
                true
            }
            Some(_) => false,
        }
    }
}

/// A PRE-PREPARE, PREPARE or COMMIT of a view this replica has not installed yet, held until
/// it has. Replicas install a new view at different moments (the new primary first, the
/// others once its NEW-VIEW is checked, a lagging one after executing the entry that moved the
/// view), and the first to install it vote at once: a replica that dropped those votes waited
/// for re-sends (one interval, then backing off), which stalled every planned view change for
/// about 400 ms on a real cluster while the view itself was installed in 14-49 ms.
#[derive(Debug)]
struct EarlyMessage {
    /// (view, phase, seq, signer): a re-sent copy is held once.
    id: (u64, Phase, u64, ReplicaId),
    from: ReplicaId,
    message: VerifiedMessage,
}

/// The phase of a held message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    PrePrepare,
    Prepare,
    Commit,
}

impl EarlyMessage {
    fn view(&self) -> u64 {
        self.id.0
    }
}

/// How many early messages one peer may have held: a PRE-PREPARE, PREPARE and COMMIT for
/// every batch in flight, and a few for slack (of them at most `max_inflight_batches`
/// PRE-PREPAREs, the only large ones). Only the next view's messages are held.
pub fn early_limit(config: &ProtocolConfig) -> usize {
    3 * config.max_inflight_batches as usize + 4
}

#[derive(Clone, Copy, Debug)]
struct ViewChanging {
    /// When a quorum of VIEW-CHANGE messages for the target view was first held; the
    /// view-change timer runs only from then (PBFT 4.5.2), so a lone replica that moved ahead
    /// waits for the others instead of racing through views on its own.
    quorum_since: Option<Time>,
    new_view_sent: bool,
}

/// One PBFT replica.
pub struct Replica {
    /// Identity, outbox, request pool, and the ordered log with its checkpoints.
    ledger: Ledger,

    view: u64,
    changing: Option<ViewChanging>,
    failed_views: u32,
    view_changes_total: u64,

    slots: BTreeMap<u64, Slot>,
    prepared: BTreeMap<u64, PreparedProof>,
    prepare_votes: BTreeMap<u64, (u64, Digest)>,
    next_seq: u64,
    /// The stable checkpoint the records above were last pruned at.
    pruned_at: u64,
    /// The rotation the current primary was taken from: when the schedule changes it (a
    /// weight or membership epoch, `Committees::leaders`), the view moves on.
    leaders: Committee,

    batch_deadline: Option<Time>,

    view_changes: view_change::ViewChangeStore,
    own_view_changes: BTreeMap<u64, Signed<ViewChange>>,
    /// Re-sending this replica's VIEW-CHANGE for the view it is changing to.
    view_change_resend: (u64, Backoff),
    last_new_view: Option<Signed<NewView>>,
    views_seen: BTreeMap<ReplicaId, u64>,
    /// Phase messages of the view being installed (or the next one), bounded per sender.
    early: Vec<EarlyMessage>,

    next_tick: Time,
}

impl Replica {
    /// A fresh replica with an empty log, in view 0.
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

    /// A replica restarted from what its host persisted: the safety state and the committed
    /// log (contiguous from sequence number 1, as stored; read lazily, so memory does not grow
    /// with the log). Replays the log to rebuild the
    /// de-duplication table and the running log hash; anything above it comes by state
    /// transfer.
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
        let mut replica = Replica {
            next_tick: now + ledger.config.retransmit_interval,
            pruned_at: ledger.stable.seq,
            leaders: ledger.committees.leaders().clone(),
            ledger,
            view: safety.view,
            changing: None,
            failed_views: 0,
            view_changes_total: 0,
            slots: BTreeMap::new(),
            prepared: safety.prepared.clone(),
            prepare_votes: safety.prepares.clone(),
            next_seq: 1,
            batch_deadline: None,
            view_changes: Default::default(),
            own_view_changes: BTreeMap::new(),
            view_change_resend: (0, Backoff::default()),
            last_new_view: None,
            views_seen: BTreeMap::new(),
            early: Vec::new(),
        };
        // A primary must never reuse a sequence number it proposed before the restart.
        let proposed_high = replica
            .prepare_votes
            .iter()
            .filter(|(_, (view, _))| *view == replica.view)
            .map(|(seq, _)| *seq)
            .max()
            .unwrap_or(0);
        replica.next_seq = proposed_high
            .max(replica.ledger.last_executed)
            .max(replica.ledger.stable.seq)
            + 1;
        if safety.changing {
            replica.view_changes_total += 1;
            replica.changing = Some(ViewChanging {
                quorum_since: None,
                new_view_sent: false,
            });
            replica.broadcast_view_change();
        }
        replica.ledger.announce_checkpoints();
        replica
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.ledger.id
    }

    /// The configured committee it started from.
    pub fn committee(&self) -> &Committee {
        self.ledger.committees.base()
    }

    /// The protocol configuration.
    pub fn config(&self) -> &ProtocolConfig {
        &self.ledger.config
    }

    /// The running hash of the executed log.
    pub fn log_digest(&self) -> Digest {
        self.ledger.log_digest
    }

    /// Round-robin over [`crate::epoch::Committees::leaders`]: every replica that executed
    /// the same log agrees. A membership change can move the primary of the current view
    /// (replicas that executed the change and replicas that have not disagree until both
    /// have), which costs at most a view change; safety never depends on who the primary is.
    fn primary(&self) -> ReplicaId {
        leader_of(self.view, self.ledger.committees.leaders())
    }

    fn is_primary(&self) -> bool {
        self.primary() == self.ledger.id
    }

    /// The current timeout: the base doubled for each consecutive failed view, capped.
    fn timeout(&self) -> Time {
        let factor = 1u32 << self.failed_views.min(16);
        self.ledger
            .config
            .view_timeout
            .checked_mul(factor)
            .unwrap_or(self.ledger.config.view_timeout_max)
            .min(self.ledger.config.view_timeout_max)
    }

    /// Accepts only messages of the current view in normal operation; remembers that the
    /// sender is ahead when it is.
    fn check_view(&mut self, from: ReplicaId, view: u64) -> Result<(), Invalid> {
        if view > self.view {
            let seen = self.views_seen.entry(from).or_insert(0);
            *seen = (*seen).max(view);
        }
        if view != self.view || self.changing.is_some() {
            return Err(if view < self.view {
                Invalid::Stale
            } else {
                Invalid::WrongView {
                    current: self.view,
                    got: view,
                }
            });
        }
        Ok(())
    }

    fn on_timeout(&mut self) {
        let now = self.ledger.now;
        if now >= self.next_tick {
            self.next_tick = now + self.ledger.config.retransmit_interval;
            self.tick();
        }
        match self.changing {
            Some(ViewChanging {
                quorum_since: Some(since),
                ..
            }) if now >= since + self.timeout() && self.ledger.is_member() => {
                // PBFT 4.5.2: NEW-VIEW did not come in time; try the next view.
                self.start_view_change(self.view.saturating_add(1));
            }
            // A replica outside the membership (joining, or gone) suspects no primary: its
            // views follow the members' (the F+1 rule and catch-up's view proofs).
            None if self.request_deadline().is_some_and(|deadline| now >= deadline)
                && self.ledger.is_member() =>
            {
                self.ledger.pool.purge(&self.ledger.clients);
                if self.request_deadline().is_some_and(|deadline| now >= deadline) {
                    // PBFT 4.4: a request waited too long; suspect the primary.
                    self.start_view_change(self.view.saturating_add(1));
                }
            }
            _ => {}
        }
    }

    /// When the oldest waiting request (or the last progress, if later) times out.
    fn request_deadline(&self) -> Option<Time> {
        let oldest = self.ledger.pool.oldest_arrival()?;
        Some(oldest.max(self.ledger.last_progress) + self.timeout())
    }

    /// Catches up with what the shared ledger did during one input: execution frees pipeline
    /// room and proves the primary alive; a new stable checkpoint prunes the protocol records
    /// below it (PBFT 4.3).
    fn follow_ledger(&mut self, executed_before: u64) {
        let executed = self.ledger.last_executed;
        if executed > executed_before {
            self.next_seq = self.next_seq.max(executed + 1);
            if self.changing.is_none() {
                self.failed_views = 0;
            }
        }
        let stable = self.ledger.stable.seq;
        if stable > self.pruned_at {
            self.pruned_at = stable;
            let keep = stable + 1;
            let kept = self.slots.split_off(&keep);
            let pruned = std::mem::replace(&mut self.slots, kept);
            self.count_missed_votes(pruned.values());
            self.prepared = self.prepared.split_off(&keep);
            self.prepare_votes = self.prepare_votes.split_off(&keep);
            self.next_seq = self.next_seq.max(keep);
        }
        self.ledger.flush_catch_up(self.view);
        self.follow_leaders();
    }

    /// The log changed who leads (`Committees::leaders`): if that moves the primary of this
    /// view, go to the next view. Every replica that executed the same entry does so at the
    /// same point of the log, so the new rotation takes over through a NEW-VIEW (whose
    /// primary queues what waits) instead of two primaries proposing in one view.
    fn follow_leaders(&mut self) {
        if self.ledger.committees.leaders().epoch() == self.leaders.epoch() {
            return;
        }
        let before = leader_of(self.view, &self.leaders);
        self.leaders = self.ledger.committees.leaders().clone();
        if before == self.primary() || !self.ledger.is_member() {
            return;
        }
        if self.changing.is_none() {
            self.start_planned_view_change(self.view.saturating_add(1));
        } else if let Some(own) = self.own_view_changes.get(&self.view) {
            // This replica joined the view change before its log reached the entry: the new
            // primary's NEW-VIEW may have come and been refused as from the wrong leader.
            // Asking again now gets it from any peer in the view at once, rather than at the
            // next retransmission (200 ms lost at every weight change in the simulator).
            // The new primary alone: it answers with its NEW-VIEW at once, and the periodic
            // re-send still reaches everyone if it does not.
            let primary = self.primary();
            if primary != self.ledger.id {
                let message = Message::ViewChange(own.clone());
                self.ledger.send(primary, message);
            }
            // This replica may lead the view under the new rotation.
            self.check_view_change_quorum();
        }
    }

    /// A committed slot leaving the window without a peer's PREPARE or COMMIT: that peer
    /// missed the vote.
    fn count_missed_votes<'a>(&mut self, slots: impl Iterator<Item = &'a Slot>) {
        let members: Vec<ReplicaId> = self.ledger.committees.current().ids().collect();
        for slot in slots.filter(|slot| slot.committed) {
            for &peer in &members {
                if slot.prepares.vote_of(peer).is_none()
                    && slot.commits.vote_of(peer).is_none()
                    && !slot.late_prepares.contains(&peer)
                    && !slot.late_commits.contains(&peer)
                {
                    self.ledger.monitor.missed_vote(peer);
                }
            }
        }
    }

    /// Periodic retransmission of whatever is unfinished, so that lost messages delay the
    /// protocol instead of stalling it.
    fn tick(&mut self) {
        let now = self.ledger.now;
        let interval = self.ledger.config.retransmit_interval;
        if self.changing.is_some() {
            if self.view_change_resend.0 != self.view {
                self.view_change_resend = (self.view, Backoff::default());
            }
            if self.view_change_resend.1.due(now, interval) {
                if let Some(own) = self.own_view_changes.get(&self.view) {
                    let message = Message::ViewChange(own.clone());
                    self.ledger.broadcast(message);
                }
            }
        } else {
            let mut resend = Vec::new();
            for slot in self.slots.values_mut().filter(|s| !s.committed) {
                if !slot.resend.due(now, interval) {
                    continue;
                }
                if let Some(SlotProposal {
                    signed: Some(signed),
                    batch,
                    ..
                }) = &slot.proposal
                {
                    if signed.signer == self.ledger.id {
                        resend.push(Message::PrePrepare {
                            proposal: signed.clone(),
                            batch: batch.clone(),
                        });
                    }
                }
                if let Some(vote) = slot.prepares.vote_of(self.ledger.id) {
                    resend.push(Message::Prepare(vote.signed().clone()));
                }
                if let Some(vote) = slot.commits.vote_of(self.ledger.id) {
                    resend.push(Message::Commit(vote.signed().clone()));
                }
            }
            for message in resend {
                self.ledger.broadcast(message);
            }
        }
        self.ledger.resend_checkpoint();
        self.ping_peer();
    }
    /// Hands a verified message from a peer to its handler.
    fn dispatch(&mut self, from: ReplicaId, message: VerifiedMessage) -> Result<(), Invalid> {
        match message {
            VerifiedMessage::Request(request) => self.on_request(request, true),
            VerifiedMessage::PrePrepare { proposal, batch } => self.on_pre_prepare(proposal, batch),
            VerifiedMessage::Prepare(vote) => self.on_prepare(vote),
            VerifiedMessage::Commit(vote) => self.on_commit(vote),
            VerifiedMessage::Checkpoint(vote) => self.on_checkpoint(vote),
            VerifiedMessage::ViewChange(vc) => self.on_view_change(vc),
            VerifiedMessage::NewView(nv) => self.on_new_view(nv),
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
                self.on_stable_proof(stable);
                Ok(())
            }
            VerifiedMessage::Propose { .. }
            | VerifiedMessage::Vote { .. }
            | VerifiedMessage::Timeout { .. }
            | VerifiedMessage::Sync { .. }
            | VerifiedMessage::FetchBlocks { .. } => Err(Invalid::WrongProtocol),
        }
    }

    /// Holds a phase message of a view this replica is about to install (the one it is
    /// changing to, or the next), instead of refusing it; `Some` gives back what is not held.
    /// Held messages are bounded per sender. A PRE-PREPARE is held from any signer: one that
    /// lags may not know the new rotation yet, and the primary is checked when it is handled.
    fn hold_early(&mut self, from: ReplicaId, message: VerifiedMessage) -> Option<VerifiedMessage> {
        let id = match &message {
            VerifiedMessage::PrePrepare { proposal, .. } => {
                let body = proposal.body();
                (body.view, Phase::PrePrepare, body.seq, proposal.signer())
            }
            VerifiedMessage::Prepare(vote) => {
                (vote.body().view, Phase::Prepare, vote.body().seq, vote.signer())
            }
            VerifiedMessage::Commit(vote) => {
                (vote.body().view, Phase::Commit, vote.body().seq, vote.signer())
            }
            _ => return Some(message),
        };
        let (view, phase, seq, signer) = id;
        let installing = view == self.view && self.changing.is_some();
        let next = view == self.view.saturating_add(1);
        if !(installing || next) {
            return Some(message);
        }
        if self.early.iter().any(|held| held.id == id) {
            return None;
        }
        let from_sender = || self.early.iter().filter(|held| held.from == from);
        let proposals = from_sender()
            .filter(|held| held.id.1 == Phase::PrePrepare)
            .count();
        if from_sender().count() >= early_limit(&self.ledger.config)
            || (phase == Phase::PrePrepare && proposals >= self.ledger.config.max_inflight_batches as usize)
        {
            return Some(message);
        }
        // What refusing it would have recorded: how far the signer is, and that it is ahead.
        self.ledger.note_seq(signer, seq);
        let _ = self.check_view(signer, view);
        self.early.push(EarlyMessage { id, from, message });
        None
    }

    /// Handles the held messages of the view just installed and drops older ones.
    fn replay_early(&mut self) {
        if self.changing.is_some() || self.early.is_empty() {
            return;
        }
        let view = self.view;
        let (now, later): (Vec<EarlyMessage>, Vec<EarlyMessage>) = std::mem::take(&mut self.early)
            .into_iter()
            .filter(|e| e.view() >= view)
            .partition(|e| e.view() == view);
        self.early = later;
        for early in now {
            // A PRE-PREPARE from another primary is not blamed: the rotation may have changed
            // while these were replayed (a replayed COMMIT can execute an entry that moves it),
            // and the view with it.
            if let Err(e) = self.dispatch(early.from, early.message) {
                if e.blames_sender() && !matches!(e, Invalid::WrongLeader { .. }) {
                    self.ledger.monitor.refused(early.from);
                }
            }
        }
    }
}

impl Protocol for Replica {
    fn handle(&mut self, now: Time, input: Input) -> Result<(), Invalid> {
        self.ledger.now = self.ledger.now.max(now);
        let executed_before = self.ledger.last_executed;
        let on_timer = matches!(input, Input::Timeout);
        let sender = match &input {
            Input::Message { from, .. } => {
                self.ledger.monitor.heard(*from, now);
                Some(*from)
            }
            _ => None,
        };
        let result = match input {
            Input::LateVote { from, vote } => {
                if let Some(answer) = self.answer_late_vote(from, &vote) {
                    return answer;
                }
                let message = self.ledger.verify_late_vote(from, vote)?;
                return self.handle(now, Input::Message { from, message });
            }
            Input::Refused { from, count } => {
                self.ledger.monitor.refused_many(from, count);
                Ok(())
            }
            Input::Request(request) => self.on_request(request, false),
            Input::ProposeWeights { weights } => {
                let request = self.ledger.weight_change_request(weights);
                self.on_request(request, false)
            }
            Input::Timeout => {
                self.on_timeout();
                Ok(())
            }
            Input::Persisted { seq } => {
                self.ledger.on_persisted(seq);
                Ok(())
            }
            Input::Message { from, message } => match self.hold_early(from, message) {
                None => Ok(()),
                Some(message) => self.dispatch(from, message),
            },
        };
        self.follow_ledger(executed_before);
        if self.ledger.take_report_due() {
            let report = self.ledger.latency_report_request();
            // A refusal (a full pool) only skips this report; the next checkpoint sends one.
            let _ = self.on_request(report, false);
        }
        self.try_propose(on_timer);
        if let (Some(from), Err(e)) = (sender, &result) {
            if e.blames_sender() {
                self.ledger.monitor.refused(from);
            }
        }
        result
    }

    fn poll_timeout(&self) -> Option<Time> {
        let mut next = self.next_tick;
        match self.changing {
            Some(ViewChanging {
                quorum_since: Some(since),
                ..
            }) if self.ledger.is_member() => next = next.min(since + self.timeout()),
            Some(_) => {}
            None => {
                // Only members suspect primaries (see `on_timeout`).
                if let Some(deadline) = self.request_deadline().filter(|_| self.ledger.is_member()) {
                    next = next.min(deadline);
                }
                if self.is_primary() && self.has_room() {
                    if let Some(deadline) = self.batch_deadline {
                        next = next.min(deadline);
                    }
                }
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
            view: self.view,
            leader: self.primary(),
            changing_view: self.changing.is_some(),
            committed_seq: self.ledger.last_executed,
            stable_seq: self.ledger.stable.seq,
            view_changes: self.view_changes_total,
            pending_requests: self.ledger.pool.len(),
        }
    }

    fn peers(&self) -> Vec<PeerReport> {
        self.ledger.monitor.reports(self.ledger.now)
    }

    fn committees(&self) -> &crate::epoch::Committees {
        &self.ledger.committees
    }

    fn footprint(&self) -> Footprint {
        Footprint {
            slots: self.slots.len(),
            blocks: 0,
            prepared: self.prepared.len(),
            committed_unexecuted: self.ledger.committed.len(),
            checkpoints: self.ledger.checkpoint_sets(),
            pending_requests: self.ledger.pool.len(),
            pending_bytes: self.ledger.pool.bytes(),
            view_changes: self.view_changes.len(),
            early_messages: self.early.len(),
            queued: self.ledger.pool.queued(),
            unpersisted: self.ledger.unpersisted(),
            client_entries: self.ledger.clients.entries(),
        }
    }
}
