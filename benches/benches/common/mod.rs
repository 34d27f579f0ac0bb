//! Fixtures shared by the benchmarks: seeded keys, committees and 512-byte transactions.
// Each bench target uses a different subset of these.
#![allow(dead_code)]

use ordinal_consensus::{Batch, Request};
use ordinal_crypto::{Committee, Digest, KeyPair, PublicKey};

/// `n` replica keys, the same on every run.
pub fn keys(n: usize) -> Vec<KeyPair> {
    (0..n)
        .map(|i| KeyPair::from_seed(Digest::of_parts(&[b"bench-key", &(i as u64).to_le_bytes()]).0))
        .collect()
}

/// The equal-weight committee of these keys.
pub fn committee(keys: &[KeyPair]) -> Committee {
    let publics: Vec<PublicKey> = keys.iter().map(KeyPair::public).collect();
    Committee::equal_weights(Digest::of(b"ordinal-bench"), &publics).expect("committee")
}

/// `bytes` of payload, distinct per `i`.
pub fn payload(i: usize, bytes: usize) -> Vec<u8> {
    let seed = Digest::of(&(i as u64).to_le_bytes());
    seed.as_bytes().iter().copied().cycle().take(bytes).collect()
}

/// A client id (unsigned mode: the benchmark setting of `scripts/local-bench.sh`).
pub fn client(i: usize) -> PublicKey {
    KeyPair::from_seed(Digest::of_parts(&[b"bench-client", &(i as u64).to_le_bytes()]).0).public()
}

/// A full batch: `count` unsigned requests of `bytes` each from one client.
pub fn batch(count: usize, bytes: usize) -> Batch {
    let client = client(0);
    Batch::new(
        (0..count)
            .map(|i| Request::unsigned(client, i as u64 + 1, payload(i, bytes)))
            .collect(),
    )
}
