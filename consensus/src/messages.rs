//! What replicas say to each other, and the checks that turn wire messages into verified ones.
//!
//! Verification here needs only the committee and the configuration, never replica state, so
//! a host can run it on a worker pool before handing the result to the state machine. Checks
//! that depend on state (view, watermarks, what was already accepted) live in the protocol.

use ordinal_crypto::{
    Certificate, Committee, Digest, GroupVerdicts, Pending, ReplicaId, Signable, SignatureGroup, Signed,
    Verified,
};
use serde::{Deserialize, Serialize};

use crate::admitted::{same_as_admitted, AdmittedRequests, NoneAdmitted};
use crate::batch::{Batch, CommittedBatch};
use crate::config::ProtocolConfig;
use crate::epoch::Weights;
use crate::error::Invalid;
use crate::leader::{epoch_round, fallback_leader, leader_of, opening_leader, successor};
use crate::request::{verify_requests, Request};

/// The primary's proposal of a batch digest at (view, seq). PBFT 4.2, PRE-PREPARE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// View.
    pub view: u64,
    /// Sequence number.
    pub seq: u64,
    /// Batch digest.
    pub digest: Digest,
}

impl Signable for Proposal {
    const DOMAIN: &'static str = "ordinal/pbft/pre-prepare/v1";
}

/// A replica's agreement with a proposal. PBFT 4.2, PREPARE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PrepareVote {
    /// View.
    pub view: u64,
    /// Sequence number.
    pub seq: u64,
    /// Batch digest.
    pub digest: Digest,
}

impl Signable for PrepareVote {
    const DOMAIN: &'static str = "ordinal/pbft/prepare/v1";
}

/// A vote to commit (view, seq, digest). A quorum of them is the commit certificate that
/// receipts carry; both protocols sign this same statement when they commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommitVote {
    /// View.
    pub view: u64,
    /// Sequence number.
    pub seq: u64,
    /// Batch digest.
    pub digest: Digest,
}

impl Signable for CommitVote {
    const DOMAIN: &'static str = "ordinal/commit/v1";
}

/// A replica's statement that the ordered log up to `seq` hashes to `log_digest`. PBFT 4.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CheckpointVote {
    /// The checkpoint's sequence number.
    pub seq: u64,
    /// The running hash of the ordered log through `seq`.
    pub log_digest: Digest,
}

impl Signable for CheckpointVote {
    const DOMAIN: &'static str = "ordinal/checkpoint/v1";
}

/// A stable checkpoint and its proof. Sequence number 0 is the empty log and needs no proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableCheckpoint {
    /// Sequence number.
    pub seq: u64,
    /// Running log hash at `seq`.
    pub log_digest: Digest,
    /// A quorum of checkpoint votes; `None` only for the genesis checkpoint.
    pub certificate: Option<Certificate<CheckpointVote>>,
}

impl StableCheckpoint {
    /// The empty log.
    pub fn genesis() -> Self {
        StableCheckpoint {
            seq: 0,
            log_digest: genesis_log_digest(),
            certificate: None,
        }
    }

    /// Checks the proof, counted with the weights in force at its sequence number.
    pub fn verify(&self, weights: &dyn Weights) -> Result<(), Invalid> {
        match &self.certificate {
            None if self.seq == 0 && self.log_digest == genesis_log_digest() => Ok(()),
            None => Err(Invalid::BadViewChange("checkpoint without certificate")),
            Some(cert) => {
                if cert.statement.seq != self.seq || cert.statement.log_digest != self.log_digest {
                    return Err(Invalid::BadViewChange(
                        "checkpoint certificate for another statement",
                    ));
                }
                cert.verify(committee_at(weights, self.seq)?)?;
                Ok(())
            }
        }
    }
}

/// The committee counting votes at `seq`, or a refusal that does not blame the sender: this
/// replica's log is too far behind to know the weights there yet.
pub fn committee_at(weights: &dyn Weights, seq: u64) -> Result<&Committee, Invalid> {
    weights.for_seq(seq).ok_or(Invalid::UnknownEpoch { seq })
}

/// The running hash of the empty log.
pub fn genesis_log_digest() -> Digest {
    Digest::of(b"ordinal/log/genesis")
}

/// The running hash after appending batch `digest` at `seq`.
pub fn extend_log_digest(previous: &Digest, seq: u64, digest: &Digest) -> Digest {
    Digest::of_parts(&[
        b"ordinal/log/v1",
        previous.as_bytes(),
        &seq.to_le_bytes(),
        digest.as_bytes(),
    ])
}

/// A prepared certificate with the batch it certifies: evidence carried in a VIEW-CHANGE so
/// that the new primary can re-propose the batch. PBFT 4.4, the P set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedProof {
    /// A quorum of PREPARE votes for (view, seq, digest).
    pub certificate: Certificate<PrepareVote>,
    /// The batch with that digest.
    pub batch: Batch,
}

impl PreparedProof {
    /// The sequence number.
    pub fn seq(&self) -> u64 {
        self.certificate.statement.seq
    }

    /// The view it prepared in.
    pub fn view(&self) -> u64 {
        self.certificate.statement.view
    }
}

/// A replica's request to move to `new_view`, with what it knows. PBFT 4.4, VIEW-CHANGE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    /// The view it wants.
    pub new_view: u64,
    /// Its latest stable checkpoint.
    pub stable: StableCheckpoint,
    /// Its highest-view prepared certificate for each sequence number above the checkpoint.
    pub prepared: Vec<PreparedProof>,
}

impl Signable for ViewChange {
    const DOMAIN: &'static str = "ordinal/pbft/view-change/v1";
}

/// The new primary's announcement of `view`, carrying the quorum of VIEW-CHANGE messages it
/// starts from. The batches the new view re-proposes are a deterministic function of those
/// messages ([`crate::pbft::view_change::NewViewPlan`]), so every replica recomputes them
/// instead of trusting a list. PBFT 4.4, NEW-VIEW.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView {
    /// The view being started.
    pub view: u64,
    /// A quorum of VIEW-CHANGE messages for `view`, from distinct replicas.
    pub view_changes: Vec<Signed<ViewChange>>,
}

