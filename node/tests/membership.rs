//! Membership changes on a real cluster: four `ordinal-node` processes under load; the
//! operator adds a fifth with `ordinal-node membership join` (it starts empty and catches up
//! by state transfer), then removes a founding member with `membership leave`. Afterwards
//! the removed replica and one more founding member stop: the remaining three reach a quorum
//! of the new membership only because the newcomer votes. Every acknowledged transaction is in
//! every log, and the logs agree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{metric, path_str, serial, try_scrape, Cluster};
use ordinal_client::Receipt;
use ordinal_consensus::{ProtocolKind, RequestAuth, WeightsConfig};
use ordinal_node::testnet::{TestnetSpec, OPERATOR_KEY_FILE};

/// Runs `ordinal-node membership ARGS` and returns the first sequence number of the epoch it
/// scheduled.
async fn membership(cluster: &Cluster, args: &[&str]) -> u64 {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordinal-node"));
    command
        .arg("membership")
        .args(args)
        .args(["--cluster", path_str(&cluster.client_toml)])
        .arg("--operator-key")
        .arg(cluster.dir.path().join(OPERATOR_KEY_FILE));
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "membership {args:?} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    println!("membership {args:?}: {}", stdout.trim());
    let line = stdout.lines().find(|l| l.starts_with("scheduled:")).unwrap();
    line.split("from seq ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn committed_seq(cluster: &Cluster, replica: usize) -> u64 {
    try_scrape(cluster.metrics_port(replica))
        .ok()
        .and_then(|s| metric(&s, "ordinal_committed_seq"))
        .unwrap_or(0.0) as u64
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_grows_to_five_and_shrinks_to_four_under_load() {
    grow_and_shrink(ProtocolKind::Pbft, 22_600).await;
}

/// The same in the linear mode, where each membership runs a chain of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linear_cluster_grows_to_five_and_shrinks_to_four_under_load() {
    grow_and_shrink(ProtocolKind::Linear, 22_800).await;
}

async fn grow_and_shrink(protocol: ProtocolKind, base_port: u16) {
    let _serial = serial().await;
    let mut cluster = Cluster::generate_spec(TestnetSpec {
        replicas: 4,
        protocol,
        host: [127, 0, 0, 1].into(),
        base_port,
        docker: false,
        request_auth: RequestAuth::Signed,
        weights: Vec::new(),
        weight_changes: Some(WeightsConfig {
            min: 1,
            max: 1,
            reports_every: 0,
            checkpoint_interval: 4,
            log_window: 16,
        }),
        spares: 1,
    });
    for i in 0..4 {
        cluster.start_replica(i);
    }
    let client = cluster.client().await;

    // Load for the whole test: rounds of five concurrent submissions.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut receipts: Vec<Receipt> = Vec::new();
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let payloads: Vec<Vec<u8>> = (0..5).map(|i| format!("m{round}-{i}").into_bytes()).collect();
                for result in client.submit_many(payloads).await {
                    receipts.push(result.expect("an acknowledged submission failed"));
                }
                round += 1;
            }
            receipts
        })
    };
    wait_until("some load", Duration::from_secs(20), || {
        committed_seq(&cluster, 0) > 10
    })
    .await;

    // Grow: the operator adds replica 4, which then starts with an empty store.
    let node_config = cluster.node_dir(4).join("config.toml");
    let joined_from = membership(&cluster, &["join", "--node-config", path_str(&node_config)]).await;
    cluster.start_replica(4);
    wait_until(
        "replica 4 to catch up past its epoch",
        Duration::from_secs(60),
        || committed_seq(&cluster, 4) > joined_from + 8,
    )
    .await;
    let status = client.replica_status(0).await.unwrap();
    assert_eq!(status.weights, vec![1; 5], "five members in force");

    // Shrink: replica 1 leaves.
    let left_from = membership(&cluster, &["leave", "--replica", "1"]).await;
    wait_until("the leave to take effect", Duration::from_secs(60), || {
        committed_seq(&cluster, 0) > left_from + 4 && committed_seq(&cluster, 4) > left_from + 4
    })
    .await;
    // Members now 0, 2, 3, 4 (quorum 3). Stop 1 (gone) and 2: 0, 3 and 4 carry on.
    cluster.kill(1);
    cluster.kill(2);
    let before = committed_seq(&cluster, 0);
    wait_until("progress without 1 and 2", Duration::from_secs(60), || {
        committed_seq(&cluster, 0) > before + 10
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let receipts = load.await.unwrap();
    let high = receipts.iter().map(|r| r.seq).max().unwrap();
    println!(
        "{protocol}: {} acknowledged, up to seq {high}; joined from {joined_from}, left from {left_from}",
        receipts.len()
    );
    assert!(
        receipts.iter().any(|r| r.seq > before),
        "receipts after 1 and 2 stopped"
    );

    // Same logs on 0 and 3 (read through the SDK, certificate-verified with each epoch's
    // membership), and on 4 (read from its store once stopped).
    let mut logs = Vec::new();
    for i in [0, 3] {
        logs.push(cluster.log_of(&client, i, high, Duration::from_secs(30)).await);
    }
    wait_until(
        "replica 4 to hold every acknowledged batch",
        Duration::from_secs(30),
        || committed_seq(&cluster, 4) >= high,
    )
    .await;
    // The client learnt of replica 4 from the log (its address and key) and dials it: 4
    // answers a status call, and its log reads like anyone's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        match client.replica_status(4).await {
            Ok(status) => break status,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "replica 4 unreachable: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(
        status.weights,
        vec![1, 0, 1, 1, 1],
        "replica 4 reports the membership in force"
    );
    logs.push(cluster.log_of(&client, 4, high, Duration::from_secs(30)).await);
    let status = cluster.terminate(4);
    assert!(status.success(), "replica 4 stopped cleanly");
    let loaded = ordinal_node::config::LoadedConfig::load(&node_config).unwrap();
    let store = ordinal_node::store::Store::open(
        &loaded.data_dir(),
        ordinal_node::config::SyncPolicy::Always,
        &cluster.cluster.cluster_id().unwrap(),
    )
    .unwrap();
    let joiner_log: Vec<_> = store.log().map(|b| b.unwrap()).collect();
    logs.push(joiner_log);
    common::assert_same_logs(&logs);
    assert!(logs.iter().all(|log| log.len() as u64 >= high));
    common::assert_receipts_in_log(&receipts, &logs[0]);
    let epochs: std::collections::BTreeSet<u64> = logs[0].iter().map(|b| b.certificate.epoch).collect();
    println!("certificate epochs in the log: {epochs:?}");
    assert_eq!(epochs, [0, 1, 2].into(), "certificates of all three memberships");
    // Replica 4 voted: it signed commit certificates of the epochs it belongs to.
    let signed_by_4 = logs[0]
        .iter()
        .filter(|b| b.certificate.votes.iter().any(|(id, _)| id.0 == 4))
        .count();
    println!("{signed_by_4} certificates carry replica 4's vote");
    assert!(signed_by_4 > 0);
}
