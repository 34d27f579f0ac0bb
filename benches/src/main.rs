//! The end-to-end throughput harness: starts a real local cluster (one `ordinal-node run`
//! process per replica, QUIC with TLS on 127.0.0.1, RocksDB), drives open-loop load with
//! `ordinal bench`, and reports throughput, latency percentiles, CPU seconds and peak memory
//! per replica, and bytes sent. `sweep` raises the rate until the cluster saturates and draws
//! throughput against latency; `suite` runs the standard set and writes `benches/results/`.
//!
//!   cargo run --release -p ordinal-benches -- run --protocol pbft --rate 20000 --duration 10
//!   cargo run --release -p ordinal-benches -- sweep --protocol linear --replicas 4
//!   cargo run --release -p ordinal-benches -- suite

mod cluster;
mod plot;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cluster::{LoadSpec, Setup};
use crate::report::{Machine, Point};

#[derive(Parser, Debug)]
#[command(name = "ordinal-benches", about = "Ordinal's end-to-end throughput harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One cluster per rate: load at each rate, one result line each.
    Run {
        #[command(flatten)]
        setup: SetupArgs,
        /// Offered rates (transactions per second), comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        rate: Vec<u64>,
        /// Kill the primary (SIGKILL) this many seconds into the load and report how long
        /// throughput takes to come back.
        #[arg(long)]
        kill_primary_at: Option<u64>,
        /// Write the results as `NAME.json` and `NAME.md` under --results.
        #[arg(long)]
        name: Option<String>,
    },
    /// Raises the rate by --factor until throughput stops following it or p99 passes
    /// --max-p99-ms; reports the saturation point and draws throughput against latency.
    Sweep {
        #[command(flatten)]
        setup: SetupArgs,
        /// First offered rate.
        #[arg(long, default_value_t = 5000)]
        start: u64,
        /// Each step multiplies the rate by this.
        #[arg(long, default_value_t = 1.5)]
        factor: f64,
        /// Never offer more than this.
        #[arg(long, default_value_t = 400_000)]
        max_rate: u64,
        /// Saturated once p99 latency passes this.
        #[arg(long, default_value_t = 1000.0)]
        max_p99_ms: f64,
        /// Results as `NAME.json`, `NAME.md` and `NAME.svg` under --results.
        #[arg(long)]
        name: Option<String>,
    },
    /// The standard set behind benches/results/README.md: sweeps of both protocols at n=4,
    /// saturation at n=7 and n=10, the 50,000 tx/s latency point, signed requests, and the
    /// primary killed under load.
    Suite {
        /// Seconds of load per point.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Where results go.
        #[arg(long, default_value = "benches/results")]
        results: PathBuf,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ProtocolArg {
    Pbft,
    Linear,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SyncArg {
    Always,
    Never,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum AuthArg {
    Unsigned,
    Signed,
}

#[derive(Args, Debug, Clone)]
struct SetupArgs {
    /// Replicas (n = 3f + 1).
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Pbft)]
    protocol: ProtocolArg,
    /// Requests per batch at most (`max_batch_requests`).
    #[arg(long, default_value_t = 512)]
    max_batch: usize,
    /// Batches proposed but not yet committed at most (`max_inflight_batches`; the replicas'
    /// default when not given).
    #[arg(long)]
    max_inflight: Option<u64>,
    /// How long the primary waits to fill a batch, in milliseconds (`batch_delay`; the
    /// replicas' default when not given).
    #[arg(long)]
    batch_delay_ms: Option<u64>,
    /// fsync before each receipt (`always`) or not.
    #[arg(long, value_enum, default_value_t = SyncArg::Always)]
    sync: SyncArg,
    /// How clients authenticate requests.
    #[arg(long, value_enum, default_value_t = AuthArg::Unsigned)]
    request_auth: AuthArg,
    /// Bytes per transaction.
    #[arg(long, default_value_t = 512)]
    tx_size: usize,
    /// Seconds of load per point.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Load-generator clients (each with its own key and connections).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Clients ask one replica (in turn) for each receipt instead of all of them.
    #[arg(long)]
    one_receipt: bool,
    /// First port of the cluster (UDP base + i, metrics on TCP base + 100 + i).
    #[arg(long, default_value_t = 9400)]
    base_port: u16,
    /// Directory for results.
    #[arg(long, default_value = "benches/results")]
    results: PathBuf,
    /// Use the binaries already in target/release instead of building them first.
    #[arg(long)]
    no_build: bool,
}

impl SetupArgs {
    fn setup(&self) -> Setup {
        Setup {
            replicas: self.replicas,
            protocol: match self.protocol {
                ProtocolArg::Pbft => "pbft",
                ProtocolArg::Linear => "linear",
            },
            max_batch: self.max_batch,
            max_inflight: self.max_inflight,
            batch_delay_ms: self.batch_delay_ms,
            sync_always: self.sync == SyncArg::Always,
            signed_requests: self.request_auth == AuthArg::Signed,
            base_port: self.base_port,
        }
    }

    fn load(&self, rate: u64) -> LoadSpec {
        LoadSpec {
            rate,
            duration: self.duration,
            tx_size: self.tx_size,
            clients: self.clients,
            kill_primary_at: None,
            one_receipt: self.one_receipt,
        }
    }
}

/// Saturated: throughput fell behind the offered rate, or latency ran away.
fn saturated(point: &Point, max_p99_ms: f64) -> bool {
    point.throughput_tps < 0.9 * point.rate as f64
        || point.p99_ms > max_p99_ms
        || point.committed < point.submitted
}

fn sweep(
    setup: &Setup,
    args: &SetupArgs,
    start: u64,
    factor: f64,
    max_rate: u64,
    max_p99_ms: f64,
) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    let mut rate = start.max(1);
    loop {
        let point = cluster::measure(setup, &args.load(rate))?;
        report::print_point(&point);
        let done = saturated(&point, max_p99_ms);
        points.push(point);
        let next = ((rate as f64) * factor.max(1.05)) as u64;
        if done || next > max_rate {
            return Ok(points);
        }
        rate = next;
    }
}

