//! Messages verified as a group (one peer's frames that arrived together) get exactly the
//! results they get alone: the same acceptance, the same error, whatever they are grouped with
//! and in whatever order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ordinal_consensus::messages::{
    genesis_qc, Block, BlockVote, CheckpointVote, CommitVote, Message, PrepareVote, Proposal,
};
use ordinal_consensus::sim::{committee, replica_key};
use ordinal_consensus::{
    Batch, Invalid, NoneAdmitted, ProtocolConfig, Request, RequestAuth, VerifiedMessage,
};
use ordinal_crypto::{Committee, Digest, KeyPair, MembershipEdit, ReplicaId, Signable, Signed};
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};

fn sign<T: Signable>(body: T, signer: u16, committee: &Committee) -> Signed<T> {
    Signed::sign(body, ReplicaId(signer), &replica_key(signer as usize), committee)
}

/// Signed by another key than the one `signer` names.
fn forged<T: Signable>(body: T, signer: u16, committee: &Committee) -> Signed<T> {
    let mut signed = Signed::sign(body, ReplicaId(signer), &KeyPair::from_seed([77; 32]), committee);
    signed.signer = ReplicaId(signer);
    signed
}

fn digest(i: u64) -> Digest {
    Digest::of(&i.to_le_bytes())
}

fn pre_prepare(committee: &Committee, signer: u16, seq: u64, requests: Vec<Request>, lie: bool) -> Message {
    let batch = Batch::new(requests);
    let digest = if lie { digest(seq) } else { batch.digest() };
    let proposal = sign(Proposal { view: 0, seq, digest }, signer, committee);
    Message::PrePrepare { proposal, batch }
}

/// Messages of every grouped kind, good and bad in each of the ways verification refuses.
fn messages(committee: &Committee) -> Vec<(&'static str, Message)> {
    let client = KeyPair::from_seed([9; 32]);
    let request =
        |nonce: u64| Request::signed(&client, &committee.cluster_id(), nonce, vec![nonce as u8; 64]);
    let prepare = |seq: u64| PrepareVote {
        view: 0,
        seq,
        digest: digest(seq),
    };
    let commit = |view: u64, seq: u64| CommitVote {
        view,
        seq,
        digest: digest(seq),
    };
    let block_vote = |round: u64| BlockVote {
        epoch: 0,
        round,
        block: digest(round),
        seq: round,
    };
    let mut stranger = sign(prepare(1), 1, committee);
    stranger.signer = ReplicaId(40);
    let mut tampered = sign(commit(0, 2), 2, committee);
    tampered.body.seq = 3;
    vec![
        ("prepare", Message::Prepare(sign(prepare(1), 1, committee))),
        (
            "prepare forged",
            Message::Prepare(forged(prepare(1), 2, committee)),
        ),
        ("prepare unknown signer", Message::Prepare(stranger)),
        ("commit", Message::Commit(sign(commit(0, 2), 3, committee))),
        ("commit tampered", Message::Commit(tampered)),
        (
            "checkpoint",
            Message::Checkpoint(sign(
                CheckpointVote {
                    seq: 16,
                    log_digest: digest(16),
                },
                1,
                committee,
            )),
        ),
        (
            "pre-prepare",
            pre_prepare(committee, 0, 5, vec![request(1), request(2)], false),
        ),
        (
            "pre-prepare, wrong primary",
            pre_prepare(committee, 1, 6, vec![request(3)], false),
        ),
        (
            "pre-prepare, digest lies",
            pre_prepare(committee, 0, 7, vec![request(4)], true),
        ),
        (
            "pre-prepare, forged",
            Message::PrePrepare {
                proposal: forged(
                    Proposal {
                        view: 0,
                        seq: 8,
                        digest: Batch::new(vec![request(5)]).digest(),
                    },
                    0,
                    committee,
                ),
                batch: Batch::new(vec![request(5)]),
            },
        ),
        (
            "vote with commits",
            Message::Vote {
                vote: sign(block_vote(4), 2, committee),
                commits: vec![
                    sign(commit(3, 10), 2, committee),
                    sign(commit(3, 11), 2, committee),
                ],
            },
        ),
        (
            "vote, one commit forged",
            Message::Vote {
                vote: sign(block_vote(4), 2, committee),
                commits: vec![
                    sign(commit(3, 10), 2, committee),
                    forged(commit(3, 11), 2, committee),
                ],
            },
        ),
        (
            "vote, forged, and a commit for another round",
            Message::Vote {
                vote: forged(block_vote(4), 3, committee),
                commits: vec![sign(commit(1, 10), 3, committee)],
            },
        ),
        (
            "vote, a commit for another round",
            Message::Vote {
                vote: sign(block_vote(4), 3, committee),
                commits: vec![sign(commit(1, 10), 3, committee)],
            },
        ),
        (
            "vote, another signer's commit",
            Message::Vote {
                vote: sign(block_vote(4), 3, committee),
                commits: vec![sign(commit(3, 10), 1, committee)],
            },
        ),
        (
            "vote, more commits than the window",
            Message::Vote {
                vote: forged(block_vote(4), 3, committee),
                commits: (0..ProtocolConfig::default().log_window + 1)
                    .map(|seq| sign(commit(3, seq), 3, committee))
                    .collect(),
            },
        ),
        (
            "catch-up (verified alone)",
            Message::CatchUp {
                next_seq: 1,
                view: 0,
                stable_seq: 0,
            },
        ),
        ("request (verified alone)", Message::Request(request(6))),
        (
            "vote, forged commits for another round (its commits are never checked)",
            Message::Vote {
                vote: sign(block_vote(4), 1, committee),
                commits: (0..8).map(|seq| forged(commit(1, seq), 1, committee)).collect(),
            },
        ),
        ("propose ?", propose(committee, 0, false, request(7))),
        ("propose, forged", propose(committee, 0, true, request(8))),
        ("propose by another ?", propose(committee, 2, false, request(9))),
    ]
}

