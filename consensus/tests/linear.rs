//! The linear mode (Jolteon) on its own: a replica's vote is durable before it leaves and is
//! never cast twice in a round, even across a restart; and the real state machines in the
//! simulator under calm runs, Byzantine replicas and a crash-restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::assert_clean;

use ordinal_consensus::messages::{genesis_qc, Block, Message};
use ordinal_consensus::sim::{committee, replica_key, run, Behaviour, Crash, SimConfig};
use ordinal_consensus::{
    linear, Action, Batch, Input, Invalid, Protocol, ProtocolConfig, ProtocolKind, Request, SafetyState,
    SafetyUpdate,
};
use ordinal_crypto::{Committee, KeyPair, ReplicaId, Signed};

fn linear_config(seed: u64, replicas: usize) -> SimConfig {
    let mut config = SimConfig::calm(seed, replicas);
    config.kind = ProtocolKind::Linear;
    config
}

#[test]
fn calm_linear_cluster_orders_everything_without_timeouts() {
    for replicas in [1, 4, 7] {
        let report = run(linear_config(1, replicas));
        assert_clean(&report, "calm");
        assert!(report.decided_seq > 0);
        // Leaders must not propose requests that an earlier block, committed but not yet
        // executed, already carries (seen on a real cluster: each request ordered ~4 times).
        assert_eq!(
            report.redundant_copies, 0,
            "requests ordered twice (n={replicas})"
        );
        for (replica, status) in &report.final_status {
            assert_eq!(
                status.view_changes, 0,
                "replica {replica} timed out a round (n={replicas})"
            );
        }
    }
}

#[test]
fn every_byzantine_behaviour_under_the_linear_mode() {
    for behaviour in Behaviour::ALL {
        for (replicas, faulty) in [
            (4, vec![(2, behaviour)]),
            (7, vec![(0, behaviour), (4, Behaviour::Silent)]),
        ] {
            let config = common::with_byzantine(linear_config(3, replicas), faulty);
            let report = run(config);
            assert_clean(&report, behaviour.name());
        }
    }
}

#[test]
fn a_linear_cluster_restarted_whole_resumes_with_requests_waiting() {
    // Every replica restarts with an empty chain: none holds the block behind its highest
    // certificate, and that must not stop leaders from proposing (a review found that it did).
    for replicas in [1, 4] {
        let mut config = linear_config(7, replicas);
        config.crashes = (0..replicas)
            .map(|replica| Crash {
                replica,
                at: Duration::from_millis(400),
                restart_at: Duration::from_millis(600),
            })
            .collect();
        let report = run(config);
        assert_clean(&report, "whole-cluster restart");
        assert_eq!(
            report.redundant_copies, 0,
            "requests ordered twice (n={replicas})"
        );
    }
}

#[test]
fn linear_crash_restart_keeps_safety_and_catches_up() {
    for seed in 0..4 {
        let mut config = linear_config(seed, 4);
        config.crashes = vec![Crash {
            replica: 1 + seed as usize % 3,
            at: Duration::from_millis(300),
            restart_at: Duration::from_millis(1200),
        }];
        config.heal_at = Duration::from_millis(1200);
        let report = run(config);
        assert_clean(&report, "crash-restart");
    }
}

fn replica(committee: &Committee, id: u16, safety: SafetyState) -> linear::Replica {
    let config = ProtocolConfig {
        request_auth: ordinal_consensus::RequestAuth::Unsigned,
        ..ProtocolConfig::default()
    };
    linear::Replica::restore(
        ReplicaId(id),
        replica_key(id as usize),
        committee.clone(),
        config,
        Duration::ZERO,
        safety,
        Vec::new(),
    )
}

/// Round 1's block from its leader (replica 1), extending genesis, which nobody signed: it
/// names replica 2 as the next leader.
fn first_block(batch: &Batch) -> Block {
    Block {
        epoch: 0,
        round: 1,
        seq: 1,
        batch_digest: batch.digest(),
        justify: genesis_qc(),
        timeout: None,
        next_leader: ReplicaId(2),
        recent_leaders: vec![ReplicaId(1)],
    }
}

