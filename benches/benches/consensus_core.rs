//! The protocol core alone, without a network: four replicas of the real state machines
//! (`start_replica`, PBFT and the linear mode) driven in one thread, every message passed
//! through `Message::verify` as a connection task would and handed over at once, every
//! persistence durable at once, virtual time advanced only when nothing else is left to do.
//! No faults. What remains is what the protocol itself costs: signing and verifying votes,
//! hashing batches, bookkeeping.
//!
//! The workload is fixed: 8 clients submit 16 full batches' worth of 512-byte transactions
//! (8,192) to every replica at time zero, in unsigned-request mode (the benchmark setting of
//! `scripts/local-bench.sh`), and an iteration ends when every replica has persisted every one
//! and answered it (`Action::Reply`).
//! Criterion's throughput is transactions per second; the batches per second are printed after
//! each protocol's run, and before it one checked run's batches, request slots (a request
//! ordered twice fills two slots and is answered with its first position), messages by kind,
//! refusals and the virtual time the run took.
//!
//! ```text
//! cargo bench -p ordinal-benches --bench consensus_core
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

mod common;

use common::{client, committee, keys, payload};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ordinal_consensus::{
    start_replica, Action, CommittedBatch, Input, Message, Position, Protocol, ProtocolConfig, ProtocolKind,
    Request, RequestAuth, SafetyState, SettledStatements, Sorted, Time, VerifiedMessage,
};
use ordinal_crypto::{Committee, KeyPair, ReplicaId};

const REPLICAS: usize = 4;
const CLIENTS: usize = 8;
const TX_BYTES: usize = 512;
/// Full batches of the default `max_batch_requests` (512).
const BATCHES: usize = 16;
/// Virtual time after which a run that has not finished is a bug, not a slow run.
const DEADLINE: Time = Duration::from_secs(60);

fn workload(config: &ProtocolConfig) -> Vec<Request> {
    let total = BATCHES * config.max_batch_requests;
    let per_client = total / CLIENTS;
    // Like real clients: each client's nonces increase; clients interleave.
    (0..per_client)
        .flat_map(|n| {
            (0..CLIENTS).map(move |c| {
                Request::unsigned(client(c), n as u64 + 1, payload(c * per_client + n, TX_BYTES))
            })
        })
        .collect()
}

// Messages move through the queue by value, as they would through a channel.
#[allow(clippy::large_enum_variant)]
enum Event {
    Deliver {
        to: usize,
        from: ReplicaId,
        message: Message,
    },
    Persisted {
        to: usize,
        seq: u64,
    },
}

/// What one run did.
#[derive(Default)]
struct Outcome {
    batches: u64,
    transactions: usize,
    /// Request slots in replica 0's committed batches: more than `transactions` when a
    /// request was ordered again (answered with its first position).
    slots: usize,
    messages: BTreeMap<&'static str, u64>,
    /// Inputs refused, by reason (late or repeated votes, say).
    refused: BTreeMap<&'static str, u64>,
    served: u64,
    virtual_time: Time,
}

/// A cluster, its inputs and the run's state; built outside the timed part.
struct Cluster {
    committee: Committee,
    config: ProtocolConfig,
    nodes: Vec<Box<dyn Protocol + Send>>,
    inboxes: Vec<Vec<Request>>,
    now: Time,
    queue: VecDeque<Event>,
    /// Per replica: requests answered with their first position, and the last such position.
    /// A replica answers new requests in increasing position order; a request ordered again
    /// is answered with its earlier, original position and so is not counted twice.
    answered: Vec<(usize, Option<Position>)>,
    /// Each replica's committed log, as its store would hold it (for state transfer).
    stores: Vec<Vec<CommittedBatch>>,
    /// Each replica's settled statements, as its transport holds them: votes past their
    /// quorum go in unchecked, as the node hands them in.
    settled: Vec<SettledStatements>,
    outcome: Outcome,
}

