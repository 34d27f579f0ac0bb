//! Scenario tests: the real PBFT state machine in the deterministic simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::assert_clean;

use ordinal_consensus::sim::{run, Behaviour, Crash, Isolation, LinkFaults, SimConfig, Split};
use ordinal_consensus::RequestAuth;

fn byzantine(seed: u64, replicas: usize, faulty: Vec<(usize, Behaviour)>) -> SimConfig {
    common::with_byzantine(SimConfig::calm(seed, replicas), faulty)
}

#[test]
fn calm_cluster_orders_everything_without_view_changes() {
    for replicas in [1, 4, 7] {
        let report = run(SimConfig::calm(1, replicas));
        assert_clean(&report, "calm");
        assert_eq!(
            report.redundant_copies, 0,
            "requests ordered twice (n={replicas})"
        );
        assert_eq!(report.max_view, 0, "no view change without faults (n={replicas})");
        assert!(report.decided_seq > 0);
        // With more than one replica some votes come after their quorum, and go in unchecked.
        assert_eq!(report.late_votes_unchecked > 0, replicas > 1, "n={replicas}");
    }
}

#[test]
fn every_byzantine_behaviour_as_a_backup() {
    for behaviour in Behaviour::ALL {
        for seed in 0..3 {
            let report = run(byzantine(seed, 4, vec![(2, behaviour)]));
            assert_clean(&report, behaviour.name());
        }
    }
}

#[test]
fn every_byzantine_behaviour_as_the_primary_with_f_2() {
    for behaviour in Behaviour::ALL {
        let report = run(byzantine(7, 7, vec![(0, behaviour), (4, Behaviour::Silent)]));
        assert_clean(&report, behaviour.name());
    }
}

/// A faulty primary of view 0 is replaced: the cluster moves past view 0 and still answers
/// every request.
#[test]
fn view_change_under_each_kind_of_faulty_primary() {
    let must_replace = [
        Behaviour::Silent,
        Behaviour::Slow,
        Behaviour::Equivocate,
        Behaviour::WrongDigest,
    ];
    for behaviour in Behaviour::ALL {
        for seed in 0..3 {
            let mut config = byzantine(seed, 4, vec![(0, behaviour)]);
            config.link_faults = LinkFaults::NONE;
            let report = run(config);
            assert_clean(&report, behaviour.name());
            if must_replace.contains(&behaviour) {
                assert!(
                    report.max_view >= 1,
                    "{} primary was not replaced (seed {seed})",
                    behaviour.name()
                );
            }
        }
    }
}

#[test]
fn crash_restart_keeps_safety_and_catches_up() {
    for seed in 0..4 {
        let mut config = SimConfig::calm(seed, 4);
        config.requests_per_client = 20;
        config.submit_window = Duration::from_secs(2);
        config.heal_at = Duration::from_secs(3);
        // The primary of view 0 crashes mid-run and comes back with only what it persisted.
        config.crashes.push(Crash {
            replica: 0,
            at: Duration::from_millis(700),
            restart_at: Duration::from_millis(1900),
        });
        let report = run(config);
        assert_clean(&report, "crash-restart");
        assert!(report.max_view >= 1);
    }
}

/// A replica cut off while the others pass two checkpoints (and their window) comes back by
/// state transfer of certified batches and ends at the same sequence number.
#[test]
fn state_transfer_after_partition_past_two_checkpoints() {
    let mut config = SimConfig::calm(3, 4);
    config.requests_per_client = 30;
    config.submit_window = Duration::from_secs(2);
    config.protocol.max_batch_requests = 2;
    config.isolations.push(Isolation {
        replica: 3,
        from: Duration::from_millis(50),
        until: Duration::from_millis(2500),
    });
    // Heal well after the partition ends, so the run lasts until the laggard has caught up.
    config.heal_at = Duration::from_secs(6);
    let report = run(config.clone());
    assert_clean(&report, "partition");
    let interval = config.protocol.checkpoint_interval;
    assert!(
        report.decided_seq >= 3 * interval,
        "passed two checkpoints: {}",
        report.decided_seq
    );
    assert!(
        report.traffic.by_kind.get("batches").is_some_and(|(n, _)| *n > 0),
        "used state transfer"
    );
    let seqs: Vec<u64> = report.final_status.iter().map(|(_, s)| s.committed_seq).collect();
    assert!(
        seqs.iter().all(|s| *s == seqs[0]),
        "all replicas at one seq: {seqs:?}"
    );
}

