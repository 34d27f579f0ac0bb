//! Why an input was refused. Every refusal names the fault and its numbers; the host counts it
//! (later as `ordinal_invalid_messages_total{reason}`) and drops the input.

use ordinal_crypto::{CryptoError, Digest, ReplicaId};
use thiserror::Error;

/// An input the core refused. Never fatal: the replica's state is unchanged.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Invalid {
    /// A certificate for a sequence number whose weights this replica's log does not fix
    /// yet (it is behind); not the sender's fault.
    #[error("weights at {seq} not known yet")]
    UnknownEpoch {
        /// The sequence number.
        seq: u64,
    },
    /// Linear mode: a message from an epoch this replica has not entered yet (its log has not
    /// reached the epoch's first sequence number). Not the sender's fault: this replica is
    /// behind, and catches up by state transfer.
    #[error("message of epoch {epoch}, which this replica has not entered yet")]
    FutureEpoch {
        /// The message's epoch.
        epoch: u64,
    },
    /// A signature, signer or certificate failed.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// Bytes that do not decode as a message.
    #[error("undecodable message")]
    Malformed,
    /// A request payload above the limit.
    #[error("request of {bytes} bytes over the {limit} byte limit")]
    RequestTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A request without a signature in signed mode.
    #[error("request is not signed")]
    UnsignedRequest,
    /// A request whose client signature does not verify.
    #[error("bad client signature")]
    BadClientSignature,
    /// A batch over the configured limits.
    #[error("batch of {requests} requests / {bytes} bytes over the limits")]
    BatchTooLarge {
        /// Requests.
        requests: usize,
        /// Payload bytes.
        bytes: usize,
    },
    /// The batch does not hash to the digest it claims.
    #[error("batch digest mismatch at seq {seq}")]
    DigestMismatch {
        /// The sequence number.
        seq: u64,
    },
    /// A normal-case message from another view.
    #[error("message for view {got}, replica is in view {current}")]
    WrongView {
        /// The replica's view.
        current: u64,
        /// The message's.
        got: u64,
    },
    /// A proposal from someone other than the view's primary.
    #[error("proposal in view {view} from {got}, primary is {expected}")]
    WrongLeader {
        /// The view.
        view: u64,
        /// Its primary.
        expected: ReplicaId,
        /// The sender.
        got: ReplicaId,
    },
    /// A sequence number outside the watermarks.
    #[error("seq {seq} outside the window ({low}, {high}]")]
    OutsideWindow {
        /// The sequence number.
        seq: u64,
        /// Low watermark.
        low: u64,
        /// High watermark.
        high: u64,
    },
    /// A second, different proposal for one (view, seq).
    #[error("conflicting proposal at view {view} seq {seq}")]
    Equivocation {
        /// View.
        view: u64,
        /// Sequence number.
        seq: u64,
        /// The digest accepted first.
        first: Digest,
        /// The conflicting digest.
        second: Digest,
    },
    /// A second, different vote from one replica for one (view, seq).
    #[error("replica {from} voted twice at view {view} seq {seq}")]
    DuplicateVote {
        /// The voter.
        from: ReplicaId,
        /// View.
        view: u64,
        /// Sequence number.
        seq: u64,
    },
    /// A view-change or new-view message that does not hold together.
    #[error("bad view change: {0}")]
    BadViewChange(&'static str),
    /// A message of the other protocol than the one this cluster runs.
    #[error("message of another protocol")]
    WrongProtocol,
    /// A linear-mode block, quorum certificate or timeout certificate that does not hold
    /// together.
    #[error("bad block or certificate: {0}")]
    BadBlock(&'static str),
    /// A state-transfer batch that does not match its certificate or the requested range.
    #[error("bad state transfer batch at seq {seq}: {reason}")]
    BadTransfer {
        /// Sequence number.
        seq: u64,
        /// Why.
        reason: &'static str,
    },
    /// The replica holds as many pending requests as it may.
    #[error("pending request queue is full")]
    Overloaded,
    /// A request already ordered (its position is re-sent) or too old to tell apart.
    #[error("request already ordered or stale")]
    Duplicate,
    /// The input is old news (a view or sequence number already passed). Not a fault.
    #[error("stale message")]
    Stale,
}

impl Invalid {
    /// Whether the replica that delivered the input is to blame: a fault, except an
    /// equivocation, which may arrive relayed and is charged to its signer where it is found.
    pub fn blames_sender(&self) -> bool {
        self.is_fault() && !matches!(self, Invalid::Equivocation { .. })
    }

    /// Whether the sender broke a rule. Old news, a message from a view or window this
    /// replica has not reached, and a full queue happen between correct replicas too; they do
    /// not count against a peer's reliability.
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            Invalid::WrongView { .. }
                | Invalid::OutsideWindow { .. }
                | Invalid::Overloaded
                | Invalid::Duplicate
                | Invalid::Stale
                | Invalid::UnknownEpoch { .. }
                | Invalid::FutureEpoch { .. }
        )
    }

    /// A short label for metrics (`ordinal_invalid_messages_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Crypto(_) => "crypto",
            Invalid::UnknownEpoch { .. } => "unknown_epoch",
            Invalid::FutureEpoch { .. } => "future_epoch",
            Invalid::Malformed => "malformed",
            Invalid::RequestTooLarge { .. } => "request_too_large",
            Invalid::UnsignedRequest => "unsigned_request",
            Invalid::BadClientSignature => "bad_client_signature",
            Invalid::BatchTooLarge { .. } => "batch_too_large",
            Invalid::DigestMismatch { .. } => "digest_mismatch",
            Invalid::WrongView { .. } => "wrong_view",
            Invalid::WrongLeader { .. } => "wrong_leader",
            Invalid::OutsideWindow { .. } => "outside_window",
            Invalid::Equivocation { .. } => "equivocation",
            Invalid::DuplicateVote { .. } => "duplicate_vote",
            Invalid::BadViewChange(_) => "bad_view_change",
            Invalid::BadBlock(_) => "bad_block",
            Invalid::WrongProtocol => "wrong_protocol",
            Invalid::BadTransfer { .. } => "bad_transfer",
            Invalid::Overloaded => "overloaded",
            Invalid::Duplicate => "duplicate",
            Invalid::Stale => "stale",
        }
    }
}
