//! Weight epochs: which weights count the votes at which sequence number.
//!
//! A weight change is an ordinary request in the ordered log, so every correct replica sees the
//! same changes at the same sequence numbers and derives the same schedule:
//!
//! - **Entries.** A member replica signs a [`QuorumEntry`] as a request with its own key as
//!   the client key ([`QuorumEntry::to_request`]): either a [`WeightChange`] (an operator's or
//!   a test's explicit vector) or a [`LatencyReport`] (its measurements). Once enough reports
//!   are in, every replica derives the same next weights from their medians
//!   ([`Committees::record_report`]). Clients cannot forge an entry (they lack member keys); a
//!   payload that merely looks like one from a non-member is an ordinary transaction.
//! - **Validation at execution**, identical everywhere because it reads only the log: the
//!   epoch number is the next one; no change is pending (one at a time); every weight lies in
//!   the cluster's [`WeightBounds`]; the vector is admissible (W > 3F); and its quorums meet
//!   the current epoch's in a correct replica ([`Committee::jointly_safe_with`]). A refused
//!   entry changes nothing.
//! - **Activation.** A change executed at sequence number s takes effect at
//!   A = c + log_window + 1, with c the first checkpoint at or after s. A replica votes on x
//!   only inside its window (x ≤ stable + log_window), so by the time any correct replica
//!   votes under the new weights its stable checkpoint is at or past c, and the replica has
//!   executed s: it knows the weights ([`Committees::known_through`]). Epochs are at least
//!   one window apart, so a window of log holds at most two of them.
//! - **Changing views.** A set of view changes (PBFT) or timeouts (linear) must be a quorum
//!   under *every* epoch that covers the window it may re-propose ([`Committees::covering`]).
//!   With consecutive epochs jointly safe, that set meets every commit quorum of that window
//!   in a correct replica, as in PBFT's proof with one weight vector; a commit further ahead
//!   would need a correct replica whose checkpoint is beyond the view-change set's highest,
//!   which the same intersection rules out.
//!
//! Votes do not sign the weight epoch (see `ordinal_crypto::signed`): certificates name it, and
//! the protocol checks that the named epoch is the one in force at the certified sequence
//! number.
//!
//! **Membership** changes ride the same epochs: a [`MembershipChange`] signed by the
//! operator key adds a replica (the next id) or removes one (its slot stays, with weight 0),
//! with equal weights and f recomputed for the new member count, under the same activation
//! rule and the same joint-safety requirement, which [`Committee::jointly_safe_with`] states
//! for different member sets. Nothing above assumed the members fixed: a certificate at x is
//! counted with the members in force at x, and a view-change set must be a quorum of every
//! membership covering its window. Signatures are checked against every replica ever a
//! member ([`Committees::signers`]); only weight in the epoch of the sequence number counts.

use ordinal_crypto::{
    Committee, CryptoError, KeyPair, Member, MembershipEdit, PublicKey, ReplicaId, WeightBounds,
};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;
use std::time::Duration;

use crate::request::{request_signing_bytes, Request};
use crate::weighting::{choose_weights, median_latencies};
use ordinal_crypto::{verify_signatures, SignatureCheck};

/// Marks a request payload as a quorum-manager entry.
pub const ENTRY_TAG: &[u8] = b"ordinal/quorum/v1";

/// Largest accepted encoded entry (a few bytes per member).
const MAX_ENTRY_BYTES: usize = 16 * 1024;

/// A reconfiguration entry: the weights of the next epoch, in member order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightChange {
    /// The epoch these weights start; must be the latest epoch plus one.
    pub epoch: u64,
    /// One weight per member, in id order.
    pub weights: Vec<u64>,
}

/// A member's measurements, ordered through the log so that every replica computes the next
/// weights from the same reports ([`Committees::record_report`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// The epoch the latencies were measured in (the latest scheduled when sent).
    pub epoch: u64,
    /// The smoothed vote latency of each member in microseconds, in id order; `None` for
    /// the reporter itself and for members it has no measurement of.
    pub latencies_us: Vec<Option<u32>>,
}

/// Longest replica address a membership entry carries.
pub const MAX_ADDRESS_LEN: usize = 256;

/// A reconfiguration entry: a replica joins or leaves. Only the cluster's operator key signs
/// these (see [`Committees::schedule_membership`] for the authority model).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    /// The epoch the new membership starts; must be the latest epoch plus one.
    pub epoch: u64,
    /// Who joins (its key; it takes the next free id) or leaves (its id).
    pub edit: MembershipEdit,
    /// Where a joining replica listens for its peers (`host:port`); empty for a leave.
    pub address: String,
}

/// What a member (or, for membership, the operator) can put into the log for the quorum
/// manager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuorumEntry {
    /// Proposes the next epoch's weights.
    Weights(WeightChange),
    /// Reports measurements.
    Latencies(LatencyReport),
    /// Adds or removes a replica.
    Membership(MembershipChange),
}

/// Who signed a quorum entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Author {
    /// A replica with a slot, by id.
    Replica(ReplicaId),
    /// The operator key named in the cluster configuration.
    Operator,
}

impl QuorumEntry {
    /// The request that carries this entry into the log, signed by member `key`. Members
    /// number their entries with `nonce`, taken from their executed log so that it grows
    /// across restarts ([`entry_nonce`]).
    pub fn to_request(&self, key: &KeyPair, cluster_id: &ordinal_crypto::Digest, nonce: u64) -> Request {
        Request::signed(key, cluster_id, nonce, self.payload())
    }

    /// The request payload that carries this entry (for a client whose key is the author's,
    /// such as the operator's admin command).
    pub fn payload(&self) -> Vec<u8> {
        let mut payload = ENTRY_TAG.to_vec();
        // Plain integers, keys and strings always serialise.
        payload.extend(postcard::to_allocvec(self).unwrap_or_default());
        payload
    }

