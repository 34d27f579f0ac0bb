//! Integration tests with real processes: `ordinal-node run` replicas on 127.0.0.1 with QUIC,
//! mutual TLS and RocksDB in temporary directories, driven by the client SDK.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_receipts_in_log, assert_same_logs, positions, serial, Cluster};
use futures::StreamExt as _;
use ordinal_client::{Client, Receipt};
use ordinal_consensus::ProtocolKind;
use ordinal_consensus::RequestAuth;

/// Submits until `stop`, `concurrency` at a time; returns every verified receipt and the
/// number of failed submissions.
async fn load(client: Client, tag: u64, concurrency: usize, stop: Arc<AtomicBool>) -> (Vec<Receipt>, u64) {
    let counter = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let stream = futures::stream::iter(std::iter::from_fn(|| {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let client = client.clone();
        let failures = failures.clone();
        Some(async move {
            let mut payload = format!("client {tag} tx {n} ").into_bytes();
            payload.resize(128, b'.');
            match client.submit(payload).await {
                Ok(receipt) => Some(receipt),
                Err(_) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        })
    }));
    let receipts: Vec<Receipt> = stream
        .buffer_unordered(concurrency)
        .filter_map(|r| async { r })
        .collect()
        .await;
    (receipts, failures.load(Ordering::Relaxed))
}

fn spawn_load(
    clients: &[Client],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Vec<Receipt>, u64)>> {
    clients
        .iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(load(c.clone(), i as u64, 32, stop.clone())))
        .collect()
}

