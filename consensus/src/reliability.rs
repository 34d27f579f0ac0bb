//! What a replica measures about each peer, and the failure detector built on it.
//!
//! Both protocols feed one [`PeerMonitor`] (held by the ledger) with what they see:
//! - every verified message, whose inter-arrival times drive an adaptive, eventually perfect
//!   failure detector (Chen, Toueg and Aguilera's estimator in the form TCP uses for its
//!   retransmission timer: a smoothed gap plus four smoothed deviations);
//! - each peer's vote latency, from the moment this replica had a proposal to that peer's vote
//!   for it;
//! - missed votes: a slot that committed and was pruned without that peer's vote;
//! - leader timeouts: a view or round this replica gave up on while that peer led it;
//! - refused messages: inputs from that peer that failed verification or broke a rule.
//!
//! Votes, misses, timeouts and refusals also move a smoothed reliability score in [0, 1].
//! Nothing here feeds safety: a score or a suspicion can only make a replica give up on a
//! leader sooner or send a timeout to everyone, and (through the weights the ordered log
//! agrees on) never outside the admissible bounds.

use std::time::Duration;

use ordinal_crypto::ReplicaId;

use crate::io::Time;

/// How much one outcome moves the reliability score: an exponential average over roughly the
/// last 32 events.
const SCORE_GAIN: f64 = 1.0 / 32.0;
/// A timeout as leader or a refused message counts as this many missed votes.
const FAULT_WEIGHT: u32 = 4;

/// The failure detector's bounds: no peer is suspected sooner than `min` after its last
/// message (a flush or a scheduling hiccup must not look like a crash), a peer not yet
/// measured gets `initial`, and every peer is suspected after `max` of silence whatever its
/// history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorBounds {
    /// The shortest suspicion timeout.
    pub min: Duration,
    /// The timeout before the first gap is measured.
    pub initial: Duration,
    /// The longest.
    pub max: Duration,
}

impl DetectorBounds {
    /// The bounds a protocol configuration implies: its `suspicion_timeout_min`, its view
    /// timeout until measured, and at most four view timeouts (within `view_timeout_max`).
    pub fn from_config(config: &crate::ProtocolConfig) -> Self {
        DetectorBounds {
            min: config.suspicion_timeout_min,
            initial: config.view_timeout,
            max: config
                .view_timeout
                .saturating_mul(4)
                .min(config.view_timeout_max)
                .max(config.view_timeout),
        }
    }
}

/// A smoothed mean and mean deviation (RFC 6298's estimator), in microseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Smoothed {
    mean: u64,
    deviation: u64,
    samples: u64,
}

impl Smoothed {
    fn add(&mut self, sample: Duration) {
        let sample = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX);
        if self.samples == 0 {
            self.mean = sample;
            self.deviation = sample / 2;
        } else {
            // deviation += (|mean - sample| - deviation) / 4; mean += (sample - mean) / 8.
            let error = self.mean.abs_diff(sample);
            self.deviation = self.deviation - self.deviation / 4 + error / 4;
            self.mean = self.mean - self.mean / 8 + sample / 8;
        }
        self.samples = self.samples.saturating_add(1);
    }

    fn mean(&self) -> Option<Duration> {
        (self.samples > 0).then(|| Duration::from_micros(self.mean))
    }

    /// Mean plus four deviations: a gap longer than this is unusual for the peer.
    fn bound(&self) -> Option<Duration> {
        (self.samples > 0)
            .then(|| Duration::from_micros(self.mean.saturating_add(self.deviation.saturating_mul(4))))
    }
}

#[derive(Clone, Debug)]
struct PeerRecord {
    last_heard: Time,
    gaps: Smoothed,
    vote_latency: Smoothed,
    votes: u64,
    late_votes: u64,
    missed_votes: u64,
    leader_timeouts: u64,
    refused: u64,
    score: f64,
}

impl PeerRecord {
    fn new(now: Time) -> Self {
        PeerRecord {
            last_heard: now,
            gaps: Smoothed::default(),
            vote_latency: Smoothed::default(),
            votes: 0,
            late_votes: 0,
            missed_votes: 0,
            leader_timeouts: 0,
            refused: 0,
            score: 1.0,
        }
    }

