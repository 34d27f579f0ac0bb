//! QUIC between replicas and from clients.
//!
//! - Outgoing: one task per peer keeps a connection (dialled with backoff, the peer pinned to
//!   its configured key by TLS) and one long-lived unidirectional stream, and writes frames from
//!   a bounded queue. A full queue drops the message and counts it: the protocol retransmits
//!   what matters, and a slow peer must not grow our memory.
//! - Incoming: every connection's certificate says who it is. A committee member's streams
//!   carry consensus messages, verified here (off the protocol thread) before they reach the
//!   core through a bounded channel whose backpressure slows the peer down. Any other key is a
//!   client: it may submit its own requests, read committed batches and ask for status, and
//!   nothing else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordinal_client::wire::{
    self, ClientReply, ClientRequest, Frame, FrameReader, FrameReceiver, FrameSender, RejectKind,
    ReplicaStatus, WireError,
};
use ordinal_consensus::epoch::Committees;
use ordinal_consensus::{
    AdmittedCache, AdmittedRequests, CheckedRequest, Invalid, LateVote, Message, NoneAdmitted,
    ProtocolConfig, Request, SettledStatements, Sorted, VerifiedMessage,
};
use ordinal_crypto::tls::PeerIdentity;
use ordinal_crypto::{Committee, CryptoError, Digest, PublicKey, ReplicaId};
use prometheus::{IntCounter, IntCounterVec};
use tokio::sync::{mpsc, Semaphore};

use crate::metrics::Metrics;
use crate::store::Store;

/// Bytes queued for one peer; beyond this, messages to it are dropped (and counted).
const PEER_QUEUE_BYTES: usize = 64 << 20;
/// Bytes queued on one client stream; receipts beyond it are dropped (the client retries and
/// is answered with the original position), reads wait for room.
const CLIENT_QUEUE_BYTES: usize = 16 << 20;
/// Most bytes gathered into one stream write.
const WRITE_GATHER: usize = 512 * 1024;
/// Most batches and payload bytes in one answer to a client read.
const READ_MAX_BATCHES: usize = 256;
/// Most frames held per peer by the send-delay testing knob, which also holds at most
/// `PEER_QUEUE_BYTES` (beyond, frames are dropped and counted like a full queue's).
const DELAYED_FRAMES: usize = 16_384;
const READ_MAX_BYTES: usize = 8 << 20;
/// The most client frames read (and their signatures checked) as one group.
const CLIENT_READ_GROUP: usize = 64;
/// The most peer frames read (and their envelope signatures checked) as one group.
const PEER_READ_GROUP: usize = 64;
/// Groups read one message at a time after a stream carried a bad signature.
const ALONE_AFTER_BAD_SIGNATURE: u32 = 64;

/// Whether a stream's next group has its signatures checked together. A group holding a bad
/// signature costs the group check plus a check of each member (to name the culprit), more
/// than checking each alone; so after a stream carried one, its next groups are checked one
/// message at a time. Correct senders never send a bad signature, so they never pay for this.
#[derive(Debug, Default)]
struct GroupTrust {
    alone_left: u32,
}

impl GroupTrust {
    fn grouped(&self) -> bool {
        self.alone_left == 0
    }

    /// Records how a group (or a message read alone) went.
    fn record(&mut self, bad_signature: bool) {
        self.alone_left = if bad_signature {
            ALONE_AFTER_BAD_SIGNATURE
        } else {
            self.alone_left.saturating_sub(1)
        };
    }
}
/// Client connections open at once; more are refused at accept.
pub const MAX_CLIENT_CONNECTIONS: usize = 1024;
/// Requests remembered after admission (signed mode), for checking proposals: about 4,800 of
/// 512 bytes, 1.6 s at the signed mode's saturation, which covers the time from a
/// request's arrival at a backup to the proposal that carries it. The payloads are shared with
/// the pending pool until they are ordered.
pub const ADMITTED_CACHE_BYTES: usize = 4 << 20;

