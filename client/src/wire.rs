//! The transport both ends share: QUIC endpoints built from the cluster's ed25519 keys,
//! length-prefixed frames on long-lived streams, and the messages clients exchange with
//! replicas.
//!
//! A connection's direction and its peer's certificate decide what it may carry:
//! - replica → replica: the dialling replica opens one unidirectional stream and sends
//!   consensus [`Message`](ordinal_consensus::Message) frames on it for the connection's life;
//! - client → replica: the client opens one bidirectional stream, sends [`ClientRequest`]
//!   frames and reads [`ClientReply`] frames. Anyone with an ed25519 certificate may do this
//!   (see the README: an unknown key is a client, never a replica).
//!
//! Every frame is a 4-byte little-endian length and a postcard payload. The length is checked
//! against the reader's limit before anything is allocated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ordinal_consensus::messages::CommitVote;
use ordinal_consensus::{CommittedBatch, Receipt, Request};
use ordinal_crypto::{Certificate, Committee, Digest, KeyPair, MerkleProof, ReplicaId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// The most bytes a client request frame may hold beyond the payload limit (keys, nonce,
/// signature, framing).
pub const REQUEST_OVERHEAD: usize = 1024;

/// The largest frame a client accepts from a replica. Replies to reads are chunked below it.
pub const MAX_REPLY_FRAME: usize = 64 << 20;

/// The most a frame reader allocates before the bytes arrive.
const FIRST_ALLOCATION: usize = 1 << 20;

/// How a frame or a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame announced more bytes than the reader allows.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    Oversized {
        /// Announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes do not decode as the expected message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// QUIC stream or connection error.
    #[error("stream: {0}")]
    Stream(String),
    /// Building the TLS or QUIC configuration failed.
    #[error("transport configuration: {0}")]
    Config(String),
}

impl From<quinn::WriteError> for WireError {
    fn from(e: quinn::WriteError) -> Self {
        WireError::Stream(e.to_string())
    }
}

impl From<quinn::ConnectionError> for WireError {
    fn from(e: quinn::ConnectionError) -> Self {
        WireError::Stream(e.to_string())
    }
}

/// Encodes `message` as one frame (length prefix included).
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let mut out = postcard::to_extend(message, vec![0u8; 4])?;
    let len = u32::try_from(out.len() - 4).map_err(|_| WireError::Oversized {
        len: out.len() - 4,
        limit: u32::MAX as usize,
    })?;
    out[..4].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// Reads one frame's payload. `Ok(None)` means the stream finished cleanly between frames.
pub async fn read_frame(recv: &mut quinn::RecvStream, limit: usize) -> Result<Option<Vec<u8>>, WireError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(WireError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(WireError::Stream(e.to_string())),
    }
    let len = u32::from_le_bytes(prefix) as usize;
    if len > limit {
        return Err(WireError::Oversized { len, limit });
    }
    // Memory follows the bytes that actually arrive, not the length a peer announces: a
    // lying prefix costs at most one chunk beyond what QUIC flow control lets through.
    let mut payload = Vec::with_capacity(len.min(FIRST_ALLOCATION));
    while payload.len() < len {
        match recv.read_chunk(len - payload.len(), true).await {
            Ok(Some(chunk)) => payload.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(WireError::Truncated),
            Err(e) => return Err(WireError::Stream(e.to_string())),
        }
    }
    Ok(Some(payload))
}

/// Bytes received on a stream and not yet handed out as frames: complete frames are cut off
/// the front, and what remains is at most one incomplete frame plus the last chunk read.
#[derive(Debug)]
pub struct FrameBuffer {
    bytes: Vec<u8>,
    /// Where the unconsumed bytes start.
    start: usize,
    limit: usize,
}