impl Signable for NewView {
    const DOMAIN: &'static str = "ordinal/pbft/new-view/v1";
}

/// The highest round a linear-mode message may name. No cluster gets near it (a round a
/// millisecond for 10^12 years); peer-supplied rounds above it are refused at verification, so
/// round arithmetic never overflows.
pub const MAX_ROUND: u64 = u64::MAX >> 8;

/// The linear mode's vote for a block: its epoch, round, id and sequence number. A quorum of
/// them is the block's quorum certificate ([`QuorumCert`]); the sequence number lets a child's
/// proposer and voters check the child's number without holding the parent.
///
/// Each weight or membership epoch runs its own chain, counted with that epoch's committee
/// and with rounds from 1 (DiemBFT's reconfiguration): the epoch is in every signed statement,
/// so no vote or timeout of one epoch can count in another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockVote {
    /// The epoch whose chain the block is in.
    pub epoch: u64,
    /// The block's round.
    pub round: u64,
    /// The block's id ([`Block::id`]).
    pub block: Digest,
    /// The highest sequence number in the block's chain.
    pub seq: u64,
}

impl Signable for BlockVote {
    const DOMAIN: &'static str = "ordinal/linear/vote/v2";
}

impl BlockVote {
    /// The statement the genesis certificate certifies: epoch 0, round 0, seq 0.
    pub fn genesis() -> Self {
        Self::epoch_genesis(0, 1)
    }

    /// What the chain of the epoch starting at sequence number `start` grows from: round 0,
    /// a block id of its own, and the sequence number before the epoch's first.
    pub fn epoch_genesis(epoch: u64, start: u64) -> Self {
        let block = if epoch == 0 {
            Digest::of(b"ordinal/linear/genesis")
        } else {
            Digest::of_parts(&[b"ordinal/linear/genesis", &epoch.to_le_bytes()])
        };
        BlockVote {
            epoch,
            round: 0,
            block,
            seq: Self::epoch_genesis_seq(start),
        }
    }

    /// The sequence number an epoch's genesis names: the one before the epoch's first.
    pub fn epoch_genesis_seq(start: u64) -> u64 {
        start.saturating_sub(1)
    }
}

/// A quorum certificate for a block (HotStuff's QC).
pub type QuorumCert = Certificate<BlockVote>;

/// The certificate every chain starts from; it carries no votes.
pub fn genesis_qc() -> QuorumCert {
    epoch_genesis_qc(0, 1)
}

/// The certificate epoch `epoch`'s chain starts from: it needs no votes, because the epoch
/// begins only where the log executed through `start - 1`, which the previous epoch's commit
/// certificates fixed.
pub fn epoch_genesis_qc(epoch: u64, start: u64) -> QuorumCert {
    Certificate {
        statement: BlockVote::epoch_genesis(epoch, start),
        epoch,
        votes: Vec::new(),
    }
}

/// Checks a quorum certificate against the committee of its epoch, which starts at sequence
/// number `start`; the epoch's genesis certificate is valid without votes.
pub fn verify_qc(qc: &QuorumCert, committee: &Committee, start: u64) -> Result<(), Invalid> {
    let epoch = committee.epoch();
    if qc.statement.epoch != epoch {
        return Err(Invalid::BadBlock("certificate of another epoch"));
    }
    if qc.statement.round == 0 {
        if *qc == epoch_genesis_qc(epoch, start) {
            return Ok(());
        }
        return Err(Invalid::BadBlock(
            "round-0 certificate other than the epoch's genesis",
        ));
    }
    qc.verify(committee)?;
    Ok(())
}

/// A replica's statement that it gives up on `round`, with the round of the highest quorum
/// certificate it holds (Jolteon's timeout message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeoutVote {
    /// The epoch whose round it is.
    pub epoch: u64,
    /// The round given up.
    pub round: u64,
    /// The round of the sender's highest quorum certificate.
    pub high_qc_round: u64,
}

impl Signable for TimeoutVote {
    const DOMAIN: &'static str = "ordinal/linear/timeout/v2";
}

/// A quorum of timeout votes for one round: it lets the next leader propose without a
/// certificate for the round before, and binds it to extend a certificate at least as high as
/// every signer's (Jolteon's TC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutCert {
    /// The epoch of the round.
    pub epoch: u64,
    /// The round timed out.
    pub round: u64,
    /// One signed timeout per signer, all for `round`.
    pub timeouts: Vec<Signed<TimeoutVote>>,
}

impl TimeoutCert {
    /// The highest certificate round any signer reported: a proposal justified by this TC
    /// must extend a certificate at least this high.
    pub fn max_high_qc_round(&self) -> u64 {
        self.timeouts
            .iter()
            .map(|t| t.body.high_qc_round)
            .max()
            .unwrap_or(0)
    }

    /// Checks the epoch, rounds, distinct signers, signatures and the quorum of the epoch's
    /// committee.
    pub fn verify(&self, committee: &Committee) -> Result<(), Invalid> {
        if self.epoch != committee.epoch() {
            return Err(Invalid::BadBlock("timeout certificate of another epoch"));
        }
        if self.timeouts.len() > committee.size() {
            return Err(Invalid::BadBlock("more timeouts than replicas"));
        }
        let mut signers: Vec<ReplicaId> = Vec::with_capacity(self.timeouts.len());
        for timeout in &self.timeouts {
            if timeout.body.epoch != self.epoch
                || timeout.body.round != self.round
                || timeout.body.high_qc_round >= self.round
            {
                return Err(Invalid::BadBlock("timeout for another round"));
            }
            if signers.contains(&timeout.signer) {
                return Err(Invalid::BadBlock("two timeouts from one replica"));
            }
            signers.push(timeout.signer);
        }
        if !committee.is_quorum(signers.iter().copied()) {
            return Err(Invalid::BadBlock("timeouts do not reach a quorum"));
        }
        for result in Signed::verify_all(self.timeouts.clone(), committee) {
            result?;
        }
        Ok(())
    }
}

