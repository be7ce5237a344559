//! What a node writes to its log: one startup line, nothing from third-party crates on a clean
//! start, per-group events summarized, `--join` failures with their reason, and never the
//! cluster secret.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringchat_tests::*;

/// A `ringchat` process started by a test and killed when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_log(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Polls `log` (≤ `within`) until a line contains `needle`; the log at that point.
async fn wait_for_line(log: &Path, needle: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let text = read_log(log);
        if text.lines().any(|l| l.contains(needle)) {
            return Some(text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[test]
fn help_never_prints_the_cluster_secret_taken_from_the_environment() {
    let secret = "env-secret-value-7f3a9c1e";
    for args in [
        &["serve", "--help"][..],
        &["cluster", "status", "--help"],
        &["cluster", "remove", "--help"],
    ] {
        let out = Command::new(ringchat_bin())
            .args(args)
            .env("RINGCHAT_CLUSTER_SECRET", secret)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("--cluster-secret"), "{args:?}: {text}");
        assert!(!text.contains(secret), "{args:?} printed the secret: {text}");
    }
}

#[test]
fn a_too_short_cluster_secret_fails_before_the_data_dir_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never-made");
    let out = Command::new(ringchat_bin())
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--cluster-listen", &format!("127.0.0.1:{}", free_port())])
        .env("RINGCHAT_CLUSTER_SECRET", "tiny-9q")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a 7-character secret: {stderr}");
    assert!(stderr.contains("--cluster-secret"), "{stderr}");
    assert!(!stderr.contains("tiny-9q"), "the secret was printed: {stderr}");
    assert!(!data.exists(), "the data dir was created before the config was checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_start_logs_one_startup_line_and_a_joiner_one_summary_of_its_groups() {
    let dir = tempfile::tempdir().unwrap();
    let one = start_cluster_node(dir.path(), 1, None, &[]).await;
    let two = start_cluster_node(dir.path(), 2, Some(&one.cluster_addr), &[]).await;
    wait_for_status(&one, Duration::from_secs(60), |s| settled(s, 2, 2)).await;
    // The summary is written once the burst of opens is over.
    let log2 = two.data_dir.with_extension("log");
    let text2 = wait_for_line(&log2, "partition groups opened", Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no summary of opened groups:\n{}", read_log(&log2)));

    let text1 = read_log(&one.data_dir.with_extension("log"));
    let startup: Vec<&str> = text1.lines().filter(|l| l.contains("ringchat node serving")).collect();
    assert_eq!(startup.len(), 1, "{text1}");
    let line = startup[0];
    for part in [
        format!("version={}", env!("CARGO_PKG_VERSION")),
        "node_id=1".to_string(),
        format!("data_dir={}", one.data_dir.display()),
        format!("client={}", one.base.trim_start_matches("http://")),
        format!("cluster={}", one.cluster_addr),
    ] {
        assert!(line.contains(&part), "startup line lacks {part}: {line}");
    }
    assert!(!line.contains(CLUSTER_SECRET), "{line}");
    assert!(!line.contains('\u{1b}'), "colour codes in a log file: {line}");
    for text in [&text1, &text2] {
        for l in text.lines() {
            let third_party = ["openraft", "lsm_tree", "fjall", "foyer", "h2::", "tonic", "hyper"]
                .iter()
                .any(|t| l.contains(&format!(" {t}")));
            assert!(!third_party, "a third-party line on a clean start: {l}");
            assert!(
                !l.contains(" WARN ") && !l.contains(" ERROR "),
                "a clean start warned: {l}"
            );
        }
    }
    // Node 2 got all 8 partitions (2 replicas on 2 nodes): summarized, not one line each.
    let opened: Vec<&str> = text2
        .lines()
        .filter(|l| l.contains("partition groups opened"))
        .collect();
    assert!(opened.len() <= 2, "{opened:#?}");
    assert!(opened.iter().any(|l| l.contains("count=")), "{opened:#?}");
    let per_group = text2.lines().filter(|l| l.contains("partition=")).count();
    assert!(per_group <= 2, "per-partition lines on a join:\n{text2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_to_an_address_nobody_answers_is_logged_with_its_reason_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("n1.log");
    let dead = format!("127.0.0.1:{}", free_port());
    let _node = Spawned(
        Command::new(ringchat_bin())
            .args(["serve", "--node-id", "2", "--data-dir"])
            .arg(dir.path().join("n1"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--cluster-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--join", &dead, "--cluster-secret", CLUSTER_SECRET])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let text = wait_for_line(&log, "join not accepted yet", Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("silent for 5 s while joining a dead address:\n{}", read_log(&log)));
    let line = text.lines().find(|l| l.contains("join not accepted yet")).unwrap();
    assert!(line.contains(&dead), "{line}");
    assert!(line.contains("error="), "no reason: {line}");
    // And again while it lasts, not once per attempt (one attempt per 300 ms).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let retries = read_log(&log)
        .lines()
        .filter(|l| l.contains("join not accepted yet"))
        .count();
    assert!(
        (2..=3).contains(&retries),
        "{retries} lines in ~7 s:\n{}",
        read_log(&log)
    );
}
