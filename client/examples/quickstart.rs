//! Submit a few transactions, print their verified receipts, then read them back from the log.
//!
//! ```text
//! ordinal-node local --dir /tmp/ordinal &          # prints `cluster: /tmp/ordinal/client.toml`
//! cargo run -p ordinal-client --example quickstart -- /tmp/ordinal/client.toml
//! ```

use std::time::Duration;

use ordinal_client::{load_cluster, Client, ClientOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: quickstart PATH/TO/client.toml"))?;
    let cluster = load_cluster(path.as_ref())?;
    let client = Client::connect(cluster, ClientOptions::default()).await?;
    client.wait_connected(1, Duration::from_secs(5)).await;

    // Pipelined: all three are in flight at once; each receipt's commit certificate has been
    // checked against the cluster's keys and weights before it is returned.
    let payloads = ["alice pays bob 5", "bob pays carol 2", "carol pays alice 1"];
    let receipts = client
        .submit_many(payloads.iter().map(|p| p.as_bytes().to_vec()).collect())
        .await;
    let mut first = u64::MAX;
    for (payload, receipt) in payloads.iter().zip(receipts) {
        let receipt = receipt?;
        first = first.min(receipt.seq);
        println!(
            "{payload:>20} -> seq {} index {} (view {})",
            receipt.seq,
            receipt.index,
            receipt.view()
        );
    }

    // Read the ordered log back: every batch arrives certificate-verified and in order.
    let mut log = client.subscribe(first);
    let batch = log.next().await?;
    println!(
        "batch {} holds {} transactions",
        batch.seq(),
        batch.batch.requests().len()
    );
    Ok(())
}
