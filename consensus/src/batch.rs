//! Batches of requests and the certified form in which they leave the protocol.

use ordinal_crypto::{merkle_proof, merkle_root, Certificate, Committee, CryptoError, Digest, MerkleProof};
use serde::{Deserialize, Serialize};

use crate::config::ProtocolConfig;
use crate::error::Invalid;
use crate::messages::CommitVote;
use crate::request::Request;

/// An ordered group of requests proposed under one sequence number.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The requests, in proposal order.
    pub requests: Vec<Request>,
}

impl Batch {
    /// The batch digest: the Merkle root over the request digests, so that a receipt can prove
    /// one request's place with a logarithmic path instead of the whole batch.
    pub fn digest(&self) -> Digest {
        merkle_root(&self.leaves())
    }

    /// The Merkle leaves (request digests).
    pub fn leaves(&self) -> Vec<Digest> {
        self.requests.iter().map(Request::digest).collect()
    }

    /// The inclusion proof for request `index`.
    pub fn proof(&self, index: usize) -> Option<MerkleProof> {
        merkle_proof(&self.leaves(), index)
    }

    /// Total payload bytes.
    pub fn payload_bytes(&self) -> usize {
        self.requests.iter().map(|r| r.payload().len()).sum()
    }

    /// Checks count and size limits and every request's shape.
    pub fn check_limits(&self, config: &ProtocolConfig) -> Result<(), Invalid> {
        let bytes = self.payload_bytes();
        if self.requests.len() > config.max_batch_requests || bytes > config.max_batch_bytes {
            return Err(Invalid::BatchTooLarge {
                requests: self.requests.len(),
                bytes,
            });
        }
        for request in &self.requests {
            request.check_shape(config)?;
        }
        Ok(())
    }
}

/// A committed batch with the commit certificate that proves it: what a replica persists and
/// serves, and what anyone holding the cluster's public keys can check without trusting the
/// replica that served it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedBatch {
    /// The batch.
    pub batch: Batch,
    /// A quorum of COMMIT votes for (view, seq, batch digest).
    pub certificate: Certificate<CommitVote>,
}

impl CommittedBatch {
    /// The sequence number.
    pub fn seq(&self) -> u64 {
        self.certificate.statement.seq
    }

    /// The view it committed in.
    pub fn view(&self) -> u64 {
        self.certificate.statement.view
    }

    /// Checks the certificate against the committee and the batch against the certified digest.
    pub fn verify(&self, committee: &Committee) -> Result<(), BatchProofError> {
        self.certificate.verify(committee)?;
        if self.batch.digest() != self.certificate.statement.digest {
            return Err(BatchProofError::DigestMismatch { seq: self.seq() });
        }
        Ok(())
    }
}

/// Why a committed batch failed verification.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchProofError {
    /// The certificate is invalid.
    #[error("commit certificate: {0}")]
    Certificate(#[from] CryptoError),
    /// The batch is not the one certified.
    #[error("batch at seq {seq} does not match its certificate")]
    DigestMismatch {
        /// Sequence number.
        seq: u64,
    },
}
