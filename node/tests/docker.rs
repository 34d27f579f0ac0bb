//! Fault tests against the docker-compose testnet (`docker-compose.yml`), with load running:
//! kill the primary, pause a replica, cut one off the network, restart one keeping its volume,
//! stop f replicas for good. After each, every correct replica's log (`ordinal tail --replica
//! i`) must be identical, every acknowledged transaction must be in it exactly once at the
//! position its receipt named, and throughput must recover; the recovery times are printed and
//! written to `target/docker-faults.json`.
//!
//! They need Docker, a compose tool (`docker compose` or `docker-compose`) and the image
//! (`ORDINAL_IMAGE`, default `ordinal:latest`, built by `scripts/docker-image.sh`). Without
//! Docker they say so and pass; without the image they say so and pass unless
//! `ORDINAL_DOCKER_TESTS=1` (as in CI), which makes a missing image a failure. Every
//! container, network and volume a test creates is removed when it ends, pass or fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Each scenario runs a whole testnet: two at once would only make both slower and flakier.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Offered load: small transactions at a rate the debug build keeps up with on 2 cores.
const RATE: u64 = 300;
const LOAD_SECONDS: u64 = 30;
const TX_SIZE: usize = 128;
/// Seconds of load before the fault, and how long a healing fault lasts.
const BEFORE_FAULT: Duration = Duration::from_secs(6);
const FAULT_LASTS: Duration = Duration::from_secs(8);
/// Throughput has recovered once a one-second window after the fault holds this share of the
/// offered rate.
const RECOVERED_SHARE: f64 = 0.5;

