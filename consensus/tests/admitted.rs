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

fn admitted(requests: &[Request]) -> AdmittedCache {
    let mut cache = AdmittedCache::new(1 << 20);
    for request in requests {
        cache.remember(request.clone());
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
        let cache = admitted(&requests[..known]);
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
    let cache = admitted(std::slice::from_ref(&genuine));
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
    let cache = admitted(&[Request::unsigned(key, 4, vec![1u8; 64])]);
    let proposed = Request::unsigned(key, 4, vec![2u8; 64]);
    let message = pre_prepare(&committee, vec![proposed.clone()]);
    let VerifiedMessage::PrePrepare { batch, .. } = message.verify_with(&committee, &config, &cache).unwrap()
    else {
        panic!("a PRE-PREPARE verifies as one");
    };
    assert_eq!(batch.requests()[0].payload_digest(), Digest::of(&[2u8; 64]));
    assert_eq!(batch.digest(), Batch::new(vec![proposed]).digest());
}

/// What the cache saves, shown with one that breaks its contract by holding a request whose
/// signature does not verify: a proposal carrying that very request is accepted, because its
/// check is skipped. (A replica's cache holds only requests that passed admission.)
#[test]
fn the_signature_check_is_skipped_for_an_identical_admitted_request() {
    let committee = committee(4).unwrap();
    let config = signed_mode();
    let bad = forged(2, 3);
    let message = pre_prepare(&committee, vec![bad.clone()]);
    assert!(message
        .clone()
        .verify_with(&committee, &config, &admitted(&[bad]))
        .is_ok());
    assert_eq!(
        verdict(message.verify_with(&committee, &config, &NoneAdmitted)),
        Err("bad_client_signature".into())
    );
}

#[test]
fn the_cache_answers_through_the_trait() {
    let committee = committee(4).unwrap();
    let genuine = request(&committee, 5, 11);
    let cache = admitted(std::slice::from_ref(&genuine));
    let reader: &dyn AdmittedRequests = &cache;
    assert_eq!(reader.admitted(&genuine.client, 11), Some(genuine.clone()));
    assert_eq!(reader.admitted(&genuine.client, 12), None);
    assert_eq!(NoneAdmitted.admitted(&genuine.client, 11), None);
}
