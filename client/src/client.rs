//! The network client: one QUIC connection per replica, submissions sent to every replica (one
//! of which is asked for the receipt, all of them after a retransmission timeout) and resolved
//! by the first receipt that verifies.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ordinal_consensus::batch::BatchProofError;
use ordinal_consensus::epoch::Committees;
use ordinal_consensus::messages::CommitVote;
use ordinal_consensus::{ClusterConfig, CommittedBatch, Receipt, Request, RequestAuth};
use ordinal_crypto::{Certificate, Committee, Digest, KeyPair, ReplicaId, Threshold};
use tokio::sync::{oneshot, Semaphore};

use crate::retransmit::RetransmitTimer;
use crate::wire::{
    self, ClientReply, ClientRequest, FrameReceiver, FrameSender, RejectKind, ReplicaStatus, WireError,
};

/// Bytes waiting for one replica's connection; beyond this, new frames are dropped and the
/// submission's retry timer covers them.
const LINK_QUEUE_BYTES: usize = 32 << 20;
/// Most bytes gathered into one stream write.
const WRITE_GATHER: usize = 256 * 1024;
/// Verified certificates remembered so receipts of one batch cost one verification.
const VERIFIED_CACHE: usize = 4096;
/// How long a replica that left a receipt unanswered is not asked for receipts.
const RESPONDER_PENALTY: Duration = Duration::from_secs(10);

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cluster file is unreadable or invalid.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// The transport could not be set up.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// No verified answer arrived in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Replicas holding more than the faulty weight refused the request as invalid.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Replicas holding more than the faulty weight no longer remember this nonce: the request
    /// may or may not have been ordered. Look for it in the log before submitting it again.
    #[error("outcome unknown for nonce {nonce}: {reason}")]
    OutcomeUnknown {
        /// The request's nonce.
        nonce: u64,
        /// What the replicas said.
        reason: String,
    },
    /// A replica answered with something that does not verify.
    #[error("invalid answer from replica {replica}: {reason}")]
    Invalid {
        /// Who sent it.
        replica: u16,
        /// What was wrong.
        reason: String,
    },
    /// The payload exceeds what the cluster accepts.
    #[error("payload of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Payload size.
        len: usize,
        /// Limit.
        limit: usize,
    },
}

/// Reads a `client.toml` and checks it describes a valid committee.
pub fn load_cluster(path: &Path) -> Result<ClusterConfig, ClientError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
    let cluster: ClusterConfig =
        toml::from_str(&text).map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
    cluster
        .committee()
        .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
    Ok(cluster)
}

/// Client behaviour.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long [`Client::submit`] waits for a verified receipt before giving up.
    pub timeout: Duration,
    /// How long before an unanswered submission is sent again (same nonce: safe, because the
    /// cluster orders each (client, nonce) at most once).
    pub retry_interval: Duration,
    /// How long a read or status call waits for one replica.
    pub call_timeout: Duration,
    /// Largest payload this client will send (the cluster's `max_request_bytes`).
    pub max_payload: usize,
    /// The client's identity; a fresh key when `None`.
    pub key: Option<Arc<KeyPair>>,
    /// Most submissions in flight at once; further calls wait. Kept well below the cluster's
    /// `client_nonce_window` (1024 by default) so that pending nonces stay close together.
    ///
    /// This bounds their count, not their spread: a request that waits while more than the
    /// window's worth of newer ones are ordered falls out of the replicas' de-duplication
    /// window and is answered "outcome unknown". Bounding the spread instead (a new nonce only
    /// within this many of the oldest waiting one) was measured and dropped: one slow request
    /// then held a whole client, and the benchmark harness at 16,875 tx/s offered committed
    /// 11,146 tx/s with errors instead of 15,702 without.
    pub max_in_flight: usize,
    /// Ask one replica (in turn) for each receipt instead of all of them, and all of them only
    /// after a retransmission timeout that follows the observed latency. One verified receipt
    /// is proof enough, and this cuts the replicas' receipts and the client's decoding by n:
    /// on a 2-core machine with the whole cluster on it, PBFT committed 17,400-19,000 tx/s
    /// with it against 16,100-16,200 without (`ordinal-benches run --rate 20000
    /// [--one-receipt]`, two runs each). Off by default: each receipt then depends on one
    /// replica, so a slow or stalled one (a compaction, a long link) delays the receipts it was
    /// asked for until the retransmission timeout (at least 200 ms), where with every replica
    /// answering the fastest one counts; and a request asked again after that timeout can
    /// find its nonce already outside the replicas' de-duplication window at saturation
    /// (1 in 300,000 came back "outcome unknown" in each of those runs, none without it). With the primary killed under load, receipts used to
    /// wait about 7 s: a view change left every replica suspected and the dead primary was
    /// asked in turn until its connection timed out (fixed in the choice of replica; since then
    /// the slowest receipt of such a run is 1.07-1.14 s, as without this option).
    pub one_receipt: bool,
    /// Sign every request even where the cluster authenticates clients by their connection
    /// only (`request_auth = "unsigned"`): quorum-manager entries, such as the operator's
    /// membership changes, count only when signed.
    pub always_sign: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(30),
            retry_interval: Duration::from_secs(2),
            call_timeout: Duration::from_secs(2),
            max_payload: ordinal_consensus::ProtocolConfig::default().max_request_bytes,
            key: None,
            max_in_flight: 512,
            one_receipt: false,
            always_sign: false,
        }
    }
}

/// One replica's row in [`Client::status`].
#[derive(Clone, Debug)]
pub struct ReplicaReport {
    /// Replica id.
    pub id: u16,
    /// Its configured address.
    pub address: String,
    /// What it reported, or `None` if it did not answer.
    pub status: Option<ReplicaStatus>,
}