fn image() -> String {
    std::env::var("ORDINAL_IMAGE").unwrap_or_else(|_| "ordinal:latest".to_string())
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn succeeds(command: &mut Command) -> bool {
    run(command).status.success()
}

fn check(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The compose tool present here: `docker compose` (v2) or `docker-compose` (v1).
fn compose_tool() -> Option<Vec<String>> {
    let v2 = ["docker", "compose"];
    let v1 = ["docker-compose"];
    for tool in [&v2[..], &v1[..]] {
        let mut command = Command::new(tool[0]);
        command.args(&tool[1..]).arg("version");
        if command.output().is_ok_and(|o| o.status.success()) {
            return Some(tool.iter().map(|s| s.to_string()).collect());
        }
    }
    None
}

/// None (with the reason printed) when these tests cannot run here.
fn docker_ready() -> Option<Vec<String>> {
    let required = std::env::var("ORDINAL_DOCKER_TESTS").is_ok_and(|v| v == "1");
    if !succeeds(Command::new("docker").arg("info").stdout(Stdio::null())) {
        eprintln!("docker fault tests skipped: Docker is not available here");
        return None;
    }
    let Some(compose) = compose_tool() else {
        eprintln!("docker fault tests skipped: neither `docker compose` nor `docker-compose` is installed");
        return None;
    };
    if !succeeds(
        Command::new("docker")
            .args(["image", "inspect", &image()])
            .stdout(Stdio::null()),
    ) {
        assert!(
            !required,
            "ORDINAL_DOCKER_TESTS=1 but the image {} is missing (bash scripts/docker-image.sh)",
            image()
        );
        eprintln!(
            "docker fault tests skipped: no image {} (build it with `bash scripts/docker-image.sh`; \
             ORDINAL_DOCKER_TESTS=1 makes this a failure)",
            image()
        );
        return None;
    }
    Some(compose)
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One compose project: a 4-replica testnet with its own network and volumes.
struct Testnet {
    compose: Vec<String>,
    project: String,
    protocol: &'static str,
    /// Bind-mounted at /out in client containers (acks and reports).
    out: tempfile::TempDir,
    load: Option<Child>,
}

impl Testnet {
    fn up(compose: Vec<String>, scenario: &str, protocol: &'static str) -> Testnet {
        let project = format!(
            "ordfault{}{}",
            std::process::id(),
            scenario.replace(['-', '_'], "")
        );
        let out = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            // Client containers run as the image's unprivileged user.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let testnet = Testnet {
            compose,
            project,
            protocol,
            out,
            load: None,
        };
        check(&mut testnet.compose_command(&["up", "-d", "--no-build"]));
        testnet.wait_until(Duration::from_secs(60), "all 4 replicas answer status", |s| {
            s.iter().all(|r| r.is_some())
        });
        testnet
    }

    fn compose_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.compose[0]);
        command
            .args(&self.compose[1..])
            .arg("-f")
            .arg(workspace().join("docker-compose.yml"))
            .args(["-p", &self.project])
            .args(args)
            .env("ORDINAL_IMAGE", image())
            .env("ORDINAL_PROTOCOL", self.protocol)
            // Clients authenticated by their TLS connection: the load measures ordering, not
            // client-signature checks.
            .env("ORDINAL_REQUEST_AUTH", "unsigned")
            .env("ORDINAL_LOG", "info");
        command
    }

    fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    fn container(&self, replica: usize) -> String {
        let id = check(&mut self.compose_command(&["ps", "-q", &format!("node-{replica}")]));
        let id = id.trim().to_string();
        assert!(!id.is_empty(), "no container for node-{replica}");
        id
    }

    /// `ordinal ARGS` in a container on the testnet's network.
    fn client_command(&self, name: Option<&str>, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command.args(["run", "--rm"]);
        if let Some(name) = name {
            command.args(["--name", name]);
        }
        command
            .args(["--network", &self.network()])
            .args(["-v", &format!("{}_testnet:/testnet:ro", self.project)])
            .args(["-v", &format!("{}:/out", self.out.path().display())])
            .args(["--entrypoint", "ordinal", &image()])
            .args(args)
            .args(["--cluster", "/testnet/client.toml"]);
        command
    }

    fn load_name(&self) -> String {
        format!("{}-load", self.project)
    }

    fn start_load(&mut self) {
        let (rate, duration, tx_size) = (RATE.to_string(), LOAD_SECONDS.to_string(), TX_SIZE.to_string());
        let name = self.load_name();
        let child = self
            .client_command(
                Some(&name),
                &[
                    "bench",
                    "--rate",
                    &rate,
                    "--duration",
                    &duration,
                    "--tx-size",
                    &tx_size,
                    "--clients",
                    "2",
                    "--timeout",
                    "90",
                    "--json",
                    "/out/bench.json",
                    "--acks",
                    "/out/acks.jsonl",
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.load = Some(child);
    }

    fn finish_load(&mut self) -> (Value, Vec<Ack>) {
        let child = self.load.take().expect("load started");
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "ordinal bench failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(self.out.path().join("bench.json")).unwrap())
                .unwrap();
        let acks = std::fs::read_to_string(self.out.path().join("acks.jsonl"))
            .unwrap()
            .lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).unwrap();
                Ack {
                    digest: v["digest"].as_str().unwrap().to_string(),
                    seq: v["seq"].as_u64().unwrap(),
                    index: v["index"].as_u64().unwrap(),
                    at_ms: v["at_ms"].as_u64().unwrap(),
                }
            })
            .collect();
        (report, acks)
    }

    /// Per replica: its status row, or None if it did not answer.
    fn status(&self) -> Vec<Option<Value>> {
        let output = run(&mut self.client_command(None, &["status", "--json"]));
        let mut rows = vec![None; 4];
        if let Ok(v) = serde_json::from_slice::<Value>(&output.stdout) {
            for row in v["replicas"].as_array().into_iter().flatten() {
                if row["reachable"].as_bool() == Some(true) {
                    if let Some(id) = row["id"].as_u64() {
                        rows[id as usize] = Some(row.clone());
                    }
                }
            }
        }
        rows
    }

    fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&[Option<Value>]) -> bool,
    ) -> Vec<Option<Value>> {
        let start = Instant::now();
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?}; last status {status:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn leader(&self) -> usize {
        let status = self.status();
        status
            .iter()
            .flatten()
            .find_map(|row| row["leader"].as_u64())
            .expect("a replica reports the leader") as usize
    }

    fn docker(&self, args: &[&str]) {
        check(Command::new("docker").args(args));
    }

    /// The log of one replica up to `to`, one line per transaction.
    fn tail(&self, replica: usize, to: u64) -> Vec<String> {
        let (replica, to) = (replica.to_string(), to.to_string());
        check(&mut self.client_command(None, &["tail", "--replica", &replica, "--from", "1", "--to", &to]))
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        if let Some(mut child) = self.load.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.load_name()])
            .output();
        let _ = self
            .compose_command(&["down", "-v", "--remove-orphans", "-t", "5"])
            .output();
    }
}

struct Ack {
    digest: String,
    seq: u64,
    index: u64,
    at_ms: u64,
}

/// What a scenario measured.
struct Outcome {
    scenario: &'static str,
    protocol: &'static str,
    committed: u64,
    submitted: u64,
    recovery_ms: u64,
    longest_gap_ms: u64,
    compared_up_to: u64,
    /// Later copies of acknowledged transactions in the log (skipped by execution).
    copies: usize,
}