/// What a block's id covers: enough to follow a chain of ids back through ancestors without
/// holding their batches or certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// Epoch.
    pub epoch: u64,
    /// Round.
    pub round: u64,
    /// Sequence number.
    pub seq: u64,
    /// Batch digest.
    pub batch_digest: Digest,
    /// The parent's id.
    pub parent: Digest,
    /// The parent's round.
    pub parent_round: u64,
    /// Who leads the next round if this block is certified in its own round
    /// ([`crate::leader::successor`]).
    pub next_leader: ReplicaId,
    /// The proposers of this block and its certified predecessors, newest first, at most f
    /// ([`Block::recent_leaders`]).
    pub recent_leaders: Vec<ReplicaId>,
}

/// The recent leaders as the block id hashes them: their count, then each id.
fn recent_leaders_bytes(leaders: &[ReplicaId]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(2 + 2 * leaders.len());
    bytes.extend_from_slice(&(leaders.len() as u16).to_le_bytes());
    for leader in leaders {
        bytes.extend_from_slice(&leader.0.to_le_bytes());
    }
    bytes
}

impl BlockHeader {
    /// The id of the block with this header. The timeout certificate is left out: it only
    /// justifies the round.
    pub fn id(&self) -> Digest {
        Digest::of_parts(&[
            b"ordinal/linear/block/v2",
            &self.epoch.to_le_bytes(),
            &self.round.to_le_bytes(),
            &self.seq.to_le_bytes(),
            self.batch_digest.as_bytes(),
            self.parent.as_bytes(),
            &self.parent_round.to_le_bytes(),
            &self.next_leader.0.to_le_bytes(),
            &recent_leaders_bytes(&self.recent_leaders),
        ])
    }

    /// Whether the block carries requests (an empty batch has the empty Merkle root).
    pub fn carries_batch(&self) -> bool {
        self.batch_digest != Batch::default().digest()
    }
}

/// A linear-mode block: a batch (by digest) at a round, extending the block its certificate
/// certifies. HotStuff's node, with Jolteon's optional timeout certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The epoch whose chain it extends: its votes, certificate and timeouts count with that
    /// epoch's committee. A block with a batch has its sequence number in the epoch.
    pub epoch: u64,
    /// The round it is proposed in.
    pub round: u64,
    /// Its sequence number: the parent's, plus one if the batch is not empty. Empty blocks
    /// only drive commits and take no place in the log.
    pub seq: u64,
    /// The batch digest.
    pub batch_digest: Digest,
    /// The certificate of the parent.
    pub justify: QuorumCert,
    /// Present when `justify` is not for the round just before: the certificate that the
    /// round before timed out.
    pub timeout: Option<TimeoutCert>,
    /// Who leads the next round if this block is certified in its own round: fixed by the
    /// proposer and the signers of `timeout` or else `justify` ([`Block::successor_for`]),
    /// checked by voters.
    pub next_leader: ReplicaId,
    /// This block's proposer, then the parent's recent leaders when it extends the round just
    /// before, at most f in all: they may not be named next. The proposer picks which quorum
    /// of votes its certificate holds, so without this up to f colluding replicas could hand
    /// the lead among themselves for ever; with it, one of any f+1 leaders in a row is correct.
    pub recent_leaders: Vec<ReplicaId>,
}

impl Signable for Block {
    const DOMAIN: &'static str = "ordinal/linear/proposal/v1";
}

impl Block {
    /// The block's header: what its id covers.
    pub fn header(&self) -> BlockHeader {
        BlockHeader {
            epoch: self.epoch,
            round: self.round,
            seq: self.seq,
            batch_digest: self.batch_digest,
            parent: self.justify.statement.block,
            parent_round: self.justify.statement.round,
            next_leader: self.next_leader,
            recent_leaders: self.recent_leaders.clone(),
        }
    }

    /// The block's id: what votes name.
    pub fn id(&self) -> Digest {
        self.header().id()
    }

    /// The parent's id.
    pub fn parent(&self) -> Digest {
        self.justify.statement.block
    }

    /// Who may propose this block: after a timeout certificate, the round-robin leader of its
    /// round or the signer after it ([`crate::leader::fallback_leader`]); otherwise the leader
    /// its parent named, from the parent's header (`None` if it is not at hand). An epoch's
    /// genesis names the round-robin leader among the members of the epoch before too
    /// ([`crate::leader::opening_leader`]; `previous` is that epoch's committee).
    pub fn expected_proposer(
        &self,
        parent: Option<&BlockHeader>,
        committee: &Committee,
        previous: Option<&Committee>,
    ) -> Option<ReplicaId> {
        let justify = &self.justify.statement;
        if justify.round + 1 != self.round {
            return Some(match &self.timeout {
                Some(tc) => fallback_leader(
                    epoch_round(self.epoch, self.round),
                    tc.timeouts.iter().map(|t| t.signer),
                    committee,
                ),
                None => leader_of(epoch_round(self.epoch, self.round), committee),
            });
        }
        if justify.round == 0 {
            return Some(opening_leader(
                epoch_round(self.epoch, self.round),
                committee,
                previous,
            ));
        }
        parent
            .filter(|header| header.id() == justify.block)
            .map(|header| header.next_leader)
    }

    /// The leader that `proposer`'s block at this round must name for the next round: chosen
    /// among the signers of its timeout certificate if it has one (they were alive to give up
    /// on the round before; the certificate it extends may be older than a crash), else of
    /// the certificate it extends.
    pub fn successor_for(&self, proposer: ReplicaId, committee: &Committee) -> ReplicaId {
        let excluded = &self.recent_leaders;
        match &self.timeout {
            Some(tc) => successor(
                proposer,
                tc.timeouts.iter().map(|t| t.signer),
                excluded,
                committee,
            ),
            None => successor(
                proposer,
                self.justify.votes.iter().map(|(id, _)| *id),
                excluded,
                committee,
            ),
        }
    }

