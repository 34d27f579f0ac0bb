//! Driving one PBFT replica by hand: the order of its outputs and its refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ordinal_consensus::messages::{CommitVote, Message, PrepareVote, Proposal};
use ordinal_consensus::pbft::Replica;
use ordinal_consensus::sim::{committee, replica_key};
use ordinal_consensus::{
    Action, Batch, Input, Invalid, LateVote, PeerReport, Protocol, ProtocolConfig, Request, RequestAuth,
    SafetyState, SafetyUpdate, Settled,
};
use ordinal_crypto::{Committee, Digest, ReplicaId, Signable, Signature, Signed};

fn config() -> ProtocolConfig {
    ProtocolConfig {
        request_auth: RequestAuth::Unsigned,
        ..ProtocolConfig::default()
    }
}

fn batch(tag: u8) -> Batch {
    Batch::new(vec![Request::unsigned(
        replica_key(9).public(),
        tag as u64,
        vec![tag; 4],
    )])
}

/// A PRE-PREPARE header for `digest` at (view, seq), signed by replica `by`.
/// Replica 1 (a backup in view 0), fresh.
fn backup(committee: &Committee) -> Replica {
    Replica::new(
        ReplicaId(1),
        replica_key(1),
        committee.clone(),
        config(),
        Duration::ZERO,
    )
}

fn signed_proposal(committee: &Committee, by: u16, view: u64, seq: u64, digest: Digest) -> Signed<Proposal> {
    Signed::sign(
        Proposal { view, seq, digest },
        ReplicaId(by),
        &replica_key(by as usize),
        committee,
    )
}

fn pre_prepare(committee: &Committee, view: u64, seq: u64, batch: &Batch) -> Input {
    let proposal = signed_proposal(committee, 0, view, seq, batch.digest());
    let message = Message::PrePrepare {
        proposal,
        batch: batch.clone(),
    }
    .verify(committee, &config())
    .unwrap();
    Input::Message {
        from: ReplicaId(0),
        message,
    }
}

/// `body` signed by replica `from`.
fn signed_by<T: Signable>(committee: &Committee, from: u16, body: T) -> Signed<T> {
    Signed::sign(body, ReplicaId(from), &replica_key(from as usize), committee)
}

fn signed_prepare(committee: &Committee, from: u16, seq: u64, digest: Digest) -> Signed<PrepareVote> {
    signed_by(committee, from, PrepareVote { view: 0, seq, digest })
}

fn signed_commit(committee: &Committee, from: u16, seq: u64, digest: Digest) -> Signed<CommitVote> {
    signed_by(committee, from, CommitVote { view: 0, seq, digest })
}

/// A verified PREPARE for (view 0, `seq`, `digest`) from replica `from`.
fn prepare(committee: &Committee, from: u16, seq: u64, digest: Digest) -> Input {
    let vote = signed_prepare(committee, from, seq, digest);
    Input::Message {
        from: ReplicaId(from),
        message: Message::Prepare(vote).verify(committee, &config()).unwrap(),
    }
}

/// A verified COMMIT for (view 0, `seq`, `digest`) from replica `from`.
fn commit(committee: &Committee, from: u16, seq: u64, digest: Digest) -> Input {
    let vote = signed_commit(committee, from, seq, digest);
    Input::Message {
        from: ReplicaId(from),
        message: Message::Commit(vote).verify(committee, &config()).unwrap(),
    }
}

/// What `replica` measured about `peer`.
fn report(replica: &Replica, peer: u16) -> PeerReport {
    replica
        .peers()
        .into_iter()
        .find(|report| report.peer == ReplicaId(peer))
        .unwrap()
}

/// The vote's safety record is persisted before the vote is sent (raft-rs's
/// persisted_messages, aptos safety-rules).
#[test]
fn safety_state_is_persisted_before_each_vote() {
    let committee = committee(4).unwrap();
    let mut replica = backup(&committee);
    let b = batch(1);
    replica
        .handle(Duration::from_millis(1), pre_prepare(&committee, 0, 1, &b))
        .unwrap();
    let actions = replica.drain_actions();
    let persist = actions
        .iter()
        .position(|a| matches!(a, Action::PersistSafety(SafetyUpdate::Prepare { seq: 1, .. })))
        .expect("prepare recorded");
    let send = actions
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Broadcast {
                    message: Message::Prepare(_)
                }
            )
        })
        .expect("prepare sent");
    assert!(persist < send);

    // Prepares from 0 and 2 make a quorum with our own: the prepared certificate is persisted
    // before COMMIT goes out.
    replica
        .handle(Duration::from_millis(2), prepare(&committee, 0, 1, b.digest()))
        .unwrap();
    replica
        .handle(Duration::from_millis(2), prepare(&committee, 2, 1, b.digest()))
        .unwrap();
    let actions = replica.drain_actions();
    let persist = actions
        .iter()
        .position(|a| matches!(a, Action::PersistSafety(SafetyUpdate::Prepared(_))))
        .expect("prepared certificate recorded");
    let send = actions
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Broadcast {
                    message: Message::Commit(_)
                }
            )
        })
        .expect("commit sent");
    assert!(persist < send);
}

