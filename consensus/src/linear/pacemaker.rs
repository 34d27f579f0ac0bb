//! The pacemaker's bookkeeping: timeout votes collected into timeout certificates, and the
//! rule that lets a replica join a round that a correct replica already gave up on.
//!
//! Timeouts go to the next round's leader only, which aggregates a quorum into a timeout
//! certificate and carries it in its proposal: one faulty leader costs one timeout and O(n)
//! messages. A replica whose timer fires again in the same round (the next leader failed too)
//! broadcasts its timeout instead, so that every replica can form the certificate itself, and
//! replicas joined by the (F+1)-weight rule below catch up with the others. That fallback is
//! Jolteon's quadratic view change, paid only after two failed leaders in a row.

use std::collections::BTreeMap;

use ordinal_crypto::{Committee, ReplicaId, Signed, Verified};

use crate::messages::{TimeoutCert, TimeoutVote};

/// Timeouts kept per signer: its two highest rounds.
const ROUNDS_PER_SIGNER: usize = 2;

/// Timeout votes by round, bounded per signer.
#[derive(Clone, Debug, Default)]
pub(super) struct TimeoutCollector {
    by_round: BTreeMap<u64, BTreeMap<ReplicaId, Signed<TimeoutVote>>>,
}

impl TimeoutCollector {
    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.by_round.values().map(BTreeMap::len).sum()
    }

    /// Adds a timeout; a signer keeps only its highest rounds, so one replica cannot fill the
    /// collector with rounds.
    pub(super) fn insert(&mut self, timeout: Verified<TimeoutVote>) {
        let signer = timeout.signer();
        let round = timeout.body().round;
        self.by_round
            .entry(round)
            .or_default()
            .entry(signer)
            .or_insert_with(|| timeout.into_signed());
        let mut held: Vec<u64> = self
            .by_round
            .iter()
            .filter(|(_, votes)| votes.contains_key(&signer))
            .map(|(round, _)| *round)
            .collect();
        while held.len() > ROUNDS_PER_SIGNER {
            let lowest = held.remove(0);
            if let Some(votes) = self.by_round.get_mut(&lowest) {
                votes.remove(&signer);
            }
        }
        self.by_round.retain(|_, votes| !votes.is_empty());
    }

    /// A timeout certificate for `round`, if a quorum of `committee` (the epoch's) timed it
    /// out. Timeouts of replicas without weight in the epoch are left out.
    pub(super) fn certificate(&self, round: u64, committee: &Committee) -> Option<TimeoutCert> {
        let votes = self.by_round.get(&round)?;
        let members = || {
            votes
                .keys()
                .copied()
                .filter(|id| committee.weight(*id).unwrap_or(0) > 0)
        };
        if !committee.is_quorum(members()) {
            return None;
        }
        Some(TimeoutCert {
            epoch: committee.epoch(),
            round,
            timeouts: members().filter_map(|id| votes.get(&id).cloned()).collect(),
        })
    }

    /// The highest round that replicas holding more than F weight have all timed out in or
    /// beyond: at least one correct replica gave up on it, so waiting there is pointless.
    pub(super) fn join_round(&self, committee: &Committee) -> Option<u64> {
        let mut highest: BTreeMap<ReplicaId, u64> = BTreeMap::new();
        for (round, votes) in &self.by_round {
            for signer in votes.keys() {
                let entry = highest.entry(*signer).or_insert(0);
                *entry = (*entry).max(*round);
            }
        }
        let mut rounds: Vec<(u64, ReplicaId)> = highest.into_iter().map(|(id, round)| (round, id)).collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let mut weight = 0;
        for (round, id) in rounds {
            weight += committee.weight(id).unwrap_or(0);
            if weight > committee.faulty_weight() {
                return Some(round);
            }
        }
        None
    }

    /// Drops rounds below `round`.
    pub(super) fn prune_below(&mut self, round: u64) {
        self.by_round = self.by_round.split_off(&round);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordinal_crypto::{Digest, KeyPair};

    fn setup() -> (Vec<KeyPair>, Committee) {
        let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed([i; 32])).collect();
        let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
        let committee = Committee::equal_weights(Digest::of(b"pm"), &publics).unwrap();
        (keys, committee)
    }

    fn timeout(keys: &[KeyPair], committee: &Committee, i: usize, round: u64) -> Verified<TimeoutVote> {
        Signed::sign(
            TimeoutVote {
                epoch: 0,
                round,
                high_qc_round: 0,
            },
            ReplicaId(i as u16),
            &keys[i],
            committee,
        )
        .verify(committee)
        .unwrap()
    }

    #[test]
    fn a_quorum_of_one_round_certifies_it_and_f_plus_one_lets_others_join() {
        let (keys, committee) = setup();
        let mut collector = TimeoutCollector::default();
        collector.insert(timeout(&keys, &committee, 0, 5));
        assert_eq!(
            collector.join_round(&committee),
            None,
            "one replica may be faulty"
        );
        collector.insert(timeout(&keys, &committee, 1, 7));
        assert_eq!(
            collector.join_round(&committee),
            Some(5),
            "two reach F+1 at round 5"
        );
        assert!(collector.certificate(5, &committee).is_none());
        collector.insert(timeout(&keys, &committee, 2, 5));
        collector.insert(timeout(&keys, &committee, 3, 5));
        let tc = collector.certificate(5, &committee).unwrap();
        assert_eq!(tc.timeouts.len(), 3);
        tc.verify(&committee).unwrap();
    }

    #[test]
    fn a_signer_cannot_fill_the_collector() {
        let (keys, committee) = setup();
        let mut collector = TimeoutCollector::default();
        for round in 1..100 {
            collector.insert(timeout(&keys, &committee, 0, round));
        }
        assert_eq!(collector.len(), ROUNDS_PER_SIGNER);
        assert_eq!(
            collector.by_round.keys().copied().collect::<Vec<_>>(),
            vec![98, 99]
        );
    }
}
