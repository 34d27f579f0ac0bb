//! What replicas say to each other, and the checks that turn wire messages into verified ones.
//!
//! Verification here needs only the committee and the configuration, never replica state, so
//! a host can run it on a worker pool before handing the result to the state machine. Checks
//! that depend on state (view, watermarks, what was already accepted) live in the protocol.

use ordinal_crypto::{Certificate, Committee, Digest, ReplicaId, Signable, Signed, Verified};
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, CommittedBatch};
use crate::config::ProtocolConfig;
use crate::error::Invalid;
use crate::leader::leader_of;
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

    /// Checks the proof.
    pub fn verify(&self, committee: &Committee) -> Result<(), Invalid> {
        match &self.certificate {
            None if self.seq == 0 && self.log_digest == genesis_log_digest() => Ok(()),
            None => Err(Invalid::BadViewChange("checkpoint without certificate")),
            Some(cert) => {
                if cert.statement.seq != self.seq || cert.statement.log_digest != self.log_digest {
                    return Err(Invalid::BadViewChange(
                        "checkpoint certificate for another statement",
                    ));
                }
                cert.verify(committee)?;
                Ok(())
            }
        }
    }
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
    pub fn verify(self, committee: &Committee, config: &ProtocolConfig) -> Result<VerifiedMessage, Invalid> {
        Ok(match self {
            Message::Request(request) => {
                request.check_shape(config)?;
                if !verify_requests(&[&request], &committee.cluster_id(), config.request_auth).is_empty() {
                    return Err(Invalid::BadClientSignature);
                }
                VerifiedMessage::Request(request)
            }
            Message::PrePrepare { proposal, batch } => {
                let proposal = proposal.verify(committee)?;
                let body = *proposal.body();
                let expected = leader_of(body.view, committee);
                if proposal.signer() != expected {
                    return Err(Invalid::WrongLeader {
                        view: body.view,
                        expected,
                        got: proposal.signer(),
                    });
                }
                verify_batch(&batch, &body.digest, body.seq, committee, config, true)?;
                VerifiedMessage::PrePrepare { proposal, batch }
            }
            Message::Prepare(vote) => VerifiedMessage::Prepare(vote.verify(committee)?),
            Message::Commit(vote) => VerifiedMessage::Commit(vote.verify(committee)?),
            Message::Checkpoint(vote) => VerifiedMessage::Checkpoint(vote.verify(committee)?),
            Message::ViewChange(vc) => {
                VerifiedMessage::ViewChange(verify_view_change(vc, committee, config)?)
            }
            Message::NewView(nv) => VerifiedMessage::NewView(verify_new_view(nv, committee, config)?),
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
                for b in &batches {
                    b.batch.check_limits(config)?;
                    b.verify(committee).map_err(|_| Invalid::BadTransfer {
                        seq: b.seq(),
                        reason: "certificate does not verify",
                    })?;
                }
                VerifiedMessage::Batches(batches)
            }
            Message::Stable(stable) => {
                stable.verify(committee)?;
                VerifiedMessage::Stable(stable)
            }
        })
    }
}

/// Checks a batch against its claimed digest and limits; with `check_clients`, also every
/// client signature (skipped for batches backed by a certificate, which a quorum already
/// checked).
fn verify_batch(
    batch: &Batch,
    digest: &Digest,
    seq: u64,
    committee: &Committee,
    config: &ProtocolConfig,
    check_clients: bool,
) -> Result<(), Invalid> {
    batch.check_limits(config)?;
    if batch.digest() != *digest {
        return Err(Invalid::DigestMismatch { seq });
    }
    if check_clients {
        let requests: Vec<&Request> = batch.requests.iter().collect();
        if !verify_requests(&requests, &committee.cluster_id(), config.request_auth).is_empty() {
            return Err(Invalid::BadClientSignature);
        }
    }
    Ok(())
}

fn verify_view_change(
    vc: Signed<ViewChange>,
    committee: &Committee,
    config: &ProtocolConfig,
) -> Result<Verified<ViewChange>, Invalid> {
    let vc = vc.verify(committee)?;
    check_view_change_body(vc.body(), committee, config)?;
    Ok(vc)
}

fn check_view_change_body(
    body: &ViewChange,
    committee: &Committee,
    config: &ProtocolConfig,
) -> Result<(), Invalid> {
    body.stable.verify(committee)?;
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
        proof.certificate.verify(committee)?;
        verify_batch(
            &proof.batch,
            &statement.digest,
            statement.seq,
            committee,
            config,
            false,
        )?;
    }
    Ok(())
}

fn verify_new_view(
    nv: Signed<NewView>,
    committee: &Committee,
    config: &ProtocolConfig,
) -> Result<Verified<NewView>, Invalid> {
    let nv = nv.verify(committee)?;
    let view = nv.body().view;
    let expected = leader_of(view, committee);
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
        check_view_change_body(&vc.body, committee, config)?;
    }
    if !committee.is_quorum(signers.iter().copied()) {
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
}