/// A vote that arrives once the replica already holds the certificate it would count towards
/// is still a vote for the peer's record, and is counted as late: the slowest member of the
/// quorum, not a faulty one.
#[test]
fn votes_after_their_certificate_are_counted_late() {
    let committee = committee(4).unwrap();
    let mut replica = backup(&committee);
    let b = batch(1);
    replica
        .handle(Duration::from_millis(1), pre_prepare(&committee, 0, 1, &b))
        .unwrap();
    // 0 and 2 prepare in time: with our own PREPARE that is the prepared certificate.
    for from in [0, 2] {
        replica
            .handle(Duration::from_millis(2), prepare(&committee, from, 1, b.digest()))
            .unwrap();
    }
    // 3's PREPARE comes after it.
    replica
        .handle(Duration::from_millis(3), prepare(&committee, 3, 1, b.digest()))
        .unwrap();
    for (peer, late) in [(0, 0), (2, 0), (3, 1)] {
        assert_eq!(report(&replica, peer).votes, 1, "peer {peer}");
        assert_eq!(report(&replica, peer).late_votes, late, "peer {peer}");
    }
    // Being late does not count against it.
    assert_eq!(report(&replica, 3).reliability, report(&replica, 2).reliability);

    // COMMITs (timed, not counted as votes again): 0 and 3 with our own commit it; 2's is late.
    for from in [0, 3, 2] {
        replica
            .handle(Duration::from_millis(4), commit(&committee, from, 1, b.digest()))
            .unwrap();
    }
    for (peer, late) in [(0, 0), (2, 1), (3, 1)] {
        assert_eq!(report(&replica, peer).votes, 1, "peer {peer}");
        assert_eq!(report(&replica, peer).late_votes, late, "peer {peer}");
    }
}

/// Replica `from` hands in, as late, `signer`'s PREPARE for `digest` with its signature
/// spoiled: what a host passes on unchecked looks like this to the replica, which must never
/// need the signature to credit it.
fn forged_prepare(committee: &Committee, from: u16, signer: u16, digest: Digest) -> Input {
    let mut vote = signed_prepare(committee, signer, 1, digest);
    vote.signature = Signature([7; 64]);
    Input::LateVote {
        from: ReplicaId(from),
        vote: LateVote::Prepare(vote),
    }
}

/// [`forged_prepare`] for a COMMIT from its signer.
fn forged_commit(committee: &Committee, signer: u16, digest: Digest) -> Input {
    let mut vote = signed_commit(committee, signer, 1, digest);
    vote.signature = Signature([7; 64]);
    Input::LateVote {
        from: ReplicaId(signer),
        vote: LateVote::Commit(vote),
    }
}

/// Feeds verified votes of `kind` for slot 1 from replicas 0 and 2 (a quorum with the
/// replica's own) and tells whether the replica then announced `settled`.
fn quorum_settles(replica: &mut Replica, committee: &Committee, settled: Settled) -> bool {
    for from in [0, 2] {
        let vote = match settled {
            Settled::Prepare(s) => prepare(committee, from, 1, s.digest),
            Settled::Commit(s) => commit(committee, from, 1, s.digest),
        };
        replica.handle(Duration::from_millis(1), vote).unwrap();
    }
    replica
        .drain_actions()
        .iter()
        .any(|action| matches!(action, Action::Settled(s) if *s == settled))
}

