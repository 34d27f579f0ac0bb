//! The cluster as a configuration file describes it (`client.toml` and the `[cluster]` table of
//! each replica's `config.toml`), and its validation into a [`Committee`].

use std::fmt;

use ordinal_crypto::{Committee, Digest, Member, PublicKey, ReplicaId, WeightBounds};
use serde::{Deserialize, Serialize};

use crate::config::{ProtocolConfig, RequestAuth};

/// Which agreement protocol a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolKind {
    /// PBFT: all-to-all prepare and commit phases.
    #[default]
    Pbft,
    /// HotStuff-style linear mode: votes go to a collector.
    Linear,
}

impl fmt::Display for ProtocolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtocolKind::Pbft => "pbft",
            ProtocolKind::Linear => "linear",
        })
    }
}

/// One replica as clients and peers know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEntry {
    /// Its id, 0..n in order.
    pub id: u16,
    /// Where it listens for QUIC (host:port).
    pub address: String,
    /// Where it serves Prometheus metrics over HTTP (host:port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// Its ed25519 public key, hex.
    pub public_key: String,
    /// Its voting weight.
    #[serde(default = "one")]
    pub weight: u64,
}

fn one() -> u64 {
    1
}

/// The cluster: identity, protocol, membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// 32 bytes of hex naming the cluster; part of every signature.
    pub cluster_id: String,
    /// The protocol.
    #[serde(default)]
    pub protocol: ProtocolKind,
    /// f, the number of Byzantine replicas tolerated.
    pub faults: usize,
    /// How clients authenticate requests.
    #[serde(default)]
    pub request_auth: RequestAuth,
    /// Weight changes through the ordered log (both protocols); absent, the configured weights
    /// hold for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<WeightsConfig>,
    /// Membership changes through the ordered log (both protocols; needs `[weights]`, whose
    /// checkpoint interval and window fix when changes take effect); absent, the configured
    /// replicas are the members for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<MembershipConfig>,
    /// The replicas in id order: the configured (first) membership. Replicas that joined
    /// later are learnt from the log.
    pub replicas: Vec<ReplicaEntry>,
}

/// The `[membership]` table of a cluster: who may add and remove replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipConfig {
    /// The operator's ed25519 public key, hex: membership changes in the log must be
    /// requests signed with it (`ordinal-node membership`). See `epoch::Committees::
    /// schedule_membership` for why membership is the operator's and weights the members'.
    pub operator_key: String,
}

/// The `[weights]` table of a cluster: how far weights may move, and whether they follow
/// measurements. Consensus-critical, so it lives with the cluster, identical everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsConfig {
    /// The least weight a replica may hold (at least 1).
    #[serde(default = "one")]
    pub min: u64,
    /// The most.
    pub max: u64,
    /// Each replica orders a latency report every this many stable checkpoints and the
    /// weights follow the reports (AWARE weights on the fastest 2f, by the median of reports);
    /// 0 leaves weights to explicit changes.
    #[serde(default)]
    pub reports_every: u64,
    /// The checkpoint interval every replica uses: weights change only a window past a
    /// checkpoint, so with `[weights]` these replace the replicas' own `[protocol]` values,
    /// and clients derive the schedule with them too.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: u64,
    /// The log window every replica uses (see `checkpoint_interval`).
    #[serde(default = "default_log_window")]
    pub log_window: u64,
}

fn default_checkpoint_interval() -> u64 {
    ProtocolConfig::default().checkpoint_interval
}

fn default_log_window() -> u64 {
    ProtocolConfig::default().log_window
}

/// A configuration problem, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The offending field, e.g. `replicas[2].public_key`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

impl ClusterConfig {
    /// The cluster id.
    pub fn cluster_id(&self) -> Result<Digest, ConfigError> {
        self.cluster_id
            .parse()
            .map_err(|e| ConfigError::new("cluster_id", e))
    }