/// What the transport hands the protocol thread.
#[derive(Debug)]
pub enum Event {
    /// A verified message from an authenticated replica.
    Peer {
        /// The sender.
        from: ReplicaId,
        /// The message.
        message: VerifiedMessage,
    },
    /// A vote from an authenticated replica, signed by it as it claims, for a statement this
    /// replica had settled: its signature was not checked.
    LateVote {
        /// The sender.
        from: ReplicaId,
        /// The vote.
        vote: LateVote,
    },
    /// A client request that passed its checks.
    Request {
        /// The request.
        request: Request,
        /// When it arrived (for the commit latency metric).
        arrived: Instant,
        /// Whether the client asked this replica for the receipt.
        receipt: bool,
    },
}

/// Client streams by client key: where receipts for that client go.
#[derive(Default)]
pub struct ClientRegistry {
    streams: Mutex<HashMap<PublicKey, (u64, FrameSender)>>,
    next: AtomicU64,
}

impl ClientRegistry {
    fn register(&self, client: PublicKey, sender: FrameSender) -> u64 {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.streams).insert(client, (token, sender));
        token
    }

    fn unregister(&self, client: &PublicKey, token: u64) {
        let mut streams = lock(&self.streams);
        if streams.get(client).is_some_and(|(t, _)| *t == token) {
            streams.remove(client);
        }
    }

    /// Queues a reply for `client` if it is connected here; `false` if it is not or its queue
    /// is full (it will retry).
    pub fn send(&self, client: &PublicKey, reply: &ClientReply) -> bool {
        let Some(sender) = lock(&self.streams).get(client).map(|(_, s)| s.clone()) else {
            return false;
        };
        match wire::encode_frame(reply) {
            Ok(frame) => sender.try_send(Arc::new(frame)),
            Err(_) => false,
        }
    }
}

/// Replica ids whose edge refusals are counted (the configured ones and joiners up to this).
pub const REFUSAL_SLOTS: usize = 256;

/// What every connection task needs.
pub struct Shared {
    /// This replica.
    pub id: ReplicaId,
    /// The committee as configured (the first membership).
    pub committee: Committee,
    /// The key each replica id must present when dialled: the configured ones, then the
    /// ones of replicas that joined through the log (the driver updates it).
    pub pinned: ordinal_crypto::tls::PinnedKeys,
    /// The weight schedule the replica derived from its log, published by the driver when it
    /// changes: what incoming messages are verified with.
    pub committees: std::sync::RwLock<Arc<Committees>>,
    /// Protocol parameters.
    pub config: ProtocolConfig,
    /// Cluster id (client signatures cover it).
    pub cluster_id: Digest,
    /// Metrics.
    pub metrics: Metrics,
    /// The store, for reads.
    pub store: Arc<Store>,
    /// Replica messages into the protocol thread (served before client requests, so clients
    /// cannot starve agreement).
    pub peer_events: mpsc::Sender<Event>,
    /// Client requests into the protocol thread.
    pub client_events: mpsc::Sender<Event>,
    /// The open connection of each peer replica (a newer one replaces it).
    pub replica_connections: Mutex<HashMap<ReplicaId, quinn::Connection>>,
    /// Room for client connections.
    pub client_slots: Arc<Semaphore>,
    /// Client reply streams.
    pub clients: ClientRegistry,
    /// The latest status, published by the protocol thread.
    pub status: Mutex<ReplicaStatus>,
    /// How long peer messages are held before the protocol sees them (an experiment knob;
    /// zero in production).
    pub peer_receive_delay: Duration,
    /// Messages refused at the edge per peer (index = id) since the protocol thread last
    /// took them. Counted here and handed over in bulk, so that a peer sending garbage costs
    /// the protocol thread one input per interval, not one per frame, and never takes room
    /// in the event queue from correct peers.
    pub refused: Vec<AtomicU64>,
    /// In signed-request mode, the client requests this replica admitted, so that proposals
    /// carrying them are checked without verifying their signatures a second time. `None` in
    /// unsigned mode, where the work saved (one payload hash, about 1 µs) is less than the
    /// bookkeeping: measured 5-9 % slower with the cache there, 13 % faster in signed mode
    /// (benches/results/README.md, session 14).
    pub admitted: Option<Admitted>,
    /// The statements the protocol thread announced as settled: votes from their signer that
    /// match one go to the protocol unchecked (`ordinal_consensus::late`).
    pub settled: Mutex<SettledStatements>,
}

