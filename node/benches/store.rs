//! The store alone: what making ordered batches durable costs a replica, through the same
//! `Store::commit` the driver calls (one RocksDB write batch, fsync), with RocksDB's own flush
//! and compaction threads running in this process.
//!
//! - `committed_batch`: the committed batch with its certificate (what the linear mode writes
//!   per batch; its safety state is a few bytes).
//! - `prepared_then_committed`: PBFT's two synced writes per batch: the prepared certificate
//!   with its batch (durable before the COMMIT vote leaves), then the commit certificate (the
//!   batch is already in the log).
//!
//! Criterion reports batches per second of wall time (fsync latency dominates it); the CPU time
//! per transaction (this process, all threads, from `/proc/self/stat`) is printed after each run:
//! that is what four replicas on one machine pay for every transaction.
//!
//! ```text
//! cargo bench -p ordinal-node --bench store
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

#[path = "../../benches/benches/common/cpu.rs"]
mod cpu;

use cpu::cpu_time;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ordinal_consensus::messages::{CommitVote, PrepareVote, PreparedProof};
use ordinal_consensus::{Batch, CommittedBatch, Request, SafetyState, SafetyUpdate};
use ordinal_crypto::{Certificate, Committee, Digest, KeyPair, ReplicaId, Signable, Signed};
use ordinal_node::config::SyncPolicy;
use ordinal_node::store::{Store, Writes};

const TX_BYTES: usize = 512;
/// Batches written per measured iteration.
const BATCHES: u64 = 32;

fn committee() -> (Vec<KeyPair>, Committee) {
    let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed([i; 32])).collect();
    let publics: Vec<_> = keys.iter().map(KeyPair::public).collect();
    let committee = Committee::equal_weights(Digest::of(b"store-bench"), &publics).unwrap();
    (keys, committee)
}

fn certificate<T: Signable + Copy>(statement: T, keys: &[KeyPair], committee: &Committee) -> Certificate<T> {
    let votes: Vec<_> = (0..3u16)
        .map(|i| {
            Signed::sign(statement, ReplicaId(i), &keys[i as usize], committee)
                .verify(committee)
                .unwrap()
        })
        .collect();
    Certificate::from_votes(statement, committee.epoch(), &votes)
}

fn batch(requests: usize) -> Batch {
    let client = KeyPair::from_seed([9; 32]).public();
    Batch::new(
        (0..requests)
            .map(|i| Request::unsigned(client, i as u64 + 1, vec![(i % 251) as u8; TX_BYTES]))
            .collect(),
    )
}

fn store(c: &mut Criterion) {
    let (keys, committee) = committee();
    let mut group = c.benchmark_group("store");
    group.sample_size(10);
    for requests in [128usize, 512] {
        let batch = batch(requests);
        let digest = batch.digest();
        let committed = CommittedBatch {
            batch: batch.clone(),
            certificate: certificate(
                CommitVote {
                    view: 0,
                    seq: 1,
                    digest,
                },
                &keys,
                &committee,
            ),
        };
        let prepared = PreparedProof {
            certificate: certificate(
                PrepareVote {
                    view: 0,
                    seq: 1,
                    digest,
                },
                &keys,
                &committee,
            ),
            batch,
        };
        group.throughput(Throughput::Elements(BATCHES * requests as u64));
        for pbft in [false, true] {
            let name = format!(
                "{}_{requests}x{TX_BYTES}B",
                if pbft {
                    "prepared_then_committed"
                } else {
                    "committed_batch"
                }
            );
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), SyncPolicy::Always, &Digest::of(b"store-bench")).unwrap();
            let mut safety = SafetyState::default();
            let mut seq = 0u64;
            let mut cpu = Duration::ZERO;
            let mut transactions = 0u64;
            group.bench_function(&name, |b| {
                b.iter_custom(|iterations| {
                    let cpu_before = cpu_time();
                    let start = Instant::now();
                    for _ in 0..iterations * BATCHES {
                        seq += 1;
                        // The record's sequence number is the key; the certificate is reused.
                        if pbft {
                            let mut proof = prepared.clone();
                            proof.certificate.statement.seq = seq;
                            let update = SafetyUpdate::Prepared(proof);
                            safety.apply(&update);
                            let mut writes = Writes::default();
                            writes.put_safety(&update, &safety);
                            store.commit(writes).unwrap();
                        }
                        let mut batch = committed.clone();
                        batch.certificate.statement.seq = seq;
                        let mut writes = Writes::default();
                        writes.put_batch(&batch, &safety);
                        store.commit(writes).unwrap();
                        // A replica drops these at stable checkpoints; the memory here would
                        // otherwise grow with every iteration.
                        safety.prepared.clear();
                    }
                    let wall = start.elapsed();
                    cpu += cpu_time().saturating_sub(cpu_before);
                    transactions += iterations * BATCHES * requests as u64;
                    wall
                })
            });
            if transactions > 0 {
                println!(
                    "store/{name}: {:.2} µs of CPU per transaction",
                    cpu.as_secs_f64() * 1e6 / transactions as f64
                );
            }
        }
    }
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