struct PendingSubmit {
    /// The request's digest: the Merkle leaf its receipt must prove.
    leaf: Digest,
    done: Option<oneshot::Sender<Result<Receipt, ClientError>>>,
    /// Replicas that refused it since it was last sent, by kind of refusal.
    refused: HashMap<u16, RejectKind>,
}

struct Link {
    id: ReplicaId,
    address: String,
    frames: FrameSender,
    connected: Arc<AtomicBool>,
    /// Until when (milliseconds since [`Inner::started`]) this replica is not asked for
    /// receipts, because it left one unanswered.
    suspected_until: AtomicU64,
}

struct Inner {
    committee: Committee,
    /// The weight schedule learnt from the certified log: receipts and batches are verified
    /// with the weights in force at their sequence number.
    schedule: Mutex<Committees>,
    /// Held by the task reading the log to learn newer weights.
    schedule_reader: tokio::sync::Mutex<()>,
    /// Set while a task reads the log ahead of the receipts ([`Inner::read_ahead`]).
    reading_ahead: AtomicBool,
    /// How much of the known range this client keeps ahead of its receipts, in percent: drawn
    /// at random so that clients of one cluster do not all read the same batches at once. At
    /// most half, so that the target is reached by reading no further than the receipt.
    read_ahead_percent: u64,
    cluster_id: Digest,
    auth: RequestAuth,
    key: KeyPair,
    options: ClientOptions,
    /// One link per replica id, in id order: the configured replicas, then those that joined
    /// through the log as the client learns of them ([`Inner::follow_joined`]).
    links: std::sync::RwLock<Vec<Arc<Link>>>,
    /// The key each replica must present, updated as replicas join.
    pinned: ordinal_crypto::tls::PinnedKeys,
    pending: Mutex<HashMap<u64, PendingSubmit>>,
    calls: Mutex<HashMap<u64, oneshot::Sender<ClientReply>>>,
    /// Certificates verified lately, by the statement (view, seq, batch digest) they certify.
    verified: Mutex<HashMap<(u64, u64, Digest), Certificate<CommitVote>>>,
    next_nonce: AtomicU64,
    in_flight: Semaphore,
    next_call: AtomicU64,
    endpoint: quinn::Endpoint,
    started: tokio::time::Instant,
    next_responder: AtomicU64,
    retransmit: Mutex<RetransmitTimer>,
}