/// The replica announces each certificate it forms as settled, credits a late vote handed in
/// unchecked only where its own state agrees (settled statement, current view, the sender's
/// own first vote there), and checks every other such vote itself: a forged one is refused.
#[test]
fn late_votes_handed_in_unchecked_are_credited_only_where_the_replica_agrees() {
    let committee = committee(4).unwrap();
    let mut replica = backup(&committee);
    let b = batch(1);
    let digest = b.digest();
    let now = Duration::from_millis(1);
    replica.handle(now, pre_prepare(&committee, 0, 1, &b)).unwrap();
    replica.drain_actions();

    // Before the slot is prepared nothing is settled: a forged PREPARE is checked and refused.
    let early = forged_prepare(&committee, 3, 3, digest);
    assert!(matches!(replica.handle(now, early), Err(Invalid::Crypto(_))));
    assert_eq!(report(&replica, 3).refused_messages, 1);
    assert_eq!(report(&replica, 3).votes, 0);

    let prepared = Settled::Prepare(PrepareVote {
        view: 0,
        seq: 1,
        digest,
    });
    assert!(quorum_settles(&mut replica, &committee, prepared));

    // Now 3's PREPARE is late: credited once without its signature, however often it comes,
    // and its real, signed copy is not counted again.
    for _ in 0..2 {
        replica
            .handle(now, forged_prepare(&committee, 3, 3, digest))
            .unwrap();
    }
    replica.handle(now, prepare(&committee, 3, 1, digest)).unwrap();
    // Once its checked copy is held, a repeat is answered without any check either.
    replica
        .handle(now, forged_prepare(&committee, 3, 3, digest))
        .unwrap();
    assert_eq!(
        (report(&replica, 3).votes, report(&replica, 3).late_votes),
        (1, 1)
    );
    assert_eq!(report(&replica, 3).refused_messages, 1);
    // Having voted for the settled digest, a PREPARE of 3 for another one is equivocation.
    assert!(matches!(
        replica.handle(now, prepare(&committee, 3, 1, Digest::of(b"other"))),
        Err(Invalid::DuplicateVote { .. })
    ));

    // Claimed for another signer, a vote is not credited unchecked: 2 relaying a forged vote
    // of 3's is refused, and blamed on 2, who sent it.
    let relayed = forged_prepare(&committee, 2, 3, digest);
    assert!(matches!(replica.handle(now, relayed), Err(Invalid::Crypto(_))));
    assert_eq!(report(&replica, 2).refused_messages, 1);

    // A COMMIT is late only once the slot is committed.
    let early = forged_commit(&committee, 3, digest);
    assert!(matches!(replica.handle(now, early), Err(Invalid::Crypto(_))));
    let committed = Settled::Commit(CommitVote {
        view: 0,
        seq: 1,
        digest,
    });
    assert!(quorum_settles(&mut replica, &committee, committed));
    replica.handle(now, forged_commit(&committee, 3, digest)).unwrap();
    assert_eq!(report(&replica, 3).late_votes, 2);
    assert!(
        report(&replica, 3).vote_latency.is_some(),
        "a late COMMIT is still timed"
    );

    // A vote for another digest never counts as late, whatever the host did: it is checked.
    let other = forged_commit(&committee, 3, Digest::of(b"x"));
    assert!(matches!(replica.handle(now, other), Err(Invalid::Crypto(_))));
    assert_eq!(report(&replica, 3).late_votes, 2);
}

/// A replica restarted from its safety state refuses to prepare a different batch at a slot it
/// already voted for: it never equivocates, even after losing its memory.
#[test]
fn restarted_replica_never_equivocates() {
    let committee = committee(4).unwrap();
    let mut replica = backup(&committee);
    let first = batch(1);
    replica
        .handle(Duration::from_millis(1), pre_prepare(&committee, 0, 1, &first))
        .unwrap();
    let mut safety = SafetyState::default();
    for action in replica.drain_actions() {
        if let Action::PersistSafety(update) = action {
            safety.apply(&update);
        }
    }
    let mut restarted = Replica::restore(
        ReplicaId(1),
        replica_key(1),
        committee.clone(),
        config(),
        Duration::from_millis(5),
        safety,
        Vec::new(),
    );
    restarted.drain_actions();
    let second = batch(2);
    let result = restarted.handle(Duration::from_millis(6), pre_prepare(&committee, 0, 1, &second));
    assert!(
        matches!(result, Err(Invalid::Equivocation { seq: 1, .. })),
        "{result:?}"
    );
    assert!(!restarted.drain_actions().iter().any(|a| matches!(
        a,
        Action::Broadcast {
            message: Message::Prepare(_)
        }
    )));
    // The same batch is still accepted (and re-voted identically).
    restarted
        .handle(Duration::from_millis(7), pre_prepare(&committee, 0, 1, &first))
        .unwrap();
}