    /// The entry a request carries and who signed it, if it is one: the client key is a
    /// replica's (any slot of `committee`) or the operator's, the payload has the tag and
    /// decodes, and the signature holds (checked here, whatever the cluster's client
    /// authentication mode). Anything else is an ordinary transaction. Whether that author
    /// may make that entry is [`Committees::apply_batch`]'s call.
    pub fn from_request(
        request: &Request,
        committee: &Committee,
        operator: Option<&PublicKey>,
    ) -> Option<(Author, QuorumEntry)> {
        let body = request.payload().strip_prefix(ENTRY_TAG)?;
        if body.len() > MAX_ENTRY_BYTES {
            return None;
        }
        let (author, key) = match committee.slot_of(&request.client) {
            Some(member) => (Author::Replica(member.id), *committee.key(member.id)?),
            None if operator == Some(&request.client) => (Author::Operator, request.client.decode().ok()?),
            None => return None,
        };
        let entry: QuorumEntry = postcard::from_bytes(body).ok()?;
        let signature = request.signature?;
        let message =
            request_signing_bytes(&committee.cluster_id(), request.nonce, &request.payload_digest());
        let bad = verify_signatures(&[SignatureCheck {
            key: &key,
            message: &message,
            signature: &signature,
        }]);
        bad.is_empty().then_some((author, entry))
    }
}

/// The nonce for a member's next entry of `kind` (0 weights, 1 latencies) with its log
/// executed through `executed`: grows with the log, so it survives restarts and never falls
/// behind the de-duplication window.
pub fn entry_nonce(executed: u64, kind: u64) -> u64 {
    executed.saturating_mul(2).saturating_add(kind & 1)
}

/// Why a weight change in the log changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefused {
    /// Weight changes are disabled in this cluster.
    #[error("weight changes are disabled")]
    Disabled,
    /// Weights follow measurements in this cluster; explicit vectors are refused.
    #[error("weights follow measurements here; explicit changes are refused")]
    Measured,
    /// Not the next epoch number.
    #[error("epoch {got}, expected {expected}")]
    WrongEpoch {
        /// The next epoch.
        expected: u64,
        /// The entry's.
        got: u64,
    },
    /// The previous change has not taken effect yet.
    #[error("epoch {epoch} starts at {start}; one change at a time")]
    Pending {
        /// The pending epoch.
        epoch: u64,
        /// Where it starts.
        start: u64,
    },
    /// Out of bounds or inadmissible.
    #[error("weights refused: {0}")]
    Inadmissible(#[from] CryptoError),
    /// Its quorums need not meet the current epoch's in a correct replica.
    #[error("not jointly safe with the current weights; move in smaller steps")]
    NotJointlySafe,
    /// The author may not make this entry: membership is the operator's, weights and reports
    /// are the members'.
    #[error("not authorised to make this entry")]
    NotAuthorised,
    /// Membership changes are disabled (no operator key configured).
    #[error("membership changes are disabled (no operator key)")]
    MembershipDisabled,
    /// An entry whose nonce is not above its author's last one: a copy of an old entry.
    #[error("a repeat of an earlier entry (its nonce is not above the author's last)")]
    Replayed,
    /// The weights in force already.
    #[error("the same weights as now")]
    Unchanged,
    /// A joining replica's address is empty or too long.
    #[error("a joining replica needs an address of at most {MAX_ADDRESS_LEN} bytes")]
    BadAddress,
}

/// One epoch: its committee (whose `epoch()` is its number) and the first sequence number it
/// counts.
#[derive(Clone, Debug)]
pub struct Epoch {
    /// The first sequence number whose votes these weights count.
    pub start: u64,
    /// Members and weights.
    pub committee: Committee,
    /// Where the entry that made it was ordered (0 for the configured epoch).
    pub decided_at: u64,
    /// Who proposed it (a member's report or vector; `None` for the configured epoch and
    /// for the operator's membership changes).
    pub proposer: Option<ReplicaId>,
    /// The replica that joins with this epoch and its address, if one does.
    pub joined: Option<(ReplicaId, String)>,
}

/// The weight schedule a replica derived from its executed log, also what hosts verify
/// messages with. Epoch numbers are dense from 0, so lookups by number are an index.
#[derive(Clone, Debug)]
pub struct Committees {
    epochs: Vec<Epoch>,
    bounds: Option<WeightBounds>,
    checkpoint_interval: u64,
    log_window: u64,
    executed: u64,
    /// The latest measurements of each reporter for the latest epoch.
    reports: BTreeMap<ReplicaId, Vec<Option<Duration>>>,
    /// Weights follow reports only (explicit changes refused).
    measured: bool,
    /// The key that may change membership; `None` disables membership changes.
    operator: Option<PublicKey>,
    /// Every replica that is or was a member of a scheduled epoch, weight 1, over the latest
    /// slot table: what signatures are checked against. Never used to count.
    signers: Committee,
    /// The nonce of each author's last entry (members and the operator: bounded by the slots).
    last_nonce: BTreeMap<PublicKey, u64>,
    /// Who primaries rotate over: the members of both of the two latest epochs.
    leaders: Committee,
    /// Entries refused so far, and the last one (sequence number, reason): what operators see.
    refused: u64,
    last_refused: Option<(u64, ChangeRefused)>,
}

impl Committees {
    /// The configured committee as epoch 0 from sequence number 1. `bounds` enables weight
    /// changes (None: every entry is refused and the schedule is final everywhere).
    pub fn new(
        genesis: Committee,
        bounds: Option<WeightBounds>,
        checkpoint_interval: u64,
        log_window: u64,
    ) -> Self {
        Self::with_policy(genesis, bounds, false, checkpoint_interval, log_window)
    }

    /// Like [`Committees::new`]; with `measured`, weights follow latency reports only and
    /// explicit [`WeightChange`] entries are refused: any one member may order an entry, so
    /// an explicit vector would let a single Byzantine member pin the weights (within the
    /// bounds) and, ordered again at every epoch, keep measurements from ever mattering.
    pub fn with_policy(
        genesis: Committee,
        bounds: Option<WeightBounds>,
        measured: bool,
        checkpoint_interval: u64,
        log_window: u64,
    ) -> Self {
        Committees {
            measured,
            operator: None,
            last_nonce: BTreeMap::new(),
            leaders: genesis.clone(),
            refused: 0,
            last_refused: None,
            signers: genesis.clone(),
            epochs: vec![Epoch {
                start: 1,
                committee: genesis,
                decided_at: 0,
                proposer: None,
                joined: None,
            }],
            bounds,
            checkpoint_interval: checkpoint_interval.max(1),
            log_window,
            executed: 0,
            reports: BTreeMap::new(),
        }
    }

