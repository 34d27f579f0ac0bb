//! TLS identities for the QUIC transport, derived from the ed25519 keys the cluster already
//! pins: each endpoint presents a self-signed certificate for its own key, and the other side
//! accepts it only if the key inside is the one it expects. No certificate authority is
//! involved; the cluster configuration is the trust root.
//!
//! - A replica dialling replica `i` (server name `replica-i`) accepts only replica `i`'s key.
//! - A replica accepting a connection requires a client certificate (TLS 1.3 proves possession
//!   of its key) and reports who it is: a replica of the committee, or a client identified by
//!   its key. Clients without a long-term key present a fresh one.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::{Committee, KeyPair, PublicKey, ReplicaId};

/// ALPN protocol id of Ordinal's transport.
pub const ALPN: &[u8] = b"ordinal/1";

/// Why a TLS identity could not be built or checked.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server name under which replica `id` is dialled.
pub fn server_name(id: ReplicaId) -> String {
    format!("replica-{}", id.0)
}

fn replica_of_server_name(name: &ServerName<'_>) -> Option<ReplicaId> {
    let ServerName::DnsName(dns) = name else {
        return None;
    };
    dns.as_ref().strip_prefix("replica-")?.parse().ok().map(ReplicaId)
}

/// A certificate and private key for `key`, ready for rustls.
pub struct Identity {
    /// The self-signed certificate.
    pub certificate: CertificateDer<'static>,
    /// The private key (PKCS#8).
    pub private_key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

impl Identity {
    /// A self-signed certificate over `key`'s public key.
    pub fn new(key: &KeyPair, name: &str) -> Result<Self, TlsError> {
        // PKCS#8 v1 (RFC 8410) of an ed25519 seed: a fixed prefix, then the 32 bytes.
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&key.secret_bytes());
        let der = PrivatePkcs8KeyDer::from(pkcs8);
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let params = rcgen::CertificateParams::new(vec![name.to_string()])
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let certificate = params
            .self_signed(&key_pair)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Identity {
            certificate: certificate.der().clone(),
            private_key: PrivateKeyDer::Pkcs8(der),
        })
    }
}