#[test]
fn refusals_name_the_fault() {
    let committee = committee(4).unwrap();
    let mut replica = backup(&committee);
    let b = batch(1);
    // Outside the watermarks.
    let far = pre_prepare(&committee, 0, 10_000, &b);
    assert!(matches!(
        replica.handle(Duration::ZERO, far),
        Err(Invalid::OutsideWindow { seq: 10_000, .. })
    ));
    // A future view.
    let future = pre_prepare(&committee, 4, 1, &b);
    assert!(matches!(
        replica.handle(Duration::ZERO, future),
        Err(Invalid::WrongView { got: 4, .. })
    ));
    // Not from the primary: caught at verification.
    let proposal = signed_proposal(&committee, 2, 0, 1, b.digest());
    let err = Message::PrePrepare {
        proposal,
        batch: b.clone(),
    }
    .verify(&committee, &config())
    .unwrap_err();
    assert!(matches!(err, Invalid::WrongLeader { .. }));
    // A batch that does not match its digest.
    let proposal = signed_proposal(&committee, 0, 0, 1, Digest::of(b"other"));
    let err = Message::PrePrepare { proposal, batch: b }
        .verify(&committee, &config())
        .unwrap_err();
    assert!(matches!(err, Invalid::DigestMismatch { seq: 1 }));
}

/// Random and mangled bytes never panic the decoder or the verifier.
#[test]
fn garbage_never_panics() {
    let committee = committee(4).unwrap();
    let b = batch(3);
    let proposal = signed_proposal(&committee, 0, 0, 1, b.digest());
    let valid = Message::PrePrepare { proposal, batch: b }.encode();
    let mut state = 0x1234_5678u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        (state >> 33) as usize
    };
    for _ in 0..20_000 {
        let mut bytes = valid.clone();
        for _ in 0..1 + next() % 4 {
            let i = next() % bytes.len();
            bytes[i] = next() as u8;
        }
        bytes.truncate(next() % (bytes.len() + 1));
        if let Ok(message) = Message::decode(&bytes) {
            let _ = message.verify(&committee, &config());
        }
        let random: Vec<u8> = (0..next() % 200).map(|_| next() as u8).collect();
        if let Ok(message) = Message::decode(&random) {
            let _ = message.verify(&committee, &config());
        }
    }
}

/// PBFT 4.5.2: with a quorum of VIEW-CHANGE messages but no NEW-VIEW, a replica moves on to the
/// next view after a timeout that doubles with each consecutive failed view.
#[test]
fn view_change_timeouts_double_across_failed_views() {
    use ordinal_consensus::messages::{StableCheckpoint, ViewChange};
    let committee = committee(4).unwrap();
    let mut protocol = config();
    protocol.view_timeout = Duration::from_secs(1);
    protocol.view_timeout_max = Duration::from_secs(60);
    let me = ReplicaId(3);
    let mut replica = Replica::new(
        me,
        replica_key(3),
        committee.clone(),
        protocol.clone(),
        Duration::ZERO,
    );
    let request = Request::unsigned(replica_key(9).public(), 1, b"tx".to_vec());
    replica.handle(Duration::ZERO, Input::Request(request)).unwrap();

    // The request times out after the base timeout: view change to 1.
    let mut now = Duration::ZERO;
    while replica.status().view == 0 {
        now = replica.poll_timeout().unwrap();
        replica.handle(now, Input::Timeout).unwrap();
    }
    assert_eq!(now, Duration::from_secs(1));
    assert!(replica.status().changing_view);

    let mut gaps = Vec::new();
    for view in 1..=2u64 {
        // Replicas 0 and 2 want the same view: with ours, a quorum. The timer starts now.
        for from in [0u16, 2] {
            let vc = Signed::sign(
                ViewChange {
                    new_view: view,
                    stable: StableCheckpoint::genesis(),
                    prepared: Vec::new(),
                },
                ReplicaId(from),
                &replica_key(from as usize),
                &committee,
            );
            let message = Message::ViewChange(vc).verify(&committee, &protocol).unwrap();
            replica
                .handle(
                    now,
                    Input::Message {
                        from: ReplicaId(from),
                        message,
                    },
                )
                .unwrap();
        }
        let quorum_at = now;
        while replica.status().view == view {
            now = replica.poll_timeout().unwrap();
            replica.handle(now, Input::Timeout).unwrap();
        }
        assert_eq!(replica.status().view, view + 1);
        gaps.push(now - quorum_at);
    }
    assert_eq!(gaps, vec![Duration::from_secs(2), Duration::from_secs(4)]);
}

