//! The documentation and packaging for users and operators, checked against the real thing:
//! the SDK example runs against a node, every curl example of docs/protocol.md answers as
//! documented, docs/operations.md lists exactly the flags of
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
    assert!(flags.len() > 10, "parsed too few flags from --help: {flags:?}\n{help}");
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
        let Some(row) = line.strip_prefix("| `--") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let flag = format!("--{}", cells[0].trim_end_matches('`'));
        let env = cells
            .get(1)
            .map(|c| c.trim_matches('`').to_string())
            .unwrap_or_default();
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

/// True when the packaging tests must run and fail rather than skip (`.ci/run` sets it).
fn deploy_tests_required() -> bool {
    std::env::var_os("RINGCHAT_REQUIRE_DEPLOY_TESTS").is_some()
}

/// Skips (with a loud note) or panics when `why` prevents a packaging test.
fn skip_or_fail_deploy(test: &str, why: &str) {
    assert!(!deploy_tests_required(), "{test} cannot run: {why}");
    eprintln!("SKIPPED {test}: {why} (set RINGCHAT_REQUIRE_DEPLOY_TESTS=1 to make this a failure)");
}

/// Runs `program args` for at most `secs` seconds (coreutils `timeout`).
fn run_bounded(secs: u64, program: &str, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .arg("--kill-after=5")
        .arg(secs.to_string())
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// stdout and stderr of `out`, for assertion messages.
fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn deploy_files_pass_their_validators() {
    let test = "deploy_files_pass_their_validators";
    let tools = std::env::var("RINGCHAT_DEPLOY_TOOLS").unwrap_or_default();
    let have_tools = !tools.is_empty() && std::path::Path::new(&tools).join("bin/hadolint").exists();
    if !have_tools {
        return skip_or_fail_deploy(
            test,
            "RINGCHAT_DEPLOY_TOOLS names no installed validators (deploy/check.sh install DIR)",
        );
    }
    let script = repo_root().join("deploy/check.sh");
    let out = Command::new("timeout")
        .args(["--kill-after=5", "240", "bash"])
        .arg(&script)
        .arg(&tools)
        .env("RINGCHAT_BIN", ringchat_bin())
        .output()
        .expect("run deploy/check.sh");
    assert!(out.status.success(), "deploy/check.sh failed:\n{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}

/// Builds `image` from deploy/Dockerfile on a base made from this host's files, with the
/// binary under test (`deploy/build-local-image.sh`).
fn build_local_image(image: &str) {
    let build_script = repo_root().join("deploy/build-local-image.sh");
    let built = run_bounded(
        180,
        "bash",
        &[
            build_script.to_str().expect("utf-8 path"),
            ringchat_bin().to_str().expect("utf-8 path"),
            image,
        ],
    );
    assert!(built.status.success(), "image build failed:\n{}", output_text(&built));
}

/// The texts of `channel`'s history as `user` reads it, oldest first.
async fn history_texts(user: &TestUser, channel: &str) -> Vec<String> {
    let page = user.http.history(channel, None, None, None).await.expect("history");
    page.messages.into_iter().map(|m| m.text).collect()
}

/// Asserts that the stopped `container` exited with status 0 (a clean SIGTERM shutdown).
fn assert_exited_cleanly(container: &str) {
    let exit = run_bounded(30, "podman", &["inspect", "--format", "{{.State.ExitCode}}", container]);
    assert_eq!(
        String::from_utf8_lossy(&exit.stdout).trim(),
        "0",
        "{container} exits cleanly:\n{}",
        output_text(&exit)
    );
}

/// Why containers cannot run here (not root, podman or runc missing), if they cannot.
fn containers_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("podman containers need root here".into());
    }
    ["podman", "runc"]
        .into_iter()
        .find(|tool| {
            !Command::new("sh")
                .args(["-c", format!("command -v {tool}").as_str()])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|tool| format!("{tool} is not installed"))
}

/// Containers and images of one test run, removed on drop (also when the test fails, after
/// printing the containers' logs).
struct Podman {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Podman {
    /// `podman --runtime runc ARGS`, bounded.
    fn run(&self, secs: u64, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--runtime", "runc"];
        all.extend_from_slice(args);
        run_bounded(secs, "podman", &all)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in &self.containers {
            if std::thread::panicking() {
                let logs = self.run(20, &["logs", "--tail", "30", name.as_str()]);
                eprintln!("--- logs of {name}:\n{}", output_text(&logs));
            }
            // `-v`: the data dir's anonymous volume goes too.
            self.run(60, &["rm", "-f", "-v", "-t", "5", name.as_str()]);
        }
        for image in &self.images {
            self.run(60, &["rmi", "-f", image.as_str()]);
        }
    }
}

/// `ringchat cluster status --json` against the cluster address `node`.
fn status_via(node: &str) -> Option<serde_json::Value> {
    let out = Command::new(ringchat_bin())
        .args(["cluster", "status", "--json", "--node", node])
        .env("RINGCHAT_CLUSTER_SECRET", CLUSTER_SECRET)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits (≤ `within`) until the node at `base` answers `/readyz` with 200.
async fn wait_ready(base: &str, within: std::time::Duration) {
    let http = ringchat_client::HttpClient::new(base);
    let deadline = std::time::Instant::now() + within;
    while http.readyz().await.ok() != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "{base} not ready within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Sends `text` as `from`, retrying `unavailable` (the same `client_msg_id`) for ≤ 20 s.
async fn send_retrying(from: &TestUser, channel: &str, text: &str, client_msg_id: &str) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match from.http.send_message(channel, text, client_msg_id).await {
            Ok((_, sent)) => return sent.seq,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("send failed, retrying: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => panic!("send of {text:?} failed for 20 s: {e}"),
        }
    }
}

/// Alice on the first node and Bob on the second, in a DM, Bob connected live.
struct Conversation {
    alice: TestUser,
    bob: TestUser,
    dm: ringchat_client::ChannelSummary,
    bob_ws: ringchat_client::WsClient,
    /// The seq of the first message, which Bob received live.
    first: u64,
}

/// Starts a `Conversation` over `bases[0]` and `bases[1]`: Alice sends `text` (as
/// `client_msg_id`) and Bob receives it live on the other node.
async fn start_conversation(bases: &[String], text: &str, client_msg_id: &str) -> Conversation {
    let wait = std::time::Duration::from_secs(10);
    let alice = new_user(&bases[0], "alice").await;
    let bob = new_user(&bases[1], "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.expect("open DM");
    let mut bob_ws = ringchat_client::WsClient::connect(&bases[1]).await.expect("connect");
    bob_ws.hello(&bob.token).await.expect("hello");
    bob_ws.catch_up(wait).await.expect("catch-up");
    let first = send_retrying(&alice, &dm.channel_id, text, client_msg_id).await;
    let live = bob_ws.recv_type("message", wait).await.expect("live message");
    assert_eq!((live["seq"].as_u64(), live["text"].as_str()), (Some(first), Some(text)));
    Conversation {
        alice,
        bob,
        dm,
        bob_ws,
        first,
    }
}

/// The image from deploy/Dockerfile (built on a base made from this host's files), three
/// containers of it on host networking and loopback ports chosen now, started through the
/// StatefulSet entrypoint (node id from the pod ordinal, ordinal 0 bootstraps, the others
/// join) with a read-only root filesystem: they form a cluster, pass the image's HEALTHCHECK, carry a conversation across
/// nodes, and keep carrying it after one container is stopped (SIGTERM, clean exit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_image_runs_a_cluster_that_chats_and_survives_a_stopped_container() {
    use std::time::Duration;
    let test = "container_image_runs_a_cluster_that_chats_and_survives_a_stopped_container";
    if let Some(why) = containers_unavailable() {
        return skip_or_fail_deploy(test, &why);
    }
    let run_id = format!("{}-{}", std::process::id(), free_port());
    let image = format!("localhost/ringchat-test:{run_id}");
    let mut podman = Podman {
        containers: Vec::new(),
        images: vec![image.clone(), format!("localhost/ringchat-test-base:{run_id}")],
    };
    build_local_image(&image);

    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    // Host names, as the StatefulSet's headless-Service names would be: advertised and joined.
    let seed = format!("localhost:{}", ports[0].1);
    let mut bases = Vec::new();
    for (ordinal, (client, cluster)) in ports.iter().enumerate() {
        let name = format!("ringchat-test-{run_id}-{ordinal}");
        let mut env = vec![
            format!("POD_NAME=ringchat-{ordinal}"),
            format!("RINGCHAT_LISTEN=127.0.0.1:{client}"),
            format!("RINGCHAT_CLUSTER_LISTEN=127.0.0.1:{cluster}"),
            format!("RINGCHAT_ADVERTISE=localhost:{cluster}"),
            format!("RINGCHAT_CLUSTER_SECRET={CLUSTER_SECRET}"),
            "RINGCHAT_PARTITIONS=8".to_string(),
        ];
        if ordinal > 0 {
            env.push(format!("RINGCHAT_SEED={seed}"));
        }
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name.as_str(),
            "--network",
            "host",
            // As `readOnlyRootFilesystem` in the StatefulSet: only the data volume is written.
            "--read-only",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--entrypoint",
            "/usr/local/bin/ringchat-statefulset",
        ];
        for e in &env {
            args.push("-e");
            args.push(e.as_str());
        }
        args.push(image.as_str());
        let started = podman.run(60, &args);
        podman.containers.push(name.clone());
        assert!(
            started.status.success(),
            "podman run failed:\n{}",
            output_text(&started)
        );
        let base = format!("http://127.0.0.1:{client}");
        wait_ready(&base, Duration::from_secs(60)).await;
        bases.push(base);
    }

    // One cluster: three active members, every partition with three replicas and a leader.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = status_via(&format!("127.0.0.1:{}", ports[0].1)).filter(|s| settled(s, 3, 3)) {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the containers did not form a cluster"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ids: Vec<u64> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["node_id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        [1, 2, 3].iter().all(|id| ids.contains(id)),
        "node ids come from the pod ordinals: {ids:?}"
    );

    // The image's HEALTHCHECK (GET /healthz) passes in every container.
    for name in &podman.containers {
        let health = podman.run(30, &["healthcheck", "run", name.as_str()]);
        assert!(
            health.status.success(),
            "healthcheck of {name}:\n{}",
            output_text(&health)
        );
    }

    // A conversation across containers: Alice on node 1, Bob live on node 2.
    let Conversation {
        alice,
        bob,
        dm,
        mut bob_ws,
        first,
    } = start_conversation(&bases, "before the stop", "k-1").await;

    // Stop the third container: SIGTERM, a clean exit well within the grace period.
    let stopped = podman.run(60, &["stop", "-t", "30", podman.containers[2].as_str()]);
    assert!(stopped.status.success(), "podman stop:\n{}", output_text(&stopped));
    assert_exited_cleanly(podman.containers[2].as_str());

    // The other two carry on: a new message goes through and arrives live; history is whole.
    let second = send_retrying(&alice, &dm.channel_id, "after the stop", "k-2").await;
    assert_eq!(second, first + 1);
    // A partition leader that took over from the stopped node delivers its recent commits
    // again (at-least-once): Bob drops what he has, by (channel_id, seq), as clients must.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let live = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let m = bob_ws.recv_type("message", left).await.expect("live message");
        if m["seq"].as_u64().is_some_and(|seq| seq > first) {
            break m;
        }
    };
    assert_eq!(
        (live["seq"].as_u64(), live["text"].as_str()),
        (Some(second), Some("after the stop"))
    );
    let texts = history_texts(&bob, &dm.channel_id).await;
    assert_eq!(texts, ["before the stop", "after the stop"]);
    for base in &bases[..2] {
        wait_ready(base, Duration::from_secs(10)).await;
    }
    drop(podman);
}

/// A compose project of `deploy/compose.yaml` run by podman-compose; brought down (containers
/// and named volumes) on drop, with the containers' logs printed first if the test failed.
struct ComposeProject {
    tool: String,
    name: String,
    files: Vec<String>,
    env: Vec<(String, String)>,
    /// The test's image and the base the build script made for it, removed in this order.
    images: Vec<String>,
}

impl ComposeProject {
    /// `podman-compose -p NAME -f … ARGS`, bounded.
    fn run(&self, secs: u64, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("timeout");
        cmd.args([
            "--kill-after=5",
            &secs.to_string(),
            self.tool.as_str(),
            "-p",
            self.name.as_str(),
        ]);
        for f in &self.files {
            cmd.args(["-f", f.as_str()]);
        }
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("run podman-compose")
    }

    /// The container podman-compose made for `service`.
    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for service in ["node1", "node2", "node3"] {
                let logs = run_bounded(20, "podman", &["logs", "--tail", "30", &self.container(service)]);
                eprintln!("--- logs of {service}:\n{}", output_text(&logs));
            }
        }
        let down = self.run(120, &["down", "-v", "-t", "5"]);
        if !down.status.success() {
            eprintln!("podman-compose down:\n{}", output_text(&down));
        }
        for image in &self.images {
            run_bounded(60, "podman", &["rmi", "-f", image.as_str()]);
        }
    }
}

