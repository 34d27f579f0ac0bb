//! The cluster as a verifier sees it: members, their keys and weights, and the quorum
//! arithmetic of `shared/WEIGHTS.md`.

use std::fmt;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::{CryptoError, Digest, PublicKey};

/// A replica's index in the committee, 0..n.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct ReplicaId(pub u16);

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl ReplicaId {
    /// The id as an index into per-replica vectors.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One slot of the replica table: a replica ever admitted to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id; slots are listed in id order 0..slots and never reused.
    pub id: ReplicaId,
    /// Its signing key.
    pub public_key: PublicKey,
    /// Its voting weight: at least 1 for a member of this epoch, 0 for a replica that has
    /// left (or not joined yet).
    pub weight: u64,
}

impl Member {
    /// Whether it votes in this epoch.
    pub fn is_active(&self) -> bool {
        self.weight > 0
    }
}

/// The members of one epoch with their weights and the thresholds derived from them.
///
/// Membership changes keep ids stable: the table holds a slot for every replica ever
/// admitted, in id order, and a replica outside this epoch's membership keeps its slot with
/// weight 0. So a per-replica vector indexed by id stays valid across epochs, and a later
/// epoch's table extends every earlier one's.
///
/// Built only through [`Committee::new`], which refuses weight vectors that cannot be both safe
/// and live: with F the sum of the f largest weights and W the total, it requires W > 3F and
/// uses the smallest threshold Q = floor((W + F) / 2) + 1, so that two quorums overlap in more
/// than F (a correct replica) and the correct replicas alone reach Q.
#[derive(Clone, Debug)]
pub struct Committee {
    cluster_id: Digest,
    /// Names the member keys. Signatures cover it instead of the weight epoch, so a vote
    /// stays valid when only weights change and certificates of every weight epoch verify
    /// with the same keys. Changes only with membership.
    key_set: u64,
    epoch: u64,
    members: Vec<Member>,
    keys: Vec<VerifyingKey>,
    faults: usize,
    total_weight: u64,
    faulty_weight: u64,
    quorum: u64,
}

impl Committee {
    /// Validates and builds a committee. Slots must be listed with ids 0..slots in order; at
    /// least one must hold weight.
    pub fn new(
        cluster_id: Digest,
        epoch: u64,
        members: Vec<Member>,
        faults: usize,
    ) -> Result<Self, CryptoError> {
        let n = members.len();
        if n == 0 || n > u16::MAX as usize || !members.iter().any(Member::is_active) {
            return Err(CryptoError::BadCommittee(format!("{n} members")));
        }
        let mut keys = Vec::with_capacity(n);
        for (i, member) in members.iter().enumerate() {
            if member.id.index() != i {
                return Err(CryptoError::BadCommittee(format!(
                    "member at position {i} has id {}",
                    member.id
                )));
            }
            keys.push(member.public_key.decode()?);
        }
        for (i, a) in members.iter().enumerate() {
            if members[..i].iter().any(|b| b.public_key == a.public_key) {
                return Err(CryptoError::BadCommittee(format!(
                    "replica {} reuses a key",
                    a.id
                )));
            }
        }
        let weights: Vec<u64> = members
            .iter()
            .filter(|m| m.is_active())
            .map(|m| m.weight)
            .collect();
        let thresholds = Thresholds::compute(&weights, faults)?;
        Ok(Committee {
            cluster_id,
            key_set: 0,
            epoch,
            members,
            keys,
            faults,
            total_weight: thresholds.total,
            faulty_weight: thresholds.faulty,
            quorum: thresholds.quorum,
        })
    }