    fn outcome(&mut self, good: bool, times: u32) {
        let target = if good { 1.0 } else { 0.0 };
        for _ in 0..times {
            self.score += (target - self.score) * SCORE_GAIN;
        }
    }
}

/// One peer as this replica sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerReport {
    /// The peer.
    pub peer: ReplicaId,
    /// Smoothed time from a proposal to this peer's vote for it, once measured.
    pub vote_latency: Option<Duration>,
    /// Smoothed reliability in [0, 1]: 1 for a peer that votes every time and never fails as
    /// leader or sends anything refused.
    pub reliability: f64,
    /// Votes received.
    pub votes: u64,
    /// Phase votes (PBFT's PREPAREs and COMMITs, linear-mode votes at their collector) that
    /// arrived once this replica already held the certificate they would have counted towards.
    /// A host may hand PBFT's in without their signatures checked (`crate::late`). A peer whose
    /// votes are mostly late is the slowest of the quorum, not a faulty one.
    pub late_votes: u64,
    /// Committed slots pruned without its vote.
    pub missed_votes: u64,
    /// Views or rounds given up on while it led.
    pub leader_timeouts: u64,
    /// Its messages that were refused.
    pub refused_messages: u64,
    /// Whether the failure detector suspects it now.
    pub suspected: bool,
    /// How long a silence the detector tolerates from it.
    pub suspicion_timeout: Duration,
    /// Time since its last verified message.
    pub silent_for: Duration,
}

/// Per-peer measurements and the failure detector. Memory: one record per member.
#[derive(Clone, Debug)]
pub struct PeerMonitor {
    own: ReplicaId,
    bounds: DetectorBounds,
    peers: Vec<PeerRecord>,
}

impl PeerMonitor {
    /// A monitor for `members` replicas in which nobody is suspected yet: every peer counts
    /// as just heard from.
    pub fn new(own: ReplicaId, members: usize, bounds: DetectorBounds, now: Time) -> Self {
        PeerMonitor {
            own,
            bounds,
            peers: (0..members).map(|_| PeerRecord::new(now)).collect(),
        }
    }

    /// Makes room for `slots` replicas (ids grow when replicas join through the log); a new
    /// peer starts as just heard from at `now`.
    pub fn grow(&mut self, slots: usize, now: Time) {
        while self.peers.len() < slots {
            self.peers.push(PeerRecord::new(now));
        }
    }

    fn record(&mut self, peer: ReplicaId) -> Option<&mut PeerRecord> {
        if peer == self.own {
            return None;
        }
        self.peers.get_mut(peer.index())
    }

    /// A verified message from `peer` arrived at `now`.
    pub fn heard(&mut self, peer: ReplicaId, now: Time) {
        let longest = self.bounds.initial;
        if let Some(record) = self.record(peer) {
            if let Some(gap) = now.checked_sub(record.last_heard) {
                // A silence longer than a view timeout was an outage (a crash, a partition),
                // not the peer's usual pace: learning it whole would leave the peer
                // unsuspected for a long time after it comes back and fails again.
                record.gaps.add(gap.min(longest));
            }
            record.last_heard = record.last_heard.max(now);
        }
    }

    /// `peer` voted `latency` after this replica had the proposal.
    pub fn vote(&mut self, peer: ReplicaId, latency: Option<Duration>) {
        if let Some(record) = self.record(peer) {
            if let Some(latency) = latency {
                record.vote_latency.add(latency);
            }
            record.votes = record.votes.saturating_add(1);
            record.outcome(true, 1);
        }
    }

    /// A latency sample for `peer` from a vote already counted with [`PeerMonitor::vote`]:
    /// PBFT times the COMMIT, the first vote every replica sends in answer to others (a
    /// primary's PREPARE leaves with its PRE-PREPARE, so timing it would make the primary look
    /// instant however slow it is).
    pub fn vote_latency(&mut self, peer: ReplicaId, latency: Duration) {
        if let Some(record) = self.record(peer) {
            record.vote_latency.add(latency);
        }
    }

