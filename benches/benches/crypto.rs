//! Micro-benchmarks of the cryptography every replica pays for: ed25519 signing and Ordinal's
//! one verification rule (`verify_signatures`: cofactored, one multi-scalar multiplication for
//! a batch, a double-base multiplication for one signature), SHA3-256 digests, and commit
//! certificate verification.
//!
//! ```text
//! cargo bench -p ordinal-benches --bench crypto
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

mod common;

use common::{batch, committee, keys, payload};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ordinal_consensus::messages::CommitVote;
use ordinal_consensus::quorum::VoteSet;
use ordinal_crypto::{
    verify_signatures, Certificate, Digest, ReplicaId, Signature, SignatureCheck, Signed, VerifyingKey,
};

fn ed25519(c: &mut Criterion) {
    let mut group = c.benchmark_group("ed25519");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));

    let signers = keys(64);
    let digest = Digest::of(b"a typical 32-byte digest");

    group.throughput(Throughput::Elements(1));
    group.bench_function("sign_32B", |b| {
        b.iter(|| signers[0].sign_raw(black_box(digest.as_bytes())))
    });

    // What a replica signs for a COMMIT: domain tag, cluster id, epoch and the postcard body.
    let committee = committee(&signers[..4]);
    let vote = CommitVote {
        view: 3,
        seq: 1234,
        digest,
    };
    group.bench_function("sign_commit_vote", |b| {
        b.iter(|| Signed::sign(black_box(vote), ReplicaId(0), &signers[0], &committee))
    });

    // The single-signature path of the consensus-critical rule.
    let decoded: Vec<VerifyingKey> = signers.iter().map(|k| k.public().decode().unwrap()).collect();
    let messages: Vec<Digest> = (0..64u64).map(|i| Digest::of(&i.to_le_bytes())).collect();
    let signatures: Vec<Signature> = signers
        .iter()
        .zip(&messages)
        .map(|(k, m)| k.sign_raw(m.as_bytes()))
        .collect();
    let checks: Vec<SignatureCheck<'_>> = (0..64)
        .map(|i| SignatureCheck {
            key: &decoded[i],
            message: messages[i].as_bytes(),
            signature: &signatures[i],
        })
        .collect();
    assert!(verify_signatures(&checks).is_empty());
    group.bench_function("verify_1", |b| {
        b.iter(|| assert!(verify_signatures(black_box(&checks[..1])).is_empty()))
    });

    // A signed envelope as received from a peer: signing bytes rebuilt, then the same rule.
    let signed = Signed::sign(vote, ReplicaId(1), &signers[1], &committee);
    group.bench_function("verify_signed_commit_vote", |b| {
        b.iter_batched(
            || signed.clone(),
            |s| s.verify(&committee).unwrap(),
            BatchSize::SmallInput,
        )
    });

    // Small groups, as a replica reads them from one peer's stream (a few votes at a time).
    for size in [2usize, 4, 8, 16, 64] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("verify_batch_{size}"), |b| {
            b.iter(|| assert!(verify_signatures(black_box(&checks[..size])).is_empty()))
        });
    }
    group.finish();
}

fn sha3(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha3_256");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (name, size) in [("512B", 512usize), ("64KiB", 64 * 1024)] {
        let bytes = payload(size, size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| b.iter(|| Digest::of(black_box(&bytes))));
    }

    // The batch digest a primary computes and every backup recomputes: the Merkle root over
    // 512 request leaves (each the digest of the request with its payload's digest).
    let batch = batch(512, 512);
    group.throughput(Throughput::Elements(512));
    group.bench_function("batch_512x512B", |b| b.iter(|| black_box(&batch).digest()));
    group.finish();
}

fn certificates(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_certificate");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    for n in [4usize, 7] {
        let signers = keys(n);
        let committee = committee(&signers);
        let statement = CommitVote {
            view: 0,
            seq: 42,
            digest: Digest::of(b"batch"),
        };
        // Exactly a quorum of COMMIT votes, verified on arrival and collected as a replica
        // does (`VoteSet`, shared by both protocols).
        let quorum = committee.quorum_weight() as usize;
        let mut votes = VoteSet::default();
        for (i, key) in signers.iter().enumerate().take(quorum) {
            let vote = Signed::sign(statement, ReplicaId(i as u16), key, &committee)
                .verify(&committee)
                .unwrap();
            votes.insert(vote);
        }
        let certificate: Certificate<CommitVote> = votes.certificate(&statement, &committee).unwrap();
        assert_eq!(certificate.votes.len(), quorum);
        certificate.verify(&committee).unwrap();
        group.bench_function(format!("verify_n{n}_q{quorum}"), |b| {
            b.iter(|| black_box(&certificate).verify(&committee).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, ed25519, sha3, certificates);
criterion_main!(benches);
