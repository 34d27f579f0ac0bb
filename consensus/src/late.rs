//! Votes past their quorum: PREPAREs and COMMITs for a statement this replica already holds a
//! certificate for.
//!
//! Such a vote builds nothing, but it still counts: the reliability monitor credits the peer
//! with a vote (and times its COMMIT), and a peer with no vote for a committed slot is recorded
//! as having missed it. At equal weights about two in seven of a PBFT replica's phase-signature
//! checks at n = 4, and more at larger n, are of such votes (`ordinal_peer_late_votes_total`).
//!
//! So a replica tells its host, with [`Action::Settled`](crate::Action::Settled), which
//! statements it holds certificates for. The host keeps them in a [`SettledStatements`] table
//! and hands a vote that matches one, from the replica that signed it, to the protocol as
//! [`Input::LateVote`](crate::Input::LateVote) without checking its signature: the peer's
//! pinned, mutually authenticated connection already says who sent it, and a Byzantine peer
//! gains nothing from an unsigned late vote that it could not get by signing one.
//!
//! The table is only a hint. The replica credits a late vote only if its own state agrees that
//! the statement is settled, in its current view, from a member of the slot's committee that has
//! not voted there yet; any other vote it is handed this way (the view changed, the slot was
//! pruned, the digest differs, the sender voted otherwise) it verifies itself and handles as a
//! message. A vote whose digest differs from the settled one never matches the table, so
//! evidence of equivocation is always fully checked.

use ordinal_crypto::{Committee, Digest, ReplicaId, Signed};

use crate::error::Invalid;
use crate::messages::{CommitVote, Message, PrepareVote, VerifiedMessage};

/// A statement this replica now holds a certificate for: later votes for it count towards
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The slot is prepared (PREPAREs for it are late).
    Prepare(PrepareVote),
    /// The slot is committed (PREPAREs and COMMITs for it are late).
    Commit(CommitVote),
}

/// A vote the host matched against its [`SettledStatements`] and did not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LateVote {
    /// A PREPARE.
    Prepare(Signed<PrepareVote>),
    /// A COMMIT.
    Commit(Signed<CommitVote>),
}

impl LateVote {
    /// Who claims to have signed it.
    pub fn signer(&self) -> ReplicaId {
        match self {
            LateVote::Prepare(vote) => vote.signer,
            LateVote::Commit(vote) => vote.signer,
        }
    }

    /// Its sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            LateVote::Prepare(vote) => vote.body.seq,
            LateVote::Commit(vote) => vote.body.seq,
        }
    }

    /// What [`Message::verify`] would make of it: for a replica that cannot credit it unchecked.
    pub fn verify(self, committee: &Committee) -> Result<VerifiedMessage, Invalid> {
        Ok(match self {
            LateVote::Prepare(vote) => VerifiedMessage::Prepare(vote.verify(committee)?),
            LateVote::Commit(vote) => VerifiedMessage::Commit(vote.verify(committee)?),
        })
    }
}

/// A peer's message sorted by [`SettledStatements::sort`].
// Each message is moved through this once; boxing the larger variant would allocate per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sorted {
    /// A vote for a settled statement, from its signer: hand it in as
    /// [`Input::LateVote`](crate::Input::LateVote) unchecked.
    Late(LateVote),
    /// Anything else: verify it as usual.
    Verify(Message),
}

/// One sequence number's settled statement, as the host last heard of it.
#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: u64,
    view: u64,
    digest: Digest,
    prepared: bool,
    committed: bool,
}

/// The host's table of settled statements, one entry per sequence number in a ring of fixed
/// size (a newer sequence number takes an older one's place), so it never grows.
#[derive(Clone, Debug)]
pub struct SettledStatements {
    entries: Vec<Option<Entry>>,
}

impl SettledStatements {
    /// A table of `capacity` sequence numbers (at least one); twice the protocol's log window
    /// covers every slot a replica still accepts votes for.
    pub fn new(capacity: usize) -> Self {
        SettledStatements {
            entries: vec![None; capacity.max(1)],
        }
    }

    fn index(&self, seq: u64) -> usize {
        (seq % self.entries.len() as u64) as usize
    }

    /// Records what the replica settled.
    pub fn record(&mut self, settled: &Settled) {
        let (seq, view, digest, committed) = match settled {
            Settled::Prepare(s) => (s.seq, s.view, s.digest, false),
            Settled::Commit(s) => (s.seq, s.view, s.digest, true),
        };
        let index = self.index(seq);
        let slot = &mut self.entries[index];
        match slot {
            Some(entry) if entry.seq == seq && entry.view == view && entry.digest == digest => {
                entry.prepared |= !committed;
                entry.committed |= committed;
            }
            // An older sequence number's place, or the same one settled again in a later view.
            Some(entry) if entry.seq > seq || (entry.seq == seq && entry.view > view) => {}
            _ => {
                *slot = Some(Entry {
                    seq,
                    view,
                    digest,
                    prepared: !committed,
                    committed,
                })
            }
        }
    }

