//! The replica's durable state in RocksDB: the committed log (each batch with its commit
//! certificate, keyed by sequence number) and the protocol's safety state (view, prepares,
//! prepared certificates, stable checkpoint).
//!
//! Every value carries a CRC32 of its bytes, and RocksDB's own block checksums and paranoid
//! checks are on, so a corrupted or truncated store is reported at open, never used. The
//! client de-duplication table is not stored separately: it is a function of the committed
//! log, and [`ordinal_consensus::start_replica`] rebuilds it by replaying the log.
//!
//! Keys in the log's column family: a batch's commit certificate under `b`, the sequence number
//! (big-endian, so iteration is in sequence order) and a 0 byte; its requests under the same
//! with a 1 byte. A batch is committed when its certificate is there. In the default
//! column family: `format` (layout version and cluster id), `s/view`, `s/stable`, `s/p` + seq
//! (prepare votes), `s/q` + seq (prepared certificates, whose batches are the log's); for the
//! linear mode `s/voted2` (last voted epoch and round) and `s/hqc2` (highest quorum
//! certificate).
//!
//! PBFT writes each batch once: with its prepared certificate, synced before the COMMIT vote
//! leaves, where the log will keep it. Committing it adds only the certificate. (Layout 2 wrote
//! the batch twice, inside the prepared certificate and again inside the committed record: the
//! largest cost of a PBFT replica's storage, `cargo bench -p ordinal-node --bench store`.)

use std::path::Path;
use std::time::{Duration, Instant};

use ordinal_consensus::messages::{CommitVote, PrepareVote, PreparedProof, QuorumCert, StableCheckpoint};
use ordinal_consensus::{Batch, CommittedBatch, SafetyState, SafetyUpdate};
use ordinal_crypto::{Certificate, Digest};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use crate::config::SyncPolicy;

const FORMAT_KEY: &[u8] = b"format";
/// Layout 1 kept batches beside the safety state in the default column family; layout 2 keeps
/// them in their own (`LOG_CF`); layout 3 splits each into its requests and its certificate,
/// and keeps a prepared certificate's batch in the log only. Opening an older store converts it.
const FORMAT_VERSION: u32 = 3;
/// The committed log, alone in its column family. Its keys grow (PBFT writes a batch's
/// requests when it prepares, a little ahead of the log, and rewrites them only if another
/// batch prepares there in a later view), so the table files RocksDB flushes barely overlap
/// and compaction moves them down without rewriting them.
/// Beside the safety state (rewritten constantly, and PBFT's prepared proofs, deleted at every
/// stable checkpoint) every file spanned both and each compaction rewrote the whole log: on a
/// 2-core machine, all four replicas compacting at once slowed receipts to a third for about
/// 300 ms, 11-12 s into every benchmark run, and the rewrite grows with the log.
const LOG_CF: &str = "log";
const BATCH_PREFIX: u8 = b'b';
/// The last byte of a log key: the batch's commit certificate, or its requests. The certificate
/// sorts first, so a reader decides whether a batch is committed before it reaches the
/// requests, and skips a prepared batch's requests without copying them.
const CERTIFICATE: u8 = 0;
const BODY: u8 = 1;
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

/// Layouts 1 and 2: a committed batch with its certificate in one value.
fn legacy_batch_key(seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = BATCH_PREFIX;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The log key of a batch's `part` (`BODY` or `CERTIFICATE`).
fn log_key(seq: u64, part: u8) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[0] = BATCH_PREFIX;
    key[1..9].copy_from_slice(&seq.to_be_bytes());
    key[9] = part;
    key
}

/// The sequence number and part of a layout-3 log key.
fn parse_log_key(key: &[u8]) -> Result<(u64, u8), StoreError> {
    match key {
        [BATCH_PREFIX, seq @ .., part @ (BODY | CERTIFICATE)] if seq.len() == 8 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(seq);
            Ok((u64::from_be_bytes(bytes), *part))
        }
        _ => Err(StoreError::Corrupt {
            key: printable(key),
            reason: "malformed log key".into(),
        }),
    }
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

/// One write to the log's column family.
struct LogWrite {
    seq: u64,
    /// `CERTIFICATE` or `BODY`.
    part: u8,
    value: Vec<u8>,
    /// A prepared certificate's batch: dropped at commit if its sequence number is already
    /// committed (a certificate can complete after its slot committed with another batch
    /// fetched from peers, and must not replace that batch's requests).
    prepared: bool,
}

