//! Membership changes through the ordered log (`ordinal_consensus::epoch`) in the simulator: a
//! fifth replica joins a running four-replica cluster by state transfer and starts voting at
//! the epoch boundary, then a founding member leaves, under load, with crashes afterwards that
//! only the new membership survives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::assert_clean;

use ordinal_consensus::epoch::MembershipChange;
use ordinal_consensus::sim::{replica_key, run, Behaviour, Crash, SimConfig};
use ordinal_consensus::{ProtocolKind, RequestAuth};
use ordinal_crypto::{MembershipEdit, ReplicaId};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Four replicas and one spare (id 4). The operator adds 4 at 200 ms (4 starts at 400 ms with
/// an empty log and catches up), and removes 1 at 1.5 s. At 3 s, replicas 1 (gone) and 2
/// crash until the heal at 6 s: the rest of the load (to 4 s) must be ordered by 0, 3 and 4,
/// a quorum only if 4 votes and 1 no longer counts.
fn grow_and_shrink(seed: u64, kind: ProtocolKind) -> SimConfig {
    let mut config = SimConfig::calm(seed, 4);
    config.kind = kind;
    config.protocol.request_auth = RequestAuth::Signed;
    config.clients = 3;
    config.requests_per_client = 60;
    config.submit_window = Duration::from_secs(4);
    config.spares = 1;
    config.spare_starts = vec![(ms(400), 4)];
    config.membership = vec![
        (
            ms(200),
            MembershipChange {
                epoch: 1,
                edit: MembershipEdit::Join(replica_key(4).public()),
                address: "sim:4".into(),
            },
        ),
        (
            ms(1500),
            MembershipChange {
                epoch: 2,
                edit: MembershipEdit::Leave(ReplicaId(1)),
                address: String::new(),
            },
        ),
    ];
    for replica in [1, 2] {
        config.crashes.push(Crash {
            replica,
            at: Duration::from_secs(3),
            restart_at: Duration::from_secs(6),
        });
    }
    config.heal_at = Duration::from_secs(6);
    config
}

#[test]
fn a_replica_joins_by_state_transfer_and_a_member_leaves_under_load() {
    for (kind, seed) in [ProtocolKind::Pbft, ProtocolKind::Linear]
        .into_iter()
        .flat_map(|kind| (0..3).map(move |seed| (kind, seed)))
    {
        let report = run(grow_and_shrink(seed, kind));
        assert_clean(&report, "grow to five, shrink to four");
        let weights: Vec<Vec<u64>> = report.weight_epochs.iter().map(|(_, w)| w.clone()).collect();
        assert_eq!(
            weights,
            vec![vec![1, 1, 1, 1], vec![1, 1, 1, 1, 1], vec![1, 0, 1, 1, 1]],
            "seed {seed}: {:?}",
            report.weight_epochs
        );
        let leave_start = report.weight_epochs[2].0;
        assert!(
            report.decided_seq > leave_start + 8,
            "seed {seed}: the run went well past the leave"
        );
        // Nothing waited for the heal: 0, 3 and 4 ordered everything submitted while 1 and
        // 2 were down.
        assert!(
            report.max_latency < Duration::from_secs(2),
            "seed {seed}: max latency {:?}",
            report.max_latency
        );
        let joiner = report
            .final_status
            .iter()
            .find(|(r, _)| *r == 4)
            .expect("replica 4 runs");
        assert_eq!(joiner.1.weight_epoch, 2, "seed {seed}");
        println!(
            "{kind} seed {seed}: epochs {:?}, decided {}, median latency {:?}, max {:?}",
            report.weight_epochs, report.decided_seq, report.median_latency, report.max_latency
        );
    }
}

/// The same changes with a Byzantine member (replica 3, every behaviour) and faulty links
/// until the heal: every invariant holds, and every correct replica derives the same
/// membership schedule.
#[test]
fn membership_changes_with_a_byzantine_member_keep_every_invariant() {
    for (kind, (seed, behaviour)) in [ProtocolKind::Pbft, ProtocolKind::Linear]
        .into_iter()
        .flat_map(|kind| Behaviour::ALL.iter().enumerate().map(move |b| (kind, b)))
    {
        let mut config = grow_and_shrink(100 + seed as u64, kind);
        config.crashes.clear();
        config.byzantine = vec![(3, *behaviour)];
        config.link_faults = ordinal_consensus::sim::LinkFaults {
            drop: 0.05,
            duplicate: 0.02,
            reorder: 0.05,
        };
        config.heal_at = Duration::from_secs(4);
        let report = run(config);
        assert_clean(&report, &format!("{kind} {behaviour:?}"));
        assert!(
            report.weight_epochs.len() >= 2,
            "{kind} {behaviour:?}: {:?}",
            report.weight_epochs
        );
    }
}

/// View changes (PBFT) and timed-out rounds (the linear mode) around the epoch boundaries: the
/// replica leading when the run starts crashes at every 100 ms from 0.2 s to 2 s, for 600 ms,
/// so some view change happens while the window straddles each boundary (the join takes
/// effect near 0.5 s, the leave near 1.7 s). Every invariant holds and both changes take
/// effect.
#[test]
fn view_changes_around_epoch_boundaries_keep_every_invariant() {
    for kind in [ProtocolKind::Pbft, ProtocolKind::Linear] {
        let (mut runs, mut changed_views) = (0, 0);
        for (i, crash_at) in (200..=2000).step_by(100).enumerate() {
            let mut config = grow_and_shrink(200 + i as u64, kind);
            config.crashes = vec![Crash {
                replica: 0,
                at: ms(crash_at),
                restart_at: ms(crash_at + 600),
            }];
            let report = run(config);
            assert_clean(&report, &format!("{kind}, replica 0 down from {crash_at} ms"));
            assert_eq!(
                report.weight_epochs.len(),
                3,
                "{kind}, crash at {crash_at} ms: {:?}",
                report.weight_epochs
            );
            let view_changes: u64 = report.final_status.iter().map(|(_, s)| s.view_changes).sum();
            runs += 1;
            changed_views += usize::from(view_changes > 0);
        }
        println!("{kind}: {runs} runs, {changed_views} with view changes or timed-out rounds");
        assert!(changed_views * 2 >= runs, "{kind}: {changed_views} of {runs}");
    }
}