/// The ed25519 key a certificate is for, read from its SubjectPublicKeyInfo (never from
/// anywhere else in the certificate, which an attacker controls).
pub fn certificate_key(certificate: &CertificateDer<'_>) -> Option<PublicKey> {
    let (rest, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let spki = &parsed.tbs_certificate.subject_pki;
    // id-Ed25519, RFC 8410.
    if spki.algorithm.algorithm.to_id_string() != "1.3.101.112" {
        return None;
    }
    let bytes: [u8; 32] = spki.subject_public_key.data.as_ref().try_into().ok()?;
    let key = PublicKey(bytes);
    key.decode().ok()?;
    Some(key)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// Both sides only ever sign handshakes with ed25519.
const ED25519_ONLY: [SignatureScheme; 1] = [SignatureScheme::ED25519];

/// Both configurations allow TLS 1.3 only, so a TLS 1.2 signature is never legitimate.
fn only_tls13() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

fn bad_certificate() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
}

/// The key each replica id is pinned to, shared with the TLS verifiers of an endpoint and
/// replaced when membership changes (a replica that joined through the log is dialled with
/// the key the log named). Ids are never reused, so the table only grows.
#[derive(Clone, Debug, Default)]
pub struct PinnedKeys(Arc<std::sync::RwLock<Vec<PublicKey>>>);

impl PinnedKeys {
    /// The keys of every slot of `committee`.
    pub fn of(committee: &Committee) -> Self {
        let keys = committee.slot_table().iter().map(|m| m.public_key).collect();
        PinnedKeys(Arc::new(std::sync::RwLock::new(keys)))
    }

    /// Pins the keys of every slot of `committee` (a later epoch's table extends the earlier
    /// ones).
    pub fn update(&self, committee: &Committee) {
        let keys = committee.slot_table().iter().map(|m| m.public_key).collect();
        match self.0.write() {
            Ok(mut guard) => *guard = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// The key replica `id` must present.
    pub fn get(&self, id: ReplicaId) -> Option<PublicKey> {
        let guard = match self.0.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.get(id.index()).copied()
    }
}

/// Accepts a server only if it presents the key pinned for the replica named in the server
/// name.
#[derive(Debug)]
struct PinnedServer {
    keys: PinnedKeys,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let replica = replica_of_server_name(server_name).ok_or_else(bad_certificate)?;
        let expected = self.keys.get(replica).ok_or_else(bad_certificate)?;
        match certificate_key(end_entity) {
            Some(key) if key == expected => Ok(ServerCertVerified::assertion()),
            _ => Err(bad_certificate()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        only_tls13()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ED25519_ONLY.to_vec()
    }
}

/// Requires every peer to prove possession of an ed25519 key; who it is (replica or client) is
/// decided from the key after the handshake by [`peer_identity`].
#[derive(Debug)]
struct AnyEd25519Client {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyEd25519Client {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        certificate_key(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .ok_or_else(bad_certificate)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        only_tls13()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ED25519_ONLY.to_vec()
    }
}

/// Who is on the other end of an accepted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// A replica of the committee.
    Replica(ReplicaId),
    /// Anyone else: a client, identified by its key.
    Client(PublicKey),
}

/// Classifies the certificate a peer presented.
pub fn peer_identity(certificate: &CertificateDer<'_>, committee: &Committee) -> Option<PeerIdentity> {
    let key = certificate_key(certificate)?;
    Some(match committee.slot_of(&key) {
        Some(member) => PeerIdentity::Replica(member.id),
        None => PeerIdentity::Client(key),
    })
}

/// The server side: presents `key`'s certificate, requires a client certificate, TLS 1.3 only.
pub fn server_config(key: &KeyPair, id: ReplicaId) -> Result<rustls::ServerConfig, TlsError> {
    let identity = Identity::new(key, &server_name(id))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyEd25519Client {
            algorithms: algorithms(),
        }))
        .with_single_cert(vec![identity.certificate], identity.private_key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The client side, for replicas and clients alike: presents `key`'s certificate and accepts
/// a server only with the key the committee lists for the replica it dials.
pub fn client_config(key: &KeyPair, committee: &Committee) -> Result<rustls::ClientConfig, TlsError> {
    pinned_client_config(key, PinnedKeys::of(committee))
}

/// Like [`client_config`], with a key table the caller can update.
pub fn pinned_client_config(key: &KeyPair, keys: PinnedKeys) -> Result<rustls::ClientConfig, TlsError> {
    let identity = Identity::new(key, "ordinal-client")?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer {
            keys,
            algorithms: algorithms(),
        }))
        .with_client_auth_cert(vec![identity.certificate], identity.private_key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    fn cluster() -> (Vec<KeyPair>, Committee) {
        let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed([i; 32])).collect();
        let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
        (
            keys,
            Committee::equal_weights(Digest::of(b"tls"), &publics).unwrap(),
        )
    }

    /// Runs a TLS handshake in memory; returns the server's view of the client on success.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
        dial: ReplicaId,
    ) -> Result<Vec<CertificateDer<'static>>, rustls::Error> {
        let name = ServerName::try_from(server_name(dial)).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut server = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                server.read_tls(&mut buf.as_slice()).unwrap();
                server.process_new_packets()?;
            }
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                client.read_tls(&mut buf.as_slice()).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(server.peer_certificates().map(|c| c.to_vec()).unwrap_or_default());
            }
        }
        Err(rustls::Error::General("handshake did not finish".into()))
    }

    #[test]
    fn replicas_authenticate_each_other_by_pinned_key() {
        let (keys, committee) = cluster();
        let seen = handshake(
            client_config(&keys[0], &committee).unwrap(),
            server_config(&keys[2], ReplicaId(2)).unwrap(),
            ReplicaId(2),
        )
        .unwrap();
        assert_eq!(
            peer_identity(&seen[0], &committee),
            Some(PeerIdentity::Replica(ReplicaId(0)))
        );
    }

    #[test]
    fn a_server_with_another_key_is_refused_at_the_handshake() {
        let (keys, committee) = cluster();
        // Replica 3's key answering for replica 2.
        let result = handshake(
            client_config(&keys[0], &committee).unwrap(),
            server_config(&keys[3], ReplicaId(2)).unwrap(),
            ReplicaId(2),
        );
        assert!(result.is_err());
        // A key outside the cluster.
        let stranger = KeyPair::from_seed([99; 32]);
        let result = handshake(
            client_config(&keys[0], &committee).unwrap(),
            server_config(&stranger, ReplicaId(1)).unwrap(),
            ReplicaId(1),
        );
        assert!(result.is_err());
    }

    #[test]
    fn clients_are_identified_by_their_key() {
        let (keys, committee) = cluster();
        let client_key = KeyPair::from_seed([42; 32]);
        let seen = handshake(
            client_config(&client_key, &committee).unwrap(),
            server_config(&keys[1], ReplicaId(1)).unwrap(),
            ReplicaId(1),
        )
        .unwrap();
        assert_eq!(
            peer_identity(&seen[0], &committee),
            Some(PeerIdentity::Client(client_key.public()))
        );
    }

    #[test]
    fn certificate_key_reads_the_subject_key() {
        let key = KeyPair::from_seed([5; 32]);
        let identity = Identity::new(&key, "replica-0").unwrap();
        assert_eq!(certificate_key(&identity.certificate), Some(key.public()));
        assert_eq!(certificate_key(&CertificateDer::from(vec![0x30, 0x00])), None);
    }
}
