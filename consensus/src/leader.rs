//! Who leads a view or round.
//!
//! PBFT's primary and linear mode's leader after a timeout certificate rotate round-robin:
//! [`leader_of`]. In linear mode's steady state that would hand every n-th round (and the
//! collection of the votes of the round before it) to a crashed replica for as long as it
//! stays down: two failed rounds, each a full timeout, every n rounds.
//!
//! So a linear-mode block also names the leader of the round after it, [`successor`]: the
//! first replica after the block's proposer, in id order, among those whose votes are in the
//! certificate the block extends. This is Carousel's idea (Cohen, Gelashvili, Kokoris-Kogias,
//! Li, Malkhi, Sonnino and Spiegelman, "Be Aware of Your Leaders", FC 2022): a replica that
//! did not vote recently is not trusted to lead, and the choice rests only on a certified
//! block, so every replica that holds the block agrees on it without extra messages. Voters
//! check the named successor before voting; the child's proposal carries the parent's header
//! (whose id the certificate covers), so anyone can check who may propose it. A crashed
//! replica stops appearing in certificates within a round or two and then never leads until
//! it votes again. After a timeout certificate (nobody certified the round before), the leader
//! falls back to round-robin, which needs no block, skipping a round-robin leader that did not
//! sign the timeout certificate ([`fallback_leader`]).
//!
//! Safety never depends on who leads: a correct replica votes at most once per round.

use ordinal_crypto::{Committee, ReplicaId};

/// The primary (PBFT), or the leader of a linear round entered by a timeout certificate:
/// member number `view mod n` in id order (replicas outside the membership never lead).
pub fn leader_of(view: u64, committee: &Committee) -> ReplicaId {
    committee.nth_member(view)
}

/// Linear mode: the round-robin position of `round` in `epoch`'s chain. Rounds start again from
/// 1 in every epoch; offsetting them by the epoch number keeps the same replica from opening
/// every epoch (and, if it is down, from costing every epoch a timeout).
pub fn epoch_round(epoch: u64, round: u64) -> u64 {
    round.saturating_add(epoch)
}

/// Linear mode: the leader of the first rounds of an epoch's chain (those extending its genesis
/// certificate, which no one signed): round-robin over the members of `committee` that were
/// members of the epoch before (`previous`) too, all members if none was. A replica that just
/// joined may still be catching up; leading the epoch's first round would cost a timeout.
pub fn opening_leader(round: u64, committee: &Committee, previous: Option<&Committee>) -> ReplicaId {
    let members = committee.size() as u64;
    (0..members)
        .map(|k| committee.nth_member(round.saturating_add(k)))
        .find(|id| previous.is_none_or(|previous| previous.contains(*id)))
        .unwrap_or_else(|| committee.nth_member(round))
}

/// Linear mode: the leader of `round` entered by a timeout certificate signed by `signers`:
/// the round-robin leader if it signed (the timeouts went to it first, so it normally holds the
/// certificate), else the first signer after it in id order. A round-robin leader that is down
/// never signs; the others form the certificate once their timeouts go to everyone, and the
/// round goes to a live signer instead of costing a second timeout.
pub fn fallback_leader(
    round: u64,
    signers: impl IntoIterator<Item = ReplicaId>,
    committee: &Committee,
) -> ReplicaId {
    let rotation = leader_of(round, committee);
    first_signer_from(rotation, 0, signers, committee).unwrap_or(rotation)
}

/// Linear mode: the leader of the round after a block proposed by `proposer` whose
/// certificates were signed by `signers` (those of its timeout certificate if it has one, else
/// of the certificate it extends; none for genesis): the first signer after the proposer in id
/// order, wrapping around, that is not among the block's `recent` leaders (the proposer and
/// its certified predecessors, at most f); the first replica after the proposer that is not,
/// when no signer qualifies.
///
/// Why the exclusion: the proposer chose which quorum of votes its certificate holds, so it
/// can leave out up to f correct voters and steer the choice to a colluder a few places on.
/// Without it, f colluders placed round the ids could pass the lead among themselves for ever
/// (the review of session 5 found this for f >= 3); with it, any f+1 leaders in a row include
/// one that is not among the colluders.
pub fn successor(
    proposer: ReplicaId,
    signers: impl IntoIterator<Item = ReplicaId>,
    recent: &[ReplicaId],
    committee: &Committee,
) -> ReplicaId {
    let eligible = |id: &ReplicaId| *id != proposer && !recent.contains(id);
    first_signer_from(proposer, 1, signers.into_iter().filter(eligible), committee)
        .or_else(|| first_signer_from(proposer, 1, committee.ids().filter(eligible), committee))
        .unwrap_or_else(|| ReplicaId(((proposer.index() + 1) % committee.slots().max(1)) as u16))
}

