//! Mutual TLS on the cluster port (`--cluster-tls-cert/-key/-ca`, PROTOCOL v1.1 §4) with a CA
//! and node certificates made in the test: a 2-node cluster forms and carries a DM across
//! nodes, the operator CLI works with a certificate of the CA, and the port refuses cleartext,
//! a client without a certificate, a certificate of another CA, and a server that is not of
//! the CA; a CA file that holds no certificate stops the start with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, Certificate, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use ringchat_client::WsClient;
use ringchat_tests::*;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

/// A CA that signs node certificates into a directory.
struct Authority {
    cert: Certificate,
    key: KeyPair,
    ca_path: PathBuf,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Authority {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca_path = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca_path, cert.pem()).unwrap();
        Authority { cert, key, ca_path }
    }

    /// A certificate for 127.0.0.1 usable as server and client (a node is both), with its
    /// key: the `--cluster-tls-*` flags of a node or of the operator CLI.
    fn node_flags(&self, dir: &Path, name: &str) -> Vec<String> {
        let key = KeyPair::generate().expect("node key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("node params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("node certificate");
        let (cert_path, key_path) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let path = |p: &Path| p.display().to_string();
        vec![
            "--cluster-tls-cert".into(),
            path(&cert_path),
            "--cluster-tls-key".into(),
            path(&key_path),
            "--cluster-tls-ca".into(),
            path(&self.ca_path),
        ]
    }
}

/// `ringchat cluster status --json --node addr` with `flags`: its stdout if it succeeded,
/// else its stderr as the error.
fn status_with(addr: &str, flags: &[String]) -> Result<serde_json::Value, String> {
    let out = Command::new(ringchat_bin())
        .args(["cluster", "status", "--json", "--node", addr])
        .args(flags)
        .env("RINGCHAT_CLUSTER_SECRET", CLUSTER_SECRET)
        .output()
        .expect("run ringchat cluster status");
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `flags` with `--cluster-tls-ca` replaced by `ca`.
fn with_ca(mut flags: Vec<String>, ca: &Path) -> Vec<String> {
    let at = flags.iter().position(|f| f == "--cluster-tls-ca").expect("a CA flag");
    flags[at + 1] = ca.display().to_string();
    flags
}

fn flag_refs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_mutual_tls_forms_carries_messages_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "cluster");
    let (flags1, flags2) = (ca.node_flags(dir.path(), "n1"), ca.node_flags(dir.path(), "n2"));
    let n1 = start_cluster_node(dir.path(), 1, None, &flag_refs(&flags1)).await;
    let n2 = start_cluster_node(dir.path(), 2, Some(&n1.cluster_addr), &flag_refs(&flags2)).await;
    let nodes = [n1, n2];
    // The join, the replica moves and every status call below went over mutual TLS.
    wait_for_status(&nodes[0], Duration::from_secs(60), |s| {
        settled(s, 2, 2) && leaders_on_preferred_replicas(s)
    })
    .await;

    // A DM across the nodes: the forwarded write, the replication and the delivery.
    let alice = new_user(&nodes[0].base, "tls_alice").await;
    let bob = new_user(&nodes[1].base, "tls_bob").await;
    let mut b = WsClient::connect(&nodes[1].base).await.unwrap();
    b.hello(&bob.token).await.unwrap();
    b.recv_type("caught_up", T).await.unwrap();
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    let mut a = WsClient::connect(&nodes[0].base).await.unwrap();
    a.hello(&alice.token).await.unwrap();
    a.recv_type("caught_up", T).await.unwrap();
    let sent = a
        .request(
            json!({"type": "send", "ref": 1, "channel_id": dm.channel_id, "text": "over mTLS", "client_msg_id": "m1"}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(sent["type"], "sent", "{sent}");
    let m = b.recv_type("message", T).await.unwrap();
    assert_eq!(m["text"], "over mTLS", "{m}");

    // The operator CLI with its own certificate of the CA.
    let operator = ca.node_flags(dir.path(), "operator");
    let status = status_with(&nodes[1].cluster_addr, &operator).expect("status over mutual TLS");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(2), "{status}");

    // Refused: cleartext h2c (no TLS flags), TLS with a certificate of another CA, and a
    // server that is not of the CA the client trusts (the client refuses it).
    let cleartext = status_with(&nodes[0].cluster_addr, &[]).expect_err("cleartext must be refused");
    assert!(!cleartext.is_empty());
    // The stranger trusts the cluster's CA (so it accepts the server) but its own certificate
    // is of another CA: the server must refuse it.
    let other = Authority::new(dir.path(), "other");
    let stranger = with_ca(other.node_flags(dir.path(), "stranger"), &ca.ca_path);
    status_with(&nodes[0].cluster_addr, &stranger).expect_err("a certificate of another CA must be refused");
    // A client of the cluster CA that trusts only the other CA must refuse the server.
    let trusting_other = with_ca(operator.clone(), &other.ca_path);
    status_with(&nodes[0].cluster_addr, &trusting_other)
        .expect_err("a server whose certificate is not of the trusted CA must be refused");

    // The cluster still serves after the refused handshakes.
    let sent = a
        .request(
            json!({"type": "send", "ref": 2, "channel_id": dm.channel_id, "text": "still here", "client_msg_id": "m2"}),
            T,
        )
        .await
        .unwrap();
    assert_eq!(sent["type"], "sent", "{sent}");
    assert_eq!(b.recv_type("message", T).await.unwrap()["text"], "still here");
    for mut node in nodes {
        node.terminate();
    }
}

#[test]
fn a_ca_file_without_a_certificate_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "cluster");
    let bogus = dir.path().join("bogus-ca.crt");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let flags = with_ca(ca.node_flags(dir.path(), "n1"), &bogus);
    let out = Command::new(ringchat_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--cluster-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--cluster-secret", CLUSTER_SECRET])
        .args(&flags)
        .output()
        .expect("run ringchat serve");
    assert!(!out.status.success(), "the node must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cluster CA") && stderr.contains("bogus-ca.crt"),
        "the reason names the file: {stderr}"
    );
}
