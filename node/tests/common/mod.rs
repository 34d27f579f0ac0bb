//! A real cluster for integration tests: `ordinal-node run` processes on 127.0.0.1, each with
//! its own RocksDB directory, driven through the client SDK.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ordinal_client::{Client, ClientOptions, ClusterConfig, CommittedBatch, Receipt};
use ordinal_consensus::{ProtocolKind, RequestAuth};
use ordinal_node::testnet::{generate, TestnetSpec};

/// Cluster tests start four processes each: running two at once on a small machine only
/// makes both slower and their timeouts flakier.
/// (A tokio mutex: each test has its own runtime, and the guard is held across awaits.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub client_toml: PathBuf,
    pub cluster: ClusterConfig,
    pub base_port: u16,
    children: BTreeMap<usize, Child>,
}

impl Cluster {
    /// Generates an n-replica cluster; starts nothing.
    pub fn generate(replicas: usize, base_port: u16, request_auth: RequestAuth) -> Cluster {
        Self::generate_running(replicas, base_port, request_auth, ProtocolKind::Pbft)
    }

    /// Generates an n-replica cluster running `protocol`; starts nothing.
    pub fn generate_running(
        replicas: usize,
        base_port: u16,
        request_auth: RequestAuth,
        protocol: ProtocolKind,
    ) -> Cluster {
        Self::generate_weighted(replicas, base_port, request_auth, protocol, None)
    }

    /// Generates a cluster whose weights change through the log as `weight_changes` says.
    pub fn generate_weighted(
        replicas: usize,
        base_port: u16,
        request_auth: RequestAuth,
        protocol: ProtocolKind,
        weight_changes: Option<ordinal_consensus::WeightsConfig>,
    ) -> Cluster {
        Self::generate_spec(TestnetSpec {
            replicas,
            protocol,
            host: [127, 0, 0, 1].into(),
            base_port,
            docker: false,
            request_auth,
            weights: Vec::new(),
            weight_changes,
            spares: 0,
        })
    }

    /// Generates the cluster `spec` describes; starts nothing.
    pub fn generate_spec(spec: TestnetSpec) -> Cluster {
        let base_port = spec.base_port;
        let dir = tempfile::tempdir().unwrap();
        let client_toml = generate(&spec, dir.path()).unwrap();
        let cluster = ordinal_client::load_cluster(&client_toml).unwrap();
        Cluster {
            dir,
            client_toml,
            cluster,
            base_port,
            children: BTreeMap::new(),
        }
    }

    /// Generates and starts every replica.
    pub fn start(replicas: usize, base_port: u16, request_auth: RequestAuth) -> Cluster {
        Self::start_running(replicas, base_port, request_auth, ProtocolKind::Pbft)
    }