/// Replicas install a new view at different moments, and those that have it vote at once:
/// a PREPARE or COMMIT of the view this replica is changing to, arriving before the NEW-VIEW,
/// is held and counted once the view is installed, not dropped to wait for a re-send. Held
/// messages are bounded per sender.
#[test]
fn votes_of_the_view_being_installed_are_kept_for_it() {
    use ordinal_consensus::messages::{CommitVote, NewView, StableCheckpoint, ViewChange};
    let committee = committee(4).unwrap();
    let protocol = config();
    let me = ReplicaId(2);
    let mut replica = Replica::new(
        me,
        replica_key(2),
        committee.clone(),
        protocol.clone(),
        Duration::ZERO,
    );
    let deliver = |replica: &mut Replica, now: Duration, from: u16, message: Message| {
        let message = message.verify(&committee, &protocol).unwrap();
        replica.handle(
            now,
            Input::Message {
                from: ReplicaId(from),
                message,
            },
        )
    };
    let sign = |from: u16| (ReplicaId(from), replica_key(from as usize));
    let prepare = |from: u16, view: u64, seq: u64, digest: Digest| {
        let (id, key) = sign(from);
        Message::Prepare(Signed::sign(
            PrepareVote { view, seq, digest },
            id,
            &key,
            &committee,
        ))
    };
    let commit = |from: u16, view: u64, seq: u64, digest: Digest| {
        let (id, key) = sign(from);
        Message::Commit(Signed::sign(
            CommitVote { view, seq, digest },
            id,
            &key,
            &committee,
        ))
    };

    // A request nobody orders: the view changes to 1, whose primary is replica 1.
    let request = Request::unsigned(replica_key(9).public(), 1, b"tx".to_vec());
    replica.handle(Duration::ZERO, Input::Request(request)).unwrap();
    let mut now = Duration::ZERO;
    while replica.status().view == 0 {
        now = replica.poll_timeout().unwrap();
        replica.handle(now, Input::Timeout).unwrap();
    }
    assert!(replica.status().changing_view);
    replica.drain_actions();

    // The others installed view 1 already and voted for the primary's first batch.
    let batch = batch(7);
    let digest = batch.digest();
    for from in [0u16, 3] {
        // A re-sent copy is held once.
        deliver(&mut replica, now, from, prepare(from, 1, 1, digest)).unwrap();
        deliver(&mut replica, now, from, prepare(from, 1, 1, digest)).unwrap();
    }
    for from in [0u16, 1, 3] {
        deliver(&mut replica, now, from, commit(from, 1, 1, digest)).unwrap();
    }
    assert_eq!(replica.footprint().early_messages, 5);

    // Then the NEW-VIEW and the PRE-PREPARE arrive (in that order, on the primary's stream).
    let view_changes = [0u16, 1, 3]
        .iter()
        .map(|&from| {
            let (id, key) = sign(from);
            let body = ViewChange {
                new_view: 1,
                stable: StableCheckpoint::genesis(),
                prepared: Vec::new(),
            };
            Signed::sign(body, id, &key, &committee)
        })
        .collect();
    let (id, key) = sign(1);
    let new_view = Signed::sign(
        NewView {
            view: 1,
            view_changes,
        },
        id,
        &key,
        &committee,
    );
    deliver(&mut replica, now, 1, Message::NewView(new_view)).unwrap();
    assert!(!replica.status().changing_view);
    assert_eq!(replica.footprint().early_messages, 0);
    let proposal = Signed::sign(
        Proposal {
            view: 1,
            seq: 1,
            digest,
        },
        id,
        &key,
        &committee,
    );
    deliver(&mut replica, now, 1, Message::PrePrepare { proposal, batch }).unwrap();

    // Its own PREPARE completes the held ones, its COMMIT the held COMMITs: the batch
    // commits with no message sent again.
    let committed: Vec<u64> = replica
        .drain_actions()
        .into_iter()
        .filter_map(|action| match action {
            Action::PersistBatch(batch) => Some(batch.seq()),
            _ => None,
        })
        .collect();
    assert_eq!(committed, vec![1]);

    // Votes for the next view are held too, up to the bound per sender; the rest are refused
    // as before.
    let limit = ordinal_consensus::pbft::early_limit(&protocol);
    for seq in 1..=limit as u64 + 3 {
        let result = deliver(&mut replica, now, 3, prepare(3, 2, seq, digest));
        if seq <= limit as u64 {
            result.unwrap();
        } else {
            assert!(matches!(result, Err(Invalid::WrongView { .. })), "{result:?}");
        }
    }
    assert_eq!(replica.footprint().early_messages, limit);
    // Two views ahead: not held.
    assert!(deliver(&mut replica, now, 0, prepare(0, 3, 1, digest)).is_err());
}

