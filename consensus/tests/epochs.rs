//! Weight changes through the ordered log (`ordinal_consensus::epoch`) in the simulator: every
//! correct replica switches weights at the same sequence number, certificates are counted with
//! the weights in force where they certify, and faults during the switch break nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::assert_clean;

use ordinal_consensus::sim::{run, SimConfig};
use ordinal_consensus::{ProtocolKind, RequestAuth};
use ordinal_crypto::WeightBounds;

const AWARE: [u64; 5] = [2, 2, 1, 1, 1];
const BOUNDS: WeightBounds = WeightBounds { min: 1, max: 2 };

/// Both protocols: PBFT, and the linear mode, where each epoch runs a chain of its own.
const PROTOCOLS: [ProtocolKind; 2] = [ProtocolKind::Pbft, ProtocolKind::Linear];

/// n = 5 with replica 4's links ten times slower, steady load, weight changes enabled.
fn slow_replica(seed: u64, kind: ProtocolKind) -> SimConfig {
    slow_replica_at(seed, kind, 4)
}

/// n = 5 with replica `slow`'s links ten times slower, steady load, weight changes enabled.
fn slow_replica_at(seed: u64, kind: ProtocolKind, slow: usize) -> SimConfig {
    let mut config = SimConfig::calm(seed, 5);
    config.kind = kind;
    config.protocol.request_auth = RequestAuth::Unsigned;
    config.protocol.max_batch_requests = 8;
    config.protocol.max_inflight_batches = 4;
    config.protocol.checkpoint_interval = 8;
    config.protocol.log_window = 32;
    config.protocol.weight_bounds = Some(BOUNDS);
    config.clients = 4;
    config.requests_per_client = 80;
    config.submit_window = Duration::from_secs(4);
    config.slow_links = vec![(slow, 10)];
    config
}

/// Replica 1 (not the primary) proposes AWARE weights early in the run. The entry is ordered,
/// validated by every replica, and the new weights hold from one window past the next
/// checkpoint; the rest of the run is counted with them and gets faster.
#[test]
fn a_weight_change_takes_effect_at_the_same_sequence_number_everywhere() {
    for kind in PROTOCOLS {
        a_weight_change_takes_effect_everywhere(kind);
    }
}

fn a_weight_change_takes_effect_everywhere(kind: ProtocolKind) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for seed in 0..3 {
        let unchanged = run(slow_replica(seed, kind));
        assert_clean(&unchanged, "no change");
        assert_eq!(unchanged.weight_epochs, vec![(1, vec![1; 5])]);

        let mut config = slow_replica(seed, kind);
        config.weight_proposals = vec![(Duration::from_millis(20), 1, AWARE.to_vec())];
        let report = run(config);
        assert_clean(&report, "weights changed in the log");
        assert_eq!(report.weight_epochs.len(), 2, "{:?}", report.weight_epochs);
        let (start, weights) = &report.weight_epochs[1];
        assert_eq!(weights, &AWARE.to_vec());
        // Ordered at some s ≥ 1: in force from the first checkpoint at or after s, plus the
        // window, plus one.
        assert_eq!((start - 1) % 8, 0, "{start}");
        assert!(*start > 8 + 32, "{start}");
        assert!(
            report.decided_seq > start + 20,
            "the run reached well into the new epoch"
        );
        for (replica, status) in &report.final_status {
            assert_eq!(status.weight_epoch, 1, "{kind} replica {replica}");
        }
        before.push(unchanged.median_latency);
        after.push(report.median_latency);
    }
    println!(
        "{kind}: median latency, equal weights throughout {before:?}; changed to {AWARE:?} in the log {after:?}"
    );
    let sum = |v: &[Duration]| v.iter().sum::<Duration>();
    assert!(sum(&after) < sum(&before), "{after:?} against {before:?}");
}

/// Proposals from every replica, Byzantine ones included, in a row: the first valid one per
/// epoch wins, a swap straight between two heavy sets is refused (not jointly safe), and a
/// change while another is pending is refused. Random faults and f Byzantine replicas, 40
/// seeds: no invariant breaks and every correct replica derives the same schedule.
#[test]
fn weight_changes_under_faults_keep_every_invariant() {
    for kind in PROTOCOLS {
        weight_changes_under_faults(kind);
    }
}