/// Round 1's proposal from its leader (replica 1), extending genesis, carrying `tag`.
fn proposal(committee: &Committee, tag: u8) -> Input {
    let client = KeyPair::from_seed([9; 32]).public();
    let batch = Batch::new(vec![Request::unsigned(client, tag as u64, vec![tag])]);
    let block = first_block(&batch);
    let message = Message::Propose {
        block: Signed::sign(block, ReplicaId(1), &replica_key(1), committee),
        batch,
        certified: Vec::new(),
        ancestry: Vec::new(),
    };
    let config = ProtocolConfig {
        request_auth: ordinal_consensus::RequestAuth::Unsigned,
        ..ProtocolConfig::default()
    };
    Input::Message {
        from: ReplicaId(1),
        message: message.verify(committee, &config).unwrap(),
    }
}

/// Jolteon's safety state (last voted round) is durable before the vote leaves, the vote goes
/// to the next round's leader only, and a restarted replica does not vote again in that round
/// for another block.
#[test]
fn the_vote_is_durable_first_goes_to_the_next_leader_and_is_never_repeated() {
    let committee = committee(4).unwrap();
    let mut voter = replica(&committee, 3, SafetyState::default());
    voter
        .handle(Duration::from_millis(1), proposal(&committee, 1))
        .unwrap();
    let actions = voter.drain_actions();
    let persisted = actions
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::PersistSafety(SafetyUpdate::Voted { epoch: 0, round: 1 })
            )
        })
        .expect("the vote's round is persisted");
    let sent = actions
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Send {
                    to: ReplicaId(2),
                    message: Message::Vote { .. }
                }
            )
        })
        .expect("the vote goes to round 2's leader");
    assert!(persisted < sent);
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Broadcast {
                message: Message::Vote { .. }
            }
        )),
        "votes are never broadcast"
    );

    // Restarted from what it persisted: a different block for round 1 gets no vote.
    let mut safety = SafetyState::default();
    for action in &actions {
        if let Action::PersistSafety(update) = action {
            safety.apply(update);
        }
    }
    let mut restarted = replica(&committee, 3, safety);
    let _ = restarted.handle(Duration::from_millis(2), proposal(&committee, 2));
    assert!(
        !restarted.drain_actions().iter().any(|a| matches!(
            a,
            Action::Send {
                message: Message::Vote { .. },
                ..
            }
        )),
        "a restarted replica voted twice in round 1"
    );
}

/// Epochs: a replica that voted in a later epoch than its stored log has reached (its log was
/// not durable as far as its votes) never acts in the earlier epoch again, where it may have
/// voted in rounds it no longer records; and the safety state orders votes by epoch first.
#[test]
fn a_replica_that_voted_in_a_later_epoch_never_votes_in_an_earlier_one() {
    let committee = committee(4).unwrap();
    let mut safety = SafetyState::default();
    safety.apply(&SafetyUpdate::Voted { epoch: 1, round: 2 });
    safety.apply(&SafetyUpdate::Voted { epoch: 0, round: 9 });
    assert_eq!(
        (safety.voted_epoch, safety.voted_round),
        (1, 2),
        "a vote of an earlier epoch does not lower the state"
    );
    let mut restarted = replica(&committee, 3, safety);
    let result = restarted.handle(Duration::from_millis(1), proposal(&committee, 1));
    assert_eq!(result, Err(Invalid::Stale), "epoch 0's proposal is old news");
    assert!(
        !restarted.drain_actions().iter().any(|a| matches!(
            a,
            Action::Send {
                message: Message::Vote { .. },
                ..
            } | Action::PersistSafety(SafetyUpdate::Voted { .. })
        )),
        "a replica past epoch 0 voted in it"
    );

    // A block naming another epoch than its certificate's is refused at verification.
    let client = KeyPair::from_seed([9; 32]).public();
    let batch = Batch::new(vec![Request::unsigned(client, 1, vec![1])]);
    let block = Block {
        epoch: 1,
        ..first_block(&batch)
    };
    let message = Message::Propose {
        block: Signed::sign(block, ReplicaId(1), &replica_key(1), &committee),
        batch,
        certified: Vec::new(),
        ancestry: Vec::new(),
    };
    let config = ProtocolConfig::default();
    assert!(
        message.verify(&committee, &config).is_err(),
        "epoch 1 is not scheduled, and genesis certifies epoch 0"
    );
}