/// A linear-mode proposal of round 1 on the genesis certificate; whether it is the right
/// proposer's is left to the verdict alone (the test compares verdicts, not expectations).
fn propose(committee: &Committee, signer: u16, forge: bool, request: Request) -> Message {
    let batch = Batch::new(vec![request]);
    let block = Block {
        epoch: 0,
        round: 1,
        seq: 1,
        batch_digest: batch.digest(),
        justify: genesis_qc(),
        timeout: None,
        next_leader: ReplicaId(1),
        recent_leaders: vec![ReplicaId(signer)],
    };
    let block = if forge {
        forged(block, signer, committee)
    } else {
        sign(block, signer, committee)
    };
    Message::Propose {
        block,
        batch,
        certified: Vec::new(),
        ancestry: Vec::new(),
    }
}

fn outcome(result: &Result<VerifiedMessage, Invalid>) -> String {
    match result {
        Ok(verified) => format!("ok {verified:?}"),
        Err(e) => format!("refused {e:?}"),
    }
}

#[test]
fn every_message_gets_its_single_result_in_every_grouping() {
    let committee = committee(4).unwrap();
    let config = ProtocolConfig {
        request_auth: RequestAuth::Signed,
        ..ProtocolConfig::default()
    };
    let all = messages(&committee);
    let alone: Vec<String> = all
        .iter()
        .map(|(_, m)| outcome(&m.clone().verify_with(&committee, &config, &NoneAdmitted)))
        .collect();
    // The cases are what their names say: refused ones are refused, and for different reasons.
    for ((name, _), verdict) in all.iter().zip(&alone) {
        if name.contains('?') {
            continue;
        }
        let refused = name.contains(',')
            || name.contains("forged")
            || name.contains("unknown")
            || name.contains("tampered");
        assert_eq!(verdict.starts_with("refused"), refused, "{name}: {verdict}");
    }
    for reason in [
        "BadSignature",
        "UnknownSigner",
        "BadBlock",
        "DigestMismatch",
        "WrongLeader",
    ] {
        assert!(
            alone.iter().any(|v| v.contains(reason)),
            "no case is refused with {reason}"
        );
    }

    // The whole set at once, then shuffled subsets of every size.
    let grouped = Message::verify_group(
        all.iter().map(|(_, m)| m.clone()).collect(),
        &committee,
        &config,
        &NoneAdmitted,
    );
    assert_eq!(grouped.results.iter().map(outcome).collect::<Vec<_>>(), alone);
    assert!(!grouped.signatures_held, "the set holds forged envelopes");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for _ in 0..60 {
        let mut picked: Vec<usize> = (0..all.len()).collect();
        picked.shuffle(&mut rng);
        picked.truncate(rng.gen_range(1..=all.len()));
        let results = Message::verify_group(
            picked.iter().map(|&i| all[i].1.clone()).collect(),
            &committee,
            &config,
            &NoneAdmitted,
        )
        .results;
        assert_eq!(results.len(), picked.len());
        for (&i, result) in picked.iter().zip(&results) {
            assert_eq!(
                outcome(result),
                alone[i],
                "{} in a group of {}",
                all[i].0,
                picked.len()
            );
        }
    }
}

