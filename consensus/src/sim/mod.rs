//! A deterministic simulator: n replicas of the real state machine and a few clients in one
//! thread, with virtual time, a seeded RNG, a faulty network, crash-restarts and Byzantine
//! replicas, checking the protocol's invariants as it runs.
//!
//! The same seed replays the same run exactly: every random choice comes from one ChaCha RNG
//! seeded from it, and events at equal times run in scheduling order.

mod byzantine;
mod network;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use ordinal_crypto::{Committee, Digest, KeyPair, ReplicaId};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use byzantine::Behaviour;
pub use network::{Endpoint, LinkFaults, Traffic};

use crate::batch::CommittedBatch;
use crate::cluster::ProtocolKind;
use crate::config::{ProtocolConfig, RequestAuth};
use crate::io::{Action, Input, Protocol, Time};
use crate::late::{SettledStatements, Sorted};
use crate::messages::Message;
use crate::receipt::Receipt;
use crate::replica::start_replica;
use crate::request::{Position, Request, RequestKey};
use crate::safety::SafetyState;
use byzantine::{ByzantineState, Signer};
use network::Network;

/// A replica cut off from the others for a while.
#[derive(Clone, Copy, Debug)]
pub struct Isolation {
    /// Which replica.
    pub replica: usize,
    /// From when.
    pub from: Time,
    /// Until when.
    pub until: Time,
}

/// The network split in two: replicas in `side` reach only each other, the others likewise.
#[derive(Clone, Debug)]
pub struct Split {
    /// One side of the split (replica ids).
    pub side: Vec<usize>,
    /// From when.
    pub from: Time,
    /// Until when.
    pub until: Time,
}

/// A replica that crashes and restarts with only what it persisted.
#[derive(Clone, Copy, Debug)]
pub struct Crash {
    /// Which replica.
    pub replica: usize,
    /// When it crashes.
    pub at: Time,
    /// When it restarts.
    pub restart_at: Time,
}

/// One simulation run's set-up.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed everything random derives from.
    pub seed: u64,
    /// Number of replicas.
    pub replicas: usize,
    /// Which protocol the replicas run.
    pub kind: ProtocolKind,
    /// Protocol parameters.
    pub protocol: ProtocolConfig,
    /// Number of clients.
    pub clients: usize,
    /// Requests each client submits.
    pub requests_per_client: usize,
    /// Requests are submitted at random times in [0, this].
    pub submit_window: Time,
    /// A client re-sends a request not answered within this long.
    pub client_retry: Time,
    /// Byzantine replicas and their behaviour.
    pub byzantine: Vec<(usize, Behaviour)>,
    /// Link faults until `heal_at`.
    pub link_faults: LinkFaults,
    /// Isolations (all end by `heal_at`).
    pub isolations: Vec<Isolation>,
    /// Crash-restarts (all restarted by `heal_at`).
    pub crashes: Vec<Crash>,
    /// Splits of the network into two sides (all healed by `heal_at`).
    pub splits: Vec<Split>,
    /// When the network becomes reliable and every crashed replica is back.
    pub heal_at: Time,
    /// Every request must be answered within this long after `heal_at` (or its submission).
    pub liveness_bound: Time,
    /// Payload size of each request.
    pub payload_bytes: usize,
    /// Stop after this many events (a livelock guard).
    pub max_events: u64,
    /// Voting weights by replica id; empty for equal weights.
    pub weights: Vec<u64>,
    /// Replicas whose links are slower than the others (both directions), by this factor.
    pub slow_links: Vec<(usize, u32)>,
    /// Weight changes to propose: at this time, through every instance of this replica, these
    /// weights (`Input::ProposeWeights`). Takes effect only with `protocol.weight_bounds`.
    pub weight_proposals: Vec<(Time, usize, Vec<u64>)>,
    /// Replicas beyond `replicas` (ids `replicas..replicas + spares`), outside the configured
    /// committee: each starts, with an empty log and the configured committee, when
    /// `spare_starts` says, and can join through a membership change.
    pub spares: usize,
    /// When each spare starts: (time, replica id).
    pub spare_starts: Vec<(Time, usize)>,
    /// Membership changes the operator ([`operator_key`]) submits, like a client, at these
    /// times. Sets `protocol.membership_operator` when not empty.
    pub membership: Vec<(Time, crate::epoch::MembershipChange)>,
}

impl SimConfig {
    /// A protocol configuration small enough that checkpoints, garbage collection and window
    /// limits happen within a short run.
    pub fn small_protocol() -> ProtocolConfig {
        ProtocolConfig {
            max_batch_requests: 4,
            batch_delay: Duration::from_millis(2),
            max_inflight_batches: 3,
            checkpoint_interval: 4,
            log_window: 8,
            view_timeout: Duration::from_millis(300),
            view_timeout_max: Duration::from_secs(3),
            retransmit_interval: Duration::from_millis(100),
            client_nonce_window: 64,
            state_transfer_chunk: 4,
            ..ProtocolConfig::default()
        }
    }

    /// A run with no faults at all.
    pub fn calm(seed: u64, replicas: usize) -> Self {
        SimConfig {
            seed,
            replicas,
            kind: ProtocolKind::Pbft,
            protocol: Self::small_protocol(),
            clients: 3,
            requests_per_client: 10,
            submit_window: Duration::from_secs(1),
            client_retry: Duration::from_millis(500),
            byzantine: Vec::new(),
            link_faults: LinkFaults::NONE,
            isolations: Vec::new(),
            crashes: Vec::new(),
            splits: Vec::new(),
            heal_at: Duration::ZERO,
            liveness_bound: Duration::from_secs(60),
            payload_bytes: 16,
            max_events: 3_000_000,
            weights: Vec::new(),
            slow_links: Vec::new(),
            weight_proposals: Vec::new(),
            spares: 0,
            spare_starts: Vec::new(),
            membership: Vec::new(),
        }
    }