/// Commit votes only count with the vote that carries them: they must name the round just
/// before the vote's (the parent's), so votes from different rounds never add up to a commit
/// certificate; and rounds no cluster reaches are refused before any arithmetic on them.
#[test]
fn commit_votes_are_bound_to_their_voting_round() {
    use ordinal_consensus::messages::{BlockVote, CommitVote};
    use ordinal_crypto::Digest;
    let committee = committee(4).unwrap();
    let config = ProtocolConfig::default();
    let key = replica_key(2);
    let vote_in = |round: u64, view: u64| Message::Vote {
        vote: Signed::sign(
            BlockVote {
                epoch: 0,
                round,
                block: Digest::of(b"child"),
                seq: 3,
            },
            ReplicaId(2),
            &key,
            &committee,
        ),
        commits: vec![Signed::sign(
            CommitVote {
                view,
                seq: 3,
                digest: Digest::of(b"batch"),
            },
            ReplicaId(2),
            &key,
            &committee,
        )],
    };
    assert!(vote_in(8, 7).verify(&committee, &config).is_ok());
    assert!(
        vote_in(8, 5).verify(&committee, &config).is_err(),
        "a commit vote of an older round"
    );
    assert!(vote_in(8, 8).verify(&committee, &config).is_err());
    assert!(vote_in(u64::MAX, u64::MAX - 1)
        .verify(&committee, &config)
        .is_err());
    assert!(vote_in(3, u64::MAX).verify(&committee, &config).is_err());
}

/// A replica that crashes and stays down stops leading: blocks name the next leader among the
/// replicas whose votes they carry, and after a timeout certificate a round-robin leader that
/// did not sign it is skipped, so one timeout at most (the round whose votes it was to collect)
/// and the rounds then go round the live replicas only. Under round-robin every fourth round
/// (and the collection of the votes of the round before it) fell to the dead replica for as long
/// as it stayed down. Crash times vary so that the dead replica is, in some runs, also the
/// round-robin leader of the round after the one that times out.
#[test]
fn a_leader_that_stays_down_stops_being_chosen() {
    let mut runs_with_a_timeout = 0;
    for seed in 0..24 {
        let crashed = seed as usize % 4;
        let mut config = linear_config(seed, 4);
        config.clients = 4;
        config.requests_per_client = 100;
        config.submit_window = Duration::from_secs(3);
        config.crashes = vec![Crash {
            replica: crashed,
            at: Duration::from_millis(500 + 13 * seed),
            restart_at: Duration::from_secs(60),
        }];
        config.heal_at = Duration::from_secs(60);
        let report = run(config);
        assert_clean(&report, "leader down for good");
        let timeouts = report
            .final_status
            .iter()
            .filter(|(replica, _)| *replica != crashed)
            .map(|(_, status)| status.view_changes)
            .max()
            .unwrap_or(0);
        println!(
            "seed {seed}: replica {crashed} down, answered {}/{}, rounds {}, timeouts {timeouts}, median latency {:?}, max {:?}",
            report.answered, report.submitted, report.max_view, report.median_latency, report.max_latency
        );
        assert!(
            report.max_view > 40,
            "seed {seed}: too few rounds ({}) to show anything",
            report.max_view
        );
        assert!(
            timeouts <= 1,
            "seed {seed}: {timeouts} round timeouts in {} rounds with replica {crashed} down",
            report.max_view
        );
        runs_with_a_timeout += usize::from(timeouts == 1);
        // A crashed collector is given up on once the failure detector suspects it, after a
        // quarter of the round timeout, not the whole of it (300 ms here): 115-129 ms at most,
        // against at least the 300 ms of a full round timeout before.
        let view_timeout = SimConfig::small_protocol().view_timeout;
        assert!(
            report.max_latency < view_timeout / 2,
            "seed {seed}: a request waited {:?} with replica {crashed} down",
            report.max_latency
        );
        assert!(
            report.median_latency < Duration::from_millis(100),
            "seed {seed}: median latency {:?} with replica {crashed} down",
            report.median_latency
        );
    }
    // The crash must hit a collector now and then, or the test shows nothing.
    assert!(
        runs_with_a_timeout >= 3,
        "only {runs_with_a_timeout} runs timed out at all"
    );
}

