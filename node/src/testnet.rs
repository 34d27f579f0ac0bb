//! `ordinal-node testnet`: generates keys and configuration for a cluster.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ordinal_consensus::{ClusterConfig, ProtocolConfig, ProtocolKind, ReplicaEntry, RequestAuth};
use ordinal_crypto::{Digest, KeyPair};
use rand_core::{OsRng, RngCore};

use crate::config::{NodeConfig, StorageConfig, TestingConfig};

/// Where a replica's RocksDB lives inside its container (its own volume).
pub const DOCKER_DATA_DIR: &str = "/data";

/// What to generate.
#[derive(Clone, Debug)]
pub struct TestnetSpec {
    /// Number of replicas.
    pub replicas: usize,
    /// Protocol.
    pub protocol: ProtocolKind,
    /// Host the replicas listen on.
    pub host: IpAddr,
    /// Replica i listens on UDP base_port + i and serves metrics on TCP base_port + 100 + i.
    pub base_port: u16,
    /// Use compose service names (`node-i`) as addresses.
    pub docker: bool,
    /// Request authentication.
    pub request_auth: RequestAuth,
    /// Voting weights by replica id; empty for all 1. Checked like any cluster's weights.
    pub weights: Vec<u64>,
    /// Weight changes through the log, if enabled.
    pub weight_changes: Option<ordinal_consensus::WeightsConfig>,
    /// Replicas generated beyond `replicas` (ids `replicas..`), outside the configured
    /// membership, ready to join through the log. Any spare enables membership changes: an
    /// operator key is written to `operator.key` and named in the cluster's `[membership]`
    /// table (with a `[weights]` table of equal weights if there is none).
    pub spares: usize,
}

/// The operator key file `generate` writes when there are spares.
pub const OPERATOR_KEY_FILE: &str = "operator.key";