#[test]
fn a_group_of_valid_votes_is_accepted_whole() {
    let committee = committee(7).unwrap();
    let config = ProtocolConfig::default();
    let votes: Vec<Message> = (1..=40u64)
        .map(|seq| {
            let signer = (seq % 7) as u16;
            if seq % 2 == 0 {
                Message::Prepare(sign(
                    PrepareVote {
                        view: 2,
                        seq,
                        digest: digest(seq),
                    },
                    signer,
                    &committee,
                ))
            } else {
                Message::Commit(sign(
                    CommitVote {
                        view: 2,
                        seq,
                        digest: digest(seq),
                    },
                    signer,
                    &committee,
                ))
            }
        })
        .collect();
    let group = Message::verify_group(votes, &committee, &config, &NoneAdmitted);
    assert!(group.signatures_held);
    let results = group.results;
    assert_eq!(results.len(), 40);
    for (i, result) in results.iter().enumerate() {
        let seq = i as u64 + 1;
        match result {
            Ok(VerifiedMessage::Prepare(vote)) => assert_eq!((seq % 2, vote.body().seq), (0, seq)),
            Ok(VerifiedMessage::Commit(vote)) => assert_eq!((seq % 2, vote.body().seq), (1, seq)),
            other => panic!("vote {seq}: {other:?}"),
        }
    }
}

/// Work a sender cannot add: a vote refused before its commit votes are looked at brings none
/// of their (bad) signatures into the group, so the group check still holds and nobody pays
/// for one check per signature.
#[test]
fn a_refused_votes_commits_stay_out_of_the_group() {
    let committee = committee(4).unwrap();
    let config = ProtocolConfig::default();
    let vote = BlockVote {
        epoch: 0,
        round: 4,
        block: digest(4),
        seq: 4,
    };
    let wrong_round = |seq: u64| CommitVote {
        view: 1,
        seq,
        digest: digest(seq),
    };
    let messages = vec![
        Message::Prepare(sign(
            PrepareVote {
                view: 0,
                seq: 1,
                digest: digest(1),
            },
            1,
            &committee,
        )),
        Message::Vote {
            vote: sign(vote, 2, &committee),
            commits: (0..16)
                .map(|seq| forged(wrong_round(seq), 2, &committee))
                .collect(),
        },
    ];
    let group = Message::verify_group(messages, &committee, &config, &NoneAdmitted);
    assert!(group.signatures_held);
    assert!(group.results[0].is_ok());
    assert!(
        matches!(
            group.results[1],
            Err(Invalid::BadBlock("commit vote for another round"))
        ),
        "{:?}",
        group.results[1]
    );
}

/// A member that left keeps its key (its old signatures still verify) but its commit votes are
/// not taken: the same in a group as alone.
#[test]
fn a_former_members_messages_get_their_single_results() {
    let full = committee(5).unwrap();
    let committee = full
        .with_membership(1, MembershipEdit::Leave(ReplicaId(4)), 1)
        .unwrap();
    let config = ProtocolConfig::default();
    let vote = BlockVote {
        epoch: 1,
        round: 4,
        block: digest(4),
        seq: 4,
    };
    let commit = |seq: u64| CommitVote {
        view: 3,
        seq,
        digest: digest(seq),
    };
    let messages: Vec<Message> = vec![
        Message::Prepare(sign(
            PrepareVote {
                view: 0,
                seq: 1,
                digest: digest(1),
            },
            4,
            &committee,
        )),
        Message::Vote {
            vote: sign(vote, 4, &committee),
            commits: vec![sign(commit(10), 4, &committee)],
        },
        Message::Vote {
            vote: sign(vote, 4, &committee),
            commits: Vec::new(),
        },
        Message::Vote {
            vote: sign(vote, 1, &committee),
            commits: vec![sign(commit(10), 1, &committee)],
        },
    ];
    let alone: Vec<String> = messages
        .iter()
        .map(|m| outcome(&m.clone().verify_with(&committee, &config, &NoneAdmitted)))
        .collect();
    assert!(alone[1].contains("UnknownSigner"), "{}", alone[1]);
    assert!(alone[3].starts_with("ok"), "{}", alone[3]);
    let grouped = Message::verify_group(messages, &committee, &config, &NoneAdmitted);
    assert_eq!(grouped.results.iter().map(outcome).collect::<Vec<_>>(), alone);
}
