//! Weighted quorums in the simulator: what weights buy when one replica is slow, and that a
//! Byzantine replica holding the largest admissible weight breaks nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::assert_clean;

use ordinal_consensus::sim::{run, Behaviour, SimConfig};
use ordinal_consensus::{ProtocolKind, RequestAuth};
use ordinal_crypto::{aware_weights, ReplicaId};

/// n = 5 (f = 1, Δ = 1) with replica 4's links ten times slower, under steady load.
fn slow_replica(seed: u64, kind: ProtocolKind, weights: Vec<u64>) -> SimConfig {
    let mut config = SimConfig::calm(seed, 5);
    config.kind = kind;
    config.protocol.request_auth = RequestAuth::Unsigned;
    config.protocol.max_batch_requests = 8;
    config.protocol.max_inflight_batches = 4;
    config.protocol.checkpoint_interval = 8;
    config.protocol.log_window = 32;
    config.clients = 4;
    config.requests_per_client = 60;
    config.submit_window = Duration::from_secs(3);
    config.slow_links = vec![(4, 10)];
    config.weights = weights;
    config
}

/// With equal weights a quorum of n = 5 is 4 replicas, so every decision waits for the
/// fourth-fastest answer. AWARE's shape gives two fast replicas weight 2: then they and any
/// one other decide, and the slow replica (or the slower of the rest) is never waited for.
#[test]
fn weights_on_fast_replicas_cut_latency_when_one_replica_is_slow() {
    let heavy = [ReplicaId(0), ReplicaId(1)];
    let weighted = aware_weights(5, 1, &heavy).unwrap();
    assert_eq!(weighted, vec![2, 2, 1, 1, 1]);
    for kind in [ProtocolKind::Pbft, ProtocolKind::Linear] {
        let mut equal_medians = Vec::new();
        let mut weighted_medians = Vec::new();
        for seed in 0..4 {
            let equal = run(slow_replica(seed, kind, Vec::new()));
            assert_clean(&equal, "equal weights, one slow replica");
            let heavy = run(slow_replica(seed, kind, weighted.clone()));
            assert_clean(&heavy, "AWARE weights, one slow replica");
            equal_medians.push(equal.median_latency);
            weighted_medians.push(heavy.median_latency);
        }
        let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
        println!(
            "{kind}: median latency with equal weights {:?} (mean {:?}), with [2, 2, 1, 1, 1] {:?} (mean {:?})",
            equal_medians,
            mean(&equal_medians),
            weighted_medians,
            mean(&weighted_medians)
        );
        assert!(
            mean(&weighted_medians) < mean(&equal_medians),
            "{kind}: weights did not help ({weighted_medians:?} against {equal_medians:?})"
        );
    }
}

/// The heaviest admissible weight in a Byzantine replica's hands: every behaviour, both
/// protocols, at n = 5 with `[2, 2, 1, 1, 1]` and at n = 4 with `[4, 3, 3, 3]` (the most
/// skew n = 3f + 1 allows).
#[test]
fn a_byzantine_replica_with_the_largest_admissible_weight_breaks_nothing() {
    for kind in [ProtocolKind::Pbft, ProtocolKind::Linear] {
        for (replicas, weights) in [(5, vec![2, 2, 1, 1, 1]), (4, vec![4, 3, 3, 3])] {
            for (i, behaviour) in Behaviour::ALL.into_iter().enumerate() {
                let mut config =
                    common::with_byzantine(SimConfig::calm(40 + i as u64, replicas), vec![(0, behaviour)]);
                config.kind = kind;
                config.weights = weights.clone();
                let report = run(config);
                assert_clean(
                    &report,
                    &format!(
                        "{kind} n={replicas} {weights:?}: heavy replica {}",
                        behaviour.name()
                    ),
                );
            }
        }
    }
}
