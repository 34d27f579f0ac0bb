//! Jolteon's safety rules (Gelashvili et al., FC 2022, Algorithm 2 and section 4; the same
//! rules as DiemBFT v4's two-chain safety rules), as pure functions so they can be table-tested.
//!
//! The durable state they read is the last voted round and the highest quorum certificate;
//! [`crate::SafetyUpdate::Voted`] and [`crate::SafetyUpdate::HighQc`] make both durable before
//! a vote or timeout leaves.

use crate::messages::Block;

/// Whether a replica that last voted (or timed out) in `voted_round` may vote for `block`.
///
/// Jolteon: vote only in a round above the last voted one, and only for a block that either
/// extends the certificate of the round just before (`round = qc.round + 1`), or follows a
/// timeout certificate of the round before and extends a certificate at least as high as
/// every timeout in it reported (`round = tc.round + 1` and `qc.round >= max hqc round`).
/// The second clause is the lock: a block certified at round k with a certified child at k+1
/// (committed) left a quorum with high certificates of round >= k, and any timeout quorum
/// meets that quorum in a correct replica, so a TC-justified block must extend round k's
/// block.
pub fn safe_to_vote(block: &Block, voted_round: u64) -> bool {
    if block.round <= voted_round {
        return false;
    }
    let qc_round = block.justify.statement.round;
    if block.round == qc_round + 1 {
        return true;
    }
    match &block.timeout {
        Some(tc) => block.round == tc.round + 1 && qc_round >= tc.max_high_qc_round(),
        None => false,
    }
}

/// The two-chain commit rule: a certificate for `child` commits its parent (and every
/// ancestor) when the parent's round is the one just before the child's.
pub fn commits_parent(parent_round: u64, child_round: u64) -> bool {
    parent_round + 1 == child_round
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{BlockVote, TimeoutCert, TimeoutVote};
    use ordinal_crypto::{Certificate, Digest, KeyPair, ReplicaId, Signed};

    fn block(round: u64, qc_round: u64, tc: Option<(u64, &[u64])>) -> Block {
        let key = KeyPair::from_seed([7; 32]);
        let keys = [key.public()];
        let committee = ordinal_crypto::Committee::equal_weights(Digest::of(b"v"), &keys).unwrap();
        Block {
            epoch: 0,
            round,
            seq: 0,
            batch_digest: Digest::of(b""),
            justify: Certificate {
                statement: BlockVote {
                    epoch: 0,
                    round: qc_round,
                    block: Digest::of(b"parent"),
                    seq: 0,
                },
                epoch: 0,
                votes: Vec::new(),
            },
            timeout: tc.map(|(round, reported)| TimeoutCert {
                epoch: 0,
                round,
                timeouts: reported
                    .iter()
                    .map(|&high_qc_round| {
                        Signed::sign(
                            TimeoutVote {
                                epoch: 0,
                                round,
                                high_qc_round,
                            },
                            ReplicaId(0),
                            &key,
                            &committee,
                        )
                    })
                    .collect(),
            }),
            next_leader: ReplicaId(0),
            recent_leaders: Vec::new(),
        }
    }

    /// A timeout certificate: its round and the high-certificate rounds its signers reported.
    type Tc = Option<(u64, &'static [u64])>;

    /// (block round, qc round, TC, last voted round, votes?)
    #[test]
    fn voting_rule_table() {
        let table: &[(u64, u64, Tc, u64, bool)] = &[
            (5, 4, None, 4, true),                   // the happy path
            (5, 4, None, 5, false),                  // already voted in round 5
            (5, 4, None, 7, false),                  // timed out beyond it
            (5, 3, None, 4, false),                  // round skipped, no TC
            (5, 3, Some((4, &[3, 2, 3])), 4, true),  // TC, extends the highest reported
            (5, 2, Some((4, &[3, 2, 3])), 4, false), // TC, but below a reported lock
            (5, 3, Some((3, &[3, 2, 3])), 4, false), // TC for the wrong round
            (5, 3, Some((4, &[3, 2, 3])), 5, false), // TC, but already voted
        ];
        for (i, (round, qc_round, tc, voted, expected)) in table.iter().enumerate() {
            let b = block(*round, *qc_round, *tc);
            assert_eq!(safe_to_vote(&b, *voted), *expected, "row {i}");
        }
    }

    #[test]
    fn two_chain_commits_only_consecutive_rounds() {
        assert!(commits_parent(4, 5));
        assert!(!commits_parent(4, 6));
        assert!(!commits_parent(5, 5));
    }
}