    /// The recent leaders `proposer`'s block at this round must carry: itself, then (when it
    /// extends the round just before, past genesis) its parent's, at most f in all. `None` when
    /// the parent's header is needed and not at hand.
    pub fn expected_recent_leaders(
        &self,
        proposer: ReplicaId,
        parent: Option<&BlockHeader>,
        committee: &Committee,
    ) -> Option<Vec<ReplicaId>> {
        let limit = committee.faults().max(1);
        let mut leaders = vec![proposer];
        let justify = &self.justify.statement;
        if justify.round + 1 == self.round && justify.round > 0 {
            let parent = parent.filter(|header| header.id() == justify.block)?;
            leaders.extend(parent.recent_leaders.iter().filter(|id| **id != proposer));
        }
        leaders.truncate(limit);
        Some(leaders)
    }

    /// Checks everything that needs no replica state: the certificates, that the round follows
    /// one of them, that the sequence number follows the parent's, and that the next leader
    /// follows from `proposer` and the certificate's signers.
    fn check(
        &self,
        batch_is_empty: bool,
        proposer: ReplicaId,
        committee: &Committee,
        start: u64,
    ) -> Result<(), Invalid> {
        if self.epoch != committee.epoch() {
            return Err(Invalid::BadBlock("block checked against another epoch"));
        }
        verify_qc(&self.justify, committee, start)?;
        if self.next_leader != self.successor_for(proposer, committee) {
            return Err(Invalid::BadBlock(
                "next leader not the one the certificate's signers give",
            ));
        }
        if self.justify.statement.round >= self.round {
            return Err(Invalid::BadBlock("certificate not below the block's round"));
        }
        match &self.timeout {
            None if self.justify.statement.round + 1 != self.round => {
                return Err(Invalid::BadBlock("round skipped without a timeout certificate"));
            }
            None => {}
            Some(tc) => {
                if tc.round.checked_add(1) != Some(self.round) {
                    return Err(Invalid::BadBlock("timeout certificate for another round"));
                }
                tc.verify(committee)?;
            }
        }
        let expected = self.justify.statement.seq + u64::from(!batch_is_empty);
        if self.seq != expected {
            return Err(Invalid::BadBlock("sequence number does not follow the parent's"));
        }
        Ok(())
    }
}

/// Everything a replica may receive from a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A client request forwarded or sent directly.
    Request(Request),
    /// PRE-PREPARE: the signed proposal and its batch.
    PrePrepare {
        /// The signed (view, seq, digest).
        proposal: Signed<Proposal>,
        /// The batch.
        batch: Batch,
    },
    /// PREPARE.
    Prepare(Signed<PrepareVote>),
    /// COMMIT.
    Commit(Signed<CommitVote>),
    /// CHECKPOINT.
    Checkpoint(Signed<CheckpointVote>),
    /// VIEW-CHANGE.
    ViewChange(Signed<ViewChange>),
    /// NEW-VIEW.
    NewView(Signed<NewView>),
    /// "I have executed everything below `next_seq` and am in `view`; help me catch up."
    CatchUp {
        /// The first sequence number the sender lacks.
        next_seq: u64,
        /// The sender's view.
        view: u64,
        /// The sender's stable checkpoint.
        stable_seq: u64,
    },
    /// Committed batches with their certificates (state transfer).
    Batches(Vec<CommittedBatch>),
    /// A stable checkpoint proof (state transfer).
    Stable(StableCheckpoint),
    /// Linear mode: the round's leader proposes a block with its batch, and hands out the
    /// commit certificates it aggregated since its last proposal.
    Propose {
        /// The signed block.
        block: Signed<Block>,
        /// The batch the block names.
        batch: Batch,
        /// Commit certificates for batches decided earlier.
        certified: Vec<Certificate<CommitVote>>,
        /// When the block's certificate is for the round just before (so certifying this
        /// block commits its parent): the parent's header (it names who may propose this
        /// block), then the ancestors whose batches no certificate covers yet, newest first.
        /// Voters follow the ids and sign a commit vote for each batch still uncertified.
        ancestry: Vec<BlockHeader>,
    },
    /// Linear mode: a vote for a block, sent only to the next round's leader, with the sender's
    /// commit votes for batches it decided that no certificate covers yet.
    Vote {
        /// The vote.
        vote: Signed<BlockVote>,
        /// Commit votes, by sequence number.
        commits: Vec<Signed<CommitVote>>,
    },
    /// Linear mode: a timeout, with the sender's highest quorum certificate.
    Timeout {
        /// The signed timeout.
        timeout: Signed<TimeoutVote>,
        /// The certificate `timeout.high_qc_round` names.
        high_qc: QuorumCert,
        /// The timeout certificate that brought the sender to its round, if one did: it lets
        /// replicas behind follow.
        last_tc: Option<TimeoutCert>,
    },
    /// Linear mode: "send me block `id` and its ancestors" (a replica that restarted or missed
    /// proposals needs them to commit and to prove ancestry). Answered with stored proposals.
    FetchBlocks {
        /// The newest block wanted.
        id: Digest,
    },
    /// Linear mode: the certificates that justify the sender's round, for a replica behind
    /// (DiemBFT's sync info).
    Sync {
        /// The sender's highest quorum certificate.
        high_qc: QuorumCert,
        /// The timeout certificate of the round before the sender's, if it has one.
        last_tc: Option<TimeoutCert>,
    },
}

