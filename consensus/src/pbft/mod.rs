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

mod checkpoint;
mod normal;
pub mod view_change;

use std::collections::{BTreeMap, HashMap, VecDeque};

use ordinal_crypto::{Committee, Digest, KeyPair, ReplicaId, Signable, Signed};

use crate::batch::{Batch, CommittedBatch};
use crate::config::ProtocolConfig;
use crate::error::Invalid;
use crate::io::{Action, Footprint, Input, Protocol, Status, Time};
use crate::leader::leader_of;
use crate::messages::{
    genesis_log_digest, CheckpointVote, CommitVote, Message, NewView, PrepareVote, PreparedProof, Proposal,
    StableCheckpoint, VerifiedMessage, ViewChange,
};
use crate::quorum::VoteSet;
use crate::request::{ClientTable, Position, Request, RequestKey};
use crate::safety::{SafetyState, SafetyUpdate};

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
    committed: bool,
}

#[derive(Clone, Debug)]
struct PendingRequest {
    request: Request,
    arrival: (Time, u64),
    proposed: bool,
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
    id: ReplicaId,
    key: KeyPair,
    committee: Committee,
    config: ProtocolConfig,
    now: Time,

    view: u64,
    changing: Option<ViewChanging>,
    failed_views: u32,
    view_changes_total: u64,

    stable: StableCheckpoint,
    checkpoint_votes: BTreeMap<u64, VoteSet<CheckpointVote>>,
    own_checkpoints: BTreeMap<u64, Digest>,
    sent_checkpoint_upto: u64,

    slots: BTreeMap<u64, Slot>,
    prepared: BTreeMap<u64, PreparedProof>,
    prepare_votes: BTreeMap<u64, (u64, Digest)>,
    next_seq: u64,

    last_executed: u64,
    log_digest: Digest,
    committed: BTreeMap<u64, CommittedBatch>,
    persisted: u64,
    awaiting_persist: BTreeMap<u64, Vec<(RequestKey, Position)>>,
    clients: ClientTable,

    pending: HashMap<RequestKey, PendingRequest>,
    arrivals: BTreeMap<(Time, u64), RequestKey>,
    arrival_counter: u64,
    queue: VecDeque<RequestKey>,
    batch_deadline: Option<Time>,
    last_progress: Time,

    view_changes: view_change::ViewChangeStore,
    own_view_changes: BTreeMap<u64, Signed<ViewChange>>,
    last_new_view: Option<Signed<NewView>>,
    views_seen: BTreeMap<ReplicaId, u64>,

    known_high_seq: u64,
    seq_seen: BTreeMap<ReplicaId, u64>,
    catch_up_peer: usize,
    served: BTreeMap<ReplicaId, (Time, u64)>,
    next_tick: Time,