    /// Lets `operator` add and remove replicas through the log (membership changes are
    /// disabled without it).
    pub fn with_operator(mut self, operator: Option<PublicKey>) -> Self {
        self.operator = operator;
        self
    }

    /// The operator key, if membership can change.
    pub fn operator(&self) -> Option<&PublicKey> {
        self.operator.as_ref()
    }

    /// A fixed committee: one epoch, no changes. For verifiers outside a replica.
    pub fn fixed(committee: Committee) -> Self {
        Committees::new(committee, None, 1, 0)
    }

    /// The configured (first) committee.
    pub fn base(&self) -> &Committee {
        &self.epochs[0].committee
    }

    /// Every replica that is or was a member of a scheduled epoch, each with weight 1: what
    /// signatures are checked against (a vote only counts where the epoch of its sequence
    /// number gives the signer weight). Its slot table is the latest one.
    pub fn signers(&self) -> &Committee {
        &self.signers
    }

    /// The replicas primaries rotate over: the heaviest members of the latest scheduled epoch
    /// that were members of the one before it too. Every replica that executed the same log
    /// agrees on it.
    ///
    /// - Reliability: where weights differ (AWARE weights from the medians of latency reports,
    ///   or an explicit vector), only the heaviest members lead, at least 2f of them (every
    ///   member as heavy as the 2f-th heaviest): the ones the log found fastest, which is
    ///   where a leader saves a round trip for everyone. A replica the reports find slow is
    ///   not heavy, and so stops leading once a new vector is derived (which takes reports
    ///   from 2f + 2 members: with n = 4, a crashed heavy replica keeps its weight). Of 2f or
    ///   more leaders at most f are faulty, so at most f views in a row have a faulty primary,
    ///   as with plain round-robin.
    /// - Membership: a replica that is about to leave stops leading as soon as its leave is
    ///   scheduled, and one that joins starts leading only with the next change after its
    ///   join, once it has long been voting (a newcomer still catching up would stall views).
    pub fn leaders(&self) -> &Committee {
        &self.leaders
    }

    /// The address a replica that joined through the log announced.
    pub fn joined_address(&self, id: ReplicaId) -> Option<&str> {
        self.epochs
            .iter()
            .filter_map(|e| e.joined.as_ref())
            .find(|(joined, _)| *joined == id)
            .map(|(_, address)| address.as_str())
    }

    /// The last scheduled epoch's committee (possibly not in force yet).
    pub fn latest(&self) -> &Committee {
        &self.epochs[self.epochs.len() - 1].committee
    }

    /// The committee in force at the next sequence number to apply.
    pub fn current(&self) -> &Committee {
        self.for_seq(self.executed + 1).unwrap_or(self.latest())
    }

    /// The first sequence number of the latest scheduled epoch.
    pub fn latest_start(&self) -> u64 {
        self.epochs[self.epochs.len() - 1].start
    }

    /// The committee of epoch `number`, if known.
    pub fn by_number(&self, number: u64) -> Option<&Committee> {
        usize::try_from(number)
            .ok()
            .and_then(|i| self.epochs.get(i))
            .map(|e| &e.committee)
    }

    /// Every epoch, oldest first.
    pub fn epochs(&self) -> &[Epoch] {
        &self.epochs
    }

    /// Whether weight or membership changes are enabled.
    pub fn changes_enabled(&self) -> bool {
        self.bounds.is_some() || self.operator.is_some()
    }

    /// The highest sequence number whose weights the executed log already fixes: an entry at
    /// s only affects numbers above ⌈s/K⌉·K + log_window, so with the log executed through L
    /// every number up to (⌊L/K⌋ + 1)·K + log_window is settled.
    pub fn known_through(&self) -> u64 {
        if !self.changes_enabled() {
            return u64::MAX;
        }
        let k = self.checkpoint_interval;
        (self.executed / k + 1)
            .saturating_mul(k)
            .saturating_add(self.log_window)
    }

    /// The committee counting votes at `seq`, or None while the log is too far behind to know.
    pub fn for_seq(&self, seq: u64) -> Option<&Committee> {
        if seq > self.known_through() {
            return None;
        }
        self.epochs
            .iter()
            .rev()
            .find(|e| e.start <= seq)
            .or(self.epochs.first())
            .map(|e| &e.committee)
    }

    /// The committees of every epoch in force somewhere in `from..=to` (one or two).
    pub fn covering(&self, from: u64, to: u64) -> Vec<&Committee> {
        let mut out = Vec::new();
        for (i, e) in self.epochs.iter().enumerate() {
            let end = self.epochs.get(i + 1).map_or(u64::MAX, |next| next.start - 1);
            if e.start <= to && end >= from {
                out.push(&e.committee);
            }
        }
        out
    }

    /// Whether `signers` reach the quorum of every epoch covering `from..=to`, all of which
    /// must be known.
    pub fn is_quorum_over<I>(&self, signers: I, from: u64, to: u64) -> bool
    where
        I: IntoIterator<Item = ReplicaId>,
        I::IntoIter: Clone,
    {
        let signers = signers.into_iter();
        to.min(u64::MAX - 1) <= self.known_through()
            && self
                .covering(from, to)
                .iter()
                .all(|c| c.is_quorum(signers.clone()))
    }

    /// The log executed through `seq` (schedule knowledge follows it).
    pub(crate) fn executed(&mut self, seq: u64) {
        self.executed = self.executed.max(seq);
    }

    /// The highest sequence number whose batch has been applied.
    pub fn applied_through(&self) -> u64 {
        self.executed
    }

