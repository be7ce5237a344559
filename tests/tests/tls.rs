//! TLS on the client port (`--tls-cert`, `--tls-key`; PROTOCOL v1.1 §4): HTTPS and WSS with a
//! certificate made in the test, plaintext refused, the certificate replaced on SIGHUP without
//! a restart, and a key that does not match its certificate refused at start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use ringchat_node::app::App;
use ringchat_node::config::TlsFiles;
use ringchat_tests::{test_config, InProcessNode};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// The test user's sign-up and login body.
const CREDENTIALS: &str = r#"{"username":"tls_alice","password":"correct horse"}"#;

/// Bound of every network step.
const STEP: Duration = Duration::from_secs(10);

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1.
struct Issued {
    ca: CertificateDer<'static>,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn issue() -> Issued {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).expect("server params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server certificate");
    Issued {
        ca: ca.der().clone(),
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn write_pair(dir: &Path, issued: &Issued) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.cert, &issued.cert_pem).unwrap();
    std::fs::write(&files.key, &issued.key_pem).unwrap();
    files
}

/// A TLS connection to `addr` that trusts only `ca`.
async fn connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("test CA");
    let config = rustls::ClientConfig::builder_with_provider(ringchat_node::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr)).await??;
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(STEP, TlsConnector::from(Arc::new(config)).connect(name, tcp)).await?
}