    /// A committee of equal weights tolerating the most faults n allows: f = (n - 1) / 3.
    pub fn equal_weights(cluster_id: Digest, keys: &[PublicKey]) -> Result<Self, CryptoError> {
        let members = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Member {
                id: ReplicaId(i as u16),
                public_key: *k,
                weight: 1,
            })
            .collect();
        Committee::new(cluster_id, 0, members, keys.len().saturating_sub(1) / 3)
    }

    /// The cluster this committee belongs to; part of every signed byte string.
    pub fn cluster_id(&self) -> Digest {
        self.cluster_id
    }

    /// The epoch whose weights these are.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The key set signatures are bound to (see the field); 0 until membership can change.
    pub fn key_set(&self) -> u64 {
        self.key_set
    }

    /// The weights in id order.
    pub fn weights(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.weight).collect()
    }

    /// The same members and f with new weights (one per slot, 0 exactly for the slots
    /// outside the membership), as weight epoch `epoch`. Refuses a vector of the wrong length,
    /// one that changes who is a member, or one [`Thresholds::compute`] does not admit.
    pub fn reweighted(&self, epoch: u64, weights: &[u64]) -> Result<Committee, CryptoError> {
        if weights.len() != self.members.len() {
            return Err(CryptoError::BadCommittee(format!(
                "{} weights for {} slots",
                weights.len(),
                self.members.len()
            )));
        }
        if let Some(m) = self
            .members
            .iter()
            .zip(weights)
            .find(|(m, w)| m.is_active() != (**w > 0))
        {
            return Err(CryptoError::BadCommittee(format!(
                "a weight change cannot add or remove replica {}",
                m.0.id
            )));
        }
        let members = self
            .members
            .iter()
            .zip(weights)
            .map(|(m, w)| Member {
                weight: *w,
                ..m.clone()
            })
            .collect();
        let mut next = Committee::new(self.cluster_id, epoch, members, self.faults)?;
        next.key_set = self.key_set;
        Ok(next)
    }

    /// The most replicas that can stay outside a quorum: the lightest ones, while their
    /// weight stays within W − Q.
    fn most_outside_a_quorum(&self) -> usize {
        let mut weights: Vec<u64> = self.weights().into_iter().filter(|w| *w > 0).collect();
        weights.sort_unstable();
        let slack = self.total_weight - self.quorum;
        let mut outside = 0;
        let mut weight = 0u64;
        for w in weights {
            weight += w;
            if weight > slack {
                break;
            }
            outside += 1;
        }
        outside
    }

    /// Whether a quorum of this committee and a quorum of `other` always share a correct
    /// replica, so that a certificate of one epoch and a quorum of the next cannot miss each
    /// other while the log crosses the boundary. A quorum has at least m − M members (m the
    /// members, M the most that can stay outside one), so two quorums share at least
    /// (m₁ − M₁) + (m₂ − M₂) − |members₁ ∪ members₂| replicas, all members of both epochs; with
    /// at most f₁ faulty among the first epoch's members and f₂ among the second's, at most
    /// min(f₁, f₂) of them are faulty, so the rule asks for min(f₁, f₂) + 1. Sufficient,
    /// not necessary: moving weight from one heavy set straight to another
    /// (`[2, 2, 1, 1, 1]` to `[1, 1, 1, 2, 2]`) is refused and takes two steps through a
    /// flatter vector, and a cluster grows or shrinks by one replica at a time from equal
    /// weights (4 to 5: 3 + 4 − 5 = 2 > 1; 6 to 7, where f becomes 2: 4 + 5 − 7 = 2 > 1).
    pub fn jointly_safe_with(&self, other: &Committee) -> bool {
        if self.cluster_id != other.cluster_id {
            return false;
        }
        // Slots are never reused: the shorter table must be a prefix of the longer one.
        let same_slots = self
            .members
            .iter()
            .zip(&other.members)
            .all(|(a, b)| a.id == b.id && a.public_key == b.public_key);
        if !same_slots {
            return false;
        }
        let slots = self.members.len().max(other.members.len());
        let weight_at = |c: &Committee, i: usize| c.members.get(i).map_or(0, |m| m.weight);
        // The same weights: two quorums of one vector already share more than F.
        if self.faults == other.faults && (0..slots).all(|i| weight_at(self, i) == weight_at(other, i)) {
            return true;
        }
        let union = (0..slots)
            .filter(|&i| weight_at(self, i) > 0 || weight_at(other, i) > 0)
            .count();
        let smallest_quorums =
            (self.size() - self.most_outside_a_quorum()) + (other.size() - other.most_outside_a_quorum());
        smallest_quorums > union + self.faults.min(other.faults)
    }

    /// The next membership: `joining` (a new slot at the end, with weight `weight`) or the
    /// removal of `leaving`, with every member at `weight`, f = ⌊(m − 1)/3⌋ for the new member
    /// count m, as epoch `epoch`. Whether it may follow this epoch is
    /// [`Committee::jointly_safe_with`]'s call.
    pub fn with_membership(
        &self,
        epoch: u64,
        change: MembershipEdit,
        weight: u64,
    ) -> Result<Committee, CryptoError> {
        let weight = weight.max(1);
        let mut members: Vec<Member> = self
            .members
            .iter()
            .map(|m| Member {
                weight: if m.is_active() { weight } else { 0 },
                ..m.clone()
            })
            .collect();
        match change {
            MembershipEdit::Join(public_key) => {
                if members.iter().any(|m| m.public_key == public_key) {
                    return Err(CryptoError::BadCommittee(
                        "the joining key already has a slot; slots are never reused".into(),
                    ));
                }
                let id = u16::try_from(members.len())
                    .map_err(|_| CryptoError::BadCommittee("no free replica id".into()))?;
                members.push(Member {
                    id: ReplicaId(id),
                    public_key,
                    weight,
                });
            }
            MembershipEdit::Leave(id) => match members.get_mut(id.index()) {
                Some(m) if m.is_active() => m.weight = 0,
                _ => return Err(CryptoError::BadCommittee(format!("replica {id} is not a member"))),
            },
        }
        let count = members.iter().filter(|m| m.is_active()).count();
        let mut next = Committee::new(self.cluster_id, epoch, members, count.saturating_sub(1) / 3)?;
        next.key_set = self.key_set;
        Ok(next)
    }

    /// Number of members (replicas with weight in this epoch).
    pub fn size(&self) -> usize {
        self.members.iter().filter(|m| m.is_active()).count()
    }

    /// Number of slots: every id below it is a replica this table knows, member or not.
    pub fn slots(&self) -> usize {
        self.members.len()
    }

    /// The members of this epoch in id order.
    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.members.iter().filter(|m| m.is_active())
    }

    /// Every slot in id order, members and replicas outside this epoch alike.
    pub fn slot_table(&self) -> &[Member] {
        &self.members
    }

    /// The members' ids in order.
    pub fn ids(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.members().map(|m| m.id)
    }

    /// The `k`-th member in id order, wrapping: round-robin over members only.
    pub fn nth_member(&self, k: u64) -> ReplicaId {
        let n = self.size().max(1) as u64;
        self.ids().nth((k % n) as usize).unwrap_or(ReplicaId(0))
    }

    /// The number of Byzantine replicas tolerated.
    pub fn faults(&self) -> usize {
        self.faults
    }

    /// W, the sum of all weights.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// F, the sum of the f largest weights: the most weight a faulty set can hold.
    pub fn faulty_weight(&self) -> u64 {
        self.faulty_weight
    }

    /// Q, the weight a quorum must reach.
    pub fn quorum_weight(&self) -> u64 {
        self.quorum
    }

    /// The weight of replica `id` (0 outside the membership), or `None` for an unknown id.
    pub fn weight(&self, id: ReplicaId) -> Option<u64> {
        self.members.get(id.index()).map(|m| m.weight)
    }

    /// The decoded key of slot `id`, member or not.
    pub fn key(&self, id: ReplicaId) -> Option<&VerifyingKey> {
        self.keys.get(id.index())
    }

    /// Whether `id` is a member of this epoch.
    pub fn contains(&self, id: ReplicaId) -> bool {
        self.members.get(id.index()).is_some_and(Member::is_active)
    }

    /// The slot holding `key`, member or not.
    pub fn slot_of(&self, key: &PublicKey) -> Option<&Member> {
        self.members.iter().find(|m| m.public_key == *key)
    }

    /// The total weight of a set of distinct signers (unknown ids count nothing).
    pub fn weight_of<I: IntoIterator<Item = ReplicaId>>(&self, ids: I) -> u64 {
        let mut seen = vec![false; self.members.len()];
        let mut total = 0u64;
        for id in ids {
            if let Some(slot) = seen.get_mut(id.index()) {
                if !*slot {
                    *slot = true;
                    total += self.members[id.index()].weight;
                }
            }
        }
        total
    }

    /// Whether these distinct signers reach the quorum threshold Q.
    pub fn is_quorum<I: IntoIterator<Item = ReplicaId>>(&self, ids: I) -> bool {
        self.weight_of(ids) >= self.quorum
    }

    /// Whether these signers hold more than F, so that at least one of them is correct.
    pub fn includes_correct<I: IntoIterator<Item = ReplicaId>>(&self, ids: I) -> bool {
        self.weight_of(ids) > self.faulty_weight
    }
}

