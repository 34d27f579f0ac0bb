//! Prometheus metrics (the names in CONTRACT.md) and the HTTP endpoint that serves them.

use std::net::SocketAddr;

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use prometheus::{GaugeVec, Result as PromResult};

/// Every metric a replica exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Highest committed (executed and durable) sequence number.
    pub committed_seq: IntGauge,
    /// Latest stable checkpoint.
    pub stable_seq: IntGauge,
    /// Current view.
    pub view: IntGauge,
    /// View changes started or joined.
    pub view_changes: IntCounter,
    /// From this replica entering a view change to its installing the new view.
    pub view_change_duration: Histogram,
    /// From a client's request reaching this replica to its receipt leaving.
    pub commit_latency: Histogram,
    /// Transactions per committed batch.
    pub batch_transactions: Histogram,
    /// Peer messages that arrived together and had their signatures checked as one group.
    pub peer_read_group: Histogram,
    /// Voting weight per replica.
    pub replica_weight: IntGaugeVec,
    /// The weight epoch in force.
    pub weight_epoch: IntGauge,
    /// Quorum entries (weight, report or membership changes) the log refused.
    pub quorum_entries_refused: IntCounter,
    /// QUIC round-trip time per peer.
    pub peer_rtt: GaugeVec,
    /// Smoothed time from a proposal to each peer's vote for it.
    pub peer_vote_latency: GaugeVec,
    /// Smoothed reliability score of each peer, in [0, 1].
    pub peer_reliability: GaugeVec,
    /// Whether the failure detector suspects each peer (1) or not (0).
    pub peer_suspected: IntGaugeVec,
    /// The silence the failure detector tolerates from each peer.
    pub peer_suspicion_timeout: GaugeVec,
    /// Committed slots that left the window without each peer's vote.
    pub peer_missed_votes: IntCounterVec,
    /// Each peer's votes that came after this replica already held their certificate.
    pub peer_late_votes: IntCounterVec,
    /// PBFT votes for a statement this replica had settled, handed to the protocol without a
    /// signature check (`ordinal_consensus::late`).
    pub late_votes_unchecked: IntCounter,
    /// Views or rounds given up on while each peer led.
    pub peer_leader_timeouts: IntCounterVec,
    /// Messages from each peer that were refused.
    pub peer_refused: IntCounterVec,
    /// 1 when this replica and the peers it does not suspect hold less than a quorum.
    pub suspected_partition: IntGauge,
    /// Messages received, by kind.
    pub messages_received: IntCounterVec,
    /// Messages refused, by reason.
    pub invalid_messages: IntCounterVec,
    /// Duration of each synced store write.
    pub storage_sync: Histogram,
    /// Messages dropped because a peer's send queue was full.
    pub send_queue_drops: IntCounterVec,
    /// Client connections currently open.
    pub client_connections: IntGauge,
    /// Receipts sent to clients.
    pub receipts: IntCounter,
    /// Submissions received straight from clients (each client sends each request to every
    /// replica, and again on retries).
    pub client_requests: IntCounter,
    /// Admitted requests not yet ordered.
    pub pending_requests: IntGauge,
    /// Stream bytes written to each peer replica (frames, before QUIC's own overhead).
    pub peer_sent_bytes: IntCounterVec,
    /// Stream bytes written to clients (receipts, batches, status).
    pub client_sent_bytes: IntCounter,
    /// Requests inside proposals looked up among those this replica admitted from clients, by
    /// whether they were found (`found`: hashing and signature check skipped when identical).
    pub admitted_lookups: IntCounterVec,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> PromResult<Histogram> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> PromResult<Metrics> {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
        ];
        let sync_buckets = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
        ];
        let metrics = Metrics {
            committed_seq: IntGauge::new("ordinal_committed_seq", "Highest committed sequence number")?,
            stable_seq: IntGauge::new("ordinal_stable_seq", "Latest stable checkpoint")?,
            view: IntGauge::new("ordinal_view", "Current view")?,
            view_changes: IntCounter::new(
                "ordinal_view_changes_total",
                "View changes this replica started or joined",
            )?,
            view_change_duration: histogram(
                "ordinal_view_change_seconds",
                "From entering a view change to installing the new view",
                latency_buckets.clone(),
            )?,
            commit_latency: histogram(
                "ordinal_commit_latency_seconds",
                "From a client request's arrival to its receipt",
                latency_buckets,
            )?,
            batch_transactions: histogram(
                "ordinal_batch_transactions",
                "Transactions per committed batch",
                vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
                ],
            )?,
            peer_read_group: histogram(
                "ordinal_peer_read_group_messages",
                "Messages read from a peer's stream at once and verified together (2 or more: their signatures as one group)",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            )?,
            weight_epoch: IntGauge::new(
                "ordinal_weight_epoch",
                "Weight epoch in force at the next sequence number to execute",
            )?,
            quorum_entries_refused: IntCounter::new(
                "ordinal_quorum_entries_refused_total",
                "Weight, report and membership entries in the log that validation refused",
            )?,
            replica_weight: IntGaugeVec::new(
                Opts::new(
                    "ordinal_replica_weight",
                    "Voting weight of each replica in the current epoch",
                ),
                &["replica"],
            )?,
            peer_rtt: GaugeVec::new(
                Opts::new("ordinal_peer_rtt_seconds", "QUIC round-trip time to each peer"),
                &["peer"],
            )?,
            peer_vote_latency: GaugeVec::new(
                Opts::new(
                    "ordinal_peer_vote_latency_seconds",
                    "Smoothed time from a proposal to each peer's vote for it",
                ),
                &["peer"],
            )?,
            peer_reliability: GaugeVec::new(
                Opts::new(
                    "ordinal_peer_reliability",
                    "Smoothed reliability score of each peer (votes against misses, leader timeouts, refused messages)",
                ),
                &["peer"],
            )?,
            peer_suspected: IntGaugeVec::new(
                Opts::new(
                    "ordinal_peer_suspected",
                    "Whether the failure detector suspects each peer",
                ),
                &["peer"],
            )?,
            peer_suspicion_timeout: GaugeVec::new(
                Opts::new(
                    "ordinal_peer_suspicion_timeout_seconds",
                    "Silence the failure detector tolerates from each peer, learned from its message gaps",
                ),
                &["peer"],
            )?,
            peer_missed_votes: IntCounterVec::new(
                Opts::new(
                    "ordinal_peer_missed_votes_total",
                    "Committed slots that left the window without each peer's vote",
                ),
                &["peer"],
            )?,
            peer_late_votes: IntCounterVec::new(
                Opts::new(
                    "ordinal_peer_late_votes_total",
                    "Each peer's votes that arrived after this replica held the certificate they would have counted towards",
                ),
                &["peer"],
            )?,
            late_votes_unchecked: IntCounter::new(
                "ordinal_late_votes_unchecked_total",
                "Votes for a statement this replica already held a certificate for, passed to the protocol without a signature check (it verifies those its state does not confirm)",
            )?,
            peer_leader_timeouts: IntCounterVec::new(
                Opts::new(
                    "ordinal_peer_leader_timeouts_total",
                    "Views or rounds this replica gave up on while each peer led",
                ),
                &["peer"],
            )?,
            peer_refused: IntCounterVec::new(
                Opts::new(
                    "ordinal_peer_refused_messages_total",
                    "Messages from each peer that failed verification or broke a protocol rule",
                ),
                &["peer"],
            )?,
            suspected_partition: IntGauge::new(
                "ordinal_suspected_partition",
                "1 when this replica and the peers it does not suspect hold less than a quorum",
            )?,
            messages_received: IntCounterVec::new(
                Opts::new("ordinal_messages_received_total", "Messages received, by kind"),
                &["kind"],
            )?,
            invalid_messages: IntCounterVec::new(
                Opts::new("ordinal_invalid_messages_total", "Messages refused, by reason"),
                &["reason"],
            )?,
            storage_sync: histogram(
                "ordinal_storage_sync_seconds",
                "Duration of each store write, synced under the durable policy",
                sync_buckets,
            )?,
            send_queue_drops: IntCounterVec::new(
                Opts::new(
                    "ordinal_send_queue_drops_total",
                    "Messages dropped because a peer's send queue was full",
                ),
                &["peer"],
            )?,
            client_connections: IntGauge::new("ordinal_client_connections", "Open client connections")?,
            receipts: IntCounter::new("ordinal_receipts_total", "Receipts sent to clients")?,
            client_requests: IntCounter::new(
                "ordinal_client_requests_total",
                "Submissions received straight from clients",
            )?,
            pending_requests: IntGauge::new(
                "ordinal_pending_requests",
                "Client requests admitted and waiting to be ordered",
            )?,
            peer_sent_bytes: IntCounterVec::new(
                Opts::new(
                    "ordinal_peer_sent_bytes_total",
                    "Stream bytes written to each peer replica",
                ),
                &["peer"],
            )?,
            client_sent_bytes: IntCounter::new(
                "ordinal_client_sent_bytes_total",
                "Stream bytes written to clients",
            )?,
            admitted_lookups: IntCounterVec::new(
                Opts::new(
                    "ordinal_admitted_lookups_total",
                    "Proposal requests looked up among the requests admitted from clients",
                ),
                &["result"],
            )?,
            registry,
        };
        let r = &metrics.registry;
        r.register(Box::new(metrics.committed_seq.clone()))?;
        r.register(Box::new(metrics.stable_seq.clone()))?;
        r.register(Box::new(metrics.view.clone()))?;
        r.register(Box::new(metrics.view_changes.clone()))?;
        r.register(Box::new(metrics.view_change_duration.clone()))?;
        r.register(Box::new(metrics.commit_latency.clone()))?;
        r.register(Box::new(metrics.batch_transactions.clone()))?;
        r.register(Box::new(metrics.peer_read_group.clone()))?;
        r.register(Box::new(metrics.replica_weight.clone()))?;
        r.register(Box::new(metrics.weight_epoch.clone()))?;
        r.register(Box::new(metrics.quorum_entries_refused.clone()))?;
        r.register(Box::new(metrics.peer_rtt.clone()))?;
        r.register(Box::new(metrics.peer_vote_latency.clone()))?;
        r.register(Box::new(metrics.peer_reliability.clone()))?;
        r.register(Box::new(metrics.peer_suspected.clone()))?;
        r.register(Box::new(metrics.peer_suspicion_timeout.clone()))?;
        r.register(Box::new(metrics.peer_missed_votes.clone()))?;
        r.register(Box::new(metrics.peer_late_votes.clone()))?;
        r.register(Box::new(metrics.late_votes_unchecked.clone()))?;
        r.register(Box::new(metrics.peer_leader_timeouts.clone()))?;
        r.register(Box::new(metrics.peer_refused.clone()))?;
        r.register(Box::new(metrics.suspected_partition.clone()))?;
        r.register(Box::new(metrics.messages_received.clone()))?;
        r.register(Box::new(metrics.invalid_messages.clone()))?;
        r.register(Box::new(metrics.storage_sync.clone()))?;
        r.register(Box::new(metrics.send_queue_drops.clone()))?;
        r.register(Box::new(metrics.client_connections.clone()))?;
        r.register(Box::new(metrics.receipts.clone()))?;
        r.register(Box::new(metrics.client_requests.clone()))?;
        r.register(Box::new(metrics.pending_requests.clone()))?;
        r.register(Box::new(metrics.peer_sent_bytes.clone()))?;
        r.register(Box::new(metrics.client_sent_bytes.clone()))?;
        r.register(Box::new(metrics.admitted_lookups.clone()))?;
        Ok(metrics)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Serves `GET /metrics` on `address` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Metrics) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
        }),
    );
    axum::serve(listener, app).await
}

/// Binds the metrics listener (separately, so a taken port fails the start, not a task).
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}
