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
    /// Unlike [`Signed::verify`], a signer that is not an active member is refused.
    pub fn verify_all(items: Vec<Self>, committee: &Committee) -> Vec<Result<Verified<T>, CryptoError>> {
        let mut group = SignatureGroup::new();
        let pending: Vec<Result<Pending<T>, CryptoError>> = items
            .into_iter()
            .map(|item| {
                if committee.contains(item.signer) {
                    Ok(group.add(item, committee))
                } else {
                    Err(CryptoError::UnknownSigner { signer: item.signer })
                }
            })
            .collect();
        let verdicts = group.check();
        pending
            .into_iter()
            .map(|pending| pending.and_then(|p| p.resolve(&verdicts)))
            .collect()
    }
}

/// Envelopes of any kinds whose signatures are checked together, with one
/// [`verify_signatures`] call: the saving grows with the group (a group of 64 costs about 40 %
/// of 64 single checks), and the rule makes each verdict the one the envelope would get alone.
///
/// [`SignatureGroup::add`] returns a [`Pending`] envelope, [`SignatureGroup::check`] checks
/// them all, and [`Pending::resolve`] turns each into a [`Verified`] or its error. A `Pending`
/// only resolves against the verdicts of the group it was added to.
pub struct SignatureGroup<'c> {
    id: u64,
    keys: Vec<&'c ed25519_dalek::VerifyingKey>,
    messages: Vec<Vec<u8>>,
    signatures: Vec<Signature>,
}

/// An envelope added to a [`SignatureGroup`], waiting for the group's check.
#[derive(Debug)]
pub struct Pending<T> {
    signed: Signed<T>,
    group: u64,
    /// Its place in the group; `None` when the committee has no key for the signer.
    index: Option<usize>,
}

/// What [`SignatureGroup::check`] found.
#[derive(Debug)]
pub struct GroupVerdicts {
    group: u64,
    bad: Vec<bool>,
}

impl GroupVerdicts {
    /// Whether every signature of the group held. When one did not, the check cost the group
    /// check plus one check per signature (to name the culprits): more than checking each alone.
    pub fn all_held(&self) -> bool {
        !self.bad.contains(&true)
    }
}

/// Distinguishes groups, so that a `Pending` cannot be resolved with another group's verdicts.
static NEXT_GROUP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl<'c> SignatureGroup<'c> {
    /// An empty group.
    pub fn new() -> Self {
        SignatureGroup {
            id: NEXT_GROUP.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            keys: Vec::new(),
            messages: Vec::new(),
            signatures: Vec::new(),
        }
    }

    /// Adds `signed`, to be checked against `committee` exactly as [`Signed::verify`] would.
    pub fn add<T: Signable>(&mut self, signed: Signed<T>, committee: &'c Committee) -> Pending<T> {
        let index = committee.key(signed.signer).map(|key| {
            self.keys.push(key);
            self.messages.push(signing_bytes(
                &committee.cluster_id(),
                committee.key_set(),
                &signed.body,
            ));
            self.signatures.push(signed.signature);
            self.signatures.len() - 1
        });
        Pending {
            signed,
            group: self.id,
            index,
        }
    }

    /// How many signatures the group holds.
    pub fn len(&self) -> usize {
        self.signatures.len()
    }

    /// Whether the group holds none.
    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }

    /// Checks every signature added.
    pub fn check(self) -> GroupVerdicts {
        let checks: Vec<SignatureCheck<'_>> = self
            .keys
            .iter()
            .zip(&self.messages)
            .zip(&self.signatures)
            .map(|((key, message), signature)| SignatureCheck {
                key,
                message,
                signature,
            })
            .collect();
        let mut bad = vec![false; checks.len()];
        for failed in verify_signatures(&checks) {
            bad[failed] = true;
        }
        GroupVerdicts { group: self.id, bad }
    }
}

impl Default for SignatureGroup<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Pending<T> {
    /// The envelope's verdict: what [`Signed::verify`] would have returned.
    pub fn resolve(self, verdicts: &GroupVerdicts) -> Result<Verified<T>, CryptoError> {
        let signer = self.signed.signer;
        let Some(index) = self.index else {
            return Err(CryptoError::UnknownSigner { signer });
        };
        // Another group's verdicts say nothing about this signature: refuse rather than guess.
        if verdicts.group != self.group || verdicts.bad.get(index).copied().unwrap_or(true) {
            return Err(CryptoError::BadSignature { signer });
        }
        Ok(Verified(self.signed))
    }

    /// The envelope, still unchecked.
    pub fn signed(&self) -> &Signed<T> {
        &self.signed
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
    fn a_group_of_mixed_kinds_gives_each_envelope_its_single_verdict() {
        let (keys, committee) = setup(4);
        let good = Signed::sign(Vote(1), ReplicaId(0), &keys[0], &committee);
        let other = Signed::sign(OtherVote(2), ReplicaId(1), &keys[1], &committee);
        let mut forged = Signed::sign(OtherVote(3), ReplicaId(2), &keys[2], &committee);
        forged.body = OtherVote(4);
        // A vote's signature does not carry over to another kind with the same body.
        let vote = Signed::sign(Vote(5), ReplicaId(3), &keys[3], &committee);
        let replayed = Signed {
            body: OtherVote(5),
            signer: vote.signer,
            signature: vote.signature,
        };
        let mut stranger = Signed::sign(Vote(6), ReplicaId(0), &keys[0], &committee);
        stranger.signer = ReplicaId(9);
        let singles = (
            good.clone().verify(&committee).is_ok(),
            other.clone().verify(&committee).is_ok(),
            forged.clone().verify(&committee).is_ok(),
            replayed.clone().verify(&committee).is_ok(),
            stranger.clone().verify(&committee).is_ok(),
        );
        assert_eq!(singles, (true, true, false, false, false));

        let mut group = SignatureGroup::new();
        let pending_good = group.add(good.clone(), &committee);
        let pending_other = group.add(other.clone(), &committee);
        let pending_forged = group.add(forged, &committee);
        let pending_replayed = group.add(replayed, &committee);
        let pending_stranger = group.add(stranger, &committee);
        assert_eq!(group.len(), 4, "no key, nothing to check");
        let verdicts = group.check();
        assert_eq!(pending_good.resolve(&verdicts).unwrap().signed(), &good);
        assert_eq!(pending_other.resolve(&verdicts).unwrap().signed(), &other);
        assert!(matches!(
            pending_forged.resolve(&verdicts),
            Err(CryptoError::BadSignature { signer: ReplicaId(2) })
        ));
        assert!(matches!(
            pending_replayed.resolve(&verdicts),
            Err(CryptoError::BadSignature { signer: ReplicaId(3) })
        ));
        assert!(matches!(
            pending_stranger.resolve(&verdicts),
            Err(CryptoError::UnknownSigner { signer: ReplicaId(9) })
        ));
    }

    #[test]
    fn a_pending_envelope_refuses_another_groups_verdicts() {
        let (keys, committee) = setup(4);
        let vote = Signed::sign(Vote(1), ReplicaId(0), &keys[0], &committee);
        let mut first = SignatureGroup::new();
        let pending = first.add(vote.clone(), &committee);
        let mut second = SignatureGroup::new();
        let _other = second.add(vote, &committee);
        let second = second.check();
        assert!(pending.resolve(&second).is_err());
        // An empty group checks nothing and passes nothing.
        let empty = SignatureGroup::new();
        assert!(empty.is_empty());
        assert!(empty.check().bad.is_empty());
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