    /// Applies the committed batch at `seq` (the next one: `applied_through() + 1`): every
    /// quorum-manager entry in it, in order, then the sequence number. Replicas call it as they
    /// execute, and a client following the certified log calls it on the batches it reads:
    /// both see every entry, repeats included (a repeat, nonce not above its author's last,
    /// changes nothing), so both derive the same schedule. Returns what became of each entry
    /// that was due.
    pub fn apply_batch(&mut self, seq: u64, batch: &crate::Batch) -> Vec<(u64, Result<u64, ChangeRefused>)> {
        let mut outcomes = Vec::new();
        if self.changes_enabled() && seq == self.executed + 1 {
            for request in batch.requests() {
                let Some((author, entry)) =
                    QuorumEntry::from_request(request, self.latest(), self.operator.as_ref())
                else {
                    continue;
                };
                // Each author's entries count once, in nonce order: a copy of an old entry
                // (a Byzantine primary may put one in any batch) changes nothing, even when the
                // entry was refused the first time and would pass now.
                if self
                    .last_nonce
                    .get(&request.client)
                    .is_some_and(|last| request.nonce <= *last)
                {
                    outcomes.push((seq, Err(ChangeRefused::Replayed)));
                    continue;
                }
                self.last_nonce.insert(request.client, request.nonce);
                // Weights and reports come from members of the latest epoch; membership from
                // the operator.
                let member = match author {
                    Author::Replica(id) if self.latest().contains(id) => Some(id),
                    _ => None,
                };
                let outcome = match (entry, member, author) {
                    (QuorumEntry::Membership(change), _, Author::Operator) => {
                        Some(self.schedule_membership(seq, &change))
                    }
                    (QuorumEntry::Membership(_), _, _) | (_, None, _) => {
                        Some(Err(ChangeRefused::NotAuthorised))
                    }
                    (QuorumEntry::Weights(_), Some(_), _) if self.measured => {
                        Some(Err(ChangeRefused::Measured))
                    }
                    (QuorumEntry::Weights(change), Some(proposer), _) => {
                        Some(self.schedule(seq, proposer, &change))
                    }
                    (QuorumEntry::Latencies(report), Some(reporter), _) => {
                        self.record_report(seq, reporter, &report)
                    }
                };
                outcomes.extend(outcome.map(|o| (seq, o)));
            }
        }
        for (at, outcome) in &outcomes {
            if let Err(refused) = outcome {
                self.refused += 1;
                self.last_refused = Some((*at, refused.clone()));
            }
        }
        self.executed(seq);
        outcomes
    }

    /// How many quorum entries the log refused so far, and the last refusal (its sequence
    /// number and reason). Every replica and client following the log counts the same.
    pub fn refusals(&self) -> (u64, Option<&(u64, ChangeRefused)>) {
        (self.refused, self.last_refused.as_ref())
    }

