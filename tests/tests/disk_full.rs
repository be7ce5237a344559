//! A node whose disk fills up must say so and recover by itself: a write answers a retryable
//! `unavailable` instead of hanging or acking, reads go on, `/readyz` turns 503 so a load balancer stops
//! sending it clients, and once there is room again the node serves again, in place, with
//! nothing acknowledged lost (issue 13, finding 11: it used to stay 200 with every group
//! stopped until someone restarted it).
//!
//! The data dir is on a small tmpfs mounted in a private mount namespace of the test's thread
//! (root only), so nothing outside the test sees the mount and it goes away with the test.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use ringchat_tests::netns::skip_or_fail;
use ringchat_tests::*;

/// Room for a fresh node's files; the rest is filled before the writes under test.
const TMPFS_SIZE: &str = "size=64m";

#[test]
fn a_node_whose_disk_fills_up_refuses_writes_says_so_and_recovers_once_there_is_room() {
    const NAME: &str = "a_node_whose_disk_fills_up_refuses_writes_says_so_and_recovers_once_there_is_room";
    let dir = tempfile::tempdir().unwrap();
    if let Err(why) = mount_private_tmpfs(dir.path()) {
        skip_or_fail(NAME, &why);
        return;
    }
    // Built after the mount, so its threads and the node it starts see the tmpfs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(fill_up(dir.path()));
    // SAFETY: a plain C string path; unmounting our own tmpfs before the tempdir is removed.
    let target = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
}

async fn fill_up(dir: &Path) {
    let mut node = NodeProcess::start(&dir.join("n1"), &[]).await;
    let alice = new_user(&node.base, "alice").await;
    let bob = new_user(&node.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    alice
        .http
        .send_message(&dm.channel_id, "before", "c-0")
        .await
        .expect("a write with room on disk");

    let filled = fill_disk(&dir.join("filler"));
    assert!(filled > 0, "nothing could be written to fill the disk");

    // Writes go through the journal, which cannot grow now: they must fail, not ack and not
    // hang (each is bounded by the router's own retry limit of a few seconds).
    let text = "x".repeat(16 * 1024);
    let mut refused = None;
    for i in 1..=200 {
        let sent = tokio::time::timeout(
            Duration::from_secs(20),
            alice.http.send_message(&dm.channel_id, &text, &format!("c-{i}")),
        )
        .await
        .unwrap_or_else(|_| panic!("send {i} on a full disk got no answer within 20 s"));
        if let Err(e) = sent {
            refused = Some(api_error(&e));
            break;
        }
    }
    let (status, code) = refused.expect("200 sends of 16 KiB were all acked on a full disk");
    assert_eq!(
        (status, code.as_str()),
        (503, "unavailable"),
        "a write on a full disk must be a retryable `unavailable`"
    );

    let http = node.http();
    let mut ready = 200;
    for _ in 0..100 {
        ready = http.readyz().await.expect("readyz answers");
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 503, "/readyz stayed {ready} on a node that cannot write");
    // It keeps answering while the disk stays full (past its first checks and probes): a
    // closed port would tell a load balancer nothing and a client only "connection refused".
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(http.readyz().await.expect("readyz answers on a full disk"), 503);
    assert_eq!(http.healthz().await.expect("healthz answers on a full disk"), 200);
    let refused = alice.http.send_message(&dm.channel_id, "still full", "c-full").await;
    assert_eq!(
        api_error(&refused.expect_err("a write on a still-full disk")),
        (503, "unavailable".to_string())
    );
    // Reads go on: history and the channel list come from the state machine already on disk.
    let texts = texts_of(&node, &alice, &dm.channel_id).await;
    assert_eq!(
        texts.first().map(String::as_str),
        Some("before"),
        "history on a full disk: {texts:?}"
    );
    assert!(
        alice
            .http
            .channels()
            .await
            .expect("the channel list on a full disk")
            .iter()
            .any(|c| c.channel_id == dm.channel_id),
        "the DM is listed on a full disk"
    );

    // Space comes back: the node reopens its store by itself (nobody restarts the process,
    // and nothing else listens on its port) and serves again, with everything acked before
    // the disk filled up.
    std::fs::remove_file(dir.join("filler")).expect("remove the filler");
    let mut back = false;
    for _ in 0..300 {
        if matches!(http.readyz().await, Ok(200)) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "the node did not recover within 30 s of the disk having room again"
    );
    let (_, sent) = alice
        .http
        .send_message(&dm.channel_id, "after", "c-after")
        .await
        .expect("a write once the disk has room again");
    assert!(sent.seq >= 2, "{sent:?}");
    let texts = texts_of(&node, &alice, &dm.channel_id).await;
    assert_eq!(
        texts.first().map(String::as_str),
        Some("before"),
        "acked before the disk filled up: {texts:?}"
    );
    assert_eq!(texts.last().map(String::as_str), Some("after"), "{texts:?}");
    let exit = node.terminate().expect("the recovered node stops on SIGTERM");
    assert!(exit.success(), "the recovered node exited with {exit}");
}

/// The texts of a channel read through the node's HTTP API, ascending.
async fn texts_of(node: &NodeProcess, user: &TestUser, channel_id: &str) -> Vec<String> {
    ringchat_tests::jepsen::read_channel(&node.base, user, channel_id)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect()
}

/// Writes `path` until the filesystem is full (1 MiB, then 4 KiB pieces); returns the bytes
/// written.
fn fill_disk(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let mut written = 0u64;
    for piece in [1 << 20, 4096, 64] {
        let chunk = vec![0u8; piece];
        for _ in 0..1024 {
            match file.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
    }
    let _ = file.sync_all();
    written
}

/// Moves the calling thread into a private mount namespace and mounts a small tmpfs on `dir`.
fn mount_private_tmpfs(dir: &Path) -> Result<(), String> {
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: unshare and mount take NUL-terminated strings that live across the calls.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(format!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error()));
        }
        // Keep this namespace's mounts from propagating back to the host's.
        let root = c("/");
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(format!("making / private: {}", std::io::Error::last_os_error()));
        }
        let (fs, opts) = (c("tmpfs"), c(TMPFS_SIZE));
        if libc::mount(fs.as_ptr(), target.as_ptr(), fs.as_ptr(), 0, opts.as_ptr().cast()) != 0 {
            return Err(format!("mount tmpfs: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
