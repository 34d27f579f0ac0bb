//! Proposals checked against the requests a replica admitted: the same verdicts as a full
//! check, with the repeated work skipped only for requests identical to admitted ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ordinal_consensus::messages::{Message, Proposal};
use ordinal_consensus::sim::{committee, replica_key};
use ordinal_consensus::{
    AdmittedCache, AdmittedRequests, Batch, Invalid, NoneAdmitted, ProtocolConfig, Request, RequestAuth,
    VerifiedMessage,
};
use ordinal_crypto::{Committee, Digest, KeyPair, ReplicaId, Signed};

fn signed_mode() -> ProtocolConfig {
    ProtocolConfig {
        request_auth: RequestAuth::Signed,
        ..ProtocolConfig::default()
    }
}

fn client(i: u8) -> KeyPair {
    KeyPair::from_seed([100 + i; 32])
}

fn request(committee: &Committee, i: u8, nonce: u64) -> Request {
    Request::signed(&client(i), &committee.cluster_id(), nonce, vec![i; 512])
}

/// A request whose signature is over another cluster's bytes: well formed, but invalid here.
fn forged(i: u8, nonce: u64) -> Request {
    Request::signed(
        &client(i),
        &Digest::of(b"some other cluster"),
        nonce,
        vec![i; 512],
    )
}

/// The primary's PRE-PREPARE of `requests`, as a backup decodes it from the wire.
fn pre_prepare(committee: &Committee, requests: Vec<Request>) -> Message {
    let batch = Batch::new(requests);
    let proposal = Signed::sign(
        Proposal {
            view: 0,
            seq: 1,
            digest: batch.digest(),
        },
        ReplicaId(0),
        &replica_key(0),
        committee,
    );
    Message::decode(&Message::PrePrepare { proposal, batch }.encode()).unwrap()
}

/// A cache holding `requests`, each admitted as a replica of `committee` admits it.
fn admitted(committee: &Committee, config: &ProtocolConfig, requests: &[Request]) -> AdmittedCache {
    let mut cache = AdmittedCache::new(1 << 20);
    for request in requests {
        cache.remember(request.admit(config, &committee.cluster_id()).unwrap());
    }
    cache
}

fn verdict(result: Result<VerifiedMessage, Invalid>) -> Result<(), String> {
    result.map(|_| ()).map_err(|e| e.reason().to_string())
}

#[test]
fn admitted_requests_verify_as_a_full_check_does() {
    let committee = committee(4).unwrap();
    let config = signed_mode();
    let requests: Vec<Request> = (0..5).map(|i| request(&committee, i, 1)).collect();
    let message = pre_prepare(&committee, requests.clone());

    // All admitted, some admitted, none admitted: each accepted, as without a cache.
    for known in [5, 2, 0] {
        let cache = admitted(&committee, &config, &requests[..known]);
        let verified = message.clone().verify_with(&committee, &config, &cache).unwrap();
        let VerifiedMessage::PrePrepare { batch, .. } = verified else {
            panic!("a PRE-PREPARE verifies as one");
        };
        assert_eq!(batch.requests().len(), 5);
    }
    assert!(message.verify(&committee, &config).is_ok());
}

#[test]
fn a_forged_request_under_an_admitted_nonce_is_still_refused() {
    let committee = committee(4).unwrap();
    let config = signed_mode();
    let genuine = request(&committee, 1, 7);
    let cache = admitted(&committee, &config, std::slice::from_ref(&genuine));
    // Same client and nonce, different signature: no match, so the signature is checked.
    let message = pre_prepare(&committee, vec![request(&committee, 0, 1), forged(1, 7)]);
    assert_eq!(
        verdict(message.clone().verify_with(&committee, &config, &cache)),
        Err("bad_client_signature".into())
    );
    assert_eq!(
        verdict(message.verify(&committee, &config)),
        Err("bad_client_signature".into())
    );

    // Same client, nonce and signature but another payload: no match either (the signature
    // covers the payload's digest, so this one is invalid).
    let mut tampered = Request::unsigned(genuine.client, genuine.nonce, vec![9u8; 512]);
    tampered.signature = genuine.signature;
    let message = pre_prepare(&committee, vec![tampered]);
    assert_eq!(
        verdict(message.verify_with(&committee, &config, &cache)),
        Err("bad_client_signature".into())
    );
}

#[test]
fn a_payload_other_than_the_admitted_one_is_hashed_for_the_digest() {
    let committee = committee(4).unwrap();
    // Unsigned mode: the same client and nonce may carry different payloads.
    let config = ProtocolConfig {
        request_auth: RequestAuth::Unsigned,
        ..ProtocolConfig::default()
    };
    let key = client(3).public();
    let cache = admitted(&committee, &config, &[Request::unsigned(key, 4, vec![1u8; 64])]);
    let proposed = Request::unsigned(key, 4, vec![2u8; 64]);
    let message = pre_prepare(&committee, vec![proposed.clone()]);
    let VerifiedMessage::PrePrepare { batch, .. } = message.verify_with(&committee, &config, &cache).unwrap()
    else {
        panic!("a PRE-PREPARE verifies as one");
    };
    assert_eq!(batch.requests()[0].payload_digest(), Digest::of(&[2u8; 64]));
    assert_eq!(batch.digest(), Batch::new(vec![proposed]).digest());
}