impl Message {
    /// The kind, for metrics (`ordinal_messages_received_total{kind}`) and message counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Request(_) => "request",
            Message::PrePrepare { .. } => "pre_prepare",
            Message::Prepare(_) => "prepare",
            Message::Commit(_) => "commit",
            Message::Checkpoint(_) => "checkpoint",
            Message::ViewChange(_) => "view_change",
            Message::NewView(_) => "new_view",
            Message::CatchUp { .. } => "catch_up",
            Message::Batches(_) => "batches",
            Message::Stable(_) => "stable",
            Message::Propose { .. } => "propose",
            Message::Vote { .. } => "vote",
            Message::Timeout { .. } => "timeout",
            Message::Sync { .. } => "sync",
            Message::FetchBlocks { .. } => "fetch_blocks",
        }
    }

    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes from the wire; any byte string yields a message or `Malformed`, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, Invalid> {
        postcard::from_bytes(bytes).map_err(|_| Invalid::Malformed)
    }

    /// Checks everything that needs no replica state: signatures, signers, embedded
    /// certificates, digests against batches, sizes.
    pub fn verify(self, weights: &dyn Weights, config: &ProtocolConfig) -> Result<VerifiedMessage, Invalid> {
        self.verify_with(weights, config, &NoneAdmitted)
    }

    /// [`Message::verify`], reusing what this replica already checked of the requests it
    /// admitted from clients: a proposal's request equal to one of them is neither hashed nor
    /// signature-checked again. The verdict is the same as without them.
    pub fn verify_with(
        self,
        weights: &dyn Weights,
        config: &ProtocolConfig,
        admitted: &dyn AdmittedRequests,
    ) -> Result<VerifiedMessage, Invalid> {
        let committee = weights.signers();
        Ok(match self {
            Message::Request(request) => {
                request.check_shape(config)?;
                if !verify_requests(&[&request], &committee.cluster_id(), config.request_auth).is_empty() {
                    return Err(Invalid::BadClientSignature);
                }
                VerifiedMessage::Request(request)
            }
            Message::PrePrepare { proposal, batch } => {
                finish_pre_prepare(proposal.verify(committee)?, batch, weights, config, admitted)?
            }
            Message::Prepare(vote) => VerifiedMessage::Prepare(vote.verify(committee)?),
            Message::Commit(vote) => VerifiedMessage::Commit(vote.verify(committee)?),
            Message::Checkpoint(vote) => VerifiedMessage::Checkpoint(vote.verify(committee)?),
            Message::ViewChange(vc) => VerifiedMessage::ViewChange(verify_view_change(vc, weights, config)?),
            Message::NewView(nv) => VerifiedMessage::NewView(verify_new_view(nv, weights, config)?),
            Message::CatchUp {
                next_seq,
                view,
                stable_seq,
            } => VerifiedMessage::CatchUp {
                next_seq,
                view,
                stable_seq,
            },
            Message::Batches(batches) => {
                if batches.len() as u64 > config.state_transfer_chunk {
                    return Err(Invalid::BadTransfer {
                        seq: batches.first().map(CommittedBatch::seq).unwrap_or(0),
                        reason: "too many batches",
                    });
                }
                let mut batches = batches;
                // Batches past what this replica's log fixes the weights of cannot be checked
                // yet: keep the prefix it can check (the rest comes with the next request).
                if let Some(unknown) = batches.iter().position(|b| weights.for_seq(b.seq()).is_none()) {
                    batches.truncate(unknown);
                }
                for b in &batches {
                    b.batch.check_limits(config)?;
                    b.verify(committee_at(weights, b.seq())?)
                        .map_err(|_| Invalid::BadTransfer {
                            seq: b.seq(),
                            reason: "certificate does not verify",
                        })?;
                }
                VerifiedMessage::Batches(batches)
            }
            Message::Stable(stable) => {
                stable.verify(weights)?;
                VerifiedMessage::Stable(stable)
            }
            Message::Propose {
                block,
                batch,
                certified,
                ancestry,
            } => verify_proposal(
                block.verify(committee)?,
                batch,
                certified,
                ancestry,
                weights,
                config,
                admitted,
            )?,
            Message::Vote { vote, commits } => {
                check_vote_size(&commits, config)?;
                let vote = vote.verify(committee)?;
                check_vote(vote.signer(), vote.body(), commits.iter())?;
                let commits = Signed::verify_all(commits, committee)
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()?;
                VerifiedMessage::Vote { vote, commits }
            }
            Message::Timeout {
                timeout,
                high_qc,
                last_tc,
            } => {
                let timeout = timeout.verify(committee)?;
                if timeout.body().round > MAX_ROUND {
                    return Err(Invalid::BadBlock("round out of range"));
                }
                if high_qc.statement.round != timeout.body().high_qc_round
                    || timeout.body().high_qc_round >= timeout.body().round
                {
                    return Err(Invalid::BadBlock("timeout does not match its certificate"));
                }
                let (epoch_committee, start) = epoch_of(weights, timeout.body().epoch)?;
                verify_qc(&high_qc, epoch_committee, start)?;
                if let Some(tc) = &last_tc {
                    if tc.round >= timeout.body().round {
                        return Err(Invalid::BadBlock("timeout certificate not below the timeout"));
                    }
                    tc.verify(epoch_committee)?;
                }
                VerifiedMessage::Timeout {
                    timeout,
                    high_qc,
                    last_tc,
                }
            }
            Message::FetchBlocks { id } => VerifiedMessage::FetchBlocks { id },
            Message::Sync { high_qc, last_tc } => {
                let (epoch_committee, start) = epoch_of(weights, high_qc.statement.epoch)?;
                verify_qc(&high_qc, epoch_committee, start)?;
                if let Some(tc) = &last_tc {
                    let (epoch_committee, _) = epoch_of(weights, tc.epoch)?;
                    tc.verify(epoch_committee)?;
                }
                VerifiedMessage::Sync { high_qc, last_tc }
            }
        })
    }
}

