//! View changes (PBFT 4.4) and the liveness rules of 4.5.2.

use std::collections::BTreeMap;

use ordinal_crypto::{ReplicaId, Signed, Verified};

use super::{Replica, SlotProposal, ViewChanging};
use crate::batch::Batch;
use crate::error::Invalid;
use crate::messages::{Message, NewView, StableCheckpoint, ViewChange};
use crate::safety::SafetyUpdate;

/// What a NEW-VIEW's quorum of VIEW-CHANGE messages implies: the checkpoint to start from and
/// the batch to re-propose at every sequence number above it. A pure function of the messages,
/// so the primary and every backup compute the same plan. PBFT 4.4, the computation of O.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewViewPlan {
    /// The highest stable checkpoint reported (min-s).
    pub stable: StableCheckpoint,
    /// (seq, batch) for every seq in (min-s, max-s]: the batch of the highest-view prepared
    /// certificate reported for it, or an empty batch where none was.
    pub proposals: Vec<(u64, Batch)>,
}

impl NewViewPlan {
    /// Computes the plan from verified VIEW-CHANGE bodies.
    pub fn compute<'a, I>(view_changes: I) -> NewViewPlan
    where
        I: IntoIterator<Item = &'a ViewChange> + Clone,
    {
        let stable = view_changes
            .clone()
            .into_iter()
            .map(|vc| &vc.stable)
            .max_by_key(|s| s.seq)
            .cloned()
            .unwrap_or_else(StableCheckpoint::genesis);
        let max_seq = view_changes
            .clone()
            .into_iter()
            .flat_map(|vc| vc.prepared.iter().map(|p| p.seq()))
            .max()
            .unwrap_or(0)
            .max(stable.seq);
        let mut proposals = Vec::new();
        for seq in stable.seq + 1..=max_seq {
            let mut best: Option<&crate::messages::PreparedProof> = None;
            for vc in view_changes.clone() {
                for proof in vc.prepared.iter().filter(|p| p.seq() == seq) {
                    if best.is_none_or(|b| proof.view() > b.view()) {
                        best = Some(proof);
                    }
                }
            }
            proposals.push((seq, best.map(|p| p.batch.clone()).unwrap_or_default()));
        }
        NewViewPlan { stable, proposals }
    }
}

/// VIEW-CHANGE messages held, per replica its two highest views: enough to complete the view
/// a replica is changing into and to notice the next one, while a Byzantine replica cannot make
/// the store grow.
#[derive(Clone, Debug, Default)]
pub(super) struct ViewChangeStore {
    by_replica: BTreeMap<ReplicaId, BTreeMap<u64, Verified<ViewChange>>>,
}

const KEPT_PER_REPLICA: usize = 2;

impl ViewChangeStore {
    /// Stores a message; false if it was already held.
    fn insert(&mut self, vc: Verified<ViewChange>) -> bool {
        let views = self.by_replica.entry(vc.signer()).or_default();
        let view = vc.body().new_view;
        if views.get(&view).is_some_and(|held| held.body() == vc.body()) {
            return false;
        }
        views.insert(view, vc);
        while views.len() > KEPT_PER_REPLICA {
            views.pop_first();
        }
        true
    }

    fn for_view(&self, view: u64) -> impl Iterator<Item = &Verified<ViewChange>> + '_ {
        self.by_replica.values().filter_map(move |views| views.get(&view))
    }

    /// Each replica with a message for a view above `view`, with the smallest such view.
    fn ahead_of(&self, view: u64) -> Vec<(ReplicaId, u64)> {
        self.by_replica
            .iter()
            .filter_map(|(id, views)| views.range(view + 1..).next().map(|(v, _)| (*id, *v)))
            .collect()
    }

    fn prune_below(&mut self, view: u64) {
        for views in self.by_replica.values_mut() {
            *views = views.split_off(&view);
        }
        self.by_replica.retain(|_, views| !views.is_empty());
    }

    pub(super) fn len(&self) -> usize {
        self.by_replica.values().map(BTreeMap::len).sum()
    }
}

impl Replica {
    /// Moves to `new_view` and multicasts VIEW-CHANGE (PBFT 4.4). The replica stops accepting
    /// messages of lower views; the move is durable before the message leaves.
    pub(super) fn start_view_change(&mut self, new_view: u64) {
        if new_view <= self.view {
            return;
        }
        // Whatever moved this replica on, the view it leaves did not work out under its
        // primary.
        let primary = self.primary();
        self.ledger.monitor.leader_timed_out(primary);
        self.failed_views = self.failed_views.saturating_add(1);
        self.enter_view_change(new_view);
    }

    /// Moves to `new_view` because the log changed who leads (`follow_leaders`): nobody
    /// failed, so no primary is blamed and timeouts do not back off.
    pub(super) fn start_planned_view_change(&mut self, new_view: u64) {
        if new_view > self.view {
            self.enter_view_change(new_view);
        }
    }

