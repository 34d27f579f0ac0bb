//! The one signature verification rule Ordinal uses for everything consensus-critical: phase
//! messages, certificates, client requests, epoch changes and receipts.
//!
//! # Why not ed25519-dalek's `verify_batch`
//!
//! A replica must reach the same verdict on a signature as every other honest replica and
//! every client, however the signature was grouped with others. ed25519-dalek's `verify_batch`
//! checks the *cofactorless* batch equation with weights derived from the whole batch. A
//! signer who adds a small-order component `T` to its nonce point `R` gets a signature whose
//! batch verdict depends on whether the weight is a multiple of `T`'s order: it passes in about
//! half (or an eighth) of all groupings and fails in the rest. One replica would count a vote
//! that another rejects, and a client request admitted alone could fail inside a proposal.
//!
//! # The rule
//!
//! A signature `(R, s)` by key `A` over message `M` is valid when
//!
//! 1. `s` is a canonical scalar (below the group order `ℓ`);
//! 2. `R` and `A` are canonical encodings of curve points that are not of small order (the
//!    same encoding checks `verify_strict` makes, so nobody can re-encode a signature or use a
//!    key that signs everything);
//! 3. the *cofactored* equation holds: `[8]([s]B − [k]A − R) = 0`, with `k = SHA-512(R ‖ A ‖ M)`
//!    reduced mod `ℓ`, as in RFC 8032 §5.1.7.
//!
//! Because the equation is cofactored, a batch of signatures that are each valid always passes
//! the batch equation `[8](−(Σ zᵢsᵢ)B + Σ zᵢRᵢ + Σ zᵢkᵢAᵢ) = 0`, whatever the weights `zᵢ`,
//! and a batch containing an invalid signature passes it with probability about 2⁻¹²⁸. The
//! batch is therefore only a shortcut: the verdict on each signature is the single-signature
//! rule's, the same on every replica and in every grouping. Honest ed25519 signatures (RFC 8032,
//! as `ed25519-dalek` produces them) satisfy all three conditions.
//!
//! The signatures a signer could add a small-order component to are its own: accepting them is
//! harmless, since they still prove the signer's key signed `M`; what mattered was agreeing.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity as _, VartimeMultiscalarMul as _};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest as _, Sha512};

use crate::Signature;

/// One signature to check: who, over what, and the signature.
#[derive(Clone, Copy, Debug)]
pub struct SignatureCheck<'a> {
    /// The signer's decoded key (see [`crate::PublicKey::decode`], which applies this rule's
    /// checks on keys).
    pub key: &'a VerifyingKey,
    /// The exact bytes that were signed.
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a Signature,
}

/// Checks all `items` with Ordinal's verification rule (see the [module docs](self)) and
/// returns the indexes of the ones that fail, in increasing order (empty when all are valid).
///
/// Two or more well-formed signatures are first checked together with one multi-scalar
/// multiplication; when that fails, each is checked alone to name the culprits, so one bad
/// signature cannot hide good ones or be hidden by them.
pub fn verify_signatures(items: &[SignatureCheck<'_>]) -> Vec<usize> {
    let mut failed = Vec::new();
    let mut prepared = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match Prepared::new(item) {
            Some(check) => prepared.push((index, check)),
            None => failed.push(index),
        }
    }
    let all_hold = match prepared.as_slice() {
        [] => true,
        [(_, only)] => only.holds(),
        many => batch_holds(many),
    };
    if !all_hold {
        failed.extend(
            prepared
                .iter()
                .filter(|(_, check)| !check.holds())
                .map(|(index, _)| *index),
        );
        failed.sort_unstable();
    }
    failed
}

/// Whether `bytes` is the one canonical encoding of a point of the curve that is not of small
/// order, and that point. Keys and signature nonces both go through it.
pub(crate) fn decode_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !y_is_canonical(bytes) {
        return None;
    }
    let point = CompressedEdwardsY(*bytes).decompress()?;
    // Besides being useless as keys or nonces, the small-order points include the only points
    // with x = 0 (y = ±1), whose "negative zero" sign bit would be a second encoding.
    if point.is_small_order() {
        return None;
    }
    Some(point)
}

/// An encoding is y (255 bits, little-endian) with x's sign in the top bit; y must be below
/// p = 2²⁵⁵ − 19. The only 255-bit values at or above p are p..2²⁵⁵ − 1: bytes
/// `[0xed..=0xff, 0xff × 30, 0x7f]` once the sign bit is cleared.
pub(crate) fn y_is_canonical(bytes: &[u8; 32]) -> bool {
    let at_least_p = bytes[0] >= 0xed && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[31] & 0x7f == 0x7f;
    !at_least_p
}

