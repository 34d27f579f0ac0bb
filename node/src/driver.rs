//! The protocol thread: owns the sans-IO replica, feeds it events and timer expiries, and
//! performs its actions against the store and the transport.
//!
//! Durability rules, from [`ordinal_consensus::Action`]:
//! - a `PersistSafety` is a barrier: messages listed after it leave only once it is synced;
//! - `PersistBatch` writes go into the same RocksDB write batch, and receipts wait for
//!   `Input::Persisted`, which is fed only after the sync.
//!
//! All events queued while a sync runs are handled before the next drain, so one sync covers
//! everything they produced (group commit): the fsync rate, not the message rate, bounds it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordinal_client::wire::{self, ClientReply, ReceiptEntry, RejectKind, ReplicaStatus};
use ordinal_consensus::{Action, CommittedBatch, Input, Invalid, Message, Protocol, RequestKey, SafetyState};
use ordinal_crypto::ReplicaId;
use tokio::sync::{mpsc, watch};

use crate::store::{StoreError, Writes};
use crate::transport::{Event, Peers, Shared};

/// Events handled per wake-up before the actions are performed.
const EVENTS_PER_ROUND: usize = 4096;
/// Payload bytes of recently committed batches kept in memory for receipts. Receipts go out
/// right after their batch is durable, so a few batches would do; older ones are read from
/// the store (retries). It was 512 batches whatever their size: at saturation, when batches
/// are large, that cache alone held tens of MiB per replica (up to 512 MiB with full batches).
const RECENT_BYTES: usize = 8 << 20;
/// Most payload bytes in one state-transfer answer.
const TRANSFER_MAX_BYTES: usize = 16 << 20;

/// A request its client sent to this replica.
#[derive(Clone, Copy)]
struct Arrival {
    /// When it first arrived (for the commit latency metric).
    at: Instant,
    /// Whether the client asked this replica for the receipt (on any of its sends).
    receipt: bool,
}

/// The protocol thread's state.
pub struct Driver {
    replica: Box<dyn Protocol + Send>,
    safety: SafetyState,
    shared: Arc<Shared>,
    peers: Peers,
    origin: Instant,
    recent: BTreeMap<u64, Arc<CommittedBatch>>,
    /// Payload bytes in `recent`.
    recent_bytes: usize,
    /// Requests that came from their client directly, until their receipt is due.
    arrivals: HashMap<RequestKey, Arrival>,
    view_changes_seen: u64,
    /// When this replica last entered a view change it has not finished (what the duration
    /// metric and the "new view installed" line measure from).
    view_change_since: Option<Instant>,
    /// When the last finished view change began, until the first batch commits after it
    /// (what the "first batch committed after the view change" line measures).
    stalled_since: Option<Instant>,
    /// (epochs, known-through) of the schedule last handed to the transport.
    schedule_shape: Option<(usize, u64)>,
    /// Epochs already logged.
    schedule_shape_epochs: usize,
    /// When the per-peer measurements were last exported, and the counters as exported then.
    peers_published: Option<Instant>,
    peer_counts: HashMap<ReplicaId, PeerCounts>,
    /// The per-peer measurements as last exported, for `ordinal status`.
    peer_health: Vec<wire::PeerHealth>,
    /// When refusals counted at the edge were last handed to the protocol.
    refusals_fed: Option<Instant>,
    /// This replica's public key, and whether the log's slot for it was checked against it.
    own_key: ordinal_crypto::PublicKey,
    own_slot_checked: bool,
    /// Quorum entries refused, as already logged and counted.
    refusals_seen: u64,
}

/// A peer's counters as last exported (Prometheus counters only move by increments).
#[derive(Clone, Copy, Default)]
struct PeerCounts {
    missed_votes: u64,
    late_votes: u64,
    leader_timeouts: u64,
    refused: u64,
}

/// How often the per-peer measurements are exported.
const PEER_METRICS_INTERVAL: Duration = Duration::from_millis(500);