    /// A latency report executed at `seq`. Once reports from 2f + 2 members (all of them if
    /// fewer) are in for the latest epoch, after it took effect, every replica computes the
    /// same next weights from them: AWARE weights on the 2f members with the lowest median
    /// latency as the others reported it ([`crate::weighting`]). A Byzantine member moves a
    /// median only within the range correct reports span. A heavy member stays heavy until
    /// another is twice as fast and a millisecond faster (hysteresis). When that vector cannot follow the
    /// current one directly (not jointly safe), the flat vector is the step between. Returns
    /// what became of a change, if one was due.
    pub fn record_report(
        &mut self,
        seq: u64,
        reporter: ReplicaId,
        report: &LatencyReport,
    ) -> Option<Result<u64, ChangeRefused>> {
        let bounds = self.bounds?;
        let latest = &self.epochs[self.epochs.len() - 1];
        let n = latest.committee.slots();
        if report.epoch != latest.committee.epoch() || seq < latest.start || report.latencies_us.len() != n {
            return None;
        }
        let members: Vec<bool> = latest
            .committee
            .slot_table()
            .iter()
            .map(Member::is_active)
            .collect();
        let latencies = report
            .latencies_us
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.filter(|_| i != reporter.index() && members[i])
                    .map(|us| Duration::from_micros(u64::from(us)))
            })
            .collect();
        self.reports.insert(reporter, latencies);
        let faults = latest.committee.faults();
        let size = latest.committee.size();
        if self.reports.len() < (2 * faults + 2).min(size) {
            return None;
        }
        // Weights are chosen over the members only, then spread back over the slots.
        let member_ids: Vec<usize> = (0..n).filter(|&i| members[i]).collect();
        let reports: Vec<(ReplicaId, crate::weighting::LatencyReport)> = self
            .reports
            .iter()
            .filter_map(|(id, l)| {
                let position = member_ids.iter().position(|&i| i == id.index())?;
                Some((
                    ReplicaId(position as u16),
                    member_ids.iter().map(|&i| l[i]).collect(),
                ))
            })
            .collect();
        let mut standing = median_latencies(size, &reports, (2 * faults + 1).min(size - 1));
        // The 2f heavy replicas are chosen on measurements only: while fewer than 2f members
        // have a median, the rest would be picked by id (or a lone measured slow replica would
        // rank first), so the weights wait for more reports.
        if standing.iter().filter(|s| s.is_some()).count() < 2 * faults {
            return None;
        }
        let current: Vec<u64> = member_ids
            .iter()
            .map(|&i| latest.committee.weights()[i])
            .collect();
        // Hysteresis: a heavy replica keeps its place unless another is more than twice as
        // fast and by more than a millisecond. Without it, replicas of about equal speed trade
        // places on noise (seen on a loaded two-core machine), and every trade costs two
        // epochs through the flat vector.
        let lightest = current.iter().copied().min().unwrap_or(1);
        for (latency, weight) in standing.iter_mut().zip(&current) {
            if *weight > lightest {
                *latency = latency.map(|l| (l / 2).saturating_sub(Duration::from_millis(1)));
            }
        }
        let target = choose_weights(size, faults, &standing)?;
        if target == current {
            return None;
        }
        let spread = |chosen: &[u64]| {
            let mut all = vec![0; n];
            for (slot, w) in member_ids.iter().zip(chosen) {
                all[*slot] = *w;
            }
            all
        };
        let (target, current) = (spread(&target), spread(&current));
        let direct = latest
            .committee
            .reweighted(latest.committee.epoch() + 1, &target)
            .is_ok_and(|next| next.jointly_safe_with(&latest.committee));
        let next = if direct {
            target
        } else {
            spread(&vec![bounds.min.max(1); size])
        };
        if next == current {
            return None;
        }
        let change = WeightChange {
            epoch: latest.committee.epoch() + 1,
            weights: next,
        };
        let outcome = self.schedule(seq, reporter, &change);
        Some(outcome)
    }

    /// The latest epoch, if an entry executed at `seq` naming epoch `epoch` may schedule the
    /// next one: it names exactly the next number, and the latest has taken effect (one change
    /// at a time).
    fn next_epoch_allowed(&self, seq: u64, epoch: u64) -> Result<&Epoch, ChangeRefused> {
        let latest = &self.epochs[self.epochs.len() - 1];
        let expected = latest.committee.epoch() + 1;
        if epoch != expected {
            return Err(ChangeRefused::WrongEpoch { expected, got: epoch });
        }
        if seq < latest.start {
            return Err(ChangeRefused::Pending {
                epoch: latest.committee.epoch(),
                start: latest.start,
            });
        }
        Ok(latest)
    }

    /// A weight change executed at `seq`: validates it against the log-derived state and
    /// schedules it. Returns the epoch's first sequence number.
    pub fn schedule(
        &mut self,
        seq: u64,
        proposer: ReplicaId,
        change: &WeightChange,
    ) -> Result<u64, ChangeRefused> {
        let bounds = self.bounds.ok_or(ChangeRefused::Disabled)?;
        let latest = self.next_epoch_allowed(seq, change.epoch)?;
        let members: Vec<u64> = change.weights.iter().copied().filter(|w| *w > 0).collect();
        if members.len() != latest.committee.size() {
            return Err(ChangeRefused::Inadmissible(CryptoError::BadCommittee(
                "a weight change cannot add or remove replicas".into(),
            )));
        }
        bounds.check(&members, latest.committee.faults())?;
        if change.weights == latest.committee.weights() {
            // A no-op would only hold the schedule "pending" (and keep membership changes out).
            return Err(ChangeRefused::Unchanged);
        }
        let next = latest.committee.reweighted(change.epoch, &change.weights)?;
        if !next.jointly_safe_with(&latest.committee) {
            return Err(ChangeRefused::NotJointlySafe);
        }
        Ok(self.push(seq, seq, next, Some(proposer), None))
    }

    /// A membership change executed at `seq`, signed by the operator: validates it and
    /// schedules the new membership, every member at the least weight (`[weights] min`, or
    /// 1), with f recomputed from the member count. When the current weights are skewed and
    /// the new membership cannot follow them safely, an epoch with the current members at
    /// equal weights goes first (both scheduled now, one window apart). Returns the first
    /// sequence number of the new membership.
    ///
    /// The authority model: membership is the operator's alone. Members order weights and
    /// measurements because those are bounded (a Byzantine member moves weights only within
    /// safe vectors); who the members are is not bounded that way (one Byzantine author could
    /// add its own replicas until it holds more than f), so it takes a key outside the
    /// replicas, named in every replica's and client's configuration. Safety still never
    /// rests on the operator: each step must be jointly safe with the one before, so a cluster
    /// grows or shrinks one replica at a time.
    pub fn schedule_membership(&mut self, seq: u64, change: &MembershipChange) -> Result<u64, ChangeRefused> {
        if self.operator.is_none() {
            return Err(ChangeRefused::MembershipDisabled);
        }
        let latest = self.next_epoch_allowed(seq, change.epoch)?;
        let joining = matches!(change.edit, MembershipEdit::Join(_));
        if joining && (change.address.trim().is_empty() || change.address.len() > MAX_ADDRESS_LEN) {
            return Err(ChangeRefused::BadAddress);
        }
        let weight = self.bounds.map_or(1, |b| b.min.max(1));
        let current = latest.committee.clone();
        let flat_weights: Vec<u64> = current
            .slot_table()
            .iter()
            .map(|m| if m.is_active() { weight } else { 0 })
            .collect();
        let direct = current.with_membership(change.epoch, change.edit, weight)?;
        if direct.jointly_safe_with(&current) {
            let joined = joining.then(|| (ReplicaId((direct.slots() - 1) as u16), change.address.clone()));
            return Ok(self.push(seq, seq, direct, None, joined));
        }
        // Through equal weights first, if that makes the step safe.
        let flat = current.reweighted(change.epoch, &flat_weights)?;
        let after = flat.with_membership(change.epoch + 1, change.edit, weight)?;
        if flat_weights == current.weights()
            || !flat.jointly_safe_with(&current)
            || !after.jointly_safe_with(&flat)
        {
            return Err(ChangeRefused::NotJointlySafe);
        }
        let first = self.push(seq, seq, flat, None, None);
        let joined = joining.then(|| (ReplicaId((after.slots() - 1) as u16), change.address.clone()));
        // Decided by the same entry, the second epoch starts a window after the first.
        Ok(self.push(first, seq, after, None, joined))
    }

    /// Schedules `next`, decided by the entry at `decided_at`, from a window after the first
    /// checkpoint at or after `after`. Returns its first sequence number.
    fn push(
        &mut self,
        after: u64,
        decided_at: u64,
        next: Committee,
        proposer: Option<ReplicaId>,
        joined: Option<(ReplicaId, String)>,
    ) -> u64 {
        let k = self.checkpoint_interval;
        let checkpoint = after.div_ceil(k).saturating_mul(k);
        let start = checkpoint.saturating_add(self.log_window).saturating_add(1);
        self.signers = signers_of(&self.signers, &next);
        self.leaders = leaders_of(&self.latest().clone(), &next);
        self.epochs.push(Epoch {
            start,
            committee: next,
            decided_at,
            proposer,
            joined,
        });
        // Measurements taken under the old weights say nothing about the new ones.
        self.reports.clear();
        start
    }
}

/// The heaviest members of `next` that are members of `previous` too, each at weight 1, over
/// `next`'s slot table: see [`Committees::leaders`]. Falls back to every member of both, and
/// then to `next`, if that leaves nobody (joint safety rules the last case out).
fn leaders_of(previous: &Committee, next: &Committee) -> Committee {
    let both = |m: &Member| m.is_active() && previous.contains(m.id);
    // The weight of the 2f-th heaviest (at least the heaviest): everyone at or above it leads,
    // so there are always at least 2f leaders (more than f, so never only faulty ones),
    // however few members a vector makes heavy.
    let mut weights: Vec<u64> = next
        .slot_table()
        .iter()
        .filter(|m| both(m))
        .map(|m| m.weight)
        .collect();
    weights.sort_unstable_by(|a, b| b.cmp(a));
    let heaviest = weights
        .get((2 * next.faults()).max(1).min(weights.len()).saturating_sub(1))
        .copied();
    let pick = |eligible: &dyn Fn(&Member) -> bool| -> Option<Committee> {
        let members: Vec<Member> = next
            .slot_table()
            .iter()
            .map(|m| Member {
                weight: u64::from(eligible(m)),
                ..m.clone()
            })
            .collect();
        Committee::new(next.cluster_id(), next.epoch(), members, 0).ok()
    };
    heaviest
        .and_then(|threshold| pick(&|m: &Member| both(m) && m.weight >= threshold))
        .or_else(|| pick(&both))
        .unwrap_or_else(|| next.clone())
}