/// [`AdmittedCache`] shared by the client streams (which fill it) and the peer streams (which
/// read it while verifying proposals).
#[derive(Debug)]
pub struct Admitted {
    cache: Mutex<AdmittedCache>,
    found: IntCounter,
    absent: IntCounter,
}

impl Admitted {
    /// An empty cache of `max_bytes`, counting its lookups in `lookups` (by `result`).
    pub fn new(max_bytes: usize, lookups: &IntCounterVec) -> Self {
        Admitted {
            cache: Mutex::new(AdmittedCache::new(max_bytes)),
            found: lookups.with_label_values(&["found"]),
            absent: lookups.with_label_values(&["absent"]),
        }
    }

    /// Remembers a request that passed admission ([`admit_group`]). Its payload digest is computed by
    /// the caller's task, not under the lock.
    fn remember(&self, checked: CheckedRequest<'_>) {
        checked.request().payload_digest();
        lock(&self.cache).remember(checked);
    }
}

impl AdmittedRequests for Admitted {
    fn admitted(&self, client: &PublicKey, nonce: u64) -> Option<Request> {
        let found = lock(&self.cache).get(client, nonce).cloned();
        match found {
            Some(_) => self.found.inc(),
            None => self.absent.inc(),
        }
        found
    }
}

impl Shared {
    /// The weight schedule to verify with (a snapshot; the driver replaces it).
    pub fn schedule(&self) -> Arc<Committees> {
        match self.committees.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Counts a message from `from` refused at the edge.
    pub fn note_refused(&self, from: ReplicaId) {
        if let Some(count) = self.refused.get(from.index()) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the refusal counts gathered since the last call.
    pub fn take_refused(&self) -> Vec<(ReplicaId, u64)> {
        self.refused
            .iter()
            .enumerate()
            .filter_map(|(i, count)| {
                let n = count.swap(0, Ordering::Relaxed);
                (n > 0).then_some((ReplicaId(i as u16), n))
            })
            .collect()
    }

    /// The largest frame a replica may legitimately send: a NEW-VIEW carrying a quorum of
    /// VIEW-CHANGEs, each with a prepared batch for every sequence number in the window.
    pub fn peer_frame_limit(&self) -> usize {
        let batch = self
            .config
            .max_batch_bytes
            .saturating_add(self.config.max_batch_requests.saturating_mul(256))
            .saturating_add(4096);
        let window = usize::try_from(self.config.log_window).unwrap_or(usize::MAX);
        let messages = self.schedule().signers().size() + 1;
        messages
            .saturating_mul(window)
            .saturating_mul(batch)
            .saturating_add(1 << 20)
            .min(1 << 30)
    }

    fn client_frame_limit(&self) -> usize {
        self.config
            .max_request_bytes
            .saturating_add(wire::REQUEST_OVERHEAD)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The sending half towards every peer.
pub struct Peers {
    queues: Vec<Option<PeerQueue>>,
    metrics: Metrics,
    /// Testing knob: how long each frame is held before it is queued for its peer.
    send_delay: Duration,
    me: ReplicaId,
    endpoint: quinn::Endpoint,
    /// Where link tasks run (the transport's runtime, not the protocol thread's).
    runtime: tokio::runtime::Handle,
}

impl Peers {
    /// Starts one link task per peer; returns their handles with the queues. Must run inside
    /// the transport's runtime.
    pub fn start(
        endpoint: &quinn::Endpoint,
        me: ReplicaId,
        addresses: &[String],
        metrics: &Metrics,
        send_delay: Duration,
    ) -> (Peers, Vec<tokio::task::JoinHandle<()>>) {
        let mut peers = Peers {
            queues: Vec::new(),
            metrics: metrics.clone(),
            send_delay,
            me,
            endpoint: endpoint.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let links = addresses
            .iter()
            .enumerate()
            .filter_map(|(i, address)| peers.add(ReplicaId(i as u16), address))
            .collect();
        (peers, links)
    }

    /// Starts a link to `id` at `address` unless there is one (or `id` is this replica).
    /// Returns the link task.
    pub fn add(&mut self, id: ReplicaId, address: &str) -> Option<tokio::task::JoinHandle<()>> {
        if id == self.me || self.queues.get(id.index()).is_some_and(Option::is_some) {
            return None;
        }
        if self.queues.len() <= id.index() {
            self.queues.resize_with(id.index() + 1, || None);
        }
        let (tx, rx) = wire::frame_queue(PEER_QUEUE_BYTES);
        let delayed = (!self.send_delay.is_zero()).then(|| {
            let (sender, receiver) = mpsc::channel(DELAYED_FRAMES);
            let held = Arc::new(AtomicUsize::new(0));
            self.runtime.spawn(send_late(
                receiver,
                tx.clone(),
                held.clone(),
                self.metrics.clone(),
                id,
            ));
            DelayStage { frames: sender, held }
        });
        self.queues[id.index()] = Some(PeerQueue { frames: tx, delayed });
        Some(self.runtime.spawn(peer_link(
            self.endpoint.clone(),
            id,
            address.to_string(),
            rx,
            self.metrics.clone(),
        )))
    }

    /// Closes the link to `id` (its queue closes, and its task ends).
    pub fn remove(&mut self, id: ReplicaId) {
        if let Some(slot) = self.queues.get_mut(id.index()) {
            *slot = None;
        }
    }

    /// Whether there is a link to `id`.
    pub fn has(&self, id: ReplicaId) -> bool {
        self.queues.get(id.index()).is_some_and(Option::is_some)
    }

    /// Queues a frame for `to`; drops it (and counts) if the queue is full.
    pub fn send(&self, to: ReplicaId, frame: &Frame) {
        let Some(Some(queue)) = self.queues.get(to.index()) else {
            return;
        };
        let queued = match &queue.delayed {
            Some(delayed) => delayed.hold(Instant::now() + self.send_delay, frame),
            None => queue.frames.try_send(frame.clone()),
        };
        if !queued {
            count_send_drop(&self.metrics, to);
        }
    }

    /// Queues a frame for every peer.
    pub fn broadcast(&self, frame: &Frame) {
        for i in 0..self.queues.len() {
            self.send(ReplicaId(i as u16), frame);
        }
    }
}

/// The queue towards one peer, behind a delay stage when the testing knob asks for one.
struct PeerQueue {
    frames: FrameSender,
    delayed: Option<DelayStage>,
}

/// Frames waiting out the send delay, bounded in bytes like the queue behind it.
struct DelayStage {
    frames: mpsc::Sender<(Instant, Frame)>,
    /// Bytes of the frames held.
    held: Arc<AtomicUsize>,
}

impl DelayStage {
    fn hold(&self, due: Instant, frame: &Frame) -> bool {
        let bytes = frame.len();
        if self.held.fetch_add(bytes, Ordering::AcqRel) + bytes > PEER_QUEUE_BYTES
            || self.frames.try_send((due, frame.clone())).is_err()
        {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }
}

fn count_send_drop(metrics: &Metrics, to: ReplicaId) {
    metrics
        .send_queue_drops
        .with_label_values(&[&to.0.to_string()])
        .inc();
}

/// Queues each frame for its peer once its due time has come. Every frame waits the same
/// delay, so the order is kept and the waits do not add up: the link behaves like a longer
/// wire, not a slower one.
async fn send_late(
    mut due: mpsc::Receiver<(Instant, Frame)>,
    frames: FrameSender,
    held: Arc<AtomicUsize>,
    metrics: Metrics,
    to: ReplicaId,
) {
    while let Some((at, frame)) = due.recv().await {
        tokio::time::sleep_until(at.into()).await;
        held.fetch_sub(frame.len(), Ordering::AcqRel);
        if !frames.try_send(frame) {
            count_send_drop(&metrics, to);
        }
    }
}

/// Keeps one peer connected and writes its queue on one long-lived stream.
async fn peer_link(
    endpoint: quinn::Endpoint,
    id: ReplicaId,
    address: String,
    mut queue: FrameReceiver,
    metrics: Metrics,
) {
    let peer_label = id.0.to_string();
    let mut backoff = Duration::from_millis(20);
    let mut buffer = Vec::with_capacity(WRITE_GATHER);
    loop {
        match wire::dial(&endpoint, id, &address).await {
            Ok(connection) => {
                backoff = Duration::from_millis(20);
                tracing::debug!(peer = id.0, "connected");
                match connection.open_uni().await {
                    Ok(mut send) => loop {
                        let frame = tokio::select! {
                            frame = queue.recv() => frame,
                            _ = connection.closed() => break,
                        };
                        let Some(frame) = frame else { return };
                        match queue
                            .write_gathered(frame, &mut send, &mut buffer, WRITE_GATHER)
                            .await
                        {
                            Ok(bytes) => metrics
                                .peer_sent_bytes
                                .with_label_values(&[&peer_label])
                                .inc_by(bytes as u64),
                            Err(_) => break,
                        }
                        metrics
                            .peer_rtt
                            .with_label_values(&[&peer_label])
                            .set(connection.rtt().as_secs_f64());
                    },
                    Err(e) => tracing::debug!(peer = id.0, error = %e, "opening stream"),
                }
            }
            Err(e) => tracing::debug!(peer = id.0, error = %e, "dial failed"),
        }
        if queue.is_closed() {
            return;
        }
        // What queued up while the peer was away is stale; the protocol re-sends what matters.
        queue.clear();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Accepts connections until the endpoint closes.
pub async fn accept(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(e) => {
                    shared
                        .metrics
                        .invalid_messages
                        .with_label_values(&["handshake"])
                        .inc();
                    tracing::debug!(error = %e, "handshake refused");
                    return;
                }
            };
            let Some(identity) = connection
                .peer_identity()
                .and_then(|any| {
                    any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                        .ok()
                })
                .and_then(|certs| {
                    ordinal_crypto::tls::peer_identity(certs.first()?, shared.schedule().signers())
                })
            else {
                connection.close(1u32.into(), b"no usable certificate");
                return;
            };
            match identity {
                PeerIdentity::Replica(id) if id == shared.id => {
                    connection.close(1u32.into(), b"that is my key");
                }
                PeerIdentity::Replica(id) => serve_replica(connection, id, shared).await,
                PeerIdentity::Client(key) => match shared.client_slots.clone().try_acquire_owned() {
                    Ok(_slot) => serve_client(connection, key, shared).await,
                    Err(_) => {
                        shared
                            .metrics
                            .invalid_messages
                            .with_label_values(&["too_many_clients"])
                            .inc();
                        connection.close(3u32.into(), b"too many client connections");
                    }
                },
            }
        });
    }
}

/// One connection per peer replica: a newer one (the peer restarted or redialled) replaces the
/// older, so a peer cannot multiply the buffers it makes us hold.
async fn serve_replica(connection: quinn::Connection, from: ReplicaId, shared: Arc<Shared>) {
    if let Some(older) = lock(&shared.replica_connections).insert(from, connection.clone()) {
        older.close(4u32.into(), b"replaced by a newer connection");
    }
    while let Ok(recv) = connection.accept_uni().await {
        tokio::spawn(read_replica_stream(
            recv,
            connection.clone(),
            from,
            shared.clone(),
        ));
    }
}

async fn read_replica_stream(
    mut recv: quinn::RecvStream,
    connection: quinn::Connection,
    from: ReplicaId,
    shared: Arc<Shared>,
) {
    let limit = shared.peer_frame_limit();
    let metrics = &shared.metrics;
    let delay = shared.peer_receive_delay;
    let delayed = (!delay.is_zero()).then(|| {
        // Bounded like the event queue it feeds.
        let (sender, receiver) = mpsc::channel(crate::service::CORE_QUEUE);
        tokio::spawn(deliver_late(receiver, shared.peer_events.clone()));
        sender
    });
    let mut reader = FrameReader::new(limit);
    let mut frames = Vec::new();
    let mut trust = GroupTrust::default();
    loop {
        // Every frame that has already arrived, so that their signatures are checked together.
        frames.clear();
        match reader.read_frames(&mut recv, PEER_READ_GROUP, &mut frames).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                // The stream cannot be resynchronised after a bad length or a cut frame.
                let reason = match e {
                    WireError::Oversized { .. } => "oversized_frame",
                    WireError::Truncated => "truncated_frame",
                    _ => return,
                };
                metrics.invalid_messages.with_label_values(&[reason]).inc();
                tracing::warn!(peer = from.0, error = %e, "closing the peer's connection");
                connection.close(2u32.into(), reason.as_bytes());
                return;
            }
        }
        let mut decoded = Vec::with_capacity(frames.len());
        // Each frame's bytes are freed once decoded.
        for bytes in frames.drain(..) {
            match Message::decode(&bytes) {
                Ok(message) => {
                    metrics
                        .messages_received
                        .with_label_values(&[message.kind()])
                        .inc();
                    decoded.push(message);
                }
                Err(_) => {
                    metrics.invalid_messages.with_label_values(&["malformed"]).inc();
                    shared.note_refused(from);
                }
            }
        }
        // Votes past their quorum, with their place among the group's messages (arrival order
        // is kept), and the messages to verify.
        let mut late = Vec::new();
        let mut messages = Vec::with_capacity(decoded.len());
        {
            let settled = lock(&shared.settled);
            for (place, message) in decoded.into_iter().enumerate() {
                match settled.sort(from, message) {
                    Sorted::Late(vote) => late.push((place, vote)),
                    Sorted::Verify(message) => messages.push(message),
                }
            }
        }
        metrics.late_votes_unchecked.inc_by(late.len() as u64);
        if messages.is_empty() && late.is_empty() {
            continue;
        }
        // One snapshot of the weight schedule for the group: a message the protocol thread has
        // not yet handed a newer schedule for is checked as it would have been on arrival.
        let committees = shared.schedule();
        let admitted: &dyn AdmittedRequests = match &shared.admitted {
            Some(admitted) => admitted,
            None => &NoneAdmitted,
        };
        let results = if messages.is_empty() {
            Vec::new()
        } else if trust.grouped() {
            metrics.peer_read_group.observe(messages.len() as f64);
            let group = Message::verify_group(messages, &*committees, &shared.config, admitted);
            trust.record(!group.signatures_held);
            group.results
        } else {
            let results: Vec<_> = messages
                .into_iter()
                .map(|message| message.verify_with(&*committees, &shared.config, admitted))
                .collect();
            trust.record(
                results
                    .iter()
                    .any(|result| matches!(result, Err(Invalid::Crypto(CryptoError::BadSignature { .. })))),
            );
            results
        };
        let mut late = late.into_iter().peekable();
        let mut results = results.into_iter();
        for place in 0.. {
            let event = match late.next_if(|(at, _)| *at == place) {
                Some((_, vote)) => Event::LateVote { from, vote },
                None => match results.next() {
                    None => break,
                    Some(Ok(message)) => Event::Peer { from, message },
                    Some(Err(e)) => {
                        metrics.invalid_messages.with_label_values(&[e.reason()]).inc();
                        tracing::debug!(peer = from.0, error = %e, "refused message");
                        if e.is_fault() {
                            shared.note_refused(from);
                        }
                        continue;
                    }
                },
            };
            let delivered = match &delayed {
                Some(delayed) => delayed.send((Instant::now() + delay, event)).await.is_ok(),
                None => shared.peer_events.send(event).await.is_ok(),
            };
            if !delivered {
                return;
            }
        }
    }
}

/// Holds each message until its due time, then hands it to the protocol thread. Every
/// message waits the same delay, so arrival order is kept and the waits do not add up.
async fn deliver_late(mut due: mpsc::Receiver<(Instant, Event)>, events: mpsc::Sender<Event>) {
    while let Some((at, event)) = due.recv().await {
        tokio::time::sleep_until(at.into()).await;
        if events.send(event).await.is_err() {
            return;
        }
    }
}

async fn serve_client(connection: quinn::Connection, key: PublicKey, shared: Arc<Shared>) {
    shared.metrics.client_connections.inc();
    loop {
        tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    tokio::spawn(client_stream(send, recv, key, shared.clone()));
                }
                Err(_) => break,
            },
            // Only replicas open unidirectional streams. A key this replica did not know as a
            // replica when the connection came in is one whose join it has not executed yet:
            // close, so that the joiner dials again and is recognised then.
            opened = connection.accept_uni() => {
                if opened.is_ok() {
                    connection.close(5u32.into(), b"not a replica here (yet); dial again later");
                }
                break;
            }
        }
    }
    shared.metrics.client_connections.dec();
}