    fn enter_view_change(&mut self, new_view: u64) {
        self.view = new_view;
        self.view_changes_total += 1;
        self.changing = Some(ViewChanging {
            quorum_since: None,
            new_view_sent: false,
        });
        self.slots.clear();
        self.ledger.pool.clear_queue();
        self.batch_deadline = None;
        self.views_seen.retain(|_, view| *view > new_view);
        self.view_changes.prune_below(new_view);
        self.early.retain(|early| early.view() >= new_view);
        self.ledger.persist(SafetyUpdate::EnterView {
            view: new_view,
            changing: true,
        });
        self.broadcast_view_change();
        // A quorum may already be waiting for us.
        self.check_view_change_quorum();
    }

    pub(super) fn broadcast_view_change(&mut self) {
        let stable_seq = self.ledger.stable.seq;
        let body = ViewChange {
            new_view: self.view,
            stable: self.ledger.stable.clone(),
            prepared: self
                .prepared
                .range(stable_seq + 1..)
                .map(|(_, p)| p.clone())
                .collect(),
        };
        let signed = self.ledger.sign(body);
        self.own_view_changes.insert(self.view, signed.clone());
        while self.own_view_changes.len() > 3 {
            self.own_view_changes.pop_first();
        }
        self.view_changes
            .insert(Verified::new_unchecked_own(signed.clone()));
        self.ledger.broadcast(Message::ViewChange(signed));
    }

    /// In a new view the primary queues every request not yet executed, in arrival order;
    /// backups keep no queue.
    fn requeue_pending(&mut self) {
        self.ledger.pool.clear_queue();
        self.batch_deadline = None;
        if self.is_primary() {
            self.ledger.pool.requeue_all();
        }
    }

    pub(super) fn on_view_change(&mut self, vc: Verified<ViewChange>) -> Result<(), Invalid> {
        let target = vc.body().new_view;
        let from = vc.signer();
        if from == self.ledger.id {
            return Ok(());
        }
        if target < self.view || (target == self.view && self.changing.is_none()) {
            // The sender is behind: the NEW-VIEW we hold proves where the cluster went, and
            // our own VIEW-CHANGE for its view may be what it lacks for a quorum there (we may
            // have moved on before it ever reached the sender). At most once per peer per
            // interval, so replayed old messages cannot make replicas answer each other in a
            // growing loop.
            if !self.ledger.may_help(from, 0) {
                return Err(Invalid::Stale);
            }
            if let Some(new_view) = &self.last_new_view {
                if new_view.body.view >= target {
                    let message = Message::NewView(new_view.clone());
                    self.ledger.send(from, message);
                }
            }
            if let Some(own) = self.own_view_changes.get(&target) {
                let message = Message::ViewChange(own.clone());
                self.ledger.send(from, message);
            }
            return Err(Invalid::Stale);
        }
        if !self.view_changes.insert(vc) {
            return Ok(());
        }

        // PBFT 4.5.2: once replicas holding more than F weight want views above ours, at least
        // one correct replica does; join the smallest such view.
        let ahead = self.view_changes.ahead_of(self.view);
        if self
            .ledger
            .committees
            .current()
            .includes_correct(ahead.iter().map(|(id, _)| *id))
        {
            if let Some(&(lowest, smallest)) = ahead.iter().min_by_key(|(_, view)| *view) {
                self.start_view_change(smallest);
                // The sender of this VIEW-CHANGE if it moved, so that lagging replicas do not
                // all ask the same peer.
                let peer = if ahead.iter().any(|(id, _)| *id == from) {
                    from
                } else {
                    lowest
                };
                // Others moved first, maybe on a log entry this replica has not executed yet
                // (one that changed who leads, so it would refuse the new primary's NEW-VIEW
                // as from the wrong leader): ask one of them for what it lacks now, not at
                // the next tick.
                self.ledger.catch_up_hint = Some(peer);
                self.request_catch_up();
            }
        }
        self.check_view_change_quorum();
        Ok(())
    }

    /// With a quorum of VIEW-CHANGE messages for the target view, the view-change timer
    /// starts, and the new primary sends NEW-VIEW.
    pub(super) fn check_view_change_quorum(&mut self) {
        let Some(changing) = self.changing else {
            return;
        };
        let view = self.view;
        let signers: Vec<ReplicaId> = self.view_changes.for_view(view).map(|vc| vc.signer()).collect();
        // The same rule the NEW-VIEW is checked with: a quorum under every epoch in force in
        // the window above the set's highest checkpoint (`crate::epoch`).
        let low = self
            .view_changes
            .for_view(view)
            .map(|vc| vc.body().stable.seq)
            .max()
            .unwrap_or(0);
        let high = low + self.ledger.config.log_window;
        if !self.ledger.committees.is_quorum_over(signers, low + 1, high) {
            return;
        }
        if changing.quorum_since.is_none() {
            self.changing = Some(ViewChanging {
                quorum_since: Some(self.ledger.now),
                ..changing
            });
        }
        if self.is_primary() && !changing.new_view_sent {
            let view_changes: Vec<Signed<ViewChange>> = self
                .view_changes
                .for_view(view)
                .map(|vc| vc.signed().clone())
                .collect();
            let new_view = self.ledger.sign(NewView { view, view_changes });
            self.enter_new_view(new_view, true);
        }
    }

