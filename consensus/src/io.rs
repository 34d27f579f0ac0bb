//! The seam between the protocol and the world: closed enums of what goes in and what comes
//! out, and the trait both protocols implement.

use std::time::Duration;

use ordinal_crypto::ReplicaId;

use crate::batch::CommittedBatch;
use crate::error::Invalid;
use crate::messages::{Message, VerifiedMessage};
use crate::request::{Position, Request, RequestKey};
use crate::safety::SafetyUpdate;

/// Time as the host measures it: the duration since an origin of its choosing (the node uses
/// its start, the simulator its virtual clock). The core never reads a clock.
pub type Time = Duration;

/// One input to the state machine.
// Inputs are built and consumed at once, one at a time: boxing the verified message would add
// an allocation per message to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Input {
    /// A verified message from replica `from` (the transport authenticated the peer; the
    /// signatures inside were checked by [`Message::verify`]).
    Message {
        /// The authenticated sender.
        from: ReplicaId,
        /// The message.
        message: VerifiedMessage,
    },
    /// A client request that passed [`Message::verify`] as `Message::Request`.
    Request(Request),
    /// Messages from replica `from` failed the host's verification (they did not decode, or a
    /// signature or certificate in them did not verify): they count against `from`'s
    /// reliability. Hosts report them in bulk (`count` since the last report), so a flood of
    /// garbage costs the protocol one input, not one per frame.
    Refused {
        /// The authenticated sender.
        from: ReplicaId,
        /// How many were refused.
        count: u64,
    },
    /// A PREPARE or COMMIT from the authenticated replica `from`, signed by it (as it claims),
    /// for a statement this replica announced with [`Action::Settled`]; the host did not check
    /// its signature (see [`crate::late`]). The replica credits it only where its own state
    /// still agrees; otherwise it verifies the vote and handles it as [`Input::Message`].
    LateVote {
        /// The authenticated sender.
        from: ReplicaId,
        /// The vote, signature unchecked.
        vote: crate::late::LateVote,
    },
    /// The deadline given by [`Protocol::poll_timeout`] has passed.
    Timeout,
    /// Propose the next weight epoch with these weights (one per member, in id order): the
    /// replica signs a weight change and submits it for ordering like a request. Every
    /// replica validates it when it executes (`crate::epoch`); a refused change does nothing.
    ProposeWeights {
        /// The weights.
        weights: Vec<u64>,
    },
    /// Every batch up to and including `seq` is durable in the host's store.
    Persisted {
        /// Highest durable sequence number.
        seq: u64,
    },
}

/// One thing the host must do. The host performs actions **in order**:
/// a [`Action::PersistSafety`] is a barrier, and no message that follows it in the same list
/// may leave before the update is durable. That is how a restarted replica never contradicts
/// a vote it sent.
#[derive(Clone, Debug)]
pub enum Action {
    /// Send to one replica.
    Send {
        /// The recipient.
        to: ReplicaId,
        /// The message.
        message: Message,
    },
    /// Send to every other replica.
    Broadcast {
        /// The message.
        message: Message,
    },
    /// Make a safety update durable before executing any later action.
    PersistSafety(SafetyUpdate),
    /// Store a committed batch at its sequence number (batches arrive in order, each once).
    /// When it is durable, report [`Input::Persisted`]; receipts wait for that.
    PersistBatch(CommittedBatch),
    /// Tell the client that sent `key` where it was ordered (the batch at `position.seq` is
    /// durable): build the receipt from the stored batch and its certificate.
    Reply {
        /// The request.
        key: RequestKey,
        /// Where it was ordered.
        position: Position,
    },
    /// Send replica `to` the stored committed batches `from_seq..=to_seq` (at most the
    /// configured chunk) as a [`Message::Batches`].
    ServeBatches {
        /// The recipient.
        to: ReplicaId,
        /// First sequence number.
        from_seq: u64,
        /// Last sequence number.
        to_seq: u64,
    },
    /// This replica holds a certificate for the statement: a host may hand later votes for it
    /// in as [`Input::LateVote`] without checking their signatures. Only a hint: performing it
    /// late, or not at all, changes nothing but the work the host does.
    Settled(crate::late::Settled),
}

