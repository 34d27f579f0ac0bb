//! The simulated network: a priority queue of timed events, a seeded RNG, and the faults the
//! harness can inject (delay, drop, duplicate, reorder, cut links, isolate replicas).

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::io::Time;

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// Replica instance (index; Twins give one replica id two instances).
    Replica(usize),
    /// A simulated client.
    Client(usize),
}

/// Link behaviour while faults are active.
#[derive(Clone, Copy, Debug)]
pub struct LinkFaults {
    /// Probability a message is dropped.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Probability a message is held back long enough to be reordered.
    pub reorder: f64,
}

impl LinkFaults {
    /// A perfect network.
    pub const NONE: LinkFaults = LinkFaults {
        drop: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
    };
}

/// Per-kind traffic counters.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// (messages, bytes) by message kind.
    pub by_kind: BTreeMap<&'static str, (u64, u64)>,
}

impl Traffic {
    /// Counts one message.
    pub fn count(&mut self, kind: &'static str, bytes: usize) {
        let entry = self.by_kind.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += bytes as u64;
    }

    /// Total messages.
    pub fn messages(&self) -> u64 {
        self.by_kind.values().map(|(m, _)| m).sum()
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.by_kind.values().map(|(_, b)| b).sum()
    }
}

/// A timed event queue plus the link model.
pub struct Network<E> {
    queue: BTreeMap<(Time, u64), E>,
    counter: u64,
    /// Link faults in force.
    pub faults: LinkFaults,
    /// Base one-way delay range (min, max).
    pub delay: (Time, Time),
    /// Replicas cut off from everyone (by replica id).
    pub isolated: BTreeSet<usize>,
    /// A split: replicas in this set reach only each other, the rest only each other.
    pub split: Option<BTreeSet<usize>>,
    /// Replicas whose links (to and from them) are slower by a factor.
    pub slowdown: BTreeMap<usize, u32>,
}

impl<E> Network<E> {
    /// An empty network.
    pub fn new(delay: (Time, Time)) -> Self {
        Network {
            queue: BTreeMap::new(),
            counter: 0,
            faults: LinkFaults::NONE,
            delay,
            isolated: BTreeSet::new(),
            split: None,
            slowdown: BTreeMap::new(),
        }
    }

    /// Schedules an event at `at`.
    pub fn schedule(&mut self, at: Time, event: E) {
        self.counter += 1;
        self.queue.insert((at, self.counter), event);
    }

    /// Takes the next event in time order.
    pub fn next(&mut self) -> Option<(Time, E)> {
        self.queue.pop_first().map(|((at, _), e)| (at, e))
    }

    /// The delivery times for one message from replica `from` to replica `to` (ids; `None` for
    /// a client end): empty if dropped, two if duplicated.
    pub fn transit(
        &self,
        rng: &mut ChaCha8Rng,
        now: Time,
        from: Option<usize>,
        to: Option<usize>,
    ) -> Vec<Time> {
        let cut = |r: Option<usize>| r.is_some_and(|r| self.isolated.contains(&r));
        if cut(from) || cut(to) {
            return Vec::new();
        }
        if let (Some(side), Some(from), Some(to)) = (&self.split, from, to) {
            if side.contains(&from) != side.contains(&to) {
                return Vec::new();
            }
        }
        if rng.gen_bool(self.faults.drop) {
            return Vec::new();
        }
        let factor = [from, to]
            .iter()
            .flatten()
            .filter_map(|r| self.slowdown.get(r))
            .max()
            .copied()
            .unwrap_or(1);
        let delay = |rng: &mut ChaCha8Rng| {
            let (lo, hi) = self.delay;
            let mut d = (lo + (hi - lo).mul_f64(rng.gen::<f64>())) * factor;
            if rng.gen_bool(self.faults.reorder) {
                d += hi.mul_f64(5.0 * rng.gen::<f64>());
            }
            now + d
        };
        let mut out = vec![delay(rng)];
        if rng.gen_bool(self.faults.duplicate) {
            out.push(delay(rng));
        }
        out
    }
}
