//! Batches of requests and the certified form in which they leave the protocol.

use std::sync::{Arc, OnceLock};

use ordinal_crypto::{Certificate, Committee, CryptoError, Digest, MerkleProof, MerkleTree};
use serde::{Deserialize, Serialize};

use crate::config::ProtocolConfig;
use crate::error::Invalid;
use crate::messages::CommitVote;
use crate::request::Request;

/// An ordered group of requests proposed under one sequence number.
///
/// The requests are fixed once the batch is made, so that its Merkle tree can be computed once
/// and shared by every clone: a replica needs the digest to verify or propose, and the tree
/// again for every receipt. Building it anew each time (twice the hashes of the payloads
/// themselves) was the largest single cost of a replica's protocol thread.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Batch {
    /// The requests, in proposal order.
    requests: Vec<Request>,
    /// The request digests and the tree over them, computed at most once. Not on the wire: a
    /// receiver computes its own.
    #[serde(skip)]
    tree: OnceLock<Arc<BatchTree>>,
}

/// A batch's Merkle leaves (the request digests) and the tree over them.
#[derive(Debug)]
struct BatchTree {
    leaves: Vec<Digest>,
    tree: MerkleTree,
}

impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        // The cache is not part of the batch's value.
        self.requests == other.requests
    }
}

impl Eq for Batch {}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("requests", &self.requests).finish()
    }
}

impl Batch {
    /// A batch of these requests, in this order.
    pub fn new(requests: Vec<Request>) -> Self {
        Batch {
            requests,
            tree: OnceLock::new(),
        }
    }

    /// The requests, in proposal order.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// The requests, taken out of the batch.
    pub fn into_requests(self) -> Vec<Request> {
        self.requests
    }

    /// The number of requests.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether the batch holds no request (a null batch).
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    fn tree(&self) -> &BatchTree {
        self.tree.get_or_init(|| {
            let leaves: Vec<Digest> = self.requests.iter().map(Request::digest).collect();
            let tree = MerkleTree::new(&leaves);
            Arc::new(BatchTree { leaves, tree })
        })
    }

    /// The batch digest: the Merkle root over the request digests, so that a receipt can prove
    /// one request's place with a logarithmic path instead of the whole batch.
    pub fn digest(&self) -> Digest {
        self.tree().tree.root()
    }

    /// The Merkle leaves (request digests).
    pub fn leaves(&self) -> &[Digest] {
        &self.tree().leaves
    }

    /// The inclusion proof for request `index`.
    pub fn proof(&self, index: usize) -> Option<MerkleProof> {
        self.tree().tree.proof(index)
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