    fn settled(&self, seq: u64, view: u64, digest: &Digest) -> Option<Entry> {
        self.entries[self.index(seq)].filter(|e| e.seq == seq && e.view == view && e.digest == *digest)
    }

    /// `message` from the authenticated replica `from` as a [`LateVote`] when it is a vote that
    /// `from` signed for a settled statement; otherwise the message back, to be verified.
    pub fn sort(&self, from: ReplicaId, message: Message) -> Sorted {
        match message {
            Message::Prepare(vote)
                if vote.signer == from
                    && self
                        .settled(vote.body.seq, vote.body.view, &vote.body.digest)
                        .is_some_and(|e| e.prepared || e.committed) =>
            {
                Sorted::Late(LateVote::Prepare(vote))
            }
            Message::Commit(vote)
                if vote.signer == from
                    && self
                        .settled(vote.body.seq, vote.body.view, &vote.body.digest)
                        .is_some_and(|e| e.committed) =>
            {
                Sorted::Late(LateVote::Commit(vote))
            }
            other => Sorted::Verify(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use ordinal_crypto::Signature;

    use super::*;

    fn prepare(signer: u16, view: u64, seq: u64, digest: Digest) -> Message {
        Message::Prepare(Signed {
            body: PrepareVote { view, seq, digest },
            signer: ReplicaId(signer),
            signature: Signature([0; 64]),
        })
    }

    fn commit(signer: u16, view: u64, seq: u64, digest: Digest) -> Message {
        Message::Commit(Signed {
            body: CommitVote { view, seq, digest },
            signer: ReplicaId(signer),
            signature: Signature([0; 64]),
        })
    }

    fn is_late(table: &SettledStatements, from: u16, message: Message) -> bool {
        matches!(table.sort(ReplicaId(from), message), Sorted::Late(_))
    }

    #[test]
    fn only_votes_from_their_signer_for_the_settled_statement_are_late() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let mut table = SettledStatements::new(8);
        assert!(!is_late(&table, 1, prepare(1, 0, 3, a)), "nothing settled yet");
        table.record(&Settled::Prepare(PrepareVote {
            view: 0,
            seq: 3,
            digest: a,
        }));
        assert!(is_late(&table, 1, prepare(1, 0, 3, a)));
        assert!(
            !is_late(&table, 2, prepare(1, 0, 3, a)),
            "relayed by another replica"
        );
        assert!(
            !is_late(&table, 1, prepare(1, 0, 3, b)),
            "another digest is evidence"
        );
        assert!(!is_late(&table, 1, prepare(1, 1, 3, a)), "another view");
        assert!(
            !is_late(&table, 1, prepare(1, 0, 11, a)),
            "the same ring place, another seq"
        );
        assert!(
            !is_late(&table, 1, commit(1, 0, 3, a)),
            "prepared is not committed"
        );
        table.record(&Settled::Commit(CommitVote {
            view: 0,
            seq: 3,
            digest: a,
        }));
        assert!(is_late(&table, 1, commit(1, 0, 3, a)));
        assert!(is_late(&table, 1, prepare(1, 0, 3, a)));
        assert!(!is_late(&table, 1, commit(1, 0, 3, b)));
    }

    #[test]
    fn newer_sequence_numbers_take_the_place_and_older_ones_do_not_come_back() {
        let a = Digest::of(b"a");
        let mut table = SettledStatements::new(4);
        let commit_at = |seq| {
            Settled::Commit(CommitVote {
                view: 0,
                seq,
                digest: a,
            })
        };
        table.record(&commit_at(2));
        table.record(&commit_at(6));
        assert!(!is_late(&table, 1, commit(1, 0, 2, a)));
        assert!(is_late(&table, 1, commit(1, 0, 6, a)));
        table.record(&commit_at(2));
        assert!(
            is_late(&table, 1, commit(1, 0, 6, a)),
            "an older seq does not evict a newer"
        );
        assert!(!is_late(&table, 1, commit(1, 0, 2, a)));
    }

    #[test]
    fn other_messages_come_back_unchanged() {
        let table = SettledStatements::new(4);
        let message = Message::CatchUp {
            next_seq: 1,
            view: 0,
            stable_seq: 0,
        };
        assert_eq!(table.sort(ReplicaId(1), message.clone()), Sorted::Verify(message));
    }
}
