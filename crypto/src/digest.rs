//! SHA3-256 digests and the Merkle tree that lets a receipt prove one transaction's place in a batch.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha3::{Digest as _, Sha3_256};

use crate::CryptoError;

/// A SHA3-256 digest. Displays and parses as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Digest(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha3_256::digest(bytes).into())
    }

    /// The digest of several byte strings, each prefixed by its length so that no two
    /// different lists hash the same.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut hasher = Sha3_256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        Digest(hasher.finalize().into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, the form used in JSON output.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits are enough to tell digests apart in logs.
        write!(f, "Digest({})", &self.to_hex()[..8])
    }
}

impl FromStr for Digest {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| CryptoError::BadHex { expected_len: 32 })?;
        Ok(Digest(out))
    }
}

// Leaves and inner nodes get different prefixes so that an inner node can never be passed
// off as a leaf (the second-preimage attack on naive Merkle trees).
const LEAF_TAG: &[u8] = b"ordinal/merkle/leaf";
const NODE_TAG: &[u8] = b"ordinal/merkle/node";
const EMPTY_TAG: &[u8] = b"ordinal/merkle/empty";
const ROOT_TAG: &[u8] = b"ordinal/merkle/root";

// The root commits to the number of leaves: without it, a proof could claim another leaf count
// and, with it, another index (leaf 2 of 3 also verifies as leaf 1 of 2 under the bare root),
// so a receipt could misstate its transaction's position.
fn sealed_root(leaf_count: u64, top: &Digest) -> Digest {
    Digest::of_parts(&[ROOT_TAG, &leaf_count.to_le_bytes(), &top.0])
}

fn leaf_hash(leaf: &Digest) -> Digest {
    Digest::of_parts(&[LEAF_TAG, &leaf.0])
}

fn node_hash(left: &Digest, right: &Digest) -> Digest {
    Digest::of_parts(&[NODE_TAG, &left.0, &right.0])
}

/// A Merkle tree kept level by level, so that proofs for every leaf cost O(log n) each after
/// one O(n) build. An odd node at the end of a level is promoted unchanged.
#[derive(Clone, Debug)]
pub struct MerkleTree {
    leaf_count: usize,
    levels: Vec<Vec<Digest>>,
}