/// A snapshot of a replica's progress, for status commands and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Current view.
    pub view: u64,
    /// The weight epoch in force at the next sequence number to execute.
    pub weight_epoch: u64,
    /// The view's leader.
    pub leader: ReplicaId,
    /// Whether a view change is under way.
    pub changing_view: bool,
    /// Highest executed (committed and applied) sequence number.
    pub committed_seq: u64,
    /// Latest stable checkpoint.
    pub stable_seq: u64,
    /// View changes this replica has started or joined since it was created.
    pub view_changes: u64,
    /// Client requests admitted and waiting to be ordered: with no commit progress, a
    /// non-zero value means the cluster is stuck, not idle.
    pub pending_requests: usize,
}

/// How many entries the replica holds in each bounded structure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Protocol slots (per sequence number; PBFT).
    pub slots: usize,
    /// Blocks held (linear mode): the window's batches plus empty or abandoned blocks.
    pub blocks: usize,
    /// Prepared certificates kept for view changes.
    pub prepared: usize,
    /// Committed batches waiting for earlier ones.
    pub committed_unexecuted: usize,
    /// Checkpoint vote sets.
    pub checkpoints: usize,
    /// Requests waiting to be ordered.
    pub pending_requests: usize,
    /// Their payload bytes.
    pub pending_bytes: usize,
    /// The primary's proposal queue (keys; may briefly hold already-ordered ones).
    pub queued: usize,
    /// View-change messages held.
    pub view_changes: usize,
    /// Phase messages held for a view not installed yet (PBFT).
    pub early_messages: usize,
    /// Batches executed but not yet known durable.
    pub unpersisted: usize,
    /// De-duplication table entries.
    pub client_entries: usize,
}

impl Footprint {
    /// The bound implied by the configuration; a footprint beyond it is a leak.
    pub fn within(&self, config: &crate::ProtocolConfig, replicas: usize, clients: usize) -> bool {
        let window = config.log_window as usize;
        self.slots <= window
            && self.blocks <= crate::linear::chain_capacity(config)
            && self.prepared <= window
            && self.committed_unexecuted <= 2 * window
            && self.checkpoints <= window / config.checkpoint_interval.max(1) as usize + 1
            && self.pending_requests <= config.max_pending_requests
            && self.pending_bytes <= config.max_pending_bytes
            && self.queued <= 2 * config.max_pending_requests + config.max_batch_requests
            && self.view_changes <= 2 * replicas
            && self.early_messages <= replicas * crate::pbft::early_limit(config)
            && self.unpersisted <= 2 * window
            && self.client_entries <= clients * 2 * config.client_nonce_window as usize
    }
}

/// What the host drives: a protocol as a pure state machine.
pub trait Protocol {
    /// Feeds one input at time `now`. An `Err` means the input was refused: the host counts it
    /// and drops it. A refused message may still leave a trace (that its sender is in a higher
    /// view, or that two proposals conflict), never a vote or a commit.
    fn handle(&mut self, now: Time, input: Input) -> Result<(), Invalid>;
    /// When [`Input::Timeout`] should next be fed, if ever. Hosts ask again after every round
    /// of inputs and feed a timeout that is already due before waiting for more: a PBFT
    /// primary's partial batch leaves only on a timer input (it may be due at once, with the
    /// inputs the host already held included in it).
    fn poll_timeout(&self) -> Option<Time>;
    /// Takes the actions produced so far, in the order they must be performed.
    fn drain_actions(&mut self) -> Vec<Action>;
    /// Progress snapshot.
    fn status(&self) -> Status;
    /// Sizes of the bounded structures.
    fn footprint(&self) -> Footprint;
    /// What this replica measured about each peer, in id order (itself excluded).
    fn peers(&self) -> Vec<crate::reliability::PeerReport>;
    /// The weight schedule the replica derived from its log: what the host verifies incoming
    /// messages with, and what it reports as the current weights.
    fn committees(&self) -> &crate::epoch::Committees;
}
