//! The web client in headless Chromium: runs `tests/web/web_client.test.mjs` (Playwright) with
//! Node.js against a real `ringchat` process on loopback ports chosen here, and fails if it
//! fails. `.ci/run` installs Chromium and playwright-core; elsewhere the test is skipped when
//! they are missing, unless `RINGCHAT_REQUIRE_BROWSER_TESTS=1` (CI sets it) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringchat_tests::{free_port, ringchat_bin};

/// The whole browser run, node start-ups included, must finish within this.
const BROWSER_RUN_LIMIT: Duration = Duration::from_secs(170);

/// What the run needs that this machine lacks, if anything.
fn missing_tools(web: &Path, chromium: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium.exists() {
        missing.push(format!("{} (apt-get install chromium)", chromium.display()));
    }
    if !web.join("node_modules/playwright-core/package.json").exists() {
        missing.push(format!("playwright-core (cd {} && npm ci)", web.display()));
    }
    if Command::new("node")
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        missing.push("node (Node.js)".into());
    }
    missing
}

#[test]
fn the_web_client_chats_reconnects_and_scrolls_back_in_chromium() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let missing = missing_tools(&web, &chromium);
    if !missing.is_empty() {
        let why = format!("browser test needs: {}", missing.join(", "));
        assert!(
            std::env::var("RINGCHAT_REQUIRE_BROWSER_TESTS").as_deref() != Ok("1"),
            "{why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-client-screenshots");
    let mut child = Command::new("node")
        .arg(web.join("web_client.test.mjs"))
        .current_dir(&web)
        .env("RINGCHAT_BIN", ringchat_bin())
        .env("RINGCHAT_PORT", free_port().to_string())
        .env("RINGCHAT_CLUSTER_PORT", free_port().to_string())
        .env("RINGCHAT_DATA_DIR", dir.path().join("data"))
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .spawn()
        .expect("start node");
    let deadline = Instant::now() + BROWSER_RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser test did not finish within {BROWSER_RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(dir.path().join("ringchat.log")).unwrap_or_default();
    assert!(
        status.success(),
        "the browser test failed ({status}); screenshots in {}; node log:\n{}",
        shots.display(),
        log.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