async fn client_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    key: PublicKey,
    shared: Arc<Shared>,
) {
    let (tx, mut rx) = wire::frame_queue(CLIENT_QUEUE_BYTES);
    let client_sent_bytes = shared.metrics.client_sent_bytes.clone();
    let writer = tokio::spawn(async move {
        let mut buffer = Vec::with_capacity(WRITE_GATHER);
        while let Some(frame) = rx.recv().await {
            match rx
                .write_gathered(frame, &mut send, &mut buffer, WRITE_GATHER)
                .await
            {
                Ok(bytes) => client_sent_bytes.inc_by(bytes as u64),
                Err(_) => return,
            }
        }
    });
    let token = shared.clients.register(key, tx.clone());
    let mut reader = FrameReader::new(shared.client_frame_limit());
    let mut frames = Vec::new();
    let mut trust = GroupTrust::default();
    'stream: loop {
        frames.clear();
        match reader
            .read_frames(&mut recv, CLIENT_READ_GROUP, &mut frames)
            .await
        {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let reason = match e {
                    WireError::Oversized { .. } => "oversized_frame",
                    WireError::Malformed(_) => "malformed",
                    _ => "stream",
                };
                shared.metrics.invalid_messages.with_label_values(&[reason]).inc();
                tracing::debug!(error = %e, "client stream closed");
                break;
            }
        }
        // A malformed frame ends the stream, after the frames before it are answered.
        let mut requests = Vec::with_capacity(frames.len());
        let mut malformed = false;
        for frame in &frames {
            match postcard::from_bytes::<ClientRequest>(frame) {
                Ok(request) => requests.push(request),
                Err(e) => {
                    shared
                        .metrics
                        .invalid_messages
                        .with_label_values(&["malformed"])
                        .inc();
                    tracing::debug!(error = %e, "client stream closed");
                    malformed = true;
                    break;
                }
            }
        }
        let submitted: Vec<&Request> = requests
            .iter()
            .filter_map(|request| match request {
                ClientRequest::Submit { request, .. } => Some(request),
                _ => None,
            })
            .collect();
        let verdicts = admit_group(&submitted, &key, &shared, trust.grouped());
        trust.record(verdicts.contains(&Err(Invalid::BadClientSignature.reason())));
        let mut verdicts = verdicts.into_iter();
        for request in requests {
            if matches!(request, ClientRequest::Submit { .. }) {
                shared.metrics.client_requests.inc();
            }
            let reply = match request {
                ClientRequest::Submit { request, receipt } => {
                    match verdicts.next().unwrap_or(Err("stream")) {
                        Ok(()) => {
                            let event = Event::Request {
                                request,
                                arrived: Instant::now(),
                                receipt,
                            };
                            if shared.client_events.send(event).await.is_err() {
                                break 'stream;
                            }
                            None
                        }
                        Err(reason) => {
                            shared.metrics.invalid_messages.with_label_values(&[reason]).inc();
                            Some(ClientReply::Rejected {
                                nonce: request.nonce,
                                kind: RejectKind::Invalid,
                                reason: reason.to_string(),
                            })
                        }
                    }
                }
                ClientRequest::Read { id, from, max } => {
                    let store = shared.store.clone();
                    let max = (max as usize).clamp(1, READ_MAX_BATCHES);
                    let read =
                        tokio::task::spawn_blocking(move || store.batches(from.max(1), max, READ_MAX_BYTES))
                            .await;
                    match read {
                        Ok(Ok(batches)) => Some(ClientReply::Batches {
                            id,
                            batches,
                            committed_seq: lock(&shared.status).committed_seq,
                        }),
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "reading the store for a client");
                            None
                        }
                        Err(_) => None,
                    }
                }
                ClientRequest::Status { id } => Some(ClientReply::Status {
                    id,
                    status: lock(&shared.status).clone(),
                }),
            };
            if let Some(reply) = reply {
                match wire::encode_frame(&reply) {
                    Ok(frame) => {
                        // Waits for room: a client that does not read its answers stops being read.
                        if !tx.send(Arc::new(frame)).await {
                            break 'stream;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "encoding a reply"),
                }
            }
        }
        if malformed {
            break;
        }
    }
    shared.clients.unregister(&key, token);
    drop(tx);
    let _ = writer.await;
}