fn save(
    results: &std::path::Path,
    name: &str,
    title: &str,
    points: &[Point],
    plot: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(results).with_context(|| format!("creating {}", results.display()))?;
    let machine = Machine::read();
    report::write_json(&results.join(format!("{name}.json")), &machine, points)?;
    report::write_markdown(&results.join(format!("{name}.md")), title, &machine, points)?;
    if plot {
        plot::throughput_latency(&results.join(format!("{name}.svg")), title, points)?;
    }
    eprintln!(
        "results: {}/{name}.{{json,md{}}}",
        results.display(),
        if plot { ",svg" } else { "" }
    );
    Ok(())
}

fn suite(duration: u64, results: &std::path::Path) -> anyhow::Result<()> {
    let base = SetupArgs {
        replicas: 4,
        protocol: ProtocolArg::Pbft,
        max_batch: 512,
        max_inflight: None,
        batch_delay_ms: None,
        sync: SyncArg::Always,
        request_auth: AuthArg::Unsigned,
        tx_size: 512,
        duration,
        clients: 4,
        one_receipt: false,
        base_port: 9400,
        results: results.to_path_buf(),
        no_build: true,
    };
    let mut summary = Vec::new();
    for protocol in [ProtocolArg::Pbft, ProtocolArg::Linear] {
        let args = SetupArgs {
            protocol,
            ..base.clone()
        };
        let name = format!("sweep-{}-n4", args.setup().protocol);
        let points = sweep(&args.setup(), &args, 5000, 1.5, 400_000, 1000.0)?;
        save(
            results,
            &name,
            &format!("{} n=4, 512 B, fsync, TLS", args.setup().protocol),
            &points,
            true,
        )?;
        summary.extend(report::best(&points));
        // The target's latency point.
        let point = cluster::measure(&args.setup(), &args.load(50_000))?;
        report::print_point(&point);
        summary.push(point);
        for replicas in [7, 10] {
            let args = SetupArgs {
                replicas,
                ..args.clone()
            };
            let points = sweep(&args.setup(), &args, 5000, 1.5, 400_000, 1000.0)?;
            summary.extend(report::best(&points));
        }
        // The primary killed 5 s into the load. Not in the linear mode: its round-robin
        // leaders keep running into the dead replica (two failed rounds in every n) until
        // the quorum manager's reputation-based leader choice exists.
        if protocol == ProtocolArg::Pbft {
            let mut load = args.load(10_000);
            load.duration = duration.max(15);
            load.kill_primary_at = Some(5);
            let point = cluster::measure(&args.setup(), &load)?;
            report::print_point(&point);
            summary.push(point);
        }
        // Saved as it goes: a failure later keeps what was measured.
        save(results, "suite", "Ordinal benchmark suite", &summary, false)?;
    }
    let signed = SetupArgs {
        request_auth: AuthArg::Signed,
        ..base.clone()
    };
    let points = sweep(&signed.setup(), &signed, 1000, 1.5, 400_000, 1000.0)?;
    summary.extend(report::best(&points));
    save(results, "suite", "Ordinal benchmark suite", &summary, false)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let no_build = match &cli.command {
        Command::Run { setup, .. } | Command::Sweep { setup, .. } => setup.no_build,
        Command::Suite { .. } => false,
    };
    if !no_build {
        cluster::build_binaries()?;
    }
    match cli.command {
        Command::Run {
            setup: args,
            rate,
            kill_primary_at,
            name,
        } => {
            let mut points = Vec::new();
            for rate in rate {
                let mut load = args.load(rate);
                load.kill_primary_at = kill_primary_at;
                let point = cluster::measure(&args.setup(), &load)?;
                report::print_point(&point);
                points.push(point);
            }
            if let Some(name) = name {
                save(&args.results, &name, &name, &points, false)?;
            }
            Ok(())
        }
        Command::Sweep {
            setup: args,
            start,
            factor,
            max_rate,
            max_p99_ms,
            name,
        } => {
            let setup = args.setup();
            let points = sweep(&setup, &args, start, factor, max_rate, max_p99_ms)?;
            if let Some(best) = report::best(&points) {
                println!(
                    "saturation: {:.0} tx/s committed (offered {}), p50 {:.1} ms, p99 {:.1} ms",
                    best.throughput_tps, best.rate, best.p50_ms, best.p99_ms
                );
            }
            // Signed-request sweeps get their own files: they never overwrite the unsigned ones.
            let auth = if setup.signed_requests { "-signed" } else { "" };
            let name = name.unwrap_or_else(|| format!("sweep-{}-n{}{auth}", setup.protocol, setup.replicas));
            let title = format!(
                "{} n={}, {} B, {}, TLS{}",
                setup.protocol,
                setup.replicas,
                args.tx_size,
                if setup.sync_always { "fsync" } else { "no fsync" },
                if setup.signed_requests {
                    ", signed requests"
                } else {
                    ""
                }
            );
            save(&args.results, &name, &title, &points, true)
        }
        Command::Suite { duration, results } => suite(duration, &results),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordinal-benches: {e:#}");
            ExitCode::FAILURE
        }
    }
}
