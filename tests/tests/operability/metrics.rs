//! `/metrics` after real traffic on a 2-node cluster, and the Grafana dashboard in deploy/:
//! every metric a panel queries must be one the node exports.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use ringchat_client::{HttpClient, WsClient};
use ringchat_tests::*;
use serde_json::Value;

/// Every `ringchat_*` / `process_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (rest.starts_with("ringchat_") || rest.starts_with("process_")) {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push(rest[..len].to_string());
            i += len;
        } else {
            i += 1;
        }
    }
    out
}

/// Series names present in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The value of the series of `name` whose labels contain `label`.
fn value_with(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn every_dashboard_panel_queries_at_least_one_ringchat_or_process_metric() {
    let dash = dashboard();
    let panels = dash["panels"].as_array().unwrap();
    let graphs: Vec<&Value> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(graphs.len() >= 20, "{} panels", graphs.len());
    for p in graphs {
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("no targets: {}", p["title"]));
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(!metric_names(expr).is_empty(), "{}: {expr}", p["title"]);
        }
    }
    assert_eq!(
        metric_names("sum(rate(ringchat_x_total{a=\"b\"}[1m])) / process_cpu_seconds_total"),
        ["ringchat_x_total", "process_cpu_seconds_total"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported_after_some_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 2, &["--signups-per-minute", "4"]).await;
    let base = &nodes[0].base;
    // Traffic: sign-ups up to the limit and past it, a wrong password, a bad token over HTTP
    // and WebSocket, messages in channels on several partitions, a socket opened and closed.
    let alice = new_user(base, "alice").await;
    let bob = new_user(base, "bob").await;
    let anon = HttpClient::new(base);
    let mut refused = 0;
    for i in 0..4 {
        if anon.signup(&unique_name(&format!("extra{i}")), PASSWORD).await.is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0, "the sign-up limit never applied");
    assert!(anon
        .login(&alice.username, "wrong password!", None, None)
        .await
        .is_err());
    let (status, _) = anon
        .with_token("not-a-token")
        .raw(Method::GET, "/v1/channels", None, None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    let mut bad = WsClient::connect(base).await.unwrap();
    // The 4001 close may end `hello` itself; the metric below checks it was sent.
    if bad.hello("not-a-token").await.is_ok() {
        let _ = until_closed(&mut bad, Duration::from_secs(5)).await;
    }
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap().channel_id;
    let mut channels = vec![dm];
    for i in 0..6 {
        let g = alice
            .http
            .create_group(&format!("g{i}"), std::slice::from_ref(&bob.user_id))
            .await
            .unwrap();
        channels.push(g.channel_id);
    }
    let mut ws = WsClient::connect(base).await.unwrap();
    ws.hello(&bob.token).await.unwrap();
    ws.recv_type("caught_up", Duration::from_secs(10)).await.unwrap();
    for (i, c) in channels.iter().enumerate() {
        alice.http.send_message(c, "hello", &format!("m{i}")).await.unwrap();
    }
    ws.recv_type("message", Duration::from_secs(10)).await.unwrap();
    ws.close().await.unwrap();

    let wanted: BTreeSet<String> = dashboard()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .flat_map(|t| metric_names(t["expr"].as_str().unwrap_or_default()))
        .collect();
    // Scraped until every series appeared (state gauges are read at scrape time; counters of
    // node-to-node calls need a heartbeat or two).
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = nodes[0].http().metrics().await.unwrap();
        let have = exported(&text);
        let missing: Vec<&String> = wanted.iter().filter(|m| !have.contains(*m)).collect();
        if missing.is_empty() {
            break text;
        }
        assert!(Instant::now() < deadline, "not exported: {missing:?}\n{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // A few values that the traffic above decides.
    assert_eq!(
        value_with(
            &text,
            "ringchat_build_info",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))
        ),
        Some(1.0)
    );
    assert!(
        value_with(&text, "ringchat_ws_closes_total", "code=\"4001\"").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(value_with(&text, "ringchat_rate_limited_total", "limit=\"signup\"").is_some_and(|v| v >= 1.0));
    assert!(value_with(&text, "ringchat_http_requests_total", "status=\"401\"").is_some_and(|v| v >= 1.0));
    assert!(
        value_with(
            &text,
            "ringchat_http_requests_total",
            "route=\"/v1/channels/{cid}/messages\""
        )
        .is_some_and(|v| v >= 7.0),
        "routes are the matched patterns, not the paths"
    );
    assert!(
        value_with(
            &text,
            "ringchat_peer_up",
            &format!("peer=\"{}\"", nodes[1].cluster_addr)
        ) == Some(1.0),
        "{text}"
    );
    assert!(value_with(&text, "ringchat_cluster_members", "state=\"active\"") == Some(2.0));
    assert!(metric_sum(&nodes[0], "ringchat_auth_failures_total").await >= 2);
}
