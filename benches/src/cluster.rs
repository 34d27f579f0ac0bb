//! One measured point: a fresh local cluster of `ordinal-node run` processes, load from
//! `ordinal bench`, and what the processes used (from /proc and the replicas' metrics).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::report::Point;

/// The cluster under test.
#[derive(Clone, Debug)]
pub struct Setup {
    pub replicas: usize,
    pub protocol: &'static str,
    pub max_batch: usize,
    pub max_inflight: Option<u64>,
    /// `batch_delay` in milliseconds, if not the replicas' default.
    pub batch_delay_ms: Option<u64>,
    pub sync_always: bool,
    pub signed_requests: bool,
    pub base_port: u16,
}

/// The load offered to it.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub rate: u64,
    pub duration: u64,
    pub tx_size: usize,
    pub clients: usize,
    /// SIGKILL the primary this many seconds in.
    pub kill_primary_at: Option<u64>,
    /// Clients ask one replica for each receipt (`ordinal bench --one-receipt`).
    pub one_receipt: bool,
}

/// target/release, next to this harness's own binary.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("harness binary has no directory")?
        .to_path_buf())
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run without --no-build, or cargo build --release",
            path.display()
        );
    }
    Ok(path)
}

/// Builds the replica and client binaries in the harness's own profile.
pub fn build_binaries() -> anyhow::Result<()> {
    let release = bin_dir()?.ends_with("release");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(["build", "-q", "-p", "ordinal-node", "-p", "ordinal-client"]);
    if release {
        command.arg("--release");
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of ordinal-node and ordinal-client failed");
    }
    Ok(())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Clock ticks per second for /proc CPU times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// (busy, total) jiffies of the whole machine.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The bytes counters a replica exports (peer frames and client frames).
fn bytes_sent(metrics_port: u16) -> Option<u64> {
    let mut stream = TcpStream::connect(("127.0.0.1", metrics_port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let total = text
        .lines()
        .filter(|l| {
            l.starts_with("ordinal_peer_sent_bytes_total") || l.starts_with("ordinal_client_sent_bytes_total")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(total as u64)
}

struct Running {
    dir: tempfile::TempDir,
    client_toml: PathBuf,
    children: Vec<Option<Child>>,
}

impl Running {
    fn start(setup: &Setup) -> anyhow::Result<Running> {
        let dir = tempfile::Builder::new().prefix("ordinal-bench-").tempdir()?;
        let out = dir.path().join("cluster");
        let status = Command::new(binary("ordinal-node")?)
            .args(["testnet", "--replicas", &setup.replicas.to_string()])
            .args(["--protocol", setup.protocol])
            .args(["--base-port", &setup.base_port.to_string()])
            .args([
                "--request-auth",
                if setup.signed_requests {
                    "signed"
                } else {
                    "unsigned"
                },
            ])
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("ordinal-node testnet failed");
        }
        // Owned by `running` from the first spawn on, so that an error below stops them.
        let mut running = Running {
            client_toml: out.join("client.toml"),
            dir,
            children: Vec::new(),
        };
        for i in 0..setup.replicas {
            let config = out.join(format!("node-{i}/config.toml"));
            edit_config(&config, setup)?;
            let log = std::fs::File::create(running.dir.path().join(format!("node-{i}.log")))?;
            let child = Command::new(binary("ordinal-node")?)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .env("ORDINAL_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            running.children.push(Some(child));
        }
        let start = Instant::now();
        while running.reachable()? < setup.replicas {
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the cluster did not come up within 30 s (logs in {})",
                    running.dir.path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(running)
    }

    fn status(&self) -> anyhow::Result<Value> {
        let output = Command::new(binary("ordinal")?)
            .args(["status", "--json", "--cluster"])
            .arg(&self.client_toml)
            .stderr(Stdio::null())
            .output()?;
        Ok(serde_json::from_slice(&output.stdout).unwrap_or(Value::Null))
    }

    fn reachable(&self) -> anyhow::Result<usize> {
        let status = self.status()?;
        Ok(status["replicas"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter(|r| r["reachable"] == Value::Bool(true))
                    .count()
            })
            .unwrap_or(0))
    }

    fn leader(&self) -> anyhow::Result<usize> {
        let status = self.status()?;
        status["replicas"]
            .as_array()
            .and_then(|rows| rows.iter().find_map(|r| r["leader"].as_u64()))
            .map(|l| l as usize)
            .context("no replica reported a leader")
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.children.get(i)?.as_ref().map(Child::id)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in self.children.iter_mut().flatten() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A load generator that an early error must not leave running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sets the batch limit and the sync policy in a generated replica config.
fn edit_config(path: &Path, setup: &Setup) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let mut config: toml::Table = toml::from_str(&text)?;
    if let Some(toml::Value::Table(protocol)) = config.get_mut("protocol") {
        protocol.insert(
            "max_batch_requests".into(),
            toml::Value::Integer(setup.max_batch as i64),
        );
        if let Some(inflight) = setup.max_inflight {
            protocol.insert(
                "max_inflight_batches".into(),
                toml::Value::Integer(inflight as i64),
            );
        }
        if let Some(delay) = setup.batch_delay_ms {
            protocol.insert("batch_delay".into(), toml::Value::Integer(delay as i64));
        }
    }
    if let Some(toml::Value::Table(storage)) = config.get_mut("storage") {
        storage.insert(
            "sync".into(),
            toml::Value::String(if setup.sync_always { "always" } else { "never" }.into()),
        );
    }
    std::fs::write(path, toml::to_string(&config)?)?;
    Ok(())
}

/// Measures one point on a fresh cluster.
pub fn measure(setup: &Setup, load: &LoadSpec) -> anyhow::Result<Point> {
    let mut running = Running::start(setup)?;
    let ticks = clock_ticks();
    let n = setup.replicas;
    let metrics_port = |i: usize| setup.base_port + 100 + i as u16;
    let cpu_before: Vec<Option<f64>> = (0..n)
        .map(|i| running.pid(i).and_then(|p| cpu_seconds(p, ticks)))
        .collect();
    let bytes_before: Vec<Option<u64>> = (0..n).map(|i| bytes_sent(metrics_port(i))).collect();
    let jiffies_before = machine_jiffies();
    let report_path = running.dir.path().join("bench.json");
    let acks_path = running.dir.path().join("acks.jsonl");
    let mut bench = Command::new(binary("ordinal")?);
    bench
        .args(["bench", "--cluster"])
        .arg(&running.client_toml)
        .args(["--rate", &load.rate.to_string()])
        .args(["--duration", &load.duration.to_string()])
        .args(["--tx-size", &load.tx_size.to_string()])
        .args(["--clients", &load.clients.to_string()])
        .arg("--json")
        .arg(&report_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if load.kill_primary_at.is_some() {
        bench.arg("--acks").arg(&acks_path);
    }
    if load.one_receipt {
        bench.arg("--one-receipt");
    }
    let mut bench = KillOnDrop(bench.spawn()?);
    let mut killed = None;
    if let Some(at) = load.kill_primary_at {
        // The warm-up (connections, one transaction per client) comes before the load.
        std::thread::sleep(Duration::from_secs(at) + Duration::from_millis(500));
        let leader = running.leader()?;
        if let Some(mut child) = running.children.get_mut(leader).and_then(Option::take) {
            let at_ms = unix_millis();
            child.kill()?;
            child.wait()?;
            killed = Some((leader, at_ms));
        }
    }
    // Peak memory is read while the replicas still run.
    let mut peak_rss: Vec<Option<f64>> = vec![None; n];
    let bench_status = loop {
        for (i, peak) in peak_rss.iter_mut().enumerate() {
            if let Some(rss) = running.pid(i).and_then(peak_rss_mib) {
                *peak = Some(peak.map_or(rss, |p: f64| p.max(rss)));
            }
        }
        if let Some(status) = bench.0.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let jiffies_after = machine_jiffies();
    let cpu_after: Vec<Option<f64>> = (0..n)
        .map(|i| running.pid(i).and_then(|p| cpu_seconds(p, ticks)))
        .collect();
    let bytes_after: Vec<Option<u64>> = (0..n).map(|i| bytes_sent(metrics_port(i))).collect();
    if !bench_status.success() {
        let log = std::fs::read_to_string(running.dir.path().join("node-0.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        bail!(
            "ordinal bench failed at {} tx/s; replica 0's last log lines: {:?}",
            load.rate,
            tail
        );
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path)?)?;
    let f = |key: &str| report[key].as_f64().unwrap_or(0.0);
    let latency = |q: &str| report["latency_ms"][q].as_f64().unwrap_or(0.0);
    let cpu: Vec<Option<f64>> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| Some(a.as_ref()? - b.as_ref()?))
        .collect();
    let bytes: Vec<Option<u64>> = bytes_before
        .iter()
        .zip(&bytes_after)
        .map(|(b, a)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?)))
        .collect();
    let committed = report["committed"].as_u64().unwrap_or(0);
    let busy = match (jiffies_before, jiffies_after) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some(100.0 * (b1 - b0) as f64 / (t1 - t0) as f64),
        _ => None,
    };
    let recovery = match killed {
        Some((_, at_ms)) => {
            let left = load.duration.saturating_sub(load.kill_primary_at.unwrap_or(0)) * 1000;
            recovery(&acks_path, at_ms, left, load.rate)?
        }
        None => None,
    };
    let replicas_cpu: f64 = cpu.iter().flatten().sum();
    Ok(Point {
        protocol: setup.protocol.to_string(),
        replicas: n,
        max_batch: setup.max_batch,
        max_inflight: setup.max_inflight,
        batch_delay_ms: setup.batch_delay_ms,
        sync_always: setup.sync_always,
        signed_requests: setup.signed_requests,
        tx_size: load.tx_size,
        clients: load.clients,
        one_receipt: load.one_receipt,
        duration_s: load.duration,
        rate: load.rate,
        submitted: report["submitted"].as_u64().unwrap_or(0),
        committed,
        errors: report["errors"].as_u64().unwrap_or(0),
        throughput_tps: f("throughput_tps"),
        p50_ms: latency("p50"),
        p90_ms: latency("p90"),
        p99_ms: latency("p99"),
        max_ms: latency("max"),
        cpu_seconds: cpu,
        cpu_us_per_tx: if committed > 0 {
            replicas_cpu * 1e6 / committed as f64
        } else {
            0.0
        },
        peak_rss_mib: peak_rss,
        bytes_sent: bytes,
        machine_busy_pct: busy,
        killed_primary: killed.map(|(leader, _)| leader),
        recovery_ms: recovery.map(|r| r.last_slow_window_ms),
        longest_gap_ms: recovery.map(|r| r.longest_gap_ms),
        per_second: report["per_second"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default(),
    })
}

/// What a kill cost, from the receipts' times.
#[derive(Clone, Copy, Debug)]
struct Recovery {
    /// The end of the last one-second window (wholly after the kill, before the load's last half
    /// second) holding less than 90% of the offered rate; 0 if none did. (Receipts just after
    /// the kill come from batches already agreed.) Strict: a later hiccup anywhere in the run
    /// counts too.
    last_slow_window_ms: u64,
    /// The longest time without any receipt, from the kill to the end of the load: how long
    /// commits stopped.
    longest_gap_ms: u64,
}

fn recovery(acks: &Path, fault_at_ms: u64, load_left_ms: u64, rate: u64) -> anyhow::Result<Option<Recovery>> {
    let mut times: Vec<u64> = std::fs::read_to_string(acks)?
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok()?["at_ms"].as_u64())
        .collect();
    times.sort_unstable();
    let Some(&last_ack) = times.last() else {
        return Ok(None);
    };
    // Stragglers after the load ends must not read as a slump.
    let last = last_ack.min(fault_at_ms + load_left_ms);
    let needed = ((rate as f64) * 0.9) as usize;
    let mut recovered_at = fault_at_ms;
    let mut end = fault_at_ms + 1000;
    while end + 500 <= last {
        let in_window = times.partition_point(|&t| t <= end) - times.partition_point(|&t| t <= end - 1000);
        if in_window < needed {
            recovered_at = end;
        }
        end += 100;
    }
    // Gaps between receipts from the kill on, and the one from the last receipt to the end of
    // the load (less half a second: the load may end a little before this estimate), so that a
    // cluster that never commits again reads as a long gap, not as none.
    let load_end = fault_at_ms + load_left_ms.saturating_sub(500);
    let mut longest_gap_ms = 0;
    let mut previous = fault_at_ms;
    for &t in times.iter().filter(|&&t| t > fault_at_ms && t <= load_end) {
        longest_gap_ms = longest_gap_ms.max(t - previous);
        previous = t;
    }
    longest_gap_ms = longest_gap_ms.max(load_end.saturating_sub(previous));
    Ok(Some(Recovery {
        last_slow_window_ms: recovered_at - fault_at_ms,
        longest_gap_ms,
    }))
}
