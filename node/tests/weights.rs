//! Weights that follow measurements on a real cluster: five `ordinal-node` processes, one
//! replica slowed by the delay knobs, each replica ordering its latency reports at every
//! stable checkpoint. The weights move off the slow replica through the log, every replica and
//! the client agree on them, and nothing acknowledged is lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{serial, Cluster};
use ordinal_consensus::{ProtocolKind, RequestAuth, WeightsConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_move_off_a_slow_replica_through_the_log() {
    weights_move_off_a_slow_replica(ProtocolKind::Pbft, 21_500, 4, "peer_receive_delay_ms = 20").await;
}

/// The same in the linear mode, where each weight epoch runs a chain of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_weights_move_off_a_slow_replica_through_the_log() {
    weights_move_off_a_slow_replica(ProtocolKind::Linear, 24_000, 4, "peer_receive_delay_ms = 20").await;
}

/// PBFT with its primary behind a slow link both ways. Votes timed to the PREPARE made the
/// primary look instant, so the reports made it heavy and it kept leading. Timed to the
/// COMMIT, it turns light, and the lead moves to a heavy replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_primary_loses_weight_and_the_lead() {
    let delays = "peer_receive_delay_ms = 20\npeer_send_delay_ms = 20";
    let weights = weights_move_off_a_slow_replica(ProtocolKind::Pbft, 25_000, 0, delays).await;
    for (replica, (leader, weights)) in weights.iter().enumerate() {
        assert_ne!(*leader, 0, "replica {replica} still follows the slow primary");
        assert_eq!(
            weights[*leader as usize], 2,
            "replica {replica} follows a light primary"
        );
    }
}

/// Runs 600 transactions with replica `slow` slowed by the `[testing]` knobs `delays`; returns
/// each replica's leader and weights in force at the end.
async fn weights_move_off_a_slow_replica(
    protocol: ProtocolKind,
    base_port: u16,
    slow: usize,
    delays: &str,
) -> Vec<(u16, Vec<u64>)> {
    let _serial = serial().await;
    let mut cluster = Cluster::generate_weighted(
        5,
        base_port,
        RequestAuth::Unsigned,
        protocol,
        Some(WeightsConfig {
            min: 1,
            max: 2,
            reports_every: 1,
            checkpoint_interval: 4,
            log_window: 16,
        }),
    );
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(cluster.node_dir(slow).join("config.toml"))
        .unwrap();
    writeln!(config, "\n[testing]\n{delays}").unwrap();
    for i in 0..5 {
        cluster.start_replica(i);
    }
    let client = cluster.client().await;
    let mut receipts = Vec::new();
    for round in 0..120 {
        let payloads: Vec<Vec<u8>> = (0..5).map(|i| format!("w{round}-{i}").into_bytes()).collect();
        for result in client.submit_many(payloads).await {
            receipts.push(result.expect("submission failed"));
        }
    }
    assert_eq!(receipts.len(), 600);
    let high = receipts.iter().map(|r| r.seq).max().unwrap();

    // The client verified every receipt with the weights of its epoch; the logs agree.
    let mut logs = Vec::new();
    for i in 0..5 {
        logs.push(cluster.log_of(&client, i, high, Duration::from_secs(30)).await);
    }
    common::assert_same_logs(&logs);
    common::assert_receipts_in_log(&receipts, &logs[0]);
    let epochs: std::collections::BTreeSet<u64> = logs[0].iter().map(|b| b.certificate.epoch).collect();
    println!("{protocol}: certificate epochs in the log: {epochs:?}");
    assert!(
        epochs.len() >= 2,
        "certificates of more than one epoch: {epochs:?}"
    );

    // A fresh client subscribing past the weight change learns the epochs from the log first,
    // then checks the batches it reads with their epoch's weights.
    let fresh = cluster.client().await;
    let mut tail = fresh.subscribe(high - 2);
    let batch = tokio::time::timeout(Duration::from_secs(30), tail.next())
        .await
        .expect("subscription timed out")
        .expect("subscription from past the weight change");
    assert_eq!(batch.seq(), high - 2);
    assert!(batch.certificate.epoch >= 1, "epoch {}", batch.certificate.epoch);

    // Once every log holds the acknowledged batches, every replica reports the same weights
    // in force, heavy on two fast replicas.
    let mut weights = Vec::new();
    let mut leaders = Vec::new();
    for i in 0..5 {
        let status = client.replica_status(i).await.expect("status");
        weights.push(status.weights);
        leaders.push(status.leader);
    }
    println!("{protocol}: weights in force as each replica reports them: {weights:?} (log through {high})");
    assert!(weights.iter().all(|w| *w == weights[0]), "{weights:?}");
    assert_eq!(weights[0][slow], 1, "the slow replica is not heavy: {weights:?}");
    let scrape = common::scrape(cluster.metrics_port(0));
    let epoch = common::metric(&scrape, "ordinal_weight_epoch").unwrap();
    // Epoch 1 moves weights onto two fast replicas; a later re-ranking among the fast four
    // passes through the flat vector (an even epoch).
    assert!(epoch >= 1.0, "ordinal_weight_epoch {epoch}");
    if epoch % 2.0 == 1.0 {
        assert_eq!(weights[0].iter().filter(|w| **w == 2).count(), 2, "{weights:?}");
    }
    leaders.into_iter().zip(weights).collect()
}