    /// The mix used for many-seed runs: random link faults, up to two isolations, one
    /// crash-restart of a correct replica, and f Byzantine replicas with random behaviours.
    pub fn random(seed: u64, replicas: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_fa17);
        let f = replicas.saturating_sub(1) / 3;
        let mut config = Self::calm(seed, replicas);
        config.protocol.max_batch_requests = rng.gen_range(1..=6);
        config.protocol.max_inflight_batches = rng.gen_range(1..=4);
        config.protocol.batch_delay = Duration::from_millis(rng.gen_range(1..=5));
        config.requests_per_client = rng.gen_range(5..=12);
        config.submit_window = Duration::from_millis(rng.gen_range(500..=3000));
        config.heal_at = Duration::from_millis(4000);
        config.link_faults = LinkFaults {
            drop: rng.gen_range(0.0..0.1),
            duplicate: rng.gen_range(0.0..0.05),
            reorder: rng.gen_range(0.0..0.1),
        };
        let mut ids: Vec<usize> = (0..replicas).collect();
        ids.shuffle(&mut rng);
        for &id in ids.iter().take(f) {
            let behaviour = *Behaviour::ALL.choose(&mut rng).unwrap_or(&Behaviour::Silent);
            config.byzantine.push((id, behaviour));
        }
        let correct: Vec<usize> = ids[f..].to_vec();
        if let Some(&victim) = correct.choose(&mut rng) {
            let at = Duration::from_millis(rng.gen_range(200..3000));
            let down = Duration::from_millis(rng.gen_range(100..2000));
            config.crashes.push(Crash {
                replica: victim,
                at,
                restart_at: (at + down).min(config.heal_at),
            });
        }
        for _ in 0..rng.gen_range(0..=2) {
            let replica = rng.gen_range(0..replicas);
            let from = Duration::from_millis(rng.gen_range(0..3500));
            let until = (from + Duration::from_millis(rng.gen_range(200..2000))).min(config.heal_at);
            config.isolations.push(Isolation { replica, from, until });
        }
        if f == 0 || rng.gen_bool(0.8) {
            config.protocol.request_auth = RequestAuth::Signed;
        } else {
            config.protocol.request_auth = RequestAuth::Unsigned;
        }
        // Half the runs move weights through the log while the faults go on: flat vectors,
        // AWARE shapes around random heavy sets, and random vectors, most of which are
        // refused.
        if f > 0 && rng.gen_bool(0.5) {
            config.protocol.weight_bounds = Some(ordinal_crypto::WeightBounds { min: 1, max: 3 });
            if rng.gen_bool(0.5) {
                config.protocol.weight_reports_every = rng.gen_range(1..=2);
            }
            for _ in 0..rng.gen_range(1..=4) {
                let at = Duration::from_millis(rng.gen_range(0..=config.submit_window.as_millis() as u64));
                let proposer = rng.gen_range(0..replicas);
                let mut ids: Vec<ReplicaId> = (0..replicas).map(|i| ReplicaId(i as u16)).collect();
                ids.shuffle(&mut rng);
                let weights = match rng.gen_range(0..3) {
                    0 => vec![1; replicas],
                    1 => {
                        ordinal_crypto::aware_weights(replicas, f, &ids[..2 * f]).unwrap_or(vec![1; replicas])
                    }
                    _ => (0..replicas).map(|_| rng.gen_range(1..=3)).collect(),
                };
                config.weight_proposals.push((at, proposer, weights));
            }
        }
        // A quarter of the runs grow by a spare replica and
        // then shrink by a random member, while the faults go on. The entries name epochs 1
        // and 2: a weight change ordered first makes them refused alike everywhere.
        if f > 0 && rng.gen_bool(0.25) {
            let window = config.submit_window.as_millis() as u64;
            let join_at = Duration::from_millis(rng.gen_range(0..=window / 2));
            config.spares = 1;
            config.spare_starts = vec![(join_at + Duration::from_millis(rng.gen_range(0..=500)), replicas)];
            config.membership.push((
                join_at,
                crate::epoch::MembershipChange {
                    epoch: 1,
                    edit: ordinal_crypto::MembershipEdit::Join(replica_key(replicas).public()),
                    address: format!("sim:{replicas}"),
                },
            ));
            config.membership.push((
                join_at + Duration::from_millis(rng.gen_range(300..=1500)),
                crate::epoch::MembershipChange {
                    epoch: 2,
                    edit: ordinal_crypto::MembershipEdit::Leave(ReplicaId(rng.gen_range(0..replicas) as u16)),
                    address: String::new(),
                },
            ));
        }
        config
    }

    fn is_byzantine(&self, replica: usize) -> bool {
        self.byzantine.iter().any(|(r, _)| *r == replica)
    }
}

/// Weight epochs as (first sequence number, weights).
type Schedule = Vec<(u64, Vec<u64>)>;

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
    /// Virtual time.
    pub at: Time,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Broken invariants (empty for a good run).
    pub violations: Vec<Violation>,
    /// Requests submitted.
    pub submitted: usize,
    /// Requests answered with a verified receipt.
    pub answered: usize,
    /// Highest sequence number decided.
    pub decided_seq: u64,
    /// Virtual time at the end.
    pub virtual_time: Time,
    /// Events processed.
    pub events: u64,
    /// Replica-to-replica traffic by message kind.
    pub traffic: Traffic,
    /// Refused inputs by reason (correct replicas only).
    pub refused: BTreeMap<&'static str, u64>,
    /// Highest view any correct replica reached.
    pub max_view: u64,
    /// Requests ordered again after an earlier batch already held them. Execution skips the
    /// copies (answering with the first position), so they never break validity, but each one
    /// is a wasted slot in a batch: a calm run should have none.
    pub redundant_copies: u64,
    /// Votes past their quorum handed to correct replicas unchecked ([`crate::late`]).
    pub late_votes_unchecked: u64,
    /// Median submission-to-receipt latency.
    pub median_latency: Time,
    /// Longest submission-to-receipt latency.
    pub max_latency: Time,
    /// Each replica instance's final status (for replaying a failing seed).
    pub replica_status: Vec<String>,
    /// (replica id, status) of each instance still running at the end.
    pub final_status: Vec<(usize, crate::io::Status)>,
    /// The weight epochs the correct replicas derived: (first sequence number, weights).
    pub weight_epochs: Vec<(u64, Vec<u64>)>,
}