/// Writes collected for one atomic, (optionally) synced commit.
#[derive(Default)]
pub struct Writes {
    /// Safety state, in the default column family.
    batch: WriteBatch,
    /// Batches and their certificates (key, sealed value), for the log's column family.
    log: Vec<LogWrite>,
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

    /// Adds a committed batch. `safety` is the state these writes bring about: when it holds a
    /// prepared certificate for the same batch, the batch went into the log with it (in these
    /// writes or earlier ones) and only the commit certificate is added.
    pub fn put_batch(&mut self, committed: &CommittedBatch, safety: &SafetyState) {
        let seq = committed.seq();
        let stored = safety.prepared.get(&seq).is_some_and(|proof| {
            proof.certificate.statement.digest == committed.certificate.statement.digest
        });
        if !stored {
            self.log.push(LogWrite {
                seq,
                part: BODY,
                value: encode(&committed.batch),
                prepared: false,
            });
        }
        self.log.push(LogWrite {
            seq,
            part: CERTIFICATE,
            value: encode(&committed.certificate),
            prepared: false,
        });
        self.highest_batch = Some(self.highest_batch.unwrap_or(0).max(seq));
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
                // Only a certificate the state kept is written; an older one changed nothing.
                // Its batch goes where the log keeps batches, so that committing it later
                // writes the certificate alone.
                if let Some(kept) = state
                    .prepared
                    .get(&proof.seq())
                    .filter(|kept| kept.certificate == proof.certificate)
                {
                    self.batch
                        .put(seq_key(PREPARED_PREFIX, kept.seq()), encode(&kept.certificate));
                    self.log.push(LogWrite {
                        seq: kept.seq(),
                        part: BODY,
                        value: encode(&kept.batch),
                        prepared: true,
                    });
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
                // Votes at or below the stable checkpoint are never needed again (the batches
                // of prepared certificates stay: they are the log's).
                let end = state.stable.seq.saturating_add(1);
                self.batch
                    .delete_range(seq_key(PREPARE_PREFIX, 0), seq_key(PREPARE_PREFIX, end));
                self.batch
                    .delete_range(seq_key(PREPARED_PREFIX, 0), seq_key(PREPARED_PREFIX, end));
            }
        }
    }
}

/// Writes `writes` atomically and syncs them before returning.
fn write_synced(db: &DB, writes: WriteBatch) -> Result<(), StoreError> {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    db.write_opt(writes, &options)?;
    Ok(())
}

/// A layout conversion's writes, synced a chunk at a time (at most 256 records or 32 MiB):
/// each chunk lands atomically, and one that a crash interrupts is redone at the next open.
struct Chunks<'a> {
    db: &'a DB,
    writes: WriteBatch,
    records: usize,
    bytes: usize,
}

impl<'a> Chunks<'a> {
    const RECORDS: usize = 256;
    const BYTES: usize = 32 << 20;

    fn new(db: &'a DB) -> Self {
        Chunks {
            db,
            writes: WriteBatch::default(),
            records: 0,
            bytes: 0,
        }
    }

    /// Counts the record just added to `writes`, and writes the chunk once it is full.
    fn counted(&mut self, bytes: usize) -> Result<(), StoreError> {
        self.records += 1;
        self.bytes += bytes;
        if self.records >= Self::RECORDS || self.bytes >= Self::BYTES {
            self.write()?;
        }
        Ok(())
    }

    fn write(&mut self) -> Result<(), StoreError> {
        write_synced(self.db, std::mem::take(&mut self.writes))?;
        self.records = 0;
        self.bytes = 0;
        Ok(())
    }