/// The signer table after `next` is scheduled: `previous`'s signers plus `next`'s members,
/// each at weight 1, over `next`'s (longer or equal) slot table.
fn signers_of(previous: &Committee, next: &Committee) -> Committee {
    let members: Vec<Member> = next
        .slot_table()
        .iter()
        .map(|m| Member {
            weight: u64::from(m.is_active() || previous.contains(m.id)),
            ..m.clone()
        })
        .collect();
    // Weight 1 everywhere, f = 0: always admissible.
    Committee::new(next.cluster_id(), 0, members, 0).unwrap_or_else(|_| previous.clone())
}

/// What verifying a message needs to know about weights: the keys (the same in every
/// epoch) and which epoch's weights count at a sequence number. A single [`Committee`] is a
/// schedule of one epoch.
pub trait Weights {
    /// Every replica whose signature can count somewhere, for checking signatures; never for
    /// counting (see [`Committees::signers`]).
    fn signers(&self) -> &Committee;
    /// The replicas primaries rotate over ([`Committees::leaders`]).
    fn leaders(&self) -> &Committee;
    /// The committee counting votes at `seq`, None if not known yet.
    fn for_seq(&self, seq: u64) -> Option<&Committee>;
    /// Whether `signers` reach the quorum of every epoch in force in `from..=to`.
    fn is_quorum_over(&self, signers: &[ReplicaId], from: u64, to: u64) -> bool;
    /// Epoch `number`'s committee and its first sequence number, if scheduled: what the
    /// linear mode counts an epoch's votes and timeouts with.
    fn epoch_of_number(&self, number: u64) -> Option<(&Committee, u64)>;

    /// The committee of the epoch before `epoch`, if there is one: who may open `epoch`'s
    /// chain in the linear mode ([`crate::leader::opening_leader`]).
    fn committee_before(&self, epoch: u64) -> Option<&Committee> {
        let (committee, _) = self.epoch_of_number(epoch.checked_sub(1)?)?;
        Some(committee)
    }
}

impl Weights for Committee {
    fn signers(&self) -> &Committee {
        self
    }

    fn leaders(&self) -> &Committee {
        self
    }

    fn for_seq(&self, _seq: u64) -> Option<&Committee> {
        Some(self)
    }

    fn is_quorum_over(&self, signers: &[ReplicaId], _from: u64, _to: u64) -> bool {
        self.is_quorum(signers.iter().copied())
    }

    fn epoch_of_number(&self, number: u64) -> Option<(&Committee, u64)> {
        (number == self.epoch()).then_some((self, 1))
    }
}

impl Weights for Committees {
    fn signers(&self) -> &Committee {
        Committees::signers(self)
    }

    fn leaders(&self) -> &Committee {
        Committees::leaders(self)
    }

    fn for_seq(&self, seq: u64) -> Option<&Committee> {
        Committees::for_seq(self, seq)
    }

    fn is_quorum_over(&self, signers: &[ReplicaId], from: u64, to: u64) -> bool {
        Committees::is_quorum_over(self, signers.iter().copied(), from, to)
    }

