//! Packing at a partition's leader (`proposal_packer.rs`): writes that arrive while their
//! group is busy leave together as one log entry, and every writer still gets its own answer.
//! Runs on a single-node `Cluster`, which packs like every node does.

use std::collections::BTreeSet;
use std::sync::Arc;

use openraft::async_runtime::watch::WatchReceiver;
use ringchat_cluster::{Cluster, Command, Response};

use crate::common::{group, single_node_config, WAIT};

/// Concurrent sends to one channel.
const SENDS: u64 = 300;

fn send(n: u64) -> Command {
    Command::SendMessage {
        channel_id: "g_pack".into(),
        sender_id: "u_1".into(),
        text: format!("message {n}"),
        client_msg_id: Some(format!("m{n}")),
        ts: 0,
        push: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_share_log_entries_and_each_gets_its_own_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::open(&single_node_config(dir.path(), 4, 100_000))
        .await
        .expect("open single node");
    assert!(cluster.wait_ready(WAIT).await, "every partition led locally");
    cluster
        .write(
            "g_pack",
            Command::CreateChannel {
                channel: group("g_pack"),
                max_members: 10,
            },
        )
        .await
        .expect("create channel");
    let raft = cluster
        .partition_group(cluster.partition_of("g_pack"))
        .expect("partition hosted");
    let last_index = || raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
    let before = last_index();

    let writers: Vec<_> = (1..=SENDS)
        .map(|n| {
            let cluster = Arc::clone(&cluster);
            tokio::spawn(async move { cluster.write("g_pack", send(n)).await })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for (n, writer) in (1..=SENDS).zip(writers) {
        let answer = tokio::time::timeout(WAIT, writer)
            .await
            .expect("every send answered within 10 s")
            .expect("writer task")
            .expect("send committed");
        match answer {
            Response::Sent { message, duplicate, .. } => {
                assert!(!duplicate, "send {n} is new");
                assert_eq!(message.text, format!("message {n}"), "each writer gets its own message");
                seqs.insert(message.seq);
            }
            other => panic!("send {n} answered {other:?}"),
        }
    }
    assert_eq!(seqs, (1..=SENDS).collect(), "seqs 1..={SENDS}, each once");
    let entries = last_index() - before;
    assert!(
        entries <= SENDS / 2,
        "{SENDS} concurrent sends took {entries} log entries: they were not packed"
    );
    // A retry of a packed send finds the original.
    match cluster.write("g_pack", send(7)).await.expect("retry") {
        Response::Sent { message, duplicate, .. } => assert!(duplicate && message.text == "message 7"),
        other => panic!("retry answered {other:?}"),
    }
    tokio::time::timeout(WAIT, cluster.shutdown())
        .await
        .expect("cluster shuts down within 10 s");
}