impl Cluster {
    fn new(
        kind: ProtocolKind,
        seeds: &[[u8; 32]],
        committee: &Committee,
        config: &ProtocolConfig,
        requests: &[Request],
    ) -> Self {
        let nodes = seeds
            .iter()
            .enumerate()
            .map(|(i, seed)| {
                start_replica(
                    kind,
                    ReplicaId(i as u16),
                    KeyPair::from_seed(*seed),
                    committee.clone(),
                    config.clone(),
                    Duration::ZERO,
                    SafetyState::default(),
                    Vec::new(),
                )
            })
            .collect();
        Cluster {
            committee: committee.clone(),
            config: config.clone(),
            nodes,
            inboxes: vec![requests.to_vec(); seeds.len()],
            now: Duration::ZERO,
            queue: VecDeque::new(),
            answered: vec![(0, None); seeds.len()],
            stores: vec![Vec::new(); seeds.len()],
            settled: vec![SettledStatements::new(2 * config.log_window as usize); seeds.len()],
            outcome: Outcome::default(),
        }
    }

    /// Runs until every replica has persisted every request and answered it.
    fn run(mut self) -> Outcome {
        let total = self.inboxes[0].len();
        // Clients send every request to every replica; the transport checks each one.
        for (i, inbox) in std::mem::take(&mut self.inboxes).into_iter().enumerate() {
            for request in inbox {
                let checked = Message::Request(request).verify(&self.committee, &self.config);
                let Ok(VerifiedMessage::Request(request)) = checked else {
                    panic!("request refused: {checked:?}");
                };
                self.input(i, Input::Request(request));
            }
        }
        loop {
            while let Some(event) = self.queue.pop_front() {
                match event {
                    Event::Deliver { to, from, message } => {
                        *self.outcome.messages.entry(message.kind()).or_default() += 1;
                        let message = match self.settled[to].sort(from, message) {
                            Sorted::Late(vote) => {
                                self.input(to, Input::LateVote { from, vote });
                                continue;
                            }
                            Sorted::Verify(message) => message,
                        };
                        match message.verify(&self.committee, &self.config) {
                            Ok(message) => self.input(to, Input::Message { from, message }),
                            Err(e) => *self.outcome.refused.entry(e.reason()).or_default() += 1,
                        }
                    }
                    Event::Persisted { to, seq } => self.input(to, Input::Persisted { seq }),
                }
            }
            if self.answered.iter().all(|(count, _)| *count == total) {
                break;
            }
            // Nothing in flight: jump to the earliest timer.
            let Some(next) = self.nodes.iter().filter_map(|node| node.poll_timeout()).min() else {
                panic!("stuck at {:?}: answered {:?} of {total}", self.now, self.answered);
            };
            self.now = self.now.max(next);
            assert!(
                self.now < DEADLINE,
                "no progress by {:?}: answered {:?} of {total}",
                self.now,
                self.answered
            );
            for i in 0..self.nodes.len() {
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                    self.input(i, Input::Timeout);
                }
            }
        }
        self.outcome.batches = self.nodes[0].status().committed_seq;
        self.outcome.transactions = total;
        self.outcome.virtual_time = self.now;
        self.outcome
    }

    /// Feeds one input to replica `i` and performs its actions.
    fn input(&mut self, i: usize, input: Input) {
        if let Err(e) = self.nodes[i].handle(self.now, input) {
            *self.outcome.refused.entry(e.reason()).or_default() += 1;
        }
        let me = ReplicaId(i as u16);
        for action in self.nodes[i].drain_actions() {
            match action {
                Action::Send { to, message } => self.queue.push_back(Event::Deliver {
                    to: to.index(),
                    from: me,
                    message,
                }),
                Action::Broadcast { message } => {
                    for to in (0..self.nodes.len()).filter(|&to| to != i) {
                        self.queue.push_back(Event::Deliver {
                            to,
                            from: me,
                            message: message.clone(),
                        });
                    }
                }
                Action::Settled(statement) => self.settled[i].record(&statement),
                // In memory: durable the moment it is written.
                Action::PersistSafety(_) => {}
                Action::PersistBatch(committed) => {
                    if i == 0 {
                        self.outcome.slots += committed.batch.requests().len();
                    }
                    let seq = committed.seq();
                    assert_eq!(seq, self.stores[i].len() as u64 + 1, "batches persist in order");
                    self.stores[i].push(committed);
                    self.queue.push_back(Event::Persisted { to: i, seq });
                }
                Action::Reply { position, .. } => {
                    let (count, last) = &mut self.answered[i];
                    if last.is_none_or(|last| (position.seq, position.index) > (last.seq, last.index)) {
                        *count += 1;
                        *last = Some(position);
                    }
                }
                // The linear mode's status pings make a replica that is ahead serve the one
                // behind, as the node does from its store.
                Action::ServeBatches { to, from_seq, to_seq } => {
                    let batches = (from_seq..=to_seq)
                        .filter_map(|seq| self.stores[i].get(seq as usize - 1).cloned())
                        .collect();
                    self.outcome.served += 1;
                    self.queue.push_back(Event::Deliver {
                        to: to.index(),
                        from: me,
                        message: Message::Batches(batches),
                    });
                }
            }
        }
    }
}