/// An `AdmittedRequests` that breaks the contract: it answers with a request nobody checked.
struct Unchecked(Request);

impl AdmittedRequests for Unchecked {
    fn admitted(&self, client: &ordinal_crypto::PublicKey, nonce: u64) -> Option<Request> {
        (self.0.client == *client && self.0.nonce == nonce).then(|| self.0.clone())
    }
}

/// What the cache saves, shown with a memory that breaks its contract by holding a request
/// whose signature does not verify: a proposal carrying that very request is accepted, because
/// its check is skipped. (`AdmittedCache` only takes requests that passed `Request::admit`.)
#[test]
fn the_signature_check_is_skipped_for_an_identical_admitted_request() {
    let committee = committee(4).unwrap();
    let config = signed_mode();
    let bad = forged(2, 3);
    let message = pre_prepare(&committee, vec![bad.clone()]);
    assert!(message
        .clone()
        .verify_with(&committee, &config, &Unchecked(bad))
        .is_ok());
    assert_eq!(
        verdict(message.verify_with(&committee, &config, &NoneAdmitted)),
        Err("bad_client_signature".into())
    );
}

#[test]
fn admission_refuses_what_a_full_check_refuses() {
    let committee = committee(4).unwrap();
    let cluster = committee.cluster_id();
    let config = signed_mode();
    let reason = |request: &Request, config: &ProtocolConfig| {
        request
            .admit(config, &cluster)
            .map(|_| ())
            .map_err(|e| e.reason())
    };
    assert_eq!(reason(&request(&committee, 1, 1), &config), Ok(()));
    assert_eq!(reason(&forged(1, 1), &config), Err("bad_client_signature"));
    let unsigned = Request::unsigned(client(1).public(), 1, vec![1u8; 16]);
    assert_eq!(reason(&unsigned, &config), Err(Invalid::UnsignedRequest.reason()));
    let small = ProtocolConfig {
        max_request_bytes: 100,
        ..signed_mode()
    };
    assert!(
        reason(&request(&committee, 1, 2), &small).is_err(),
        "512 B over a 100 B limit"
    );
    // In unsigned mode only the shape is checked: the forged signature is not looked at.
    let unsigned_mode = ProtocolConfig {
        request_auth: RequestAuth::Unsigned,
        ..ProtocolConfig::default()
    };
    assert_eq!(reason(&forged(1, 1), &unsigned_mode), Ok(()));
    assert_eq!(reason(&unsigned, &unsigned_mode), Ok(()));
}

#[test]
fn admitting_together_gives_each_request_its_own_verdict() {
    let committee = committee(4).unwrap();
    let cluster = committee.cluster_id();
    let config = ProtocolConfig {
        max_request_bytes: 600,
        ..signed_mode()
    };
    let oversized = Request::signed(&client(4), &cluster, 1, vec![4u8; 601]);
    let requests = [
        request(&committee, 0, 1),
        forged(1, 1),
        request(&committee, 2, 1),
        Request::unsigned(client(3).public(), 1, vec![3u8; 16]),
        oversized,
        request(&committee, 5, 1),
    ];
    let refs: Vec<&Request> = requests.iter().collect();
    let together: Vec<Result<(), &str>> = Request::admit_all(&refs, &config, &cluster)
        .into_iter()
        .map(|r| r.map(|_| ()).map_err(|e| e.reason()))
        .collect();
    let alone: Vec<Result<(), &str>> = requests
        .iter()
        .map(|r| r.admit(&config, &cluster).map(|_| ()).map_err(|e| e.reason()))
        .collect();
    assert_eq!(together, alone);
    assert_eq!(
        together.iter().map(Result::is_ok).collect::<Vec<_>>(),
        [true, false, true, false, false, true]
    );
    assert!(Request::admit_all(&[], &config, &cluster).is_empty());
}

#[test]
fn the_cache_answers_through_the_trait() {
    let committee = committee(4).unwrap();
    let genuine = request(&committee, 5, 11);
    let cache = admitted(&committee, &signed_mode(), std::slice::from_ref(&genuine));
    let reader: &dyn AdmittedRequests = &cache;
    assert_eq!(reader.admitted(&genuine.client, 11), Some(genuine.clone()));
    assert_eq!(reader.admitted(&genuine.client, 12), None);
    assert_eq!(NoneAdmitted.admitted(&genuine.client, 11), None);
}
