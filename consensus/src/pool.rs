//! Requests waiting to be ordered. Shared by both protocols: PBFT's primary drains a queue in
//! arrival order; the linear mode's leader of the moment takes the oldest requests its chain
//! does not already carry. Bounded by `max_pending_requests` and `max_pending_bytes`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::batch::Batch;
use crate::config::ProtocolConfig;
use crate::error::Invalid;
use crate::io::Time;
use crate::request::{ClientTable, Request, RequestKey, Seen};

#[derive(Clone, Debug)]
struct PendingRequest {
    request: Request,
    arrival: (Time, u64),
    proposed: bool,
}

/// The requests a replica holds until some batch orders them.
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestPool {
    pending: HashMap<RequestKey, PendingRequest>,
    /// Arrival order (time, then a counter), for timeouts and fair batching.
    arrivals: BTreeMap<(Time, u64), RequestKey>,
    arrival_counter: u64,
    /// The proposer's queue (PBFT): keys in arrival order, possibly already ordered ones, which
    /// [`RequestPool::take_batch`] skips.
    queue: VecDeque<RequestKey>,
    /// Payload bytes of the waiting requests.
    bytes: usize,
}

impl RequestPool {
    /// Requests waiting.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Keys in the proposer's queue.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn contains(&self, key: &RequestKey) -> bool {
        self.pending.contains_key(key)
    }

    pub(crate) fn get(&self, key: &RequestKey) -> Option<&Request> {
        self.pending.get(key).map(|p| &p.request)
    }

    /// Payload bytes waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a request that is not waiting yet; refuses when the pool is full, by count or by
    /// payload bytes.
    pub(crate) fn insert(
        &mut self,
        key: RequestKey,
        request: Request,
        now: Time,
        config: &ProtocolConfig,
    ) -> Result<(), Invalid> {
        let size = request.payload().len();
        if self.pending.len() >= config.max_pending_requests || self.bytes + size > config.max_pending_bytes {
            return Err(Invalid::Overloaded);
        }
        self.bytes += size;
        self.arrival_counter += 1;
        let arrival = (now, self.arrival_counter);
        self.arrivals.insert(arrival, key);
        let replaced = self.pending.insert(
            key,
            PendingRequest {
                request,
                arrival,
                proposed: false,
            },
        );
        // Callers insert only keys that are not waiting; should one slip through, the older
        // copy must not stay counted.
        if let Some(old) = replaced {
            self.arrivals.remove(&old.arrival);
            self.bytes -= old.request.payload().len();
        }
        Ok(())
    }

    /// Puts a waiting request in the proposer's queue.
    pub(crate) fn enqueue(&mut self, key: RequestKey) {
        self.queue.push_back(key);
    }

    pub(crate) fn queue_is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn clear_queue(&mut self) {
        self.queue.clear();
    }

    /// Queues every waiting request again, in arrival order: a new proposer starts over.
    pub(crate) fn requeue_all(&mut self) {
        self.queue.clear();
        for key in self.arrivals.values() {
            if let Some(pending) = self.pending.get_mut(key) {
                pending.proposed = false;
                self.queue.push_back(*key);
            }
        }
    }

    /// The next batch from the queue: requests in queue order, within the batch limits, each
    /// proposed at most once per queue pass.
    pub(crate) fn take_batch(&mut self, config: &ProtocolConfig) -> Batch {
        let mut requests = Vec::new();
        let mut bytes = 0usize;
        if self.queue.len() > 2 * self.pending.len() + config.max_batch_requests {
            // Drop keys ordered meanwhile, so the queue stays proportional to what waits.
            let pending = &self.pending;
            self.queue
                .retain(|key| pending.get(key).is_some_and(|p| !p.proposed));
        }
        while let Some(key) = self.queue.front().copied() {
            let Some(pending) = self.pending.get_mut(&key) else {
                self.queue.pop_front();
                continue;
            };
            if pending.proposed {
                self.queue.pop_front();
                continue;
            }
            let size = pending.request.payload().len();
            if requests.len() >= config.max_batch_requests
                || (bytes + size > config.max_batch_bytes && !requests.is_empty())
            {
                break;
            }
            self.queue.pop_front();
            pending.proposed = true;
            bytes += size;
            requests.push(pending.request.clone());
        }
        Batch::new(requests)
    }

    /// The oldest waiting requests, within the batch limits, leaving out those in `exclude`
    /// (already carried by blocks not yet committed). The pool is unchanged: a request stays
    /// until a committed batch orders it, so a block lost to a view change costs nothing.
    pub(crate) fn oldest_batch(&self, config: &ProtocolConfig, exclude: &HashSet<RequestKey>) -> Batch {
        let mut requests = Vec::new();
        let mut bytes = 0usize;
        for key in self.arrivals.values() {
            if exclude.contains(key) {
                continue;
            }
            let Some(pending) = self.pending.get(key) else {
                continue;
            };
            let size = pending.request.payload().len();
            if requests.len() >= config.max_batch_requests
                || (bytes + size > config.max_batch_bytes && !requests.is_empty())
            {
                break;
            }
            bytes += size;
            requests.push(pending.request.clone());
        }
        Batch::new(requests)
    }

    /// Whether some waiting request is not in `exclude`.
    pub(crate) fn has_unproposed(&self, exclude: &HashSet<RequestKey>) -> bool {
        self.pending.len() > exclude.len() || self.pending.keys().any(|key| !exclude.contains(key))
    }

    /// A batch ordered `key`: it no longer waits.
    pub(crate) fn remove(&mut self, key: &RequestKey) {
        if let Some(pending) = self.pending.remove(key) {
            self.arrivals.remove(&pending.arrival);
            self.bytes -= pending.request.payload().len();
        }
    }

    /// Drops waiting requests that some batch has ordered meanwhile or that fell out of their
    /// client's nonce window: they must not make this replica suspect the leader.
    pub(crate) fn purge(&mut self, clients: &ClientTable) {
        let arrivals = &mut self.arrivals;
        let bytes = &mut self.bytes;
        self.pending.retain(|key, pending| {
            let keep = clients.check(key) == Seen::New;
            if !keep {
                arrivals.remove(&pending.arrival);
                *bytes -= pending.request.payload().len();
            }
            keep
        });
    }

    /// When the oldest waiting request arrived.
    pub(crate) fn oldest_arrival(&self) -> Option<Time> {
        self.arrivals.keys().next().map(|(time, _)| *time)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::RequestAuth;
    use ordinal_crypto::PublicKey;

    fn request(nonce: u64, bytes: usize) -> (RequestKey, Request) {
        let request = Request::unsigned(PublicKey([7; 32]), nonce, vec![1; bytes]);
        (request.key(RequestAuth::Unsigned), request)
    }

    #[test]
    fn the_pool_is_bounded_by_count_and_by_bytes_and_counts_what_leaves() {
        let config = ProtocolConfig {
            max_pending_requests: 3,
            max_pending_bytes: 1000,
            max_request_bytes: 600,
            ..ProtocolConfig::default()
        };
        let mut pool = RequestPool::default();
        let (a, ra) = request(1, 600);
        let (b, rb) = request(2, 600);
        pool.insert(a, ra, Time::ZERO, &config).unwrap();
        // 1200 bytes would pass max_pending_bytes.
        assert_eq!(
            pool.insert(b, rb.clone(), Time::ZERO, &config),
            Err(Invalid::Overloaded)
        );
        assert_eq!(pool.bytes(), 600);
        pool.remove(&a);
        assert_eq!((pool.len(), pool.bytes()), (0, 0));
        pool.insert(b, rb, Time::ZERO, &config).unwrap();
        for nonce in 3..5 {
            let (k, r) = request(nonce, 10);
            pool.insert(k, r, Time::ZERO, &config).unwrap();
        }
        assert_eq!((pool.len(), pool.bytes()), (3, 620));
        // Full by count.
        let (k, r) = request(9, 1);
        assert_eq!(pool.insert(k, r, Time::ZERO, &config), Err(Invalid::Overloaded));
        // Purged requests (ordered meanwhile) leave the byte count too.
        let mut clients = ClientTable::new(16);
        clients.record(&b, crate::request::Position { seq: 1, index: 0 });
        pool.purge(&clients);
        assert_eq!((pool.len(), pool.bytes()), (2, 20));
    }
}
