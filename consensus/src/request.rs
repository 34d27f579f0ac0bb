//! Client requests, their authentication, and the table that orders each request at most once.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use bytes::Bytes;
use ordinal_crypto::{verify_signatures, Digest, PublicKey, Signature, SignatureCheck, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::config::{ProtocolConfig, RequestAuth};
use crate::error::Invalid;

/// A client's identity: its ed25519 public key. In unsigned mode it is whatever the transport
/// authenticated the connection as.
pub type ClientId = PublicKey;

const REQUEST_DOMAIN: &[u8] = b"ordinal/request/v1";

/// One client transaction: opaque bytes with the client's id and a per-client nonce.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    /// Who sent it.
    pub client: ClientId,
    /// Chosen by the client, unique per client for distinct transactions; a retry reuses it.
    pub nonce: u64,
    /// The transaction. Private, and set only when the request is made or decoded, so that
    /// its cached digest can never go stale. Shared, not copied, by the clones a replica makes
    /// (pool, batch, log, receipts): on the wire it is the same byte string as a `Vec<u8>`.
    payload: Bytes,
    /// The client's signature over (nonce, payload digest), required in signed mode.
    pub signature: Option<Signature>,
    /// SHA3-256 of the payload, computed at most once. A replica needs it at admission (the
    /// de-duplication key), in the batch digest (proposer and every verifier), at execution
    /// and for receipts: hashing the payload each time was the largest CPU cost in profiles.
    #[serde(skip)]
    payload_digest: OnceLock<Digest>,
}

impl PartialEq for Request {
    fn eq(&self, other: &Self) -> bool {
        // The cache is not part of the request's value.
        self.client == other.client
            && self.nonce == other.nonce
            && self.payload == other.payload
            && self.signature == other.signature
    }
}

impl Eq for Request {}

/// The bytes a client signs: domain tag, cluster id, nonce and the payload's digest (so the
/// signature cost does not grow with the payload).
pub fn request_signing_bytes(cluster_id: &Digest, nonce: u64, payload_digest: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUEST_DOMAIN.len() + 72);
    out.extend_from_slice(REQUEST_DOMAIN);
    out.extend_from_slice(cluster_id.as_bytes());
    out.extend_from_slice(&nonce.to_le_bytes());
    out.extend_from_slice(payload_digest.as_bytes());
    out
}

impl Request {
    /// A signed request.
    pub fn signed(
        key: &ordinal_crypto::KeyPair,
        cluster_id: &Digest,
        nonce: u64,
        payload: impl Into<Bytes>,
    ) -> Self {
        let payload = payload.into();
        let digest = Digest::of(&payload);
        let signature = key.sign_raw(&request_signing_bytes(cluster_id, nonce, &digest));
        Request {
            client: key.public(),
            nonce,
            payload,
            signature: Some(signature),
            payload_digest: OnceLock::from(digest),
        }
    }

    /// An unsigned request, for clients authenticated by their connection.
    pub fn unsigned(client: ClientId, nonce: u64, payload: impl Into<Bytes>) -> Self {
        Request {
            client,
            nonce,
            payload: payload.into(),
            signature: None,
            payload_digest: OnceLock::new(),
        }
    }

    /// The transaction's bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The transaction's bytes, taken out of the request.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// SHA3-256 of the payload alone: what `ordinal submit` prints and receipts name.
    pub fn payload_digest(&self) -> Digest {
        *self.payload_digest.get_or_init(|| Digest::of(&self.payload))
    }

    /// Whether this request is exactly `other` (client, nonce, payload bytes, signature). If it
    /// is, it takes over the payload digest `other` already computed: the same bytes, so the
    /// same digest, and one comparison decides both.
    pub(crate) fn adopt_digest_if_same(&self, other: &Request) -> bool {
        if self != other {
            return false;
        }
        if let Some(digest) = other.payload_digest.get() {
            // Already set means already equal: both are the digest of the same bytes.
            let _ = self.payload_digest.set(*digest);
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn has_payload_digest(&self) -> bool {
        self.payload_digest.get().is_some()
    }

    /// The digest of the whole request (client, nonce, payload, signature): the Merkle leaf that
    /// a receipt proves.
    pub fn digest(&self) -> Digest {
        let sig: &[u8] = match &self.signature {
            Some(s) => &s.0,
            None => &[],
        };
        Digest::of_parts(&[
            b"ordinal/request-leaf/v1",
            &self.client.0,
            &self.nonce.to_le_bytes(),
            self.payload_digest().as_bytes(),
            sig,
        ])
    }

    /// The key under which the request is ordered at most once. Signed mode: (client, nonce),
    /// because only the client can sign for its nonce. Unsigned mode: (client, nonce, payload
    /// digest), because anyone who can reach the primary (a Byzantine primary included) could
    /// otherwise put garbage under another client's nonce and suppress the real request.
    pub fn key(&self, auth: RequestAuth) -> RequestKey {
        RequestKey {
            client: self.client,
            nonce: self.nonce,
            payload: match auth {
                RequestAuth::Signed => None,
                RequestAuth::Unsigned => Some(self.payload_digest()),
            },
        }
    }

    /// Encoded size, for batch limits.
    pub fn wire_size(&self) -> usize {
        // client + nonce + length prefix + payload + signature tag and bytes.
        32 + 10 + 5 + self.payload.len() + 65
    }

    /// Checks size limits and, in signed mode, that the request carries a signature (the
    /// signature itself is checked by [`verify_requests`]).
    pub fn check_shape(&self, config: &ProtocolConfig) -> Result<(), Invalid> {
        if self.payload.len() > config.max_request_bytes {
            return Err(Invalid::RequestTooLarge {
                bytes: self.payload.len(),
                limit: config.max_request_bytes,
            });
        }
        if config.request_auth == RequestAuth::Signed && self.signature.is_none() {
            return Err(Invalid::UnsignedRequest);
        }
        Ok(())
    }
}

/// A request that passed a replica's admission checks: [`Request::check_shape`] and, in signed
/// mode, its client signature for this cluster. Only [`Request::admit`] (and
/// [`Request::admit_all`]) make one, so a memory of admitted requests
/// ([`crate::admitted::AdmittedCache`]) cannot be handed one that skipped admission. It does not
/// record the mode or cluster it was checked under: a replica keeps that memory only in signed
/// mode and admits with its own cluster id (as the node does).
#[derive(Clone, Copy, Debug)]
pub struct CheckedRequest<'a>(&'a Request);

impl<'a> CheckedRequest<'a> {
    /// The request that was checked.
    pub fn request(&self) -> &'a Request {
        self.0
    }
}