impl FrameBuffer {
    /// An empty buffer for frames of at most `limit` payload bytes.
    pub fn new(limit: usize) -> Self {
        FrameBuffer {
            bytes: Vec::new(),
            start: 0,
            limit,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, received: &[u8]) {
        // Consumed bytes are dropped once they are at least half the buffer, so each byte is
        // moved at most a constant number of times.
        if self.start > 0 && self.start * 2 >= self.bytes.len() {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(received);
    }

    /// Bytes held and not yet handed out.
    pub fn pending(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// The next complete frame's payload, `None` if the buffer holds no complete frame, or an
    /// error as soon as a length prefix exceeds the limit (before its bytes are awaited).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let pending = &self.bytes[self.start..];
        let Some(prefix) = pending.get(..4) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(prefix);
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > self.limit {
            return Err(WireError::Oversized {
                len,
                limit: self.limit,
            });
        }
        let Some(payload) = pending.get(4..4 + len) else {
            return Ok(None);
        };
        let frame = payload.to_vec();
        self.start += 4 + len;
        if self.start == self.bytes.len() {
            self.bytes.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }
}

/// The most bytes one read asks QUIC for.
const READ_CHUNK: usize = 64 * 1024;

/// Reads frames from a long-lived stream in groups: every complete frame that has already
/// arrived, so that the caller can check their signatures together. It waits only for the
/// first frame of a group; memory stays within one frame limit plus a few chunks.
#[derive(Debug)]
pub struct FrameReader {
    buffer: FrameBuffer,
    /// A read error met while taking what had already arrived, kept for the next call: quinn
    /// reports a reset once, so dropping it would make the reset look like a clean end.
    deferred: Option<WireError>,
}

impl FrameReader {
    /// A reader of frames of at most `limit` payload bytes.
    pub fn new(limit: usize) -> Self {
        FrameReader {
            buffer: FrameBuffer::new(limit),
            deferred: None,
        }
    }

    /// Appends to `frames` at least one and at most `max_frames` frame payloads: all that have
    /// arrived, waiting only while none has. `Ok(false)` means the stream finished cleanly
    /// between frames and nothing was appended.
    pub async fn read_frames(
        &mut self,
        recv: &mut quinn::RecvStream,
        max_frames: usize,
        frames: &mut Vec<Vec<u8>>,
    ) -> Result<bool, WireError> {
        use futures::FutureExt as _;
        let max_frames = max_frames.max(1);
        let first = frames.len();
        loop {
            while frames.len() - first < max_frames {
                match self.buffer.next_frame() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    // The frames before a bad prefix are handed out first; the buffer still
                    // holds the prefix, so the next call meets the error with nothing pending.
                    Err(_) if frames.len() > first => return Ok(true),
                    Err(e) => return Err(e),
                }
            }
            let have = frames.len() - first;
            if have == max_frames {
                return Ok(true);
            }
            if have > 0 {
                // Take what has already arrived, without waiting (`read_chunk` is cancel-safe,
                // so a read that would wait consumes nothing).
                if self.buffer.pending() >= 4 * READ_CHUNK {
                    return Ok(true);
                }
                match recv.read_chunk(READ_CHUNK, true).now_or_never() {
                    Some(Ok(Some(chunk))) => {
                        self.buffer.push(&chunk.bytes);
                        continue;
                    }
                    Some(Err(e)) => {
                        self.deferred = Some(WireError::Stream(e.to_string()));
                        return Ok(true);
                    }
                    // Nothing more yet, or the end, which the next read meets again.
                    Some(Ok(None)) | None => return Ok(true),
                }
            }
            if let Some(e) = self.deferred.take() {
                return Err(e);
            }
            match recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.buffer.push(&chunk.bytes),
                Ok(None) if self.buffer.pending() == 0 => return Ok(false),
                Ok(None) => return Err(WireError::Truncated),
                Err(e) => return Err(WireError::Stream(e.to_string())),
            }
        }
    }
}

/// Reads and decodes one frame.
pub async fn read_message<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    limit: usize,
) -> Result<Option<T>, WireError> {
    match read_frame(recv, limit).await? {
        Some(bytes) => Ok(Some(postcard::from_bytes(&bytes)?)),
        None => Ok(None),
    }
}

/// A frame ready to write, shared by every queue it is put on.
pub type Frame = Arc<Vec<u8>>;

/// A frame taken from a [`FrameReceiver`]; its bytes count against the queue's budget until it
/// is dropped.
pub struct QueuedFrame {
    frame: Frame,
    _budget: OwnedSemaphorePermit,
}

impl std::ops::Deref for QueuedFrame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.frame
    }
}

/// The sending side of a queue of frames bounded by bytes (not only by count): a slow or
/// absent reader can hold at most the budget, however large its frames are.
#[derive(Clone)]
pub struct FrameSender {
    frames: mpsc::UnboundedSender<QueuedFrame>,
    budget: Arc<Semaphore>,
    budget_kib: u32,
}

/// The receiving side of a byte-bounded frame queue.
pub struct FrameReceiver {
    frames: mpsc::UnboundedReceiver<QueuedFrame>,
}

