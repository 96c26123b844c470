//! TLS the way Tahoe-LAFS pins its peers: not by a CA, but by a hash the dialer already holds.
//! Foolscap pins the SHA-1 of the whole certificate (the tub id, [`tub_id_of`]); a NURL pins the
//! SHA-256 of its SubjectPublicKeyInfo ([`spki_hash`]). Either way the certificate is not
//! parsed beyond its key: the Python nodes' certificates are X.509 version 1 (and often expired),
//! which webpki refuses, so handshake signatures are checked against the raw key
//! ([`verify_with_spki`]). The same holds for a side's own certificate ([`certified_key`]): a
//! marsh node that took over a Python node's identity presents its v1 certificate.

use std::sync::Arc;

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha1::{Digest, Sha1};
use sha2_next::Sha256;

/// A Foolscap tub id: lowercase unpadded base32 of the SHA-1 of the DER certificate.
pub fn tub_id_of(cert_der: &[u8]) -> String {
    BASE32_NOPAD.encode(&Sha1::digest(cert_der)[..]).to_ascii_lowercase()
}

/// One DER element at the start of `b`: (header length, content length).
fn tlv(b: &[u8]) -> Option<(usize, usize)> {
    let len0 = *b.get(1)? as usize;
    if len0 < 0x80 {
        return Some((2, len0));
    }
    let n = len0 & 0x7f;
    if n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | *b.get(2 + i)? as usize;
    }
    Some((2 + n, len))
}

/// The SubjectPublicKeyInfo inside a DER certificate (version 1 or 3).
pub fn spki_of(cert: &[u8]) -> Option<&[u8]> {
    let (h, _) = tlv(cert)?;
    let tbs = cert.get(h..)?;
    let (h, l) = tlv(tbs)?;
    let mut rest = tbs.get(h..h.checked_add(l)?)?;
    if rest.first() == Some(&0xa0) {
        let (h, l) = tlv(rest)?;
        rest = rest.get(h.checked_add(l)?..)?;
    }
    // serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
    for _ in 0..5 {
        let (h, l) = tlv(rest)?;
        rest = rest.get(h.checked_add(l)?..)?;
    }
    let (h, l) = tlv(rest)?;
    rest.get(..h.checked_add(l)?)
}

/// The SPKI hash of a DER certificate as a NURL carries it: SHA-256, base64url unpadded.
pub fn spki_hash(cert: &[u8]) -> Option<String> {
    spki_of(cert).map(|spki| BASE64URL_NOPAD.encode(&Sha256::digest(spki)[..]))
}

/// The contents of the subjectPublicKey BIT STRING of a SubjectPublicKeyInfo.
fn public_key_bits(spki: &[u8]) -> Option<&[u8]> {
    let (h, l) = tlv(spki)?;
    let inner = spki.get(h..h.checked_add(l)?)?;
    let (h, l) = tlv(inner)?; // AlgorithmIdentifier
    let rest = inner.get(h.checked_add(l)?..)?;
    let (h, l) = tlv(rest)?; // BIT STRING: one byte of unused bits, then the key
    rest.get(h + 1..h.checked_add(l)?)
}

/// Check a handshake signature with the key in the certificate's SPKI, without parsing the
/// rest of the certificate.
pub fn verify_with_spki(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &rustls::DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let bad = || rustls::Error::General("bad handshake signature".into());
    let spki = spki_of(cert).ok_or_else(bad)?;
    let key = public_key_bits(spki).ok_or_else(bad)?;
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let candidates =
        algorithms.mapping.iter().find(|(scheme, _)| *scheme == dss.scheme).map(|(_, algs)| *algs).ok_or_else(bad)?;
    if candidates.iter().any(|alg| alg.verify_signature(key, message, dss.signature()).is_ok()) {
        Ok(HandshakeSignatureValid::assertion())
    } else {
        Err(bad())
    }
}

/// What a certificate must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// A Foolscap tub id ([`tub_id_of`]).
    TubId(String),
    /// A NURL's SPKI hash ([`spki_hash`]).
    Spki(String),
}