async fn collect(handles: Vec<tokio::task::JoinHandle<(Vec<Receipt>, u64)>>) -> (Vec<Receipt>, u64) {
    let mut all = Vec::new();
    let mut failed = 0;
    for handle in handles {
        let (receipts, failures) = handle.await.unwrap();
        all.extend(receipts);
        failed += failures;
    }
    (all, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_order_ten_thousand_transactions_from_four_clients() {
    let _serial = serial().await;
    let cluster = Cluster::start(4, 21_000, RequestAuth::Unsigned);
    let mut clients = Vec::new();
    for _ in 0..4 {
        // Clients that ask one replica per receipt: the ordering checks below hold either way,
        // and the fan-out check at the end covers the option.
        clients.push(cluster.client_with(true).await);
    }
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let client = client.clone();
            tokio::spawn(async move {
                let payloads: Vec<Vec<u8>> = (0..2500).map(|i| format!("c{c}-{i}").into_bytes()).collect();
                let mut receipts = Vec::new();
                for chunk in payloads.chunks(250) {
                    for result in client.submit_many(chunk.to_vec()).await {
                        receipts.push(result.expect("submission failed"));
                    }
                }
                receipts
            })
        })
        .collect();
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.extend(task.await.unwrap());
    }
    assert_eq!(receipts.len(), 10_000);
    let committee = clients[0].committee().clone();
    for receipt in &receipts {
        receipt
            .certificate
            .verify(&committee)
            .expect("receipt certificate");
    }
    let high = receipts.iter().map(|r| r.seq).max().unwrap();
    let mut logs = Vec::new();
    for i in 0..4 {
        logs.push(
            cluster
                .log_of(&clients[0], i, high, Duration::from_secs(30))
                .await,
        );
    }
    assert_same_logs(&logs);
    assert_eq!(
        positions(&logs[0]).len(),
        10_000,
        "every transaction exactly once"
    );
    assert_receipts_in_log(&receipts, &logs[0]);

    // Fan-out: every submission goes to all four replicas, and one receipt comes back, not
    // four (a slow answer makes a client ask everyone, so a few more).
    let (mut submissions, mut sent_receipts) = (0.0, 0.0);
    for i in 0..4 {
        let scrape = common::scrape(cluster.metrics_port(i));
        submissions += common::metric(&scrape, "ordinal_client_requests_total").unwrap();
        sent_receipts += common::metric(&scrape, "ordinal_receipts_total").unwrap();
    }
    println!("10,000 transactions: {submissions} submissions received, {sent_receipts} receipts sent");
    assert!(
        submissions >= 40_000.0,
        "{submissions} submissions for 10,000 transactions"
    );
    assert!(sent_receipts >= 10_000.0, "{sent_receipts} receipts");
    // Unsigned mode keeps no memory of admitted requests (it measured slower there).
    let scrape = common::scrape(cluster.metrics_port(1));
    assert_eq!(
        common::metric(&scrape, "ordinal_admitted_lookups_total{result=\"found\"}"),
        None
    );
    assert!(
        sent_receipts < 25_000.0,
        "{sent_receipts} receipts for 10,000 transactions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_restarts_and_catches_up() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(4, 21_200, RequestAuth::Signed);
    let clients = vec![cluster.client().await, cluster.client().await];
    let stop = Arc::new(AtomicBool::new(false));
    let handles = spawn_load(&clients, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Signed mode: backups find the proposals' requests among those they admitted, and skip
    // the second signature check for them.
    for backup in 1..4 {
        let scrape = common::scrape(cluster.metrics_port(backup));
        let found =
            common::metric(&scrape, "ordinal_admitted_lookups_total{result=\"found\"}").unwrap_or(0.0);
        assert!(found > 0.0, "replica {backup} found no admitted request: {found}");
    }
    cluster.kill(3);
    let before = cluster
        .log_of(&clients[0], 0, 1, Duration::from_secs(10))
        .await
        .len() as u64;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = cluster
        .log_of(&clients[0], 0, 1, Duration::from_secs(10))
        .await
        .len() as u64;
    assert!(
        during > before,
        "load stopped while a backup was down ({before} -> {during})"
    );
    cluster.start_replica(3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (receipts, _) = collect(handles).await;
    let high = receipts.iter().map(|r| r.seq).max().unwrap();
    let primary_log = cluster
        .log_of(&clients[0], 0, high, Duration::from_secs(30))
        .await;
    let restarted_log = cluster
        .log_of(&clients[0], 3, primary_log.len() as u64, Duration::from_secs(60))
        .await;
    assert_same_logs(&[primary_log.clone(), restarted_log]);
    assert_receipts_in_log(&receipts, &primary_log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_changes_the_view_and_loses_nothing() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(4, 21_400, RequestAuth::Unsigned);
    let clients = vec![cluster.client().await, cluster.client().await];
    let stop = Arc::new(AtomicBool::new(false));
    let handles = spawn_load(&clients, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(0);
    let at_kill = cluster
        .log_of(&clients[0], 1, 1, Duration::from_secs(10))
        .await
        .len() as u64;
    // Load continues in a later view.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = clients[0].replica_status(1).await;
        if let Ok(status) = status {
            if status.view >= 1 && !status.changing_view && status.committed_seq > at_kill + 2 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress after the primary died\n{}",
            cluster.replica_log(1)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (receipts, _) = collect(handles).await;
    let high = receipts.iter().map(|r| r.seq).max().unwrap();
    let mut logs = Vec::new();
    for i in 1..4 {
        logs.push(
            cluster
                .log_of(&clients[0], i, high, Duration::from_secs(30))
                .await,
        );
    }
    assert_same_logs(&logs);
    assert_receipts_in_log(&receipts, &logs[0]);
    // Each acknowledged request was acknowledged where it was ordered first, never at a
    // redundant copy a view change left in a later batch.
    let ordered = positions(&logs[0]);
    for receipt in &receipts {
        let batch = &logs[0][receipt.seq as usize - 1];
        let request = &batch.batch.requests()[receipt.index as usize];
        assert_eq!(
            ordered.get(&(request.client.to_hex(), request.nonce)),
            Some(&(receipt.seq, receipt.index)),
            "acknowledged at a copy"
        );
    }
    assert!(
        receipts.iter().any(|r| r.view() >= 1),
        "no receipt from the new view"
    );
}

/// The linear mode over the same transport and store: a killed replica is a silent leader for
/// every fourth round (each costs one timeout), its restart catches up, and all four logs end
/// identical, with every receipt in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linear_cluster_survives_a_killed_leader_and_its_restart() {
    let _serial = serial().await;
    let mut cluster = Cluster::start_running(4, 22_400, RequestAuth::Unsigned, ProtocolKind::Linear);
    let clients = vec![cluster.client().await, cluster.client().await];
    let stop = Arc::new(AtomicBool::new(false));
    let handles = spawn_load(&clients, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(1);
    let at_kill = cluster
        .log_of(&clients[0], 0, 1, Duration::from_secs(10))
        .await
        .len() as u64;
    // Rounds led by the dead replica time out (and the rounds before them, whose votes it
    // would collect); the others still commit.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = clients[0].replica_status(0).await;
        if let Ok(status) = &status {
            // Eight batches take at least eight rounds, two of them the dead replica's.
            if status.committed_seq > at_kill + 8 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress after a leader died (killed at {at_kill}): {status:?}\n{}",
            cluster.replica_log(0)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.start_replica(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (receipts, _) = collect(handles).await;
    let high = receipts.iter().map(|r| r.seq).max().unwrap();
    let mut logs = Vec::new();
    for i in 0..4 {
        logs.push(
            cluster
                .log_of(&clients[0], i, high, Duration::from_secs(60))
                .await,
        );
    }
    assert_same_logs(&logs);
    assert_receipts_in_log(&receipts, &logs[0]);
}
