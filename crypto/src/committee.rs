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

/// One member as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id; members are listed in id order 0..n.
    pub id: ReplicaId,
    /// Its signing key.
    pub public_key: PublicKey,
    /// Its voting weight, at least 1.
    pub weight: u64,
}

/// The members of one epoch with their weights and the thresholds derived from them.
///
/// Built only through [`Committee::new`], which refuses weight vectors that cannot be both safe
/// and live: with F the sum of the f largest weights and W the total, it requires W > 3F and
/// uses the smallest threshold Q = floor((W + F) / 2) + 1, so that two quorums overlap in more
/// than F (a correct replica) and the correct replicas alone reach Q.
#[derive(Clone, Debug)]
pub struct Committee {
    cluster_id: Digest,
    epoch: u64,
    members: Vec<Member>,
    keys: Vec<VerifyingKey>,
    faults: usize,
    total_weight: u64,
    faulty_weight: u64,
    quorum: u64,
}

impl Committee {
    /// Validates and builds a committee. Members must be listed with ids 0..n in order.
    pub fn new(
        cluster_id: Digest,
        epoch: u64,
        members: Vec<Member>,
        faults: usize,
    ) -> Result<Self, CryptoError> {
        let n = members.len();
        if n == 0 || n > u16::MAX as usize {
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
            if member.weight == 0 {
                return Err(CryptoError::BadCommittee(format!(
                    "replica {} has weight 0",
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
        let weights: Vec<u64> = members.iter().map(|m| m.weight).collect();
        let thresholds = Thresholds::compute(&weights, faults)?;
        Ok(Committee {
            cluster_id,
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

    /// Number of replicas.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The members in id order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Ids 0..n.
    pub fn ids(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.members.iter().map(|m| m.id)
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

    /// The weight of replica `id`, or `None` for an unknown id.
    pub fn weight(&self, id: ReplicaId) -> Option<u64> {
        self.members.get(id.index()).map(|m| m.weight)
    }

    /// The decoded key of replica `id`.
    pub fn key(&self, id: ReplicaId) -> Option<&VerifyingKey> {
        self.keys.get(id.index())
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: ReplicaId) -> bool {
        id.index() < self.members.len()
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

    /// Brute force over all subsets: for admissible vectors every two quorums share a correct
    /// replica and the correct replicas form a quorum, for every faulty set of size f.
    #[test]
    fn quorum_intersection_brute_force() {
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut admissible = 0;
        for _ in 0..300 {
            let n = 1 + (next() % 8) as usize;
            let f = (next() % (n as u64)) as usize;
            let weights: Vec<u64> = (0..n).map(|_| 1 + next() % 4).collect();
            let Ok(t) = Thresholds::compute(&weights, f) else {
                // Rejected: confirm it really is inadmissible.
                let mut sorted = weights.clone();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                let faulty: u64 = sorted[..f].iter().sum();
                assert!(weights.iter().sum::<u64>() <= 3 * faulty, "{weights:?} f={f}");
                continue;
            };
            admissible += 1;
            let weight =
                |set: u32| -> u64 { (0..n).filter(|i| set & (1 << i) != 0).map(|i| weights[i]).sum() };
            let quorums: Vec<u32> = (0..1u32 << n).filter(|s| weight(*s) >= t.quorum).collect();
            for faulty in (0..1u32 << n).filter(|s| s.count_ones() as usize == f) {
                let correct = !faulty & ((1 << n) - 1);
                assert!(weight(correct) >= t.quorum, "{weights:?} f={f} faulty={faulty:b}");
                for a in &quorums {
                    for b in &quorums {
                        assert!(
                            a & b & correct != 0,
                            "{weights:?} f={f} faulty={faulty:b} {a:b} {b:b}"
                        );
                    }
                }
            }
        }
        assert!(admissible > 50);
    }
}