fn core(c: &mut Criterion) {
    let keys = keys(REPLICAS);
    let seeds: Vec<[u8; 32]> = keys.iter().map(KeyPair::secret_bytes).collect();
    let committee = committee(&keys);
    let config = ProtocolConfig {
        request_auth: RequestAuth::Unsigned,
        ..ProtocolConfig::default()
    };
    let requests = workload(&config);

    let mut group = c.benchmark_group("consensus_core");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(requests.len() as u64));
    for kind in [ProtocolKind::Pbft, ProtocolKind::Linear] {
        // One checked run first: the workload must commit completely and deterministically.
        let started = Instant::now();
        let first = Cluster::new(kind, &seeds, &committee, &config, &requests).run();
        // Ten samples of at least one run each, without criterion's "unable to complete" warning.
        group.measurement_time(Duration::from_secs(5).max(started.elapsed() * 12));
        let again = Cluster::new(kind, &seeds, &committee, &config, &requests).run();
        assert_eq!(first.batches, again.batches, "{kind}: not deterministic");
        assert_eq!(first.messages, again.messages, "{kind}: not deterministic");
        let messages: u64 = first.messages.values().sum();
        println!(
            "consensus_core/{kind}_n{REPLICAS}: {} transactions of {TX_BYTES} B in {} batches ({} request slots) per iteration, \
             {messages} messages ({:.1} per batch) {:?}, refused {:?}, {} state transfers, virtual time {:?}",
            first.transactions,
            first.batches,
            first.slots,
            messages as f64 / first.batches.max(1) as f64,
            first.messages,
            first.refused,
            first.served,
            first.virtual_time,
        );

        let mut measured = Duration::ZERO;
        let mut iterations = 0u64;
        group.bench_function(format!("{kind}_n{REPLICAS}"), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let cluster = Cluster::new(kind, &seeds, &committee, &config, &requests);
                    let started = Instant::now();
                    let outcome = cluster.run();
                    elapsed += started.elapsed();
                    assert_eq!(outcome.batches, first.batches);
                }
                measured += elapsed;
                iterations += iters;
                elapsed
            })
        });
        let per_iteration = measured.as_secs_f64() / iterations.max(1) as f64;
        println!(
            "consensus_core/{kind}_n{REPLICAS}: {iterations} runs, mean {:.1} ms: {:.0} batches/s, {:.0} transactions/s",
            per_iteration * 1e3,
            first.batches as f64 / per_iteration,
            first.transactions as f64 / per_iteration,
        );
    }
    group.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