/// A frame queue holding at most `max_bytes` (rounded to KiB; a single larger frame is let
/// through alone).
pub fn frame_queue(max_bytes: usize) -> (FrameSender, FrameReceiver) {
    let budget_kib = u32::try_from(max_bytes.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
    let (tx, rx) = mpsc::unbounded_channel();
    (
        FrameSender {
            frames: tx,
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
        },
        FrameReceiver { frames: rx },
    )
}

impl FrameSender {
    fn cost(&self, frame: &Frame) -> u32 {
        u32::try_from(frame.len().div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_kib)
    }

    fn enqueue(&self, frame: Frame, budget: OwnedSemaphorePermit) -> bool {
        self.frames
            .send(QueuedFrame {
                frame,
                _budget: budget,
            })
            .is_ok()
    }

    /// Queues `frame` if the budget allows; `false` if it is full or the receiver is gone.
    pub fn try_send(&self, frame: Frame) -> bool {
        match self.budget.clone().try_acquire_many_owned(self.cost(&frame)) {
            Ok(permit) => self.enqueue(frame, permit),
            Err(_) => false,
        }
    }

    /// Queues `frame`, waiting for room; `false` if the receiver is gone.
    pub async fn send(&self, frame: Frame) -> bool {
        match self.budget.clone().acquire_many_owned(self.cost(&frame)).await {
            Ok(permit) => self.enqueue(frame, permit),
            Err(_) => false,
        }
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }
}

impl FrameReceiver {
    /// The next frame; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<QueuedFrame> {
        self.frames.recv().await
    }

    /// Whether every sender is gone.
    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }

    /// Drops every queued frame (stale after a reconnect: the protocol re-sends what matters).
    pub fn clear(&mut self) {
        while self.frames.try_recv().is_ok() {}
    }

    /// Writes `first` and whatever else is queued, up to `gather` bytes, in one stream write:
    /// many small frames then cost one write call, not one each. Returns the bytes written.
    pub async fn write_gathered(
        &mut self,
        first: QueuedFrame,
        send: &mut quinn::SendStream,
        buffer: &mut Vec<u8>,
        gather: usize,
    ) -> Result<usize, WireError> {
        buffer.clear();
        buffer.extend_from_slice(&first);
        drop(first);
        while buffer.len() < gather {
            match self.frames.try_recv() {
                Ok(more) => buffer.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        send.write_all(buffer).await?;
        Ok(buffer.len())
    }
}

/// What a client asks a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Order this transaction. Its `client` must be the connection's key in unsigned mode; in
    /// signed mode its signature is checked. Answered by [`ClientReply::Receipts`] when
    /// `receipt` is set, and by [`ClientReply::Rejected`] if it is refused.
    ///
    /// A client sends each request to every replica but asks one for the receipt: one verified
    /// receipt is proof enough, and the other replicas' receipts cost them a Merkle proof and a
    /// frame each, and the client a decode, for nothing. A retry asks every replica.
    Submit {
        /// The transaction.
        request: Request,
        /// Whether this replica should send the receipt once the request is ordered (or at
        /// once, if it already is).
        receipt: bool,
    },
    /// Send committed batches from `from` on (at most `max` of them, fewer if they are large).
    /// Answered by [`ClientReply::Batches`].
    Read {
        /// Echoed in the reply.
        id: u64,
        /// First sequence number wanted.
        from: u64,
        /// Most batches wanted.
        max: u32,
    },
    /// Answered by [`ClientReply::Status`].
    Status {
        /// Echoed in the reply.
        id: u64,
    },
}

/// Why a replica refused a submission, which decides what the client does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectKind {
    /// The request itself is unacceptable (malformed, too large, bad signature, another
    /// client's key): retrying the same bytes cannot help.
    Invalid,
    /// The replica is full right now; the client's retry may succeed.
    Overloaded,
    /// The nonce fell out of the client's de-duplication window: the request may or may not
    /// have been ordered, and the replica can no longer tell.
    Stale,
}