/// A membership change, as [`Committee::with_membership`] applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipEdit {
    /// A new replica with this key takes the next free id.
    Join(PublicKey),
    /// This member leaves; its slot stays, with weight 0.
    Leave(ReplicaId),
}

/// The numbers derived from a weight vector and f.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// W.
    pub total: u64,
    /// F: the sum of the f largest weights.
    pub faulty: u64,
    /// Q = floor((W + F) / 2) + 1.
    pub quorum: u64,
}

impl Thresholds {
    /// Computes W, F and Q, refusing vectors where no threshold is both safe and live (W ≤ 3F).
    pub fn compute(weights: &[u64], faults: usize) -> Result<Self, CryptoError> {
        if faults >= weights.len() {
            return Err(CryptoError::InadmissibleWeights {
                total: 0,
                faulty: 0,
                reason: "f must be smaller than n",
            });
        }
        let mut sorted = weights.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let sum = |ws: &[u64]| ws.iter().try_fold(0u64, |acc, w| acc.checked_add(*w));
        let overflow = CryptoError::InadmissibleWeights {
            total: 0,
            faulty: 0,
            reason: "weights overflow",
        };
        let total = sum(&sorted).ok_or(overflow.clone())?;
        let faulty = sum(&sorted[..faults]).ok_or(overflow.clone())?;
        let three_f = faulty.checked_mul(3).ok_or(overflow)?;
        if total <= three_f {
            return Err(CryptoError::InadmissibleWeights {
                total,
                faulty,
                reason: "need W > 3F",
            });
        }
        let quorum = (total + faulty) / 2 + 1;
        // Follows from W > 3F; checked anyway because liveness depends on it.
        if quorum > total - faulty {
            return Err(CryptoError::InadmissibleWeights {
                total,
                faulty,
                reason: "Q > W - F",
            });
        }
        Ok(Thresholds {
            total,
            faulty,
            quorum,
        })
    }
}