impl Message {
    /// [`Message::verify_with`] for messages that arrived together (from one peer's stream):
    /// the envelope signatures of PRE-PREPAREs, PREPAREs, COMMITs, CHECKPOINTs, proposals and
    /// votes among them are checked as one group, which costs less per signature than single
    /// checks. The signature rule makes each message's result exactly the one
    /// [`Message::verify_with`] gives it alone, in the same order of checks (so with the same
    /// error); the results come back in the order of `messages`.
    pub fn verify_group(
        messages: Vec<Message>,
        weights: &dyn Weights,
        config: &ProtocolConfig,
        admitted: &dyn AdmittedRequests,
    ) -> GroupVerification {
        if messages.len() < 2 {
            return GroupVerification {
                results: messages
                    .into_iter()
                    .map(|message| message.verify_with(weights, config, admitted))
                    .collect(),
                signatures_held: true,
            };
        }
        let committee = weights.signers();
        let mut group = SignatureGroup::new();
        let staged: Vec<Staged> = messages
            .into_iter()
            .map(|message| match message {
                Message::PrePrepare { proposal, batch } => Staged::PrePrepare {
                    proposal: group.add(proposal, committee),
                    batch,
                },
                Message::Prepare(vote) => Staged::Prepare(group.add(vote, committee)),
                Message::Commit(vote) => Staged::Commit(group.add(vote, committee)),
                Message::Checkpoint(vote) => Staged::Checkpoint(group.add(vote, committee)),
                Message::Vote { vote, commits } => match check_vote_size(&commits, config) {
                    Err(e) => Staged::Refused(e),
                    // The commit votes join the group only where `verify_with` would check
                    // them: a vote that fails its other checks, or whose signer is not an
                    // active member, must not make the group check signatures it never needs.
                    Ok(())
                        if check_vote(vote.signer, &vote.body, commits.iter()).is_ok()
                            && committee.contains(vote.signer) =>
                    {
                        Staged::Vote {
                            vote: group.add(vote, committee),
                            commits: StagedCommits::Grouped(
                                commits.into_iter().map(|c| group.add(c, committee)).collect(),
                            ),
                        }
                    }
                    Ok(()) => Staged::Vote {
                        vote: group.add(vote, committee),
                        commits: StagedCommits::Alone(commits),
                    },
                },
                Message::Propose {
                    block,
                    batch,
                    certified,
                    ancestry,
                } => Staged::Propose {
                    block: group.add(block, committee),
                    batch,
                    certified,
                    ancestry,
                },
                other => Staged::Alone(other),
            })
            .collect();
        let verdicts = group.check();
        GroupVerification {
            results: staged
                .into_iter()
                .map(|staged| staged.finish(&verdicts, weights, config, admitted))
                .collect(),
            signatures_held: verdicts.all_held(),
        }
    }
}

/// The results of [`Message::verify_group`].
#[derive(Debug)]
pub struct GroupVerification {
    /// One result per message, in order.
    pub results: Vec<Result<VerifiedMessage, Invalid>>,
    /// Whether every signature checked as part of the group held. When one did not, the group
    /// cost more than single checks would have: a host may stop grouping that sender's messages.
    pub signatures_held: bool,
}

/// A vote's commit votes in a [`Message::verify_group`] call.
enum StagedCommits {
    /// In the group. Staged only once `check_vote` held on the unverified vote (so every
    /// commit vote is its signer's) and that signer is an active member, so that the commit
    /// votes' verdicts are their signatures' alone. The bodies cannot change between staging
    /// and [`Staged::finish`], so neither check is repeated there.
    Grouped(Vec<Pending<CommitVote>>),
    /// Not in the group: the vote fails without looking at them, or they are checked as
    /// `verify_with` checks them.
    Alone(Vec<Signed<CommitVote>>),
}

/// A message of a [`Message::verify_group`] call, its envelope signatures waiting for the
/// group's check.
enum Staged {
    PrePrepare {
        proposal: Pending<Proposal>,
        batch: Batch,
    },
    Prepare(Pending<PrepareVote>),
    Commit(Pending<CommitVote>),
    Checkpoint(Pending<CheckpointVote>),
    Vote {
        vote: Pending<BlockVote>,
        commits: StagedCommits,
    },
    Propose {
        block: Pending<Block>,
        batch: Batch,
        certified: Vec<Certificate<CommitVote>>,
        ancestry: Vec<BlockHeader>,
    },
    /// Refused before its signatures were looked at, as [`Message::verify_with`] refuses it.
    Refused(Invalid),
    /// Verified on its own.
    Alone(Message),
}

impl Staged {
    /// The rest of [`Message::verify_with`] once the group's signatures are checked.
    fn finish(
        self,
        verdicts: &GroupVerdicts,
        weights: &dyn Weights,
        config: &ProtocolConfig,
        admitted: &dyn AdmittedRequests,
    ) -> Result<VerifiedMessage, Invalid> {
        Ok(match self {
            Staged::PrePrepare { proposal, batch } => {
                finish_pre_prepare(proposal.resolve(verdicts)?, batch, weights, config, admitted)?
            }
            Staged::Prepare(vote) => VerifiedMessage::Prepare(vote.resolve(verdicts)?),
            Staged::Commit(vote) => VerifiedMessage::Commit(vote.resolve(verdicts)?),
            Staged::Checkpoint(vote) => VerifiedMessage::Checkpoint(vote.resolve(verdicts)?),
            Staged::Vote { vote, commits } => {
                let vote = vote.resolve(verdicts)?;
                let committee = weights.signers();
                let commits = match commits {
                    // `check_vote` and `Signed::verify_all`'s membership check already held
                    // when these were staged (see `StagedCommits::Grouped`): only the
                    // signatures are left.
                    StagedCommits::Grouped(commits) => commits
                        .into_iter()
                        .map(|commit| commit.resolve(verdicts))
                        .collect::<Result<Vec<_>, _>>()?,
                    StagedCommits::Alone(commits) => {
                        check_vote(vote.signer(), vote.body(), commits.iter())?;
                        Signed::verify_all(commits, committee)
                            .into_iter()
                            .collect::<Result<Vec<_>, _>>()?
                    }
                };
                VerifiedMessage::Vote { vote, commits }
            }
            Staged::Propose {
                block,
                batch,
                certified,
                ancestry,
            } => verify_proposal(
                block.resolve(verdicts)?,
                batch,
                certified,
                ancestry,
                weights,
                config,
                admitted,
            )?,
            Staged::Refused(e) => return Err(e),
            Staged::Alone(message) => message.verify_with(weights, config, admitted)?,
        })
    }
}