/// A verifier that accepts exactly the certificate its [`Pin`] names and checks handshake
/// signatures with that certificate's key.
#[derive(Debug)]
pub struct Pinned(pub Pin);

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = match &self.0 {
            Pin::TubId(id) => tub_id_of(end_entity) == *id,
            Pin::Spki(hash) => spki_hash(end_entity).as_ref() == Some(hash),
        };
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!("the certificate does not match the pinned {:?}", self.0)))
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_with_spki(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_with_spki(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A certificate (DER) and its private key (DER: PKCS#8, PKCS#1 or SEC1) as rustls presents
/// them, whatever made them: marsh's own (X.509 v3) or a Foolscap node's (X.509 v1, RSA).
/// rustls's own check that the two belong together parses the certificate as a web PKI
/// certificate, which a v1 one is not; this one compares the public keys alone. Refused when
/// the key is not the certificate's.
pub fn certified_key(cert: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let provider = rustls::crypto::ring::default_provider();
    let key = PrivateKeyDer::try_from(key.to_vec()).map_err(|e| rustls::Error::General(e.to_owned()))?;
    let key = provider.key_provider.load_private_key(key)?;
    let spki = spki_of(cert).ok_or_else(|| rustls::Error::General("the certificate does not parse".into()))?;
    match key.public_key() {
        Some(public) if public.as_ref() == spki => {}
        Some(_) => return Err(rustls::Error::General("the private key is not the certificate's".into())),
        None => return Err(rustls::Error::General("the private key's public key cannot be read".into())),
    }
    Ok(Arc::new(CertifiedKey::new(vec![CertificateDer::from(cert.to_vec())], key)))
}

/// The one certificate a side presents, whatever it is asked.
#[derive(Debug)]
pub struct OneCertificate(pub Arc<CertifiedKey>);

impl ResolvesClientCert for OneCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A client configuration that accepts only the pinned certificate and, when `me` is given,
/// presents it (certificate DER, private key DER) as its own: Foolscap requires one.
pub fn client_config(pin: Pin, me: Option<(&[u8], &[u8])>) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(pin)));
    let config = match me {
        Some((cert, key)) => builder.with_client_cert_resolver(Arc::new(OneCertificate(certified_key(cert, key)?))),
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_der_never_panics_or_reads_past_the_end() {
        assert_eq!(spki_of(&[]), None);
        assert_eq!(spki_of(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(spki_of(&[0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9]), None);
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ 0x30).collect();
            let _ = spki_of(&junk);
        }
    }

    /// The certificate and key of a node Tahoe-LAFS 1.20 made (`marsh-tahoe`'s fixture): RSA,
    /// X.509 version 1, which rustls's own pairing check refuses to parse.
    fn tahoe_node_pem() -> (Vec<u8>, Vec<u8>) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tahoe/tests/fixtures/node-made-by-1.20/private/node.pem");
        let pem = std::fs::read_to_string(path).unwrap();
        let block = |label: &str| {
            let begin = format!("-----BEGIN {label}-----");
            let body = pem.split(&begin).nth(1).unwrap().split("-----END").next().unwrap();
            data_encoding::BASE64.decode(body.replace(['\n', '\r'], "").as_bytes()).unwrap()
        };
        (block("CERTIFICATE"), block("PRIVATE KEY"))
    }

    #[test]
    fn a_tahoe_nodes_v1_certificate_is_presented_and_a_key_must_be_its_certificates() {
        let (cert, key) = tahoe_node_pem();
        let certified = certified_key(&cert, &key).expect("Tahoe's own certificate and key");
        assert!(certified.key.public_key().is_some());
        assert!(client_config(Pin::TubId("a".repeat(32)), Some((&cert, &key))).is_ok());
        let other = rcgen::KeyPair::generate().unwrap();
        let e = certified_key(&cert, &other.serialize_der()).unwrap_err();
        assert!(e.to_string().contains("not the certificate's"), "{e}");
        assert!(certified_key(b"junk", &key).is_err());
        // rustls's own pairing check refuses it: why `certified_key` exists.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let refused = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned(Pin::TubId("a".repeat(32)))))
            .with_client_auth_cert(vec![CertificateDer::from(cert)], PrivateKeyDer::Pkcs8(key.into()));
        assert!(refused.is_err(), "rustls parses the certificate as web PKI, which a v1 one is not");
    }

    #[test]
    fn a_generated_certificate_is_pinned_by_both_hashes() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()]).unwrap().self_signed(&key).unwrap();
        let der = cert.der().to_vec();
        let id = tub_id_of(&der);
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')));
        let spki = spki_of(&der).unwrap();
        assert_eq!(spki, key.public_key_der().as_slice());
        let verifier = Pinned(Pin::TubId(id));
        let name = ServerName::try_from("x").unwrap();
        let now = UnixTime::now();
        assert!(verifier.verify_server_cert(&CertificateDer::from(der.clone()), &[], &name, &[], now).is_ok());
        let other = Pinned(Pin::TubId("a".repeat(32)));
        assert!(other.verify_server_cert(&CertificateDer::from(der.clone()), &[], &name, &[], now).is_err());
        let by_spki = Pinned(Pin::Spki(spki_hash(&der).unwrap()));
        assert!(by_spki.verify_server_cert(&CertificateDer::from(der), &[], &name, &[], now).is_ok());
    }
}