/// Who may propose is checked where messages arrive: the leader the certified parent named
/// (with the parent's header to show it), or after a timeout certificate the round-robin one
/// (the next signer if it did not sign); and the next leader a block names must follow from
/// its certificates' signers.
#[test]
fn proposals_from_anyone_but_the_named_leader_are_refused() {
    let committee = committee(4).unwrap();
    let config = ProtocolConfig {
        request_auth: ordinal_consensus::RequestAuth::Unsigned,
        ..ProtocolConfig::default()
    };
    let client = KeyPair::from_seed([9; 32]).public();
    let batch = Batch::new(vec![Request::unsigned(client, 1, vec![1])]);
    let propose = |block: Block, signer: u16, ancestry: Vec<_>| Message::Propose {
        block: Signed::sign(
            block,
            ReplicaId(signer),
            &replica_key(signer as usize),
            &committee,
        ),
        batch: batch.clone(),
        certified: Vec::new(),
        ancestry,
    };
    let first = first_block(&batch);
    // Round 1 after genesis: round-robin's replica 1, naming replica 2 (nobody signed genesis).
    assert!(propose(first.clone(), 1, Vec::new())
        .verify(&committee, &config)
        .is_ok());
    assert!(propose(first.clone(), 2, Vec::new())
        .verify(&committee, &config)
        .is_err());
    let wrong_successor = Block {
        next_leader: ReplicaId(3),
        ..first.clone()
    };
    assert!(propose(wrong_successor, 1, Vec::new())
        .verify(&committee, &config)
        .is_err());

    // Round 2 extends round 1's block, certified by replicas 0, 1 and 3: the proposer is the
    // one round 1's block named (2), shown by its header; it names 3 (first signer after 2).
    let statement = ordinal_consensus::messages::BlockVote {
        epoch: 0,
        round: 1,
        block: first.id(),
        seq: 1,
    };
    let votes: Vec<_> = [0u16, 1, 3]
        .iter()
        .map(|&id| Signed::sign(statement, ReplicaId(id), &replica_key(id as usize), &committee))
        .map(|signed| signed.verify(&committee).unwrap())
        .collect();
    let mut set = ordinal_consensus::quorum::VoteSet::default();
    for vote in votes {
        set.insert(vote);
    }
    let qc = set.certificate(&statement, &committee).unwrap();
    let second = Block {
        epoch: 0,
        round: 2,
        seq: 1,
        batch_digest: Batch::default().digest(),
        justify: qc,
        timeout: None,
        next_leader: ReplicaId(3),
        // With f = 1, only the proposer itself.
        recent_leaders: vec![ReplicaId(2)],
    };
    let empty = |block: Block, signer: u16, ancestry: Vec<_>| match propose(block, signer, ancestry) {
        Message::Propose {
            block,
            certified,
            ancestry,
            ..
        } => Message::Propose {
            block,
            batch: Batch::default(),
            certified,
            ancestry,
        },
        _ => unreachable!(),
    };
    let parent = vec![first.header()];
    assert!(empty(second.clone(), 2, parent.clone())
        .verify(&committee, &config)
        .is_ok());
    assert!(
        empty(second.clone(), 2, Vec::new())
            .verify(&committee, &config)
            .is_err(),
        "without the parent's header nobody can tell who may propose"
    );
    assert!(
        empty(second.clone(), 2, vec![second.header()])
            .verify(&committee, &config)
            .is_err(),
        "a header that is not the parent's"
    );
    assert!(
        empty(second.clone(), 3, parent.clone())
            .verify(&committee, &config)
            .is_err(),
        "round-robin's leader of round 2 was not named"
    );
    let skips_signer = Block {
        next_leader: ReplicaId(0),
        ..second.clone()
    };
    assert!(empty(skips_signer, 2, parent.clone())
        .verify(&committee, &config)
        .is_err());
    let forgets_itself = Block {
        recent_leaders: vec![ReplicaId(1)],
        ..second.clone()
    };
    assert!(
        empty(forgets_itself, 2, parent)
            .verify(&committee, &config)
            .is_err(),
        "recent leaders that do not follow the parent's"
    );

    // Round 5 after a timeout certificate for round 4, still extending round 1's certificate.
    // Round-robin names replica 1 (5 mod 4). With replica 1 among the timeouts' signers it
    // leads; without it, the next signer (2) does, and names the signer after itself.
    let timeout_cert = |signers: &[u16]| ordinal_consensus::messages::TimeoutCert {
        epoch: 0,
        round: 4,
        timeouts: signers
            .iter()
            .map(|&id| {
                let vote = ordinal_consensus::messages::TimeoutVote {
                    epoch: 0,
                    round: 4,
                    high_qc_round: 1,
                };
                Signed::sign(vote, ReplicaId(id), &replica_key(id as usize), &committee)
            })
            .collect(),
    };
    let after_timeout = |signers: &[u16], proposer: u16| {
        let mut block = Block {
            round: 5,
            timeout: Some(timeout_cert(signers)),
            recent_leaders: vec![ReplicaId(proposer)],
            ..second.clone()
        };
        block.next_leader = block.successor_for(ReplicaId(proposer), &committee);
        empty(block, proposer, Vec::new()).verify(&committee, &config)
    };
    assert!(after_timeout(&[0, 1, 3], 1).is_ok());
    assert!(after_timeout(&[0, 1, 3], 3).is_err());
    assert!(
        after_timeout(&[0, 2, 3], 2).is_ok(),
        "round-robin's leader did not sign"
    );
    assert!(
        after_timeout(&[0, 2, 3], 1).is_err(),
        "a leader that did not time out"
    );
    assert!(after_timeout(&[0, 2, 3], 3).is_err());
}

