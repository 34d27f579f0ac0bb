//! Collecting votes into quorum certificates. Shared by every phase and by both protocols.

use std::collections::BTreeMap;

use ordinal_crypto::{Certificate, Committee, ReplicaId, Signable, Verified};

/// At most one vote per replica for one slot (one view and sequence number, or one checkpoint).
/// A replica that votes twice differently is an equivocator: its second vote is refused and
/// reported, its first stays. Memory: at most one entry per member.
#[derive(Clone, Debug)]
pub struct VoteSet<T> {
    votes: BTreeMap<ReplicaId, Verified<T>>,
}

impl<T> Default for VoteSet<T> {
    fn default() -> Self {
        VoteSet {
            votes: BTreeMap::new(),
        }
    }
}

/// What inserting a vote did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// A new vote.
    New,
    /// The same vote again (a retransmission).
    Repeat,
    /// A different vote from a replica that already voted.
    Conflict,
}

impl<T: Signable + Clone + PartialEq> VoteSet<T> {
    /// Adds a vote.
    pub fn insert(&mut self, vote: Verified<T>) -> Inserted {
        match self.votes.get(&vote.signer()) {
            Some(existing) if existing.body() == vote.body() => Inserted::Repeat,
            Some(_) => Inserted::Conflict,
            None => {
                self.votes.insert(vote.signer(), vote);
                Inserted::New
            }
        }
    }

    /// A certificate for `statement` if the replicas that voted exactly for it reach the quorum.
    /// Only members of `committee` go into it: a vote from a replica outside that epoch (one
    /// that joins later, or left) counts nothing and would make the certificate fail to verify
    /// under the epoch it names.
    pub fn certificate(&self, statement: &T, committee: &Committee) -> Option<Certificate<T>> {
        let matching = self
            .votes
            .values()
            .filter(|v| v.body() == statement && committee.contains(v.signer()));
        if committee.is_quorum(matching.clone().map(|v| v.signer())) {
            Some(Certificate::from_votes(
                statement.clone(),
                committee.epoch(),
                matching,
            ))
        } else {
            None
        }
    }

    /// The vote `id` cast, if any.
    pub fn vote_of(&self, id: ReplicaId) -> Option<&Verified<T>> {
        self.votes.get(&id)
    }

    /// Distinct statements voted for, for callers that look for any quorum.
    pub fn statements(&self) -> Vec<T> {
        let mut out: Vec<T> = Vec::new();
        for vote in self.votes.values() {
            if !out.contains(vote.body()) {
                out.push(vote.body().clone());
            }
        }
        out
    }

    /// Number of votes held.
    pub fn len(&self) -> usize {
        self.votes.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.votes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::CommitVote;
    use ordinal_crypto::{Digest, KeyPair, Signed};

    #[test]
    fn quorum_forms_only_on_matching_votes_and_refuses_equivocation() {
        let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed([i; 32])).collect();
        let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
        let committee = Committee::equal_weights(Digest::of(b"q"), &publics).unwrap();
        let a = CommitVote {
            view: 0,
            seq: 1,
            digest: Digest::of(b"a"),
        };
        let b = CommitVote {
            view: 0,
            seq: 1,
            digest: Digest::of(b"b"),
        };
        let vote = |i: usize, s: CommitVote| {
            Signed::sign(s, ReplicaId(i as u16), &keys[i], &committee)
                .verify(&committee)
                .unwrap()
        };
        let mut set = VoteSet::default();
        assert_eq!(set.insert(vote(0, a)), Inserted::New);
        assert_eq!(set.insert(vote(0, a)), Inserted::Repeat);
        assert_eq!(set.insert(vote(0, b)), Inserted::Conflict);
        assert_eq!(set.insert(vote(1, a)), Inserted::New);
        assert_eq!(set.insert(vote(2, b)), Inserted::New);
        assert!(set.certificate(&a, &committee).is_none());
        assert_eq!(set.insert(vote(3, a)), Inserted::New);
        let cert = set.certificate(&a, &committee).unwrap();
        assert_eq!(
            cert.signers().collect::<Vec<_>>(),
            vec![ReplicaId(0), ReplicaId(1), ReplicaId(3)]
        );
        cert.verify(&committee).unwrap();
        assert!(set.certificate(&b, &committee).is_none());
    }
}