    /// Validates every field and builds the committee (epoch 0).
    pub fn committee(&self) -> Result<Committee, ConfigError> {
        let cluster_id = self.cluster_id()?;
        if self.replicas.is_empty() {
            return Err(ConfigError::new("replicas", "at least one replica is needed"));
        }
        let mut members = Vec::with_capacity(self.replicas.len());
        for (i, entry) in self.replicas.iter().enumerate() {
            let field = |name: &str| format!("replicas[{i}].{name}");
            if entry.id as usize != i {
                return Err(ConfigError::new(
                    field("id"),
                    format!("expected {i} (ids are 0..n in order)"),
                ));
            }
            if entry.address.trim().is_empty() {
                return Err(ConfigError::new(field("address"), "empty"));
            }
            let public_key: PublicKey = entry
                .public_key
                .parse()
                .map_err(|e| ConfigError::new(field("public_key"), e))?;
            public_key
                .decode()
                .map_err(|e| ConfigError::new(field("public_key"), e))?;
            if entry.weight == 0 {
                return Err(ConfigError::new(field("weight"), "must be at least 1"));
            }
            members.push(Member {
                id: ReplicaId(entry.id),
                public_key,
                weight: entry.weight,
            });
        }
        if let Some(weights) = &self.weights {
            if weights.min == 0 || weights.max < weights.min {
                return Err(ConfigError::new("weights", "need 1 <= min <= max"));
            }
            let k = weights.checkpoint_interval;
            if k == 0 || weights.log_window < 2 * k || weights.log_window % k != 0 {
                return Err(ConfigError::new(
                    "weights",
                    "log_window must be a multiple of checkpoint_interval, at least twice it",
                ));
            }
            if let Some(i) = members
                .iter()
                .position(|m| m.weight < weights.min || m.weight > weights.max)
            {
                return Err(ConfigError::new(
                    format!("replicas[{i}].weight"),
                    format!("outside [weights] min {} max {}", weights.min, weights.max),
                ));
            }
        }
        if self.membership.is_some() {
            self.operator_key()?;
            if self.weights.is_none() {
                return Err(ConfigError::new(
                    "membership",
                    "needs a [weights] table (its checkpoint_interval and log_window fix when changes take effect)",
                ));
            }
        }
        Committee::new(cluster_id, 0, members, self.faults).map_err(|e| ConfigError::new("replicas", e))
    }

    /// The operator key of `[membership]`, if membership can change.
    pub fn operator_key(&self) -> Result<Option<PublicKey>, ConfigError> {
        let Some(membership) = &self.membership else {
            return Ok(None);
        };
        let key: PublicKey = membership
            .operator_key
            .parse()
            .map_err(|e| ConfigError::new("membership.operator_key", e))?;
        key.decode()
            .map_err(|e| ConfigError::new("membership.operator_key", e))?;
        Ok(Some(key))
    }

    /// The protocol parameters a replica of this cluster must use for the parts clients rely
    /// on (request authentication); the rest comes from the replica's own configuration.
    pub fn apply_to(&self, protocol: &mut ProtocolConfig) {
        protocol.request_auth = self.request_auth;
        protocol.weight_bounds = self.weights.map(|w| WeightBounds {
            min: w.min,
            max: w.max,
        });
        protocol.weight_reports_every = self.weights.map_or(0, |w| w.reports_every);
        protocol.membership_operator = self.operator_key().ok().flatten();
        if let Some(weights) = self.weights {
            protocol.checkpoint_interval = weights.checkpoint_interval;
            protocol.log_window = weights.log_window;
        }
    }

