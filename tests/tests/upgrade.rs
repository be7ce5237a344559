//! Upgrades: a data dir written by an older release opens, keeps everything, and goes on.
//!
//! `tests/fixtures/record-v1-data-dir.tar.gz` was written by the release before the binary
//! codec (every record and Raft log entry JSON, format 1) with
//! `tests/fixtures/make-record-v1-data-dir.sh`: users alice, bob and carol; a DM between alice
//! and bob with four messages (`dm 1`..`dm 3` by alice with client_msg_ids `dm-1`..`dm-3`,
//! `reply` by bob); a group `team` of the three with two messages.

use std::path::Path;
use std::process::Command;

use ringchat_client::HttpClient;
use ringchat_tests::*;

fn unpack_fixture(into: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/record-v1-data-dir.tar.gz");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(into)
        .status()
        .expect("run tar");
    assert!(status.success(), "unpacking {}", fixture.display());
}

async fn texts(http: &HttpClient, channel: &str) -> Vec<(u64, String)> {
    let page = http.history(channel, None, None, Some(500)).await.expect("history");
    page.messages.into_iter().map(|m| (m.seq, m.text)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_written_before_the_binary_codec_opens_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    unpack_fixture(dir.path());
    let mut node = NodeProcess::start(&dir.path().join("data"), &[]).await;

    let alice = node
        .http()
        .login("alice", "password-alice", None, None)
        .await
        .expect("alice logs in");
    let alice_http = node.http().with_token(&alice.token);
    let channels = alice_http.channels().await.expect("channels");
    assert_eq!(channels.len(), 2, "{channels:?}");
    let dm = channels.iter().find(|c| c.kind == "dm").expect("the DM");
    let group = channels.iter().find(|c| c.kind == "group").expect("the group");
    assert_eq!(group.name.as_deref(), Some("team"));
    assert_eq!(group.members.len(), 3);
    let old_dm: Vec<(u64, String)> = ["dm 1", "dm 2", "dm 3", "reply"]
        .iter()
        .enumerate()
        .map(|(i, t)| (i as u64 + 1, t.to_string()))
        .collect();
    assert_eq!(texts(&alice_http, &dm.channel_id).await, old_dm);
    // Opening the pair's DM again finds the one opened before keyed DM ids, not a new one.
    let bob_id = dm.members.iter().find(|m| **m != alice.user_id).expect("bob in the DM");
    let again = alice_http.open_dm(bob_id).await.expect("open the DM again");
    assert_eq!((again.channel_id.as_str(), again.last_seq), (dm.channel_id.as_str(), 4));
    assert_eq!(
        texts(&alice_http, &group.channel_id).await,
        vec![(1, "group 1".to_string()), (2, "group 2".to_string())]
    );

    // A retry of a message sent before the upgrade still answers with its original seq.
    let (status, retried) = alice_http
        .send_message(&dm.channel_id, "dm 2", "dm-2")
        .await
        .expect("retry");
    assert_eq!((status, retried.seq), (200, 2));
    // New messages go on from the old channel record, gap-free.
    let (status, sent) = alice_http
        .send_message(&dm.channel_id, "after upgrade", "new-1")
        .await
        .expect("send");
    assert_eq!((status, sent.seq), (201, 5));

    // Old and new formats side by side survive a crash and the log replay after it.
    node.restart().await;
    let bob = node
        .http()
        .login("bob", "password-bob", None, None)
        .await
        .expect("bob logs in");
    let bob_http = node.http().with_token(&bob.token);
    let mut expected = old_dm.clone();
    expected.push((5, "after upgrade".to_string()));
    assert_eq!(texts(&bob_http, &dm.channel_id).await, expected);
    let (status, sent) = bob_http
        .send_message(&dm.channel_id, "and on", "bob-2")
        .await
        .expect("send");
    assert_eq!((status, sent.seq), (201, 6));
    let (status, retried) = bob_http
        .send_message(&dm.channel_id, "reply", "bob-1")
        .await
        .expect("retry");
    assert_eq!((status, retried.seq), (200, 4));
    node.terminate();
}