/// How long after the fault throughput stayed low: the end of the last one-second window
/// (wholly after the fault, and ending before the load does) holding less than
/// `RECOVERED_SHARE` of the offered rate; 0 if none did. Receipts just after the fault come from
/// batches already agreed, so the first window after it says little.
fn recovery_ms(acks: &[Ack], fault_at_ms: u64) -> u64 {
    let mut times: Vec<u64> = acks.iter().map(|a| a.at_ms).collect();
    times.sort_unstable();
    // The load started (after its warm-up) no earlier than BEFORE_FAULT before the fault, so
    // it runs at least this long after it; late stragglers must not read as a slump.
    let load_left_ms = (LOAD_SECONDS * 1000).saturating_sub(BEFORE_FAULT.as_millis() as u64);
    let Some(&last_ack) = times.last() else { return 0 };
    let last = last_ack.min(fault_at_ms + load_left_ms);
    let needed = (RATE as f64 * RECOVERED_SHARE) as usize;
    let mut recovered_at = fault_at_ms;
    let mut end = fault_at_ms + 1000;
    while end + 500 <= last {
        let in_window = times.partition_point(|&t| t <= end) - times.partition_point(|&t| t <= end - 1000);
        if in_window < needed {
            recovered_at = end;
        }
        end += 100;
    }
    recovered_at - fault_at_ms
}

fn longest_gap_ms(acks: &[Ack], fault_at_ms: u64) -> u64 {
    let mut times: Vec<u64> = acks.iter().map(|a| a.at_ms).collect();
    times.push(fault_at_ms);
    times.sort_unstable();
    times
        .windows(2)
        .filter(|w| w[1] >= fault_at_ms)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0)
}

/// Runs load across a fault and checks the logs of the replicas in `correct`.
fn scenario(name: &'static str, protocol: &'static str, fault: impl FnOnce(&Testnet) -> Vec<usize>) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(compose) = docker_ready() else { return };
    let mut testnet = Testnet::up(compose, name, protocol);
    testnet.start_load();
    std::thread::sleep(BEFORE_FAULT);
    let fault_at_ms = unix_millis();
    let correct = fault(&testnet);
    let (report, acks) = testnet.finish_load();
    let submitted = report["submitted"].as_u64().unwrap();
    let committed = report["committed"].as_u64().unwrap();
    assert_eq!(
        acks.len() as u64,
        committed,
        "one ack line per committed transaction"
    );
    assert_eq!(
        report["errors"].as_u64(),
        Some(0),
        "{name}: transactions failed: {report}"
    );
    assert_eq!(
        committed, submitted,
        "{name}: every transaction must commit: {report}"
    );

    // Every correct replica reaches the highest acknowledged position.
    let highest_ack = acks.iter().map(|a| a.seq).max().unwrap_or(0);
    let status = testnet.wait_until(Duration::from_secs(90), "correct replicas catch up", |s| {
        correct.iter().all(|&i| {
            s[i].as_ref()
                .and_then(|r| r["committed_seq"].as_u64())
                .is_some_and(|seq| seq >= highest_ack)
        })
    });
    let common = correct
        .iter()
        .map(|&i| status[i].as_ref().unwrap()["committed_seq"].as_u64().unwrap())
        .min()
        .unwrap();

    // Identical logs on every correct replica.
    let logs: BTreeMap<usize, Vec<String>> = correct.iter().map(|&i| (i, testnet.tail(i, common))).collect();
    let (&first, reference) = logs.iter().next().unwrap();
    for (&replica, log) in &logs {
        if let Some(at) = (0..log.len().max(reference.len())).find(|&k| log.get(k) != reference.get(k)) {
            panic!(
                "{name}: replica {replica}'s log differs from replica {first}'s at line {at}: {:?} vs {:?}",
                log.get(at),
                reference.get(at)
            );
        }
    }

    // Every acknowledged transaction ordered where its receipt said, and nowhere before. A
    // later copy is possible (a new PBFT primary re-queues requests of batches it re-proposes)
    // and harmless: execution skips it and answers with the first position. Copies are counted.
    let mut positions: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for line in reference {
        let v: Value = serde_json::from_str(line).unwrap();
        positions
            .entry(v["digest"].as_str().unwrap().to_string())
            .or_default()
            .push((v["seq"].as_u64().unwrap(), v["index"].as_u64().unwrap()));
    }
    let mut copies = 0;
    for ack in &acks {
        let found = positions.get(&ack.digest).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(
            found.first(),
            Some(&(ack.seq, ack.index)),
            "{name}: acknowledged transaction {} at ({}, {}) appears in the log at {found:?}",
            ack.digest,
            ack.seq,
            ack.index
        );
        copies += found.len() - 1;
    }

    let recovery = recovery_ms(&acks, fault_at_ms);
    let load_left_ms = (LOAD_SECONDS * 1000).saturating_sub(BEFORE_FAULT.as_millis() as u64);
    assert!(
        recovery + 1000 < load_left_ms,
        "{name}: throughput was still below {RECOVERED_SHARE} of {RATE} tx/s {recovery} ms after the fault"
    );
    let outcome = Outcome {
        scenario: name,
        protocol,
        committed,
        submitted,
        recovery_ms: recovery,
        longest_gap_ms: longest_gap_ms(&acks, fault_at_ms),
        compared_up_to: common,
        copies,
    };
    report_outcome(&outcome, &correct, reference.len());
}