/// A split with no quorum on either side stalls both, commits nothing conflicting, and
/// everything commits once it heals; a split with a quorum on one side keeps that side going.
#[test]
fn network_split_and_heal() {
    for (side, seed) in [(vec![0, 1], 1), (vec![0], 2), (vec![1, 2, 3], 3), (vec![0, 3], 4)] {
        let mut config = SimConfig::calm(seed, 4);
        config.requests_per_client = 15;
        config.submit_window = Duration::from_secs(2);
        config.splits.push(Split {
            side: side.clone(),
            from: Duration::from_millis(300),
            until: Duration::from_millis(2500),
        });
        config.heal_at = Duration::from_millis(2500);
        let report = run(config);
        assert_clean(&report, &format!("split {side:?}"));
    }
    let mut config = SimConfig::calm(5, 7);
    config.byzantine = vec![(6, Behaviour::Equivocate)];
    config.splits.push(Split {
        side: vec![0, 1, 2],
        from: Duration::from_millis(200),
        until: Duration::from_millis(2000),
    });
    config.heal_at = Duration::from_millis(2000);
    assert_clean(&run(config), "split n=7 with an equivocator");
}

/// Memory stays bounded over 100,000 requests: the simulator checks every replica's footprint
/// against the configured bounds after every event, and the run must end with small
/// structures.
#[test]
fn entries_stay_bounded_across_100k_requests() {
    let mut config = SimConfig::calm(11, 4);
    config.clients = 4;
    config.requests_per_client = 25_000;
    config.payload_bytes = 8;
    config.submit_window = Duration::from_secs(10);
    config.protocol.request_auth = RequestAuth::Unsigned;
    config.protocol.max_batch_requests = 128;
    config.protocol.max_inflight_batches = 4;
    config.protocol.client_nonce_window = 256;
    config.client_retry = Duration::from_secs(5);
    config.max_events = 50_000_000;
    let report = run(config.clone());
    assert_clean(&report, "100k requests");
    assert_eq!(report.submitted, 100_000);
    assert!(report.decided_seq >= 100_000 / 128);
}

/// The primary crashes with its pipeline full and thousands of requests waiting (as a real
/// cluster under load does): the backups must replace it and order everything while it is
/// down, not only once it is back.
#[test]
fn a_primary_crashing_under_load_is_replaced_while_it_is_down() {
    for seed in 0..8 {
        let mut config = SimConfig::calm(seed, 4);
        if seed % 2 == 1 {
            // The benchmark setting: clients authenticated by their connection.
            config.protocol.request_auth = RequestAuth::Unsigned;
        }
        config.protocol.max_batch_requests = 32;
        config.protocol.max_inflight_batches = 8;
        config.protocol.checkpoint_interval = 16;
        config.protocol.log_window = 64;
        config.clients = 8;
        config.requests_per_client = 250;
        config.submit_window = Duration::from_secs(2);
        config.crashes = vec![Crash {
            replica: 0,
            at: Duration::from_millis(700 + 97 * seed),
            restart_at: Duration::from_secs(30),
        }];
        config.heal_at = Duration::from_secs(30);
        let report = run(config);
        println!(
            "seed {seed}: answered {}/{} decided {} views {} status {:?}",
            report.answered, report.submitted, report.decided_seq, report.max_view, report.replica_status
        );
        assert_clean(&report, "primary crash under load");
        assert!(
            report.median_latency < Duration::from_secs(10),
            "seed {seed}: requests waited for the primary's restart (median {:?})",
            report.median_latency
        );
    }
}
