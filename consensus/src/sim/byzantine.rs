//! Byzantine replicas as wrappers around the honest state machine: the replica runs the real
//! code, and its outgoing messages are rewritten here before they reach the network.

use std::collections::VecDeque;

use ordinal_crypto::{Committee, Digest, KeyPair, ReplicaId, Signable, Signature, Signed};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::batch::Batch;
use crate::messages::{
    Block, BlockVote, CommitVote, Message, NewView, PrepareVote, Proposal, StableCheckpoint, TimeoutCert,
    TimeoutVote, ViewChange,
};

/// How a Byzantine replica misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Behaviour {
    /// Sends nothing at all.
    Silent,
    /// Sends different proposals and votes to different replicas.
    Equivocate,
    /// Corrupts the signatures of half its messages.
    BadSignatures,
    /// Re-sends old messages (stale views and sequence numbers) besides its current ones.
    Replay,
    /// Votes and checkpoints for digests that match nothing.
    WrongDigest,
    /// Floods peers with random bytes and mangled encodings besides its real messages.
    Garbage,
    /// Sends validly signed but misleading VIEW-CHANGE messages (omitting what it prepared,
    /// asking for far-away views), forged certificates, and as primary NEW-VIEWs built from
    /// different subsets of view changes for different replicas.
    ForgeViewChange,
    /// Two copies of the honest replica running with one key (aptos Twins).
    Twins,
    /// Honest content, but every message arrives two view timeouts late.
    Slow,
}

impl Behaviour {
    /// All behaviours, for random choice.
    pub const ALL: [Behaviour; 9] = [
        Behaviour::Silent,
        Behaviour::Equivocate,
        Behaviour::BadSignatures,
        Behaviour::Replay,
        Behaviour::WrongDigest,
        Behaviour::Garbage,
        Behaviour::ForgeViewChange,
        Behaviour::Twins,
        Behaviour::Slow,
    ];

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Silent => "silent",
            Behaviour::Equivocate => "equivocate",
            Behaviour::BadSignatures => "bad-signatures",
            Behaviour::Replay => "replay",
            Behaviour::WrongDigest => "wrong-digest",
            Behaviour::Garbage => "garbage",
            Behaviour::ForgeViewChange => "forge-view-change",
            Behaviour::Twins => "twins",
            Behaviour::Slow => "slow",
        }
    }
}

/// What a Byzantine wrapper remembers between messages.
#[derive(Default)]
pub struct ByzantineState {
    history: VecDeque<Message>,
}

/// Everything the wrapper needs to re-sign.
pub struct Signer<'a> {
    /// The replica's id.
    pub id: ReplicaId,
    /// Its key.
    pub key: &'a KeyPair,
    /// The committee.
    pub committee: &'a Committee,
}

impl Signer<'_> {
    fn sign<T: Signable>(&self, body: T) -> Signed<T> {
        Signed::sign(body, self.id, self.key, self.committee)
    }
}

fn random_digest(rng: &mut ChaCha8Rng) -> Digest {
    Digest(rng.gen())
}

fn corrupt_signature(signature: &mut Signature, rng: &mut ChaCha8Rng) {
    let i = rng.gen_range(0..64);
    signature.0[i] ^= 1 << rng.gen_range(0..8);
}

/// One outgoing wire message: recipient replica id and bytes.
pub type Outgoing = (usize, Vec<u8>);

