//! Receipts: a client's proof that its transaction was ordered, checkable with nothing but the
//! cluster's public keys and weights.

use ordinal_crypto::{Certificate, Committee, CryptoError, Digest, MerkleProof};
use serde::{Deserialize, Serialize};

use crate::batch::CommittedBatch;
use crate::messages::CommitVote;
use crate::request::Request;

/// Proof that one request sits at (seq, index) of the committed log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Batch sequence number.
    pub seq: u64,
    /// Position in the batch.
    pub index: u32,
    /// The request's leaf digest ([`Request::digest`]).
    pub request_digest: Digest,
    /// The Merkle path from the leaf to the certified batch digest.
    pub proof: MerkleProof,
    /// The batch's commit certificate.
    pub certificate: Certificate<CommitVote>,
}

/// Why a receipt does not prove what it claims.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    /// The certificate is invalid.
    #[error("commit certificate: {0}")]
    Certificate(#[from] CryptoError),
    /// The receipt is for another request.
    #[error("receipt is for another request")]
    WrongRequest,
    /// Its numbers do not match the certificate or the proof.
    #[error("receipt position does not match its proof")]
    WrongPosition,
    /// The Merkle path does not lead to the certified digest.
    #[error("inclusion proof does not verify")]
    BadProof,
    /// The verifier does not know the weights in force at the receipt's sequence number.
    #[error("weights at the receipt's sequence number not known")]
    UnknownEpoch,
}

impl Receipt {
    /// Builds the receipt for request `index` of a committed batch (the batch's Merkle tree is
    /// computed once and kept, so receipts of one batch share it).
    pub fn for_request(committed: &CommittedBatch, index: u32) -> Option<Receipt> {
        Some(Receipt {
            seq: committed.seq(),
            index,
            request_digest: *committed.batch.leaves().get(index as usize)?,
            proof: committed.batch.proof(index as usize)?,
            certificate: committed.certificate.clone(),
        })
    }

    /// The view the batch committed in.
    pub fn view(&self) -> u64 {
        self.certificate.statement.view
    }

    /// Checks the receipt for `request` against the committee.
    pub fn verify(&self, request: &Request, committee: &Committee) -> Result<(), ReceiptError> {
        self.verify_inclusion(request)?;
        self.certificate.verify(committee)?;
        Ok(())
    }

    /// Checks everything but the certificate's signatures: that the receipt is for `request`
    /// and its Merkle path leads to the certified digest. For callers that already verified
    /// this very certificate (receipts of one batch share it).
    pub fn verify_inclusion(&self, request: &Request) -> Result<(), ReceiptError> {
        self.verify_inclusion_of(&request.digest())
    }

    /// [`Receipt::verify_inclusion`] for a request known by its digest ([`Request::digest`]),
    /// for callers that keep the digest rather than the request.
    pub fn verify_inclusion_of(&self, request_digest: &Digest) -> Result<(), ReceiptError> {
        if *request_digest != self.request_digest {
            return Err(ReceiptError::WrongRequest);
        }
        if self.certificate.statement.seq != self.seq || self.proof.index != self.index {
            return Err(ReceiptError::WrongPosition);
        }
        if !self
            .proof
            .verify(&self.request_digest, &self.certificate.statement.digest)
        {
            return Err(ReceiptError::BadProof);
        }
        Ok(())
    }
}