/// A connection to an Ordinal cluster.
///
/// Cloning is cheap and shares the connections. Every method may be called concurrently:
/// submissions are pipelined.
///
/// ```no_run
/// # async fn demo() -> Result<(), ordinal_client::ClientError> {
/// use ordinal_client::{Client, ClientOptions};
/// let cluster = ordinal_client::load_cluster("cluster/client.toml".as_ref())?;
/// let client = Client::connect(cluster, ClientOptions::default()).await?;
/// let receipt = client.submit(b"hello".to_vec()).await?;
/// println!("ordered at seq {} index {}", receipt.seq, receipt.index);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to every replica of `cluster` (connections are made in the background and
    /// re-made with backoff when they drop). Must be called inside a tokio runtime.
    pub async fn connect(cluster: ClusterConfig, options: ClientOptions) -> Result<Client, ClientError> {
        let committee = cluster
            .committee()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let cluster_id = cluster
            .cluster_id()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let key = match &options.key {
            Some(key) => KeyPair::from_seed(key.secret_bytes()),
            None => KeyPair::generate(&mut rand_core::OsRng),
        };
        let max_in_flight = options.max_in_flight.max(1);
        let pinned = ordinal_crypto::tls::PinnedKeys::of(&committee);
        let quic = wire::quic_pinned_client_config(&key, pinned.clone())?;
        let any_address = cluster
            .replicas
            .first()
            .and_then(|r| resolve_now(&r.address))
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let endpoint = wire::client_endpoint(quic, any_address)?;
        let now_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        let mut receivers = Vec::new();
        let links = cluster
            .replicas
            .iter()
            .map(|replica| {
                let (link, rx) = Link::new(ReplicaId(replica.id), replica.address.clone());
                receivers.push(rx);
                Arc::new(link)
            })
            .collect::<Vec<_>>();
        let schedule = cluster
            .committees()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let inner = Arc::new(Inner {
            committee,
            schedule: Mutex::new(schedule),
            schedule_reader: tokio::sync::Mutex::new(()),
            reading_ahead: AtomicBool::new(false),
            read_ahead_percent: 25 + rand_core::RngCore::next_u64(&mut rand_core::OsRng) % 26,
            cluster_id,
            auth: cluster.request_auth,
            key,
            options,
            links: std::sync::RwLock::new(links),
            pinned,
            pending: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            next_nonce: AtomicU64::new(now_micros),
            in_flight: Semaphore::new(max_in_flight),
            next_call: AtomicU64::new(1),
            endpoint,
            started: tokio::time::Instant::now(),
            next_responder: AtomicU64::new(0),
            retransmit: Mutex::new(RetransmitTimer::default()),
        });
        for (link, rx) in inner.links().iter().zip(receivers) {
            inner.spawn_link(link, rx);
        }
        Ok(Client { inner })
    }

    /// The committee receipts are verified against.
    pub fn committee(&self) -> &Committee {
        &self.inner.committee
    }

    /// This client's public key (its identity in the ordered log).
    pub fn id(&self) -> ordinal_crypto::PublicKey {
        self.inner.key.public()
    }

    /// How many replicas currently have an open connection.
    pub fn connected(&self) -> usize {
        self.inner
            .links()
            .iter()
            .filter(|l| l.connected.load(Ordering::Relaxed))
            .count()
    }

    /// Waits until at least `count` replicas are connected, or `timeout` passes.
    pub async fn wait_connected(&self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.connected() < count {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Submits one transaction and returns its receipt once the receipt's commit certificate
    /// has been verified against the cluster's keys and weights.
    pub async fn submit(&self, payload: Vec<u8>) -> Result<Receipt, ClientError> {
        let inner = &self.inner;
        if payload.len() > inner.options.max_payload {
            return Err(ClientError::TooLarge {
                len: payload.len(),
                limit: inner.options.max_payload,
            });
        }
        // The nonce is drawn only once there is room, so pending nonces stay close together.
        let _slot = inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| ClientError::Timeout(Duration::ZERO))?;
        let nonce = inner.next_nonce.fetch_add(1, Ordering::Relaxed);
        let request = match inner.auth {
            _ if inner.options.always_sign => Request::signed(&inner.key, &inner.cluster_id, nonce, payload),
            RequestAuth::Signed => Request::signed(&inner.key, &inner.cluster_id, nonce, payload),
            RequestAuth::Unsigned => Request::unsigned(inner.key.public(), nonce, payload),
        };
        let leaf = request.digest();
        // With `one_receipt`, the first round asks only `responder` for the receipt; the other
        // replicas still get the request (PBFT's backups watch the primary with it).
        let responder = inner.options.one_receipt.then(|| inner.pick_responder());
        let mut submit = ClientRequest::Submit {
            request,
            receipt: true,
        };
        let asking = Arc::new(wire::encode_frame(&submit)?);
        let quiet = match (&mut submit, responder) {
            (ClientRequest::Submit { receipt, .. }, Some(_)) => {
                *receipt = false;
                Some(Arc::new(wire::encode_frame(&submit)?))
            }
            _ => None,
        };
        drop(submit);
        let (tx, mut rx) = oneshot::channel();
        lock(&inner.pending).insert(
            nonce,
            PendingSubmit {
                leaf,
                done: Some(tx),
                refused: HashMap::new(),
            },
        );
        let _cleanup = PendingGuard { inner, nonce };
        let started = tokio::time::Instant::now();
        let deadline = started + inner.options.timeout;
        let mut round = 0u32;
        loop {
            if let Some(entry) = lock(&inner.pending).get_mut(&nonce) {
                // Refusals count per round: an overloaded replica may accept the retry.
                entry.refused.clear();
            }
            // Every round goes to every replica and asks them all for the receipt, except a
            // `one_receipt` first round (see `retransmit`).
            for (index, link) in inner.links().iter().enumerate() {
                let frame = match (&quiet, responder) {
                    (Some(quiet), Some(responder)) if round == 0 && index != responder => quiet,
                    _ => &asking,
                };
                let _ = link.frames.try_send(frame.clone());
            }
            let wait = if round == 0 && responder.is_some() {
                lock(&inner.retransmit).timeout(inner.options.retry_interval)
            } else {
                inner.options.retry_interval
            };
            let retry = (tokio::time::Instant::now() + wait).min(deadline);
            match tokio::time::timeout_at(retry, &mut rx).await {
                Ok(Ok(result)) => {
                    if round == 0 && responder.is_some() && result.is_ok() {
                        // Karn's rule: only answers to a request sent once are samples.
                        lock(&inner.retransmit).observe(started.elapsed());
                    }
                    return result;
                }
                Ok(Err(_)) => return Err(ClientError::Timeout(inner.options.timeout)),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(ClientError::Timeout(inner.options.timeout))
                }
                Err(_) => {
                    if let (0, Some(responder)) = (round, responder) {
                        inner.suspect_responder(responder);
                    }
                    round = round.saturating_add(1);
                }
            }
        }
    }

    /// Submits several transactions at once (pipelined); results come back in order.
    pub async fn submit_many(&self, payloads: Vec<Vec<u8>>) -> Vec<Result<Receipt, ClientError>> {
        futures::future::join_all(payloads.into_iter().map(|p| self.submit(p))).await
    }

    async fn call(
        &self,
        replica: usize,
        request: impl FnOnce(u64) -> ClientRequest,
    ) -> Result<ClientReply, ClientError> {
        let inner = &self.inner;
        let Some(link) = inner.links().get(replica).cloned() else {
            return Err(ClientError::Config(format!("no replica {replica}")));
        };
        let id = inner.next_call.fetch_add(1, Ordering::Relaxed);
        let frame = Arc::new(wire::encode_frame(&request(id))?);
        let (tx, rx) = oneshot::channel();
        lock(&inner.calls).insert(id, tx);
        let _ = link.frames.try_send(frame);
        let result = tokio::time::timeout(inner.options.call_timeout, rx).await;
        lock(&inner.calls).remove(&id);
        match result {
            Ok(Ok(reply)) => Ok(reply),
            _ => Err(ClientError::Timeout(inner.options.call_timeout)),
        }
    }

    /// Asks one replica for its status.
    pub async fn replica_status(&self, replica: usize) -> Result<ReplicaStatus, ClientError> {
        match self.call(replica, |id| ClientRequest::Status { id }).await? {
            ClientReply::Status { status, .. } => Ok(status),
            _ => Err(ClientError::Invalid {
                replica: replica as u16,
                reason: "unexpected reply to status".into(),
            }),
        }
    }

    /// Every replica's status (`None` for those that do not answer in time).
    pub async fn status(&self) -> Vec<ReplicaReport> {
        let links = self.inner.links();
        let futures = links.iter().enumerate().map(|(i, link)| async move {
            ReplicaReport {
                id: link.id.0,
                address: link.address.clone(),
                status: self.replica_status(i).await.ok(),
            }
        });
        futures::future::join_all(futures).await
    }

    /// Reads committed batches `from..` from one replica, at most `max`, each checked against
    /// its commit certificate and the sequence order. Returns them with the replica's highest
    /// committed sequence number.
    pub async fn read_batches(
        &self,
        replica: usize,
        from: u64,
        max: u32,
    ) -> Result<(Vec<CommittedBatch>, u64), ClientError> {
        let reply = self
            .call(replica, |id| ClientRequest::Read { id, from, max })
            .await?;
        let ClientReply::Batches {
            batches,
            committed_seq,
            ..
        } = reply
        else {
            return Err(ClientError::Invalid {
                replica: replica as u16,
                reason: "unexpected reply to read".into(),
            });
        };
        if batches.len() > max as usize {
            return Err(ClientError::Invalid {
                replica: replica as u16,
                reason: format!("{} batches where at most {max} were asked for", batches.len()),
            });
        }
        // Certificates are checked on the blocking pool: a read of many batches is many
        // signature checks, and the async workers must keep delivering receipts meanwhile.
        if batches.is_empty() {
            return Ok((batches, committed_seq));
        }
        let inner = self.inner.clone();
        let (mut batches, known) = tokio::task::spawn_blocking(move || {
            let mut batches = batches;
            let known = inner.check_batches(replica, from, &mut batches);
            (batches, known)
        })
        .await
        .map_err(|e| ClientError::Invalid {
            replica: replica as u16,
            reason: format!("checking batches: {e}"),
        })?;
        let known = known?;
        batches.truncate(known);
        if batches.iter().any(|b| !b.batch.requests().is_empty()) {
            // A batch may have let a replica join: dial it.
            self.inner.follow_joined();
        }
        Ok((batches, committed_seq))
    }

    /// Reads the certified log up to the newest sequence number the replicas asked report and
    /// returns the weight and membership schedule it fixes (what the client verifies
    /// receipts with). The operator's admin commands take the next epoch number from it.
    pub async fn sync_schedule(&self) -> Result<Committees, ClientError> {
        let replicas = self.inner.links().len().max(1);
        let mut failures = 0;
        loop {
            let from = lock(&self.inner.schedule).applied_through() + 1;
            let replica = self.inner.pick_responder();
            match self.read_batches(replica, from, SCHEDULE_READ_BATCHES).await {
                Ok((batches, committed)) if batches.is_empty() && from > committed => break,
                Ok((batches, _)) if !batches.is_empty() => failures = 0,
                Ok(_) => failures += 1,
                Err(e) => {
                    tracing::debug!(replica, error = %e, "reading the log for the schedule failed");
                    failures += 1;
                }
            }
            if failures >= 3 * replicas {
                return Err(ClientError::Timeout(self.inner.options.call_timeout));
            }
        }
        Ok(lock(&self.inner.schedule).clone())
    }

    /// Ordered, certificate-verified batches from `from` on; see [`Subscription`].
    pub fn subscribe(&self, from: u64) -> Subscription {
        Subscription {
            client: self.clone(),
            next: from.max(1),
            replica: None,
            rotate: 0,
            buffer: std::collections::VecDeque::new(),
            poll_interval: Duration::from_millis(50),
        }
    }
}