/// What a replica answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply {
    /// The request with this nonce is ordered: the receipt proves where.
    Committed {
        /// The request's nonce.
        nonce: u64,
        /// The proof.
        receipt: Receipt,
    },
    /// The request with this nonce was refused (malformed, stale nonce, replica overloaded).
    Rejected {
        /// The request's nonce.
        nonce: u64,
        /// What kind of refusal.
        kind: RejectKind,
        /// Why, for people.
        reason: String,
    },
    /// Committed batches in order, starting at the requested sequence number.
    Batches {
        /// The request's id.
        id: u64,
        /// The batches (possibly none).
        batches: Vec<CommittedBatch>,
        /// The replica's highest committed sequence number.
        committed_seq: u64,
    },
    /// The replica's progress.
    Status {
        /// The request's id.
        id: u64,
        /// Its status.
        status: ReplicaStatus,
    },
    /// The client's requests ordered in one batch: the batch's commit certificate once, and
    /// each request's Merkle path. What replicas send instead of one [`ClientReply::Committed`]
    /// per request: a client with many requests in flight has tens in each batch, and the
    /// certificate, the frame and its decoding were paid for each of them. The client checks
    /// each path against the leaf it computed itself, so the leaves are not sent.
    Receipts {
        /// The batch's sequence number.
        seq: u64,
        /// The batch's commit certificate.
        certificate: Certificate<CommitVote>,
        /// One per request, in batch order.
        entries: Vec<ReceiptEntry>,
    },
}

/// One request's place in a [`ClientReply::Receipts`] batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptEntry {
    /// The request's nonce.
    pub nonce: u64,
    /// The Merkle path from the request's leaf to the certified batch digest; its index is the
    /// request's position in the batch.
    pub proof: MerkleProof,
}

impl ReceiptEntry {
    /// The receipt this entry proves for the request whose leaf digest is `request_digest`
    /// ([`Request::digest`]); [`Receipt::verify_inclusion_of`] then checks it.
    pub fn receipt(
        &self,
        seq: u64,
        certificate: &Certificate<CommitVote>,
        request_digest: Digest,
    ) -> Receipt {
        Receipt {
            seq,
            index: self.proof.index,
            request_digest,
            proof: self.proof.clone(),
            certificate: certificate.clone(),
        }
    }
}

/// A replica's progress as it reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Its id.
    pub id: u16,
    /// Current view.
    pub view: u64,
    /// The view's leader.
    pub leader: u16,
    /// Whether a view change is under way.
    pub changing_view: bool,
    /// Highest committed sequence number.
    pub committed_seq: u64,
    /// Latest stable checkpoint.
    pub stable_seq: u64,
    /// The current epoch's weights, by replica id.
    pub weights: Vec<u64>,
    /// What it measured about each peer (itself excluded).
    pub peers: Vec<PeerHealth>,
}

/// One peer as a replica's quorum manager sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHealth {
    /// The peer.
    pub id: u16,
    /// Its smoothed reliability score, in thousandths.
    pub reliability_permille: u16,
    /// Its smoothed vote latency in microseconds, once measured.
    pub vote_latency_micros: Option<u64>,
    /// Whether the failure detector suspects it.
    pub suspected: bool,
}

impl PeerHealth {
    /// The wire form of a core report.
    pub fn from_report(report: &ordinal_consensus::PeerReport) -> Self {
        PeerHealth {
            id: report.peer.0,
            reliability_permille: (report.reliability.clamp(0.0, 1.0) * 1000.0).round() as u16,
            vote_latency_micros: report
                .vote_latency
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            suspected: report.suspected,
        }
    }
}

impl ReplicaStatus {
    /// What replica `id` reports, from its protocol's progress and its committee.
    pub fn new(id: ReplicaId, status: &ordinal_consensus::Status, committee: &Committee) -> Self {
        ReplicaStatus {
            id: id.0,
            view: status.view,
            leader: status.leader.0,
            changing_view: status.changing_view,
            committed_seq: status.committed_seq,
            stable_seq: status.stable_seq,
            weights: committee.weights(),
            peers: Vec::new(),
        }
    }
}

/// What the replicas that answered say about replica `id`: the median of their reliability
/// scores for it (a lone liar cannot move it far), and how many of them suspect it.
pub fn peer_consensus(id: u16, statuses: &[&ReplicaStatus]) -> (Option<f64>, usize) {
    let mut scores: Vec<u16> = Vec::new();
    let mut suspected = 0;
    for status in statuses.iter().filter(|s| s.id != id) {
        if let Some(health) = status.peers.iter().find(|p| p.id == id) {
            scores.push(health.reliability_permille);
            suspected += usize::from(health.suspected);
        }
    }
    scores.sort_unstable();
    let median = (!scores.is_empty()).then(|| f64::from(scores[(scores.len() - 1) / 2]) / 1000.0);
    (median, suspected)
}