/// Admission of the submissions read together from one client stream: a client may only
/// submit its own requests, of the allowed size, signed if the cluster requires it. Their
/// signatures are checked together (in a busy replica several have arrived by the time one is
/// read), unless `grouped` is false (see [`GroupTrust`]), and in signed mode each admitted one
/// is remembered for the proposal that will carry it. One verdict per request, in order.
fn admit_group(
    requests: &[&Request],
    key: &PublicKey,
    shared: &Shared,
    grouped: bool,
) -> Vec<Result<(), &'static str>> {
    let mut verdicts: Vec<Result<(), &'static str>> = vec![Err("client_mismatch"); requests.len()];
    let own: Vec<usize> = (0..requests.len())
        .filter(|&i| requests[i].client == *key)
        .collect();
    let to_admit: Vec<&Request> = own.iter().map(|&i| requests[i]).collect();
    let admitted = if grouped {
        Request::admit_all(&to_admit, &shared.config, &shared.cluster_id)
    } else {
        to_admit
            .iter()
            .map(|request| request.admit(&shared.config, &shared.cluster_id))
            .collect()
    };
    for (&i, admitted) in own.iter().zip(admitted) {
        verdicts[i] = match admitted {
            Ok(checked) => {
                if let Some(memory) = &shared.admitted {
                    memory.remember(checked);
                }
                Ok(())
            }
            Err(e) => Err(e.reason()),
        };
    }
    verdicts
}
