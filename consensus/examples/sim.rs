//! Runs many seeded simulations and reports any broken invariant.
//!
//! ```text
//! cargo run --release -p ordinal-consensus --example sim -- --seeds 10000 --replicas 4
//! cargo run --release -p ordinal-consensus --example sim -- --replicas 4 --seed 1234
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use ordinal_consensus::sim::{run, Report, SimConfig};
use ordinal_consensus::ProtocolKind;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    Pbft,
    Linear,
}

impl ProtocolArg {
    fn kind(self) -> ProtocolKind {
        match self {
            ProtocolArg::Pbft => ProtocolKind::Pbft,
            ProtocolArg::Linear => ProtocolKind::Linear,
        }
    }
}

fn configure(seed: u64, replicas: usize, kind: ProtocolKind, calm: bool) -> SimConfig {
    let mut config = if calm {
        SimConfig::calm(seed, replicas)
    } else {
        SimConfig::random(seed, replicas)
    };
    config.kind = kind;
    config
}

/// Seeded simulations of an Ordinal cluster with network faults, a crash-restart and up to f
/// Byzantine replicas.
#[derive(Parser, Debug)]
struct Args {
    /// How many seeds to run (seeds 0..N, offset by --first).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Run only this seed (replays it exactly).
    #[arg(long)]
    seed: Option<u64>,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Replicas per cluster.
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Protocol to simulate.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Pbft)]
    protocol: ProtocolArg,
    /// Worker threads (each runs whole seeds; a run itself is single-threaded).
    #[arg(long, default_value_t = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))]
    threads: usize,
    /// Print one line per seed.
    #[arg(long)]
    verbose: bool,
    /// Instead of fault runs, print messages and bytes per committed batch for n = 4, 7, 10, 13,
    /// 16 in steady state (no faults) and across a view change (the first primary silent).
    #[arg(long)]
    complexity: bool,
    /// Run the seeds without faults (no Byzantine replicas, crashes or link faults).
    #[arg(long)]
    calm: bool,
}

/// Message kinds that agree on a batch, and those that change views, per protocol.
fn kinds(kind: ProtocolKind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        ProtocolKind::Pbft => (
            &["pre_prepare", "prepare", "commit"],
            &["view_change", "new_view"],
        ),
        ProtocolKind::Linear => (&["propose", "vote"], &["timeout", "sync", "fetch_blocks"]),
    }
}