impl Request {
    /// Admission's checks on a request arriving from a client: size and signature presence
    /// ([`Request::check_shape`]) and, in signed mode, the client's key and signature (the same
    /// rule as [`verify_requests`]).
    pub fn admit(&self, config: &ProtocolConfig, cluster_id: &Digest) -> Result<CheckedRequest<'_>, Invalid> {
        // One implementation of admission: a group of one.
        Self::admit_all(&[self], config, cluster_id)
            .pop()
            .unwrap_or(Err(Invalid::BadClientSignature))
    }

    /// [`Request::admit`] for many requests, with their signatures checked together (one
    /// batch check; the verdict on each is the one it gets alone). Results are in order.
    pub fn admit_all<'a>(
        requests: &[&'a Request],
        config: &ProtocolConfig,
        cluster_id: &Digest,
    ) -> Vec<Result<CheckedRequest<'a>, Invalid>> {
        let mut results: Vec<Result<CheckedRequest<'a>, Invalid>> = requests
            .iter()
            .map(|request| request.check_shape(config).map(|()| CheckedRequest(request)))
            .collect();
        let shaped: Vec<usize> = (0..requests.len()).filter(|&i| results[i].is_ok()).collect();
        let to_verify: Vec<&Request> = shaped.iter().map(|&i| requests[i]).collect();
        for bad in verify_requests(&to_verify, cluster_id, config.request_auth) {
            results[shaped[bad]] = Err(Invalid::BadClientSignature);
        }
        results
    }
}

/// Verifies the signatures of many requests at once (one batch check). Returns the indexes of
/// requests whose client key or signature is bad. Does nothing in unsigned mode.
pub fn verify_requests(requests: &[&Request], cluster_id: &Digest, auth: RequestAuth) -> Vec<usize> {
    if auth == RequestAuth::Unsigned {
        return Vec::new();
    }
    let mut bad = Vec::new();
    let mut keys: Vec<(usize, VerifyingKey, Vec<u8>, Signature)> = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        match (r.client.decode(), r.signature) {
            (Ok(key), Some(signature)) => {
                let bytes = request_signing_bytes(cluster_id, r.nonce, &r.payload_digest());
                keys.push((i, key, bytes, signature));
            }
            _ => bad.push(i),
        }
    }
    let checks: Vec<SignatureCheck> = keys
        .iter()
        .map(|(_, key, message, signature)| SignatureCheck {
            key,
            message,
            signature,
        })
        .collect();
    bad.extend(verify_signatures(&checks).into_iter().map(|j| keys[j].0));
    bad.sort_unstable();
    bad
}

/// The de-duplication key of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestKey {
    /// The client.
    pub client: ClientId,
    /// Its nonce.
    pub nonce: u64,
    /// The payload digest, in unsigned mode only.
    pub payload: Option<Digest>,
}

/// Where a request was ordered: batch sequence number and index inside the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Batch sequence number.
    pub seq: u64,
    /// Index in the batch.
    pub index: u32,
}

/// What the table says of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Never ordered: may be ordered now.
    New,
    /// Already ordered at this position.
    Ordered(Position),
    /// Its nonce fell out of the client's window; it can no longer be told apart from a
    /// replay, so it is refused.
    Stale,
}

#[derive(Clone, Debug, Default)]
struct ClientWindow {
    highest_nonce: u64,
    /// Nonces at or below this were evicted by the entry cap and are refused as stale, so an
    /// evicted request can never read as new again.
    floor: Option<u64>,
    ordered: BTreeMap<(u64, Option<Digest>), Position>,
}