/// A signature whose encodings passed, with what its equation needs.
struct Prepared<'a> {
    r_bytes: [u8; 32],
    s: Scalar,
    r: EdwardsPoint,
    key_bytes: &'a [u8; 32],
    a: EdwardsPoint,
    /// k = SHA-512(R ‖ A ‖ M) mod ℓ.
    k: Scalar,
}

impl<'a> Prepared<'a> {
    fn new(item: &SignatureCheck<'a>) -> Option<Self> {
        let (r_half, s_half) = item.signature.0.split_at(32);
        let r_bytes: [u8; 32] = r_half.try_into().ok()?;
        let s_bytes: [u8; 32] = s_half.try_into().ok()?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
        let r = decode_point(&r_bytes)?;
        let key_bytes = item.key.as_bytes();
        let challenge: [u8; 64] = Sha512::new()
            .chain_update(r_bytes)
            .chain_update(key_bytes)
            .chain_update(item.message)
            .finalize()
            .into();
        Some(Prepared {
            r_bytes,
            s,
            r,
            key_bytes,
            a: item.key.to_edwards(),
            k: Scalar::from_bytes_mod_order_wide(&challenge),
        })
    }

    /// The single-signature rule: `[8]([s]B − [k]A − R) = 0`.
    fn holds(&self) -> bool {
        let expected_r = EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &-self.a, &self.s);
        (expected_r - self.r).mul_by_cofactor().is_identity()
    }
}

