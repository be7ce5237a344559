//! Whom the client trusts for `https://` and `wss://`: the system's root certificates, plus
//! the CA of a private deployment when one is named (a cluster behind its own CA, or a test).
//! One rustls configuration serves the HTTP and the WebSocket client alike, with the ring
//! provider the server uses (no second crypto library in the tree).

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::error::ClientError;

/// Trust for TLS connections to ringchat nodes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Trust {
    config: Arc<ClientConfig>,
}

impl Trust {
    /// The system's root certificates (loaded once per process).
    pub fn system() -> Result<Trust, ClientError> {
        static SYSTEM: OnceLock<Result<Trust, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| Trust::with_roots(system_roots()).map_err(|e| e.to_string()))
            .clone()
            .map_err(ClientError::Tls)
    }

    /// The system's roots and every certificate in `ca_pem` (PEM), for a node whose
    /// certificate a private CA signed.
    pub fn with_ca_pem(ca_pem: &[u8]) -> Result<Trust, ClientError> {
        let mut roots = system_roots();
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| ClientError::Tls(format!("CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(format!("CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(ClientError::Tls("the CA file holds no PEM certificate".into()));
        }
        Trust::with_roots(roots)
    }

    fn with_roots(roots: RootCertStore) -> Result<Trust, ClientError> {
        let mut config = ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Both clients speak HTTP/1.1 (the WebSocket upgrade needs it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Trust {
            config: Arc::new(config),
        })
    }

    /// The rustls configuration both clients use.
    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// ring's crypto, as the server's (`ringchat_node::tls::crypto_provider` says why ring, and why
/// rustls's deprecation of it is not followed yet).
#[allow(deprecated)]
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The platform's trusted roots; what cannot be read is skipped (a node behind a private CA
/// is reached with `with_ca_pem`).
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    roots
}

/// True if `base` names a TLS endpoint (`https://…`).
pub(crate) fn is_tls(base: &str) -> bool {
    base.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}