/// The range every replica's weight must stay in, fixed in the cluster configuration. Weight
/// changes move weights only inside it, and only to vectors [`Thresholds::compute`] admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightBounds {
    /// The least weight a replica may hold (at least 1).
    pub min: u64,
    /// The most.
    pub max: u64,
}

impl WeightBounds {
    /// Bounds inside which *every* vector of `n` weights is admissible with `faults`: with all
    /// weights in [min, max], F ≤ f·max and W ≥ f·max + (n − f)·min, so W > 3F holds whenever
    /// (n − f)·min > 2f·max. For n = 3f + 1 + Δ that is max/min < (2f + 1 + Δ)/(2f): weights may
    /// differ by 1/(2f) of the least at n = 3f + 1 (4 and 3 at f = 1: `[4, 3, 3, 3]` is
    /// admissible, `[5, 3, 3, 3]` is not), and by more with every spare replica. Returns the
    /// widest such range with `min` as given.
    pub fn always_admissible(n: usize, faults: usize, min: u64) -> Option<WeightBounds> {
        let min = min.max(1);
        if faults == 0 {
            return Some(WeightBounds { min, max: u64::MAX });
        }
        let (n, f) = (n as u128, faults as u128);
        if n <= 3 * f {
            return None;
        }
        // Largest max with (n - f)·min > 2f·max.
        let max = ((n - f) * min as u128 - 1) / (2 * f);
        let max = u64::try_from(max).ok()?;
        (max >= min).then_some(WeightBounds { min, max })
    }

    /// Checks a whole vector: every weight in range and the vector admissible.
    pub fn check(&self, weights: &[u64], faults: usize) -> Result<Thresholds, CryptoError> {
        if let Some(w) = weights.iter().find(|w| **w < self.min.max(1) || **w > self.max) {
            return Err(CryptoError::BadCommittee(format!(
                "weight {w} outside [{}, {}]",
                self.min, self.max
            )));
        }
        Thresholds::compute(weights, faults)
    }
}

