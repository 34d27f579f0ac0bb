//! Protocol parameters shared by every replica of a cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How clients prove who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestAuth {
    /// Every request carries the client's ed25519 signature over (nonce, payload digest), and
    /// every replica verifies it. A Byzantine primary cannot invent or alter requests. Costs one
    /// signature verification per transaction on every replica: this bounds throughput.
    #[default]
    Signed,
    /// Clients are authenticated only by their connection to a replica. Much cheaper, but a
    /// Byzantine primary can order requests no client sent. De-duplication then keys on the
    /// payload digest too, so nobody can squat a client's nonce and suppress its real request.
    Unsigned,
}

/// Parameters every replica of a cluster must agree on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Most requests in one batch.
    pub max_batch_requests: usize,
    /// Most payload bytes in one batch.
    pub max_batch_bytes: usize,
    /// How long the primary waits to fill a batch before proposing a partial one. In PBFT it
    /// applies only while batches are in flight (an empty pipeline proposes at once). Before
    /// that rule, 2 ms instead of 5 cost 27 % more CPU per transaction at 5,000 tx/s and 12 %
    /// at 10,000 (`benches/results/README.md`, "Batches that follow the load").
    #[serde(with = "duration_ms")]
    pub batch_delay: Duration,
    /// Most batches in flight (proposed, not yet committed) at once: the pipeline depth.
    pub max_inflight_batches: u64,
    /// A checkpoint every this many sequence numbers. It bounds what a PBFT VIEW-CHANGE
    /// carries (every batch prepared since the stable checkpoint): at 64, a cluster whose
    /// primary died under load sent VIEW-CHANGEs of several MiB and NEW-VIEWs three times
    /// that, which filled the peer queues and never completed; at 16 the same run recovers.
    pub checkpoint_interval: u64,
    /// How many sequence numbers past the last stable checkpoint may be in use (the
    /// high watermark is low + this). A multiple of the checkpoint interval, at least two.
    pub log_window: u64,
    /// How long a request may wait before a backup suspects the primary; doubles with each
    /// consecutive failed view, up to `view_timeout_max`.
    #[serde(with = "duration_ms")]
    pub view_timeout: Duration,
    /// Cap on the view timeout.
    #[serde(with = "duration_ms")]
    pub view_timeout_max: Duration,
    /// The shortest silence after which the failure detector may suspect a peer; it learns a
    /// longer one for peers that are usually quieter (see [`crate::reliability`]).
    #[serde(with = "duration_ms")]
    pub suspicion_timeout_min: Duration,
    /// How often unfinished work (votes, view changes, state transfer) is re-sent.
    #[serde(with = "duration_ms")]
    pub retransmit_interval: Duration,
    /// Largest payload of one request.
    pub max_request_bytes: usize,
    /// Most requests a replica holds waiting to be ordered.
    pub max_pending_requests: usize,
    /// Most payload bytes a replica holds waiting to be ordered: with `max_pending_requests`,
    /// what bounds a replica's memory when clients offer more than the cluster can order.
    pub max_pending_bytes: usize,
    /// How clients are authenticated. A property of the cluster (its `request_auth` in
    /// `client.toml`), so it is not read from a replica's own protocol table.
    #[serde(skip)]
    pub request_auth: RequestAuth,
    /// The range weights may move in, from the cluster configuration; `None` (the default)
    /// disables weight changes: every change in the log is refused and the configured
    /// weights hold for ever. Consensus-critical, so never a per-replica setting.
    #[serde(skip)]
    pub weight_bounds: Option<ordinal_crypto::WeightBounds>,
    /// With weight changes enabled, each replica orders a latency report at every this many
    /// stable checkpoints, and the weights follow the reports (`crate::epoch`); 0 leaves
    /// weights to explicit changes. From the cluster configuration.
    #[serde(skip)]
    pub weight_reports_every: u64,
    /// The key that may add and remove replicas through the log (`crate::epoch`); `None`
    /// disables membership changes. From the cluster configuration.
    #[serde(skip)]
    pub membership_operator: Option<ordinal_crypto::PublicKey>,
    /// Per-client nonce window of the de-duplication table.
    pub client_nonce_window: u64,
    /// Most batches sent in one state-transfer reply.
    pub state_transfer_chunk: u64,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            max_batch_requests: 512,
            max_batch_bytes: 1 << 20,
            batch_delay: Duration::from_millis(5),
            max_inflight_batches: 8,
            checkpoint_interval: 16,
            log_window: 128,
            view_timeout: Duration::from_millis(1000),
            view_timeout_max: Duration::from_secs(30),
            suspicion_timeout_min: Duration::from_millis(100),
            retransmit_interval: Duration::from_millis(200),
            max_request_bytes: 64 * 1024,
            max_pending_requests: 100_000,
            max_pending_bytes: 32 << 20,
            request_auth: RequestAuth::Signed,
            weight_bounds: None,
            weight_reports_every: 0,
            membership_operator: None,
            client_nonce_window: 1024,
            state_transfer_chunk: 32,
        }
    }
}

impl ProtocolConfig {
    /// Checks the relations between parameters; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch_requests == 0 {
            return Err("max_batch_requests must be at least 1".into());
        }
        if self.max_batch_bytes < self.max_request_bytes {
            return Err("max_batch_bytes must be at least max_request_bytes".into());
        }
        if self.checkpoint_interval == 0 {
            return Err("checkpoint_interval must be at least 1".into());
        }
        if self.log_window < 2 * self.checkpoint_interval || self.log_window % self.checkpoint_interval != 0 {
            return Err("log_window must be a multiple of checkpoint_interval, at least twice it".into());
        }
        if self.max_inflight_batches == 0 || self.max_inflight_batches > self.log_window {
            return Err("max_inflight_batches must be between 1 and log_window".into());
        }
        if self.view_timeout.is_zero() || self.view_timeout_max < self.view_timeout {
            return Err("view_timeout must be positive and at most view_timeout_max".into());
        }
        if self.suspicion_timeout_min.is_zero() || self.suspicion_timeout_min > self.view_timeout {
            return Err("suspicion_timeout_min must be positive and at most view_timeout".into());
        }
        if self.retransmit_interval.is_zero() {
            return Err("retransmit_interval must be positive".into());
        }
        // Upper bounds keep every deadline (now + timeout) far from overflowing, and catch
        // values given in the wrong unit.
        if self.view_timeout_max > Duration::from_secs(3600) {
            return Err("view_timeout_max must be at most 3600000 ms".into());
        }
        if self.retransmit_interval > Duration::from_secs(60) || self.batch_delay > Duration::from_secs(60) {
            return Err("retransmit_interval and batch_delay must be at most 60000 ms".into());
        }
        if self.client_nonce_window == 0 || self.state_transfer_chunk == 0 || self.max_pending_requests == 0 {
            return Err(
                "client_nonce_window, state_transfer_chunk and max_pending_requests must be positive".into(),
            );
        }
        if self.max_pending_bytes < self.max_request_bytes {
            return Err("max_pending_bytes must be at least max_request_bytes".into());
        }
        Ok(())
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