/// A stream of committed batches in sequence order. Each comes from one replica and is
/// verified against its commit certificate before it is yielded; a replica that fails to answer
/// or answers wrongly is replaced by the next one (unless the subscription is pinned).
pub struct Subscription {
    client: Client,
    next: u64,
    replica: Option<usize>,
    rotate: usize,
    buffer: std::collections::VecDeque<CommittedBatch>,
    poll_interval: Duration,
}

impl Subscription {
    /// Reads only from this replica.
    pub fn pinned(mut self, replica: usize) -> Self {
        self.replica = Some(replica);
        self
    }

    /// The next batch, waiting for it to be committed if necessary.
    pub async fn next(&mut self) -> Result<CommittedBatch, ClientError> {
        loop {
            if let Some(batch) = self.buffer.pop_front() {
                return Ok(batch);
            }
            self.fill().await?;
            if self.buffer.is_empty() {
                tokio::time::sleep(self.poll_interval).await;
            }
        }
    }

    /// The next batch if it is already committed at the replica asked, else `None`.
    pub async fn try_next(&mut self) -> Result<Option<CommittedBatch>, ClientError> {
        if self.buffer.is_empty() {
            self.fill().await?;
        }
        Ok(self.buffer.pop_front())
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        if !self.client.inner.knows_weights_at(self.next) {
            // Starting past what this client knows of the weights: learn them from the log
            // up to here first.
            self.client.inner.learn_schedule(self.next).await;
        }
        let replicas = self.client.inner.links().len();
        let replica = self.replica.unwrap_or(self.rotate % replicas.max(1));
        match self.client.read_batches(replica, self.next, 64).await {
            Ok((batches, _)) => {
                self.next += batches.len() as u64;
                self.buffer.extend(batches);
                Ok(())
            }
            Err(e) if self.replica.is_some() => Err(e),
            Err(e) => {
                tracing::debug!(replica, error = %e, "read failed; trying the next replica");
                self.rotate += 1;
                if self.rotate >= 4 * replicas.max(1) {
                    self.rotate = 0;
                    return Err(e);
                }
                Ok(())
            }
        }
    }
}

/// Removes a submission's entry however its future ends (done, timed out, or dropped).
struct PendingGuard<'a> {
    inner: &'a Inner,
    nonce: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.nonce);
    }
}