    /// A phase vote from `peer` came after this replica held the certificate it would have
    /// counted towards. It does not move the score: a late vote is still a vote.
    pub fn late_vote(&mut self, peer: ReplicaId) {
        if let Some(record) = self.record(peer) {
            record.late_votes = record.late_votes.saturating_add(1);
        }
    }

    /// A slot committed and left the window without `peer`'s vote.
    pub fn missed_vote(&mut self, peer: ReplicaId) {
        if let Some(record) = self.record(peer) {
            record.missed_votes = record.missed_votes.saturating_add(1);
            record.outcome(false, 1);
        }
    }

    /// This replica gave up on a view or round that `peer` led.
    pub fn leader_timed_out(&mut self, peer: ReplicaId) {
        if let Some(record) = self.record(peer) {
            record.leader_timeouts = record.leader_timeouts.saturating_add(1);
            record.outcome(false, FAULT_WEIGHT);
        }
    }

    /// A message from `peer` was refused.
    pub fn refused(&mut self, peer: ReplicaId) {
        self.refused_many(peer, 1);
    }

    /// `count` messages from `peer` were refused. The score moves as for at most 32 of them:
    /// by then it is near 0 anyway.
    pub fn refused_many(&mut self, peer: ReplicaId, count: u64) {
        if let Some(record) = self.record(peer) {
            record.refused = record.refused.saturating_add(count);
            let times = u32::try_from(count.min(32)).unwrap_or(32) * FAULT_WEIGHT;
            record.outcome(false, times);
        }
    }

    /// The silence the detector tolerates from `peer`: its usual gap between messages plus
    /// four deviations, within the bounds. Under load that is the minimum; an idle peer, heard
    /// only through periodic pings, gets a longer one.
    pub fn suspicion_timeout(&self, peer: ReplicaId) -> Duration {
        let learned = self
            .peers
            .get(peer.index())
            .and_then(|record| record.gaps.bound())
            .unwrap_or(self.bounds.initial);
        learned.clamp(self.bounds.min, self.bounds.max)
    }

    /// Whether `peer` has been silent for longer than it is allowed. Never this replica.
    pub fn suspects(&self, peer: ReplicaId, now: Time) -> bool {
        if peer == self.own {
            return false;
        }
        self.peers
            .get(peer.index())
            .is_some_and(|record| now.saturating_sub(record.last_heard) > self.suspicion_timeout(peer))
    }

    /// When `peer` becomes suspected if it stays silent.
    pub fn suspected_at(&self, peer: ReplicaId) -> Option<Time> {
        let record = self.peers.get(peer.index())?;
        Some(record.last_heard + self.suspicion_timeout(peer))
    }