    fn epoch_of_number(&self, number: u64) -> Option<(&Committee, u64)> {
        let epoch = self.epochs.get(usize::try_from(number).ok()?)?;
        Some((&epoch.committee, epoch.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordinal_crypto::Digest;

    fn setup(n: usize) -> (Vec<KeyPair>, Committees) {
        let keys: Vec<KeyPair> = (1..=n as u8).map(|i| KeyPair::from_seed([i; 32])).collect();
        let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
        let committee = Committee::equal_weights(Digest::of(b"epochs"), &publics).unwrap();
        (
            keys,
            Committees::new(committee, Some(WeightBounds { min: 1, max: 2 }), 16, 64),
        )
    }

    #[test]
    fn a_change_takes_effect_a_window_after_the_next_checkpoint() {
        let (keys, mut committees) = setup(5);
        let change = WeightChange {
            epoch: 1,
            weights: vec![2, 2, 1, 1, 1],
        };
        let entry = QuorumEntry::Weights(change.clone());
        let request = entry.to_request(&keys[3], &committees.base().cluster_id(), 7);
        let (author, decoded) = QuorumEntry::from_request(&request, committees.base(), None).unwrap();
        assert_eq!((author, &decoded), (Author::Replica(ReplicaId(3)), &entry));
        let proposer = ReplicaId(3);
        let decoded = change;

        committees.executed(20);
        assert_eq!(committees.known_through(), 32 + 64);
        // Executed at 20: the next checkpoint is 32, so seq 97 is the first under epoch 1.
        assert_eq!(committees.schedule(20, proposer, &decoded), Ok(97));
        assert_eq!(committees.for_seq(96).unwrap().epoch(), 0);
        assert!(
            committees.for_seq(97).is_none(),
            "not settled until 32 is executed"
        );
        committees.executed(32);
        assert_eq!(committees.for_seq(97).unwrap().epoch(), 1);
        assert_eq!(committees.for_seq(97).unwrap().quorum_weight(), 5);
        assert_eq!(committees.covering(90, 100).len(), 2);
        assert_eq!(committees.covering(97, 150).len(), 1);
        // 0, 1, 2 reach 5 of 7 under epoch 1 but only 3 of 5 (need 4) under epoch 0.
        let heavy = [ReplicaId(0), ReplicaId(1), ReplicaId(2)];
        assert!(committees.is_quorum_over(heavy, 97, 110));
        assert!(!committees.is_quorum_over(heavy, 90, 110));

        // One at a time, in order, in bounds, jointly safe.
        let next = |weights: Vec<u64>, epoch| WeightChange { epoch, weights };
        assert!(matches!(
            committees.schedule(40, ReplicaId(0), &next(vec![1; 5], 2)),
            Err(ChangeRefused::Pending { epoch: 1, start: 97 })
        ));
        assert!(matches!(
            committees.schedule(100, ReplicaId(0), &next(vec![1; 5], 3)),
            Err(ChangeRefused::WrongEpoch { expected: 2, got: 3 })
        ));
        assert!(matches!(
            committees.schedule(100, ReplicaId(0), &next(vec![1, 1, 1, 3, 1], 2)),
            Err(ChangeRefused::Inadmissible(_))
        ));
        assert_eq!(
            committees.schedule(100, ReplicaId(0), &next(vec![1, 1, 1, 2, 2], 2)),
            Err(ChangeRefused::NotJointlySafe)
        );
        assert_eq!(
            committees.schedule(100, ReplicaId(0), &next(vec![1; 5], 2)),
            Ok(112 + 64 + 1)
        );
    }

    #[test]
    fn only_members_signing_a_tagged_payload_propose() {
        let (keys, committees) = setup(4);
        let cluster = committees.base().cluster_id();
        let change = WeightChange {
            epoch: 1,
            weights: vec![1; 4],
        };
        let entry = QuorumEntry::Weights(change.clone());
        // A client key is not a member.
        let outsider = KeyPair::from_seed([99; 32]);
        let from_outsider = entry.to_request(&outsider, &cluster, 1);
        assert!(QuorumEntry::from_request(&from_outsider, committees.base(), None).is_none());
        // A member's request with another member's name and signature bytes does not verify.
        let mut forged = entry.to_request(&keys[0], &cluster, 1);
        forged.client = keys[1].public();
        assert!(QuorumEntry::from_request(&forged, committees.base(), None).is_none());
        // An ordinary payload is not an entry; garbage after the tag neither.
        let plain = Request::signed(&keys[0], &cluster, 1, b"hello".to_vec());
        assert!(QuorumEntry::from_request(&plain, committees.base(), None).is_none());
        let mut garbage = ENTRY_TAG.to_vec();
        garbage.extend([0xff; 9]);
        let garbage = Request::signed(&keys[0], &cluster, 1, garbage);
        assert!(QuorumEntry::from_request(&garbage, committees.base(), None).is_none());
        // Disabled clusters refuse every change and know every epoch.
        let mut fixed = Committees::fixed(committees.base().clone());
        assert_eq!(fixed.known_through(), u64::MAX);
        assert_eq!(
            fixed.schedule(5, ReplicaId(0), &change),
            Err(ChangeRefused::Disabled)
        );
    }

    /// n = 5: replica 4 is slow in everyone's eyes, 1 and 3 fastest. Once four reports of the
    /// current epoch are in (2f + 2), every replica schedules AWARE weights on 1 and 3; a
    /// Byzantine reporter (0) calling itself fast and 1 slow moves no median far enough.
    #[test]
    fn weights_follow_the_median_of_reports_in_the_log() {
        let (_, mut committees) = setup(5);
        let truth = [900, 200, 500, 300, 9_000];
        let honest = |reporter: usize| LatencyReport {
            epoch: 0,
            latencies_us: (0..5).map(|i| (i != reporter).then_some(truth[i])).collect(),
        };
        let liar = LatencyReport {
            epoch: 0,
            latencies_us: vec![None, Some(50_000), Some(50_000), Some(50_000), Some(1)],
        };
        committees.executed(10);
        assert_eq!(committees.record_report(10, ReplicaId(0), &liar), None);
        assert_eq!(committees.record_report(11, ReplicaId(1), &honest(1)), None);
        // A report measured in another epoch is ignored.
        let stale = LatencyReport {
            epoch: 3,
            ..honest(2)
        };
        assert_eq!(committees.record_report(12, ReplicaId(2), &stale), None);
        assert_eq!(committees.record_report(12, ReplicaId(2), &honest(2)), None);
        assert_eq!(
            committees.record_report(13, ReplicaId(3), &honest(3)),
            Some(Ok(16 + 64 + 1))
        );
        assert_eq!(committees.latest().weights(), vec![1, 2, 1, 2, 1]);
        assert_eq!(committees.epochs()[1].proposer, Some(ReplicaId(3)));
        // Primaries now rotate over the two fastest, heavy members only.
        assert_eq!(
            committees.leaders().ids().collect::<Vec<_>>(),
            [ReplicaId(1), ReplicaId(3)]
        );
        assert_eq!(crate::leader::leader_of(7, committees.leaders()), ReplicaId(3));
        // Reports start over in the new epoch, and only once it is in force.
        let next = LatencyReport {
            epoch: 1,
            ..honest(4)
        };
        assert_eq!(committees.record_report(40, ReplicaId(4), &next), None);
    }

    /// Membership is the operator's: a member's membership entry is refused, the operator's
    /// schedules the new membership (equal weights, f recomputed) a window after the next
    /// checkpoint; from skewed weights it goes through equal weights first; slots are never
    /// reused and a joining replica needs an address.
    #[test]
    fn the_operator_adds_and_removes_replicas_one_at_a_time() {
        let (keys, committees) = setup(4);
        let operator = KeyPair::from_seed([77; 32]);
        let newcomer = KeyPair::from_seed([78; 32]);
        let cluster = committees.base().cluster_id();
        let mut committees = committees.with_operator(Some(operator.public()));
        let join = |epoch| MembershipChange {
            epoch,
            edit: MembershipEdit::Join(newcomer.public()),
            address: "10.0.0.5:7000".into(),
        };
        let entry = |change: MembershipChange| QuorumEntry::Membership(change);
        let batch = crate::Batch::new;

        // A member cannot add a replica; the operator can.
        let by_member = entry(join(1)).to_request(&keys[0], &cluster, 1);
        assert_eq!(
            committees.apply_batch(1, &batch(vec![by_member])),
            vec![(1, Err(ChangeRefused::NotAuthorised))]
        );
        assert!(matches!(
            committees.refusals(),
            (1, Some((1, ChangeRefused::NotAuthorised)))
        ));
        let by_operator = entry(join(1)).to_request(&operator, &cluster, 1);
        assert_eq!(
            committees.apply_batch(2, &batch(vec![by_operator])),
            vec![(2, Ok(16 + 64 + 1))]
        );
        let five = committees.latest().clone();
        assert_eq!(
            (five.size(), five.slots(), five.faults(), five.quorum_weight()),
            (5, 5, 1, 4)
        );
        assert_eq!(committees.joined_address(ReplicaId(4)), Some("10.0.0.5:7000"));
        assert!(committees.signers().contains(ReplicaId(4)));
        assert!(!committees.base().contains(ReplicaId(4)));
        // The newcomer's own entries count as a member's once it is in the latest epoch.
        let report = QuorumEntry::Latencies(LatencyReport {
            epoch: 1,
            latencies_us: vec![Some(1); 5],
        });
        let from_newcomer = report.to_request(&newcomer, &cluster, 1);
        assert!(matches!(
            QuorumEntry::from_request(&from_newcomer, committees.latest(), None),
            Some((Author::Replica(ReplicaId(4)), _))
        ));

        // One at a time: a second change before the first takes effect is refused.
        let leave = |epoch, id| MembershipChange {
            epoch,
            edit: MembershipEdit::Leave(ReplicaId(id)),
            address: String::new(),
        };
        assert!(matches!(
            committees.schedule_membership(20, &leave(2, 1)),
            Err(ChangeRefused::Pending { .. })
        ));
        committees.executed(100);
        assert_eq!(
            committees.schedule_membership(100, &leave(2, 1)),
            Ok(112 + 64 + 1)
        );
        let back = committees.latest();
        assert_eq!(back.ids().collect::<Vec<_>>(), [0, 2, 3, 4].map(ReplicaId));
        // The leaver still signs (its old votes verify) but counts nothing from then on.
        assert!(committees.signers().contains(ReplicaId(1)));
        committees.executed(112);
        assert_eq!(committees.for_seq(177).unwrap().weight(ReplicaId(1)), Some(0));

        committees.executed(200);
        // No reuse of a slot, no leaving twice, no join without an address.
        assert!(matches!(
            committees.schedule_membership(200, &join(3)),
            Err(ChangeRefused::Inadmissible(_))
        ));
        assert!(matches!(
            committees.schedule_membership(200, &leave(3, 1)),
            Err(ChangeRefused::Inadmissible(_))
        ));
        let nowhere = MembershipChange {
            epoch: 3,
            edit: MembershipEdit::Join(KeyPair::from_seed([79; 32]).public()),
            address: " ".into(),
        };
        assert_eq!(
            committees.schedule_membership(200, &nowhere),
            Err(ChangeRefused::BadAddress)
        );
        // Four to three is the operator's call: f follows the member count (to 0), and any
        // quorum of three meets any old quorum in a replica of both.
        assert_eq!(
            committees.schedule_membership(200, &leave(3, 0)),
            Ok(208 + 64 + 1)
        );
        assert_eq!(committees.latest().faults(), 0);
        // The entry was one change; its copy (same nonce) changes nothing.
        let cluster = committees.base().cluster_id();
        let rejoin = entry(MembershipChange {
            epoch: 4,
            edit: MembershipEdit::Join(KeyPair::from_seed([80; 32]).public()),
            address: "10.0.0.6:7000".into(),
        })
        .to_request(&operator, &cluster, 9);
        committees.executed(300);
        assert!(matches!(
            committees.apply_batch(301, &batch(vec![rejoin.clone()]))[..],
            [(301, Ok(_))]
        ));
        committees.executed(400);
        assert_eq!(
            committees.apply_batch(401, &batch(vec![rejoin])),
            vec![(401, Err(ChangeRefused::Replayed))]
        );
    }

    /// From skewed weights, a membership change goes through equal weights first: two epochs,
    /// a window apart, from one entry.
    #[test]
    fn a_membership_change_from_skewed_weights_steps_through_equal_weights() {
        let (_, committees) = setup(5);
        let operator = KeyPair::from_seed([77; 32]);
        let mut committees = committees.with_operator(Some(operator.public()));
        committees.executed(10);
        let skew = WeightChange {
            epoch: 1,
            weights: vec![2, 2, 1, 1, 1],
        };
        assert_eq!(committees.schedule(10, ReplicaId(0), &skew), Ok(81));
        committees.executed(90);
        let leave = MembershipChange {
            epoch: 2,
            edit: MembershipEdit::Leave(ReplicaId(4)),
            address: String::new(),
        };
        // Flat from 96 + 64 + 1 = 161; the smaller membership from 176 + 64 + 1 = 241.
        assert_eq!(committees.schedule_membership(90, &leave), Ok(241));
        let epochs: Vec<(u64, Vec<u64>)> = committees
            .epochs()
            .iter()
            .map(|e| (e.start, e.committee.weights()))
            .collect();
        assert_eq!(
            epochs[2..],
            [(161, vec![1, 1, 1, 1, 1]), (241, vec![1, 1, 1, 1, 0])]
        );
    }

    /// However few members a vector makes heavy, at least 2f lead: one heavy replica of six
    /// (admissible with f = 1) must not become the only primary.
    #[test]
    fn at_least_two_f_members_lead() {
        let (_, mut committees) = setup(6);
        committees.executed(10);
        let one_heavy = WeightChange {
            epoch: 1,
            weights: vec![2, 1, 1, 1, 1, 1],
        };
        assert!(committees.schedule(10, ReplicaId(0), &one_heavy).is_ok());
        assert_eq!(committees.leaders().size(), 6);
        let two_heavy = WeightChange {
            epoch: 2,
            weights: vec![2, 1, 1, 1, 1, 2],
        };
        committees.executed(100);
        assert!(committees.schedule(100, ReplicaId(0), &two_heavy).is_ok());
        assert_eq!(
            committees.leaders().ids().collect::<Vec<_>>(),
            [ReplicaId(0), ReplicaId(5)]
        );
    }

    /// Where weights follow measurements, an explicit vector in the log changes nothing: one
    /// member cannot pin the weights.
    #[test]
    fn measured_clusters_refuse_explicit_vectors() {
        let (keys, committees) = setup(5);
        let mut measured = Committees::with_policy(
            committees.base().clone(),
            Some(WeightBounds { min: 1, max: 2 }),
            true,
            16,
            64,
        );
        let entry = QuorumEntry::Weights(WeightChange {
            epoch: 1,
            weights: vec![2, 2, 1, 1, 1],
        });
        let batch = crate::Batch::new(vec![entry.to_request(&keys[0], &measured.base().cluster_id(), 1)]);
        assert_eq!(
            measured.apply_batch(1, &batch),
            vec![(1, Err(ChangeRefused::Measured))]
        );
        assert_eq!(measured.epochs().len(), 1);
        assert_eq!(measured.applied_through(), 1);
    }
}
