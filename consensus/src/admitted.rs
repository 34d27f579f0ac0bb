//! Requests a replica has already checked on admission. Clients send each request to every
//! replica, so a backup sees it twice: from the client, and again inside the primary's proposal.
//! Remembering what it admitted lets the proposal's copy skip both the payload hash and, in
//! signed mode, the client signature check (in signed mode that second check was half of a
//! backup's CPU per transaction).
//!
//! Reuse is safe because it is decided by equality, not by trust: a proposal's request takes
//! over a remembered verdict only if client, nonce, payload bytes and signature are all the
//! same as those of the request that was checked. A byte comparison of the payload costs a
//! small fraction of hashing it.

use std::collections::{HashMap, VecDeque};

use crate::request::{CheckedRequest, ClientId, Request};

/// What a replica remembers of the requests it admitted, as seen by message verification.
pub trait AdmittedRequests {
    /// The request admitted under this client and nonce, if still remembered.
    ///
    /// Implementations must hold only requests that passed [`Request::check_shape`] and, in
    /// signed mode, whose client signature verified for this replica's cluster: verification
    /// skips the signature check of any request equal to one returned here.
    fn admitted(&self, client: &ClientId, nonce: u64) -> Option<Request>;
}

/// Remembers nothing: every request is hashed and checked in full.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoneAdmitted;

impl AdmittedRequests for NoneAdmitted {
    fn admitted(&self, _client: &ClientId, _nonce: u64) -> Option<Request> {
        None
    }
}

/// Whether `request` is exactly `checked` (client, nonce, payload bytes, signature). If it is,
/// `request` takes over the payload digest `checked` already holds, so it is not computed again.
pub(crate) fn same_as_admitted(request: &Request, checked: &Request) -> bool {
    request.adopt_digest_if_same(checked)
}

/// Memory an entry holds beyond its wire size: the request's struct and cached digest, the
/// key stored twice (map and order), and the map's own slots.
pub const ENTRY_OVERHEAD: usize = 256;

/// What one remembered request counts against the budget.
fn cost(request: &Request) -> usize {
    request.wire_size() + ENTRY_OVERHEAD
}

/// A bounded memory of admitted requests: once it holds more than its byte budget (counted as
/// [`Request::wire_size`] plus [`ENTRY_OVERHEAD`], so that small payloads count for what they
/// really hold), the oldest are forgotten first.
/// Forgetting only costs a full check later, never correctness.
#[derive(Debug)]
pub struct AdmittedCache {
    entries: HashMap<(ClientId, u64), Request>,
    /// Admission order of the keys in `entries`, one each: a re-admitted key keeps its place.
    order: VecDeque<(ClientId, u64)>,
    bytes: usize,
    max_bytes: usize,
}

impl AdmittedCache {
    /// An empty cache holding at most `max_bytes` of requests.
    pub fn new(max_bytes: usize) -> Self {
        AdmittedCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Remembers a request that passed admission (a copy: the payload itself is shared). Its
    /// payload digest is computed here if it was not already, so the caller (off the protocol
    /// thread) pays for it once for every later use. A later request under the same client and
    /// nonce replaces the earlier one.
    pub fn remember(&mut self, checked: CheckedRequest<'_>) {
        let request = checked.request().clone();
        request.payload_digest();
        let key = (request.client, request.nonce);
        self.bytes += cost(&request);
        match self.entries.insert(key, request) {
            Some(replaced) => self.bytes -= cost(&replaced),
            None => self.order.push_back(key),
        }
        while self.bytes > self.max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(forgotten) = self.entries.remove(&oldest) {
                self.bytes -= cost(&forgotten);
            }
        }
    }

    /// The request remembered under this client and nonce.
    pub fn get(&self, client: &ClientId, nonce: u64) -> Option<&Request> {
        self.entries.get(&(*client, nonce))
    }

    /// How many requests are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of requests remembered, as counted against the budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl AdmittedRequests for AdmittedCache {
    fn admitted(&self, client: &ClientId, nonce: u64) -> Option<Request> {
        self.get(client, nonce).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProtocolConfig, RequestAuth};
    use ordinal_crypto::{Digest, KeyPair};

    /// Admits an unsigned request (shape checks only) and remembers it.
    fn remember(cache: &mut AdmittedCache, request: Request) {
        let config = ProtocolConfig {
            request_auth: RequestAuth::Unsigned,
            ..ProtocolConfig::default()
        };
        cache.remember(request.admit(&config, &Digest::of(b"cluster")).unwrap());
    }

    fn client(i: u8) -> ClientId {
        KeyPair::from_seed([i; 32]).public()
    }

    #[test]
    fn equal_requests_share_the_digest_and_different_ones_do_not_match() {
        let checked = Request::unsigned(client(1), 7, vec![1u8; 64]);
        let digest = checked.payload_digest();

        let copy = Request::unsigned(client(1), 7, vec![1u8; 64]);
        assert!(same_as_admitted(&copy, &checked));
        assert_eq!(copy.payload_digest(), digest);

        let other_payload = Request::unsigned(client(1), 7, vec![2u8; 64]);
        assert!(!same_as_admitted(&other_payload, &checked));
        assert_eq!(other_payload.payload_digest(), Digest::of(&[2u8; 64]));

        let other_nonce = Request::unsigned(client(1), 8, vec![1u8; 64]);
        assert!(!same_as_admitted(&other_nonce, &checked));
        let other_client = Request::unsigned(client(2), 7, vec![1u8; 64]);
        assert!(!same_as_admitted(&other_client, &checked));
    }

    #[test]
    fn a_different_signature_does_not_match() {
        let key = KeyPair::from_seed([3; 32]);
        let cluster = Digest::of(b"cluster");
        let signed = Request::signed(&key, &cluster, 1, vec![5u8; 16]);
        let mut forged = Request::signed(&key, &Digest::of(b"another cluster"), 1, vec![5u8; 16]);
        assert!(!same_as_admitted(&forged, &signed));
        forged.signature = None;
        assert!(!same_as_admitted(&forged, &signed));
    }

    #[test]
    fn the_cache_forgets_oldest_first_within_its_budget() {
        let size = cost(&Request::unsigned(client(1), 0, vec![0u8; 100]));
        let mut cache = AdmittedCache::new(3 * size);
        for nonce in 0..5 {
            remember(&mut cache, Request::unsigned(client(1), nonce, vec![0u8; 100]));
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.bytes(), 3 * size);
        assert!(cache.get(&client(1), 0).is_none());
        assert!(cache.get(&client(1), 1).is_none());
        assert!(cache.get(&client(1), 4).is_some());
        // Remembered requests carry their digest already.
        let kept = cache
            .admitted(&client(1), 2)
            .expect("nonce 2 is among the newest three");
        assert!(kept.has_payload_digest());
    }

    #[test]
    fn re_admitting_a_key_replaces_it_without_growing() {
        let mut cache = AdmittedCache::new(1 << 20);
        for round in 0..100u8 {
            remember(&mut cache, Request::unsigned(client(1), 9, vec![round; 32]));
        }
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.order.len(), 1);
        assert_eq!(
            cache.bytes(),
            cost(&Request::unsigned(client(1), 9, vec![0u8; 32]))
        );
        assert_eq!(cache.get(&client(1), 9).map(|r| r.payload()[0]), Some(99));
    }

    #[test]
    fn a_request_larger_than_the_budget_is_not_kept() {
        let mut cache = AdmittedCache::new(10);
        remember(&mut cache, Request::unsigned(client(1), 1, vec![0u8; 100]));
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }
}