struct Store {
    batches: BTreeMap<u64, CommittedBatch>,
    safety: SafetyState,
}

struct Instance {
    replica: usize,
    /// A spare that has not started yet.
    dormant: bool,
    node: Option<Box<dyn Protocol + Send>>,
    generation: u64,
    store: Store,
    /// What the replica settled: votes matching it go in unchecked, as the node's transport
    /// hands them in (`crate::late`). Lost with the process, like the node's.
    settled: SettledStatements,
    behaviour: Option<Behaviour>,
    byzantine: ByzantineState,
    wake_at: Option<Time>,
}

struct SimClient {
    requests: Vec<Request>,
    by_digest: HashMap<Digest, usize>,
    submitted_at: Vec<Option<Time>>,
    answered: Vec<Option<(Time, Position)>>,
}

enum Event {
    ToReplica {
        replica: usize,
        instance: usize,
        from: Option<usize>,
        bytes: Vec<u8>,
    },
    ToClient {
        client: usize,
        from: usize,
        receipt: Box<Receipt>,
    },
    Wake {
        instance: usize,
        generation: u64,
    },
    Persisted {
        instance: usize,
        generation: u64,
        seq: u64,
    },
    Submit {
        client: usize,
        index: usize,
    },
    Retry {
        client: usize,
        index: usize,
    },
    Crash {
        replica: usize,
    },
    ProposeWeights {
        replica: usize,
        weights: Vec<u64>,
    },
    Restart {
        replica: usize,
    },
    StartSpare {
        replica: usize,
    },
    Isolate {
        replica: usize,
    },
    Rejoin {
        replica: usize,
    },
    Split {
        side: BTreeSet<usize>,
    },
    Unsplit,
    Heal,
}

/// Keys for replica `i` of a simulated cluster.
pub fn replica_key(i: usize) -> KeyPair {
    KeyPair::from_seed(Digest::of_parts(&[b"ordinal-sim-replica", &(i as u64).to_le_bytes()]).0)
}

/// The operator key of a simulated cluster: it signs membership changes.
pub fn operator_key() -> KeyPair {
    KeyPair::from_seed(Digest::of(b"ordinal-sim-operator").0)
}

fn client_key(i: usize) -> KeyPair {
    KeyPair::from_seed(Digest::of_parts(&[b"ordinal-sim-client", &(i as u64).to_le_bytes()]).0)
}

/// The committee of a simulated cluster with equal weights.
pub fn committee(replicas: usize) -> Result<Committee, ordinal_crypto::CryptoError> {
    let keys: Vec<_> = (0..replicas).map(|i| replica_key(i).public()).collect();
    Committee::equal_weights(Digest::of(b"ordinal-sim"), &keys)
}

/// The committee of a simulated cluster with `weights` (equal if empty), tolerating
/// f = (n − 1)/3 faults. Fails for an inadmissible vector.
pub fn weighted_committee(
    replicas: usize,
    weights: &[u64],
) -> Result<Committee, ordinal_crypto::CryptoError> {
    if weights.is_empty() {
        return committee(replicas);
    }
    if weights.len() != replicas {
        return Err(ordinal_crypto::CryptoError::BadCommittee(format!(
            "{} weights for {replicas} replicas",
            weights.len()
        )));
    }
    let members = weights
        .iter()
        .enumerate()
        .map(|(i, weight)| ordinal_crypto::Member {
            id: ReplicaId(i as u16),
            public_key: replica_key(i).public(),
            weight: *weight,
        })
        .collect();
    Committee::new(
        Digest::of(b"ordinal-sim"),
        0,
        members,
        replicas.saturating_sub(1) / 3,
    )
}

/// One simulation.
pub struct Simulation {
    config: SimConfig,
    committee: Committee,
    /// Every replica key, spares included (to recognise members' entries in the log).
    all_keys: Committee,
    rng: ChaCha8Rng,
    network: Network<Event>,
    instances: Vec<Instance>,
    clients: Vec<SimClient>,
    client_index: HashMap<ordinal_crypto::PublicKey, usize>,
    now: Time,
    report: Report,
    decided: BTreeMap<u64, (Digest, Vec<RequestKey>)>,
    first_position: HashMap<RequestKey, Position>,
    delivered_through: u64,
    submitted_digests: HashSet<Digest>,
    healed: bool,
    verified_certificates: HashSet<Digest>,
}

