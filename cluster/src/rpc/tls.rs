//! Mutual TLS on the cluster port (`--cluster-tls-cert`, `--cluster-tls-key`, `--cluster-tls-ca`).
//!
//! Every node holds a certificate signed by the cluster's CA and trusts only that CA, in both
//! directions: a server refuses a handshake without a client certificate of the CA, and a
//! client refuses a server whose certificate is not of the CA or not issued for the address it
//! dialled (the cluster address, an IP or a host name, must be in the certificate's names). The
//! cluster secret stays a second factor: a stolen node certificate alone calls nothing.
//!
//! The pair and the CA are checked when the node starts (a bad file stops the start with the
//! reason), not at the first connection, where the failure would only show as a peer that
//! never answers.

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

use super::error::RpcError;

/// How long a peer may take over its TLS handshake: a connection that opens and says nothing
/// must not hold a socket and a task for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// This node's certificate and key and the CA every node's certificate comes from.
#[derive(Clone, Debug)]
pub struct ClusterTls {
    identity: Identity,
    ca: Certificate,
}

impl ClusterTls {
    /// The node's certificate chain (`cert`, leaf first), its private key and the cluster CA,
    /// all PEM. Fails if the server or the client side cannot be built from them.
    pub fn from_pem(cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>, ca: impl AsRef<[u8]>) -> Result<Self, RpcError> {
        let tls = ClusterTls {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
        };
        // Both builders parse the PEM and build the rustls configuration, so a file that holds
        // no certificate, a key of another certificate or a CA that is not one fail here.
        Server::builder()
            .tls_config(tls.server())
            .map_err(|e| RpcError::Tls(source_chain(&e)))?;
        Endpoint::from_static("https://127.0.0.1:1")
            .tls_config(tls.client())
            .map_err(|e| RpcError::Tls(source_chain(&e)))?;
        Ok(tls)
    }

    /// The server side: this node's pair, and client certificates required from the CA.
    pub(crate) fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The client side: servers of the CA only, this node's pair as the client certificate.
    pub(crate) fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// An error and its causes on one line (tonic's transport error says little by itself).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