    /// The weight schedule a verifier starts from: the configured committee as epoch 0, and,
    /// with `[weights]`, the rules to follow changes in the certified log.
    pub fn committees(&self) -> Result<crate::epoch::Committees, ConfigError> {
        let committee = self.committee()?;
        let operator = self.operator_key()?;
        Ok(match self.weights {
            Some(w) => crate::epoch::Committees::with_policy(
                committee,
                Some(WeightBounds {
                    min: w.min,
                    max: w.max,
                }),
                w.reports_every > 0,
                w.checkpoint_interval,
                w.log_window,
            )
            .with_operator(operator),
            None => crate::epoch::Committees::fixed(committee),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordinal_crypto::KeyPair;

    fn cluster(n: usize) -> ClusterConfig {
        ClusterConfig {
            cluster_id: Digest::of(b"c").to_hex(),
            protocol: ProtocolKind::Pbft,
            faults: (n - 1) / 3,
            request_auth: RequestAuth::Signed,
            weights: None,
            membership: None,
            replicas: (0..n)
                .map(|i| ReplicaEntry {
                    id: i as u16,
                    address: format!("127.0.0.1:{}", 7000 + i),
                    metrics: None,
                    public_key: KeyPair::from_seed([i as u8 + 1; 32]).public().to_hex(),
                    weight: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn valid_cluster_builds_a_committee() {
        let committee = cluster(4).committee().unwrap();
        assert_eq!(committee.quorum_weight(), 3);
        assert_eq!(committee.faults(), 1);
    }

    #[test]
    fn errors_name_the_field() {
        let mut bad_key = cluster(4);
        bad_key.replicas[2].public_key = "zz".into();
        assert_eq!(bad_key.committee().unwrap_err().field, "replicas[2].public_key");

        let mut bad_id = cluster(4);
        bad_id.replicas[1].id = 3;
        assert_eq!(bad_id.committee().unwrap_err().field, "replicas[1].id");

        let mut bad_weight = cluster(4);
        bad_weight.replicas[0].weight = 0;
        assert_eq!(bad_weight.committee().unwrap_err().field, "replicas[0].weight");

        let mut too_many_faults = cluster(4);
        too_many_faults.faults = 2;
        assert_eq!(too_many_faults.committee().unwrap_err().field, "replicas");

        let mut weights = cluster(5);
        weights.weights = Some(WeightsConfig {
            min: 1,
            max: 2,
            reports_every: 4,
            checkpoint_interval: 8,
            log_window: 32,
        });
        weights.committee().unwrap();
        let mut protocol = ProtocolConfig::default();
        weights.apply_to(&mut protocol);
        assert_eq!(protocol.weight_bounds, Some(WeightBounds { min: 1, max: 2 }));
        assert_eq!(protocol.weight_reports_every, 4);
        assert_eq!((protocol.checkpoint_interval, protocol.log_window), (8, 32));
        weights.replicas[2].weight = 3;
        assert_eq!(weights.committee().unwrap_err().field, "replicas[2].weight");
        weights.replicas[2].weight = 1;
        weights.protocol = ProtocolKind::Linear;
        weights.committee().unwrap();

        // [membership] needs [weights] and a valid operator key.
        let mut membership = cluster(4);
        membership.membership = Some(MembershipConfig {
            operator_key: KeyPair::from_seed([9; 32]).public().to_hex(),
        });
        assert_eq!(membership.committee().unwrap_err().field, "membership");
        membership.weights = Some(WeightsConfig {
            min: 1,
            max: 1,
            reports_every: 0,
            checkpoint_interval: 8,
            log_window: 32,
        });
        membership.committee().unwrap();
        let mut protocol = ProtocolConfig::default();
        membership.apply_to(&mut protocol);
        assert_eq!(
            protocol.membership_operator,
            Some(KeyPair::from_seed([9; 32]).public())
        );
        assert!(membership.committees().unwrap().operator().is_some());
        membership.membership = Some(MembershipConfig {
            operator_key: "00".into(),
        });
        assert_eq!(
            membership.committee().unwrap_err().field,
            "membership.operator_key"
        );

        let mut bad_id_hex = cluster(4);
        bad_id_hex.cluster_id = "123".into();
        assert_eq!(bad_id_hex.committee().unwrap_err().field, "cluster_id");
    }
}