impl Simulation {
    /// Sets up a run; fails only for a cluster size no committee can have.
    pub fn new(mut config: SimConfig) -> Result<Self, ordinal_crypto::CryptoError> {
        let committee = weighted_committee(config.replicas, &config.weights)?;
        let all_keys = self::committee(config.replicas + config.spares)?;
        if !config.membership.is_empty() {
            config.protocol.membership_operator = Some(operator_key().public());
        }
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut network = Network::new((Duration::from_micros(500), Duration::from_millis(5)));
        network.faults = config.link_faults;
        network.slowdown = config.slow_links.iter().copied().collect();
        let mut instances = Vec::new();
        for replica in 0..config.replicas + config.spares {
            let behaviour = config
                .byzantine
                .iter()
                .find(|(r, _)| *r == replica)
                .map(|(_, b)| *b);
            let copies = if behaviour == Some(Behaviour::Twins) { 2 } else { 1 };
            for _ in 0..copies {
                instances.push(Instance {
                    replica,
                    // Spares stay dormant until their start.
                    node: (replica < config.replicas).then(|| {
                        start_replica(
                            config.kind,
                            ReplicaId(replica as u16),
                            replica_key(replica),
                            committee.clone(),
                            config.protocol.clone(),
                            Duration::ZERO,
                            SafetyState::default(),
                            Vec::new(),
                        )
                    }),
                    dormant: replica >= config.replicas,
                    generation: 0,
                    settled: SettledStatements::new(2 * config.protocol.log_window as usize),
                    store: Store {
                        batches: BTreeMap::new(),
                        safety: SafetyState::default(),
                    },
                    behaviour,
                    byzantine: ByzantineState::default(),
                    wake_at: None,
                });
            }
        }
        let mut sim = Simulation {
            committee,
            all_keys,
            rng,
            network,
            instances,
            clients: Vec::new(),
            client_index: HashMap::new(),
            now: Duration::ZERO,
            report: Report {
                seed: config.seed,
                ..Report::default()
            },
            decided: BTreeMap::new(),
            first_position: HashMap::new(),
            delivered_through: 0,
            submitted_digests: HashSet::new(),
            healed: false,
            verified_certificates: HashSet::new(),
            config,
        };
        sim.schedule_workload();
        for i in 0..sim.instances.len() {
            sim.reschedule(i);
        }
        Ok(sim)
    }

    fn schedule_workload(&mut self) {
        let cluster = self.committee.cluster_id();
        for c in 0..self.config.clients {
            let key = client_key(c);
            let mut requests = Vec::new();
            // Like a real client, nonces increase with submission time.
            let mut times: Vec<Time> = (0..self.config.requests_per_client)
                .map(|_| self.config.submit_window.mul_f64(self.rng.gen::<f64>()))
                .collect();
            times.sort();
            for (n, at) in times.into_iter().enumerate() {
                let mut payload = vec![0u8; self.config.payload_bytes];
                self.rng.fill(&mut payload[..]);
                let nonce = n as u64 + 1;
                let request = match self.config.protocol.request_auth {
                    RequestAuth::Signed => Request::signed(&key, &cluster, nonce, payload),
                    RequestAuth::Unsigned => Request::unsigned(key.public(), nonce, payload),
                };
                self.submitted_digests.insert(request.digest());
                requests.push(request);
                self.network.schedule(at, Event::Submit { client: c, index: n });
            }
            self.add_client(key.public(), requests);
        }
        if !self.config.membership.is_empty() {
            // The operator is one more client; its requests are the membership changes.
            let key = operator_key();
            let mut requests = Vec::new();
            for (n, (at, change)) in self.config.membership.clone().into_iter().enumerate() {
                let entry = crate::epoch::QuorumEntry::Membership(change);
                let request = entry.to_request(&key, &cluster, n as u64 + 1);
                self.submitted_digests.insert(request.digest());
                requests.push(request);
                let client = self.clients.len();
                self.network.schedule(at, Event::Submit { client, index: n });
            }
            self.add_client(key.public(), requests);
        }
        for (at, replica) in self.config.spare_starts.clone() {
            self.network.schedule(at, Event::StartSpare { replica });
        }
        self.report.submitted = self.clients.iter().map(|c| c.requests.len()).sum();
        for (at, replica, weights) in self.config.weight_proposals.clone() {
            self.network
                .schedule(at, Event::ProposeWeights { replica, weights });
        }
        for crash in self.config.crashes.clone() {
            self.network.schedule(
                crash.at,
                Event::Crash {
                    replica: crash.replica,
                },
            );
            self.network.schedule(
                crash.restart_at,
                Event::Restart {
                    replica: crash.replica,
                },
            );
        }
        for isolation in self.config.isolations.clone() {
            self.network.schedule(
                isolation.from,
                Event::Isolate {
                    replica: isolation.replica,
                },
            );
            self.network.schedule(
                isolation.until,
                Event::Rejoin {
                    replica: isolation.replica,
                },
            );
        }
        for split in self.config.splits.clone() {
            let side = split.side.iter().copied().collect();
            self.network.schedule(split.from, Event::Split { side });
            self.network.schedule(split.until, Event::Unsplit);
        }
        self.network.schedule(self.config.heal_at, Event::Heal);
    }

    /// A client with key `key` that will submit `requests` (the workload schedules when).
    fn add_client(&mut self, key: ordinal_crypto::PublicKey, requests: Vec<Request>) {
        self.client_index.insert(key, self.clients.len());
        self.clients.push(SimClient {
            by_digest: requests
                .iter()
                .enumerate()
                .map(|(i, r)| (r.digest(), i))
                .collect(),
            submitted_at: vec![None; requests.len()],
            answered: vec![None; requests.len()],
            requests,
        });
    }

    fn violation(&mut self, invariant: &'static str, detail: String) {
        if self.report.violations.len() < 20 {
            self.report.violations.push(Violation {
                invariant,
                detail,
                at: self.now,
            });
        }
    }

