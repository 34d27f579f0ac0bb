//! Signed envelopes and quorum certificates.
//!
//! Every signature covers `domain tag ‖ cluster id ‖ key set ‖ postcard(body)`. The domain tag
//! is distinct per message kind, so a PREPARE signature can never be replayed as a COMMIT, and
//! the cluster id and key set keep signatures from crossing clusters or memberships. The weight
//! epoch is deliberately *not* signed: a vote means the same under any weights, and a
//! certificate names the epoch whose weights it is counted with ([`Certificate::epoch`]).

use serde::{Deserialize, Serialize};

use crate::verify::{verify_signatures, SignatureCheck};
use crate::{Committee, CryptoError, KeyPair, ReplicaId, Signature};

/// A message body that can be signed. `DOMAIN` must be unique per kind of statement.
pub trait Signable: Serialize {
    /// The domain-separation tag, e.g. `"ordinal/pbft/prepare/v1"`.
    const DOMAIN: &'static str;
}

/// The exact bytes a signature over `body` covers.
pub fn signing_bytes<T: Signable>(cluster_id: &crate::Digest, key_set: u64, body: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(T::DOMAIN.len() + 64);
    out.extend_from_slice(&(T::DOMAIN.len() as u16).to_le_bytes());
    out.extend_from_slice(T::DOMAIN.as_bytes());
    out.extend_from_slice(cluster_id.as_bytes());
    out.extend_from_slice(&key_set.to_le_bytes());
    // Serialising plain data into a Vec cannot fail; an empty body would only make the
    // signature fail to verify, never succeed wrongly.
    let body = postcard::to_allocvec(body).unwrap_or_default();
    out.extend_from_slice(&body);
    out
}

/// A body with the id of the replica that signed it and the signature. Untrusted until
/// [`Signed::verify`] turns it into a [`Verified`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    /// The signed content.
    pub body: T,
    /// Who claims to have signed.
    pub signer: ReplicaId,
    /// The signature.
    pub signature: Signature,
}

impl<T: Signable> Signed<T> {
    /// Signs `body` as replica `signer` for the committee's cluster and epoch.
    pub fn sign(body: T, signer: ReplicaId, key: &KeyPair, committee: &Committee) -> Self {
        let bytes = signing_bytes(&committee.cluster_id(), committee.key_set(), &body);
        let signature = key.sign_raw(&bytes);
        Signed {
            body,
            signer,
            signature,
        }
    }

    /// Checks signer membership and the signature.
    pub fn verify(self, committee: &Committee) -> Result<Verified<T>, CryptoError> {
        let key = committee
            .key(self.signer)
            .ok_or(CryptoError::UnknownSigner { signer: self.signer })?;
        let bytes = signing_bytes(&committee.cluster_id(), committee.key_set(), &self.body);
        let bad = verify_signatures(&[SignatureCheck {
            key,
            message: &bytes,
            signature: &self.signature,
        }]);
        if bad.is_empty() {
            Ok(Verified(self))
        } else {
            Err(CryptoError::BadSignature { signer: self.signer })
        }
    }

    /// Verifies many envelopes with one batch check; returns each one's result in order.
    pub fn verify_all(items: Vec<Self>, committee: &Committee) -> Vec<Result<Verified<T>, CryptoError>> {
        let bytes: Vec<Option<Vec<u8>>> = items
            .iter()
            .map(|s| {
                committee
                    .contains(s.signer)
                    .then(|| signing_bytes(&committee.cluster_id(), committee.key_set(), &s.body))
            })
            .collect();
        let mut checks = Vec::new();
        let mut positions = Vec::new();
        for (i, (item, bytes)) in items.iter().zip(&bytes).enumerate() {
            if let (Some(bytes), Some(key)) = (bytes, committee.key(item.signer)) {
                checks.push(SignatureCheck {
                    key,
                    message: bytes,
                    signature: &item.signature,
                });
                positions.push(i);
            }
        }
        let mut bad = vec![false; items.len()];
        for failed in verify_signatures(&checks) {
            bad[positions[failed]] = true;
        }
        items
            .into_iter()
            .zip(bad)
            .map(|(item, bad)| {
                if !committee.contains(item.signer) {
                    Err(CryptoError::UnknownSigner { signer: item.signer })
                } else if bad {
                    Err(CryptoError::BadSignature { signer: item.signer })
                } else {
                    Ok(Verified(item))
                }
            })
            .collect()
    }
}

