//! The replica's durable state in RocksDB: the committed log (each batch with its commit
//! certificate, keyed by sequence number) and the protocol's safety state (view, prepares,
//! prepared certificates, stable checkpoint).
//!
//! Every value carries a CRC32 of its bytes, and RocksDB's own block checksums and paranoid
//! checks are on, so a corrupted or truncated store is reported at open, never used. The
//! client de-duplication table is not stored separately: it is a function of the committed
//! log, and [`ordinal_consensus::start_replica`] rebuilds it by replaying the log.
//!
//! Keys: `format` (layout version and cluster id), `b` + seq (big-endian, so iteration is in
//! sequence order), `s/view`, `s/stable`, `s/p` + seq (prepare votes), `s/q` + seq (prepared
//! certificates); for the linear mode `s/voted` (last voted round) and `s/hqc` (highest quorum
//! certificate).

use std::path::Path;
use std::time::{Duration, Instant};

use ordinal_consensus::messages::{PreparedProof, QuorumCert, StableCheckpoint};
use ordinal_consensus::{CommittedBatch, SafetyState, SafetyUpdate};
use ordinal_crypto::Digest;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use crate::config::SyncPolicy;

const FORMAT_KEY: &[u8] = b"format";
/// Layout 1 kept batches beside the safety state in the default column family; layout 2 keeps
/// them in their own (`LOG_CF`). Opening a layout-1 store moves them over.
const FORMAT_VERSION: u32 = 2;
/// The committed log, alone in its column family. Its keys only ever grow, so the table
/// files RocksDB flushes never overlap and compaction moves them down without rewriting them.
/// Beside the safety state (rewritten constantly, and PBFT's prepared proofs, deleted at every
/// stable checkpoint) every file spanned both and each compaction rewrote the whole log: on a
/// 2-core machine, all four replicas compacting at once slowed receipts to a third for about
/// 300 ms, 11-12 s into every benchmark run, and the rewrite grows with the log.
const LOG_CF: &str = "log";
const BATCH_PREFIX: u8 = b'b';
const VIEW_KEY: &[u8] = b"s/view";
const STABLE_KEY: &[u8] = b"s/stable";
const PREPARE_PREFIX: &[u8] = b"s/p";
const PREPARED_PREFIX: &[u8] = b"s/q";
/// Linear mode: (epoch, last voted round).
const VOTED_KEY: &[u8] = b"s/voted2";
/// Linear mode: the highest quorum certificate (with its epoch).
const HIGH_QC_KEY: &[u8] = b"s/hqc2";
/// Before epochs: the last voted round alone (epoch 0), and a certificate without an epoch.
const LEGACY_VOTED_KEY: &[u8] = b"s/voted";
const LEGACY_HIGH_QC_KEY: &[u8] = b"s/hqc";

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB reported an error (including its own checksum failures).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A value failed its checksum or does not decode.
    #[error("corrupted store: {key}: {reason}")]
    Corrupt {
        /// The key, printable.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The committed log has a hole: batches after it cannot be trusted to be complete.
    #[error("truncated log: expected batch {expected}, found {found}")]
    Gap {
        /// The sequence number that should come next.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// The directory holds state an older version wrote that this one cannot use safely.
    #[error("store written by an older version: {0}")]
    Outdated(&'static str),
    /// The directory holds another cluster's data.
    #[error("the store belongs to cluster {found}, not {expected}")]
    WrongCluster {
        /// This replica's cluster.
        expected: String,
        /// The store's.
        found: String,
    },
}

fn batch_key(seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = BATCH_PREFIX;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn seq_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn printable(key: &[u8]) -> String {
    key.iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// A value as stored: CRC32 (little-endian) of the payload, then the payload.
fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn unseal<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: printable(key),
        reason: reason.to_string(),
    };
    let (crc, payload) = value
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("shorter than its checksum"))?;
    if u32::from_le_bytes(*crc) != crc32fast::hash(payload) {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(payload)
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(unseal(key, value)?).map_err(|e| StoreError::Corrupt {
        key: printable(key),
        reason: format!("does not decode: {e}"),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // postcard cannot fail on these types (no maps with non-string keys issues, no I/O).
    seal(&postcard::to_stdvec(value).unwrap_or_default())
}

/// Writes collected for one atomic, (optionally) synced commit.
#[derive(Default)]
pub struct Writes {
    /// Safety state, in the default column family.
    batch: WriteBatch,
    /// Committed batches (key, sealed value), for the log's column family at commit.
    log: Vec<([u8; 9], Vec<u8>)>,
    batches: usize,
    highest_batch: Option<u64>,
    safety: bool,
}

impl Writes {
    /// Whether anything was collected.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.log.is_empty()
    }

    /// The highest committed batch in these writes.
    pub fn highest_batch(&self) -> Option<u64> {
        self.highest_batch
    }

    /// Adds a committed batch.
    pub fn put_batch(&mut self, committed: &CommittedBatch) {
        self.log.push((batch_key(committed.seq()), encode(committed)));
        self.batches += 1;
        self.highest_batch = Some(self.highest_batch.unwrap_or(0).max(committed.seq()));
    }

    /// Adds what `update` changed in `state` (already applied to it). Writes holding a safety
    /// update are always synced, whatever the policy: a replica that forgets a vote after a
    /// crash could cast a conflicting one.
    pub fn put_safety(&mut self, update: &SafetyUpdate, state: &SafetyState) {
        self.safety = true;
        match update {
            SafetyUpdate::EnterView { .. } => {
                self.batch.put(VIEW_KEY, encode(&(state.view, state.changing)));
            }
            SafetyUpdate::Prepare { seq, .. } => {
                if let Some(vote) = state.prepares.get(seq) {
                    self.batch.put(seq_key(PREPARE_PREFIX, *seq), encode(vote));
                }
            }
            SafetyUpdate::Prepared(proof) => {
                if let Some(kept) = state.prepared.get(&proof.seq()) {
                    self.batch
                        .put(seq_key(PREPARED_PREFIX, proof.seq()), encode(kept));
                }
            }
            SafetyUpdate::Voted { .. } => {
                self.batch
                    .put(VOTED_KEY, encode(&(state.voted_epoch, state.voted_round)));
            }
            SafetyUpdate::HighQc(_) => {
                if let Some(qc) = &state.high_qc {
                    self.batch.put(HIGH_QC_KEY, encode(qc));
                }
            }
            SafetyUpdate::Stable(_) => {
                self.batch.put(STABLE_KEY, encode(&state.stable));
                // Votes at or below the stable checkpoint are never needed again.
                let end = state.stable.seq.saturating_add(1);
                self.batch
                    .delete_range(seq_key(PREPARE_PREFIX, 0), seq_key(PREPARE_PREFIX, end));
                self.batch
                    .delete_range(seq_key(PREPARED_PREFIX, 0), seq_key(PREPARED_PREFIX, end));
            }
        }
    }
}

/// Bytes of writes a memtable collects before RocksDB flushes it to a table file.
const WRITE_BUFFER_BYTES: usize = 16 << 20;

/// The open store.
pub struct Store {
    db: DB,
    sync: SyncPolicy,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.db.path()).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path` for `cluster_id`.
    pub fn open(path: &Path, sync: SyncPolicy, cluster_id: &Digest) -> Result<Store, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_paranoid_checks(true);
        options.set_max_open_files(256);
        options.set_keep_log_file_num(4);
        // RocksDB's default memtables (64 MiB, two of them) were most of a replica's memory at
        // saturation; the log is written once and read rarely, so smaller ones cost little.
        options.set_write_buffer_size(WRITE_BUFFER_BYTES);
        let mut log_options = Options::default();
        log_options.set_write_buffer_size(WRITE_BUFFER_BYTES);
        let families = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, options.clone()),
            ColumnFamilyDescriptor::new(LOG_CF, log_options),
        ];
        let db = DB::open_cf_descriptors(&options, path, families)?;
        let store = Store { db, sync };
        let expected = (FORMAT_VERSION, cluster_id.to_hex());
        match store.db.get(FORMAT_KEY)? {
            None => store.write_format(&expected)?,
            Some(value) => {
                let (version, cluster): (u32, String) = decode(FORMAT_KEY, &value)?;
                if cluster != expected.1 {
                    return Err(StoreError::WrongCluster {
                        expected: expected.1,
                        found: cluster,
                    });
                }
                match version {
                    FORMAT_VERSION => {}
                    1 => {
                        store.move_log_to_its_family()?;
                        store.write_format(&expected)?;
                    }
                    _ => {
                        return Err(StoreError::Corrupt {
                            key: "format".into(),
                            reason: format!("layout version {version}, this build reads {FORMAT_VERSION}"),
                        })
                    }
                }
            }
        }
        Ok(store)
    }

    fn write_format(&self, format: &(u32, String)) -> Result<(), StoreError> {
        let mut writes = WriteBatch::default();
        writes.put(FORMAT_KEY, encode(format));
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(writes, &options)?;
        Ok(())
    }

    /// Layout 1 to 2: the batches move from the default column family to the log's, a chunk
    /// per synced write (each chunk moves atomically, so a crash midway loses nothing and the
    /// next open moves the rest). One iterator walks them all: it reads its own snapshot, so
    /// the chunks written meanwhile do not disturb it, and it never rescans what moved.
    fn move_log_to_its_family(&self) -> Result<(), StoreError> {
        const CHUNK_BATCHES: usize = 256;
        const CHUNK_BYTES: usize = 32 << 20;
        let log = self.log_family()?;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        let mut writes = WriteBatch::default();
        let mut moved = 0;
        let mut bytes = 0;
        let start = [BATCH_PREFIX];
        for item in self.db.iterator(IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            if key.first() != Some(&BATCH_PREFIX) {
                break;
            }
            writes.put_cf(log, &key, &value);
            writes.delete(&key);
            moved += 1;
            bytes += key.len() + value.len();
            if moved >= CHUNK_BATCHES || bytes >= CHUNK_BYTES {
                self.db.write_opt(std::mem::take(&mut writes), &options)?;
                moved = 0;
                bytes = 0;
            }
        }
        if moved > 0 {
            self.db.write_opt(writes, &options)?;
        }
        Ok(())
    }

    fn log_family(&self) -> Result<&ColumnFamily, StoreError> {
        self.db.cf_handle(LOG_CF).ok_or_else(|| StoreError::Corrupt {
            key: LOG_CF.into(),
            reason: "column family missing".into(),
        })
    }

    /// Commits `writes` atomically, synced to disk before it returns under the durable policy
    /// and whenever it holds a safety update. Returns how long the write (and sync) took.
    pub fn commit(&self, writes: Writes) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let mut options = WriteOptions::default();
        options.set_sync(self.sync == SyncPolicy::Always || writes.safety);
        let mut batch = writes.batch;
        if !writes.log.is_empty() {
            let log = self.log_family()?;
            for (key, value) in &writes.log {
                batch.put_cf(log, key, value);
            }
        }
        self.db.write_opt(batch, &options)?;
        Ok(started.elapsed())
    }

    /// Makes everything written so far durable (for shutdown under the `never` policy).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// The safety state as last committed.
    pub fn safety(&self) -> Result<SafetyState, StoreError> {
        let mut state = SafetyState::default();
        if let Some(value) = self.db.get(VIEW_KEY)? {
            (state.view, state.changing) = decode(VIEW_KEY, &value)?;
        }
        if let Some(value) = self.db.get(STABLE_KEY)? {
            state.stable = decode::<StableCheckpoint>(STABLE_KEY, &value)?;
        }
        if let Some(value) = self.db.get(VOTED_KEY)? {
            (state.voted_epoch, state.voted_round) = decode(VOTED_KEY, &value)?;
        } else if let Some(value) = self.db.get(LEGACY_VOTED_KEY)? {
            state.voted_round = decode(LEGACY_VOTED_KEY, &value)?;
        }
        if let Some(value) = self.db.get(HIGH_QC_KEY)? {
            state.high_qc = Some(decode::<QuorumCert>(HIGH_QC_KEY, &value)?);
        } else if self.db.get(LEGACY_HIGH_QC_KEY)?.is_some() {
            // Its votes were signed before statements named their epoch: no replica of this
            // version verifies it, and resuming without it could let this replica vote against
            // its lock. The linear mode's wire format changed too, so its cluster restarts as a
            // whole, from empty stores.
            return Err(StoreError::Outdated(
                "linear-mode safety state from before epochs; start the replica from an empty data directory",
            ));
        }
        for item in self.db.prefix_iterator(PREPARE_PREFIX) {
            let (key, value) = item?;
            if !key.starts_with(PREPARE_PREFIX) {
                break;
            }
            let seq = key_seq(&key, PREPARE_PREFIX.len())?;
            state.prepares.insert(seq, decode(&key, &value)?);
        }
        for item in self.db.prefix_iterator(PREPARED_PREFIX) {
            let (key, value) = item?;
            if !key.starts_with(PREPARED_PREFIX) {
                break;
            }
            let seq = key_seq(&key, PREPARED_PREFIX.len())?;
            let proof: PreparedProof = decode(&key, &value)?;
            if proof.seq() != seq {
                return Err(StoreError::Corrupt {
                    key: printable(&key),
                    reason: format!("holds a certificate for {}", proof.seq()),
                });
            }
            state.prepared.insert(seq, proof);
        }
        Ok(state)
    }

    /// One committed batch, checked.
    pub fn batch(&self, seq: u64) -> Result<Option<CommittedBatch>, StoreError> {
        let key = batch_key(seq);
        match self.db.get_cf(self.log_family()?, key)? {
            None => Ok(None),
            Some(value) => Ok(Some(check_batch(&key, seq, &value)?)),
        }
    }

    /// Committed batches from `from` on, in order, stopping at the first missing one, after
    /// `max` batches, or once `max_bytes` of payload are collected (at least one batch).
    pub fn batches(
        &self,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<CommittedBatch>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let start = batch_key(from);
        let log = self.log_family()?;
        for item in self
            .db
            .iterator_cf(log, IteratorMode::From(&start, Direction::Forward))
        {
            let (key, value) = item?;
            if key.first() != Some(&BATCH_PREFIX)
                || out.len() >= max
                || (bytes >= max_bytes && !out.is_empty())
            {
                break;
            }
            let expected = from + out.len() as u64;
            let seq = key_seq(&key, 1)?;
            if seq != expected {
                break;
            }
            let committed = check_batch(&key, seq, &value)?;
            bytes += committed.batch.payload_bytes();
            out.push(committed);
        }
        Ok(out)
    }

    /// The whole committed log from sequence number 1, read lazily and checked as it goes:
    /// a corrupted value or a hole ends the iteration with an error.
    pub fn log(&self) -> impl Iterator<Item = Result<CommittedBatch, StoreError>> + '_ {
        let mut expected = 1u64;
        let mut failed = false;
        let (family, missing) = match self.log_family() {
            Ok(family) => (Some(family), None),
            Err(e) => (None, Some(Err(e))),
        };
        let entries = family.into_iter().flat_map(move |log| {
            self.db
                .iterator_cf(log, IteratorMode::From(&batch_key(1), Direction::Forward))
        });
        missing.into_iter().chain(entries.map_while(move |item| {
            if failed {
                return None;
            }
            let result = item.map_err(StoreError::from).and_then(|(key, value)| {
                if key.first() != Some(&BATCH_PREFIX) {
                    return Ok(None);
                }
                let seq = key_seq(&key, 1)?;
                if seq != expected {
                    return Err(StoreError::Gap { expected, found: seq });
                }
                expected += 1;
                check_batch(&key, seq, &value).map(Some)
            });
            match result {
                Ok(Some(batch)) => Some(Ok(batch)),
                Ok(None) => None,
                Err(e) => {
                    failed = true;
                    Some(Err(e))
                }
            }
        }))
    }
}

fn key_seq(key: &[u8], prefix_len: usize) -> Result<u64, StoreError> {
    key.get(prefix_len..)
        .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt {
            key: printable(key),
            reason: "malformed key".into(),
        })
}

/// Decodes a stored batch and checks it is the batch its certificate names at its key's
/// sequence number (the signatures were checked before it was stored).
fn check_batch(key: &[u8], seq: u64, value: &[u8]) -> Result<CommittedBatch, StoreError> {
    let committed: CommittedBatch = decode(key, value)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        key: printable(key),
        reason,
    };
    if committed.seq() != seq {
        return Err(corrupt(format!("holds batch {}", committed.seq())));
    }
    if committed.batch.digest() != committed.certificate.statement.digest {
        return Err(corrupt("batch does not match its certificate".into()));
    }
    Ok(committed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ordinal_consensus::{Batch, Request};
    use ordinal_crypto::{Certificate, Committee, KeyPair, ReplicaId, Signed};

    use ordinal_consensus::messages::CommitVote;

    fn committee() -> (Vec<KeyPair>, Committee) {
        let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed([i; 32])).collect();
        let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
        (
            keys,
            Committee::equal_weights(Digest::of(b"store"), &publics).unwrap(),
        )
    }

    fn committed(seq: u64, keys: &[KeyPair], committee: &Committee) -> CommittedBatch {
        let batch = Batch {
            requests: vec![Request::unsigned(keys[0].public(), seq, vec![seq as u8; 10])],
        };
        let vote = CommitVote {
            view: 0,
            seq,
            digest: batch.digest(),
        };
        let votes: Vec<_> = (0..3)
            .map(|i| {
                Signed::sign(vote, ReplicaId(i), &keys[i as usize], committee)
                    .verify(committee)
                    .unwrap()
            })
            .collect();
        CommittedBatch {
            batch,
            certificate: Certificate::from_votes(vote, committee.epoch(), &votes),
        }
    }

    #[test]
    fn batches_and_safety_survive_reopen() {
        let (keys, committee) = committee();
        let dir = tempfile::tempdir().unwrap();
        let id = Digest::of(b"cluster");
        {
            let store = Store::open(dir.path(), SyncPolicy::Always, &id).unwrap();
            let mut state = SafetyState::default();
            let mut writes = Writes::default();
            for seq in 1..=5 {
                writes.put_batch(&committed(seq, &keys, &committee));
            }
            for update in [
                SafetyUpdate::EnterView {
                    view: 3,
                    changing: true,
                },
                SafetyUpdate::Prepare {
                    view: 3,
                    seq: 6,
                    digest: Digest::of(b"x"),
                },
                SafetyUpdate::Voted { epoch: 2, round: 9 },
                SafetyUpdate::HighQc(ordinal_consensus::messages::genesis_qc()),
            ] {
                state.apply(&update);
                writes.put_safety(&update, &state);
            }
            store.commit(writes).unwrap();
        }
        let store = Store::open(dir.path(), SyncPolicy::Always, &id).unwrap();
        let log: Vec<_> = store.log().collect::<Result<_, _>>().unwrap();
        assert_eq!(log.len(), 5);
        assert_eq!(log[4].seq(), 5);
        assert_eq!(store.batches(2, 2, usize::MAX).unwrap().len(), 2);
        let state = store.safety().unwrap();
        assert_eq!((state.view, state.changing), (3, true));
        assert_eq!(state.prepares.get(&6).map(|p| p.0), Some(3));
        assert_eq!(
            (state.voted_epoch, state.voted_round),
            (2, 9),
            "the linear mode's last voted epoch and round survive"
        );
        assert_eq!(state.high_qc, Some(ordinal_consensus::messages::genesis_qc()));
        // Another cluster's replica refuses the directory.
        drop(store);
        let other = Store::open(dir.path(), SyncPolicy::Always, &Digest::of(b"other"));
        assert!(matches!(other, Err(StoreError::WrongCluster { .. })));
    }

    /// A store written by layout 1 (batches beside the safety state) opens with its log moved
    /// to the log's column family, nothing lost, and the safety state untouched.
    #[test]
    fn a_layout_1_store_is_moved_to_layout_2_on_open() {
        let (keys, committee) = committee();
        let dir = tempfile::tempdir().unwrap();
        let id = Digest::of(b"cluster");
        {
            let mut options = Options::default();
            options.create_if_missing(true);
            let db = DB::open(&options, dir.path()).unwrap();
            db.put(FORMAT_KEY, encode(&(1u32, id.to_hex()))).unwrap();
            for seq in 1..=300 {
                db.put(batch_key(seq), encode(&committed(seq, &keys, &committee)))
                    .unwrap();
            }
            db.put(LEGACY_VOTED_KEY, encode(&7u64)).unwrap();
        }
        let store = Store::open(dir.path(), SyncPolicy::Always, &id).unwrap();
        let log: Vec<_> = store.log().collect::<Result<_, _>>().unwrap();
        assert_eq!(log.len(), 300, "batches moved in more than one chunk");
        let safety = store.safety().unwrap();
        assert_eq!(
            (safety.voted_epoch, safety.voted_round),
            (0, 7),
            "a round stored alone is of epoch 0"
        );
        assert!(
            store.db.get(batch_key(1)).unwrap().is_none(),
            "the old copies are gone"
        );
        drop(store);
        // Reopening finds layout 2 and the same log.
        let store = Store::open(dir.path(), SyncPolicy::Always, &id).unwrap();
        assert_eq!(store.log().count(), 300);
        // A linear-mode certificate from before epochs is refused by name, not decoded as
        // something else.
        store.db.put(LEGACY_HIGH_QC_KEY, b"old").unwrap();
        assert!(matches!(store.safety(), Err(StoreError::Outdated(_))));
    }

    #[test]
    fn corruption_and_holes_are_reported() {
        let (keys, committee) = committee();
        let dir = tempfile::tempdir().unwrap();
        let id = Digest::of(b"cluster");
        let store = Store::open(dir.path(), SyncPolicy::Never, &id).unwrap();
        let mut writes = Writes::default();
        for seq in [1, 2, 4] {
            writes.put_batch(&committed(seq, &keys, &committee));
        }
        store.commit(writes).unwrap();
        let result: Result<Vec<_>, _> = store.log().collect();
        assert!(matches!(
            result,
            Err(StoreError::Gap {
                expected: 3,
                found: 4
            })
        ));
        // Flip one byte of a stored value: its checksum no longer matches.
        let log = store.log_family().unwrap();
        let mut value = store.db.get_cf(log, batch_key(2)).unwrap().unwrap();
        let last = value.len() - 1;
        value[last] ^= 1;
        store.db.put_cf(log, batch_key(2), value).unwrap();
        assert!(matches!(store.batch(2), Err(StoreError::Corrupt { .. })));
        let result: Result<Vec<_>, _> = store.log().collect();
        assert!(matches!(result, Err(StoreError::Corrupt { .. })));
    }
}