impl Driver {
    /// A driver around a replica restored from `safety` (what the store holds).
    pub fn new(
        replica: Box<dyn Protocol + Send>,
        safety: SafetyState,
        shared: Arc<Shared>,
        peers: Peers,
        origin: Instant,
        own_key: ordinal_crypto::PublicKey,
    ) -> Self {
        let view_changes_seen = replica.status().view_changes;
        // Refusals in the replayed log were logged when they happened.
        let refusals_seen = replica.committees().refusals().0;
        Driver {
            replica,
            safety,
            shared,
            peers,
            origin,
            recent: BTreeMap::new(),
            recent_bytes: 0,
            arrivals: HashMap::new(),
            view_changes_seen,
            view_change_since: None,
            stalled_since: None,
            schedule_shape: None,
            schedule_shape_epochs: 1,
            peers_published: None,
            peer_counts: HashMap::new(),
            peer_health: Vec::new(),
            refusals_fed: None,
            own_key,
            own_slot_checked: false,
            refusals_seen,
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Runs until `shutdown` turns true or the event channels close. Replica messages are
    /// taken before client requests. Everything acknowledged is durable when it returns; an
    /// error means the store failed and the replica must stop.
    pub async fn run(
        mut self,
        mut peer_events: mpsc::Receiver<Event>,
        mut client_events: mpsc::Receiver<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        self.publish_status();
        loop {
            // A deadline beyond what the clock can represent is no deadline.
            let deadline = self
                .replica
                .poll_timeout()
                .and_then(|t| self.origin.checked_add(t));
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                event = peer_events.recv() => {
                    let Some(event) = event else { break };
                    self.handle(event);
                    self.drain(&mut peer_events, &mut client_events);
                }
                event = client_events.recv() => {
                    let Some(event) = event else { break };
                    self.handle(event);
                    self.drain(&mut peer_events, &mut client_events);
                }
                _ = sleep => {}
            }
            if self.replica.poll_timeout().is_some_and(|t| t <= self.now()) {
                let now = self.now();
                let _ = self.replica.handle(now, Input::Timeout);
            }
            self.feed_refusals();
            self.perform()?;
            self.publish_status();
        }
        self.shared.store.flush()?;
        Ok(())
    }

    /// Handles what is already queued, replica messages first, up to a round's worth.
    fn drain(&mut self, peers: &mut mpsc::Receiver<Event>, clients: &mut mpsc::Receiver<Event>) {
        for _ in 1..EVENTS_PER_ROUND {
            match peers.try_recv().or_else(|_| clients.try_recv()) {
                Ok(event) => self.handle(event),
                Err(_) => break,
            }
        }
    }

    fn handle(&mut self, event: Event) {
        let now = self.now();
        match event {
            Event::Peer { .. } | Event::LateVote { .. } => {
                let input = match event {
                    Event::LateVote { from, vote } => Input::LateVote { from, vote },
                    Event::Peer { from, message } => Input::Message { from, message },
                    Event::Request { .. } => return,
                };
                if let Err(e) = self.replica.handle(now, input) {
                    self.shared
                        .metrics
                        .invalid_messages
                        .with_label_values(&[e.reason()])
                        .inc();
                }
            }
            Event::Request {
                request,
                arrived,
                receipt,
            } => {
                let key = request.key(self.shared.config.request_auth);
                let client = request.client;
                let nonce = request.nonce;
                match self.replica.handle(now, Input::Request(request)) {
                    Ok(()) => {
                        if self.arrivals.len() >= 2 * self.shared.config.max_pending_requests {
                            self.arrivals.clear();
                        }
                        // Bounded: entries leave with their receipt; if clients leave many
                        // requests unordered, forgetting them costs those clients a retry.
                        let arrival = self
                            .arrivals
                            .entry(key)
                            .or_insert(Arrival { at: arrived, receipt });
                        arrival.receipt |= receipt;
                    }
                    Err(e) => {
                        self.shared
                            .metrics
                            .invalid_messages
                            .with_label_values(&[e.reason()])
                            .inc();
                        let kind = match e {
                            Invalid::Overloaded => RejectKind::Overloaded,
                            Invalid::Duplicate => RejectKind::Stale,
                            _ => RejectKind::Invalid,
                        };
                        self.shared.clients.send(
                            &client,
                            &ClientReply::Rejected {
                                nonce,
                                kind,
                                reason: e.to_string(),
                            },
                        );
                    }
                }
            }
        }
    }

    /// Performs the replica's actions until it has none left.
    fn perform(&mut self) -> Result<(), StoreError> {
        loop {
            let actions = self.replica.drain_actions();
            if actions.is_empty() {
                return Ok(());
            }
            let mut writes = Writes::default();
            let mut after_sync = Vec::new();
            let mut barrier = false;
            for action in actions {
                match action {
                    Action::PersistSafety(update) => {
                        self.safety.apply(&update);
                        writes.put_safety(&update, &self.safety);
                        barrier = true;
                    }
                    Action::PersistBatch(committed) => {
                        self.shared
                            .metrics
                            .batch_transactions
                            .observe(committed.batch.requests().len() as f64);
                        writes.put_batch(&committed, &self.safety);
                        if let Some(since) = self.stalled_since.take() {
                            tracing::info!(
                                seq = committed.seq(),
                                took_ms = since.elapsed().as_millis() as u64,
                                "first batch committed after the view change"
                            );
                        }
                        self.recent_bytes += committed.batch.payload_bytes();
                        if let Some(replaced) = self.recent.insert(committed.seq(), Arc::new(committed)) {
                            self.recent_bytes =
                                self.recent_bytes.saturating_sub(replaced.batch.payload_bytes());
                        }
                        while self.recent_bytes > RECENT_BYTES && self.recent.len() > 1 {
                            if let Some((_, oldest)) = self.recent.pop_first() {
                                self.recent_bytes =
                                    self.recent_bytes.saturating_sub(oldest.batch.payload_bytes());
                            }
                        }
                    }
                    // Only a hint for the transport: it may take effect at once.
                    Action::Settled(statement) => {
                        crate::transport::lock(&self.shared.settled).record(&statement)
                    }
                    action @ (Action::Send { .. } | Action::Broadcast { .. }) if !barrier => {
                        self.send(action)
                    }
                    other => after_sync.push(other),
                }
            }
            let persisted = writes.highest_batch();
            if !writes.is_empty() {
                let took = self.shared.store.commit(writes)?;
                self.shared.metrics.storage_sync.observe(took.as_secs_f64());
            }
            let mut replies: BTreeMap<u64, Vec<(RequestKey, u32)>> = BTreeMap::new();
            for action in after_sync {
                match action {
                    Action::Reply { key, position } => {
                        replies
                            .entry(position.seq)
                            .or_default()
                            .push((key, position.index));
                    }
                    Action::ServeBatches { to, from_seq, to_seq } => self.serve(to, from_seq, to_seq)?,
                    other => self.send(other),
                }
            }
            for (seq, requests) in replies {
                self.send_receipts(seq, requests)?;
            }
            if let Some(seq) = persisted {
                let now = self.now();
                let _ = self.replica.handle(now, Input::Persisted { seq });
            }
        }
    }

    fn send(&mut self, action: Action) {
        let (to, message) = match action {
            Action::Send { to, message } => (Some(to), message),
            Action::Broadcast { message } => (None, message),
            _ => return,
        };
        let frame = match wire::encode_frame(&message) {
            Ok(frame) => Arc::new(frame),
            Err(e) => {
                tracing::error!(error = %e, "encoding a message");
                return;
            }
        };
        match to {
            Some(to) => self.peers.send(to, &frame),
            None => self.peers.broadcast(&frame),
        }
    }

    fn serve(&mut self, to: ordinal_crypto::ReplicaId, from_seq: u64, to_seq: u64) -> Result<(), StoreError> {
        let count = to_seq.saturating_sub(from_seq).saturating_add(1) as usize;
        let batches = self.shared.store.batches(from_seq, count, TRANSFER_MAX_BYTES)?;
        if !batches.is_empty() {
            self.send(Action::Send {
                to,
                message: Message::Batches(batches),
            });
        }
        Ok(())
    }

    fn send_receipts(&mut self, seq: u64, requests: Vec<(RequestKey, u32)>) -> Result<(), StoreError> {
        // Only the replica a client asked answers it (see `ClientRequest::Submit`); the others
        // just record the latency of what came to them directly.
        let metrics = &self.shared.metrics;
        // Each client's receipts of this batch, in batch order: one frame per client, with
        // the certificate once.
        let mut wanted: BTreeMap<u32, RequestKey> = BTreeMap::new();
        for (key, index) in requests {
            let Some(arrival) = self.arrivals.remove(&key) else {
                continue;
            };
            metrics.commit_latency.observe(arrival.at.elapsed().as_secs_f64());
            if arrival.receipt {
                wanted.insert(index, key);
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let batch = match self.recent.get(&seq) {
            Some(batch) => batch.clone(),
            None => match self.shared.store.batch(seq)? {
                Some(batch) => Arc::new(batch),
                None => return Ok(()),
            },
        };
        let mut by_client: HashMap<ordinal_crypto::PublicKey, Vec<ReceiptEntry>> = HashMap::new();
        for (index, key) in wanted {
            // An index the batch lacks yields no entry (the proof is the batch's own).
            let Some(proof) = batch.batch.proof(index as usize) else {
                continue;
            };
            by_client.entry(key.client).or_default().push(ReceiptEntry {
                nonce: key.nonce,
                proof,
            });
        }
        for (client, entries) in by_client {
            let count = entries.len() as u64;
            let reply = ClientReply::Receipts {
                seq,
                certificate: batch.certificate.clone(),
                entries,
            };
            if self.shared.clients.send(&client, &reply) {
                metrics.receipts.inc_by(count);
            }
        }
        Ok(())
    }

    /// Hands the messages refused at the edge to the protocol, in bulk and at most every
    /// 100 ms.
    fn feed_refusals(&mut self) {
        if self
            .refusals_fed
            .is_some_and(|at| at.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.refusals_fed = Some(Instant::now());
        let now = self.now();
        for (from, count) in self.shared.take_refused() {
            let _ = self.replica.handle(now, Input::Refused { from, count });
        }
    }

    /// Exports what the replica measured about each peer, and whether the peers it does not
    /// suspect still make a quorum with it (if not, it is probably cut off from the rest).
    fn publish_peers(&mut self) {
        let metrics = &self.shared.metrics;
        let schedule = self.shared.schedule();
        let committee = schedule.current();
        let mut reachable = vec![self.shared.id];
        let reports = self.replica.peers();
        self.peer_health = reports.iter().map(wire::PeerHealth::from_report).collect();
        for report in reports {
            let label = report.peer.0.to_string();
            let labels = [label.as_str()];
            if let Some(latency) = report.vote_latency {
                metrics
                    .peer_vote_latency
                    .with_label_values(&labels)
                    .set(latency.as_secs_f64());
            }
            metrics
                .peer_reliability
                .with_label_values(&labels)
                .set(report.reliability);
            metrics
                .peer_suspected
                .with_label_values(&labels)
                .set(i64::from(report.suspected));
            metrics
                .peer_suspicion_timeout
                .with_label_values(&labels)
                .set(report.suspicion_timeout.as_secs_f64());
            let last = self.peer_counts.entry(report.peer).or_default();
            metrics
                .peer_missed_votes
                .with_label_values(&labels)
                .inc_by(report.missed_votes.saturating_sub(last.missed_votes));
            metrics
                .peer_late_votes
                .with_label_values(&labels)
                .inc_by(report.late_votes.saturating_sub(last.late_votes));
            metrics
                .peer_leader_timeouts
                .with_label_values(&labels)
                .inc_by(report.leader_timeouts.saturating_sub(last.leader_timeouts));
            metrics
                .peer_refused
                .with_label_values(&labels)
                .inc_by(report.refused_messages.saturating_sub(last.refused));
            *last = PeerCounts {
                missed_votes: report.missed_votes,
                late_votes: report.late_votes,
                leader_timeouts: report.leader_timeouts,
                refused: report.refused_messages,
            };
            if !report.suspected {
                reachable.push(report.peer);
            }
        }
        metrics
            .suspected_partition
            .set(i64::from(!committee.is_quorum(reachable)));
    }

    /// Hands the transport a new weight schedule when the log changed it (a new epoch, or
    /// more of the log known): messages are verified with the weights in force where they
    /// certify.
    fn publish_schedule(&mut self) {
        let committees = self.replica.committees();
        let shape = (committees.epochs().len(), committees.known_through());
        if self.schedule_shape == Some(shape) {
            return;
        }
        self.schedule_shape = Some(shape);
        if shape.0 > 1 && self.schedule_shape_epochs < shape.0 {
            self.schedule_shape_epochs = shape.0;
            if let Some(epoch) = committees.epochs().last() {
                tracing::info!(
                    epoch = epoch.committee.epoch(),
                    start = epoch.start,
                    decided_at = epoch.decided_at,
                    weights = ?epoch.committee.weights(),
                    "weight epoch scheduled"
                );
            }
        }
        let snapshot = Arc::new(committees.clone());
        match self.shared.committees.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        self.follow_membership();
    }

    /// Dials replicas that joined through the log (with the key the log named) and checks
    /// this replica's own key once the log gives it a slot.
    fn follow_membership(&mut self) {
        let committees = self.replica.committees();
        let signers = committees.signers();
        self.shared.pinned.update(signers);
        let me = self.shared.id;
        if let Some(slot) = signers.slot_table().get(me.index()) {
            if !self.own_slot_checked {
                self.own_slot_checked = true;
                if slot.public_key != self.own_key {
                    tracing::error!(
                        id = me.0,
                        listed = %slot.public_key,
                        ours = %self.own_key,
                        "the log gave this replica's id another key: it will never be a member"
                    );
                }
            }
        }
        // A replica that left (a member neither now nor in the latest schedule) gets nothing
        // more; one that joined is dialled.
        let (current, latest) = (committees.current(), committees.latest());
        for id in signers.ids() {
            if self.peers.has(id) && !current.contains(id) && !latest.contains(id) {
                tracing::info!(peer = id.0, "closing the link to a replica that left");
                self.peers.remove(id);
            }
        }
        for member in latest.members() {
            if self.peers.has(member.id) || member.id == me {
                continue;
            }
            if let Some(address) = committees.joined_address(member.id) {
                tracing::info!(peer = member.id.0, address, "dialling a replica that joined");
                let address = address.to_string();
                self.peers.add(member.id, &address);
            }
        }
    }

    fn publish_status(&mut self) {
        self.publish_schedule();
        let (refused, last) = self.replica.committees().refusals();
        if refused > self.refusals_seen {
            if let Some((seq, reason)) = last {
                tracing::warn!(
                    seq,
                    %reason,
                    refused = refused - self.refusals_seen,
                    "quorum entries in the log were refused (the latest shown)"
                );
            }
            self.shared
                .metrics
                .quorum_entries_refused
                .inc_by(refused - self.refusals_seen);
            self.refusals_seen = refused;
        }
        let status = self.replica.status();
        let metrics = &self.shared.metrics;
        metrics.committed_seq.set(status.committed_seq as i64);
        metrics.stable_seq.set(status.stable_seq as i64);
        metrics.view.set(status.view as i64);
        metrics.pending_requests.set(status.pending_requests as i64);
        if status.view_changes > self.view_changes_seen {
            metrics
                .view_changes
                .inc_by(status.view_changes - self.view_changes_seen);
            self.view_changes_seen = status.view_changes;
            // Operators correlate these with faults; linear rounds change constantly, so only
            // the ones that began with a timeout are worth a line.
            tracing::info!(
                view = status.view,
                leader = status.leader.0,
                committed_seq = status.committed_seq,
                view_changes = status.view_changes,
                "view change (timeout)"
            );
        }
        match (status.changing_view, self.view_change_since) {
            (true, None) => self.view_change_since = Some(Instant::now()),
            (false, Some(since)) => {
                let took = since.elapsed();
                metrics.view_change_duration.observe(took.as_secs_f64());
                tracing::info!(
                    view = status.view,
                    leader = status.leader.0,
                    took_ms = took.as_millis() as u64,
                    "new view installed"
                );
                self.stalled_since = Some(since);
                self.view_change_since = None;
            }
            _ => {}
        }
        if self
            .peers_published
            .is_none_or(|at| at.elapsed() >= PEER_METRICS_INTERVAL)
        {
            self.peers_published = Some(Instant::now());
            self.publish_peers();
        }
        let committees = self.replica.committees();
        let current = committees.current();
        let metrics = &self.shared.metrics;
        for member in current.slot_table() {
            metrics
                .replica_weight
                .with_label_values(&[&member.id.0.to_string()])
                .set(i64::try_from(member.weight).unwrap_or(i64::MAX));
        }
        metrics
            .weight_epoch
            .set(i64::try_from(current.epoch()).unwrap_or(i64::MAX));
        let mut published = ReplicaStatus::new(self.shared.id, &status, current);
        published.peers.clone_from(&self.peer_health);
        if let Ok(mut shared) = self.shared.status.lock() {
            *shared = published;
        }
    }
}
