//! The documentation and packaging for users and operators, checked against the real thing:
//! the SDK example runs against a node, docs/operations.md lists exactly the flags of
//! `ringchat serve --help`, and the files in deploy/ pass their validators (`deploy/check.sh`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use ringchat_tests::*;

/// The SDK's example, compiled into this test so CI runs the file users are told to run.
#[allow(dead_code)]
#[path = "../../client/examples/chat_demo.rs"]
mod chat_demo;

/// The repository's root directory.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

#[tokio::test]
async fn sdk_chat_demo_example_runs_a_conversation_against_a_node() {
    let node = InProcessNode::start().await;
    let report = chat_demo::run(&node.base).await.expect("the example runs");
    assert_eq!(report.bob_received.seq, 1);
    assert_eq!(report.bob_received.text, "hi Bob, this is Alice");
    assert_eq!(report.bob_received.channel_id, report.channel_id);
    assert_eq!(
        (report.retry_status, report.retry_seq),
        (200, 1),
        "a retry returns the original"
    );
    assert_eq!(report.alice_received.seq, 2);
    assert_eq!(report.alice_received.text, "hello Alice!");
    let texts: Vec<(u64, &str)> = report.history.iter().map(|m| (m.seq, m.text.as_str())).collect();
    assert_eq!(
        texts,
        vec![(1, "hi Bob, this is Alice"), (2, "hello Alice!")],
        "the retry committed nothing new"
    );
    node.stop().await;
}

/// `--flag` → its `[env: …]` name, from `ringchat serve --help`.
fn serve_help_flags() -> BTreeMap<String, String> {
    let out = Command::new(ringchat_bin())
        .args(["serve", "--help"])
        .env_remove("RINGCHAT_CLUSTER_SECRET")
        .output()
        .expect("run ringchat serve --help");
    assert!(out.status.success(), "serve --help failed");
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--").or_else(|| {
            // `-h, --help` style lines.
            trimmed.split_once(", --").map(|(_, r)| r)
        }) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            current = Some(format!("--{name}"));
            flags.insert(format!("--{name}"), String::new());
        }
        if let (Some(flag), Some(at)) = (&current, line.find("[env: ")) {
            let env: String = line[at + 6..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            flags.insert(flag.clone(), env);
        }
    }
    flags.remove("--help");
    assert!(
        flags.len() > 10,
        "parsed too few flags from --help: {flags:?}\n{help}"
    );
    flags
}

/// `--flag` → its environment column, from the configuration table of docs/operations.md.
fn operations_md_flags() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(repo_root().join("docs/operations.md")).expect("docs/operations.md");
    let section = doc
        .split("## Configuration reference")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Configuration reference section");
    let mut flags = BTreeMap::new();
    for line in section.lines() {
        let Some(row) = line.strip_prefix("| `--") else { continue };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let flag = format!("--{}", cells[0].trim_end_matches('`'));
        let env = cells.get(1).map(|c| c.trim_matches('`').to_string()).unwrap_or_default();
        assert!(flags.insert(flag.clone(), env).is_none(), "{flag} listed twice");
    }
    flags
}

#[test]
fn operations_md_lists_exactly_the_flags_of_serve_help() {
    let help = serve_help_flags();
    let doc = operations_md_flags();
    let missing: Vec<&String> = help.keys().filter(|f| !doc.contains_key(*f)).collect();
    let stale: Vec<&String> = doc.keys().filter(|f| !help.contains_key(*f)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/operations.md's configuration table is out of step with `ringchat serve --help`: \
         missing {missing:?}, not in --help {stale:?}"
    );
    for (flag, env) in &help {
        assert_eq!(&doc[flag], env, "environment variable of {flag}");
    }
}