impl MerkleTree {
    /// Builds the tree over `leaves`.
    pub fn new(leaves: &[Digest]) -> Self {
        let mut levels = vec![leaves.iter().map(leaf_hash).collect::<Vec<_>>()];
        while levels.last().is_some_and(|level| level.len() > 1) {
            let next = levels
                .last()
                .map(|level| {
                    level
                        .chunks(2)
                        .map(|pair| match pair {
                            [left, right] => node_hash(left, right),
                            [single] => *single,
                            _ => Digest::default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            levels.push(next);
        }
        MerkleTree {
            leaf_count: leaves.len(),
            levels,
        }
    }

    /// The root (which commits to the leaf count); a fixed digest for the empty tree.
    pub fn root(&self) -> Digest {
        match self.levels.last().and_then(|level| level.first()) {
            Some(top) if self.leaf_count > 0 => sealed_root(self.leaf_count as u64, top),
            _ => Digest::of(EMPTY_TAG),
        }
    }

    /// The inclusion proof for leaf `index`, or `None` when out of range.
    pub fn proof(&self, index: usize) -> Option<MerkleProof> {
        if index >= self.leaf_count {
            return None;
        }
        let mut siblings = Vec::new();
        let mut position = index;
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(position ^ 1) {
                siblings.push(*sibling);
            }
            position /= 2;
        }
        Some(MerkleProof {
            leaf_count: self.leaf_count as u32,
            index: index as u32,
            siblings,
        })
    }
}

/// The Merkle root over `leaves`.
pub fn merkle_root(leaves: &[Digest]) -> Digest {
    MerkleTree::new(leaves).root()
}

/// The sibling path that proves leaf `index` belongs under [`merkle_root`] of `leaves`.
/// `None` when `index` is out of range.
pub fn merkle_proof(leaves: &[Digest], index: usize) -> Option<MerkleProof> {
    MerkleTree::new(leaves).proof(index)
}

/// A Merkle inclusion proof for one leaf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    /// How many leaves the tree has; fixes which levels have an unpaired last node.
    pub leaf_count: u32,
    /// The leaf's position.
    pub index: u32,
    /// Sibling hashes from the leaf level upwards, skipping levels where the node was unpaired.
    pub siblings: Vec<Digest>,
}

impl MerkleProof {
    /// Whether `leaf` at this proof's index hashes up to `root`.
    pub fn verify(&self, leaf: &Digest, root: &Digest) -> bool {
        if self.index >= self.leaf_count || self.siblings.len() > 64 {
            return false;
        }
        let mut hash = leaf_hash(leaf);
        let mut position = self.index as u64;
        let mut width = self.leaf_count as u64;
        let mut siblings = self.siblings.iter();
        while width > 1 {
            let sibling = position ^ 1;
            if sibling < width {
                let Some(other) = siblings.next() else {
                    return false;
                };
                hash = if position % 2 == 0 {
                    node_hash(&hash, other)
                } else {
                    node_hash(other, &hash)
                };
            }
            position /= 2;
            width = width.div_ceil(2);
        }
        siblings.next().is_none() && sealed_root(u64::from(self.leaf_count), &hash) == *root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let d = Digest::of(b"hello");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("zz".parse::<Digest>().is_err());
        assert!("00".parse::<Digest>().is_err());
    }

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(Digest::of_parts(&[b"ab", b"c"]), Digest::of_parts(&[b"a", b"bc"]));
    }

    #[test]
    fn every_leaf_proves_and_no_wrong_leaf_does() {
        for n in 1..=17usize {
            let leaves: Vec<Digest> = (0..n).map(|i| Digest::of(&[i as u8])).collect();
            let root = merkle_root(&leaves);
            for i in 0..n {
                let proof = merkle_proof(&leaves, i).unwrap();
                assert!(proof.verify(&leaves[i], &root), "n={n} i={i}");
                assert!(!proof.verify(&Digest::of(b"other"), &root));
                let mut moved = proof.clone();
                moved.index = ((i + 1) % n) as u32;
                if n > 1 {
                    assert!(!moved.verify(&leaves[i], &root), "n={n} i={i}");
                }
            }
            assert!(merkle_proof(&leaves, n).is_none());
        }
    }

    #[test]
    fn a_proof_cannot_claim_another_leaf_count_or_index() {
        // Leaf 2 of 3 sits where a 2-leaf tree's leaf 1 would; the sealed root tells them apart.
        let leaves: Vec<Digest> = (0..3u8).map(|i| Digest::of(&[i])).collect();
        let tree = MerkleTree::new(&leaves);
        let root = tree.root();
        let honest = tree.proof(2).unwrap();
        assert!(honest.verify(&leaves[2], &root));
        let top_pair = node_hash(&leaf_hash(&leaves[0]), &leaf_hash(&leaves[1]));
        let forged = MerkleProof {
            leaf_count: 2,
            index: 1,
            siblings: vec![top_pair],
        };
        assert!(!forged.verify(&leaves[2], &root));
        for leaf_count in 1..=8u32 {
            let mut other = honest.clone();
            other.leaf_count = leaf_count;
            assert_eq!(other.verify(&leaves[2], &root), leaf_count == 3, "{leaf_count}");
        }
    }

    #[test]
    fn inner_node_is_not_a_leaf() {
        let leaves: Vec<Digest> = (0..4u8).map(|i| Digest::of(&[i])).collect();
        let root = merkle_root(&leaves);
        let two = merkle_root(&leaves[..2]);
        assert_ne!(merkle_root(&[two, merkle_root(&leaves[2..])]), root);
    }
}