    /// Writes what is left.
    fn finish(mut self) -> Result<(), StoreError> {
        if self.records > 0 {
            self.write()?;
        }
        Ok(())
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
                    1 | 2 => {
                        if version == 1 {
                            store.move_log_to_its_family()?;
                        }
                        store.split_log_records()?;
                        store.keep_prepared_batches_in_the_log(&expected)?;
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
        write_synced(&self.db, writes)
    }

    /// Layout 1 to 2: the batches move from the default column family to the log's, a chunk
    /// per synced write (each chunk moves atomically, so a crash midway loses nothing and the
    /// next open moves the rest). One iterator walks them all: it reads its own snapshot, so
    /// the chunks written meanwhile do not disturb it, and it never rescans what moved.
    fn move_log_to_its_family(&self) -> Result<(), StoreError> {
        let log = self.log_family()?;
        let mut chunks = Chunks::new(&self.db);
        let start = [BATCH_PREFIX];
        for item in self.db.iterator(IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            if key.first() != Some(&BATCH_PREFIX) {
                break;
            }
            chunks.writes.put_cf(log, &key, &value);
            chunks.writes.delete(&key);
            chunks.counted(key.len() + value.len())?;
        }
        chunks.finish()
    }

    /// Layout 2 to 3, first step: each committed batch's one value becomes two, its requests
    /// and its certificate, a chunk per synced write. The old keys are one byte shorter, so a
    /// crash midway leaves exactly the batches not yet split under old keys, and the next open
    /// splits those.
    fn split_log_records(&self) -> Result<(), StoreError> {
        let log = self.log_family()?;
        let mut chunks = Chunks::new(&self.db);
        let start = [BATCH_PREFIX];
        for item in self
            .db
            .iterator_cf(log, IteratorMode::From(&start, Direction::Forward))
        {
            let (key, value) = item?;
            if key.first() != Some(&BATCH_PREFIX) {
                break;
            }
            if key.len() != legacy_batch_key(0).len() {
                continue;
            }
            let committed = check_batch(&key, key_seq(&key, 1)?, &value)?;
            let seq = committed.seq();
            chunks
                .writes
                .put_cf(log, log_key(seq, BODY), encode(&committed.batch));
            chunks
                .writes
                .put_cf(log, log_key(seq, CERTIFICATE), encode(&committed.certificate));
            chunks.writes.delete_cf(log, &key);
            chunks.counted(value.len())?;
        }
        chunks.finish()
    }

    /// Layout 2 to 3, second step, in one synced write with the new layout version (so it runs
    /// once, and fully or not at all): each prepared certificate stored with its batch is kept
    /// as the certificate alone, its batch in the log. A certificate whose sequence number the
    /// log already holds with another batch is dropped: that batch committed, so no later view
    /// can prepare this one, and carrying it in a VIEW-CHANGE never mattered.
    fn keep_prepared_batches_in_the_log(&self, format: &(u32, String)) -> Result<(), StoreError> {
        let log = self.log_family()?;
        let mut writes = WriteBatch::default();
        for item in self.db.prefix_iterator(PREPARED_PREFIX) {
            let (key, value) = item?;
            if !key.starts_with(PREPARED_PREFIX) {
                break;
            }
            let proof: PreparedProof = decode(&key, &value)?;
            let seq = proof.seq();
            let digest = proof.certificate.statement.digest;
            match self.db.get_cf(log, log_key(seq, CERTIFICATE))? {
                Some(held) => {
                    let held: Certificate<CommitVote> = decode(&log_key(seq, CERTIFICATE), &held)?;
                    if held.statement.digest == digest {
                        writes.put(&key, encode(&proof.certificate));
                    } else {
                        writes.delete(&key);
                    }
                }
                None => {
                    writes.put(&key, encode(&proof.certificate));
                    writes.put_cf(log, log_key(seq, BODY), encode(&proof.batch));
                }
            }
        }
        writes.put(FORMAT_KEY, encode(format));
        write_synced(&self.db, writes)
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
            let mut certified = Vec::new();
            for write in &writes.log {
                let seq = write.seq;
                if write.prepared
                    && (certified.contains(&seq)
                        || self.db.get_pinned_cf(log, log_key(seq, CERTIFICATE))?.is_some())
                {
                    // Committed already: the certificate is kept in the safety state and dropped
                    // at the next open if its batch is not the committed one.
                    continue;
                }
                if write.part == CERTIFICATE {
                    certified.push(seq);
                }
                batch.put_cf(log, log_key(seq, write.part), &write.value);
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
        let log = self.log_family()?;
        for item in self.db.prefix_iterator(PREPARED_PREFIX) {
            let (key, value) = item?;
            if !key.starts_with(PREPARED_PREFIX) {
                break;
            }
            let seq = key_seq(&key, PREPARED_PREFIX.len())?;
            let certificate: Certificate<PrepareVote> = decode(&key, &value)?;
            if certificate.statement.seq != seq {
                return Err(StoreError::Corrupt {
                    key: printable(&key),
                    reason: format!("holds a certificate for {}", certificate.statement.seq),
                });
            }
            let body_key = log_key(seq, BODY);
            let Some(body) = self.db.get_cf(log, body_key)? else {
                return Err(StoreError::Corrupt {
                    key: printable(&key),
                    reason: "its batch is missing from the log".into(),
                });
            };
            let batch: Batch = decode(&body_key, &body)?;
            if batch.digest() != certificate.statement.digest {
                // The log's batch at this sequence number is another one, which committed
                // after this certificate was stored (fetched from peers): no later view can
                // prepare this batch, so the certificate is not needed.
                tracing::debug!(seq, "prepared certificate superseded by the committed batch");
                continue;
            }
            state.prepared.insert(seq, PreparedProof { certificate, batch });
        }
        Ok(state)
    }

    /// One committed batch, checked.
    pub fn batch(&self, seq: u64) -> Result<Option<CommittedBatch>, StoreError> {
        let log = self.log_family()?;
        let certificate_key = log_key(seq, CERTIFICATE);
        let Some(certificate) = self.db.get_cf(log, certificate_key)? else {
            return Ok(None);
        };
        let body_key = log_key(seq, BODY);
        let body = self.db.get_cf(log, body_key)?;
        check_parts(seq, body.as_deref(), &certificate).map(Some)
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
        if max == 0 {
            return Ok(out);
        }
        let mut bytes = 0usize;
        for item in self.committed_from(from)? {
            let committed = match item {
                Ok(committed) => committed,
                Err(StoreError::Gap { .. }) => break,
                Err(e) => return Err(e),
            };
            bytes += committed.batch.payload_bytes();
            out.push(committed);
            if out.len() >= max || bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// The whole committed log from sequence number 1, read lazily and checked as it goes:
    /// a corrupted value or a hole ends the iteration with an error.
    pub fn log(&self) -> impl Iterator<Item = Result<CommittedBatch, StoreError>> + '_ {
        let (entries, failed) = match self.committed_from(1) {
            Ok(entries) => (Some(entries), None),
            Err(e) => (None, Some(Err(e))),
        };
        failed.into_iter().chain(entries.into_iter().flatten())
    }

    /// Committed batches from `from` on, in order, each checked against its certificate. It
    /// ends after the last one, or with an error after a hole or a bad value. A batch without
    /// its certificate is prepared, not committed: the log ends before it (or has a hole there,
    /// if a certificate follows).
    fn committed_from(&self, from: u64) -> Result<CommittedLog<'_>, StoreError> {
        let log = self.log_family()?;
        let mut entries = self.db.raw_iterator_cf(log);
        entries.seek(log_key(from, CERTIFICATE));
        Ok(CommittedLog {
            entries,
            expected: from,
            done: false,
        })
    }
}

/// The iterator of [`Store::committed_from`]: one pass over the log's keys, each batch's
/// certificate just before its requests.
struct CommittedLog<'a> {
    entries: rocksdb::DBRawIterator<'a>,
    expected: u64,
    done: bool,
}

impl CommittedLog<'_> {
    fn step(&mut self) -> Result<Option<CommittedBatch>, StoreError> {
        loop {
            let Some(key) = self.entries.key() else {
                self.entries.status()?;
                return Ok(None);
            };
            if key.first() != Some(&BATCH_PREFIX) {
                return Ok(None);
            }
            let (seq, part) = parse_log_key(key)?;
            if part == BODY {
                // Requests without a certificate before them: prepared, not committed.
                self.entries.next();
                continue;
            }
            if seq != self.expected {
                return Err(StoreError::Gap {
                    expected: self.expected,
                    found: seq,
                });
            }
            let certificate = self.entries.value().unwrap_or_default().to_vec();
            self.entries.next();
            let body = match self.entries.key() {
                Some(key) if key == log_key(seq, BODY) => self.entries.value(),
                _ => None,
            };
            let committed = check_parts(seq, body, &certificate)?;
            self.expected += 1;
            self.entries.next();
            return Ok(Some(committed));
        }
    }
}