fn weight_changes_under_faults(kind: ProtocolKind) {
    let (mut changed, mut three, mut with_view_changes) = (0, 0, 0);
    for seed in 0..40 {
        let mut config = SimConfig::random(seed, 5);
        config.kind = kind;
        config.protocol.weight_bounds = Some(BOUNDS);
        config.protocol.weight_reports_every = 0;
        // Enough batches for three epochs, proposals spread over the faulty period.
        config.requests_per_client = 30;
        config.submit_window = Duration::from_secs(3);
        let at = Duration::from_millis;
        config.weight_proposals = vec![
            (at(5), (seed % 5) as usize, AWARE.to_vec()),
            (at(30), ((seed + 1) % 5) as usize, vec![1, 1, 1, 2, 2]),
            (at(700), ((seed + 2) % 5) as usize, vec![1; 5]),
            (at(1400), ((seed + 3) % 5) as usize, vec![1, 1, 1, 2, 2]),
            (at(2100), ((seed + 4) % 5) as usize, vec![1; 5]),
        ];
        let report = run(config);
        assert_clean(&report, "weight changes under faults");
        let epochs = &report.weight_epochs;
        for pair in epochs.windows(2) {
            assert!(
                pair[1].0 >= pair[0].0 + 8,
                "epochs at least a window apart: {epochs:?}"
            );
            assert_ne!(
                (pair[0].1.as_slice(), pair[1].1.as_slice()),
                (AWARE.as_slice(), [1, 1, 1, 2, 2].as_slice()),
                "a swap between heavy sets must be refused"
            );
        }
        changed += usize::from(epochs.len() > 1);
        three += usize::from(epochs.len() > 2);
        // Views changed (PBFT), or rounds timed out (the linear mode).
        let view_changes: u64 = report.final_status.iter().map(|(_, s)| s.view_changes).sum();
        with_view_changes += usize::from(epochs.len() > 1 && view_changes > 0);
        if seed < 6 {
            println!(
                "{kind} seed {seed}: epochs {epochs:?}, decided through {}, view changes {view_changes}",
                report.decided_seq
            );
        }
    }
    println!(
        "{kind}, of 40 runs: {changed} changed weights, {three} went through three epochs or more, \
         {with_view_changes} changed both weights and views"
    );
    assert!(
        changed >= 30 && three >= 10,
        "{changed} changed, {three} reached three epochs"
    );
    assert!(
        with_view_changes >= 5,
        "{with_view_changes} runs changed views too"
    );
}

/// Nobody names a vector: every replica orders its latency measurements at each checkpoint,
/// and once 2f + 2 reports are in every replica derives the same AWARE weights from their
/// medians. With replica 4 ten times slower, it never becomes heavy; two fast replicas do, and
/// the run is faster than with equal weights throughout.
#[test]
fn weights_follow_measured_latency_through_the_log() {
    for kind in PROTOCOLS {
        weights_follow_measured_latency(kind, 4);
    }
}

/// The same with the slow replica the first primary (PBFT's for the whole of view 0). A
/// primary's PREPARE leaves with its PRE-PREPARE; timed, it made a slow primary look the
/// fastest of all, so the reports made it heavy and it kept leading. Votes are timed to the
/// COMMIT now: the slow primary turns light, and a planned view change hands the lead to a
/// heavy replica.
#[test]
fn weights_follow_measured_latency_off_a_slow_primary() {
    for kind in PROTOCOLS {
        weights_follow_measured_latency(kind, 0);
    }
}

fn weights_follow_measured_latency(kind: ProtocolKind, slow: usize) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for seed in 0..3 {
        let mut config = slow_replica_at(seed, kind, slow);
        config.protocol.weight_bounds = None;
        let unchanged = run(config);
        assert_clean(&unchanged, "equal weights throughout");

        let mut config = slow_replica_at(seed, kind, slow);
        config.protocol.weight_reports_every = 1;
        let report = run(config);
        assert_clean(&report, "weights from measurements");
        let epochs = &report.weight_epochs;
        println!(
            "{kind} seed {seed}: epochs {epochs:?}, decided through {}, max latency {:?} (equal weights {:?}), views {}",
            report.decided_seq, report.max_latency, unchanged.max_latency, report.max_view
        );
        assert!(epochs.len() >= 2, "{epochs:?}");
        // Moves to AWARE weights heavy on two fast replicas, and settles there: at most one
        // re-ranking among the fast four (through the flat vector), never the slow one heavy.
        assert!(epochs.len() <= 4, "flapping: {epochs:?}");
        for (_, weights) in &epochs[1..] {
            assert_eq!(
                weights[slow], 1,
                "the slow replica never becomes heavy: {epochs:?}"
            );
        }
        let last = &epochs[epochs.len() - 1].1;
        assert_eq!(last.iter().filter(|w| **w == 2).count(), 2, "{epochs:?}");
        // PBFT's leader choice follows the log: every replica's primary is one of the heavy
        // (fast) replicas, never the slow one. (The linear mode's leaders name their
        // successors among the replicas whose votes came first.)
        for (replica, status) in report.final_status.iter().filter(|_| kind == ProtocolKind::Pbft) {
            assert_eq!(
                last[status.leader.0 as usize], 2,
                "replica {replica} follows primary {} under {last:?}",
                status.leader
            );
        }
        before.push(unchanged.median_latency);
        after.push(report.median_latency);
    }
    println!(
        "{kind}, replica {slow} slow: median latency, equal weights {before:?}; weights from reports {after:?}"
    );
    let sum = |v: &[Duration]| v.iter().sum::<Duration>();
    assert!(sum(&after) < sum(&before), "{after:?} against {before:?}");
}