/// The PRE-PREPAREs among `actions`: (sequence number, digest, requests carried).
fn proposals_in(actions: &[Action]) -> Vec<(u64, Digest, usize)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Broadcast {
                message: Message::PrePrepare { proposal, batch },
            } => Some((proposal.body.seq, proposal.body.digest, batch.requests().len())),
            _ => None,
        })
        .collect()
}

/// Feeds `primary` a timer input at `now` and returns the one PRE-PREPARE it sends:
/// (sequence number, digest, requests carried).
fn proposed_on_timer(primary: &mut Replica, now: Duration) -> (u64, Digest, usize) {
    primary.handle(now, Input::Timeout).unwrap();
    let proposals = proposals_in(&primary.drain_actions());
    assert_eq!(proposals.len(), 1, "one proposal at {now:?}");
    proposals[0]
}

/// Batching follows the load: with nothing in flight, the requests handed in together leave in
/// one batch on the next timer input; while a batch is in flight, what arrives waits for the
/// batching delay, or until the pipeline empties, whichever comes first.
#[test]
fn the_primary_batches_what_arrives_together_and_waits_only_while_busy() {
    let committee = committee(4).unwrap();
    let mut protocol = config();
    protocol.batch_delay = Duration::from_millis(5);
    let mut primary = Replica::new(
        ReplicaId(0),
        replica_key(0),
        committee.clone(),
        protocol,
        Duration::ZERO,
    );
    let ms = Duration::from_millis;
    let mut nonce = 0u64;
    let mut hand_in = |primary: &mut Replica, now: Duration, count: usize| {
        for _ in 0..count {
            nonce += 1;
            let request = Request::unsigned(replica_key(9).public(), nonce, vec![nonce as u8; 8]);
            primary.handle(now, Input::Request(request)).unwrap();
        }
    };

    // Idle: three requests arrive together. None leaves alone; the timer is due at once and
    // takes all three.
    hand_in(&mut primary, ms(1), 3);
    assert!(proposals_in(&primary.drain_actions()).is_empty());
    assert_eq!(primary.poll_timeout(), Some(ms(1)));
    let first = proposed_on_timer(&mut primary, ms(1));
    assert_eq!((first.0, first.2), (1, 3));

    // Busy (batch 1 in flight): two more wait for the delay, 5 ms from the first of them.
    hand_in(&mut primary, ms(2), 2);
    assert_eq!(primary.poll_timeout(), Some(ms(7)));
    primary.handle(ms(4), Input::Timeout).unwrap();
    assert!(proposals_in(&primary.drain_actions()).is_empty());
    // Past the deadline, an input other than the timer proposes nothing: what it brings
    // joins the batch on the timer input that follows.
    hand_in(&mut primary, ms(8), 1);
    assert!(proposals_in(&primary.drain_actions()).is_empty());
    assert_eq!(primary.poll_timeout(), Some(ms(7)));
    let second = proposed_on_timer(&mut primary, ms(8));
    assert_eq!((second.0, second.2), (2, 3));

    // One more waits behind the two batches in flight...
    hand_in(&mut primary, ms(9), 1);
    assert_eq!(primary.poll_timeout(), Some(ms(14)));
    // ...until both execute: an empty pipeline makes it due at once.
    for (seq, digest, _) in [first, second] {
        for from in [1u16, 2] {
            primary
                .handle(ms(10), prepare(&committee, from, seq, digest))
                .unwrap();
        }
        for from in [1u16, 2] {
            primary
                .handle(ms(10), commit(&committee, from, seq, digest))
                .unwrap();
        }
    }
    assert_eq!(primary.status().committed_seq, 2);
    assert!(proposals_in(&primary.drain_actions()).is_empty());
    assert_eq!(primary.poll_timeout(), Some(ms(10)));
    let third = proposed_on_timer(&mut primary, ms(10));
    assert_eq!((third.0, third.2), (3, 1));

    // A full batch never waits, busy or not.
    let full = ProtocolConfig::default().max_batch_requests;
    hand_in(&mut primary, ms(11), full);
    let fourth = proposals_in(&primary.drain_actions());
    assert_eq!(fourth.len(), 1);
    assert_eq!((fourth[0].0, fourth[0].2), (4, full));
}