/// Rewrites one honest message to `dests` according to `behaviour`.
pub fn rewrite(
    behaviour: Behaviour,
    state: &mut ByzantineState,
    rng: &mut ChaCha8Rng,
    signer: &Signer<'_>,
    message: Message,
    dests: &[usize],
) -> Vec<Outgoing> {
    let honest = |m: &Message| -> Vec<Outgoing> {
        let bytes = m.encode();
        dests.iter().map(|d| (*d, bytes.clone())).collect()
    };
    match behaviour {
        Behaviour::Silent => Vec::new(),
        Behaviour::Twins | Behaviour::Slow => honest(&message),
        Behaviour::Equivocate => dests
            .iter()
            .map(|&d| {
                let m = if d % 2 == 1 {
                    equivocal(&message, rng, signer)
                } else {
                    message.clone()
                };
                (d, m.encode())
            })
            .collect(),
        Behaviour::BadSignatures => dests
            .iter()
            .map(|&d| {
                let mut m = message.clone();
                if rng.gen_bool(0.5) {
                    match &mut m {
                        Message::PrePrepare { proposal, .. } => {
                            corrupt_signature(&mut proposal.signature, rng)
                        }
                        Message::Prepare(v) => corrupt_signature(&mut v.signature, rng),
                        Message::Commit(v) => corrupt_signature(&mut v.signature, rng),
                        Message::Checkpoint(v) => corrupt_signature(&mut v.signature, rng),
                        Message::ViewChange(v) => corrupt_signature(&mut v.signature, rng),
                        Message::NewView(v) => corrupt_signature(&mut v.signature, rng),
                        Message::Propose { block, .. } => corrupt_signature(&mut block.signature, rng),
                        Message::Vote { vote, commits } => {
                            corrupt_signature(&mut vote.signature, rng);
                            if let Some(c) = commits.first_mut() {
                                corrupt_signature(&mut c.signature, rng);
                            }
                        }
                        Message::Timeout { timeout, .. } => corrupt_signature(&mut timeout.signature, rng),
                        Message::Batches(bs) => {
                            if let Some(b) = bs.first_mut() {
                                if let Some((_, s)) = b.certificate.votes.first_mut() {
                                    corrupt_signature(s, rng);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                (d, m.encode())
            })
            .collect(),
        Behaviour::Replay => {
            let mut out = honest(&message);
            if state.history.len() >= 256 {
                state.history.pop_front();
            }
            state.history.push_back(message);
            for _ in 0..2 {
                if let (Some(old), Some(&d)) = (
                    state.history.get(rng.gen_range(0..state.history.len())),
                    dests.choose(rng),
                ) {
                    out.push((d, old.encode()));
                }
            }
            out
        }
        Behaviour::WrongDigest => {
            let m = match message {
                vote @ (Message::Prepare(_) | Message::Commit(_) | Message::Vote { .. }) => {
                    vote_for_random_digest(&vote, rng, signer)
                }
                Message::Propose {
                    block,
                    batch,
                    certified,
                    ancestry,
                } => {
                    // A block whose digest does not match its batch.
                    let mut body = block.body;
                    body.batch_digest = random_digest(rng);
                    Message::Propose {
                        block: signer.sign(body),
                        batch,
                        certified,
                        ancestry,
                    }
                }
                Message::Checkpoint(v) => {
                    let mut body = v.body;
                    body.log_digest = random_digest(rng);
                    Message::Checkpoint(signer.sign(body))
                }
                Message::PrePrepare { proposal, batch } => {
                    // A proposal whose digest does not match its batch.
                    let mut body = proposal.body;
                    body.digest = random_digest(rng);
                    Message::PrePrepare {
                        proposal: signer.sign(body),
                        batch,
                    }
                }
                other => other,
            };
            honest(&m)
        }
        Behaviour::Garbage => {
            let mut out = honest(&message);
            let encoded = message.encode();
            for &d in dests {
                let len = rng.gen_range(0..300);
                out.push((d, (0..len).map(|_| rng.gen()).collect()));
                let mut mangled = encoded.clone();
                if !mangled.is_empty() {
                    for _ in 0..3 {
                        let i = rng.gen_range(0..mangled.len());
                        mangled[i] = rng.gen();
                    }
                    mangled.truncate(rng.gen_range(0..=mangled.len()));
                }
                out.push((d, mangled));
            }
            out
        }
        Behaviour::ForgeViewChange => forge_view_change(message, rng, signer, dests),
    }
}

/// The same PREPARE or COMMIT, validly re-signed for a digest that matches nothing.
fn vote_for_random_digest(message: &Message, rng: &mut ChaCha8Rng, signer: &Signer<'_>) -> Message {
    match message {
        Message::Prepare(v) => Message::Prepare(signer.sign(PrepareVote {
            digest: random_digest(rng),
            ..v.body
        })),
        Message::Commit(v) => Message::Commit(signer.sign(CommitVote {
            digest: random_digest(rng),
            ..v.body
        })),
        Message::Vote { vote, commits } => Message::Vote {
            vote: signer.sign(BlockVote {
                block: random_digest(rng),
                ..vote.body
            }),
            commits: commits
                .iter()
                .map(|c| {
                    signer.sign(CommitVote {
                        digest: random_digest(rng),
                        ..c.body
                    })
                })
                .collect(),
        },
        other => other.clone(),
    }
}

/// Another batch for the same slot: the requests reversed, or none when reversing changes
/// nothing.
fn conflicting_batch(batch: &Batch) -> Batch {
    if batch.len() < 2 {
        return Batch::default();
    }
    Batch::new(batch.requests().iter().rev().cloned().collect())
}

/// A conflicting version of a message, validly signed.
fn equivocal(message: &Message, rng: &mut ChaCha8Rng, signer: &Signer<'_>) -> Message {
    match message {
        Message::PrePrepare { proposal, batch } => {
            let other = conflicting_batch(batch);
            let body = Proposal {
                digest: other.digest(),
                ..proposal.body
            };
            Message::PrePrepare {
                proposal: signer.sign(body),
                batch: other,
            }
        }
        Message::Prepare(_) | Message::Commit(_) | Message::Vote { .. } => {
            vote_for_random_digest(message, rng, signer)
        }
        Message::Propose {
            block,
            batch,
            certified,
            ancestry,
        } => {
            // The same round, another batch (reversed, or none), validly signed.
            let other = conflicting_batch(batch);
            let body = Block {
                seq: block.body.justify.statement.seq + u64::from(!other.is_empty()),
                batch_digest: other.digest(),
                ..block.body.clone()
            };
            Message::Propose {
                block: signer.sign(body),
                batch: other,
                certified: certified.clone(),
                ancestry: ancestry.clone(),
            }
        }
        Message::NewView(nv) => {
            // A different (smaller) set of view changes to half the replicas.
            let mut changes = nv.body.view_changes.clone();
            if changes.len() > 1 {
                changes.shuffle(rng);
                changes.pop();
            }
            Message::NewView(signer.sign(NewView {
                view: nv.body.view,
                view_changes: changes,
            }))
        }
        other => other.clone(),
    }
}

fn forge_view_change(
    message: Message,
    rng: &mut ChaCha8Rng,
    signer: &Signer<'_>,
    dests: &[usize],
) -> Vec<Outgoing> {
    let mut out = Vec::new();
    let mut send = |m: &Message| {
        let bytes = m.encode();
        for &d in dests {
            out.push((d, bytes.clone()));
        }
    };
    match &message {
        Message::ViewChange(vc) => {
            // Lie by omission: report nothing prepared and the genesis checkpoint.
            send(&Message::ViewChange(signer.sign(ViewChange {
                new_view: vc.body.new_view,
                stable: StableCheckpoint::genesis(),
                prepared: Vec::new(),
            })));
            // And a forged prepared certificate (invalid signatures) for a later view.
            if let Some(proof) = vc.body.prepared.first() {
                let mut forged = proof.clone();
                for (_, s) in forged.certificate.votes.iter_mut() {
                    corrupt_signature(s, rng);
                }
                send(&Message::ViewChange(signer.sign(ViewChange {
                    new_view: vc.body.new_view + 1,
                    stable: vc.body.stable.clone(),
                    prepared: vec![forged],
                })));
            }
        }
        Message::NewView(_) => send(&equivocal(&message, rng, signer)),
        Message::Timeout {
            timeout,
            high_qc,
            last_tc,
        } => {
            send(&message);
            // Claim a far higher certificate than it holds (the certificate still names the
            // real one, so the claim must be refused), and forge a timeout certificate from
            // its own timeout alone with corrupted copies standing in for a quorum.
            send(&Message::Timeout {
                timeout: signer.sign(TimeoutVote {
                    epoch: timeout.body.epoch,
                    round: timeout.body.round + 5,
                    high_qc_round: timeout.body.round + 4,
                }),
                high_qc: high_qc.clone(),
                last_tc: last_tc.clone(),
            });
            let mut forged = Vec::new();
            for _ in 0..3 {
                let mut copy = timeout.clone();
                corrupt_signature(&mut copy.signature, rng);
                forged.push(copy);
            }
            send(&Message::Sync {
                high_qc: high_qc.clone(),
                last_tc: Some(TimeoutCert {
                    epoch: timeout.body.epoch,
                    round: timeout.body.round,
                    timeouts: forged,
                }),
            });
        }
        other => {
            send(other);
            if rng.gen_bool(0.1) {
                // Push for a far-away view; alone it must not move anyone.
                let view = rng.gen_range(1..50);
                let vc = signer.sign(ViewChange {
                    new_view: view,
                    stable: StableCheckpoint::genesis(),
                    prepared: Vec::new(),
                });
                send(&Message::ViewChange(vc.clone()));
                // A NEW-VIEW carrying only its own view change: short of a quorum.
                send(&Message::NewView(signer.sign(NewView {
                    view,
                    view_changes: vec![vc],
                })));
            }
        }
    }
    out
}