/// The signer nearest after `origin` going round the ids, at least `min_distance` steps on
/// (0 lets `origin` itself count); ids outside the committee are ignored.
fn first_signer_from(
    origin: ReplicaId,
    min_distance: usize,
    signers: impl IntoIterator<Item = ReplicaId>,
    committee: &Committee,
) -> Option<ReplicaId> {
    let n = committee.slots();
    if n == 0 {
        return None;
    }
    let start = origin.index() % n;
    signers
        .into_iter()
        .filter(|signer| committee.contains(*signer))
        .map(|signer| signer.index())
        .map(|index| (index + n - start) % n)
        .filter(|&distance| distance >= min_distance)
        .min()
        .map(|distance| ReplicaId(((start + distance) % n) as u16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordinal_crypto::{Digest, KeyPair};

    fn committee(n: usize) -> Committee {
        let keys: Vec<_> = (0..n)
            .map(|i| KeyPair::from_seed([i as u8 + 1; 32]).public())
            .collect();
        Committee::equal_weights(Digest::of(b"leader"), &keys).unwrap()
    }

    fn ids(list: &[u16]) -> Vec<ReplicaId> {
        list.iter().copied().map(ReplicaId).collect()
    }

    #[test]
    fn an_epoch_is_opened_by_a_replica_that_was_a_member_before() {
        let before = committee(4);
        let after = before
            .with_membership(
                1,
                ordinal_crypto::MembershipEdit::Join(KeyPair::from_seed([9; 32]).public()),
                1,
            )
            .unwrap();
        assert_eq!(after.size(), 5);
        // Round-robin would pick the newcomer (member 4) at position 4; the next member that
        // was there before leads instead.
        assert_eq!(leader_of(4, &after), ReplicaId(4));
        assert_eq!(opening_leader(4, &after, Some(&before)), ReplicaId(0));
        assert_eq!(opening_leader(2, &after, Some(&before)), ReplicaId(2));
        assert_eq!(
            opening_leader(4, &after, None),
            ReplicaId(4),
            "epoch 0 has no before"
        );
    }

    #[test]
    fn the_successor_is_the_first_signer_after_the_proposer_going_round() {
        let c = committee(4);
        // (proposer, signers, expected)
        let table: &[(u16, &[u16], u16)] = &[
            (0, &[0, 1, 2], 1),
            (0, &[0, 2, 3], 2),
            (1, &[0, 1, 3], 3),
            (3, &[1, 2, 3], 1),
            (3, &[0, 1, 2, 3], 0),
            (2, &[2, 3, 0], 3),
            // Nobody else signed (genesis): the next replica in id order.
            (2, &[], 3),
            (3, &[3], 0),
            // Ids outside the committee are ignored.
            (1, &[9, 3], 3),
        ];
        for (proposer, signers, expected) in table {
            assert_eq!(
                successor(ReplicaId(*proposer), ids(signers), &[], &c),
                ReplicaId(*expected),
                "proposer {proposer}, signers {signers:?}"
            );
        }
    }

    #[test]
    fn a_replica_missing_from_every_certificate_never_leads() {
        let c = committee(7);
        let dead = ReplicaId(4);
        let mut leader = ReplicaId(0);
        for _ in 0..50 {
            let signers: Vec<ReplicaId> = (0..7).map(ReplicaId).filter(|id| *id != dead).collect();
            leader = successor(leader, signers, &[], &c);
            assert_ne!(leader, dead);
        }
    }

    #[test]
    fn after_a_timeout_the_round_robin_leader_leads_if_it_signed_else_the_next_signer() {
        let c = committee(4);
        // (round, signers, expected); round-robin gives round mod 4.
        let table: &[(u64, &[u16], u16)] = &[
            (5, &[0, 1, 2], 1),
            (5, &[0, 2, 3], 2),
            (7, &[0, 1, 2], 0),
            (6, &[3, 0, 1], 3),
            (6, &[], 2),
        ];
        for (round, signers, expected) in table {
            assert_eq!(
                fallback_leader(*round, ids(signers), &c),
                ReplicaId(*expected),
                "round {round}, signers {signers:?}"
            );
        }
    }

    /// Colluders (0, 4 and 7 of 10, f = 3) each leaving the correct voters between them out of
    /// their certificates (still a quorum: 7 of 10): without the exclusion they lead for ever;
    /// with the last f leaders excluded, correct replicas lead at least one round in f+1.
    #[test]
    fn colluders_cannot_keep_the_lead_among_themselves() {
        let c = committee(10);
        let colluders = [0u16, 4, 7];
        let correct_rounds = |exclude: bool| {
            let mut leader = ReplicaId(0);
            let mut recent: Vec<ReplicaId> = Vec::new();
            let mut correct = 0;
            for _ in 0..40 {
                recent.insert(0, leader);
                recent.truncate(c.faults());
                let signers: Vec<ReplicaId> = if colluders.contains(&leader.0) {
                    // Leave out the correct replicas up to the next colluder going round.
                    let next = colluders
                        .iter()
                        .map(|&b| (b as usize + 10 - leader.index()) % 10)
                        .filter(|&d| d > 0)
                        .min()
                        .unwrap();
                    (0..10u16)
                        .filter(|&id| {
                            let d = (id as usize + 10 - leader.index()) % 10;
                            d == 0 || d >= next
                        })
                        .map(ReplicaId)
                        .collect()
                } else {
                    (0..10).map(ReplicaId).collect()
                };
                assert!(c.is_quorum(signers.iter().copied()));
                let excluded: &[ReplicaId] = if exclude { &recent } else { &[] };
                leader = successor(leader, signers, excluded, &c);
                if !colluders.contains(&leader.0) {
                    correct += 1;
                }
            }
            correct
        };
        assert_eq!(correct_rounds(false), 0, "the attack works without the exclusion");
        assert!(correct_rounds(true) >= 10, "correct replicas led too rarely");
    }

    #[test]
    fn with_everyone_signing_leadership_rotates_through_every_replica() {
        let c = committee(5);
        let mut leader = ReplicaId(0);
        let mut seen = Vec::new();
        for _ in 0..5 {
            leader = successor(leader, (0..5).map(ReplicaId), &[], &c);
            seen.push(leader.0);
        }
        assert_eq!(seen, vec![1, 2, 3, 4, 0]);
    }
}
