//! TLS on the client port (`--tls-cert`, `--tls-key`): HTTPS and WSS served by rustls; and the
//! checks of the cluster port's mutual-TLS files (`load_cluster_tls`).
//!
//! The certificate can be replaced without a restart (certificates are short-lived, and a
//! restart drops every WebSocket): on SIGHUP the node reads both files again, and new
//! connections get the new pair while open ones keep theirs. A pair that does not load (a
//! half-written file, a key that does not match) is refused with an ERROR line and the old
//! pair stays in use, so a mistake in a renewal never takes the node off the air.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ringchat_cluster::rpc::ClusterTls;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Why a certificate pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or holds no PEM certificate.
    #[error("certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key file is missing, unreadable, holds no PEM private key, or a key rustls cannot
    /// sign with.
    #[error("private key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("the private key {key} does not belong to the certificate {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The cluster CA file is missing, unreadable or holds no PEM certificate.
    #[error("cluster CA {path}: {reason}")]
    Authority {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The cluster transport refused the files (`ClusterTls::from_pem`).
    #[error("{0}")]
    Cluster(#[from] ringchat_cluster::rpc::RpcError),
}

/// The crypto rustls uses here: ring's. rustls 0.23.48 marks it deprecated because ring has no
/// post-quantum key exchange (its aws-lc-rs provider has); aws-lc-rs needs more of the build
/// machine (docs/tls.md), so the switch waits for a session that can measure its build cost.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client port's TLS: the acceptor and the certificate pair it serves.
#[derive(Clone)]
pub struct ClientTls {
    acceptor: TlsAcceptor,
    pair: Arc<CertificatePair>,
}

impl ClientTls {
    /// Loads the pair at `cert` (PEM chain, leaf first) and `key` (PEM private key).
    pub fn load(cert: &Path, key: &Path) -> Result<ClientTls, TlsError> {
        let pair = Arc::new(CertificatePair::load(cert, key)?);
        let mut config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(pair.clone());
        // The client port speaks HTTP/1.1 only (WebSocket upgrades need it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            pair,
        })
    }

    /// The acceptor new connections go through.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Reads the files again; on failure the current pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.pair.reload()
    }

    /// Reloads on every SIGHUP until `shutdown`.
    pub async fn reload_on_sighup(self, shutdown: CancellationToken) {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: the TLS certificate reloads only on restart");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            match self.reload() {
                Ok(()) => tracing::info!(cert = %self.pair.cert_path.display(), "TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use"),
            }
        }
    }
}

/// The cluster port's mutual TLS (`--cluster-tls-cert`, `--cluster-tls-key`, `--cluster-tls-ca`):
/// the pair is checked as the client port's is (readable, the key the certificate's), the CA
/// must hold a certificate, then the transport builds both sides from them.
pub fn load_cluster_tls(cert: &Path, key: &Path, ca: &Path) -> Result<ClusterTls, TlsError> {
    read_pair(cert, key)?;
    let bad_ca = |reason: String| TlsError::Authority {
        path: ca.to_path_buf(),
        reason,
    };
    let ca_pem = std::fs::read(ca).map_err(|e| bad_ca(e.to_string()))?;
    if CertificateDer::pem_slice_iter(&ca_pem).next().is_none() {
        return Err(bad_ca("no PEM certificate in the file".into()));
    }
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| TlsError::Certificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    };
    Ok(ClusterTls::from_pem(read(cert)?, read(key)?, ca_pem)?)
}

/// The certificate files and the pair loaded from them last.
struct CertificatePair {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertificatePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificatePair")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl CertificatePair {
    fn load(cert: &Path, key: &Path) -> Result<CertificatePair, TlsError> {
        Ok(CertificatePair {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            current: RwLock::new(Arc::new(read_pair(cert, key)?)),
        })
    }

    fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(read_pair(&self.cert_path, &self.key_path)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

impl ResolvesServerCert for CertificatePair {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Reads and checks one pair: the chain, the key, and that the key is the leaf's.
fn read_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let bad_cert = |reason: String| TlsError::Certificate {
        path: cert.to_path_buf(),
        reason,
    };
    let bad_key = |reason: String| TlsError::Key {
        path: key.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad_cert(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad_cert("no PEM certificate in the file".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad_key(e.to_string()))?;
    let signing = any_supported_type(&der).map_err(|e| bad_key(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        // Some key types cannot tell (no public key to compare): rustls then says "unknown".
        Err(_) => Ok(pair),
    }
}
