//! The blocks a replica holds above its last committed one, and the walk that turns a
//! two-chain into a committed prefix.

use std::collections::{BTreeMap, HashMap, HashSet};

use ordinal_crypto::Digest;

use crate::batch::Batch;
use crate::config::RequestAuth;
use crate::error::Invalid;
use crate::messages::{Block, BlockVote};
use crate::request::RequestKey;

/// A block with its batch.
#[derive(Clone, Debug)]
pub(super) struct StoredBlock {
    pub(super) block: Block,
    pub(super) batch: Batch,
}

/// Uncommitted blocks by id, at most one per round (the first seen: a second one from the
/// same leader is equivocation), and at most `capacity` of them.
#[derive(Clone, Debug)]
pub(super) struct Chain {
    blocks: HashMap<Digest, StoredBlock>,
    by_round: BTreeMap<u64, Digest>,
    capacity: usize,
    /// The last committed block's round and id (genesis: round 0).
    pub(super) committed_round: u64,
    pub(super) committed_id: Digest,
}

impl Chain {
    pub(super) fn new(capacity: usize) -> Self {
        Chain {
            blocks: HashMap::new(),
            by_round: BTreeMap::new(),
            capacity: capacity.max(4),
            committed_round: 0,
            committed_id: BlockVote::genesis().block,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.blocks.len()
    }

    pub(super) fn get(&self, id: &Digest) -> Option<&StoredBlock> {
        self.blocks.get(id)
    }

    /// The batch of a held block at `seq` with digest `digest`.
    pub(super) fn batch_with(&self, seq: u64, digest: &Digest) -> Option<&Batch> {
        self.blocks
            .values()
            .find(|stored| stored.block.seq == seq && stored.block.batch_digest == *digest)
            .map(|stored| &stored.batch)
    }

    /// Adds a block above the committed one. A second, different block for a round is refused
    /// as equivocation; the oldest block goes when the chain is full (a run of timeouts).
    pub(super) fn insert(&mut self, block: Block, batch: Batch) -> Result<(), Invalid> {
        if block.round <= self.committed_round && batch.requests.is_empty() {
            return Ok(());
        }
        let id = block.id();
        if let Some(existing) = self.by_round.get(&block.round) {
            if *existing == id {
                return Ok(());
            }
            return Err(Invalid::Equivocation {
                view: block.round,
                seq: block.seq,
                first: *existing,
                second: id,
            });
        }
        self.by_round.insert(block.round, id);
        self.blocks.insert(id, StoredBlock { block, batch });
        while self.by_round.len() > self.capacity {
            if let Some((_, oldest)) = self.by_round.pop_first() {
                self.blocks.remove(&oldest);
            }
        }
        Ok(())
    }

    /// The blocks from `id` back to (not including) the committed one, oldest first, as far as
    /// they are held: the walk stops at a missing block, so the result may start mid-chain.
    pub(super) fn path_to_committed(&self, id: &Digest) -> Vec<&StoredBlock> {
        let mut path = Vec::new();
        let mut cursor = *id;
        while cursor != self.committed_id {
            let Some(stored) = self.blocks.get(&cursor) else {
                break;
            };
            if stored.block.round <= self.committed_round {
                break;
            }
            path.push(stored);
            cursor = stored.block.parent();
        }
        path.reverse();
        path
    }

    /// The request keys carried by uncommitted blocks from `id` back, and whether any of them
    /// holds a batch (so a leader knows its chain still needs rounds to commit).
    pub(super) fn uncommitted_requests(&self, id: &Digest, auth: RequestAuth) -> (HashSet<RequestKey>, bool) {
        let mut keys = HashSet::new();
        let mut carries = false;
        for stored in self.path_to_committed(id) {
            carries |= !stored.batch.requests.is_empty();
            keys.extend(stored.batch.requests.iter().map(|r| r.key(auth)));
        }
        (keys, carries)
    }

    /// `id` at `round` is committed.
    pub(super) fn mark_committed(&mut self, id: Digest, round: u64) {
        if round > self.committed_round {
            self.committed_round = round;
            self.committed_id = id;
        }
    }

    /// Drops committed blocks whose batches the log has executed.
    pub(super) fn prune(&mut self, executed: u64) {
        let blocks = &mut self.blocks;
        let committed_round = self.committed_round;
        self.by_round.retain(|round, id| {
            let keep = *round > committed_round || blocks.get(id).is_some_and(|b| b.block.seq > executed);
            if !keep {
                blocks.remove(id);
            }
            keep
        });
    }
}