/// Writes `client.toml` and, per replica, `node-i/config.toml` and `node-i/key` (mode 0600).
/// Returns the path of `client.toml`.
pub fn generate(spec: &TestnetSpec, out: &Path) -> anyhow::Result<PathBuf> {
    if spec.replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    if !spec.weights.is_empty() && spec.weights.len() != spec.replicas {
        bail!(
            "--weights names {} weights for {} replicas",
            spec.weights.len(),
            spec.replicas
        );
    }
    let total = spec.replicas + spec.spares;
    let last_port = (spec.base_port as usize + 100).saturating_add(total - 1);
    if total > 100 || last_port > u16::MAX as usize {
        bail!(
            "--replicas {} with --base-port {} runs out of ports (at most 100 replicas below port 65536)",
            spec.replicas,
            spec.base_port
        );
    }
    // Regenerating over a cluster would replace its keys and strand its stores.
    if out.join("client.toml").exists() {
        bail!(
            "{} already holds a cluster (client.toml): choose another --out or remove it",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let cluster_id = Digest::of_parts(&[b"ordinal-cluster", &seed]);
    let keys: Vec<KeyPair> = (0..total).map(|_| KeyPair::generate(&mut OsRng)).collect();
    let operator = (spec.spares > 0).then(|| KeyPair::generate(&mut OsRng));
    let port = |i: usize, offset: usize| spec.base_port + (offset + i) as u16;
    let address = |i: usize, offset: usize| {
        if spec.docker {
            format!("node-{i}:{}", port(i, offset))
        } else {
            SocketAddr::new(spec.host, port(i, offset)).to_string()
        }
    };
    let cluster = ClusterConfig {
        cluster_id: cluster_id.to_hex(),
        protocol: spec.protocol,
        faults: (spec.replicas - 1) / 3,
        request_auth: spec.request_auth,
        weights: match (spec.weight_changes, &operator) {
            (None, Some(_)) => Some(ordinal_consensus::WeightsConfig {
                min: 1,
                max: 1,
                reports_every: 0,
                checkpoint_interval: ProtocolConfig::default().checkpoint_interval,
                log_window: ProtocolConfig::default().log_window,
            }),
            (weights, _) => weights,
        },
        membership: operator.as_ref().map(|key| ordinal_consensus::MembershipConfig {
            operator_key: key.public().to_hex(),
        }),
        replicas: keys[..spec.replicas]
            .iter()
            .enumerate()
            .map(|(i, key)| ReplicaEntry {
                id: i as u16,
                address: address(i, 0),
                metrics: Some(address(i, 100)),
                public_key: key.public().to_hex(),
                weight: spec.weights.get(i).copied().unwrap_or(1),
            })
            .collect(),
    };
    cluster.committee()?;
    if let Some(operator) = &operator {
        operator.save(&out.join(OPERATOR_KEY_FILE))?;
    }
    let client_path = out.join("client.toml");
    std::fs::write(&client_path, toml::to_string_pretty(&cluster)?)
        .with_context(|| format!("writing {}", client_path.display()))?;
    // In containers every replica binds all interfaces; peers reach it by service name.
    let bind_host: IpAddr = if spec.docker {
        IpAddr::from([0, 0, 0, 0])
    } else {
        spec.host
    };
    for (i, key) in keys.iter().enumerate() {
        let dir = out.join(format!("node-{i}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        key.save(&dir.join("key"))?;
        let config = NodeConfig {
            id: i as u16,
            listen: SocketAddr::new(bind_host, port(i, 0)),
            metrics: SocketAddr::new(bind_host, port(i, 100)),
            key_file: PathBuf::from("key"),
            // In containers each replica's store is its own volume, mounted at /data.
            storage: if spec.docker {
                StorageConfig {
                    path: Some(PathBuf::from(DOCKER_DATA_DIR)),
                    ..StorageConfig::default()
                }
            } else {
                StorageConfig::default()
            },
            protocol: ProtocolConfig::default(),
            cluster: cluster.clone(),
            testing: TestingConfig::default(),
        };
        let path = dir.join("config.toml");
        std::fs::write(&path, toml::to_string_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(client_path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::LoadedConfig;

    fn spec(replicas: usize) -> TestnetSpec {
        TestnetSpec {
            replicas,
            protocol: ProtocolKind::Pbft,
            host: IpAddr::from([127, 0, 0, 1]),
            base_port: 7000,
            docker: false,
            request_auth: RequestAuth::Signed,
            weights: Vec::new(),
            weight_changes: None,
            spares: 0,
        }
    }

    #[test]
    fn spares_get_configs_outside_the_membership_and_an_operator_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(4);
        s.spares = 1;
        let client = generate(&s, dir.path()).unwrap();
        let cluster: ClusterConfig = toml::from_str(&std::fs::read_to_string(&client).unwrap()).unwrap();
        assert_eq!(cluster.replicas.len(), 4);
        let operator = KeyPair::load(&dir.path().join(OPERATOR_KEY_FILE)).unwrap();
        assert_eq!(cluster.operator_key().unwrap(), Some(operator.public()));
        assert!(cluster.weights.is_some());
        let spare = LoadedConfig::load(&dir.path().join("node-4/config.toml")).unwrap();
        assert!(spare.joining());
        spare.key().unwrap();
        assert_eq!(spare.config.listen.port(), 7004);
        let member = LoadedConfig::load(&dir.path().join("node-3/config.toml")).unwrap();
        assert!(!member.joining());
    }

    #[test]
    fn an_existing_cluster_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let client = generate(&spec(4), dir.path()).unwrap();
        let before = std::fs::read(&client).unwrap();
        let again = generate(&spec(4), dir.path()).unwrap_err().to_string();
        assert!(again.contains("already holds a cluster"), "{again}");
        assert_eq!(std::fs::read(&client).unwrap(), before);
    }

    #[test]
    fn generated_configs_load_and_match_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let client = generate(&spec(4), dir.path()).unwrap();
        let cluster: ClusterConfig = toml::from_str(&std::fs::read_to_string(&client).unwrap()).unwrap();
        assert_eq!(cluster.faults, 1);
        assert_eq!(cluster.replicas[3].address, "127.0.0.1:7003");
        assert_eq!(cluster.replicas[3].metrics.as_deref(), Some("127.0.0.1:7103"));
        for i in 0..4 {
            let loaded = LoadedConfig::load(&dir.path().join(format!("node-{i}/config.toml"))).unwrap();
            assert_eq!(loaded.config.id, i as u16);
            assert_eq!(loaded.config.listen.port(), 7000 + i as u16);
            assert_eq!(loaded.committee.quorum_weight(), 3);
            loaded.key().unwrap();
            assert_eq!(loaded.data_dir(), dir.path().join(format!("node-{i}/data")));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(dir.path().join(format!("node-{i}/key")))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
        // A key file swapped with another replica's is refused.
        std::fs::copy(dir.path().join("node-0/key"), dir.path().join("node-1/key")).unwrap();
        let loaded = LoadedConfig::load(&dir.path().join("node-1/config.toml")).unwrap();
        assert!(loaded.key().unwrap_err().to_string().contains("key_file"));
    }

    #[test]
    fn docker_addresses_use_service_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(7);
        s.docker = true;
        let client = generate(&s, dir.path()).unwrap();
        let cluster: ClusterConfig = toml::from_str(&std::fs::read_to_string(client).unwrap()).unwrap();
        assert_eq!(cluster.faults, 2);
        assert_eq!(cluster.replicas[6].address, "node-6:7006");
        let loaded = LoadedConfig::load(&dir.path().join("node-6/config.toml")).unwrap();
        assert_eq!(loaded.config.listen.to_string(), "0.0.0.0:7006");
        assert_eq!(loaded.data_dir(), PathBuf::from("/data"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        generate(&spec(4), dir.path()).unwrap();
        let path = dir.path().join("node-2/config.toml");
        let good = std::fs::read_to_string(&path).unwrap();
        let cases = [
            (good.replace("id = 2\n", "id = 9\n"), "id"),
            (
                good.replace("listen = \"127.0.0.1:7002\"", "listen = \"not an address\""),
                "listen",
            ),
            (good.replace("faults = 1", "faults = 2"), "cluster.replicas"),
            (
                good.replace("checkpoint_interval = 16", "checkpoint_interval = 0"),
                "protocol",
            ),
            (good.replace("[storage]", "[storage]\nsurprise = 1"), "surprise"),
        ];
        for (text, field) in cases {
            assert_ne!(text, good, "case for {field} did not change the file");
            std::fs::write(&path, &text).unwrap();
            let err = format!("{:#}", LoadedConfig::load(&path).unwrap_err());
            assert!(
                err.contains(field),
                "expected an error naming {field}, got: {err}"
            );
        }
    }
}
