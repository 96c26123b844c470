//! The server's TLS configuration: rustls with ring, TLS 1.2 and 1.3, HTTP/1.1, one certificate
//! and its key, whatever made them: marsh's own (ECDSA P-256, X.509 v3) or a Tahoe-LAFS node's
//! that `marsh adopt` took over (RSA, X.509 v1, as Foolscap makes them). A client pins the
//! certificate's public key (a NURL carries its SHA-256), never a CA, so nothing here needs the
//! certificate to be one a web PKI library accepts: rustls's own check that key and certificate
//! belong together parses the certificate as one, and refuses a v1 certificate, so the check is
//! made on the public keys alone (`marsh_foolscap::tls::certified_key`).

use std::sync::Arc;

use marsh_foolscap::tls::{OneCertificate, certified_key};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(String);

/// A rustls server configuration for one certificate and its private key (both DER; the key
/// PKCS#8, PKCS#1 or SEC1). Refused when the key is not the certificate's.
pub fn tls_config(cert_der: Vec<u8>, key_der: Vec<u8>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = certified_key(&cert_der, &key_der).map_err(|e| TlsError(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OneCertificate(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_must_be_its_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["marsh".to_owned()]).unwrap().self_signed(&key).unwrap();
        assert!(tls_config(cert.der().to_vec(), key.serialize_der()).is_ok());
        let other = rcgen::KeyPair::generate().unwrap();
        let e = tls_config(cert.der().to_vec(), other.serialize_der()).unwrap_err();
        assert!(e.to_string().contains("not the certificate's"), "{e}");
        assert!(tls_config(b"junk".to_vec(), key.serialize_der()).is_err());
    }
}