/// Messages and bytes per committed batch for both protocols, in Markdown, then the ratio of
/// agreement messages (linear / PBFT) per n.
fn complexity() {
    println!("| n | protocol | scenario | batches | messages/batch | bytes/batch | agreement messages/batch | view-change messages (total) |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for n in [4, 7, 10, 13, 16] {
        let mut agreement_per_batch = std::collections::BTreeMap::new();
        for kind in [ProtocolKind::Pbft, ProtocolKind::Linear] {
            for (scenario, silent_leader) in [("steady state", false), ("view change", true)] {
                let mut config = SimConfig::calm(1, n);
                config.kind = kind;
                config.requests_per_client = 40;
                config.submit_window = std::time::Duration::from_secs(2);
                if silent_leader {
                    config.byzantine = vec![(0, ordinal_consensus::sim::Behaviour::Silent)];
                }
                let report = run(config);
                let batches = report.decided_seq.max(1);
                let (agreement_kinds, view_change_kinds) = kinds(kind);
                let count = |names: &[&str]| -> u64 {
                    names
                        .iter()
                        .filter_map(|k| report.traffic.by_kind.get(k).map(|(m, _)| *m))
                        .sum()
                };
                let agreement = count(agreement_kinds) as f64 / batches as f64;
                if !silent_leader {
                    agreement_per_batch.insert(kind.to_string(), agreement);
                }
                println!(
                    "| {n} | {kind} | {scenario} | {} | {:.1} | {:.0} | {agreement:.1} | {} |{}",
                    report.decided_seq,
                    report.traffic.messages() as f64 / batches as f64,
                    report.traffic.bytes() as f64 / batches as f64,
                    count(view_change_kinds),
                    if report.violations.is_empty() {
                        ""
                    } else {
                        " violations!"
                    }
                );
            }
        }
        if let (Some(linear), Some(pbft)) =
            (agreement_per_batch.get("linear"), agreement_per_batch.get("pbft"))
        {
            ratios.push((n, linear / pbft));
        }
    }
    println!();
    println!("| n | linear / PBFT agreement messages per batch (steady state) |");
    println!("|---|---|");
    for (n, ratio) in ratios {
        println!("| {n} | {ratio:.2} |");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.complexity {
        complexity();
        return ExitCode::SUCCESS;
    }
    if args.replicas < 1 {
        eprintln!("sim: --replicas must be at least 1");
        return ExitCode::from(2);
    }
    let kind = args.protocol.kind();
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first..args.first + args.seeds).collect(),
    };
    if let Some(seed) = args.seed {
        let config = configure(seed, args.replicas, kind, args.calm);
        println!(
            "config: byzantine {:?} crashes {:?} isolations {:?} faults {:?} auth {:?}",
            config.byzantine,
            config.crashes,
            config.isolations,
            config.link_faults,
            config.protocol.request_auth
        );
    }
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let reports: Mutex<Vec<Report>> = Mutex::new(Vec::new());
    let single = args.seed.is_some();
    std::thread::scope(|scope| {
        for _ in 0..args.threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&seed) = seeds.get(i) else { break };
                let report = run(configure(seed, args.replicas, kind, args.calm));
                if args.verbose || single {
                    eprintln!(
                        "seed {seed}: decided {} answered {}/{} view {} events {} virtual {:.1}s median {:?} violations {}",
                        report.decided_seq,
                        report.answered,
                        report.submitted,
                        report.max_view,
                        report.events,
                        report.virtual_time.as_secs_f64(),
                        report.median_latency,
                        report.violations.len()
                    );
                }
                reports.lock().unwrap().push(report);
            });
        }
    });
    let mut reports = reports.into_inner().unwrap();
    reports.sort_by_key(|r| r.seed);
    let mut violations = 0;
    for report in &reports {
        for v in &report.violations {
            violations += 1;
            println!(
                "violation: seed {} invariant {} at {:.3}s: {}",
                report.seed,
                v.invariant,
                v.at.as_secs_f64(),
                v.detail
            );
        }
    }
    if single {
        if let Some(report) = reports.first() {
            for line in &report.replica_status {
                println!("{line}");
            }
            for (kind, (messages, bytes)) in &report.traffic.by_kind {
                println!("traffic: {kind:<12} {messages:>8} messages {bytes:>10} bytes");
            }
        }
    }
    let changed = reports.iter().filter(|r| r.weight_epochs.len() > 1).count();
    let epochs: usize = reports
        .iter()
        .map(|r| r.weight_epochs.len().saturating_sub(1))
        .sum();
    if changed > 0 {
        println!(
            "weights: {changed} of {} runs changed weights through the log ({epochs} changes in all)",
            reports.len()
        );
    }
    // A membership change shows as an epoch whose set of members (non-zero weights) differs
    // from the one before.
    let members =
        |weights: &Vec<u64>| -> Vec<usize> { (0..weights.len()).filter(|&i| weights[i] > 0).collect() };
    let membership_changes = |r: &Report| {
        r.weight_epochs
            .windows(2)
            .filter(|pair| members(&pair[0].1) != members(&pair[1].1))
            .count()
    };
    let grown = reports.iter().filter(|r| membership_changes(r) >= 1).count();
    let grown_and_shrunk = reports.iter().filter(|r| membership_changes(r) >= 2).count();
    if grown > 0 {
        println!(
            "membership: {grown} of {} runs changed members through the log ({grown_and_shrunk} both grew and shrank)",
            reports.len()
        );
    }
    let failed: Vec<u64> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(|r| r.seed)
        .collect();
    println!(
        "summary: protocol {kind} replicas {} seeds {} violations {} failing seeds {} wall {:.1}s",
        args.replicas,
        reports.len(),
        violations,
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds: {failed:?}");
        ExitCode::FAILURE
    }
}
