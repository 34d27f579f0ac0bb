//! The transport alone: what one QUIC stream with mutual TLS (the replicas' and clients' own
//! configuration from `ordinal_client::wire`) costs per frame on loopback, both ends in this
//! process. Frames are written as the node writes them (queued, gathered up to 512 KiB per
//! stream write) and read as it reads them (length prefix, then the payload).
//!
//! Criterion reports frames per second of wall time. Because the machine is CPU-bound, the
//! number that matters for the end-to-end ceiling is the CPU time per frame (sender and
//! receiver together, from `getrusage`), printed after each run: every transaction crosses
//! such a stream several times (client to primary, primary to each backup, a receipt back).
//!
//! ```text
//! cargo bench -p ordinal-benches --bench transport
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/cpu.rs"]
mod cpu;

use cpu::cpu_time;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
mod common;

use common::{committee, keys};
use ordinal_client::wire;
use ordinal_crypto::{KeyPair, ReplicaId};

/// Frames per measured iteration.
const FRAMES: usize = 20_000;
/// Most bytes gathered into one stream write (the node's `WRITE_GATHER`).
const GATHER: usize = 512 * 1024;

/// A connected pair: a frame queue whose writer task sends on one long-lived stream, and a
/// reader task that counts the frames it decodes and reports each full iteration.
struct Link {
    frames: wire::FrameSender,
    done: tokio::sync::mpsc::UnboundedReceiver<()>,
}

async fn link(frame_size: usize, per_iteration: usize) -> Link {
    let replica_keys = keys(1);
    let server_key = &replica_keys[0];
    let client_key = KeyPair::from_seed([2; 32]);
    let committee = committee(&replica_keys);
    let server_config = wire::quic_server_config(server_key, ReplicaId(0)).unwrap();
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let address = server.local_addr().unwrap();
    let client_config = wire::quic_client_config(&client_key, &committee).unwrap();
    let client = wire::client_endpoint(client_config, address).unwrap();
    let accept = tokio::spawn(async move {
        let connection = server.accept().await.unwrap().await.unwrap();
        let recv = connection.accept_uni().await.unwrap();
        (server, connection, recv)
    });
    let connection = wire::dial(&client, ReplicaId(0), &address.to_string())
        .await
        .unwrap();
    let mut send = connection.open_uni().await.unwrap();
    // The stream exists for the peer once something is written on it.
    send.write_all(&wire::encode_frame(&Vec::<u8>::new()).unwrap())
        .await
        .unwrap();
    let (server, server_connection, mut recv) = accept.await.unwrap();
    let (done_tx, done) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _keep = (server, server_connection);
        let mut count = 0usize;
        // The empty frame that opened the stream.
        let _ = wire::read_frame(&mut recv, 1 << 20).await;
        while let Ok(Some(frame)) = wire::read_frame(&mut recv, 1 << 20).await {
            assert!(frame.len() >= frame_size);
            count += 1;
            if count % per_iteration == 0 && done_tx.send(()).is_err() {
                return;
            }
        }
    });
    let (frames, mut queue) = wire::frame_queue(64 << 20);
    tokio::spawn(async move {
        let _keep = (client, connection);
        let mut buffer = Vec::with_capacity(GATHER);
        while let Some(frame) = queue.recv().await {
            if queue
                .write_gathered(frame, &mut send, &mut buffer, GATHER)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Link { frames, done }
}

fn transport(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("quic_stream");
    group.sample_size(10);
    // 600 bytes: a 512-byte transaction framed as a client submission; 256 KiB: a proposal
    // of 512 such transactions.
    for (frame_size, frames) in [(600usize, FRAMES), (256 * 1024, FRAMES / 200)] {
        let mut link = runtime.block_on(link(frame_size, frames));
        let encoded =
            Arc::new(wire::encode_frame(&serde_bytes::ByteBuf::from(vec![7u8; frame_size])).unwrap());
        let mut cpu = Duration::ZERO;
        let mut sent = 0u64;
        let name = format!("frames_{frame_size}B");
        group.throughput(Throughput::Elements(frames as u64));
        group.bench_function(&name, |b| {
            b.iter_custom(|iterations| {
                let mut wall = Duration::ZERO;
                for _ in 0..iterations {
                    let cpu_before = cpu_time();
                    let start = Instant::now();
                    runtime.block_on(async {
                        for _ in 0..frames {
                            assert!(link.frames.send(encoded.clone()).await, "writer gone");
                        }
                        link.done.recv().await.unwrap();
                    });
                    wall += start.elapsed();
                    cpu += cpu_time().saturating_sub(cpu_before);
                    sent += frames as u64;
                }
                wall
            })
        });
        if sent > 0 {
            println!(
                "quic_stream/{name}: {:.2} µs of CPU per frame (both ends), {:.0} MiB/s of frames per CPU-second",
                cpu.as_secs_f64() * 1e6 / sent as f64,
                sent as f64 * frame_size as f64 / (1 << 20) as f64 / cpu.as_secs_f64().max(1e-9),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, transport);
criterion_main!(benches);