    /// Every peer (this replica excluded), in id order.
    pub fn reports(&self, now: Time) -> Vec<PeerReport> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.own.index())
            .map(|(i, record)| {
                let peer = ReplicaId(i as u16);
                PeerReport {
                    peer,
                    vote_latency: record.vote_latency.mean(),
                    reliability: record.score,
                    votes: record.votes,
                    late_votes: record.late_votes,
                    missed_votes: record.missed_votes,
                    leader_timeouts: record.leader_timeouts,
                    refused_messages: record.refused,
                    suspected: self.suspects(peer, now),
                    suspicion_timeout: self.suspicion_timeout(peer),
                    silent_for: now.saturating_sub(record.last_heard),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn monitor() -> PeerMonitor {
        PeerMonitor::new(
            ReplicaId(0),
            4,
            DetectorBounds {
                min: ms(50),
                initial: ms(1000),
                max: ms(4000),
            },
            ms(0),
        )
    }

    #[test]
    fn the_timeout_follows_the_gaps_between_messages() {
        let mut monitor = monitor();
        let busy = ReplicaId(1);
        let idle = ReplicaId(2);
        // Busy: a message every 2 ms; idle: one every 800 ms with some jitter.
        for i in 1..=400 {
            monitor.heard(busy, ms(2 * i));
        }
        for (i, jitter) in [0u64, 40, 10, 60, 20, 0, 30, 50].iter().enumerate() {
            monitor.heard(idle, ms(800 * (i as u64 + 1) + jitter));
        }
        assert_eq!(monitor.suspicion_timeout(busy), ms(50), "clamped to the minimum");
        let idle_timeout = monitor.suspicion_timeout(idle);
        assert!(
            idle_timeout > ms(800) && idle_timeout < ms(1200),
            "{idle_timeout:?}"
        );
        // 100 ms of silence: the busy peer is suspected, the idle one is not.
        assert!(monitor.suspects(busy, ms(900)));
        assert!(!monitor.suspects(idle, ms(6450 + 100)));
        assert!(monitor.suspects(idle, ms(6450) + idle_timeout + ms(1)));
        // One message clears the suspicion (eventually perfect: a live peer stops being
        // suspected), and its long gap raises the timeout so it is not suspected as fast.
        monitor.heard(busy, ms(900));
        assert!(!monitor.suspects(busy, ms(901)));
        assert!(monitor.suspicion_timeout(busy) > ms(50));
        // The replica never suspects itself, and unknown ids are ignored.
        assert!(!monitor.suspects(ReplicaId(0), ms(100_000)));
        monitor.heard(ReplicaId(9), ms(1));
        assert_eq!(monitor.reports(ms(901)).len(), 3);
    }

    #[test]
    fn an_outage_is_not_learned_as_the_usual_gap() {
        let mut monitor = monitor();
        let peer = ReplicaId(1);
        for i in 1..=100 {
            monitor.heard(peer, ms(2 * i));
        }
        // Down for a minute, then back: the minute counts as one view timeout, so its timeout
        // grows to about 1.1 s (learned whole, it would sit at the 4 s maximum).
        monitor.heard(peer, ms(60_200));
        let timeout = monitor.suspicion_timeout(peer);
        assert!(timeout < ms(1200), "{timeout:?}");
        assert!(monitor.suspects(peer, ms(60_200) + timeout + ms(1)));
    }

    #[test]
    fn refusals_in_bulk_move_the_score_a_bounded_amount() {
        let mut monitor = monitor();
        monitor.refused_many(ReplicaId(2), 1_000_000);
        let report = &monitor.reports(ms(0))[1];
        assert_eq!(report.refused_messages, 1_000_000);
        assert!(report.reliability < 0.05, "{}", report.reliability);
    }

    #[test]
    fn a_peer_never_heard_from_is_suspected_after_the_initial_timeout() {
        let mut monitor = monitor();
        assert!(!monitor.suspects(ReplicaId(3), ms(1000)));
        assert!(monitor.suspects(ReplicaId(3), ms(1001)));
        // However long its silences, a peer is suspected after the maximum at most.
        for i in 1..=20 {
            monitor.heard(ReplicaId(3), ms(60_000 * i));
        }
        assert!(monitor.suspicion_timeout(ReplicaId(3)) <= ms(4000));
    }

    #[test]
    fn the_score_falls_with_faults_and_recovers_with_votes() {
        let mut monitor = monitor();
        let (good, bad) = (ReplicaId(1), ReplicaId(2));
        for _ in 0..50 {
            monitor.vote(good, Some(ms(3)));
            monitor.vote(bad, Some(ms(30)));
            monitor.missed_vote(bad);
        }
        monitor.leader_timed_out(bad);
        monitor.refused(bad);
        let reports = monitor.reports(ms(10));
        let (g, b) = (&reports[0], &reports[1]);
        assert_eq!(g.reliability, 1.0);
        assert!(b.reliability < 0.4, "{}", b.reliability);
        assert_eq!(
            (b.missed_votes, b.leader_timeouts, b.refused_messages),
            (50, 1, 1)
        );
        assert_eq!(g.vote_latency, Some(ms(3)));
        assert_eq!(b.vote_latency, Some(ms(30)));
        for _ in 0..200 {
            monitor.vote(bad, Some(ms(3)));
        }
        assert!(monitor.reports(ms(10))[1].reliability > 0.99);
    }
}