/// A PRE-PREPARE's checks after its signature: the view's primary signed it, and the batch
/// matches the digest and its limits (and, in signed mode, its clients' signatures).
fn finish_pre_prepare(
    proposal: Verified<Proposal>,
    batch: Batch,
    weights: &dyn Weights,
    config: &ProtocolConfig,
    admitted: &dyn AdmittedRequests,
) -> Result<VerifiedMessage, Invalid> {
    let body = *proposal.body();
    let expected = leader_of(body.view, weights.leaders());
    if proposal.signer() != expected {
        return Err(Invalid::WrongLeader {
            view: body.view,
            expected,
            got: proposal.signer(),
        });
    }
    verify_batch(
        &batch,
        &body.digest,
        body.seq,
        weights.signers(),
        config,
        Some(admitted),
    )?;
    Ok(VerifiedMessage::PrePrepare { proposal, batch })
}

/// A linear-mode vote carries at most a window of commit votes (checked before any signature).
fn check_vote_size(commits: &[Signed<CommitVote>], config: &ProtocolConfig) -> Result<(), Invalid> {
    if commits.len() as u64 > config.log_window {
        return Err(Invalid::BadBlock("more commit votes than the window"));
    }
    Ok(())
}

/// A linear-mode vote's checks after its signature and before its commit votes' signatures.
fn check_vote<'a>(
    signer: ReplicaId,
    vote: &BlockVote,
    commits: impl Iterator<Item = &'a Signed<CommitVote>> + Clone,
) -> Result<(), Invalid> {
    if vote.round > MAX_ROUND {
        return Err(Invalid::BadBlock("round out of range"));
    }
    if commits.clone().any(|c| c.signer != signer) {
        return Err(Invalid::BadBlock("commit vote from another signer"));
    }
    // Commit votes ride on the vote for a child of the block they commit: they name the
    // parent's round, the round just before the vote's.
    if commits
        .into_iter()
        .any(|c| c.body.view.checked_add(1) != Some(vote.round))
    {
        return Err(Invalid::BadBlock("commit vote for another round"));
    }
    Ok(())
}

/// The committee and first sequence number of linear-mode epoch `epoch`; a number this
/// replica's schedule does not hold yet means it is behind, not that the sender lies.
fn epoch_of(weights: &dyn Weights, epoch: u64) -> Result<(&Committee, u64), Invalid> {
    weights
        .epoch_of_number(epoch)
        .ok_or(Invalid::FutureEpoch { epoch })
}

fn verify_proposal(
    block: Verified<Block>,
    batch: Batch,
    mut certified: Vec<Certificate<CommitVote>>,
    ancestry: Vec<BlockHeader>,
    weights: &dyn Weights,
    config: &ProtocolConfig,
    admitted: &dyn AdmittedRequests,
) -> Result<VerifiedMessage, Invalid> {
    let body = block.body();
    if body.round > MAX_ROUND {
        return Err(Invalid::BadBlock("round out of range"));
    }
    let (committee, start) = epoch_of(weights, body.epoch)?;
    // The ancestry must be a chain of ids from the certified parent down; a block extending
    // the round just before (except genesis) starts it with the parent's header, which names
    // who may propose this round.
    let extends_previous_round = body.justify.statement.round + 1 == body.round;
    if !ancestry.is_empty() {
        if !extends_previous_round || ancestry.len() > crate::linear::chain_capacity(config) {
            return Err(Invalid::BadBlock("ancestry where no parent commits, or too long"));
        }
        let mut expected = body.justify.statement.block;
        for header in &ancestry {
            if header.recent_leaders.len() > committee.size()
                || header.epoch != body.epoch
                || header.id() != expected
            {
                return Err(Invalid::BadBlock("ancestry does not follow the parent links"));
            }
            expected = header.parent;
        }
    }
    // Members of the epoch before, for who opens this epoch's chain.
    let previous = weights.committee_before(body.epoch);
    let Some(expected) = body.expected_proposer(ancestry.first(), committee, previous) else {
        return Err(Invalid::BadBlock(
            "a block extending the round before lacks its parent's header",
        ));
    };
    if block.signer() != expected {
        return Err(Invalid::WrongLeader {
            view: body.round,
            expected,
            got: block.signer(),
        });
    }
    match body.expected_recent_leaders(block.signer(), ancestry.first(), committee) {
        Some(expected) if expected == body.recent_leaders => {}
        _ => return Err(Invalid::BadBlock("recent leaders do not follow the parent's")),
    }
    body.check(batch.requests().is_empty(), block.signer(), committee, start)?;
    verify_batch(
        &batch,
        &body.batch_digest,
        body.seq,
        committee,
        config,
        Some(admitted),
    )?;
    if certified.len() as u64 > config.log_window {
        return Err(Invalid::BadBlock("more commit certificates than the window"));
    }
    // Commit certificates count with the weights at their own sequence numbers (those of the
    // epoch before, too, at a boundary); ones past what this replica's log fixes cannot be
    // checked yet, and come again with a later proposal or by state transfer.
    certified.retain(|certificate| weights.for_seq(certificate.statement.seq).is_some());
    for certificate in &certified {
        certificate.verify(committee_at(weights, certificate.statement.seq)?)?;
    }
    Ok(VerifiedMessage::Propose {
        block,
        batch,
        certified,
        ancestry,
    })
}

/// Checks a batch against its claimed digest and limits. With `check_clients`, also every
/// client signature, except those of requests equal to ones this replica admitted (already
/// checked); `None` for batches backed by a certificate, which a quorum already checked.
fn verify_batch(
    batch: &Batch,
    digest: &Digest,
    seq: u64,
    committee: &Committee,
    config: &ProtocolConfig,
    check_clients: Option<&dyn AdmittedRequests>,
) -> Result<(), Invalid> {
    batch.check_limits(config)?;
    // Before the digest: requests matched here take over their payload digests.
    let unchecked: Vec<&Request> = match check_clients {
        Some(admitted) => batch
            .requests()
            .iter()
            .filter(|request| {
                !admitted
                    .admitted(&request.client, request.nonce)
                    .is_some_and(|checked| same_as_admitted(request, &checked))
            })
            .collect(),
        None => Vec::new(),
    };
    if batch.digest() != *digest {
        return Err(Invalid::DigestMismatch { seq });
    }
    if !verify_requests(&unchecked, &committee.cluster_id(), config.request_auth).is_empty() {
        return Err(Invalid::BadClientSignature);
    }
    Ok(())
}