fn report_outcome(o: &Outcome, correct: &[usize], lines: usize) {
    println!(
        "docker fault {} ({}): {}/{} committed, throughput at or above {:.0}% of {} tx/s from {} ms after the fault on, \
         longest gap between receipts {} ms; logs of replicas {:?} identical up to seq {} ({} transactions, {} skipped copies)",
        o.scenario,
        o.protocol,
        o.committed,
        o.submitted,
        RECOVERED_SHARE * 100.0,
        RATE,
        o.recovery_ms,
        o.longest_gap_ms,
        correct,
        o.compared_up_to,
        lines,
        o.copies
    );
    let path = workspace().join("target/docker-faults.json");
    let mut all: BTreeMap<String, Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    all.insert(
        format!("{}/{}", o.protocol, o.scenario),
        serde_json::json!({
            "committed": o.committed,
            "submitted": o.submitted,
            "recovery_ms": o.recovery_ms,
            "longest_gap_ms": o.longest_gap_ms,
            "rate": RATE,
            "compared_up_to_seq": o.compared_up_to,
            "correct_replicas": correct,
            "skipped_copies": o.copies,
        }),
    );
    let _ = std::fs::write(&path, serde_json::to_string_pretty(&all).unwrap());
}

/// PBFT's primary; in the linear mode the leader of the round `status` reported, which changes
/// every round, so there it is one replica among the next few leaders.
fn kill_primary_then_restart(t: &Testnet) -> Vec<usize> {
    let leader = t.leader();
    let container = t.container(leader);
    t.docker(&["kill", &container]);
    std::thread::sleep(FAULT_LASTS);
    // Back with the same volume: it must catch up and agree.
    t.docker(&["start", &container]);
    vec![0, 1, 2, 3]
}

#[test]
fn pbft_kill_the_primary() {
    scenario("kill-primary", "pbft", kill_primary_then_restart);
}

#[test]
fn linear_kill_the_leader() {
    scenario("kill-primary", "linear", kill_primary_then_restart);
}

#[test]
fn pbft_pause_a_replica() {
    scenario("pause", "pbft", |t| {
        let container = t.container(2);
        t.docker(&["pause", &container]);
        std::thread::sleep(FAULT_LASTS);
        t.docker(&["unpause", &container]);
        vec![0, 1, 2, 3]
    });
}

#[test]
fn pbft_cut_a_replica_off_the_network() {
    scenario("disconnect", "pbft", |t| {
        let container = t.container(1);
        t.docker(&["network", "disconnect", &t.network(), &container]);
        std::thread::sleep(FAULT_LASTS);
        // Reconnected under its service name, so that its peers can resolve it again.
        t.docker(&[
            "network",
            "connect",
            "--alias",
            "node-1",
            &t.network(),
            &container,
        ]);
        vec![0, 1, 2, 3]
    });
}

#[test]
fn pbft_restart_a_replica_keeping_its_volume() {
    scenario("restart", "pbft", |t| {
        let container = t.container(3);
        t.docker(&["restart", "-t", "10", &container]);
        vec![0, 1, 2, 3]
    });
}

#[test]
fn pbft_stop_f_replicas_for_good() {
    scenario("stop-f", "pbft", |t| {
        // f = 1: the primary, so that the survivors must also change view.
        let leader = t.leader();
        t.docker(&["stop", "-t", "10", &t.container(leader)]);
        (0..4).filter(|&i| i != leader).collect()
    });
}