/// A signed message whose signature has been checked against the committee. The only way to
/// get one is [`Signed::verify`] (or [`Verified::new_unchecked_own`] for a replica's own message),
/// so code that takes a `Verified<T>` never sees an unchecked signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<T>(Signed<T>);

impl<T> Verified<T> {
    /// The body.
    pub fn body(&self) -> &T {
        &self.0.body
    }

    /// The signer.
    pub fn signer(&self) -> ReplicaId {
        self.0.signer
    }

    /// The signature (to put into a certificate).
    pub fn signature(&self) -> Signature {
        self.0.signature
    }

    /// The envelope, to forward as evidence.
    pub fn signed(&self) -> &Signed<T> {
        &self.0
    }

    /// Gives back the envelope.
    pub fn into_signed(self) -> Signed<T> {
        self.0
    }

    /// Wraps a message this replica has just signed itself with its own key: checking one's
    /// own fresh signature would only cost time.
    pub fn new_unchecked_own(signed: Signed<T>) -> Self {
        Verified(signed)
    }
}

/// A quorum certificate: signatures of distinct replicas over one statement.
///
/// Valid when every signer is a member, every signature verifies, and the distinct signers'
/// weight reaches the committee's quorum threshold Q. A repeated signer counts once; an unknown
/// signer or one bad signature makes the whole certificate invalid (a valid certificate never
/// needs either). The certificate names its epoch, checked against the committee's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate<T> {
    /// The statement every signature covers.
    pub statement: T,
    /// The weight epoch whose weights the votes are counted with.
    pub epoch: u64,
    /// (signer, signature) pairs.
    pub votes: Vec<(ReplicaId, Signature)>,
}

/// What a certificate must reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threshold {
    /// Q: any two such sets share a correct replica.
    Quorum,
    /// More than F: at least one signer is correct.
    OneCorrect,
}

impl<T: Signable> Certificate<T> {
    /// Builds a certificate from verified votes on one statement (the caller groups votes by
    /// statement). Duplicate signers are dropped.
    pub fn from_votes<'a, I>(statement: T, epoch: u64, votes: I) -> Self
    where
        I: IntoIterator<Item = &'a Verified<T>>,
        T: 'a,
    {
        let mut out: Vec<(ReplicaId, Signature)> = Vec::new();
        for vote in votes {
            if !out.iter().any(|(id, _)| *id == vote.signer()) {
                out.push((vote.signer(), vote.signature()));
            }
        }
        out.sort_by_key(|(id, _)| *id);
        Certificate {
            statement,
            epoch,
            votes: out,
        }
    }

    /// Verifies against the committee with the quorum threshold Q.
    pub fn verify(&self, committee: &Committee) -> Result<(), CryptoError> {
        self.verify_with(committee, Threshold::Quorum)
    }

    /// Verifies against the committee with the given threshold.
    pub fn verify_with(&self, committee: &Committee, threshold: Threshold) -> Result<(), CryptoError> {
        if self.epoch != committee.epoch() {
            return Err(CryptoError::WrongEpoch {
                expected: committee.epoch(),
                got: self.epoch,
            });
        }
        // More entries than slots can only be padding; refuse before doing any work.
        if self.votes.len() > committee.slots() {
            return Err(CryptoError::TooManyVotes {
                votes: self.votes.len(),
                members: committee.slots(),
            });
        }
        let bytes = signing_bytes(&committee.cluster_id(), committee.key_set(), &self.statement);
        let mut checks = Vec::with_capacity(self.votes.len());
        for (signer, signature) in &self.votes {
            let key = committee
                .key(*signer)
                .ok_or(CryptoError::UnknownSigner { signer: *signer })?;
            checks.push(SignatureCheck {
                key,
                message: &bytes,
                signature,
            });
        }
        if let Some(&first) = verify_signatures(&checks).first() {
            return Err(CryptoError::BadSignature {
                signer: self.votes[first].0,
            });
        }
        let weight = committee.weight_of(self.votes.iter().map(|(id, _)| *id));
        let (needed, enough) = match threshold {
            Threshold::Quorum => (committee.quorum_weight(), weight >= committee.quorum_weight()),
            Threshold::OneCorrect => (committee.faulty_weight() + 1, weight > committee.faulty_weight()),
        };
        if enough {
            Ok(())
        } else {
            Err(CryptoError::InsufficientWeight { weight, needed })
        }
    }