fn verify_view_change(
    vc: Signed<ViewChange>,
    weights: &dyn Weights,
    config: &ProtocolConfig,
) -> Result<Verified<ViewChange>, Invalid> {
    let vc = vc.verify(weights.signers())?;
    check_view_change_body(vc.body(), weights, config)?;
    Ok(vc)
}

fn check_view_change_body(
    body: &ViewChange,
    weights: &dyn Weights,
    config: &ProtocolConfig,
) -> Result<(), Invalid> {
    body.stable.verify(weights)?;
    if body.prepared.len() as u64 > config.log_window {
        return Err(Invalid::BadViewChange("more prepared entries than the window"));
    }
    let low = body.stable.seq;
    let high = low + config.log_window;
    let mut previous = low;
    for proof in &body.prepared {
        let statement = proof.certificate.statement;
        if statement.seq <= previous || statement.seq > high {
            return Err(Invalid::BadViewChange(
                "prepared entries out of order or outside the window",
            ));
        }
        previous = statement.seq;
        if statement.view >= body.new_view {
            return Err(Invalid::BadViewChange(
                "prepared in a view not below the new view",
            ));
        }
        proof.certificate.verify(committee_at(weights, statement.seq)?)?;
        verify_batch(
            &proof.batch,
            &statement.digest,
            statement.seq,
            weights.signers(),
            config,
            None,
        )?;
    }
    Ok(())
}

fn verify_new_view(
    nv: Signed<NewView>,
    weights: &dyn Weights,
    config: &ProtocolConfig,
) -> Result<Verified<NewView>, Invalid> {
    let committee = weights.signers();
    let nv = nv.verify(committee)?;
    let view = nv.body().view;
    let expected = leader_of(view, weights.leaders());
    if nv.signer() != expected {
        return Err(Invalid::WrongLeader {
            view,
            expected,
            got: nv.signer(),
        });
    }
    let view_changes = &nv.body().view_changes;
    if view_changes.len() > committee.size() {
        return Err(Invalid::BadViewChange("more view changes than replicas"));
    }
    let mut signers: Vec<ReplicaId> = Vec::with_capacity(view_changes.len());
    for vc in view_changes {
        if vc.body.new_view != view {
            return Err(Invalid::BadViewChange("view change for another view"));
        }
        if signers.contains(&vc.signer) {
            return Err(Invalid::BadViewChange("two view changes from one replica"));
        }
        signers.push(vc.signer);
    }
    for result in Signed::verify_all(view_changes.clone(), committee) {
        result?;
    }
    for vc in view_changes {
        check_view_change_body(&vc.body, weights, config)?;
    }
    // The new view may re-propose anything above the highest stable checkpoint, up to a
    // window beyond it: the set must be a quorum under every epoch in force there
    // (`crate::epoch`).
    let low = view_changes
        .iter()
        .map(|vc| vc.body.stable.seq)
        .max()
        .unwrap_or(0);
    if !weights.is_quorum_over(&signers, low + 1, low + config.log_window) {
        return Err(Invalid::BadViewChange("view changes do not reach a quorum"));
    }
    Ok(nv)
}

/// A message whose signatures and self-contained evidence have been checked.
#[derive(Clone, Debug)]
pub enum VerifiedMessage {
    /// A client request (signature checked in signed mode).
    Request(Request),
    /// A PRE-PREPARE from the view's primary, batch matching its digest.
    PrePrepare {
        /// The proposal.
        proposal: Verified<Proposal>,
        /// Its batch.
        batch: Batch,
    },
    /// A PREPARE.
    Prepare(Verified<PrepareVote>),
    /// A COMMIT.
    Commit(Verified<CommitVote>),
    /// A CHECKPOINT.
    Checkpoint(Verified<CheckpointVote>),
    /// A VIEW-CHANGE with valid evidence.
    ViewChange(Verified<ViewChange>),
    /// A NEW-VIEW from the right primary with a valid quorum of view changes.
    NewView(Verified<NewView>),
    /// A catch-up request.
    CatchUp {
        /// First missing sequence number.
        next_seq: u64,
        /// The sender's view.
        view: u64,
        /// The sender's stable checkpoint.
        stable_seq: u64,
    },
    /// Certified batches.
    Batches(Vec<CommittedBatch>),
    /// A proven stable checkpoint.
    Stable(StableCheckpoint),
    /// A block from its round's leader, certificates and batch checked.
    Propose {
        /// The block.
        block: Verified<Block>,
        /// Its batch.
        batch: Batch,
        /// Verified commit certificates.
        certified: Vec<Certificate<CommitVote>>,
        /// Headers from the parent back, ids checked to chain.
        ancestry: Vec<BlockHeader>,
    },
    /// A block vote with the same signer's commit votes.
    Vote {
        /// The vote.
        vote: Verified<BlockVote>,
        /// Commit votes.
        commits: Vec<Verified<CommitVote>>,
    },
    /// A timeout with the certificate it reports.
    Timeout {
        /// The timeout.
        timeout: Verified<TimeoutVote>,
        /// Its high certificate, verified.
        high_qc: QuorumCert,
        /// The sender's last timeout certificate, verified.
        last_tc: Option<TimeoutCert>,
    },
    /// A request for blocks.
    FetchBlocks {
        /// The newest block wanted.
        id: Digest,
    },
    /// Verified sync information.
    Sync {
        /// A quorum certificate.
        high_qc: QuorumCert,
        /// A timeout certificate.
        last_tc: Option<TimeoutCert>,
    },
}