/// One HTTP/1.1 request over `stream` (closed after the answer): status and body.
async fn request<S>(mut stream: S, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn https(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    request(
        connect(addr, ca).await.expect("TLS connection"),
        method,
        path,
        token,
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_serves_https_and_wss_and_takes_a_new_certificate_on_sighup() {
    let certs = tempfile::tempdir().unwrap();
    let first = issue();
    let files = write_pair(certs.path(), &first);
    let node = InProcessNode::start_with(|cfg| cfg.tls = Some(files.clone())).await;
    let addr = node.app.addr;

    // HTTPS: health, a sign-up and a login.
    assert_eq!(https(addr, &first.ca, "GET", "/healthz", None, "").await.0, 200);
    let (status, _) = https(addr, &first.ca, "POST", "/v1/users", None, CREDENTIALS).await;
    assert_eq!(status, 201);
    let (status, session) = https(addr, &first.ca, "POST", "/v1/sessions", None, CREDENTIALS).await;
    assert_eq!(status, 201, "{session}");
    let session: serde_json::Value = serde_json::from_str(&session).expect("session JSON");
    let token = session["token"].as_str().expect("token").to_string();

    // WSS: hello over TLS gets `ready`.
    let tls = connect(addr, &first.ca).await.expect("TLS connection");
    let (mut ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::client_async("wss://localhost/v1/ws", tls))
        .await
        .expect("upgrade in time")
        .expect("WebSocket upgrade over TLS");
    let hello = serde_json::json!({"type": "hello", "token": token}).to_string();
    ws.send(Message::text(hello)).await.unwrap();
    let first_frame = tokio::time::timeout(STEP, ws.next()).await.expect("a frame in time");
    let first_frame = first_frame.expect("open").expect("frame");
    let frame: serde_json::Value = serde_json::from_str(first_frame.to_text().unwrap()).unwrap();
    assert_eq!(frame["type"], "ready", "{frame}");

    // Plaintext on the TLS port gets no HTTP answer.
    let plain = TcpStream::connect(addr).await.unwrap();
    let mut plain = plain;
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(STEP, plain.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "plain HTTP was served on the TLS port"
    );

    // A renewal: new files from another CA, then SIGHUP. New connections get the new
    // certificate (trusting only the new CA works, only the old one fails); the open WebSocket
    // stays up.
    let second = issue();
    write_pair(certs.path(), &second);
    assert!(
        connect(addr, &second.ca).await.is_err(),
        "the new certificate is not served before SIGHUP"
    );
    // SAFETY: signalling our own process; the node's SIGHUP handler is installed.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    let deadline = Instant::now() + STEP;
    while connect(addr, &second.ca).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 10 s of SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        connect(addr, &first.ca).await.is_err(),
        "the old certificate is still served"
    );
    assert_eq!(https(addr, &second.ca, "GET", "/healthz", None, "").await.0, 200);
    ws.send(Message::text(r#"{"type":"ping","ref":1}"#)).await.unwrap();
    // The session opened before the renewal still answers (after its `caught_up`).
    let mut answered = false;
    for _ in 0..10 {
        let frame = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if frame.to_text().unwrap_or_default().contains("\"pong\"") {
            answered = true;
            break;
        }
    }
    assert!(answered, "no pong on the WebSocket opened before the renewal");

    // A broken renewal (a key of another certificate) is refused and the current pair stays.
    std::fs::write(&files.key, issue().key_pem).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(https(addr, &second.ca, "GET", "/healthz", None, "").await.0, 200);

    node.stop().await;
}

/// The Rust SDK and `ringchat chat` reach a node over HTTPS and WSS when told to trust its
/// CA, and refuse it when not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_and_the_terminal_chat_speak_tls_to_a_node_whose_ca_they_trust() {
    use ringchat_client::{HttpClient, Trust, WsClient};

    let certs = tempfile::tempdir().unwrap();
    let issued = issue();
    let node = InProcessNode::start_with(|cfg| cfg.tls = Some(write_pair(certs.path(), &issued))).await;
    let base = format!("https://localhost:{}", node.app.addr.port());

    // Without the CA (system roots only) the certificate is refused.
    let stranger = HttpClient::new(&base).signup("tls_nobody", "correct horse").await;
    assert!(
        matches!(stranger, Err(ringchat_client::ClientError::Http(_))),
        "{stranger:?}"
    );
    assert!(WsClient::connect(&base).await.is_err(), "WSS without the CA");

    let trust = Trust::with_ca_pem(issued.ca_pem.as_bytes()).expect("the test CA");
    let http = HttpClient::with_trust(&base, &trust);
    let alice = http
        .signup("tls_alice", "correct horse")
        .await
        .expect("sign-up over HTTPS");
    let bob = http
        .signup("tls_bob", "correct horse")
        .await
        .expect("sign-up over HTTPS");
    let session = http
        .login("tls_bob", "correct horse", None, None)
        .await
        .expect("login over HTTPS");
    let mut bob_ws = WsClient::connect_with_trust(&base, &trust).await.expect("WSS");
    bob_ws.hello(&session.token).await.expect("hello over WSS");
    bob_ws.catch_up(STEP).await.expect("caught up");

    // The terminal client, given the CA file, logs in, opens a DM and sends over TLS.
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, &issued.ca_pem).unwrap();
    let mut child = tokio::process::Command::new(ringchat_tests::ringchat_bin())
        .args(["chat", "--url", &base, "--user", "tls_alice", "--ca-cert"])
        .arg(&ca_file)
        .env("RINGCHAT_PASSWORD", "correct horse")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ringchat chat");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"/dm tls_bob\nhello over tls\n").await.unwrap();
    let got = bob_ws
        .recv_type("message", STEP)
        .await
        .expect("the terminal's message over WSS");
    assert_eq!(got["text"], "hello over tls");
    assert_eq!(got["sender_id"], alice.user_id.as_str());
    stdin.write_all(b"/quit\n").await.unwrap();
    let status = tokio::time::timeout(STEP, child.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "{status}");
    assert_ne!(bob.user_id, alice.user_id);
    node.stop().await;
}

#[tokio::test]
async fn a_key_that_does_not_belong_to_the_certificate_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let files = write_pair(certs.path(), &issue());
    std::fs::write(&files.key, issue().key_pem).unwrap();
    let mut cfg = test_config(dir.path());
    cfg.tls = Some(files);
    let err = match App::start(cfg).await {
        Ok(_) => panic!("started with a key of another certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("does not belong"), "{err}");
}
