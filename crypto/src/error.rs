use thiserror::Error;

use crate::ReplicaId;

/// Everything that can be wrong with a key, signature, envelope or certificate.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Hex text of the wrong length or with non-hex characters.
    #[error("expected {expected_len} bytes of hex")]
    BadHex {
        /// Bytes expected.
        expected_len: usize,
    },
    /// Not a usable ed25519 public key.
    #[error("not a valid ed25519 public key (bad encoding or small order)")]
    BadPublicKey,
    /// A key file could not be read or written.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A committee that cannot be used.
    #[error("invalid committee: {0}")]
    BadCommittee(String),
    /// A weight vector that cannot be both safe and live.
    #[error("inadmissible weights (W={total}, F={faulty}): {reason}")]
    InadmissibleWeights {
        /// W.
        total: u64,
        /// F.
        faulty: u64,
        /// Which condition failed.
        reason: &'static str,
    },
    /// The signer is not a member of the committee.
    #[error("signer {signer} is not in the committee")]
    UnknownSigner {
        /// The claimed signer.
        signer: ReplicaId,
    },
    /// The signature does not verify.
    #[error("bad signature from {signer}")]
    BadSignature {
        /// The claimed signer.
        signer: ReplicaId,
    },
    /// A certificate whose signers do not weigh enough.
    #[error("certificate weight {weight} below {needed}")]
    InsufficientWeight {
        /// Distinct signers' weight.
        weight: u64,
        /// What was needed.
        needed: u64,
    },
    /// A certificate with more entries than the committee has members.
    #[error("certificate has {votes} votes for {members} members")]
    TooManyVotes {
        /// Entries.
        votes: usize,
        /// Members.
        members: usize,
    },
    /// A certificate from another epoch.
    #[error("certificate for epoch {got}, committee is epoch {expected}")]
    WrongEpoch {
        /// The committee's epoch.
        expected: u64,
        /// The certificate's.
        got: u64,
    },
}