    /// Generates and starts every replica of a cluster running `protocol`.
    pub fn start_running(
        replicas: usize,
        base_port: u16,
        request_auth: RequestAuth,
        protocol: ProtocolKind,
    ) -> Cluster {
        let mut cluster = Self::generate_running(replicas, base_port, request_auth, protocol);
        for i in 0..replicas {
            cluster.start_replica(i);
        }
        cluster
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}"))
    }

    pub fn start_replica(&mut self, i: usize) {
        let dir = self.node_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("replica.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ordinal-node"))
            .args(["run", "--config"])
            .arg(dir.join("config.toml"))
            .env("ORDINAL_LOG", "info,quinn=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.insert(i, child);
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children.remove(&i) {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let mut child = self.children.remove(&i).unwrap();
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("replica {i} did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn replica_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.node_dir(i).join("replica.log")).unwrap_or_default()
    }

    pub async fn client(&self) -> Client {
        self.client_with(false).await
    }

    /// A client that asks one replica per receipt (`ClientOptions::one_receipt`) if `one_receipt`.
    pub async fn client_with(&self, one_receipt: bool) -> Client {
        let client = Client::connect(
            self.cluster.clone(),
            ClientOptions {
                timeout: Duration::from_secs(30),
                retry_interval: Duration::from_millis(1500),
                call_timeout: Duration::from_secs(2),
                one_receipt,
                ..ClientOptions::default()
            },
        )
        .await
        .unwrap();
        let live = self.children.len();
        assert!(
            client.wait_connected(live, Duration::from_secs(20)).await,
            "could not connect to {live} replicas"
        );
        client
    }

    /// Replica i's ordered log from sequence number 1, every batch certificate-verified by the
    /// SDK, read until it holds at least `at_least` batches (waiting up to `timeout`).
    pub async fn log_of(
        &self,
        client: &Client,
        i: usize,
        at_least: u64,
        timeout: Duration,
    ) -> Vec<CommittedBatch> {
        let deadline = Instant::now() + timeout;
        let mut log: Vec<CommittedBatch> = Vec::new();
        loop {
            let next = log.len() as u64 + 1;
            match client.read_batches(i, next, 256).await {
                Ok((batches, committed)) => {
                    let empty = batches.is_empty();
                    log.extend(batches);
                    if empty && log.len() as u64 >= at_least.max(committed) {
                        return log;
                    }
                    if !empty {
                        continue;
                    }
                }
                Err(ordinal_client::ClientError::Timeout(_)) => {}
                Err(e) => panic!("replica {i}: {e}"),
            }
            if Instant::now() > deadline {
                panic!(
                    "replica {i} holds {} batches, expected at least {at_least}\n{}",
                    log.len(),
                    self.replica_log(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn metrics_port(&self, i: usize) -> u16 {
        self.base_port + 100 + i as u16
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// GET /metrics from a replica.
pub fn scrape(port: u16) -> String {
    try_scrape(port).unwrap()
}

/// GET /metrics from a replica, or the I/O error (it is not up yet, or gone).
pub fn try_scrape(port: u16) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// The value of one sample line (`name{labels} value`) in a scrape, if present.
pub fn metric(scrape: &str, sample: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|line| line.starts_with(sample) && line[sample.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Every (client, nonce) in `log`, with the position it was ordered at: its first. A request
/// may sit in a later batch again after a view change (the new primary re-queues what it has
/// not executed while the view's re-proposals carry it too); execution skips such a copy and
/// answers with the first position, as the simulator's `redundant_copies` counts.
pub fn positions(log: &[CommittedBatch]) -> BTreeMap<(String, u64), (u64, u32)> {
    let mut out = BTreeMap::new();
    let mut copies = 0;
    for committed in log {
        for (index, request) in committed.batch.requests().iter().enumerate() {
            let key = (request.client.to_hex(), request.nonce);
            if out.contains_key(&key) {
                copies += 1;
                continue;
            }
            out.insert(key, (committed.seq(), index as u32));
        }
    }
    if copies > 0 {
        println!("{copies} redundant copies in the log (skipped at execution)");
    }
    out
}

pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Every receipt names a request that sits exactly there in `log`.
pub fn assert_receipts_in_log(receipts: &[Receipt], log: &[CommittedBatch]) {
    for receipt in receipts {
        let batch = &log[receipt.seq as usize - 1];
        assert_eq!(batch.seq(), receipt.seq);
        let request = &batch.batch.requests()[receipt.index as usize];
        assert_eq!(
            request.digest(),
            receipt.request_digest,
            "acknowledged request lost at {}",
            receipt.seq
        );
    }
}

/// The same batches at the same sequence numbers. Each replica keeps the commit certificate it
/// assembled or received first, so signer sets, and the view or round a certificate was formed
/// in, may differ; the certified (seq, digest) may not, and each was verified when read.
pub fn assert_same_logs(logs: &[Vec<CommittedBatch>]) {
    let shortest = logs.iter().map(Vec::len).min().unwrap();
    let entries = |log: &[CommittedBatch]| -> Vec<_> {
        log[..shortest]
            .iter()
            .map(|b| {
                (
                    b.seq(),
                    b.batch.digest(),
                    b.certificate.statement.seq,
                    b.certificate.statement.digest,
                )
            })
            .collect()
    };
    let reference = entries(&logs[0]);
    for (i, log) in logs.iter().enumerate() {
        let mine = entries(log);
        if let Some(k) = (0..shortest).find(|&k| mine[k] != reference[k]) {
            panic!(
                "replica {i} disagrees with the first log at position {k}: {:?} against {:?} \
                 (certificates {:?} against {:?})",
                mine[k], reference[k], log[k].certificate.statement, logs[0][k].certificate.statement
            );
        }
    }
}
