//! The binary's command line: what an operator sees first.

use std::process::Command;

fn ringchat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringchat"))
}

#[test]
fn help_lists_serve_and_its_flags() {
    let out = ringchat().arg("serve").arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--node-id",
        "--data-dir",
        "--listen",
        "--cluster-listen",
        "--advertise",
        "--join",
        "--replication",
        "--partitions",
        "--push-gateway",
        "--allowed-origins",
        "--max-group-members",
        "--cluster-secret",
        "--config",
    ] {
        assert!(help.contains(flag), "missing {flag} in:\n{help}");
    }
}

#[test]
fn invalid_settings_fail_fast_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = ringchat()
        .args(["serve", "--partitions", "0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--partitions must be at least 1"));
    let out = ringchat()
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn env_vars_configure_like_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = ringchat()
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("RINGCHAT_MAX_GROUP_MEMBERS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-group-members must be at least 2"));
}

#[test]
fn serve_help_never_prints_the_cluster_secret_from_the_environment() {
    let secret = "a-secret-that-must-stay-hidden-1234";
    let out = ringchat()
        .args(["serve", "--help"])
        .env("RINGCHAT_CLUSTER_SECRET", secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--cluster-secret"));
    assert!(!help.contains(secret), "serve --help printed the secret:\n{help}");
}
