//! The cluster secret: every node-to-node request carries it, every server checks it.
//!
//! The Raft RPCs can overwrite a partition's state (a snapshot replaces it whole), so only
//! nodes configured with the same `--cluster-secret` may call them. The secret travels as
//! gRPC metadata `x-ringchat-secret`; the server compares SHA-256 digests in constant time, so
//! neither the content nor the length of the expected secret leaks through timing.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};

use super::error::RpcError;

/// Metadata key that carries the cluster secret.
pub const SECRET_METADATA_KEY: &str = "x-ringchat-secret";

/// Shortest accepted secret: shorter ones are guessable.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest accepted secret (it is sent with every request).
pub const MAX_SECRET_LEN: usize = 256;

/// The shared secret of a cluster, validated once. `Debug` never prints it.
#[derive(Clone)]
pub struct ClusterSecret {
    value: MetadataValue<Ascii>,
    digest: [u8; 32],
}

impl ClusterSecret {
    /// Validates `secret`: 16 to 256 visible ASCII characters (it must fit in an HTTP/2 header).
    pub fn new(secret: &str) -> Result<Self, RpcError> {
        let bad = RpcError::BadSecret {
            min: MIN_SECRET_LEN,
            max: MAX_SECRET_LEN,
        };
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len()) || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad);
        }
        let value = MetadataValue::try_from(secret).map_err(|_| bad)?;
        Ok(ClusterSecret {
            value,
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// Adds the secret to an outgoing request.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        request.metadata_mut().insert(SECRET_METADATA_KEY, self.value.clone());
    }

    /// Accepts `request` only if it carries this secret; otherwise `Status::unauthenticated`.
    pub fn verify<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get(SECRET_METADATA_KEY)
            .ok_or_else(|| Status::unauthenticated("missing cluster secret"))?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(digest.ct_eq(&self.digest)) {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong cluster secret"))
        }
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// What a node shows and asks for on the cluster port: the secret always, and with
/// `--cluster-tls-*` mutual TLS under it (the secret stays a second factor).
#[derive(Clone, Debug)]
pub struct ClusterAccess {
    /// The secret every request carries and every server checks.
    pub secret: ClusterSecret,
    /// Mutual TLS of the connections (`None`: h2c, for loopback and private networks).
    pub tls: Option<super::tls::ClusterTls>,
}

impl ClusterAccess {
    /// `secret` over mutual TLS with `tls`.
    pub fn with_tls(secret: ClusterSecret, tls: Option<super::tls::ClusterTls>) -> Self {
        ClusterAccess { secret, tls }
    }
}

impl From<ClusterSecret> for ClusterAccess {
    fn from(secret: ClusterSecret) -> Self {
        ClusterAccess { secret, tls: None }
    }
}

/// Server-side interceptor that runs `ClusterSecret::verify` before a request reaches the
/// service, so an unauthenticated caller never gets its body decoded or a partition looked up.
#[derive(Clone, Debug)]
pub struct SecretCheck(pub ClusterSecret);

impl tonic::service::Interceptor for SecretCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.verify(&request)?;
        Ok(request)
    }
}

/// Client-side interceptor that attaches the secret to every outgoing request.
#[derive(Clone, Debug)]
pub struct SecretAttach(pub ClusterSecret);

impl tonic::service::Interceptor for SecretAttach {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.0.attach(&mut request);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "correct-horse-battery-staple";

    #[test]
    fn secret_attached_by_client_is_accepted() {
        let secret = ClusterSecret::new(SECRET).unwrap();
        let mut req = Request::new(());
        secret.attach(&mut req);
        assert!(secret.verify(&req).is_ok());
    }

    #[test]
    fn missing_or_wrong_secret_is_unauthenticated() {
        let secret = ClusterSecret::new(SECRET).unwrap();
        let other = ClusterSecret::new("correct-horse-battery-stapl3").unwrap();
        let req = Request::new(());
        assert_eq!(secret.verify(&req).unwrap_err().code(), tonic::Code::Unauthenticated);
        let mut req = Request::new(());
        other.attach(&mut req);
        assert_eq!(secret.verify(&req).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn short_or_non_ascii_secrets_are_refused() {
        assert!(ClusterSecret::new("short").is_err());
        assert!(ClusterSecret::new("sixteen-chars-but-ünicode").is_err());
        assert!(ClusterSecret::new("has a space in the middle").is_err());
        assert!(format!("{:?}", ClusterSecret::new(SECRET).unwrap()).contains("redacted"));
    }
}