    pub(super) fn on_new_view(&mut self, new_view: Verified<NewView>) -> Result<(), Invalid> {
        let view = new_view.body().view;
        // A replica restarted in its view lost that view's NEW-VIEW; accepting it again is
        // safe because its durable prepare records pin the digests it already voted for.
        let restarted_without_it = view == self.view && view > 0 && self.last_new_view.is_none();
        if view < self.view || (view == self.view && self.changing.is_none() && !restarted_without_it) {
            return Err(Invalid::Stale);
        }
        self.enter_new_view(new_view.into_signed(), false);
        Ok(())
    }

    /// PBFT 4.4: adopt the view, its checkpoint, and its re-proposals, which are then prepared
    /// like any PRE-PREPARE. The new primary `announce`s the NEW-VIEW, after making the move
    /// durable, so that a crash cannot make it send a second, different one.
    fn enter_new_view(&mut self, new_view: Signed<NewView>, announce: bool) {
        let view = new_view.body.view;
        let plan = NewViewPlan::compute(new_view.body.view_changes.iter().map(|vc| &vc.body));
        if view > self.view && self.changing.is_none() {
            // Jumping straight from normal operation (we were cut off).
            self.view_changes_total += 1;
        }
        self.view = view;
        self.changing = None;
        self.ledger.last_progress = self.ledger.now;
        self.slots.clear();
        self.view_changes.prune_below(view + 1);
        self.views_seen.retain(|_, seen| *seen > view);
        self.requeue_pending();
        self.ledger.persist(SafetyUpdate::EnterView {
            view,
            changing: false,
        });
        if announce {
            self.ledger.broadcast(Message::NewView(new_view.clone()));
        }
        self.last_new_view = Some(new_view);
        if self.ledger.stable.seq > plan.stable.seq {
            // Our checkpoint is newer than the view's: the re-proposals we skip below it are
            // committed, and the proof lets lagging peers skip them too.
            let message = Message::Stable(self.ledger.stable.clone());
            self.ledger.broadcast(message);
        }
        self.ledger.make_stable(plan.stable);
        let mut highest = self.ledger.stable.seq;
        for (seq, batch) in plan.proposals {
            highest = highest.max(seq);
            if seq <= self.ledger.stable.seq {
                continue;
            }
            let digest = batch.digest();
            self.slots.entry(seq).or_default().proposal = Some(SlotProposal {
                digest,
                batch,
                signed: None,
            });
            self.send_prepare(seq, digest, true);
            self.check_prepared(seq);
        }
        self.next_seq = highest.max(self.ledger.last_executed) + 1;
        if self.is_primary() && !self.ledger.pool.queue_is_empty() {
            self.batch_deadline = Some(self.ledger.now);
        }
        // Votes of this view that came before its NEW-VIEW was checked.
        self.replay_early();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{PrepareVote, PreparedProof};
    use crate::request::Request;
    use ordinal_crypto::{Certificate, Committee, Digest, KeyPair, ReplicaId};

    fn proof(keys: &[KeyPair], committee: &Committee, view: u64, seq: u64, tag: u8) -> PreparedProof {
        let batch = Batch::new(vec![Request::unsigned(keys[0].public(), tag as u64, vec![tag])]);
        let statement = PrepareVote {
            view,
            seq,
            digest: batch.digest(),
        };
        let votes: Vec<_> = (0..3)
            .map(|i| {
                Signed::sign(statement, ReplicaId(i as u16), &keys[i], committee)
                    .verify(committee)
                    .unwrap()
            })
            .collect();
        PreparedProof {
            certificate: Certificate::from_votes(statement, 0, &votes),
            batch,
        }
    }

    /// Table test of the O computation: highest view wins per seq, gaps become empty batches.
    #[test]
    fn plan_takes_highest_view_and_fills_gaps() {
        let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed([i; 32])).collect();
        let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
        let committee = Committee::equal_weights(Digest::of(b"vc"), &publics).unwrap();
        let vc = |prepared: Vec<PreparedProof>| ViewChange {
            new_view: 5,
            stable: StableCheckpoint::genesis(),
            prepared,
        };
        let a = vc(vec![
            proof(&keys, &committee, 1, 1, 1),
            proof(&keys, &committee, 1, 3, 3),
        ]);
        let b = vc(vec![proof(&keys, &committee, 2, 1, 11)]);
        let c = vc(vec![]);
        let plan = NewViewPlan::compute([&a, &b, &c]);
        assert_eq!(plan.stable.seq, 0);
        let seqs: Vec<u64> = plan.proposals.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(plan.proposals[0].1, b.prepared[0].batch, "view 2 beats view 1");
        assert!(plan.proposals[1].1.is_empty(), "gap is a null batch");
        assert_eq!(plan.proposals[2].1, a.prepared[1].batch);
        let empty = NewViewPlan::compute([&c]);
        assert!(empty.proposals.is_empty());
    }
}
