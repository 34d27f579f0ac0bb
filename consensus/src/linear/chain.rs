//! The blocks a replica holds above its last committed one, and the walk that turns a
//! two-chain into a committed prefix.

use std::collections::{BTreeMap, HashMap, HashSet};

use ordinal_crypto::{Digest, ReplicaId, Signature};

use crate::batch::Batch;
use crate::config::RequestAuth;
use crate::error::Invalid;
use crate::messages::{Block, BlockHeader, BlockVote};
use crate::request::RequestKey;

/// A block with its batch and its proposer's signature (to serve it to replicas that lack it).
#[derive(Clone, Debug)]
pub(super) struct StoredBlock {
    pub(super) block: Block,
    pub(super) batch: Batch,
    pub(super) proposer: ReplicaId,
    pub(super) signature: Signature,
    /// The parent's header, when the block extends the round just before: it names the
    /// proposer, so a block served to a peer travels with it.
    pub(super) parent_header: Option<BlockHeader>,
}

/// Uncommitted blocks by id, at most one per round and proposer (the first seen: a second one
/// from the same proposer is equivocation), and at most `capacity` of them. A round can have
/// two valid proposers: the leader its certified parent named and, once the round before timed
/// out, the round-robin leader (see [`crate::leader`]); voters vote for one at most.
#[derive(Clone, Debug)]
pub(super) struct Chain {
    blocks: HashMap<Digest, StoredBlock>,
    by_round: BTreeMap<(u64, ReplicaId), Digest>,
    capacity: usize,
    /// The log's last executed sequence number, as of the last prune.
    executed: u64,
    /// The last committed block's round and id (the epoch's genesis: round 0).
    pub(super) committed_round: u64,
    pub(super) committed_id: Digest,
    /// The id of the epoch's genesis block, where every walk back ends.
    genesis: Digest,
}

impl Chain {
    /// An empty chain growing from `genesis`, the genesis statement of its epoch.
    pub(super) fn new(capacity: usize, genesis: &BlockVote) -> Self {
        Chain {
            blocks: HashMap::new(),
            by_round: BTreeMap::new(),
            capacity: capacity.max(4),
            executed: genesis.seq,
            committed_round: 0,
            committed_id: genesis.block,
            genesis: genesis.block,
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
    pub(super) fn insert(
        &mut self,
        block: Block,
        batch: Batch,
        proposer: ReplicaId,
        signature: Signature,
        parent_header: Option<BlockHeader>,
        keep_from: &Digest,
    ) -> Result<(), Invalid> {
        if block.round <= self.committed_round && batch.requests().is_empty() {
            return Ok(());
        }
        let id = block.id();
        let key = (block.round, proposer);
        if let Some(existing) = self.by_round.get(&key) {
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
        self.by_round.insert(key, id);
        self.blocks.insert(
            id,
            StoredBlock {
                block,
                batch,
                proposer,
                signature,
                parent_header,
            },
        );
        while self.by_round.len() > self.capacity {
            self.evict_one(keep_from);
        }
        Ok(())
    }

    /// Makes room: the oldest block off the chain that ends at `keep_from` (an abandoned
    /// fork) goes first, then the oldest block whose batch the log no longer needs, and only
    /// then the oldest block at all. The chain's own blocks stay as long as possible: their
    /// headers prove ancestry, and state transfer can only serve batches someone executed.
    fn evict_one(&mut self, keep_from: &Digest) {
        let executed = self.executed;
        let on_chain: HashSet<Digest> = self
            .path_to_committed(keep_from)
            .iter()
            .map(|stored| stored.block.id())
            .collect();
        let victim = self
            .by_round
            .iter()
            .find(|(_, id)| !on_chain.contains(*id))
            .or_else(|| {
                self.by_round.iter().find(|(_, id)| {
                    self.blocks
                        .get(*id)
                        .is_none_or(|b| b.batch.requests().is_empty() || b.block.seq <= executed)
                })
            })
            .or_else(|| self.by_round.iter().next())
            .map(|(key, _)| *key);
        if let Some(key) = victim {
            if let Some(id) = self.by_round.remove(&key) {
                self.blocks.remove(&id);
            }
        }
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

    /// The first block this replica lacks on the way back from `id` (whose certificate names
    /// `seq`) to the batches the log has executed (`executed`), with the sequence number its
    /// child's certificate names.
    pub(super) fn first_missing(&self, id: &Digest, seq: u64, executed: u64) -> Option<(Digest, u64)> {
        let genesis = self.genesis;
        let mut cursor = *id;
        let mut cursor_seq = seq;
        while cursor != genesis && cursor_seq > executed {
            match self.blocks.get(&cursor) {
                None => return Some((cursor, cursor_seq)),
                Some(stored) => {
                    cursor = stored.block.parent();
                    cursor_seq = stored.block.justify.statement.seq;
                }
            }
        }
        None
    }

    /// Whether an uncommitted block from `id` back carries a batch (the chain still needs
    /// rounds to commit it).
    pub(super) fn carries_uncommitted_batch(&self, id: &Digest) -> bool {
        let mut cursor = *id;
        while cursor != self.committed_id {
            match self.blocks.get(&cursor) {
                Some(stored) if stored.block.round > self.committed_round => {
                    if !stored.batch.requests().is_empty() {
                        return true;
                    }
                    cursor = stored.block.parent();
                }
                _ => return false,
            }
        }
        false
    }

    /// The request keys carried by blocks from `id` (whose certificate names `seq`) back to
    /// the executed log (`executed`), or None if one of those blocks is missing here; and
    /// whether an uncommitted one holds a batch (so a leader knows its chain still needs rounds
    /// to commit).
    pub(super) fn uncommitted_requests(
        &self,
        id: &Digest,
        seq: u64,
        executed: u64,
        auth: RequestAuth,
    ) -> (Option<HashSet<RequestKey>>, bool) {
        let carries = self
            .path_to_committed(id)
            .iter()
            .any(|stored| !stored.batch.requests().is_empty());
        // A committed block's batch reaches the log only with its commit certificate, a round
        // or two later: until then its requests still wait in the pool, and proposing them
        // again would order them twice (execution would skip the copies, but they would fill
        // batches and the log).
        let mut keys = HashSet::new();
        // Whether a block is executed is decided from the sequence number its child's
        // certificate names, before looking it up: executed blocks are pruned (and a restarted
        // replica holds none), and must not count as missing.
        let genesis = self.genesis;
        let mut cursor = *id;
        let mut cursor_seq = seq;
        while cursor != genesis && cursor_seq > executed {
            let Some(stored) = self.blocks.get(&cursor) else {
                return (None, carries);
            };
            keys.extend(stored.batch.requests().iter().map(|r| r.key(auth)));
            cursor = stored.block.parent();
            cursor_seq = stored.block.justify.statement.seq;
        }
        (Some(keys), carries)
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
        self.executed = executed;
        let blocks = &mut self.blocks;
        let committed_round = self.committed_round;
        self.by_round.retain(|(round, _), id| {
            let keep = *round > committed_round || blocks.get(id).is_some_and(|b| b.block.seq > executed);
            if !keep {
                blocks.remove(id);
            }
            keep
        });
    }
}
