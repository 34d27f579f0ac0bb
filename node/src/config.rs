//! A replica's configuration file (`config.toml`), read with serde and validated field by field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ordinal_consensus::{ClusterConfig, ConfigError, ProtocolConfig};
use ordinal_crypto::{Committee, KeyPair, ReplicaId};
use serde::{Deserialize, Serialize};

/// When a committed batch counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// fsync before the batch's receipts leave (the default).
    #[default]
    Always,
    /// Leave syncing committed batches to the OS: faster, but a power loss can lose
    /// acknowledged batches (they come back by state transfer while f+1 replicas keep them).
    /// Safety state (views, votes) is synced either way.
    Never,
}

/// Storage settings.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where RocksDB keeps its files; relative paths are relative to the config file. Default:
    /// `data` next to the config file.
    pub path: Option<PathBuf>,
    /// Durability policy.
    pub sync: SyncPolicy,
}

/// Knobs for experiments, off by default.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestingConfig {
    /// Hold every message from the other replicas this long before the protocol sees it:
    /// makes this replica a slow one (its votes come late) without touching the network.
    pub peer_receive_delay_ms: u64,
    /// Hold every message to the other replicas this long before it is sent: with
    /// `peer_receive_delay_ms`, a replica behind a long link both ways (what `tc netem` on its
    /// interface would do), so that its proposals, not only its votes, come late.
    pub peer_send_delay_ms: u64,
}

/// One replica's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This replica's id in the cluster.
    pub id: u16,
    /// UDP address to listen on for QUIC.
    pub listen: SocketAddr,
    /// TCP address for Prometheus metrics over HTTP.
    pub metrics: SocketAddr,
    /// The secret key file; relative paths are relative to the config file.
    pub key_file: PathBuf,
    /// Storage.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Protocol parameters (batching, window, checkpoints, timeouts).
    #[serde(default)]
    pub protocol: ProtocolConfig,
    /// The cluster.
    pub cluster: ClusterConfig,
    /// Experiment knobs.
    #[serde(default, skip_serializing_if = "is_default")]
    pub testing: TestingConfig,
}

fn is_default(testing: &TestingConfig) -> bool {
    *testing == TestingConfig::default()
}

/// A configuration loaded and checked, with the paths resolved.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The file as written.
    pub config: NodeConfig,
    /// The directory it was read from.
    pub dir: PathBuf,
    /// The committee it describes.
    pub committee: Committee,
}

impl NodeConfig {
    /// Parses TOML text; errors name the field.
    pub fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .and_then(|span| text.get(..span.start))
                .and_then(|before| before.lines().last())
                .map(|line| line.split('=').next().unwrap_or(line).trim().to_string())
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| "config".to_string());
            ConfigError::new(field, e.message())
        })
    }

    /// Checks every field against every other.
    pub fn validate(&self) -> Result<Committee, ConfigError> {
        let committee = self
            .cluster
            .committee()
            .map_err(|e| ConfigError::new(format!("cluster.{}", e.field), e.reason))?;
        // A replica outside the configured membership can only be one that joins through
        // the log: its id is a slot the log will create.
        if !committee.contains(ReplicaId(self.id))
            && (self.cluster.membership.is_none() || usize::from(self.id) < committee.slots())
        {
            return Err(ConfigError::new(
                "id",
                format!(
                    "{} is not a replica of the cluster (0..{}){}",
                    self.id,
                    committee.size(),
                    if self.cluster.membership.is_none() {
                        "; a joining replica needs a cluster with [membership]"
                    } else {
                        ""
                    }
                ),
            ));
        }
        self.protocol
            .validate()
            .map_err(|reason| ConfigError::new("protocol", reason))?;
        if self.listen == self.metrics {
            return Err(ConfigError::new("metrics", "must differ from listen"));
        }
        for (field, value) in [
            (
                "testing.peer_receive_delay_ms",
                self.testing.peer_receive_delay_ms,
            ),
            ("testing.peer_send_delay_ms", self.testing.peer_send_delay_ms),
        ] {
            if value > 10_000 {
                return Err(ConfigError::new(field, "must be at most 10000"));
            }
        }
        Ok(committee)
    }
}

impl LoadedConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> anyhow::Result<LoadedConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config = NodeConfig::parse(&text).with_context(|| format!("in {}", path.display()))?;
        let committee = config
            .validate()
            .with_context(|| format!("in {}", path.display()))?;
        config.cluster.apply_to(&mut config.protocol);
        // `[cluster.weights]` may replace the checkpoint interval and window: check again.
        config.protocol.validate().map_err(|reason| {
            anyhow::anyhow!("in {}: protocol with [cluster.weights]: {reason}", path.display())
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(LoadedConfig {
            config,
            dir,
            committee,
        })
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    /// The RocksDB directory.
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(self.config.storage.path.as_deref().unwrap_or(Path::new("data")))
    }

    /// Whether this replica is outside the configured membership: it joins through the log
    /// (the driver checks its key once the log names its slot).
    pub fn joining(&self) -> bool {
        usize::from(self.config.id) >= self.committee.slots()
    }

    /// Loads the secret key and checks it is the one the cluster lists for this replica.
    pub fn key(&self) -> anyhow::Result<KeyPair> {
        let path = self.resolve(&self.config.key_file);
        let key = KeyPair::load(&path)?;
        if self.joining() {
            return Ok(key);
        }
        let expected = self
            .committee
            .slot_table()
            .get(self.config.id as usize)
            .map(|m| m.public_key);
        if expected != Some(key.public()) {
            anyhow::bail!(
                "key_file: {} holds key {}, but the cluster lists another for replica {}",
                path.display(),
                key.public(),
                self.config.id
            );
        }
        Ok(key)
    }
}