    actions: Vec<Action>,
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
    /// log (contiguous from sequence number 1, as stored). Replays the log to rebuild the
    /// de-duplication table and the running log hash; anything above it comes by state
    /// transfer.
    pub fn restore(
        id: ReplicaId,
        key: KeyPair,
        committee: Committee,
        config: ProtocolConfig,
        now: Time,
        safety: SafetyState,
        log: Vec<CommittedBatch>,
    ) -> Self {
        let mut replica = Replica {
            id,
            key,
            clients: ClientTable::new(config.client_nonce_window),
            next_tick: now + config.retransmit_interval,
            committee,
            config,
            now,
            view: safety.view,
            changing: None,
            failed_views: 0,
            view_changes_total: 0,
            stable: safety.stable.clone(),
            checkpoint_votes: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
            sent_checkpoint_upto: 0,
            slots: BTreeMap::new(),
            prepared: safety.prepared.clone(),
            prepare_votes: safety.prepares.clone(),
            next_seq: 1,
            last_executed: 0,
            log_digest: genesis_log_digest(),
            committed: BTreeMap::new(),
            persisted: 0,
            awaiting_persist: BTreeMap::new(),
            pending: HashMap::new(),
            arrivals: BTreeMap::new(),
            arrival_counter: 0,
            queue: VecDeque::new(),
            batch_deadline: None,
            last_progress: now,
            view_changes: Default::default(),
            own_view_changes: BTreeMap::new(),
            last_new_view: None,
            views_seen: BTreeMap::new(),
            known_high_seq: 0,
            seq_seen: BTreeMap::new(),
            catch_up_peer: id.index(),
            served: BTreeMap::new(),
            actions: Vec::new(),
        };
        for committed in log {
            if committed.seq() != replica.last_executed + 1 {
                break;
            }
            replica.apply(committed, false);
        }
        replica.persisted = replica.last_executed;
        replica.known_high_seq = replica.stable.seq.max(replica.last_executed);
        // A primary must never reuse a sequence number it proposed before the restart.
        let proposed_high = replica
            .prepare_votes
            .iter()
            .filter(|(_, (view, _))| *view == replica.view)
            .map(|(seq, _)| *seq)
            .max()
            .unwrap_or(0);
        replica.next_seq = proposed_high.max(replica.last_executed).max(replica.stable.seq) + 1;
        if safety.changing {
            replica.view_changes_total += 1;
            replica.changing = Some(ViewChanging {
                quorum_since: None,
                new_view_sent: false,
            });
            replica.broadcast_view_change();
        }
        replica.announce_checkpoints();
        replica
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The committee it runs with.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// The protocol configuration.
    pub fn config(&self) -> &ProtocolConfig {
        &self.config
    }

    /// The running hash of the executed log.
    pub fn log_digest(&self) -> Digest {
        self.log_digest
    }

    fn primary(&self) -> ReplicaId {
        leader_of(self.view, &self.committee)
    }

    fn is_primary(&self) -> bool {
        self.primary() == self.id
    }

    /// The current timeout: the base doubled for each consecutive failed view, capped.
    fn timeout(&self) -> Time {
        let factor = 1u32 << self.failed_views.min(16);
        self.config
            .view_timeout
            .checked_mul(factor)
            .unwrap_or(self.config.view_timeout_max)
            .min(self.config.view_timeout_max)
    }

    fn sign<T: Signable>(&self, body: T) -> Signed<T> {
        Signed::sign(body, self.id, &self.key, &self.committee)
    }

    fn broadcast(&mut self, message: Message) {
        self.actions.push(Action::Broadcast { message });
    }

    fn send(&mut self, to: ReplicaId, message: Message) {
        if to != self.id {
            self.actions.push(Action::Send { to, message });
        }
    }

    fn persist(&mut self, update: SafetyUpdate) {
        self.actions.push(Action::PersistSafety(update));
    }

    fn window_high(&self) -> u64 {
        self.stable.seq + self.config.log_window
    }

    /// Accepts sequence numbers inside the watermarks.
    fn check_window(&self, seq: u64) -> Result<(), Invalid> {
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
        Ok(())
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

    /// Remembers the highest sequence number a peer has shown it reached. One peer's claim
    /// proves nothing; see [`Replica::evidenced_seq`].
    fn note_seq(&mut self, from: ReplicaId, seq: u64) {
        if self.committee.contains(from) && from != self.id {
            let seen = self.seq_seen.entry(from).or_insert(0);
            *seen = (*seen).max(seq);
        }
    }

    /// The highest sequence number that peers holding more than F weight have all reached: at
    /// least one correct replica vouches for it, so a Byzantine peer cannot fake being ahead.
    fn evidenced_seq(&self) -> u64 {
        let mut seen: Vec<(u64, ReplicaId)> = self.seq_seen.iter().map(|(id, seq)| (*seq, *id)).collect();
        seen.sort_unstable_by(|a, b| b.cmp(a));
        let mut weight = 0;
        for (seq, id) in seen {
            weight += self.committee.weight(id).unwrap_or(0);
            if weight > self.committee.faulty_weight() {
                return seq;
            }
        }
        0
    }

    /// Drops waiting requests that some batch has ordered meanwhile or that fell out of their
    /// client's nonce window: they must not make this replica suspect the primary.
    fn purge_pending(&mut self) {
        let clients = &self.clients;
        let arrivals = &mut self.arrivals;
        self.pending.retain(|key, pending| {
            let keep = clients.check(key) == crate::request::Seen::New;
            if !keep {
                arrivals.remove(&pending.arrival);
            }
            keep
        });
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        if now >= self.next_tick {
            self.next_tick = now + self.config.retransmit_interval;
            self.tick();
        }
        match self.changing {
            Some(ViewChanging {
                quorum_since: Some(since),
                ..
            }) if now >= since + self.timeout() => {
                // PBFT 4.5.2: NEW-VIEW did not come in time; try the next view.
                self.start_view_change(self.view.saturating_add(1));
            }
            None if self.request_deadline().is_some_and(|deadline| now >= deadline) => {
                self.purge_pending();
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
        let (oldest, _) = *self.arrivals.keys().next()?;
        Some(oldest.max(self.last_progress) + self.timeout())
    }

    /// Periodic retransmission of whatever is unfinished, so that lost messages delay the
    /// protocol instead of stalling it.
    fn tick(&mut self) {
        if self.changing.is_some() {
            if let Some(own) = self.own_view_changes.get(&self.view) {
                let message = Message::ViewChange(own.clone());
                self.broadcast(message);
            }
        } else {
            let mut resend = Vec::new();
            for slot in self.slots.values().filter(|s| !s.committed) {
                if let Some(SlotProposal {
                    signed: Some(signed),
                    batch,
                    ..
                }) = &slot.proposal
                {
                    if signed.signer == self.id {
                        resend.push(Message::PrePrepare {
                            proposal: signed.clone(),
                            batch: batch.clone(),
                        });
                    }
                }
                if let Some(vote) = slot.prepares.vote_of(self.id) {
                    resend.push(Message::Prepare(vote.signed().clone()));
                }
                if let Some(vote) = slot.commits.vote_of(self.id) {
                    resend.push(Message::Commit(vote.signed().clone()));
                }
            }
            for message in resend {
                self.broadcast(message);
            }
        }
        self.resend_checkpoint();
        self.ping_peer();
    }
}

impl Protocol for Replica {
    fn handle(&mut self, now: Time, input: Input) -> Result<(), Invalid> {
        self.now = self.now.max(now);
        let result = match input {
            Input::Request(request) => self.on_request(request, false),
            Input::Timeout => {
                self.on_timeout();
                Ok(())
            }
            Input::Persisted { seq } => {
                self.on_persisted(seq);
                Ok(())
            }
            Input::Message { from, message } => match message {
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
            },
        };
        self.try_propose();
        result
    }

    fn poll_timeout(&self) -> Option<Time> {
        let mut next = self.next_tick;
        match self.changing {
            Some(ViewChanging {
                quorum_since: Some(since),
                ..
            }) => next = next.min(since + self.timeout()),
            Some(_) => {}
            None => {
                if let Some(deadline) = self.request_deadline() {
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
        std::mem::take(&mut self.actions)
    }

    fn status(&self) -> Status {
        Status {
            view: self.view,
            leader: self.primary(),
            changing_view: self.changing.is_some(),
            committed_seq: self.last_executed,
            stable_seq: self.stable.seq,
            view_changes: self.view_changes_total,
        }
    }

    fn footprint(&self) -> Footprint {
        Footprint {
            slots: self.slots.len(),
            prepared: self.prepared.len(),
            committed_unexecuted: self.committed.len(),
            checkpoints: self.checkpoint_votes.len(),
            pending_requests: self.pending.len(),
            view_changes: self.view_changes.len(),
            queued: self.queue.len(),
            unpersisted: self.awaiting_persist.len(),
            client_entries: self.clients.entries(),
        }
    }
}