/// `deploy/compose.yaml` itself, started with podman-compose (the compose engine this machine
/// can run) on the image built from deploy/Dockerfile: three services form a cluster, chat
/// across nodes, and carry on after `stop node3`. What the test's override file changes, and
/// why: host networking on loopback ports chosen now instead of the compose network and its
/// published ports (podman's bridge networks hand out non-loopback addresses, which tests must
/// not use), the locally built image instead of the `build:` section (no Rust builder image
/// can be pulled here), and `nofile`/`nproc` limits this sandbox allows. Podman runs health
/// checks from systemd timers, and there is no systemd here, so the test runs node 1's health
/// check itself until it passes; that is what `depends_on: condition: service_healthy` waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_file_starts_a_three_node_cluster_with_podman_compose() {
    use std::time::Duration;
    let test = "compose_file_starts_a_three_node_cluster_with_podman_compose";
    if let Some(why) = containers_unavailable() {
        return skip_or_fail_deploy(test, &why);
    }
    let tools = std::env::var("RINGCHAT_DEPLOY_TOOLS").unwrap_or_default();
    let tool = std::path::Path::new(&tools).join("bin/podman-compose");
    if tools.is_empty() || !tool.exists() {
        return skip_or_fail_deploy(
            test,
            "no podman-compose in RINGCHAT_DEPLOY_TOOLS (deploy/check.sh install DIR)",
        );
    }
    let run_id = format!("{}-{}", std::process::id(), free_port());
    let image = format!("localhost/ringchat-compose-test:{run_id}");
    build_local_image(&image);

    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut override_yaml = String::from("services:\n");
    for (i, (client, cluster)) in ports.iter().enumerate() {
        let join = if i == 0 {
            String::new()
        } else {
            format!("      RINGCHAT_JOIN: 127.0.0.1:{}\n", ports[0].1)
        };
        override_yaml.push_str(&format!(
            "  node{n}:\n    image: {image}\n    network_mode: host\n    ulimits:\n      nofile: {{soft: 1024, hard: 1024}}\n      nproc: {{soft: 1024, hard: 1024}}\n    environment:\n      RINGCHAT_LISTEN: 127.0.0.1:{client}\n      RINGCHAT_CLUSTER_LISTEN: 127.0.0.1:{cluster}\n      RINGCHAT_ADVERTISE: 127.0.0.1:{cluster}\n      RINGCHAT_PARTITIONS: \"8\"\n{join}",
            n = i + 1
        ));
    }
    let override_file = dir.path().join("compose.test.yaml");
    std::fs::write(&override_file, override_yaml).unwrap();
    let containers_conf = dir.path().join("containers.conf");
    std::fs::write(&containers_conf, "[engine]\nruntime = \"runc\"\n").unwrap();
    let project = ComposeProject {
        tool: tool.to_string_lossy().into_owned(),
        name: format!("ringchat-compose-{}", run_id.replace('-', "")),
        files: vec![
            repo_root().join("deploy/compose.yaml").to_string_lossy().into_owned(),
            override_file.to_string_lossy().into_owned(),
        ],
        env: vec![
            ("RINGCHAT_CLUSTER_SECRET".into(), CLUSTER_SECRET.into()),
            ("CONTAINERS_CONF".into(), containers_conf.to_string_lossy().into_owned()),
        ],
        images: vec![image.clone(), format!("localhost/ringchat-compose-test-base:{run_id}")],
    };

    // Node 1's health check, run until it passes (bounded), while `up` waits for it.
    let node1 = project.container("node1");
    let checker = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if run_bounded(10, "podman", &["healthcheck", "run", node1.as_str()])
                .status
                .success()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    });
    let up = project.run(240, &["up", "-d", "--no-build"]);
    assert!(up.status.success(), "podman-compose up:\n{}", output_text(&up));
    assert!(checker.join().unwrap(), "node 1 never passed its health check");

    let bases: Vec<String> = ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect();
    for base in &bases {
        wait_ready(base, Duration::from_secs(90)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !status_via(&format!("127.0.0.1:{}", ports[0].1)).is_some_and(|s| settled(&s, 3, 3)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the services did not form a cluster"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Alice on node 1, Bob live on node 2.
    let Conversation {
        alice, bob, dm, first, ..
    } = start_conversation(&bases, "through compose", "c-1").await;

    // `stop node3`: the service exits cleanly (SIGTERM) and the other two carry on.
    let stopped = project.run(90, &["stop", "node3"]);
    assert!(
        stopped.status.success(),
        "podman-compose stop:\n{}",
        output_text(&stopped)
    );
    assert_exited_cleanly(&project.container("node3"));
    let second = send_retrying(&alice, &dm.channel_id, "after stop node3", "c-2").await;
    assert_eq!(second, first + 1);
    let texts = history_texts(&bob, &dm.channel_id).await;
    assert_eq!(texts, ["through compose", "after stop node3"]);
    drop(project);
}

/// One `curl` example of docs/protocol.md: the command, and what the text after it says comes
/// back (a status line like `` `201 Created` ``, and/or the JSON shown).
struct CurlExample {
    line: usize,
    command: String,
    status: Option<u16>,
    json: Option<serde_json::Value>,
}

/// Every ```sh block with a `curl` in docs/protocol.md, with the status and JSON that follow it
/// (up to the next block of commands or heading).
fn protocol_md_curl_examples() -> Vec<CurlExample> {
    let doc = std::fs::read_to_string(repo_root().join("docs/protocol.md")).expect("docs/protocol.md");
    let lines: Vec<&str> = doc.lines().collect();
    let mut examples = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "```sh" {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < lines.len() && lines[end].trim() != "```" {
            end += 1;
        }
        let command = lines[start..end].join("\n").replace("\\\n", " ");
        let (mut status, mut json) = (None, None);
        let mut j = end + 1;
        while j < lines.len() && lines[j].trim() != "```sh" && !lines[j].starts_with('#') {
            let l = lines[j].trim();
            if status.is_none() {
                if let Some(code) = l
                    .strip_prefix('`')
                    .and_then(|r| r.get(..3))
                    .and_then(|c| c.parse::<u16>().ok())
                {
                    status = Some(code);
                }
            }
            if l == "```json" && json.is_none() {
                let mut k = j + 1;
                let mut text = String::new();
                while k < lines.len() && lines[k].trim() != "```" {
                    text.push_str(lines[k]);
                    text.push('\n');
                    k += 1;
                }
                json = serde_json::from_str(&text).ok();
                j = k;
            }
            j += 1;
        }
        if command.contains("curl") {
            examples.push(CurlExample {
                line: start,
                command,
                status,
                json,
            });
        }
        i = end + 1;
    }
    examples
}

/// Runs every `curl` example of docs/protocol.md, in order, against a real node: ids in the
/// examples are mapped to the real ids of the same things (users made beforehand, and each
/// channel or id the examples' own answers name), `$TOKEN` is a fresh session of alice for
/// each (one example logs out), and the status (or error code) each one answers must be the
/// one the document shows, as must the keys of the JSON it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_example_in_protocol_md_answers_as_documented() {
    let node = InProcessNode::start().await;
    let base = node.base.clone();
    let http = ringchat_client::HttpClient::new(&base);
    // The examples' people: alice (password "correct horse"), bob, and a third member to add.
    let alice_name = unique_name("alice");
    let bob_name = unique_name("bob");
    let alice = http.signup(&alice_name, "correct horse").await.expect("alice");
    let bob = http.signup(&bob_name, "correct horse").await.expect("bob");
    let carol = http
        .signup(&unique_name("carol"), "correct horse")
        .await
        .expect("carol");
    let mut ids: Vec<(String, String)> = vec![
        ("u_DjReDiLqLYpgklJe".into(), alice.user_id.clone()),
        ("u_K6hdlZGBflXBhyOH".into(), bob.user_id.clone()),
        ("u_Qm1c0cCkqzXh2T0a".into(), carol.user_id.clone()),
        ("http://127.0.0.1:7070".into(), base.clone()),
    ];
    let examples = protocol_md_curl_examples();
    assert!(examples.len() >= 15, "only {} curl examples found", examples.len());
    let mut ran = 0;
    for ex in &examples {
        let mut command = ex.command.clone();
        // The sign-up example makes a new user; every other one acts as the existing alice.
        if command.contains("/v1/users -d") {
            command = command.replace("\"alice\"", &format!("\"{}\"", unique_name("newcomer")));
        }
        command = command
            .replace("\"username\":\"alice\"", &format!("\"username\":\"{alice_name}\""))
            .replace("/by-name/bob", &format!("/by-name/{bob_name}"));
        for (doc, real) in &ids {
            command = command.replace(doc.as_str(), real);
        }
        let token = http
            .login(&alice_name, "correct horse", None, None)
            .await
            .expect("login")
            .token;
        let out = Command::new("timeout")
            .args(["20", "sh", "-c", &format!("{command} -w '\\n%{{http_code}}'")])
            .env("TOKEN", &token)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        let code: u16 = code
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("line {}: no status from {command}: {text}", ex.line));
        // With `-i` the headers come first; the JSON body is the last line before the status.
        let body_json: Option<serde_json::Value> = body.lines().last().and_then(|l| serde_json::from_str(l).ok());
        let what = format!("docs/protocol.md line {}: {command}\n→ {code} {body}", ex.line);
        match (ex.status, &ex.json) {
            (Some(want), _) => assert_eq!(code, want, "{what}"),
            (None, Some(doc)) if doc.get("error").is_some() => {
                assert!((400..500).contains(&code), "{what}");
                assert_eq!(
                    body_json.as_ref().and_then(|b| b["error"]["code"].as_str()),
                    doc["error"]["code"].as_str(),
                    "{what}"
                );
            }
            _ => assert!((200..300).contains(&code), "{what}"),
        }
        if let (Some(doc), Some(got)) = (
            ex.json.as_ref().filter(|d| d.get("error").is_none()),
            body_json.as_ref(),
        ) {
            if let (Some(doc), Some(got)) = (doc.as_object(), got.as_object()) {
                let missing: Vec<&String> = doc.keys().filter(|k| !got.contains_key(*k)).collect();
                assert!(
                    missing.is_empty(),
                    "{what}\nkeys the doc shows but the answer lacks: {missing:?}"
                );
                // Later examples name the channels these answers made by the doc's ids.
                for key in ["channel_id", "device_id"] {
                    if let (Some(d), Some(g)) = (
                        doc.get(key).and_then(|v| v.as_str()),
                        got.get(key).and_then(|v| v.as_str()),
                    ) {
                        ids.push((d.to_string(), g.to_string()));
                    }
                }
            }
        }
        ran += 1;
    }
    println!("ran {ran} curl examples from docs/protocol.md");
    node.stop().await;
}