/// The WHEAT/AWARE weight shape for n = 3f + 1 + Δ replicas (Sousa and Bessani, SRDS 2015;
/// Berger, Reiser, Sousa and Bessani, SRDS 2019): the 2f replicas in `heavy` get
/// Vmax = 1 + Δ/f, the others 1, scaled by f to stay integral (Vmax = f + Δ, Vmin = f) and
/// reduced. Then F = f·(f + Δ) and W = 3f² + 3fΔ + f = 3F + f > 3F: admissible for every Δ.
/// The 2f heavy replicas and any one other already reach Q (2f(f + Δ) + f ≥ ⌊(W + F)/2⌋ + 1),
/// so 2f + 1 replicas decide where equal weights need ⌊(n + f)/2⌋ + 1: the heavy replicas
/// should be the fastest.
///
/// `heavy` must name 2f distinct members; otherwise, or when n < 3f + 1, `None`.
pub fn aware_weights(n: usize, faults: usize, heavy: &[ReplicaId]) -> Option<Vec<u64>> {
    if faults == 0 {
        return Some(vec![1; n]);
    }
    let delta = n.checked_sub(3 * faults + 1)?;
    if heavy.len() != 2 * faults || heavy.iter().any(|id| id.index() >= n) {
        return None;
    }
    let mut sorted: Vec<usize> = heavy.iter().map(|id| id.index()).collect();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != heavy.len() {
        return None;
    }
    let (vmax, vmin) = ((faults + delta) as u64, faults as u64);
    let divisor = gcd(vmax, vmin);
    let mut weights = vec![vmin / divisor; n];
    for i in sorted {
        weights[i] = vmax / divisor;
    }
    Some(weights)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked examples of shared/WEIGHTS.md.
    #[test]
    fn weights_table() {
        struct Row {
            weights: &'static [u64],
            f: usize,
            expect: Option<(u64, u64, u64)>,
        }
        let table = [
            Row {
                weights: &[1, 1, 1, 1],
                f: 1,
                expect: Some((4, 1, 3)),
            },
            Row {
                weights: &[1; 7],
                f: 2,
                expect: Some((7, 2, 5)),
            },
            Row {
                weights: &[4, 3, 3, 3],
                f: 1,
                expect: Some((13, 4, 9)),
            },
            Row {
                weights: &[5, 3, 3, 3],
                f: 1,
                expect: None,
            },
            Row {
                weights: &[2, 2, 1, 1, 1],
                f: 1,
                expect: Some((7, 2, 5)),
            },
            Row {
                weights: &[3, 3, 3, 3, 2, 2, 2],
                f: 2,
                expect: None,
            },
            Row {
                weights: &[3, 3, 3, 3, 2, 2, 2],
                f: 1,
                expect: Some((18, 3, 11)),
            },
        ];
        for row in table {
            let got = Thresholds::compute(row.weights, row.f)
                .ok()
                .map(|t| (t.total, t.faulty, t.quorum));
            assert_eq!(got, row.expect, "weights {:?} f={}", row.weights, row.f);
        }
    }

    /// Weight of each subset of n replicas (bit i = replica i).
    fn subset_weights(weights: &[u64]) -> Vec<u64> {
        let n = weights.len();
        let mut out = vec![0u64; 1 << n];
        for set in 1..1usize << n {
            let low = set.trailing_zeros() as usize;
            out[set] = out[set & (set - 1)] + weights[low];
        }
        out
    }

    /// Whether threshold `quorum` is safe and live for every faulty set of `faults` replicas,
    /// checked over all subsets: (1) every two quorums A, B share a correct replica, and (2)
    /// the correct replicas form a quorum. Quorums are closed upwards, so a quorum B avoiding
    /// A's correct members exists exactly when the complement of A ∩ correct is a quorum: one
    /// pass over the subsets A checks every pair.
    fn safe_and_live(weights: &[u64], faults: usize, quorum: u64, subset: &[u64]) -> bool {
        let n = weights.len();
        let all = (1usize << n) - 1;
        for faulty in (0..=all).filter(|s| s.count_ones() as usize == faults) {
            let correct = all & !faulty;
            if subset[correct] < quorum {
                return false;
            }
            for a in (0..=all).filter(|a| subset[*a] >= quorum) {
                if subset[all & !(a & correct)] >= quorum {
                    return false;
                }
            }
        }
        true
    }

    /// The direct pairwise check, for small n: it keeps the shortcut above honest.
    fn safe_and_live_pairwise(weights: &[u64], faults: usize, quorum: u64, subset: &[u64]) -> bool {
        let n = weights.len();
        let all = (1usize << n) - 1;
        let quorums: Vec<usize> = (0..=all).filter(|s| subset[*s] >= quorum).collect();
        (0..=all)
            .filter(|s| s.count_ones() as usize == faults)
            .all(|faulty| {
                let correct = all & !faulty;
                subset[correct] >= quorum
                    && quorums
                        .iter()
                        .all(|a| quorums.iter().all(|b| a & b & correct != 0))
            })
    }

    /// For every n ≤ 10 and every f < n, many random vectors: an admitted vector's Q is safe
    /// and live over all subsets, and a vector is rejected exactly when W ≤ 3F, with F found
    /// by brute force too.
    #[test]
    fn quorum_intersection_brute_force_up_to_ten_replicas() {
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut admitted, mut rejected) = (0, 0);
        for n in 1..=10usize {
            for f in 0..n {
                let vectors = if 3 * f < n { 60 } else { 6 };
                for v in 0..vectors {
                    // Spreads from equal weights to a factor of 8, and AWARE shapes.
                    let spread = 1 + (v % 8) as u64;
                    let mut weights: Vec<u64> = (0..n).map(|_| 4 + next() % (4 * spread)).collect();
                    if v % 10 == 9 && n > 3 * f && f > 0 {
                        let heavy: Vec<ReplicaId> = (0..2 * f).map(|i| ReplicaId(i as u16)).collect();
                        weights = aware_weights(n, f, &heavy).unwrap();
                    }
                    let subset = subset_weights(&weights);
                    // F by brute force: the heaviest set of f replicas.
                    let all = (1usize << n) - 1;
                    let faulty_weight = (0..=all)
                        .filter(|s| s.count_ones() as usize == f)
                        .map(|s| subset[s])
                        .max()
                        .unwrap_or(0);
                    let total = subset[all];
                    match Thresholds::compute(&weights, f) {
                        Ok(t) => {
                            admitted += 1;
                            assert_eq!((t.total, t.faulty), (total, faulty_weight));
                            assert!(total > 3 * faulty_weight);
                            assert!(
                                safe_and_live(&weights, f, t.quorum, &subset),
                                "{weights:?} f={f} Q={}",
                                t.quorum
                            );
                            if n <= 6 {
                                assert!(safe_and_live_pairwise(&weights, f, t.quorum, &subset));
                            }
                        }
                        Err(_) => {
                            // Rejected exactly when W ≤ 3F. (That condition is what guarantees
                            // a threshold for every vector with this W and F; a particular
                            // integer vector may still happen to have one, e.g. [9, 15, 7, 11]
                            // at Q = 27, whose subset sums skip the bad overlaps. Such vectors
                            // stay rejected: the rule must not depend on luck in the sums.)
                            rejected += 1;
                            assert!(total <= 3 * faulty_weight, "{weights:?} f={f} wrongly rejected");
                        }
                    }
                }
            }
        }
        assert!(
            admitted > 1000 && rejected > 300,
            "{admitted} admitted, {rejected} rejected"
        );
    }

    #[test]
    fn aware_weights_follow_wheat() {
        let heavy = |ids: &[u16]| ids.iter().map(|i| ReplicaId(*i)).collect::<Vec<_>>();
        // n = 5, f = 1, Δ = 1: the WEIGHTS.md row.
        let w = aware_weights(5, 1, &heavy(&[3, 4])).unwrap();
        assert_eq!(w, vec![1, 1, 1, 2, 2]);
        let t = Thresholds::compute(&w, 1).unwrap();
        assert_eq!((t.total, t.faulty, t.quorum), (7, 2, 5));
        // n = 7, f = 2, Δ = 0: no spare replica, no skew.
        assert_eq!(aware_weights(7, 2, &heavy(&[0, 1, 2, 3])).unwrap(), vec![1; 7]);
        // n = 9, f = 2, Δ = 2: Vmax = 2.
        let w = aware_weights(9, 2, &heavy(&[0, 2, 4, 6])).unwrap();
        assert_eq!(w, vec![2, 1, 2, 1, 2, 1, 2, 1, 1]);
        Thresholds::compute(&w, 2).unwrap();
        // n = 10, f = 3, Δ = 0; n = 10, f = 2, Δ = 3: Vmax = 5/2 scaled to 5 and 2.
        assert_eq!(
            aware_weights(10, 3, &heavy(&[0, 1, 2, 3, 4, 5])).unwrap(),
            vec![1; 10]
        );
        let w = aware_weights(10, 2, &heavy(&[6, 7, 8, 9])).unwrap();
        assert_eq!(w, vec![2, 2, 2, 2, 2, 2, 5, 5, 5, 5]);
        Thresholds::compute(&w, 2).unwrap();
        // Wrong shapes.
        assert!(aware_weights(4, 1, &heavy(&[0])).is_none());
        assert!(aware_weights(4, 1, &heavy(&[0, 0])).is_none());
        assert!(aware_weights(4, 1, &heavy(&[0, 4])).is_none());
        assert!(aware_weights(3, 1, &heavy(&[0, 1])).is_none());
    }

    #[test]
    fn the_always_admissible_range_is_tight() {
        for n in 1..=10usize {
            for f in 1..=(n - 1) / 3 {
                for min in [1u64, 2, 3, 7, 10] {
                    let bounds = WeightBounds::always_admissible(n, f, min);
                    let Some(bounds) = bounds else {
                        continue;
                    };
                    // The worst vector in range (f at max, the rest at min) is admissible...
                    let mut worst = vec![bounds.min; n];
                    worst[..f].fill(bounds.max);
                    bounds.check(&worst, f).unwrap();
                    // ...and one step wider it is not.
                    worst[..f].fill(bounds.max + 1);
                    assert!(Thresholds::compute(&worst, f).is_err(), "n={n} f={f} min={min}");
                }
            }
        }
        // n = 4, f = 1 from 3: up to 4, as in WEIGHTS.md.
        assert_eq!(
            WeightBounds::always_admissible(4, 1, 3),
            Some(WeightBounds { min: 3, max: 4 })
        );
        let bounds = WeightBounds { min: 1, max: 4 };
        assert!(bounds.check(&[5, 1, 1, 1], 1).is_err());
        assert!(bounds.check(&[0, 1, 1, 1], 1).is_err());
    }

    /// Every quorum of `ca` (weights `a`, one per slot, 0 for a non-member) shares more than
    /// `f` replicas with every quorum of `cb`, over all subsets of members.
    fn assert_quorums_meet(a: &[u64], ca: &Committee, b: &[u64], cb: &Committee, f: usize) {
        let all = (1usize << a.len().max(b.len())) - 1;
        let (sa, sb) = (subset_weights(a), subset_weights(b));
        let members = |w: &[u64]| (0..w.len()).filter(|&i| w[i] > 0).fold(0usize, |m, i| m | 1 << i);
        let (ma, mb) = (members(a), members(b));
        for qa in (0..=all).filter(|s| s & !ma == 0 && sa[*s] >= ca.quorum_weight()) {
            for qb in (0..=all).filter(|s| s & !mb == 0 && sb[*s] >= cb.quorum_weight()) {
                assert!(
                    (qa & qb).count_ones() as usize > f,
                    "{a:?} and {b:?} (f={f}): quorums {qa:b} and {qb:b} may meet only in faulty replicas"
                );
            }
        }
    }

    /// A deterministic xorshift generator for the brute-force tests.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    fn joint_test_keys() -> Vec<PublicKey> {
        (1..=8u8)
            .map(|i| crate::KeyPair::from_seed([i; 32]).public())
            .collect()
    }

    /// A committee of up to 8 slots with these weights (0: not a member) and `f`.
    fn joint_test_committee(weights: &[u64], f: usize) -> Option<Committee> {
        let keys = joint_test_keys();
        let members = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Member {
                id: ReplicaId(i as u16),
                public_key: keys[i],
                weight: *w,
            })
            .collect();
        Committee::new(Digest::of(b"joint"), 0, members, f).ok()
    }

    /// Over all pairs of quorums, by brute force for n ≤ 8: whenever `jointly_safe_with`
    /// admits two vectors, every quorum of one shares a correct replica with every quorum of
    /// the other, for every faulty set of f. The refused pairs include some that are in fact
    /// safe (the rule is a sufficient bound), and the usual AWARE-to-AWARE swap, which is not.
    #[test]
    fn consecutive_epochs_admitted_only_when_their_quorums_meet_in_a_correct_replica() {
        let mut next = xorshift(0x2545f4914f6cdd1d);
        let committee = joint_test_committee;
        let (mut admitted, mut refused) = (0, 0);
        for n in 4..=8usize {
            for f in 1..=(n - 1) / 3 {
                for _ in 0..80 {
                    let spread = 1 + next() % 3;
                    let a: Vec<u64> = (0..n).map(|_| 1 + next() % spread).collect();
                    let b: Vec<u64> = (0..n).map(|_| 1 + next() % spread).collect();
                    let (Some(ca), Some(cb)) = (committee(&a, f), committee(&b, f)) else {
                        continue;
                    };
                    if !ca.jointly_safe_with(&cb) {
                        refused += 1;
                        continue;
                    }
                    admitted += 1;
                    assert!(cb.jointly_safe_with(&ca), "symmetric");
                    assert_quorums_meet(&a, &ca, &b, &cb, f);
                }
            }
        }
        assert!(
            admitted > 100 && refused > 30,
            "{admitted} admitted, {refused} refused"
        );
        let swap_from = committee(&[2, 2, 1, 1, 1], 1).unwrap();
        let flat = committee(&[1; 5], 1).unwrap();
        let swap_to = committee(&[1, 1, 1, 2, 2], 1).unwrap();
        assert!(!swap_from.jointly_safe_with(&swap_to));
        assert!(swap_from.jointly_safe_with(&flat) && flat.jointly_safe_with(&swap_to));
        assert!(swap_from.jointly_safe_with(&swap_from.clone()));
        // Reweighting keeps keys, f and the key set; a bad vector is refused.
        let re = flat.reweighted(3, &[2, 2, 1, 1, 1]).unwrap();
        assert_eq!((re.epoch(), re.key_set(), re.faults()), (3, 0, 1));
        assert!(flat.reweighted(1, &[1, 1, 1]).is_err());
        assert!(flat.reweighted(1, &[9, 1, 1, 1, 1]).is_err());
        // Weight changes cannot add or remove members.
        assert!(flat.reweighted(1, &[1, 1, 1, 1, 0]).is_err());
    }

    /// Membership changes, by brute force over slot tables of up to 8: two committees with
    /// different members (and so different f) that `jointly_safe_with` admits have quorums
    /// that share more than min(f₁, f₂) replicas (members of both, of which at most that many
    /// are faulty). Growing and shrinking by one from equal weights is admitted, also where f
    /// changes; jumping by three, or shrinking out of a skewed vector, is not.
    #[test]
    fn membership_changes_admitted_only_when_quorums_meet_in_a_correct_replica() {
        let mut next = xorshift(0x9e3779b97f4a7c15);
        let keys = joint_test_keys();
        // f follows the member count.
        let committee = |weights: &[u64]| {
            let m = weights.iter().filter(|w| **w > 0).count();
            joint_test_committee(weights, m.saturating_sub(1) / 3)
        };
        let (mut admitted, mut refused) = (0, 0);
        for slots in 4..=8usize {
            for _ in 0..400 {
                let spread = 1 + next() % 2;
                let mut draw = || -> Vec<u64> {
                    (0..slots)
                        .map(|_| if next() % 5 == 0 { 0 } else { 1 + next() % spread })
                        .collect()
                };
                let (a, b) = (draw(), draw());
                let (Some(ca), Some(cb)) = (committee(&a), committee(&b)) else {
                    continue;
                };
                if !ca.jointly_safe_with(&cb) {
                    refused += 1;
                    continue;
                }
                admitted += 1;
                assert!(cb.jointly_safe_with(&ca), "symmetric");
                let f = ca.faults().min(cb.faults());
                assert_quorums_meet(&a, &ca, &b, &cb, f);
            }
        }
        assert!(
            admitted > 100 && refused > 100,
            "{admitted} admitted, {refused} refused"
        );

        let four = committee(&[1, 1, 1, 1]).unwrap();
        let five = four.with_membership(1, MembershipEdit::Join(keys[4]), 1).unwrap();
        assert_eq!(
            (five.size(), five.slots(), five.faults(), five.quorum_weight()),
            (5, 5, 1, 4)
        );
        assert!(four.jointly_safe_with(&five) && five.jointly_safe_with(&four));
        let back = five
            .with_membership(2, MembershipEdit::Leave(ReplicaId(1)), 1)
            .unwrap();
        assert_eq!((back.size(), back.slots(), back.faults()), (4, 5, 1));
        assert!(five.jointly_safe_with(&back));
        assert!(!back.contains(ReplicaId(1)) && back.contains(ReplicaId(4)));
        assert_eq!(back.ids().collect::<Vec<_>>(), [0, 2, 3, 4].map(ReplicaId));
        assert_eq!(back.nth_member(5), ReplicaId(2));
        // Slots are never reused; only members leave.
        assert!(back.with_membership(3, MembershipEdit::Join(keys[1]), 1).is_err());
        assert!(back
            .with_membership(3, MembershipEdit::Leave(ReplicaId(1)), 1)
            .is_err());
        // Four to seven at once leaves quorums meeting in too few; six to seven (f from 1 to
        // 2) one at a time is fine, and so f grows with the cluster.
        let seven = committee(&[1; 7]).unwrap();
        assert!(!four.jointly_safe_with(&seven));
        let six = committee(&[1, 1, 1, 1, 1, 1, 0]).unwrap();
        assert_eq!((six.faults(), seven.faults()), (1, 2));
        assert!(six.jointly_safe_with(&seven) && seven.jointly_safe_with(&six));
        // A skewed five to four: 3 + 3 − 5 = 1 shared, f + 1 = 2 needed.
        let skewed = committee(&[2, 2, 1, 1, 1]).unwrap();
        let shrunk = skewed
            .with_membership(1, MembershipEdit::Leave(ReplicaId(4)), 1)
            .unwrap();
        assert!(!skewed.jointly_safe_with(&shrunk));
    }
}
