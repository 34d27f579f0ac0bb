//! `ordinal-node local`: a whole cluster on loopback in one process, for trying Ordinal out and
//! for benchmarks. Each replica has its own store, endpoint, metrics port and protocol thread,
//! exactly as under `ordinal-node run`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{LoadedConfig, SyncPolicy};
use crate::service::{self, RunningReplica};
use crate::testnet::{self, TestnetSpec};

/// Starts every replica of the cluster in `dir`, generating it first if `dir` holds none.
/// A directory from an earlier run is resumed (same keys, same stores), so stopping and
/// starting `local --dir DIR` keeps the ordered log. Returns `client.toml`'s path.
pub async fn start(
    spec: &TestnetSpec,
    dir: &Path,
    sync: SyncPolicy,
) -> anyhow::Result<(PathBuf, Vec<RunningReplica>)> {
    let existing = dir.join("client.toml");
    let client = if existing.exists() {
        check_resumable(spec, &existing)?;
        existing
    } else {
        testnet::generate(spec, dir)?
    };
    let mut replicas = Vec::new();
    for i in 0..spec.replicas {
        let path = dir.join(format!("node-{i}/config.toml"));
        let mut loaded = LoadedConfig::load(&path)?;
        loaded.config.storage.sync = sync;
        match service::start(&loaded).await {
            Ok(replica) => replicas.push(replica),
            Err(e) => {
                // Stop the ones already running before their directory can go away.
                let _ = stop(replicas).await;
                return Err(e.context(format!("starting replica {i}")));
            }
        }
    }
    Ok((client, replicas))
}

/// Refuses to resume a cluster that differs from what was asked for.
fn check_resumable(spec: &TestnetSpec, client_toml: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(client_toml).with_context(|| format!("reading {}", client_toml.display()))?;
    let cluster: ordinal_consensus::ClusterConfig =
        toml::from_str(&text).with_context(|| format!("in {}", client_toml.display()))?;
    if cluster.replicas.len() != spec.replicas || cluster.protocol != spec.protocol {
        anyhow::bail!(
            "{} holds a {}-replica {} cluster, not {} {}: use another --dir",
            client_toml.display(),
            cluster.replicas.len(),
            cluster.protocol,
            spec.replicas,
            spec.protocol
        );
    }
    Ok(())
}

/// Stops every replica cleanly, all at once.
pub async fn stop(replicas: Vec<RunningReplica>) -> anyhow::Result<()> {
    let results = futures::future::join_all(replicas.into_iter().map(RunningReplica::stop)).await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>().map(drop)
}

/// The default spec for `local`.
pub fn spec(replicas: usize, protocol: ordinal_consensus::ProtocolKind, base_port: u16) -> TestnetSpec {
    TestnetSpec {
        replicas,
        protocol,
        host: IpAddr::from([127, 0, 0, 1]),
        base_port,
        docker: false,
        request_auth: ordinal_consensus::RequestAuth::Unsigned,
        weights: Vec::new(),
        weight_changes: None,
        spares: 0,
    }
}

/// How long `local` runs: until interrupted, `duration` passes, or a replica fails (its store
/// broke), which is reported as the error.
pub async fn wait(replicas: &mut [RunningReplica], duration: Option<Duration>) -> anyhow::Result<()> {
    let failure = async {
        if replicas.is_empty() {
            return std::future::pending().await;
        }
        let watchers = replicas.iter_mut().map(|replica| {
            let id = replica.id();
            Box::pin(async move { replica.failed().await.context(format!("replica {}", id.0)) })
        });
        futures::future::select_all(watchers).await.0
    };
    let until = async {
        match duration {
            Some(duration) => tokio::select! {
                _ = tokio::time::sleep(duration) => Ok(()),
                signal = crate::service::shutdown_signal() => signal,
            },
            None => crate::service::shutdown_signal().await,
        }
    };
    tokio::select! {
        done = until => done,
        failed = failure => Err(failed),
    }
}