/// What checking one batch found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// The certificate verifies with the weights in force at its sequence number.
    Valid,
    /// This client does not know those weights yet.
    WeightsUnknown,
}

/// Where the schedule should reach once a receipt at `seq` arrived, if it should be read
/// further now. The log executed through L fixes the weights through about L + log_window
/// ([`Committees::known_through`]); only clusters that can change weights have such a horizon.
/// Receipts come from the head of the log, so a client that waited for a receipt to pass the
/// horizon would hold that receipt for a read. Instead, once fewer than `percent` of the known
/// range remain ahead of a receipt, the client reads on in the background and no receipt waits
/// while it keeps up with the log. `percent` is capped at 50: the known range is at most
/// log_window + checkpoint_interval, at most 1.5 log windows, so half of it lies within one
/// log window of the receipt, which reading the log as far as the receipt makes known.
fn read_ahead_target(schedule: &Committees, seq: u64, percent: u64) -> Option<u64> {
    let horizon = schedule.known_through();
    let lead = horizon.saturating_sub(schedule.applied_through());
    let margin = lead.saturating_mul(percent.min(50)) / 100;
    (seq.saturating_add(margin) > horizon).then(|| seq.saturating_add(margin))
}

/// Batches per read while learning weights from the log.
const SCHEDULE_READ_BATCHES: u32 = 64;