impl Iterator for CommittedLog<'_> {
    type Item = Result<CommittedBatch, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
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

/// Decodes a committed batch from its parts and checks that the batch is the one its
/// certificate names at `seq` (the signatures were checked before it was stored).
fn check_parts(seq: u64, body: Option<&[u8]>, certificate: &[u8]) -> Result<CommittedBatch, StoreError> {
    let certificate_key = log_key(seq, CERTIFICATE);
    let body_key = log_key(seq, BODY);
    let certificate: Certificate<CommitVote> = decode(&certificate_key, certificate)?;
    let corrupt = |key: &[u8], reason: String| StoreError::Corrupt {
        key: printable(key),
        reason,
    };
    if certificate.statement.seq != seq {
        return Err(corrupt(
            &certificate_key,
            format!("holds the certificate of batch {}", certificate.statement.seq),
        ));
    }
    let body = body.ok_or_else(|| corrupt(&body_key, "missing beside its certificate".into()))?;
    let batch: Batch = decode(&body_key, body)?;
    if batch.digest() != certificate.statement.digest {
        return Err(corrupt(&body_key, "batch does not match its certificate".into()));
    }
    Ok(CommittedBatch { batch, certificate })
}

/// Decodes a layout-2 batch and checks it is the batch its certificate names at its key's
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

    fn committee() -> (Vec<KeyPair>, Committee) {
        let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed([i; 32])).collect();
        let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
        (
            keys,
            Committee::equal_weights(Digest::of(b"store"), &publics).unwrap(),
        )
    }

    fn batch(seq: u64, keys: &[KeyPair], fill: u8) -> Batch {
        Batch::new(vec![Request::unsigned(keys[0].public(), seq, vec![fill; 10])])
    }

    fn certificate<T: ordinal_crypto::Signable + Copy>(
        vote: T,
        keys: &[KeyPair],
        committee: &Committee,
    ) -> Certificate<T> {
        let votes: Vec<_> = (0..3)
            .map(|i| {
                Signed::sign(vote, ReplicaId(i), &keys[i as usize], committee)
                    .verify(committee)
                    .unwrap()
            })
            .collect();
        Certificate::from_votes(vote, committee.epoch(), &votes)
    }

    fn committed_batch(seq: u64, batch: Batch, keys: &[KeyPair], committee: &Committee) -> CommittedBatch {
        let vote = CommitVote {
            view: 0,
            seq,
            digest: batch.digest(),
        };
        CommittedBatch {
            batch,
            certificate: certificate(vote, keys, committee),
        }
    }

    fn committed(seq: u64, keys: &[KeyPair], committee: &Committee) -> CommittedBatch {
        committed_batch(seq, batch(seq, keys, seq as u8), keys, committee)
    }

    fn prepared(seq: u64, view: u64, batch: Batch, keys: &[KeyPair], committee: &Committee) -> PreparedProof {
        let vote = PrepareVote {
            view,
            seq,
            digest: batch.digest(),
        };
        PreparedProof {
            certificate: certificate(vote, keys, committee),
            batch,
        }
    }

    /// The log's keys, in order, as (seq, part).
    fn log_keys(store: &Store) -> Vec<(u64, u8)> {
        let log = store.log_family().unwrap();
        store
            .db
            .iterator_cf(log, IteratorMode::Start)
            .map(|item| parse_log_key(&item.unwrap().0).unwrap())
            .collect()
    }

    /// PBFT's pattern: the prepared certificate puts the batch in the log, committing adds the
    /// certificate alone, and the certificate comes back with its batch after a restart. A
    /// batch fetched from peers in place of a prepared one replaces it in the log, and the
    /// superseded certificate is dropped at the next open.
    #[test]
    fn a_prepared_batch_is_written_once_and_survives_reopen() {
        let (keys, committee) = committee();
        let dir = tempfile::tempdir().unwrap();
        let id = Digest::of(b"cluster");
        {
            let store = Store::open(dir.path(), SyncPolicy::Always, &id).unwrap();
            let mut state = SafetyState::default();
            // Seq 1: prepared, then committed in a later write.
            let update = SafetyUpdate::Prepared(prepared(1, 0, batch(1, &keys, 1), &keys, &committee));
            state.apply(&update);
            let mut writes = Writes::default();
            writes.put_safety(&update, &state);
            assert_eq!(
                writes.log.len(),
                1,
                "the batch goes to the log with its certificate"
            );
            store.commit(writes).unwrap();
            assert!(store.batch(1).unwrap().is_none(), "prepared is not committed");
            assert_eq!(store.log().count(), 0);
            let mut writes = Writes::default();
            writes.put_batch(&committed(1, &keys, &committee), &state);
            assert_eq!(writes.log.len(), 1, "committing adds the certificate alone");
            store.commit(writes).unwrap();
            assert_eq!(store.batch(1).unwrap(), Some(committed(1, &keys, &committee)));
            // Seq 2: prepared with one batch, then another batch fetched from peers commits.
            let update = SafetyUpdate::Prepared(prepared(2, 0, batch(2, &keys, 99), &keys, &committee));
            state.apply(&update);
            let mut writes = Writes::default();
            writes.put_safety(&update, &state);
            writes.put_batch(&committed(2, &keys, &committee), &state);
            assert_eq!(writes.log.len(), 3, "a different batch is written whole");
            store.commit(writes).unwrap();
            // Seq 3: prepared only.
            let update = SafetyUpdate::Prepared(prepared(3, 1, batch(3, &keys, 3), &keys, &committee));
            state.apply(&update);
            let mut writes = Writes::default();
            writes.put_safety(&update, &state);
            // An older certificate for the same sequence number changes nothing.
            let older = SafetyUpdate::Prepared(prepared(3, 0, batch(3, &keys, 7), &keys, &committee));
            state.apply(&older);
            writes.put_safety(&older, &state);
            assert_eq!(writes.log.len(), 1);
            store.commit(writes).unwrap();
        }
        let store = Store::open(dir.path(), SyncPolicy::Always, &id).unwrap();
        let log: Vec<_> = store.log().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            log,
            vec![committed(1, &keys, &committee), committed(2, &keys, &committee)]
        );
        assert_eq!(store.batches(1, 10, usize::MAX).unwrap().len(), 2);
        assert!(store.batch(3).unwrap().is_none());
        assert_eq!(
            log_keys(&store),
            vec![
                (1, CERTIFICATE),
                (1, BODY),
                (2, CERTIFICATE),
                (2, BODY),
                (3, BODY)
            ],
            "each batch is stored once"
        );
        let state = store.safety().unwrap();
        assert_eq!(
            state.prepared.get(&1),
            Some(&prepared(1, 0, batch(1, &keys, 1), &keys, &committee))
        );
        assert!(
            !state.prepared.contains_key(&2),
            "superseded by the committed batch"
        );
        assert_eq!(
            state.prepared.get(&3),
            Some(&prepared(3, 1, batch(3, &keys, 3), &keys, &committee))
        );
    }

    /// A prepared certificate can complete after its slot committed with another batch (fetched
    /// from peers while late PREPAREs were still coming in): it must not replace the committed
    /// batch's requests, and it is dropped at the next open.
    #[test]
    fn a_late_prepared_certificate_leaves_the_committed_batch_alone() {
        let (keys, committee) = committee();
        let dir = tempfile::tempdir().unwrap();
        let id = Digest::of(b"cluster");
        {
            let store = Store::open(dir.path(), SyncPolicy::Always, &id).unwrap();
            let mut state = SafetyState::default();
            let mut writes = Writes::default();
            writes.put_batch(&committed(1, &keys, &committee), &state);
            store.commit(writes).unwrap();
            // In a later write, and in the same one after the commit.
            for (seq, late) in [(1u64, true), (2, false)] {
                let mut writes = Writes::default();
                if !late {
                    writes.put_batch(&committed(seq, &keys, &committee), &state);
                }
                let update =
                    SafetyUpdate::Prepared(prepared(seq, 0, batch(seq, &keys, 55), &keys, &committee));
                state.apply(&update);
                writes.put_safety(&update, &state);
                store.commit(writes).unwrap();
            }
            assert_eq!(store.batch(1).unwrap(), Some(committed(1, &keys, &committee)));
            assert_eq!(store.batch(2).unwrap(), Some(committed(2, &keys, &committee)));
        }
        let store = Store::open(dir.path(), SyncPolicy::Always, &id).unwrap();
        assert_eq!(store.log().count(), 2);
        assert!(store.safety().unwrap().prepared.is_empty());
    }

    /// Layout 2 kept prepared certificates with their batches and each committed batch in one
    /// value; opening converts both, keeping what the replica needs and each batch once.
    #[test]
    fn a_layout_2_store_is_converted_on_open() {
        let (keys, committee) = committee();
        let dir = tempfile::tempdir().unwrap();
        let id = Digest::of(b"cluster");
        {
            let mut options = Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let db = DB::open_cf(&options, dir.path(), [LOG_CF]).unwrap();
            let log = db.cf_handle(LOG_CF).unwrap();
            db.put(FORMAT_KEY, encode(&(2u32, id.to_hex()))).unwrap();
            for seq in 1..=3 {
                db.put_cf(
                    log,
                    legacy_batch_key(seq),
                    encode(&committed(seq, &keys, &committee)),
                )
                .unwrap();
            }
            // Committed with its batch; superseded by another batch; not committed.
            for proof in [
                prepared(2, 0, batch(2, &keys, 2), &keys, &committee),
                prepared(3, 0, batch(3, &keys, 42), &keys, &committee),
                prepared(4, 1, batch(4, &keys, 4), &keys, &committee),
            ] {
                db.put(seq_key(PREPARED_PREFIX, proof.seq()), encode(&proof))
                    .unwrap();
            }
        }
        let store = Store::open(dir.path(), SyncPolicy::Always, &id).unwrap();
        let log: Vec<_> = store.log().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            log,
            (1..=3)
                .map(|seq| committed(seq, &keys, &committee))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            log_keys(&store),
            vec![
                (1, CERTIFICATE),
                (1, BODY),
                (2, CERTIFICATE),
                (2, BODY),
                (3, CERTIFICATE),
                (3, BODY),
                (4, BODY)
            ]
        );
        let state = store.safety().unwrap();
        assert_eq!(state.prepared.keys().copied().collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(
            state.prepared.get(&4),
            Some(&prepared(4, 1, batch(4, &keys, 4), &keys, &committee))
        );
        drop(store);
        let store = Store::open(dir.path(), SyncPolicy::Always, &id).unwrap();
        assert_eq!(store.log().count(), 3);
        assert_eq!(store.safety().unwrap().prepared.len(), 2);
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
                writes.put_batch(&committed(seq, &keys, &committee), &state);
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
    /// to the log's column family and split, nothing lost, and the safety state untouched.
    #[test]
    fn a_layout_1_store_is_converted_on_open() {
        let (keys, committee) = committee();
        let dir = tempfile::tempdir().unwrap();
        let id = Digest::of(b"cluster");
        {
            let mut options = Options::default();
            options.create_if_missing(true);
            let db = DB::open(&options, dir.path()).unwrap();
            db.put(FORMAT_KEY, encode(&(1u32, id.to_hex()))).unwrap();
            for seq in 1..=300 {
                db.put(legacy_batch_key(seq), encode(&committed(seq, &keys, &committee)))
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
            store.db.get(legacy_batch_key(1)).unwrap().is_none() && log_keys(&store).len() == 600,
            "the old copies are gone"
        );
        drop(store);
        // Reopening finds layout 3 and the same log.
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
            writes.put_batch(&committed(seq, &keys, &committee), &SafetyState::default());
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
        assert_eq!(
            store.batches(1, 10, usize::MAX).unwrap().len(),
            2,
            "a read stops at the hole"
        );
        let mut value = store.db.get_cf(log, log_key(2, BODY)).unwrap().unwrap();
        let last = value.len() - 1;
        value[last] ^= 1;
        store.db.put_cf(log, log_key(2, BODY), value).unwrap();
        assert!(matches!(store.batch(2), Err(StoreError::Corrupt { .. })));
        let result: Result<Vec<_>, _> = store.log().collect();
        assert!(matches!(result, Err(StoreError::Corrupt { .. })));
        // A certificate whose batch is gone is corrupt, not the end of the log.
        store.db.delete_cf(log, log_key(1, BODY)).unwrap();
        assert!(matches!(store.batch(1), Err(StoreError::Corrupt { .. })));
        assert!(matches!(
            store.log().next(),
            Some(Err(StoreError::Corrupt { .. }))
        ));
    }
}
