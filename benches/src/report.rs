//! Results: one `Point` per measured load, the machine they ran on, JSON and Markdown.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

/// One measured load on one fresh cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub protocol: String,
    pub replicas: usize,
    pub max_batch: usize,
    /// `max_inflight_batches`, if not the replicas' default.
    pub max_inflight: Option<u64>,
    /// `batch_delay` in milliseconds, if not the replicas' default.
    pub batch_delay_ms: Option<u64>,
    pub sync_always: bool,
    pub signed_requests: bool,
    pub tx_size: usize,
    pub clients: usize,
    /// Clients asked one replica for each receipt instead of all of them.
    pub one_receipt: bool,
    pub duration_s: u64,
    /// Offered transactions per second.
    pub rate: u64,
    pub submitted: u64,
    pub committed: u64,
    pub errors: u64,
    pub throughput_tps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// CPU seconds (user + system) each replica process used during the load.
    pub cpu_seconds: Vec<Option<f64>>,
    /// All replicas' CPU microseconds per committed transaction.
    pub cpu_us_per_tx: f64,
    /// Peak resident memory of each replica process.
    pub peak_rss_mib: Vec<Option<f64>>,
    /// Stream bytes each replica sent (to peers and clients) during the load.
    pub bytes_sent: Vec<Option<u64>>,
    /// Share of the whole machine's CPU busy during the load (replicas, load generator, rest).
    pub machine_busy_pct: Option<f64>,
    /// The replica killed under load, if any.
    pub killed_primary: Option<usize>,
    /// From the kill to the end of the last one-second window holding less than 90% of the
    /// offered rate.
    pub recovery_ms: Option<u64>,
    /// The longest time without a receipt after the kill: how long commits stopped.
    pub longest_gap_ms: Option<u64>,
    /// Receipts per second of the load.
    pub per_second: Vec<u64>,
}

/// Where the numbers came from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub date_unix: u64,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            date_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// The highest throughput among points that committed everything they were offered.
pub fn best(points: &[Point]) -> Option<Point> {
    points
        .iter()
        .filter(|p| p.errors == 0)
        .max_by(|a, b| a.throughput_tps.total_cmp(&b.throughput_tps))
        .cloned()
}

fn fmt_opt(values: &[Option<f64>], digits: usize) -> String {
    values
        .iter()
        .map(|v| v.map_or("-".to_string(), |v| format!("{v:.digits$}")))
        .collect::<Vec<_>>()
        .join("/")
}

fn mib_per_s(point: &Point) -> f64 {
    let bytes: u64 = point.bytes_sent.iter().flatten().sum();
    bytes as f64 / (1024.0 * 1024.0) / point.duration_s.max(1) as f64
}

pub fn print_point(p: &Point) {
    println!(
        "{} n={} {}B{}{}{}{}{} rate {:>7}: {:>7}/{:<7} committed, {:>9.0} tx/s, p50 {:>8.1} ms, p99 {:>8.1} ms, \
         cpu {:>5.1} us/tx, rss {} MiB, sent {:.1} MiB/s, machine {:.0}% busy{}",
        p.protocol,
        p.replicas,
        p.tx_size,
        if p.signed_requests { " signed" } else { "" },
        if p.sync_always { "" } else { " no-fsync" },
        if p.one_receipt { " one-receipt" } else { "" },
        p.max_inflight.map(|n| format!(" inflight {n}")).unwrap_or_default(),
        p.batch_delay_ms.map(|ms| format!(" batch-delay {ms}ms")).unwrap_or_default(),
        p.rate,
        p.committed,
        p.submitted,
        p.throughput_tps,
        p.p50_ms,
        p.p99_ms,
        p.cpu_us_per_tx,
        fmt_opt(&p.peak_rss_mib, 0),
        mib_per_s(p),
        p.machine_busy_pct.unwrap_or(0.0),
        match (p.killed_primary, p.recovery_ms) {
            (Some(r), Some(ms)) => format!(
                ", primary {r} killed: recovered in {ms} ms, longest gap between receipts {} ms",
                p.longest_gap_ms.unwrap_or(0)
            ),
            (Some(r), None) => format!(", primary {r} killed: did not recover to 90%"),
            _ => String::new(),
        }
    );
}

pub fn write_json(path: &Path, machine: &Machine, points: &[Point]) -> anyhow::Result<()> {
    let value = serde_json::json!({ "machine": machine, "points": points });
    std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

pub fn write_markdown(path: &Path, title: &str, machine: &Machine, points: &[Point]) -> anyhow::Result<()> {
    let mut md = format!(
        "# {title}\n\nMachine: {} ({} cores, {:.0} GiB, Linux {}). Replicas are separate `ordinal-node run` \
         processes on 127.0.0.1 with QUIC + TLS, every phase message signed, RocksDB; the load generator \
         (`ordinal bench`, open loop) runs on the same machine. Regenerate with \
         `cargo run --release -p ordinal-benches -- ...` (see benches/results/README.md).\n\n",
        machine.cpu_model, machine.cores, machine.memory_gib, machine.kernel
    );
    md.push_str(
        "| protocol | n | requests | fsync | tx B | offered tx/s | committed | throughput tx/s | p50 ms | p90 ms | \
         p99 ms | max ms | CPU µs/tx (replicas) | peak RSS MiB per replica | sent MiB/s (all) | machine busy | \
         primary killed: recovery |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for p in points {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {}/{} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {} | {} |\n",
            p.protocol,
            p.replicas,
            if p.signed_requests { "signed" } else { "unsigned" },
            if p.sync_always { "yes" } else { "no" },
            p.tx_size,
            p.rate,
            p.committed,
            p.submitted,
            p.throughput_tps,
            p.p50_ms,
            p.p90_ms,
            p.p99_ms,
            p.max_ms,
            p.cpu_us_per_tx,
            fmt_opt(&p.peak_rss_mib, 0),
            mib_per_s(p),
            p.machine_busy_pct.map_or("-".into(), |b| format!("{b:.0}%")),
            match (p.killed_primary, p.recovery_ms) {
                (Some(r), Some(ms)) => format!(
                    "replica {r}: {ms} ms (longest gap {} ms)",
                    p.longest_gap_ms.unwrap_or(0)
                ),
                (Some(r), None) => format!("replica {r}: not within the run"),
                _ => "-".into(),
            }
        ));
    }
    std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))
}
