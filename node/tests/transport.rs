//! The transport under hostile input, and clean shutdown, against real `ordinal-node` processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{metric, scrape, serial, Cluster};
use ordinal_client::wire;
use ordinal_consensus::{Message, RequestAuth};
use ordinal_crypto::{KeyPair, ReplicaId, Signed};

fn replica_address(cluster: &Cluster, i: usize) -> std::net::SocketAddr {
    cluster.cluster.replicas[i].address.parse().unwrap()
}

async fn endpoint_as(key: &KeyPair, cluster: &Cluster) -> quinn::Endpoint {
    let committee = cluster.cluster.committee().unwrap();
    let config = wire::quic_client_config(key, &committee).unwrap();
    wire::client_endpoint(config, replica_address(cluster, 0)).unwrap()
}

/// Dials replica 0's address, expecting the server there to hold replica `expected`'s key (the
/// TLS server name pins it).
async fn dial_replica_0(
    endpoint: &quinn::Endpoint,
    cluster: &Cluster,
    expected: u16,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    endpoint
        .connect(
            replica_address(cluster, 0),
            &ordinal_crypto::tls::server_name(ReplicaId(expected)),
        )
        .unwrap()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_are_refused_and_bad_frames_do_not_crash_anything() {
    let _serial = serial().await;
    let cluster = Cluster::start(4, 21_600, RequestAuth::Unsigned);
    let client = cluster.client().await;
    client.submit(b"before".to_vec()).await.unwrap();

    // 1. A server whose key is not the one the cluster lists for the replica dialled: replica 0
    //    answers when dialled as "replica-1", and the pinned handshake refuses it.
    let stranger = KeyPair::from_seed([77; 32]);
    let endpoint = endpoint_as(&stranger, &cluster).await;
    let impostor = dial_replica_0(&endpoint, &cluster, 1).await;
    assert!(impostor.is_err(), "a replica with the wrong key was accepted");

    // 2. A stranger may connect, but only as a client: consensus frames on a unidirectional
    //    stream are never read, let alone handed to the protocol; the replica closes the
    //    connection (a replica it does not know yet, one that joins, then dials again).
    let connection = dial_replica_0(&endpoint, &cluster, 0).await.unwrap();
    let mut uni = connection.open_uni().await.unwrap();
    let forged = ordinal_consensus::Message::CatchUp {
        next_seq: 1,
        view: 99,
        stable_seq: 0,
    };
    let _ = uni.write_all(&wire::encode_frame(&forged).unwrap()).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .expect("a stranger's unidirectional stream closes its connection");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );

    // 3. A malformed client frame and an oversized one: each closes only its own stream.
    let connection = dial_replica_0(&endpoint, &cluster, 0).await.unwrap();
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(&u32::MAX.to_le_bytes()).await.unwrap();

    // 4. The same from a replica's own key (a Byzantine replica): garbage is counted and
    //    skipped, an oversized frame closes that peer's connection, nothing crashes.
    let replica_key = KeyPair::load(&cluster.node_dir(1).join("key")).unwrap();
    let endpoint = endpoint_as(&replica_key, &cluster).await;
    let byzantine = dial_replica_0(&endpoint, &cluster, 0).await.unwrap();
    let mut uni = byzantine.open_uni().await.unwrap();
    // First, in one write (so they are read and checked as one group), a correctly signed
    // PREPARE, one whose signature is not replica 1's, and a correctly signed COMMIT: only the
    // forged one is refused. They name a sequence number far past the window, so the protocol
    // drops the valid ones after verification.
    let committee = cluster.cluster.committee().unwrap();
    let vote = ordinal_consensus::messages::PrepareVote {
        view: 0,
        seq: 1 << 40,
        digest: ordinal_crypto::Digest::of(b"nothing"),
    };
    let signed = |key: &KeyPair| Signed::sign(vote, ReplicaId(1), key, &committee);
    let commit = Signed::sign(
        ordinal_consensus::messages::CommitVote {
            view: 0,
            seq: 1 << 40,
            digest: vote.digest,
        },
        ReplicaId(1),
        &replica_key,
        &committee,
    );
    let mut group = Vec::new();
    for message in [
        Message::Prepare(signed(&replica_key)),
        Message::Prepare(signed(&stranger)),
        Message::Commit(commit),
    ] {
        group.extend(wire::encode_frame(&message).unwrap());
    }
    uni.write_all(&group).await.unwrap();
    uni.write_all(&[3, 0, 0, 0, 0xde, 0xad, 0x00]).await.unwrap();
    uni.write_all(&(1u32 << 31).to_le_bytes()).await.unwrap();

    let port = cluster.metrics_port(0);
    common::wait_for("the bad frames to be counted", Duration::from_secs(10), || {
        let text = scrape(port);
        metric(&text, "ordinal_invalid_messages_total{reason=\"malformed\"}").unwrap_or(0.0) >= 2.0
            && metric(&text, "ordinal_invalid_messages_total{reason=\"crypto\"}").unwrap_or(0.0) >= 1.0
            && metric(&text, "ordinal_invalid_messages_total{reason=\"outside_window\"}").unwrap_or(0.0)
                >= 2.0
            && metric(
                &text,
                "ordinal_invalid_messages_total{reason=\"oversized_frame\"}",
            )
            .unwrap_or(0.0)
                >= 2.0
    });
    let text = scrape(port);
    assert_eq!(
        metric(&text, "ordinal_view").unwrap(),
        0.0,
        "a forged frame from a client must not move the view"
    );
    // Exactly the forged PREPARE was refused for its signature; the two valid votes passed
    // verification and reached the protocol, which dropped them as outside its window (waited
    // for above).
    assert_eq!(
        metric(&text, "ordinal_invalid_messages_total{reason=\"crypto\"}"),
        Some(1.0)
    );
    // Everything still works.
    let receipt = client.submit(b"after".to_vec()).await.unwrap();
    assert!(receipt.seq >= 2);
    drop(uni);
    drop(byzantine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_contract_and_pass_promtool() {
    let _serial = serial().await;
    let cluster = Cluster::start(4, 21_800, RequestAuth::Unsigned);
    let client = cluster.client().await;
    for result in client
        .submit_many((0..50).map(|i| vec![i as u8; 64]).collect())
        .await
    {
        result.unwrap();
    }
    // The client returns on the first receipt; replica 1 may publish its progress a moment later.
    let mut text = String::new();
    common::wait_for(
        "replica 1 to report a committed batch",
        Duration::from_secs(10),
        || {
            text = scrape(cluster.metrics_port(1));
            metric(&text, "ordinal_committed_seq").is_some_and(|seq| seq >= 1.0)
        },
    );
    for name in [
        "ordinal_committed_seq",
        "ordinal_view",
        "ordinal_view_changes_total",
        "ordinal_commit_latency_seconds_bucket",
        "ordinal_batch_transactions_bucket",
        "ordinal_replica_weight{replica=\"0\"}",
        "ordinal_peer_rtt_seconds{peer=\"0\"}",
        "ordinal_messages_received_total{kind=",
        "ordinal_storage_sync_seconds_bucket",
        "ordinal_late_votes_unchecked_total",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
    assert!(metric(&text, "ordinal_committed_seq").unwrap() >= 1.0);
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "promtool check metrics failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Err(_) => {
            eprintln!("promtool not installed: skipping `promtool check metrics` (.ci/run installs it)")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_acknowledged_batches_survive() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(4, 22_000, RequestAuth::Unsigned);
    let client = cluster.client().await;
    let receipts: Vec<_> = client
        .submit_many((0..200).map(|i| format!("durable {i}").into_bytes()).collect())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let high = receipts.iter().map(|r| r.seq).max().unwrap();
    for i in 0..4 {
        let status = cluster.terminate(i);
        assert!(
            status.success(),
            "replica {i} exited with {status}\n{}",
            cluster.replica_log(i)
        );
    }
    for i in 0..4 {
        cluster.start_replica(i);
    }
    let client: Arc<_> = Arc::new(cluster.client().await);
    for i in 0..4 {
        let log = cluster.log_of(&client, i, high, Duration::from_secs(20)).await;
        for receipt in &receipts {
            let request = &log[receipt.seq as usize - 1].batch.requests()[receipt.index as usize];
            assert_eq!(request.digest(), receipt.request_digest);
        }
    }
    // And the restarted cluster keeps ordering.
    assert!(client.submit(b"after restart".to_vec()).await.unwrap().seq > high);
}