/// Every replica learns each commit certificate from the next proposal, never by waiting for
/// the retransmission tick: the collector used to drop the certificates of batches it had
/// executed itself before handing them out, so the others fetched three batches in four by
/// state transfer, and latency followed the retransmission interval (a median of 2.2 s with a
/// 400 ms tick). With a 1 s tick, the median stays at the network's scale.
#[test]
fn commit_certificates_reach_every_replica_without_retransmission() {
    for seed in 0..3 {
        let mut config = linear_config(seed, 4);
        config.clients = 2;
        config.requests_per_client = 100;
        config.submit_window = Duration::from_secs(2);
        config.protocol.retransmit_interval = Duration::from_secs(1);
        let report = run(config);
        assert_clean(&report, "slow retransmission");
        assert!(
            report.median_latency < Duration::from_millis(100),
            "seed {seed}: median latency {:?} with a 1 s retransmission tick",
            report.median_latency
        );
        // Batches reach every log through proposals; state transfer only mops up (the old
        // code sent about one state-transfer message per two batches decided).
        let transfers = report
            .traffic
            .by_kind
            .get("batches")
            .map_or(0, |(count, _)| *count);
        println!(
            "seed {seed}: median {:?}, {} batches decided, {transfers} state-transfer messages",
            report.median_latency, report.decided_seq
        );
        assert!(
            transfers * 10 <= report.decided_seq,
            "seed {seed}: {transfers} state-transfer messages for {} batches",
            report.decided_seq
        );
    }
}