    /// The distinct signers.
    pub fn signers(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.votes.iter().map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Digest, PublicKey};

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct Vote(u64);
    impl Signable for Vote {
        const DOMAIN: &'static str = "test/vote";
    }
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct OtherVote(u64);
    impl Signable for OtherVote {
        const DOMAIN: &'static str = "test/other";
    }

    fn setup(n: usize) -> (Vec<KeyPair>, Committee) {
        let keys: Vec<KeyPair> = (0..n).map(|i| KeyPair::from_seed([i as u8 + 1; 32])).collect();
        let publics: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let committee = Committee::equal_weights(Digest::of(b"test"), &publics).unwrap();
        (keys, committee)
    }

    fn votes(keys: &[KeyPair], committee: &Committee, who: &[u16], value: u64) -> Vec<Verified<Vote>> {
        who.iter()
            .map(|&i| {
                Signed::sign(Vote(value), ReplicaId(i), &keys[i as usize], committee)
                    .verify(committee)
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn envelope_rejects_wrong_signer_tamper_and_other_cluster() {
        let (keys, committee) = setup(4);
        let good = Signed::sign(Vote(1), ReplicaId(0), &keys[0], &committee);
        assert!(good.clone().verify(&committee).is_ok());
        let mut tampered = good.clone();
        tampered.body = Vote(2);
        assert!(matches!(
            tampered.verify(&committee),
            Err(CryptoError::BadSignature { .. })
        ));
        let mut impostor = good.clone();
        impostor.signer = ReplicaId(1);
        assert!(impostor.verify(&committee).is_err());
        let mut unknown = good.clone();
        unknown.signer = ReplicaId(9);
        assert!(matches!(
            unknown.verify(&committee),
            Err(CryptoError::UnknownSigner { .. })
        ));
        let publics: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let other_cluster = Committee::equal_weights(Digest::of(b"other"), &publics).unwrap();
        assert!(good.verify(&other_cluster).is_err());
    }

    #[test]
    fn cross_purpose_replay_is_rejected() {
        let (keys, committee) = setup(4);
        let vote = Signed::sign(Vote(5), ReplicaId(0), &keys[0], &committee);
        // Same encoding of the body (one u64), other domain: must not verify.
        let replay = Signed {
            body: OtherVote(5),
            signer: vote.signer,
            signature: vote.signature,
        };
        assert!(replay.verify(&committee).is_err());
        let cert = Certificate::from_votes(Vote(5), 0, &votes(&keys, &committee, &[0, 1, 2], 5));
        let replayed = Certificate {
            statement: OtherVote(5),
            epoch: 0,
            votes: cert.votes.clone(),
        };
        assert!(cert.verify(&committee).is_ok());
        assert!(replayed.verify(&committee).is_err());
    }

    #[test]
    fn certificate_rules() {
        let (keys, committee) = setup(4);
        let three = votes(&keys, &committee, &[0, 1, 2], 7);
        let cert = Certificate::from_votes(Vote(7), 0, &three);
        assert!(cert.verify(&committee).is_ok());

        // Insufficient: two distinct signers.
        let two = Certificate::from_votes(Vote(7), 0, &three[..2]);
        assert!(matches!(
            two.verify(&committee),
            Err(CryptoError::InsufficientWeight { weight: 2, needed: 3 })
        ));
        // ... but enough to prove one correct signer.
        assert!(two.verify_with(&committee, Threshold::OneCorrect).is_ok());

        // Duplicate signer counts once.
        let mut dup = two.clone();
        dup.votes.push(dup.votes[0]);
        assert!(matches!(
            dup.verify(&committee),
            Err(CryptoError::InsufficientWeight { .. })
        ));

        // Forged: a signature over another statement.
        let mut forged = cert.clone();
        forged.votes[2].1 = votes(&keys, &committee, &[2], 8)[0].signature();
        assert!(
            matches!(forged.verify(&committee), Err(CryptoError::BadSignature { signer }) if signer == ReplicaId(2))
        );

        // Unknown signer.
        let mut unknown = cert.clone();
        unknown.votes.push((ReplicaId(9), cert.votes[0].1));
        assert!(matches!(
            unknown.verify(&committee),
            Err(CryptoError::UnknownSigner { .. })
        ));

        // Wrong epoch.
        let mut epoch = cert.clone();
        epoch.epoch = 1;
        assert!(matches!(
            epoch.verify(&committee),
            Err(CryptoError::WrongEpoch { .. })
        ));

        // The same signatures counted with the weights of another epoch: votes do not sign
        // the weight epoch, so only the count changes. Under [4, 3, 3, 3] (Q = 9) replicas
        // 1, 2, 3 hold 9 and make a quorum; so do 0, 1, 2 (10).
        let heavier = committee.reweighted(1, &[4, 3, 3, 3]).unwrap();
        let mut recounted = cert.clone();
        recounted.epoch = 1;
        recounted.verify(&heavier).unwrap();
        assert!(Signed::sign(Vote(7), ReplicaId(3), &keys[3], &committee)
            .verify(&heavier)
            .is_ok());
        let mut short = recounted.clone();
        short.votes.truncate(2);
        assert!(matches!(
            short.verify(&heavier),
            Err(CryptoError::InsufficientWeight { weight: 7, needed: 9 })
        ));

        // Padding beyond n.
        let mut padded = cert.clone();
        for _ in 0..3 {
            padded.votes.push(padded.votes[0]);
        }
        assert!(matches!(
            padded.verify(&committee),
            Err(CryptoError::TooManyVotes { .. })
        ));
    }

    #[test]
    fn weighted_certificate_counts_weight_not_heads() {
        let keys: Vec<KeyPair> = (0..4).map(|i| KeyPair::from_seed([i as u8 + 1; 32])).collect();
        let members = keys
            .iter()
            .enumerate()
            .map(|(i, k)| crate::Member {
                id: ReplicaId(i as u16),
                public_key: k.public(),
                weight: [4, 3, 3, 3][i],
            })
            .collect();
        let committee = Committee::new(Digest::of(b"w"), 0, members, 1).unwrap();
        assert_eq!(committee.quorum_weight(), 9);
        // 3 + 3 + 3 = 9: three light replicas are a quorum.
        let light = votes(&keys, &committee, &[1, 2, 3], 1);
        assert!(Certificate::from_votes(Vote(1), 0, &light)
            .verify(&committee)
            .is_ok());
        // 4 + 3 = 7: two heads including the heaviest are not.
        let heavy = votes(&keys, &committee, &[0, 1], 1);
        assert!(Certificate::from_votes(Vote(1), 0, &heavy)
            .verify(&committee)
            .is_err());
    }

    #[test]
    fn batch_verification_reports_each_result() {
        let (keys, committee) = setup(4);
        let mut items: Vec<Signed<Vote>> = (0..4u16)
            .map(|i| Signed::sign(Vote(i as u64), ReplicaId(i), &keys[i as usize], &committee))
            .collect();
        items[2].body = Vote(99);
        items[3].signer = ReplicaId(40);
        let results = Signed::verify_all(items, &committee);
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(matches!(results[2], Err(CryptoError::BadSignature { .. })));
        assert!(matches!(results[3], Err(CryptoError::UnknownSigner { .. })));
    }

    #[test]
    fn garbage_bytes_never_panic() {
        let mut state = 1u64;
        for len in 0..300usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 33) as u8
                })
                .collect();
            let _ = postcard::from_bytes::<Signed<Vote>>(&bytes);
            let _ = postcard::from_bytes::<Certificate<Vote>>(&bytes);
        }
    }
}