/// Transport settings for both ends: idle timeout and keep-alive so a dead peer is noticed,
/// and enough stream credit for pipelined frames.
fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_millis(500)));
    // The first handshake packet to a peer that is not up yet is lost; quinn re-sends it after
    // three times the initial RTT estimate. The default (333 ms) made a cluster whose replicas
    // start a few milliseconds apart wait a second for its first quorum.
    transport.initial_rtt(Duration::from_millis(100));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(5)) {
        transport.max_idle_timeout(Some(idle));
    }
    transport.stream_receive_window(quinn::VarInt::from_u32(8 << 20));
    transport.receive_window(quinn::VarInt::from_u32(32 << 20));
    transport.send_window(32 << 20);
    // A replica sends on one unidirectional stream, a client on one bidirectional stream; a
    // little headroom covers a stream being replaced, and nobody can open hundreds.
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(4));
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(16));
    transport
}

/// A QUIC client configuration presenting `key` and pinning each replica to its listed key.
pub fn quic_client_config(key: &KeyPair, committee: &Committee) -> Result<quinn::ClientConfig, WireError> {
    quic_pinned_client_config(key, ordinal_crypto::tls::PinnedKeys::of(committee))
}

/// Like [`quic_client_config`], pinning replicas to a key table the caller updates (a replica
/// dials peers that joined through the log).
pub fn quic_pinned_client_config(
    key: &KeyPair,
    keys: ordinal_crypto::tls::PinnedKeys,
) -> Result<quinn::ClientConfig, WireError> {
    let tls =
        ordinal_crypto::tls::pinned_client_config(key, keys).map_err(|e| WireError::Config(e.to_string()))?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| WireError::Config(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// A QUIC server configuration for replica `id`: presents its certificate, requires one from
/// every peer.
pub fn quic_server_config(key: &KeyPair, id: ReplicaId) -> Result<quinn::ServerConfig, WireError> {
    let tls = ordinal_crypto::tls::server_config(key, id).map_err(|e| WireError::Config(e.to_string()))?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| WireError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// A client-only endpoint on an ephemeral port of the right address family.
pub fn client_endpoint(
    config: quinn::ClientConfig,
    towards: SocketAddr,
) -> Result<quinn::Endpoint, WireError> {
    let bind: SocketAddr = if towards.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| WireError::Config(e.to_string()))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Connects to replica `id` at `address` (resolved now, so a restarted replica behind a name
/// is found again), requiring it to present the key the committee lists for `id`. Gives up
/// after three seconds so the caller's backoff loop stays in charge.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    id: ReplicaId,
    address: &str,
) -> Result<quinn::Connection, WireError> {
    let target = tokio::net::lookup_host(address)
        .await
        .map_err(|e| WireError::Stream(format!("resolving {address}: {e}")))?
        .next()
        .ok_or_else(|| WireError::Stream(format!("{address} resolves to nothing")))?;
    let connecting = endpoint
        .connect(target, &ordinal_crypto::tls::server_name(id))
        .map_err(|e| WireError::Stream(e.to_string()))?;
    tokio::time::timeout(Duration::from_secs(3), connecting)
        .await
        .map_err(|_| WireError::Stream(format!("handshake with {address} timed out")))?
        .map_err(WireError::from)
}

/// The public key on the other end of an established connection, if it presented one.
pub fn connection_key(connection: &quinn::Connection) -> Option<ordinal_crypto::PublicKey> {
    let identity = connection.peer_identity()?;
    let certificates = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    ordinal_crypto::tls::certificate_key(certificates.first()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn frame_buffers_cut_frames_however_the_bytes_arrive() {
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; usize::from(i) * 7]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let stream = framed(&refs);
        for piece in [1, 3, 4, 5, 64, stream.len()] {
            let mut buffer = FrameBuffer::new(1024);
            let mut out = Vec::new();
            for chunk in stream.chunks(piece) {
                buffer.push(chunk);
                while let Some(frame) = buffer.next_frame().unwrap() {
                    out.push(frame);
                }
                assert!(
                    buffer.pending() < 4 + 20 * 7 + piece,
                    "holds one frame and a chunk at most"
                );
            }
            assert_eq!(out, payloads, "chunks of {piece} bytes");
            assert_eq!(buffer.pending(), 0);
        }
    }

    #[test]
    fn frame_buffers_refuse_an_oversized_prefix_before_its_bytes() {
        let mut buffer = FrameBuffer::new(100);
        buffer.push(&framed(&[b"ok"]));
        buffer.push(&101u32.to_le_bytes());
        assert_eq!(buffer.next_frame().unwrap(), Some(b"ok".to_vec()));
        assert!(matches!(
            buffer.next_frame(),
            Err(WireError::Oversized { len: 101, limit: 100 })
        ));
        let mut partial = FrameBuffer::new(100);
        partial.push(&[5, 0]);
        assert_eq!(partial.next_frame().unwrap(), None, "half a prefix");
        partial.push(&[0, 0, 1, 2]);
        assert_eq!(partial.next_frame().unwrap(), None, "half a payload");
        partial.push(&[3, 4, 5]);
        assert_eq!(partial.next_frame().unwrap(), Some(vec![1, 2, 3, 4, 5]));
    }

    #[tokio::test]
    async fn frame_queues_are_bounded_by_bytes() {
        let (tx, mut rx) = frame_queue(8 * 1024);
        let big = Arc::new(vec![0u8; 3 * 1024]);
        assert!(tx.try_send(big.clone()));
        assert!(tx.try_send(big.clone()));
        assert!(!tx.try_send(big.clone()), "a third 3 KiB frame exceeds 8 KiB");
        let first = rx.recv().await.unwrap();
        assert!(
            !tx.try_send(big.clone()),
            "budget returns only when the frame is dropped"
        );
        drop(first);
        assert!(tx.try_send(big.clone()));
        // A frame larger than the whole budget still goes through, alone.
        rx.clear();
        assert!(tx.try_send(Arc::new(vec![0u8; 64 * 1024])));
        assert!(!tx.try_send(Arc::new(vec![0u8; 10])));
    }

    #[test]
    fn batched_receipts_prove_each_request_against_one_certificate() {
        use ordinal_consensus::{Batch, Request};
        use ordinal_crypto::Signed;

        let keys: Vec<KeyPair> = (0..4u8).map(|i| KeyPair::from_seed([i + 1; 32])).collect();
        let publics: Vec<_> = keys.iter().map(KeyPair::public).collect();
        let committee = Committee::equal_weights(Digest::of(b"receipts"), &publics).unwrap();
        let client = KeyPair::from_seed([42; 32]).public();
        let requests: Vec<Request> = (0..5u64)
            .map(|nonce| Request::unsigned(client, nonce, vec![nonce as u8; 16]))
            .collect();
        let batch = Batch::new(requests.clone());
        let vote = CommitVote {
            view: 0,
            seq: 9,
            digest: batch.digest(),
        };
        let votes: Vec<_> = (0..3u16)
            .map(|i| {
                Signed::sign(vote, ReplicaId(i), &keys[i as usize], &committee)
                    .verify(&committee)
                    .unwrap()
            })
            .collect();
        let certificate = Certificate::from_votes(vote, committee.epoch(), &votes);
        // Requests 1, 3 and 4 were this client's asks.
        let reply = ClientReply::Receipts {
            seq: 9,
            certificate: certificate.clone(),
            entries: [1usize, 3, 4]
                .iter()
                .map(|&i| ReceiptEntry {
                    nonce: i as u64,
                    proof: batch.proof(i).unwrap(),
                })
                .collect(),
        };
        let frame = encode_frame(&reply).unwrap();
        let decoded: ClientReply = postcard::from_bytes(&frame[4..]).unwrap();
        assert_eq!(decoded, reply);
        let ClientReply::Receipts {
            seq,
            certificate,
            entries,
        } = decoded
        else {
            unreachable!()
        };
        for entry in &entries {
            let request = &requests[entry.nonce as usize];
            let receipt = entry.receipt(seq, &certificate, request.digest());
            assert_eq!(receipt.index as u64, entry.nonce);
            receipt.verify(request, &committee).unwrap();
            // The path proves that request's leaf and no other's.
            let other = &requests[(entry.nonce as usize + 1) % requests.len()];
            assert!(entry
                .receipt(seq, &certificate, other.digest())
                .verify_inclusion_of(&other.digest())
                .is_err());
        }
    }

    #[test]
    fn frames_carry_their_length() {
        let frame = encode_frame(&ClientRequest::Read {
            id: 1,
            from: 7,
            max: 3,
        })
        .unwrap();
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let back: ClientRequest = postcard::from_bytes(&frame[4..]).unwrap();
        assert_eq!(
            back,
            ClientRequest::Read {
                id: 1,
                from: 7,
                max: 3
            }
        );
    }
}
