//! Wire encoding and decoding of replica messages (`Message::encode` / `Message::decode`, postcard),
//! and the edge verification a connection task runs on each decoded message
//! (`Message::verify`): a PBFT PRE-PREPARE and a linear-mode PROPOSE each carrying 512
//! transactions of 512 bytes, a PBFT COMMIT and a linear-mode VOTE.
//!
//! ```text
//! cargo bench -p ordinal-benches --bench wire
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

mod common;

use common::{batch, committee, keys};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ordinal_consensus::leader::leader_of;
use ordinal_consensus::messages::{Block, BlockHeader, BlockVote, CommitVote, Proposal, QuorumCert};
use ordinal_consensus::quorum::VoteSet;
use ordinal_consensus::{Message, ProtocolConfig, RequestAuth};
use ordinal_crypto::{Committee, Digest, KeyPair, ReplicaId, Signable, Signed};

const TXS: usize = 512;
const TX_BYTES: usize = 512;

/// A certificate over `statement` from the first quorum of replicas, collected as the
/// protocols collect it.
fn certify<T: Signable + Clone + PartialEq>(
    statement: T,
    keys: &[KeyPair],
    committee: &Committee,
) -> ordinal_crypto::Certificate<T> {
    let mut votes = VoteSet::default();
    for (i, key) in keys.iter().enumerate().take(committee.quorum_weight() as usize) {
        votes.insert(
            Signed::sign(statement.clone(), ReplicaId(i as u16), key, committee)
                .verify(committee)
                .unwrap(),
        );
    }
    votes.certificate(&statement, committee).unwrap()
}

/// The messages to encode, each checked to pass `Message::verify`.
fn messages(
    keys: &[KeyPair],
    committee: &Committee,
    config: &ProtocolConfig,
) -> Vec<(&'static str, Message)> {
    let batch = batch(TXS, TX_BYTES);
    let digest = batch.digest();

    let view = 0;
    let primary = leader_of(view, committee);
    let proposal = Proposal { view, seq: 1, digest };
    let pre_prepare = Message::PrePrepare {
        proposal: Signed::sign(proposal, primary, &keys[primary.index()], committee),
        batch: batch.clone(),
    };

    let commit_vote = CommitVote { view, seq: 1, digest };
    let commit = Message::Commit(Signed::sign(commit_vote, ReplicaId(1), &keys[1], committee));

    // Linear steady state: round 2 extends the block certified in round 1 (which carried the
    // batch at seq 1), carries the commit certificate of an earlier batch, and lists the parent
    // in its ancestry so that voters sign its commit vote.
    let parent = BlockHeader {
        epoch: 0,
        round: 1,
        seq: 1,
        batch_digest: Digest::of(b"parent batch"),
        parent: BlockVote::genesis().block,
        parent_round: 0,
        next_leader: ReplicaId(2),
        recent_leaders: vec![ReplicaId(1)],
    };
    let justify: QuorumCert = certify(
        BlockVote {
            epoch: 0,
            round: 1,
            block: parent.id(),
            seq: 1,
        },
        keys,
        committee,
    );
    let block = Block {
        epoch: 0,
        round: 2,
        seq: 2,
        batch_digest: digest,
        justify,
        timeout: None,
        next_leader: ReplicaId(0),
        recent_leaders: Vec::new(),
    };
    // Round 1's block named replica 2; it names the first signer after itself.
    let leader = parent.next_leader;
    let recent_leaders = block
        .expected_recent_leaders(leader, Some(&parent), committee)
        .unwrap_or_default();
    let block = Block {
        recent_leaders,
        ..block
    };
    let block = Block {
        next_leader: block.successor_for(leader, committee),
        ..block
    };
    let earlier = certify(
        CommitVote {
            view: 0,
            seq: 0,
            digest: Digest::of(b"earlier batch"),
        },
        keys,
        committee,
    );
    let propose = Message::Propose {
        block: Signed::sign(block.clone(), leader, &keys[leader.index()], committee),
        batch,
        certified: vec![earlier],
        ancestry: vec![parent.clone()],
    };

    // The vote for the round-2 block, with the voter's commit vote for the parent's batch.
    let voter = ReplicaId(1);
    let vote = Message::Vote {
        vote: Signed::sign(
            BlockVote {
                epoch: block.epoch,
                round: block.round,
                block: block.id(),
                seq: block.seq,
            },
            voter,
            &keys[voter.index()],
            committee,
        ),
        commits: vec![Signed::sign(
            CommitVote {
                view: parent.round,
                seq: parent.seq,
                digest: parent.batch_digest,
            },
            voter,
            &keys[voter.index()],
            committee,
        )],
    };

    let all = vec![
        ("pre_prepare_512x512B", pre_prepare),
        ("propose_512x512B", propose),
        ("commit", commit),
        ("vote", vote),
    ];
    for (name, message) in &all {
        let decoded = Message::decode(&message.encode()).unwrap();
        assert_eq!(&decoded, message, "{name} round trip");
        if let Err(e) = decoded.verify(committee, config) {
            panic!("{name} does not verify: {e:?}");
        }
    }
    all
}

fn wire(c: &mut Criterion) {
    let keys = keys(4);
    let committee = committee(&keys);
    let config = ProtocolConfig {
        request_auth: RequestAuth::Unsigned,
        ..ProtocolConfig::default()
    };
    let messages = messages(&keys, &committee, &config);

    let mut group = c.benchmark_group("wire");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (name, message) in &messages {
        let bytes = message.encode();
        println!("wire: {name} is {} bytes encoded", bytes.len());
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| black_box(message).encode())
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| Message::decode(black_box(&bytes)).unwrap())
        });
    }
    group.finish();

    // What a connection task does with each frame before the protocol thread sees it.
    let mut group = c.benchmark_group("edge_verify");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    for (name, message) in &messages {
        let bytes = message.encode();
        group.bench_function(format!("decode_verify/{name}"), |b| {
            b.iter(|| {
                Message::decode(black_box(&bytes))
                    .unwrap()
                    .verify(&committee, &config)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