/// Per client, the positions of the requests ordered within a sliding window of nonces.
///
/// Memory per client is bounded by the window; requests whose nonce is more than the window
/// below the client's highest ordered nonce are refused as stale. A client that pipelines fewer
/// than `window` requests at a time never sees that. The table is part of the replicated state:
/// every correct replica applies the same batches in the same order, so all make the same
/// decisions.
#[derive(Clone, Debug)]
pub struct ClientTable {
    window: u64,
    // Unsigned mode can hold several payloads per nonce; cap each client's entries.
    max_entries: usize,
    clients: HashMap<ClientId, ClientWindow>,
}

impl ClientTable {
    /// An empty table with the given nonce window.
    pub fn new(window: u64) -> Self {
        ClientTable {
            window: window.max(1),
            max_entries: (window.max(1) as usize).saturating_mul(2),
            clients: HashMap::new(),
        }
    }

    /// Looks a request up without changing anything.
    pub fn check(&self, key: &RequestKey) -> Seen {
        let Some(client) = self.clients.get(&key.client) else {
            return Seen::New;
        };
        if client.highest_nonce >= self.window && key.nonce <= client.highest_nonce - self.window {
            return Seen::Stale;
        }
        if client.floor.is_some_and(|floor| key.nonce <= floor) {
            return Seen::Stale;
        }
        match client.ordered.get(&(key.nonce, key.payload)) {
            Some(position) => Seen::Ordered(*position),
            None => Seen::New,
        }
    }

    /// Records an ordered request; returns false (and records nothing) if it was not new.
    pub fn record(&mut self, key: &RequestKey, position: Position) -> bool {
        if self.check(key) != Seen::New {
            return false;
        }
        let window = self.window;
        let max_entries = self.max_entries;
        let client = self.clients.entry(key.client).or_default();
        client.ordered.insert((key.nonce, key.payload), position);
        if key.nonce > client.highest_nonce {
            client.highest_nonce = key.nonce;
            if client.highest_nonce >= window {
                let floor = client.highest_nonce - window;
                client.ordered = client.ordered.split_off(&(floor + 1, None));
            }
        }
        while client.ordered.len() > max_entries {
            if let Some(((nonce, _), _)) = client.ordered.pop_first() {
                client.floor = Some(client.floor.map_or(nonce, |f| f.max(nonce)));
            }
        }
        true
    }

    /// How many entries the table holds (for the memory bound).
    pub fn entries(&self) -> usize {
        self.clients.values().map(|c| c.ordered.len()).sum()
    }

    /// How many clients it tracks.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordinal_crypto::KeyPair;

    #[test]
    fn window_orders_once_and_refuses_stale() {
        let client = KeyPair::from_seed([1; 32]).public();
        let mut table = ClientTable::new(4);
        let key = |nonce| RequestKey {
            client,
            nonce,
            payload: None,
        };
        let at = |seq| Position { seq, index: 0 };
        assert!(table.record(&key(1), at(1)));
        assert!(!table.record(&key(1), at(2)));
        assert_eq!(table.check(&key(1)), Seen::Ordered(at(1)));
        for n in 2..=10 {
            assert!(table.record(&key(n), at(n)));
        }
        assert_eq!(table.check(&key(6)), Seen::Stale);
        assert_eq!(table.check(&key(7)), Seen::Ordered(at(7)));
        assert!(table.entries() <= 4);
    }

    #[test]
    fn unsigned_mode_cannot_be_squatted() {
        let client = KeyPair::from_seed([1; 32]).public();
        let real = Request::unsigned(client, 5, b"real".to_vec());
        let squat = Request::unsigned(client, 5, b"garbage".to_vec());
        let mut table = ClientTable::new(16);
        assert!(table.record(&squat.key(RequestAuth::Unsigned), Position { seq: 1, index: 0 }));
        assert_eq!(table.check(&real.key(RequestAuth::Unsigned)), Seen::New);
        // In signed mode the same nonce is one slot, which is safe because only the client signs.
        assert_ne!(
            table.check(&real.key(RequestAuth::Signed)),
            Seen::Ordered(Position { seq: 1, index: 0 })
        );
    }

    #[test]
    fn request_signatures() {
        let cluster = Digest::of(b"c");
        let key = KeyPair::from_seed([3; 32]);
        let good = Request::signed(&key, &cluster, 1, b"tx".to_vec());
        // Another payload under the good request's signature.
        let mut forged = Request::unsigned(key.public(), 1, b"other".to_vec());
        forged.signature = good.signature;
        let mut other_cluster = Request::signed(&key, &Digest::of(b"d"), 1, b"tx".to_vec());
        other_cluster.nonce = 1;
        let unsigned = Request::unsigned(key.public(), 2, b"tx".to_vec());
        let all = [&good, &forged, &other_cluster, &unsigned];
        assert_eq!(
            verify_requests(&all, &cluster, RequestAuth::Signed),
            vec![1, 2, 3]
        );
        assert!(verify_requests(&all, &cluster, RequestAuth::Unsigned).is_empty());
    }
}
