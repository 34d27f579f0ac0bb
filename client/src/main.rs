//! `ordinal`: the client command-line tool (submit, tail, bench, status), built on the SDK.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use ordinal_client::{load_cluster, wire, Client, ClientOptions};
use ordinal_crypto::Digest;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "ordinal",
    version,
    about = "Ordinal client: submit transactions, read the ordered log, benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit each PAYLOAD and print its verified position as one JSON line.
    Submit {
        /// The cluster (`client.toml`).
        #[arg(long)]
        cluster: PathBuf,
        /// Seconds to wait for each receipt.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Transactions (UTF-8 strings).
        #[arg(required = true)]
        payloads: Vec<String>,
    },
    /// Print the ordered log, one JSON line per transaction, each batch certificate-verified.
    Tail {
        /// The cluster (`client.toml`).
        #[arg(long)]
        cluster: PathBuf,
        /// Read only from this replica.
        #[arg(long)]
        replica: Option<u16>,
        /// First sequence number.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last sequence number.
        #[arg(long)]
        to: Option<u64>,
        /// Keep waiting for new batches.
        #[arg(long)]
        follow: bool,
    },
    /// Open-loop load at a fixed rate; prints throughput and latency percentiles (after one
    /// untimed warm-up transaction per client).
    Bench {
        /// The cluster (`client.toml`).
        #[arg(long)]
        cluster: PathBuf,
        /// Transactions per second, over all clients.
        #[arg(long)]
        rate: u64,
        /// Seconds of load.
        #[arg(long)]
        duration: u64,
        /// Bytes per transaction.
        #[arg(long)]
        tx_size: usize,
        /// Concurrent clients (each with its own key and connections).
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Seconds a transaction may wait for its receipt before it counts as an error.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Write every acknowledged transaction here, one JSON line each:
        /// `{"digest","seq","index","at_ms"}` (`at_ms`: Unix time of the verified receipt).
        /// Fault tests check each of them against the replicas' logs.
        #[arg(long)]
        acks: Option<PathBuf>,
        /// Ask one replica (in turn) for each receipt, and all of them only after a
        /// retransmission timeout (`ClientOptions::one_receipt`), instead of all of them.
        #[arg(long)]
        one_receipt: bool,
    },
    /// One row per replica: reachable, view, leader, committed seq, weight.
    Status {
        /// The cluster (`client.toml`).
        #[arg(long)]
        cluster: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

async fn connect(cluster: &Path, options: ClientOptions) -> anyhow::Result<Client> {
    let cluster = load_cluster(cluster)?;
    Ok(Client::connect(cluster, options).await?)
}

async fn submit(cluster: &Path, timeout: u64, payloads: Vec<String>) -> anyhow::Result<()> {
    let client = connect(
        cluster,
        ClientOptions {
            timeout: Duration::from_secs(timeout),
            ..ClientOptions::default()
        },
    )
    .await?;
    // All in flight at once; each line is printed as soon as its receipt (and every earlier
    // one, to keep the input's order) has verified.
    let mut pending: futures::stream::FuturesOrdered<_> = payloads
        .into_iter()
        .map(|payload| {
            let client = client.clone();
            async move {
                let digest = Digest::of(payload.as_bytes());
                (digest, client.submit(payload.into_bytes()).await)
            }
        })
        .collect();
    let mut failed = None;
    while let Some((digest, result)) = pending.next().await {
        match result {
            Ok(receipt) => println!(
                "{}",
                json!({"seq": receipt.seq, "index": receipt.index, "digest": digest.to_hex(), "view": receipt.view()})
            ),
            Err(e) => {
                failed.get_or_insert_with(|| anyhow::anyhow!("transaction {}: {e}", digest.to_hex()));
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

async fn tail(
    cluster: &Path,
    replica: Option<u16>,
    from: u64,
    to: Option<u64>,
    follow: bool,
) -> anyhow::Result<()> {
    let client = connect(cluster, ClientOptions::default()).await?;
    let replicas = client.committee().size();
    if let Some(r) = replica {
        if r as usize >= replicas {
            bail!("--replica {r}: the cluster has replicas 0..{replicas}");
        }
    }
    client
        .wait_connected(replica.map_or(replicas, |_| 1), Duration::from_secs(2))
        .await;
    // Without --to or --follow, read up to what the cluster has committed: the (f+1)-th
    // highest sequence number the replicas report, which at least one correct replica has
    // reached, so a Byzantine replica can neither stop the tail early nor keep it waiting.
    let end = match (to, follow) {
        (Some(to), _) => Some(to),
        (None, true) => None,
        (None, false) => Some(match replica {
            Some(r) => client.replica_status(r.into()).await?.committed_seq,
            None => committed_by_a_correct_replica(&client).await?,
        }),
    };
    let mut next = from.max(1);
    let mut rotate = 0usize;
    let mut failures = 0usize;
    loop {
        if end.is_some_and(|end| next > end) {
            return Ok(());
        }
        let source = replica.map(usize::from).unwrap_or(rotate % replicas);
        let want = end.map_or(64, |end| end.saturating_sub(next).saturating_add(1).min(64)) as u32;
        let batches = match client.read_batches(source, next, want).await {
            Ok((batches, _)) => batches,
            Err(e @ ordinal_client::ClientError::Invalid { .. }) => return Err(e.into()),
            Err(e) => {
                failures += 1;
                if replica.is_some() && failures > 5 || failures > 5 * replicas {
                    return Err(e).context("reading the log");
                }
                rotate += 1;
                continue;
            }
        };
        failures = 0;
        for committed in &batches {
            for (index, request) in committed.batch.requests().iter().enumerate() {
                println!(
                    "{}",
                    json!({
                        "seq": committed.seq(),
                        "index": index,
                        "client": request.client.to_hex(),
                        "nonce": request.nonce,
                        "digest": request.payload_digest().to_hex(),
                    })
                );
            }
        }
        next = next.saturating_add(batches.len() as u64);
        if batches.is_empty() {
            // This replica has nothing more yet; another may (unless pinned to one).
            rotate += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The (f+1)-th highest committed sequence number among the replicas that answer.
async fn committed_by_a_correct_replica(client: &Client) -> anyhow::Result<u64> {
    let mut reported: Vec<u64> = client
        .status()
        .await
        .iter()
        .filter_map(|r| r.status.as_ref().map(|s| s.committed_seq))
        .collect();
    reported.sort_unstable_by(|a, b| b.cmp(a));
    let faults = client.committee().faults();
    reported
        .get(faults)
        .copied()
        .ok_or_else(|| anyhow::anyhow!("fewer than f+1 = {} replicas answered", faults + 1))
}

async fn status(cluster: &Path, as_json: bool) -> anyhow::Result<()> {
    let client = connect(cluster, ClientOptions::default()).await?;
    client
        .wait_connected(client.committee().size(), Duration::from_secs(2))
        .await;
    let reports = client.status().await;
    if as_json {
        let rows: Vec<_> = reports
            .iter()
            .map(|r| {
                let s = r.status.as_ref();
                json!({
                    "id": r.id,
                    "address": r.address,
                    "reachable": s.is_some(),
                    "view": s.map(|s| s.view),
                    "leader": s.map(|s| s.leader),
                    "committed_seq": s.map(|s| s.committed_seq),
                    "weight": s.and_then(|s| s.weights.get(r.id as usize).copied()),
                })
            })
            .collect();
        println!("{}", json!({ "replicas": rows }));
    } else {
        println!(
            "{:>3}  {:<22} {:>9} {:>6} {:>6} {:>13} {:>6} {:>11} {:>12}",
            "id",
            "address",
            "reachable",
            "view",
            "leader",
            "committed_seq",
            "weight",
            "reliability",
            "suspected_by"
        );
        let dash = || "-".to_string();
        let answered: Vec<&wire::ReplicaStatus> = reports.iter().filter_map(|r| r.status.as_ref()).collect();
        for r in &reports {
            let s = r.status.as_ref();
            // The others' view of this replica: the median of their scores for it.
            let (reliability, suspected_by) = wire::peer_consensus(r.id, &answered);
            println!(
                "{:>3}  {:<22} {:>9} {:>6} {:>6} {:>13} {:>6} {:>11} {:>12}",
                r.id,
                r.address,
                if s.is_some() { "yes" } else { "no" },
                s.map(|s| s.view.to_string()).unwrap_or_else(dash),
                s.map(|s| s.leader.to_string()).unwrap_or_else(dash),
                s.map(|s| s.committed_seq.to_string()).unwrap_or_else(dash),
                s.and_then(|s| s.weights.get(r.id as usize))
                    .map(|w| w.to_string())
                    .unwrap_or_else(dash),
                reliability.map(|v| format!("{v:.3}")).unwrap_or_else(dash),
                suspected_by,
            );
        }
    }
    if reports.iter().all(|r| r.status.is_none()) {
        bail!("no replica answered");
    }
    Ok(())
}

struct BenchSpec {
    rate: u64,
    duration: Duration,
    tx_size: usize,
    clients: usize,
    timeout: Duration,
    acks: Option<PathBuf>,
    one_receipt: bool,
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    committed: AtomicU64,
    errors: AtomicU64,
    last_commit_micros: AtomicU64,
}

/// What one verified receipt adds to the report.
struct Recorder {
    latency_micros: Histogram<u64>,
    /// Receipts per second since the load started (index = second).
    per_second: Vec<u64>,
    /// The slowest receipt of each second, in microseconds: where stalls show.
    per_second_max_micros: Vec<u64>,
    /// Acknowledged transactions, kept only with `--acks`.
    acks: Option<Vec<Ack>>,
}

struct Ack {
    digest: Digest,
    seq: u64,
    index: u32,
    at_ms: u64,
}

impl Recorder {
    fn record(&mut self, latency: Duration, since_start: Duration, ack: impl FnOnce() -> Ack) {
        let micros = (latency.as_micros() as u64).max(1);
        let _ = self.latency_micros.record(micros);
        let second = since_start.as_secs() as usize;
        if self.per_second.len() <= second {
            self.per_second.resize(second + 1, 0);
            self.per_second_max_micros.resize(second + 1, 0);
        }
        self.per_second[second] += 1;
        self.per_second_max_micros[second] = self.per_second_max_micros[second].max(micros);
        if let Some(acks) = &mut self.acks {
            acks.push(ack());
        }
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn bench(cluster: &Path, spec: BenchSpec, json_out: Option<PathBuf>) -> anyhow::Result<()> {
    if spec.rate == 0 || spec.duration.is_zero() || spec.clients == 0 {
        bail!("--rate, --duration and --clients must be positive");
    }
    if spec.tx_size < 16 {
        bail!("--tx-size must be at least 16 bytes (a transaction carries its client and sequence number)");
    }
    let cluster_config = load_cluster(cluster)?;
    let mut clients = Vec::new();
    for _ in 0..spec.clients {
        let client = Client::connect(
            cluster_config.clone(),
            ClientOptions {
                timeout: spec.timeout,
                one_receipt: spec.one_receipt,
                ..ClientOptions::default()
            },
        )
        .await?;
        clients.push(client);
    }
    let quorum = cluster_config.replicas.len() - cluster_config.faults;
    for client in &clients {
        if !client.wait_connected(quorum, Duration::from_secs(10)).await {
            bail!("could not connect to {quorum} replicas within 10 s");
        }
    }
    // One untimed transaction per client first, so that the measurement starts with every
    // connection up and the pipeline warm, not with handshakes.
    for result in futures::future::join_all(
        clients
            .iter()
            .map(|c| c.submit(b"ordinal bench warm-up".to_vec())),
    )
    .await
    {
        result.context("warm-up transaction")?;
    }
    let recorder = Arc::new(Mutex::new(Recorder {
        latency_micros: Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?,
        per_second: Vec::new(),
        per_second_max_micros: Vec::new(),
        acks: spec.acks.as_ref().map(|_| Vec::new()),
    }));
    // Payloads carry this run's random tag, so that transactions of different runs against
    // the same cluster never share a digest (fault tests count each one exactly once).
    let run_tag = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    let counters = Arc::new(Counters::default());
    let progress = indicatif::ProgressBar::new(spec.duration.as_secs());
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let keep_acks = spec.acks.is_some();
    let start = Instant::now();
    let per_client = spec.rate as f64 / spec.clients as f64;
    let mut generators = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        let client = client.clone();
        let recorder = recorder.clone();
        let counters = counters.clone();
        let (duration, tx_size, timeout) = (spec.duration, spec.tx_size, spec.timeout);
        generators.push(tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let elapsed = start.elapsed();
                let horizon = elapsed.min(duration);
                let due = (horizon.as_secs_f64() * per_client) as u64;
                while sent < due {
                    sent += 1;
                    let mut payload = vec![0xa5u8; tx_size];
                    payload[..8].copy_from_slice(&(c as u64).to_le_bytes());
                    payload[8..16].copy_from_slice(&sent.to_le_bytes());
                    if tx_size >= 24 {
                        payload[16..24].copy_from_slice(&run_tag.to_le_bytes());
                    }
                    let digest = keep_acks.then(|| Digest::of(&payload));
                    let client = client.clone();
                    let recorder = recorder.clone();
                    let counters = counters.clone();
                    counters.submitted.fetch_add(1, Ordering::Relaxed);
                    tasks.spawn(async move {
                        let begun = Instant::now();
                        match client.submit(payload).await {
                            Ok(receipt) => {
                                let since_start = start.elapsed();
                                if let Ok(mut r) = recorder.lock() {
                                    r.record(begun.elapsed(), since_start, || Ack {
                                        digest: digest.unwrap_or(Digest([0; 32])),
                                        seq: receipt.seq,
                                        index: receipt.index,
                                        at_ms: unix_millis(),
                                    });
                                }
                                counters.committed.fetch_add(1, Ordering::Relaxed);
                                counters
                                    .last_commit_micros
                                    .fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "transaction failed");
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                while tasks.try_join_next().is_some() {}
                if elapsed >= duration {
                    break;
                }
            }
            // Every transaction has had its full timeout once the load plus one timeout has
            // passed; whatever is still waiting then (for a submission slot, or a cluster that
            // stopped answering) counts as failed instead of holding the run open.
            let deadline = tokio::time::Instant::from_std(start + duration + timeout);
            let drained =
                tokio::time::timeout_at(deadline, async { while tasks.join_next().await.is_some() {} }).await;
            if drained.is_err() {
                // Tasks that finished but were not joined yet counted themselves already.
                while tasks.try_join_next().is_some() {}
                counters.errors.fetch_add(tasks.len() as u64, Ordering::Relaxed);
                tasks.abort_all();
            }
        }));
    }
    let ticker = {
        let progress = progress.clone();
        let counters = counters.clone();
        let duration = spec.duration;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let elapsed = start.elapsed();
                progress.set_position(elapsed.min(duration).as_secs());
                progress.set_message(format!(
                    "submitted {} committed {} errors {}",
                    counters.submitted.load(Ordering::Relaxed),
                    counters.committed.load(Ordering::Relaxed),
                    counters.errors.load(Ordering::Relaxed)
                ));
            }
        })
    };
    for generator in generators {
        generator.await.context("load generator")?;
    }
    ticker.abort();
    progress.finish_and_clear();

    let submitted = counters.submitted.load(Ordering::Relaxed);
    let committed = counters.committed.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let last_commit = Duration::from_micros(counters.last_commit_micros.load(Ordering::Relaxed));
    let elapsed = last_commit.max(spec.duration).as_secs_f64();
    let throughput = committed as f64 / elapsed;
    let recorded = recorder
        .lock()
        .map_err(|_| anyhow::anyhow!("recorder lock poisoned"))?;
    let h = &recorded.latency_micros;
    let ms = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let (p50, p90, p99, max) = (ms(0.5), ms(0.9), ms(0.99), ms(1.0));
    println!(
        "{:>10} {:>10} {:>7} {:>15} {:>9} {:>9} {:>9} {:>9}",
        "submitted", "committed", "errors", "throughput_tps", "p50_ms", "p90_ms", "p99_ms", "max_ms"
    );
    println!(
        "{submitted:>10} {committed:>10} {errors:>7} {throughput:>15.1} {p50:>9.2} {p90:>9.2} {p99:>9.2} {max:>9.2}"
    );
    if let Some(path) = json_out {
        let report = json!({
            "submitted": submitted,
            "committed": committed,
            "errors": errors,
            "throughput_tps": throughput,
            "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "max": max},
            "rate": spec.rate,
            "duration_s": spec.duration.as_secs(),
            "tx_size": spec.tx_size,
            "clients": spec.clients,
            "replicas": cluster_config.replicas.len(),
            "protocol": cluster_config.protocol.to_string(),
            "request_auth": format!("{:?}", cluster_config.request_auth).to_lowercase(),
            "per_second": recorded.per_second,
            "per_second_max_ms": recorded
                .per_second_max_micros
                .iter()
                .map(|us| *us as f64 / 1000.0)
                .collect::<Vec<_>>(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let (Some(path), Some(acks)) = (&spec.acks, &recorded.acks) {
        let mut text = String::with_capacity(acks.len() * 120);
        for ack in acks {
            text.push_str(
                &json!({"digest": ack.digest.to_hex(), "seq": ack.seq, "index": ack.index, "at_ms": ack.at_ms})
                    .to_string(),
            );
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if committed == 0 {
        bail!("no transaction committed");
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Submit {
            cluster,
            timeout,
            payloads,
        } => submit(&cluster, timeout, payloads).await,
        Command::Tail {
            cluster,
            replica,
            from,
            to,
            follow,
        } => tail(&cluster, replica, from, to, follow).await,
        Command::Bench {
            cluster,
            rate,
            duration,
            tx_size,
            clients,
            json,
            timeout,
            acks,
            one_receipt,
        } => {
            let spec = BenchSpec {
                acks,
                rate,
                duration: Duration::from_secs(duration),
                tx_size,
                clients,
                timeout: Duration::from_secs(timeout),
                one_receipt,
            };
            bench(&cluster, spec, json).await
        }
        Command::Status { cluster, json } => status(&cluster, json).await,
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORDINAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ordinal: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordinal: {e:#}");
            ExitCode::FAILURE
        }
    }
}