/// Whether more than `faults` replicas that this client knows of (`signers`, every replica
/// that was ever a member) validly signed `certificate`, whatever its epoch. Votes of
/// replicas the client has not learnt of yet are left out, not held against it.
fn more_than_f_signed(
    certificate: &Certificate<CommitVote>,
    signers: &Committee,
    faults: usize,
) -> Result<(), ordinal_crypto::CryptoError> {
    let mut known = certificate.clone();
    known.votes.retain(|(id, _)| signers.contains(*id));
    known.epoch = signers.epoch();
    known.verify_with(signers, Threshold::OneCorrect)?;
    if known.votes.len() > faults {
        Ok(())
    } else {
        Err(ordinal_crypto::CryptoError::InsufficientWeight {
            weight: known.votes.len() as u64,
            needed: faults as u64 + 1,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn resolve_now(address: &str) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    address.to_socket_addrs().ok()?.next()
}

impl Link {
    fn new(id: ReplicaId, address: String) -> (Link, FrameReceiver) {
        let (frames, rx) = wire::frame_queue(LINK_QUEUE_BYTES);
        let link = Link {
            id,
            address,
            frames,
            connected: Arc::new(AtomicBool::new(false)),
            suspected_until: AtomicU64::new(0),
        };
        (link, rx)
    }
}

impl Inner {
    /// The links, by replica id (a snapshot: replicas that join later are appended).
    fn links(&self) -> Vec<Arc<Link>> {
        match self.links.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn spawn_link(self: &Arc<Self>, link: &Link, frames: FrameReceiver) {
        tokio::spawn(link_task(
            Arc::downgrade(self),
            self.endpoint.clone(),
            link.id,
            link.address.clone(),
            frames,
            link.connected.clone(),
        ));
    }

    /// Dials the replicas that joined through the log as far as the schedule knows it (at the
    /// address and with the key the log names), so that the client keeps reaching the cluster
    /// when founding members leave.
    fn follow_joined(self: &Arc<Self>) {
        let joined: Vec<(ReplicaId, String)> = {
            let schedule = lock(&self.schedule);
            self.pinned.update(schedule.signers());
            schedule
                .epochs()
                .iter()
                .filter_map(|e| e.joined.clone())
                .collect()
        };
        let mut links = match self.links.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (id, address) in joined {
            // Ids are handed out in order, so a link's index is its id.
            if id.index() != links.len() {
                continue;
            }
            let (link, rx) = Link::new(id, address);
            tracing::debug!(replica = id.0, address = %link.address, "dialling a replica that joined");
            self.spawn_link(&link, rx);
            links.push(Arc::new(link));
        }
    }

    /// The replica asked for the next receipt (see [`choose_responder`]).
    fn pick_responder(&self) -> usize {
        let start = self.next_responder.fetch_add(1, Ordering::Relaxed) as usize;
        let now = self.started.elapsed().as_millis() as u64;
        let links: Vec<(bool, u64)> = self
            .links()
            .iter()
            .map(|link| {
                (
                    link.connected.load(Ordering::Relaxed),
                    link.suspected_until.load(Ordering::Relaxed),
                )
            })
            .collect();
        choose_responder(start, &links, now)
    }

    /// `responder` left a receipt unanswered for a whole retry interval: ask others for a while.
    fn suspect_responder(&self, responder: usize) {
        if let Some(link) = self.links().get(responder) {
            let until = (self.started.elapsed() + RESPONDER_PENALTY).as_millis() as u64;
            link.suspected_until.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Checks batches read from `replica` starting at `from`: in sequence order, each against
    /// its certificate. Returns how many lead up to the first whose weights this client does
    /// not know yet (a caller reading in order learns as it goes; see `Subscription`).
    fn check_batches(
        &self,
        replica: usize,
        from: u64,
        batches: &mut [CommittedBatch],
    ) -> Result<usize, ClientError> {
        for (offset, batch) in batches.iter_mut().enumerate() {
            let invalid = |reason: String| ClientError::Invalid {
                replica: replica as u16,
                reason,
            };
            let expected = from.saturating_add(offset as u64);
            if batch.seq() != expected {
                return Err(invalid(format!(
                    "batch {} where {expected} was expected",
                    batch.seq()
                )));
            }
            let verdict = self
                .verify_batch(batch)
                .map_err(|e| invalid(format!("batch {}: {e}", batch.seq())))?;
            if verdict == Verdict::WeightsUnknown {
                return Ok(offset);
            }
        }
        Ok(batches.len())
    }

    /// Checks a committed batch with the weights in force at its sequence number, and, when it
    /// is the next the schedule lacks, learns from it. A certificate this client verified
    /// for a receipt already is not checked again: the batch need only match its digest.
    fn verify_batch(&self, batch: &mut CommittedBatch) -> Result<Verdict, String> {
        let seq = batch.seq();
        // Weights at a sequence number never change once known, so the check runs without
        // holding the schedule, which receipts need meanwhile.
        let Some(committee) = lock(&self.schedule).for_seq(seq).cloned() else {
            return Ok(Verdict::WeightsUnknown);
        };
        let statement = batch.certificate.statement;
        let key = (statement.view, statement.seq, statement.digest);
        let cached = lock(&self.verified).get(&key).cloned();
        if let Some(verified) = cached {
            if batch.batch.digest() != statement.digest {
                return Err(BatchProofError::DigestMismatch { seq }.to_string());
            }
            // The batch leaves with the certificate that verified, whatever the replica sent.
            batch.certificate = verified;
        } else {
            batch.verify(&committee).map_err(|e| e.to_string())?;
        }
        let mut schedule = lock(&self.schedule);
        if seq == schedule.applied_through() + 1 {
            schedule.apply_batch(seq, &batch.batch);
        }
        Ok(Verdict::Valid)
    }

    /// Whether the schedule knows the weights at `seq`.
    fn knows_weights_at(&self, seq: u64) -> bool {
        lock(&self.schedule).for_seq(seq).is_some()
    }

    /// Reads the certified log until the schedule covers `seq` (one reader at a time; the
    /// others wait for it and find the schedule learnt).
    async fn learn_schedule(self: &Arc<Self>, seq: u64) {
        let _reader = self.schedule_reader.lock().await;
        let client = Client { inner: self.clone() };
        let replicas = self.links().len().max(1);
        let mut failures = 0;
        while lock(&self.schedule).for_seq(seq).is_none() && failures < 3 * replicas {
            let from = lock(&self.schedule).applied_through() + 1;
            let replica = self.pick_responder();
            match client.read_batches(replica, from, SCHEDULE_READ_BATCHES).await {
                Ok((batches, _)) if !batches.is_empty() => failures = 0,
                Ok(_) => failures += 1,
                Err(e) => {
                    tracing::debug!(replica, error = %e, "reading the log for weights failed");
                    failures += 1;
                }
            }
        }
    }

    /// Reads the log in the background until the schedule covers `target`, unless a task
    /// already does. Receipts then find their weights learnt instead of waiting for a read.
    fn read_ahead(self: &Arc<Self>, target: u64) {
        if self.reading_ahead.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            inner.learn_schedule(target).await;
            tracing::debug!(
                target,
                took_ms = started.elapsed().as_millis() as u64,
                "read the log ahead"
            );
            inner.reading_ahead.store(false, Ordering::Release);
        });
    }

    /// The leaf digest of the request with this nonce, while its `submit` still waits for a
    /// receipt (`None` once another replica's receipt answered it).
    fn waiting_leaf(&self, nonce: u64) -> Option<Digest> {
        lock(&self.pending)
            .get(&nonce)
            .filter(|entry| entry.done.is_some())
            .map(|entry| entry.leaf)
    }

    /// A receipt from replica `from` for the waiting request with this nonce and leaf digest:
    /// checked, then handed to the waiting `submit`.
    fn on_receipt(
        self: &Arc<Self>,
        from: ReplicaId,
        nonce: u64,
        leaf: Digest,
        receipt: &mut Receipt,
    ) -> ReceiptFlow {
        if let Err(e) = receipt.verify_inclusion_of(&leaf) {
            tracing::warn!(replica = from.0, nonce, error = %e, "receipt does not match the request");
            return ReceiptFlow::Next;
        }
        // Receipts of one batch need one verified certificate. Replicas aggregate their
        // own (different signers), so a receipt whose statement was already certified
        // is given the certificate verified before, and is valid whatever it carried.
        let statement = receipt.certificate.statement;
        let key = (statement.view, statement.seq, statement.digest);
        let cached = lock(&self.verified).get(&key).cloned();
        if let Some(verified) = cached {
            receipt.certificate = verified;
        } else {
            // The weights in force at the receipt's sequence number; a receipt from
            // an epoch this client has not learnt yet waits for the retry while a
            // task reads the certified log that far.
            let (committee, read_ahead) = {
                let schedule = lock(&self.schedule);
                (
                    schedule.for_seq(receipt.seq).cloned(),
                    read_ahead_target(&schedule, receipt.seq, self.read_ahead_percent),
                )
            };
            let Some(committee) = committee else {
                // Read the log only for a certificate more than f members signed (a
                // vote's signature does not depend on weights): one Byzantine replica
                // must not send the client reading for a made-up sequence number.
                let signed = {
                    let schedule = lock(&self.schedule);
                    more_than_f_signed(
                        &receipt.certificate,
                        schedule.signers(),
                        schedule.latest().faults(),
                    )
                };
                if let Err(e) = signed {
                    tracing::warn!(replica = from.0, nonce, error = %e, "receipt certificate does not verify");
                    return ReceiptFlow::Refused;
                }
                tracing::debug!(
                    seq = receipt.seq,
                    "a receipt waits for the log to be read that far"
                );
                return ReceiptFlow::Waits;
            };
            // Verified without holding any lock: other replies keep flowing meanwhile.
            if let Err(e) = receipt.certificate.verify(&committee) {
                tracing::warn!(replica = from.0, nonce, error = %e, "receipt certificate does not verify");
                return ReceiptFlow::Refused;
            }
            // Only a verified certificate moves the reading: a made-up sequence
            // number from one Byzantine replica sends the client nowhere.
            if let Some(target) = read_ahead {
                self.read_ahead(target);
            }
            let mut verified = lock(&self.verified);
            if verified.len() >= VERIFIED_CACHE {
                verified.clear();
            }
            verified.insert(key, receipt.certificate.clone());
        }
        if let Some(done) = lock(&self.pending).get_mut(&nonce).and_then(|e| e.done.take()) {
            let _ = done.send(Ok(receipt.clone()));
        }
        // It answers again: a stall of the whole cluster (a view change) made every
        // replica miss receipts, and keeping them all suspected would leave only the
        // least suspected one, maybe a dead one, to ask.
        if let Some(link) = self.links().iter().find(|link| link.id == from) {
            link.suspected_until.store(0, Ordering::Relaxed);
        }
        ReceiptFlow::Next
    }

    /// Hands the receipts of `pending` to `on_receipt` once this client has read the log as
    /// far as `seq` (their certificate's weights were not known yet).
    fn receipts_after_reading(self: &Arc<Self>, from: ReplicaId, seq: u64, pending: Vec<(u64, Receipt)>) {
        let inner = self.clone();
        tokio::spawn(async move {
            inner.learn_schedule(seq).await;
            if lock(&inner.schedule).for_seq(seq).is_none() {
                return;
            }
            for (nonce, mut receipt) in pending {
                let Some(leaf) = inner.waiting_leaf(nonce) else {
                    continue; // answered meanwhile
                };
                if inner.on_receipt(from, nonce, leaf, &mut receipt) != ReceiptFlow::Next {
                    return;
                }
            }
        });
    }

    fn dispatch(self: &Arc<Self>, from: ReplicaId, reply: ClientReply) {
        match reply {
            ClientReply::Committed { nonce, mut receipt } => {
                let Some(leaf) = self.waiting_leaf(nonce) else {
                    return; // already answered by another replica
                };
                if self.on_receipt(from, nonce, leaf, &mut receipt) == ReceiptFlow::Waits {
                    self.receipts_after_reading(from, receipt.seq, vec![(nonce, receipt)]);
                }
            }
            ClientReply::Receipts {
                seq,
                certificate,
                entries,
            } => {
                // Only entries for requests this client still waits for are built. One
                // certificate covers them all: once it is refused (or its weights are not
                // known yet), the rest are not checked against it again one by one.
                let mut waiting = entries.into_iter().filter_map(|entry| {
                    let leaf = self.waiting_leaf(entry.nonce)?;
                    Some((entry.nonce, leaf, entry.receipt(seq, &certificate, leaf)))
                });
                while let Some((nonce, leaf, mut receipt)) = waiting.next() {
                    match self.on_receipt(from, nonce, leaf, &mut receipt) {
                        ReceiptFlow::Next => {}
                        ReceiptFlow::Refused => break,
                        ReceiptFlow::Waits => {
                            let rest = std::iter::once((nonce, receipt))
                                .chain(waiting.map(|(nonce, _, receipt)| (nonce, receipt)))
                                .collect();
                            self.receipts_after_reading(from, seq, rest);
                            break;
                        }
                    }
                }
            }
            ClientReply::Rejected { nonce, kind, reason } => {
                // Counted with the membership in force as far as this client knows the log.
                let committee = lock(&self.schedule).current().clone();
                let mut pending = lock(&self.pending);
                let Some(entry) = pending.get_mut(&nonce) else {
                    return;
                };
                entry.refused.insert(from.0, kind);
                // One Byzantine replica cannot fail a request by refusing it: replicas holding
                // more than the faulty weight must give the same final answer. `Overloaded` is
                // never final; the next round re-sends.
                let weight_of = |wanted: RejectKind| {
                    committee.weight_of(
                        entry
                            .refused
                            .iter()
                            .filter(|(_, k)| **k == wanted)
                            .map(|(id, _)| ReplicaId(*id)),
                    )
                };
                let outcome = if weight_of(RejectKind::Invalid) > committee.faulty_weight() {
                    Some(ClientError::Rejected(reason))
                } else if weight_of(RejectKind::Stale) > committee.faulty_weight() {
                    Some(ClientError::OutcomeUnknown { nonce, reason })
                } else {
                    None
                };
                if let Some(error) = outcome {
                    if let Some(done) = entry.done.take() {
                        let _ = done.send(Err(error));
                    }
                }
            }
            ClientReply::Batches { id, .. } | ClientReply::Status { id, .. } => {
                if let Some(waiter) = lock(&self.calls).remove(&id) {
                    let _ = waiter.send(reply);
                }
            }
        }
    }
}

/// What became of one receipt handed to `Inner::on_receipt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReceiptFlow {
    /// Delivered, or not needed (already answered, or not this request's): go on.
    Next,
    /// Its certificate does not verify.
    Refused,
    /// Its certificate is for weights this client has not read from the log yet.
    Waits,
}

/// Which replica to ask for a receipt, given each link's (connected, suspected until) and the
/// time: the connected replicas in turn from `start`, skipping those that recently left a
/// receipt unanswered. If every connected one did (a view change stalls them all), the one
/// whose suspicion ends first: a dead replica whose connection has not timed out yet is
/// suspected again at each miss, so it comes last, and a replica is cleared of suspicion by
/// answering. Before this fallback the choice went round all replicas, the dead one too, and
/// after a primary was killed under load a quarter of the receipts waited for a timeout.
fn choose_responder(start: usize, links: &[(bool, u64)], now: u64) -> usize {
    let count = links.len().max(1);
    (0..count)
        .map(|offset| (start + offset) % count)
        .find(|&index| {
            links
                .get(index)
                .is_some_and(|&(connected, until)| connected && until <= now)
        })
        .or_else(|| {
            links
                .iter()
                .enumerate()
                .filter(|(_, (connected, _))| *connected)
                .min_by_key(|(_, (_, until))| *until)
                .map(|(index, _)| index)
        })
        .unwrap_or(start % count)
}

/// Keeps one replica connected: dials with backoff, writes queued frames on one long-lived
/// stream, and hands replies to the client. Ends when the client is dropped.
async fn link_task(
    inner: Weak<Inner>,
    endpoint: quinn::Endpoint,
    id: ReplicaId,
    address: String,
    mut frames: FrameReceiver,
    connected: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match dial(&endpoint, id, &address).await {
            Ok((connection, mut send, recv)) => {
                backoff = Duration::from_millis(50);
                connected.store(true, Ordering::Relaxed);
                let reader = tokio::spawn(read_replies(inner.clone(), id, recv));
                let mut buffer = Vec::with_capacity(WRITE_GATHER);
                let stop = loop {
                    tokio::select! {
                        frame = frames.recv() => {
                            let Some(frame) = frame else { break true };
                            if frames
                                .write_gathered(frame, &mut send, &mut buffer, WRITE_GATHER)
                                .await
                                .is_err()
                            {
                                break false;
                            }
                        }
                        _ = connection.closed() => break false,
                    }
                };
                connected.store(false, Ordering::Relaxed);
                reader.abort();
                if stop {
                    connection.close(0u32.into(), b"client closed");
                    return;
                }
            }
            Err(e) => tracing::debug!(replica = id.0, error = %e, "connect failed"),
        }
        if inner.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn dial(
    endpoint: &quinn::Endpoint,
    id: ReplicaId,
    address: &str,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), WireError> {
    let connection = wire::dial(endpoint, id, address).await?;
    let (send, recv) = connection.open_bi().await?;
    Ok((connection, send, recv))
}

async fn read_replies(inner: Weak<Inner>, from: ReplicaId, mut recv: quinn::RecvStream) {
    loop {
        match wire::read_message::<ClientReply>(&mut recv, wire::MAX_REPLY_FRAME).await {
            Ok(Some(reply)) => match inner.upgrade() {
                Some(inner) => inner.dispatch(from, reply),
                None => return,
            },
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(replica = from.0, error = %e, "reply stream ended");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn receipts_are_asked_of_connected_unsuspected_replicas_first() {
        // (start, links as (connected, suspected until), now, expected)
        type Case<'a> = (usize, &'a [(bool, u64)], u64, usize);
        let table: &[Case] = &[
            (0, &[(true, 0), (true, 0), (true, 0)], 10, 0),
            (1, &[(true, 0), (true, 0), (true, 0)], 10, 1),
            // Disconnected or suspected: the next one in turn.
            (0, &[(false, 0), (true, 0), (true, 0)], 10, 1),
            (0, &[(true, 50), (true, 0), (true, 0)], 10, 1),
            (0, &[(true, 5), (true, 0), (true, 0)], 10, 0),
            // Every connected one suspected: the one whose suspicion ends first, never a
            // disconnected one.
            (0, &[(true, 90), (true, 40), (true, 60)], 10, 1),
            (2, &[(false, 0), (true, 70), (true, 60)], 10, 2),
            // Nothing connected: in turn.
            (2, &[(false, 0), (false, 0), (false, 0)], 10, 2),
        ];
        for &(start, links, now, expected) in table {
            assert_eq!(choose_responder(start, links, now), expected, "{start} {links:?}");
        }
    }
    use super::*;
    use ordinal_consensus::Batch;
    use ordinal_crypto::WeightBounds;

    fn schedule(bounds: Option<WeightBounds>) -> Committees {
        let publics: Vec<_> = (1..=4u8).map(|i| KeyPair::from_seed([i; 32]).public()).collect();
        let committee = Committee::equal_weights(Digest::of(b"read ahead"), &publics).unwrap();
        Committees::new(committee, bounds, 16, 128)
    }

    #[test]
    fn a_client_reads_ahead_once_receipts_near_the_known_horizon() {
        let mut schedule = schedule(Some(WeightBounds { min: 1, max: 2 }));
        for seq in 1..=40 {
            schedule.apply_batch(seq, &Batch::default());
        }
        // Executed through 40: weights known through 48 + 128 = 176, a lead of 136.
        assert_eq!(schedule.known_through(), 176);
        // Half the lead (68) ahead of the receipt is kept known.
        assert_eq!(read_ahead_target(&schedule, 100, 50), None);
        assert_eq!(read_ahead_target(&schedule, 108, 50), None);
        assert_eq!(read_ahead_target(&schedule, 109, 50), Some(177));
        // A smaller share reads later; a receipt past the horizon still asks for a read.
        assert_eq!(read_ahead_target(&schedule, 109, 25), None);
        assert_eq!(read_ahead_target(&schedule, 143, 25), Some(177));
        assert_eq!(read_ahead_target(&schedule, 500, 25), Some(534));
    }

    #[test]
    fn a_client_of_a_cluster_with_fixed_weights_never_reads_the_log_for_them() {
        let schedule = schedule(None);
        assert_eq!(read_ahead_target(&schedule, 1, 75), None);
        assert_eq!(read_ahead_target(&schedule, u64::MAX, 75), None);
    }
}