/// The batch equation `[8](−(Σ zᵢsᵢ)B + Σ zᵢRᵢ + Σ zᵢkᵢAᵢ) = 0` with 128-bit weights `zᵢ`.
fn batch_holds(items: &[(usize, Prepared<'_>)]) -> bool {
    let weights = batch_weights(items);
    let mut basepoint_coefficient = Scalar::ZERO;
    let mut scalars = Vec::with_capacity(2 * items.len() + 1);
    let mut points = Vec::with_capacity(2 * items.len() + 1);
    for ((_, check), z) in items.iter().zip(weights) {
        basepoint_coefficient += z * check.s;
        scalars.push(z);
        points.push(check.r);
        scalars.push(z * check.k);
        points.push(check.a);
    }
    scalars.push(-basepoint_coefficient);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// The weights: 128-bit values hashed from every signature, key and challenge in the batch, so
/// they are fixed only once every term is (Fiat-Shamir), and never zero (a zero weight would
/// drop its signature from the equation). The verdict does not depend on them except with
/// probability about 2⁻¹²⁸, which is why they need not be secret or random.
fn batch_weights(items: &[(usize, Prepared<'_>)]) -> Vec<Scalar> {
    let mut transcript = Sha512::new();
    transcript.update(b"ordinal/signature-batch/v1");
    transcript.update((items.len() as u64).to_le_bytes());
    for (_, check) in items {
        transcript.update(check.r_bytes);
        transcript.update(check.s.as_bytes());
        transcript.update(check.key_bytes);
        transcript.update(check.k.as_bytes());
    }
    let seed = transcript.finalize();
    let mut weights = Vec::with_capacity(items.len());
    let mut block: u64 = 0;
    while weights.len() < items.len() {
        let output: [u8; 64] = Sha512::new()
            .chain_update(seed)
            .chain_update(block.to_le_bytes())
            .finalize()
            .into();
        for chunk in output.chunks_exact(16) {
            if weights.len() == items.len() {
                break;
            }
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(chunk);
            let z = u128::from_le_bytes(bytes).max(1);
            weights.push(Scalar::from(z));
        }
        block += 1;
    }
    weights
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::constants::EIGHT_TORSION;

    use super::*;
    use crate::KeyPair;

    /// A signer that knows its secret scalar and nonces directly, so tests can build
    /// signatures `verify_batch` treats inconsistently: a valid equation except for a
    /// small-order component added to `R`.
    struct RawSigner {
        secret: Scalar,
        key: VerifyingKey,
    }

    impl RawSigner {
        fn new(seed: u64) -> Self {
            let secret = Scalar::from(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
                * Scalar::from(0x1234_5678_9abc_u64);
            let key = VerifyingKey::from(ED25519_BASEPOINT_POINT * secret);
            RawSigner { secret, key }
        }

        /// Signs with nonce point `[r]B + torsion`.
        fn sign(&self, message: &[u8], nonce: u64, torsion: EdwardsPoint) -> Signature {
            let r = Scalar::from(nonce) * Scalar::from(0xdead_beef_u64);
            let big_r = (ED25519_BASEPOINT_POINT * r + torsion).compress().to_bytes();
            let challenge: [u8; 64] = Sha512::new()
                .chain_update(big_r)
                .chain_update(self.key.as_bytes())
                .chain_update(message)
                .finalize()
                .into();
            let s = r + Scalar::from_bytes_mod_order_wide(&challenge) * self.secret;
            let mut bytes = [0u8; 64];
            bytes[..32].copy_from_slice(&big_r);
            bytes[32..].copy_from_slice(s.as_bytes());
            Signature(bytes)
        }
    }

    fn verdicts(keys: &[VerifyingKey], messages: &[Vec<u8>], signatures: &[Signature]) -> Vec<usize> {
        let items: Vec<SignatureCheck> = (0..keys.len())
            .map(|i| SignatureCheck {
                key: &keys[i],
                message: &messages[i],
                signature: &signatures[i],
            })
            .collect();
        verify_signatures(&items)
    }

    #[test]
    fn honest_signatures_pass_alone_and_together_and_culprits_are_named() {
        let signers: Vec<KeyPair> = (0..6u8).map(|i| KeyPair::from_seed([i; 32])).collect();
        let keys: Vec<VerifyingKey> = signers.iter().map(|k| k.public().decode().unwrap()).collect();
        let messages: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 3 + i as usize]).collect();
        let mut signatures: Vec<Signature> = signers
            .iter()
            .zip(&messages)
            .map(|(k, m)| k.sign_raw(m))
            .collect();
        assert!(verdicts(&keys, &messages, &signatures).is_empty());
        for i in 0..6 {
            assert!(verdicts(&keys[i..=i], &messages[i..=i], &signatures[i..=i]).is_empty());
        }
        assert!(verdicts(&[], &[], &[]).is_empty());
        signatures[1].0[40] ^= 1; // s changed
        signatures[3] = signers[0].sign_raw(&messages[3]); // wrong signer
        signatures[5].0[0] ^= 1; // R changed
        assert_eq!(verdicts(&keys, &messages, &signatures), vec![1, 3, 5]);
        assert_eq!(
            verdicts(&keys[1..=1], &messages[1..=1], &signatures[1..=1]),
            vec![0]
        );
    }

    #[test]
    fn a_torsioned_nonce_gets_one_verdict_in_every_grouping() {
        let signers: Vec<RawSigner> = (1..=40u64).map(RawSigner::new).collect();
        let keys: Vec<VerifyingKey> = signers.iter().map(|s| s.key).collect();
        let messages: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 16]).collect();
        let honest: Vec<Signature> = signers
            .iter()
            .zip(&messages)
            .enumerate()
            .map(|(i, (s, m))| s.sign(m, 1000 + i as u64, EdwardsPoint::default()))
            .collect();
        assert!(
            verdicts(&keys, &messages, &honest).is_empty(),
            "raw signatures are ordinary ed25519"
        );
        // Signer 0's signature over its message with an order-2 and then an order-8 component.
        for torsion in [EIGHT_TORSION[4], EIGHT_TORSION[1]] {
            let odd = signers[0].sign(&messages[0], 7, torsion);
            let dalek_single = ed25519_dalek::Signature::from_bytes(&odd.0);
            // Cofactorless single verification rejects it; `verify_batch` accepts it in some
            // groupings only, which is the disagreement this rule exists to remove.
            assert!(keys[0].verify_strict(&messages[0], &dalek_single).is_err());
            let mut dalek_outcomes = [false, false];
            let mut ours = Vec::new();
            for partner in 1..40 {
                let group_keys = [keys[0], keys[partner]];
                let group_messages = [messages[0].clone(), messages[partner].clone()];
                let group_signatures = [odd, honest[partner]];
                let dalek = ed25519_dalek::verify_batch(
                    &[&group_messages[0], &group_messages[1]],
                    &[
                        dalek_single,
                        ed25519_dalek::Signature::from_bytes(&group_signatures[1].0),
                    ],
                    &group_keys,
                )
                .is_ok();
                dalek_outcomes[usize::from(dalek)] = true;
                ours.push(verdicts(&group_keys, &group_messages, &group_signatures));
            }
            assert_eq!(
                dalek_outcomes,
                [true, true],
                "verify_batch's verdict varies with the grouping"
            );
            // Ours: the cofactored equation holds for it, alone and in every grouping.
            assert!(ours.iter().all(|failed| failed.is_empty()), "{ours:?}");
            assert!(verdicts(&keys[..1], &messages[..1], &[odd]).is_empty());
            let mut all = honest.clone();
            all[0] = odd;
            assert!(verdicts(&keys, &messages, &all).is_empty());
            // And it is still bound to its message and key.
            let mut wrong = honest.clone();
            wrong[1] = odd;
            assert_eq!(verdicts(&keys, &messages, &wrong), vec![1]);
        }
    }

    #[test]
    fn non_canonical_and_small_order_encodings_are_refused() {
        let signer = KeyPair::from_seed([9; 32]);
        let key = signer.public().decode().unwrap();
        let message = b"message".to_vec();
        let good = signer.sign_raw(&message);
        let check =
            |signature: Signature| verdicts(&[key], std::slice::from_ref(&message), &[signature]).is_empty();
        assert!(check(good));

        // s + ℓ: the same scalar mod ℓ, a second encoding.
        let s = Scalar::from_canonical_bytes(good.0[32..].try_into().unwrap()).unwrap();
        let mut wide = [0u8; 33];
        let mut carry = 0u16;
        // ℓ = 2²⁵² + 27742317777372353535851937790883648493, little-endian.
        let mut order = [0u8; 32];
        hex::decode_to_slice(
            "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010",
            &mut order,
        )
        .unwrap();
        assert_eq!(Scalar::from_bytes_mod_order(order), Scalar::ZERO);
        for i in 0..32 {
            let sum = u16::from(s.as_bytes()[i]) + u16::from(order[i]) + carry;
            wide[i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0, "s + ℓ fits in 256 bits");
        let mut malleated = good;
        malleated.0[32..].copy_from_slice(&wide[..32]);
        assert!(!check(malleated));

        // A small-order R (here the identity) with any s.
        let mut small = good;
        small.0[..32].copy_from_slice(&EdwardsPoint::default().compress().to_bytes());
        assert!(!check(small));

        // Encodings of y ≥ p are refused before decoding; y = p + 1 would otherwise decode as y = 1.
        let mut p_plus_one = [0xffu8; 32];
        p_plus_one[0] = 0xee;
        p_plus_one[31] = 0x7f;
        assert!(!y_is_canonical(&p_plus_one));
        assert!(decode_point(&p_plus_one).is_none());
        let mut below_p = p_plus_one;
        below_p[0] = 0xec; // p − 1 = −1 mod p: canonical, but a small-order point
        assert!(y_is_canonical(&below_p));
        assert!(decode_point(&below_p).is_none());
        assert!(decode_point(&key.to_bytes()).is_some());
        for torsion in EIGHT_TORSION {
            assert!(decode_point(&torsion.compress().to_bytes()).is_none());
        }
    }

    #[test]
    fn batch_weights_are_nonzero_distinct_and_fixed_by_the_batch() {
        let signers: Vec<KeyPair> = (0..9u8).map(|i| KeyPair::from_seed([i; 32])).collect();
        let keys: Vec<VerifyingKey> = signers.iter().map(|k| k.public().decode().unwrap()).collect();
        let signatures: Vec<Signature> = signers.iter().map(|k| k.sign_raw(b"m")).collect();
        let items: Vec<SignatureCheck> = (0..9)
            .map(|i| SignatureCheck {
                key: &keys[i],
                message: b"m",
                signature: &signatures[i],
            })
            .collect();
        let prepared: Vec<(usize, Prepared)> = items
            .iter()
            .enumerate()
            .map(|(i, c)| (i, Prepared::new(c).unwrap()))
            .collect();
        let weights = batch_weights(&prepared);
        assert_eq!(weights.len(), 9);
        assert_eq!(weights, batch_weights(&prepared));
        for (i, z) in weights.iter().enumerate() {
            assert_ne!(*z, Scalar::ZERO);
            assert!(z.as_bytes()[16..].iter().all(|&b| b == 0), "128-bit");
            assert!(weights[..i].iter().all(|other| other != z));
        }
        assert_ne!(batch_weights(&prepared[1..])[0], weights[1]);
    }
}
