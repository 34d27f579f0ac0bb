//! `ordinal-node local` as a library: a whole cluster in one process, stopped and resumed from
//! the same directory with its ordered log intact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use ordinal_client::{load_cluster, Client, ClientOptions};
use ordinal_consensus::ProtocolKind;
use ordinal_node::config::SyncPolicy;
use ordinal_node::local;

async fn connected_client(client_toml: &std::path::Path) -> Client {
    let client = Client::connect(load_cluster(client_toml).unwrap(), ClientOptions::default())
        .await
        .unwrap();
    assert!(client.wait_connected(4, Duration::from_secs(20)).await);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_cluster_resumes_from_its_directory() {
    let _serial = common::serial().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = local::spec(4, ProtocolKind::Pbft, 22_200);

    let (client_toml, replicas) = local::start(&spec, dir.path(), SyncPolicy::Always).await.unwrap();
    let client = connected_client(&client_toml).await;
    let first = client.submit(b"before the restart".to_vec()).await.unwrap();
    drop(client);
    local::stop(replicas).await.unwrap();

    // Same directory: same keys, same stores, the log goes on where it was.
    let (again, replicas) = local::start(&spec, dir.path(), SyncPolicy::Always).await.unwrap();
    assert_eq!(again, client_toml);
    let client = connected_client(&again).await;
    let second = client.submit(b"after the restart".to_vec()).await.unwrap();
    assert!(second.seq > first.seq, "{} after {}", second.seq, first.seq);
    let (batches, _) = client.read_batches(0, first.seq, 1).await.unwrap();
    let request = &batches[0].batch.requests()[first.index as usize];
    assert_eq!(request.payload(), b"before the restart");
    drop(client);
    local::stop(replicas).await.unwrap();

    // A directory holding another shape of cluster is refused, not overwritten.
    let other = local::spec(7, ProtocolKind::Pbft, 22_200);
    let refused = local::start(&other, dir.path(), SyncPolicy::Always).await;
    let message = format!(
        "{:#}",
        refused
            .err()
            .expect("a 7-replica start over a 4-replica directory")
    );
    assert!(message.contains("4-replica"), "{message}");
}