    fn all_answered(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.answered.iter().all(Option::is_some))
    }

    /// Runs to completion: until every request is answered after the heal, or the liveness
    /// bound passes. Returns the report.
    pub fn run(mut self) -> Report {
        let deadline = self.config.heal_at + self.config.liveness_bound;
        while let Some((at, event)) = self.network.next() {
            if at > deadline {
                break;
            }
            self.now = at;
            self.report.events += 1;
            if self.report.events > self.config.max_events {
                self.violation("livelock", format!("more than {} events", self.config.max_events));
                break;
            }
            self.step(event);
            if self.healed && self.all_answered() {
                break;
            }
        }
        self.finish()
    }

    /// The committee counting votes at `seq`, as the correct replicas' logs fix it (a client
    /// that follows the certified log learns the same): from the correct replica that knows
    /// the most of the schedule.
    fn committee_at(&self, seq: u64) -> Option<Committee> {
        self.instances
            .iter()
            .filter(|i| !self.config.is_byzantine(i.replica))
            .filter_map(|i| i.node.as_ref())
            .max_by_key(|n| n.committees().known_through())
            .and_then(|n| n.committees().for_seq(seq).cloned())
    }

    /// Every correct replica derived the same weight epochs (start, weights), as far as each
    /// got; the longest schedule goes into the report.
    fn check_schedules(&mut self) {
        let schedules: Vec<(usize, Schedule)> = self
            .instances
            .iter()
            .filter(|i| !self.config.is_byzantine(i.replica))
            .filter_map(|i| i.node.as_ref().map(|n| (i.replica, n)))
            .map(|(replica, n)| {
                let epochs = n.committees().epochs().iter();
                (
                    replica,
                    epochs.map(|e| (e.start, e.committee.weights())).collect(),
                )
            })
            .collect();
        let Some((_, longest)) = schedules.iter().max_by_key(|(_, s)| s.len()).cloned() else {
            return;
        };
        for (replica, schedule) in &schedules {
            if !longest.starts_with(schedule) {
                let detail = format!("replica {replica} has epochs {schedule:?}, another {longest:?}");
                self.violation("weights", detail);
            }
        }
        self.report.weight_epochs = longest;
    }

    fn finish(mut self) -> Report {
        self.check_schedules();
        let mut latencies = Vec::new();
        let mut missing = 0;
        for client in &self.clients {
            for (i, answer) in client.answered.iter().enumerate() {
                match (answer, client.submitted_at[i]) {
                    (Some((at, _)), Some(sent)) => {
                        latencies.push(at.saturating_sub(sent));
                        self.report.answered += 1;
                    }
                    _ => missing += 1,
                }
            }
        }
        if missing > 0 {
            let detail = format!(
                "{missing} of {} requests unanswered {:?} after the heal",
                self.report.submitted, self.config.liveness_bound
            );
            self.violation("liveness", detail);
        }
        latencies.sort();
        self.report.median_latency = latencies.get(latencies.len() / 2).copied().unwrap_or_default();
        self.report.max_latency = latencies.last().copied().unwrap_or_default();
        self.report.decided_seq = self.decided.keys().next_back().copied().unwrap_or(0);
        let mut ordered = std::collections::HashSet::new();
        for (_, keys) in self.decided.values() {
            for key in keys {
                if !ordered.insert(key) {
                    self.report.redundant_copies += 1;
                }
            }
        }
        self.report.virtual_time = self.now;
        for instance in &self.instances {
            let status = instance.node.as_ref().map(|n| (n.status(), n.footprint()));
            if let Some((st, _)) = status {
                self.report.final_status.push((instance.replica, st));
            }
            self.report.replica_status.push(format!(
                "replica {} ({:?}): {status:?}",
                instance.replica, instance.behaviour
            ));
            if !self.config.is_byzantine(instance.replica) {
                if let Some(node) = &instance.node {
                    self.report.max_view = self.report.max_view.max(node.status().view);
                }
            }
        }
        self.report
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::ToReplica {
                replica,
                instance,
                from,
                bytes,
            } => self.deliver(replica, instance, from, bytes),
            Event::ToClient {
                client,
                from,
                receipt,
            } => self.client_receipt(client, from, *receipt),
            Event::Wake { instance, generation } => {
                if self.instances[instance].generation == generation {
                    self.instances[instance].wake_at = None;
                    let due = self.instances[instance]
                        .node
                        .as_ref()
                        .and_then(|n| n.poll_timeout())
                        .is_some_and(|t| t <= self.now);
                    if due {
                        self.input(instance, Input::Timeout);
                    } else {
                        self.reschedule(instance);
                    }
                }
            }
            Event::Persisted {
                instance,
                generation,
                seq,
            } => {
                if self.instances[instance].generation == generation {
                    self.input(instance, Input::Persisted { seq });
                }
            }
            Event::Submit { client, index } => {
                self.clients[client].submitted_at[index] = Some(self.now);
                self.client_send(client, index);
            }
            Event::Retry { client, index } => {
                if self.clients[client].answered[index].is_none() {
                    self.client_send(client, index);
                }
            }
            Event::Crash { replica } => {
                for instance in self.instances.iter_mut().filter(|i| i.replica == replica) {
                    instance.node = None;
                    instance.generation += 1;
                    instance.wake_at = None;
                }
            }
            Event::Restart { replica } => self.restart(replica),
            Event::StartSpare { replica } => {
                for instance in self.instances.iter_mut().filter(|i| i.replica == replica) {
                    instance.dormant = false;
                }
                self.restart(replica);
            }
            Event::ProposeWeights { replica, weights } => {
                let instances: Vec<usize> = (0..self.instances.len())
                    .filter(|i| self.instances[*i].replica == replica)
                    .collect();
                for instance in instances {
                    let weights = weights.clone();
                    self.input(instance, Input::ProposeWeights { weights });
                }
            }
            Event::Isolate { replica } => {
                self.network.isolated.insert(replica);
            }
            Event::Rejoin { replica } => {
                self.network.isolated.remove(&replica);
            }
            Event::Split { side } => self.network.split = Some(side),
            Event::Unsplit => self.network.split = None,
            Event::Heal => {
                self.healed = true;
                self.network.faults = LinkFaults::NONE;
                self.network.isolated.clear();
                self.network.split = None;
                let down: BTreeSet<usize> = self
                    .instances
                    .iter()
                    .filter(|i| i.node.is_none() && !i.dormant)
                    .map(|i| i.replica)
                    .collect();
                for replica in down {
                    self.restart(replica);
                }
            }
        }
    }

    fn restart(&mut self, replica: usize) {
        let committee = self.committee.clone();
        let protocol = self.config.protocol.clone();
        let now = self.now;
        let mut restarted = Vec::new();
        for (k, instance) in self.instances.iter_mut().enumerate() {
            if instance.replica != replica || instance.node.is_some() || instance.dormant {
                continue;
            }
            let log: Vec<CommittedBatch> = instance.store.batches.values().cloned().collect();
            instance.generation += 1;
            instance.settled = SettledStatements::new(2 * protocol.log_window as usize);
            instance.node = Some(start_replica(
                self.config.kind,
                ReplicaId(replica as u16),
                replica_key(replica),
                committee.clone(),
                protocol.clone(),
                now,
                instance.store.safety.clone(),
                log,
            ));
            restarted.push(k);
        }
        for k in restarted {
            self.after_input(k);
        }
    }

    fn client_send(&mut self, client: usize, index: usize) {
        let bytes = Message::Request(self.clients[client].requests[index].clone()).encode();
        for replica in 0..self.config.replicas + self.config.spares {
            self.transmit(None, replica, bytes.clone());
        }
        let at = self.now + self.config.client_retry;
        self.network.schedule(at, Event::Retry { client, index });
    }

    /// Puts one wire message from `from` (a replica id, or a client) to every instance of
    /// replica `to` through the link model.
    fn transmit(&mut self, from: Option<usize>, to: usize, bytes: Vec<u8>) {
        let targets: Vec<usize> = (0..self.instances.len())
            .filter(|&k| self.instances[k].replica == to)
            .collect();
        for instance in targets {
            for at in self.network.transit(&mut self.rng, self.now, from, Some(to)) {
                self.network.schedule(
                    at,
                    Event::ToReplica {
                        replica: to,
                        instance,
                        from,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
    }

    fn deliver(&mut self, replica: usize, instance: usize, from: Option<usize>, bytes: Vec<u8>) {
        if self.instances[instance].node.is_none() {
            return;
        }
        let correct = !self.config.is_byzantine(replica);
        let decoded = Message::decode(&bytes);
        // A vote for what the replica settled goes in unchecked, as the node hands it in.
        let decoded = match (from, decoded) {
            (Some(peer), Ok(message)) => {
                let peer = ReplicaId(peer as u16);
                match self.instances[instance].settled.sort(peer, message) {
                    Sorted::Late(vote) => {
                        if correct {
                            self.report.late_votes_unchecked += 1;
                        }
                        self.input(instance, Input::LateVote { from: peer, vote });
                        return;
                    }
                    Sorted::Verify(message) => Ok(message),
                }
            }
            (_, decoded) => decoded,
        };
        // Each replica verifies with the weight schedule its own log gave it.
        let verified = {
            let Some(node) = self.instances[instance].node.as_ref() else {
                return;
            };
            decoded.and_then(|m| m.verify(node.committees(), &self.config.protocol))
        };
        let message = match verified {
            Ok(m) => m,
            Err(e) => {
                if correct {
                    *self.report.refused.entry(e.reason()).or_default() += 1;
                }
                // As the node does: a peer's message refused at the edge counts against it.
                if let Some(from) = from.filter(|_| e.is_fault()) {
                    self.input(
                        instance,
                        Input::Refused {
                            from: ReplicaId(from as u16),
                            count: 1,
                        },
                    );
                }
                return;
            }
        };
        let input = match (from, message) {
            (None, crate::messages::VerifiedMessage::Request(request)) => Input::Request(request),
            (None, _) => return,
            (Some(from), message) => Input::Message {
                from: ReplicaId(from as u16),
                message,
            },
        };
        self.input(instance, input);
    }

    fn input(&mut self, instance: usize, input: Input) {
        let now = self.now;
        let correct = !self.config.is_byzantine(self.instances[instance].replica);
        let Some(node) = self.instances[instance].node.as_mut() else {
            return;
        };
        if let Err(e) = node.handle(now, input) {
            if correct {
                *self.report.refused.entry(e.reason()).or_default() += 1;
            }
        }
        self.after_input(instance);
    }

    fn after_input(&mut self, instance: usize) {
        let actions = match self.instances[instance].node.as_mut() {
            Some(node) => node.drain_actions(),
            None => return,
        };
        for action in actions {
            self.perform(instance, action);
        }
        self.check_memory(instance);
        self.reschedule(instance);
    }

    fn reschedule(&mut self, instance: usize) {
        let Some(at) = self.instances[instance]
            .node
            .as_ref()
            .and_then(|n| n.poll_timeout())
        else {
            return;
        };
        let at = at.max(self.now);
        let current = self.instances[instance].wake_at;
        if current.is_none_or(|c| at < c) {
            self.instances[instance].wake_at = Some(at);
            let generation = self.instances[instance].generation;
            self.network.schedule(at, Event::Wake { instance, generation });
        }
    }

    fn check_memory(&mut self, instance: usize) {
        if self.config.is_byzantine(self.instances[instance].replica) {
            return;
        }
        let Some(node) = &self.instances[instance].node else {
            return;
        };
        let footprint = node.footprint();
        if !footprint.within(&self.config.protocol, self.config.replicas, self.config.clients) {
            let detail = format!("replica {}: {footprint:?}", self.instances[instance].replica);
            self.violation("bounded-memory", detail);
        }
    }

    fn perform(&mut self, instance: usize, action: Action) {
        let replica = self.instances[instance].replica;
        let correct = !self.config.is_byzantine(replica);
        match action {
            Action::PersistSafety(update) => self.instances[instance].store.safety.apply(&update),
            Action::PersistBatch(committed) => {
                if correct {
                    self.check_committed(replica, &committed);
                }
                let seq = committed.seq();
                self.instances[instance].store.batches.insert(seq, committed);
                let generation = self.instances[instance].generation;
                let at = self.now + Duration::from_micros(self.rng.gen_range(50..500));
                self.network.schedule(
                    at,
                    Event::Persisted {
                        instance,
                        generation,
                        seq,
                    },
                );
            }
            Action::Send { to, message } => self.outgoing(instance, message, vec![to.index()]),
            Action::Broadcast { message } => {
                let dests: Vec<usize> = (0..self.config.replicas + self.config.spares)
                    .filter(|r| *r != replica)
                    .collect();
                self.outgoing(instance, message, dests);
            }
            Action::Reply { key, position } => self.reply(instance, correct, key, position),
            Action::Settled(statement) => self.instances[instance].settled.record(&statement),
            Action::ServeBatches { to, from_seq, to_seq } => {
                let last = to_seq.min(from_seq + self.config.protocol.state_transfer_chunk - 1);
                let batches: Vec<CommittedBatch> = self.instances[instance]
                    .store
                    .batches
                    .range(from_seq..=last)
                    .map(|(_, b)| b.clone())
                    .collect();
                if !batches.is_empty() {
                    self.outgoing(instance, Message::Batches(batches), vec![to.index()]);
                }
            }
        }
    }

    fn outgoing(&mut self, instance: usize, message: Message, dests: Vec<usize>) {
        let replica = self.instances[instance].replica;
        let wire: Vec<(usize, Vec<u8>)> = match self.instances[instance].behaviour {
            None => {
                let bytes = message.encode();
                dests.iter().map(|d| (*d, bytes.clone())).collect()
            }
            Some(behaviour) => {
                let key = replica_key(replica);
                let signer = Signer {
                    id: ReplicaId(replica as u16),
                    key: &key,
                    committee: &self.committee,
                };
                byzantine::rewrite(
                    behaviour,
                    &mut self.instances[instance].byzantine,
                    &mut self.rng,
                    &signer,
                    message,
                    &dests,
                )
            }
        };
        let slow = self.instances[instance].behaviour == Some(Behaviour::Slow);
        for (to, bytes) in wire {
            let kind = Message::decode(&bytes).map(|m| m.kind()).unwrap_or("garbage");
            self.report.traffic.count(kind, bytes.len());
            if slow {
                // Everything it says arrives well after the view timeout.
                let at = self.now + self.config.protocol.view_timeout * 2;
                let instances: Vec<usize> = (0..self.instances.len())
                    .filter(|&k| self.instances[k].replica == to)
                    .collect();
                for k in instances {
                    let event = Event::ToReplica {
                        replica: to,
                        instance: k,
                        from: Some(replica),
                        bytes: bytes.clone(),
                    };
                    self.network.schedule(at, event);
                }
            } else {
                self.transmit(Some(replica), to, bytes);
            }
        }
    }

    /// Agreement, certificate validity and validity, checked on every batch a correct replica
    /// persists.
    fn check_committed(&mut self, replica: usize, committed: &CommittedBatch) {
        let seq = committed.seq();
        // Counted with the weights the replica's own log puts in force at `seq`; the
        // `weights` invariant checks that every correct replica derives the same schedule.
        let verdict = match self.committee_at(seq) {
            Some(committee) => committed.verify(&committee).map_err(|e| e.to_string()),
            None => Err("weights at this sequence number unknown".to_string()),
        };
        if let Err(e) = verdict {
            self.violation("certificate", format!("replica {replica} seq {seq}: {e}"));
        }
        let digest = committed.certificate.statement.digest;
        if let Some((existing, _)) = self.decided.get(&seq) {
            if *existing != digest {
                let detail = format!("replica {replica} seq {seq}: {digest:?} but decided {existing:?}");
                self.violation("agreement", detail);
            }
            return;
        }
        let check_origin =
            self.config.protocol.request_auth == RequestAuth::Signed || self.config.byzantine.is_empty();
        let mut keys = Vec::new();
        for request in committed.batch.requests() {
            // Weight changes come from members, signed with their keys (`crate::epoch`).
            let from_member =
                || crate::epoch::QuorumEntry::from_request(request, &self.all_keys, None).is_some();
            if check_origin && !self.submitted_digests.contains(&request.digest()) && !from_member() {
                let detail = format!("replica {replica} seq {seq}: request never submitted");
                self.violation("validity", detail);
            }
            keys.push(request.key(self.config.protocol.request_auth));
        }
        self.decided.insert(seq, (digest, keys));
        // Extend the first-occurrence index along the contiguous decided prefix.
        while let Some((_, keys)) = self.decided.get(&(self.delivered_through + 1)) {
            let s = self.delivered_through + 1;
            for (index, key) in keys.iter().enumerate() {
                self.first_position.entry(*key).or_insert(Position {
                    seq: s,
                    index: index as u32,
                });
            }
            self.delivered_through = s;
        }
    }

    /// A replica answers a client: the position must be the request's first occurrence in the
    /// decided log (ordered at most once; a retry gets the original position).
    fn reply(&mut self, instance: usize, correct: bool, key: RequestKey, position: Position) {
        let replica = self.instances[instance].replica;
        if correct && self.first_position.get(&key) != Some(&position) {
            let detail = format!(
                "replica {replica} answered {key:?} with {position:?}, first ordered at {:?}",
                self.first_position.get(&key)
            );
            self.violation("exactly-once", detail);
        }
        let Some(committed) = self.instances[instance].store.batches.get(&position.seq) else {
            return;
        };
        // The batch keeps its Merkle tree: every receipt of it reuses the one tree.
        let (Some(leaf), Some(proof)) = (
            committed.batch.leaves().get(position.index as usize),
            committed.batch.proof(position.index as usize),
        ) else {
            return;
        };
        let receipt = Receipt {
            seq: position.seq,
            index: position.index,
            request_digest: *leaf,
            proof,
            certificate: committed.certificate.clone(),
        };
        let Some(&client) = self.client_index.get(&key.client) else {
            return;
        };
        for at in self.network.transit(&mut self.rng, self.now, Some(replica), None) {
            self.network.schedule(
                at,
                Event::ToClient {
                    client,
                    from: replica,
                    receipt: Box::new(receipt.clone()),
                },
            );
        }
    }

    fn client_receipt(&mut self, client: usize, from: usize, receipt: Receipt) {
        let auth = self.config.protocol.request_auth;
        let Some(&index) = self.clients[client].by_digest.get(&receipt.request_digest) else {
            return;
        };
        if self.clients[client].answered[index].is_some() {
            return;
        }
        let request = self.clients[client].requests[index].clone();
        // Certificates repeat across a batch's receipts; verify each distinct one once.
        let certificate_id = Digest::of(&postcard::to_allocvec(&receipt.certificate).unwrap_or_default());
        let verdict = if self.verified_certificates.contains(&certificate_id) {
            receipt.verify_inclusion(&request)
        } else {
            match self.committee_at(receipt.seq) {
                Some(committee) => receipt.verify(&request, &committee),
                None => Err(crate::receipt::ReceiptError::UnknownEpoch),
            }
        };
        if verdict.is_ok() {
            self.verified_certificates.insert(certificate_id);
        }
        if let Err(e) = verdict {
            if !self.config.is_byzantine(from) {
                self.violation("certificate", format!("receipt from replica {from}: {e}"));
            }
            return;
        }
        if let Some((digest, _)) = self.decided.get(&receipt.seq) {
            if *digest != receipt.certificate.statement.digest {
                self.violation(
                    "agreement",
                    format!("receipt for seq {} disagrees with the log", receipt.seq),
                );
            }
        }
        let position = Position {
            seq: receipt.seq,
            index: receipt.index,
        };
        if let Some(first) = self.first_position.get(&request.key(auth)) {
            if *first != position && !self.config.is_byzantine(from) {
                self.violation(
                    "exactly-once",
                    format!("receipt at {position:?}, first at {first:?}"),
                );
            }
        }
        let slot = &mut self.clients[client].answered[index];
        if slot.is_none() {
            *slot = Some((self.now, position));
        }
    }
}

/// Runs `config` and returns its report (a set-up failure is reported as a violation).
pub fn run(config: SimConfig) -> Report {
    let seed = config.seed;
    match Simulation::new(config) {
        Ok(sim) => sim.run(),
        Err(e) => Report {
            seed,
            violations: vec![Violation {
                invariant: "setup",
                detail: e.to_string(),
                at: Duration::ZERO,
            }],
            ..Report::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use crate::messages::CommitVote;
    use ordinal_crypto::{Certificate, Signed};

    fn certified(sim: &Simulation, seq: u64, batch: Batch) -> CommittedBatch {
        let statement = CommitVote {
            view: 0,
            seq,
            digest: batch.digest(),
        };
        let votes: Vec<_> = (0..3)
            .map(|i| {
                Signed::sign(statement, ReplicaId(i as u16), &replica_key(i), &sim.committee)
                    .verify(&sim.committee)
                    .unwrap()
            })
            .collect();
        CommittedBatch {
            batch,
            certificate: Certificate::from_votes(statement, 0, &votes),
        }
    }

    /// The checkers must be able to fail: feed them each kind of bad outcome directly.
    #[test]
    fn invariant_checkers_catch_bad_outcomes() {
        let mut sim = Simulation::new(SimConfig::calm(1, 4)).unwrap();
        let submitted = sim.clients[0].requests[0].clone();
        let other = sim.clients[0].requests[1].clone();

        let first = certified(&sim, 1, Batch::new(vec![submitted.clone()]));
        sim.check_committed(0, &first);
        assert!(sim.report.violations.is_empty());

        // Agreement: a different batch at the same seq.
        let conflicting = certified(&sim, 1, Batch::new(vec![other.clone()]));
        sim.check_committed(1, &conflicting);
        assert_eq!(sim.report.violations.last().unwrap().invariant, "agreement");

        // Certificate: votes below quorum.
        let mut weak = certified(&sim, 2, Batch::new(vec![other.clone()]));
        weak.certificate.votes.truncate(2);
        sim.check_committed(0, &weak);
        assert!(sim.report.violations.iter().any(|v| v.invariant == "certificate"));

        // Validity: a request no client submitted.
        let forged = Request::unsigned(client_key(0).public(), 999, b"never sent".to_vec());
        let invented = certified(&sim, 3, Batch::new(vec![forged]));
        sim.check_committed(0, &invented);
        assert!(sim.report.violations.iter().any(|v| v.invariant == "validity"));

        // Exactly once: answering with a position that is not the first occurrence.
        let key = submitted.key(sim.config.protocol.request_auth);
        sim.reply(0, true, key, Position { seq: 2, index: 0 });
        assert!(sim
            .report
            .violations
            .iter()
            .any(|v| v.invariant == "exactly-once"));
    }

    #[test]
    fn liveness_checker_fails_when_nothing_commits() {
        let mut config = SimConfig::calm(2, 4);
        // Two silent replicas out of four: more than f, nothing can commit.
        config.byzantine = vec![(1, Behaviour::Silent), (2, Behaviour::Silent)];
        config.liveness_bound = Duration::from_secs(5);
        let report = run(config);
        assert!(report.violations.iter().any(|v| v.invariant == "liveness"));
    }

    #[test]
    fn same_seed_same_run() {
        let a = run(SimConfig::random(42, 4));
        let b = run(SimConfig::random(42, 4));
        assert_eq!(a.events, b.events);
        assert_eq!(a.decided_seq, b.decided_seq);
        assert_eq!(a.traffic.bytes(), b.traffic.bytes());
        assert_eq!(a.median_latency, b.median_latency);
    }
}
