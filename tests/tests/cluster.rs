//! Multi-process clusters on loopback: formation by `--join`, placement of every partition on
//! R distinct nodes, `cluster status`, and failover after kill -9.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ringchat_tests::jepsen::{check, summary, Workload};
use ringchat_tests::*;
use serde_json::Value;

/// Partitions led by each node id.
fn leaders_per_node(s: &Value) -> std::collections::BTreeMap<u64, usize> {
    let mut out = std::collections::BTreeMap::new();
    for p in s["partitions"].as_array().into_iter().flatten() {
        *out.entry(p["leader"].as_u64().unwrap_or(0)).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_and_every_partition_gets_three_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 3, &[]).await;
    let status = wait_for_status(&nodes[2], Duration::from_secs(60), |s| settled(s, 3, 3)).await;
    // The PROTOCOL §4 fields (v1.1: further fields may stand beside them).
    let keys: BTreeSet<&str> = status.as_object().unwrap().keys().map(String::as_str).collect();
    assert!(
        BTreeSet::from(["meta_leader", "members", "partitions"]).is_subset(&keys),
        "{keys:?}"
    );
    assert!((1..=3).contains(&status["meta_leader"].as_u64().unwrap()));
    for (i, m) in status["members"].as_array().unwrap().iter().enumerate() {
        assert_eq!(m["node_id"], i as u64 + 1);
        assert_eq!(m["cluster_addr"], nodes[i].cluster_addr.as_str());
        assert_eq!(format!("http://{}", m["client_addr"].as_str().unwrap()), nodes[i].base);
    }
    assert_eq!(status["partitions"].as_array().unwrap().len(), 8);
    for node in &nodes {
        assert_eq!(node.http().readyz().await.unwrap(), 200);
    }
    // Node 1 bootstrapped and led everything; leadership moves to each partition's preferred
    // replica, which spreads it over the three nodes.
    let balanced = wait_for_status(&nodes[0], Duration::from_secs(60), |s| {
        settled(s, 3, 3) && leaders_on_preferred_replicas(s)
    })
    .await;
    let per_node = leaders_per_node(&balanced);
    println!("leaders per node after balancing: {per_node:?}");
    assert!(per_node.len() >= 2, "leadership still on one node: {per_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_moves_leadership_to_the_survivors_and_it_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, &[]).await;
    wait_for_status(&nodes[1], Duration::from_secs(60), |s| settled(s, 3, 3)).await;
    // Node 1 bootstrapped the cluster, so it leads the meta group, and the partitions it is
    // the preferred replica of.
    nodes[0].kill9();
    let killed = Instant::now();
    let status = wait_for_status(&nodes[1], Duration::from_secs(30), |s| {
        s["meta_leader"].as_u64().is_some_and(|l| l != 1)
            && s["partitions"]
                .as_array()
                .is_some_and(|ps| ps.iter().all(|p| p["leader"].as_u64().is_some_and(|l| l != 1)))
    })
    .await;
    let failover = killed.elapsed();
    println!("failover: every partition and the meta group led by a survivor {failover:?} after kill -9");
    assert!(failover < Duration::from_secs(15), "{failover:?}");
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    nodes[0].restart().await;
    // Back: it leads its preferred partitions again.
    let status = wait_for_status(&nodes[0], Duration::from_secs(60), |s| {
        settled(s, 3, 3) && leaders_on_preferred_replicas(s)
    })
    .await;
    assert!(leaders_per_node(&status).contains_key(&1), "{status}");
    assert_eq!(nodes[0].http().readyz().await.unwrap(), 200);
}

fn replica_slots(s: &Value) -> BTreeSet<(u64, u64)> {
    s["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let part = p["partition"].as_u64().unwrap();
            p["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |r| (part, r.as_u64().unwrap()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_takes_a_fair_share_and_data_written_before_stays_readable_then_it_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, &[]).await;
    let before = wait_for_status(&nodes[0], Duration::from_secs(60), |s| settled(s, 3, 3)).await;
    let alice = new_user(&nodes[0].base, "alice").await;
    let mut dms = Vec::new();
    for i in 0..6 {
        let other = new_user(&nodes[i % 3].base, "peer").await;
        let dm = alice.http.open_dm(&other.user_id).await.unwrap();
        for j in 0..5 {
            alice
                .http
                .send_message(&dm.channel_id, &format!("before {j}"), &format!("b{i}-{j}"))
                .await
                .unwrap();
        }
        dms.push(dm.channel_id);
    }
    // Every partition's log gets longer than one AppendEntries batch, so each replica that
    // moves is filled from a snapshot instead of a replay of the log.
    let long_logs = fill_every_partition_log(&alice, 8).await;
    // Scale out.
    let joined = start_cluster_node(dir.path(), 4, Some(&nodes[0].cluster_addr), &[]).await;
    nodes.push(joined);
    let after = wait_for_status(&nodes[3], Duration::from_secs(90), |s| {
        settled(s, 4, 3) && replica_slots(s).iter().any(|(_, n)| *n == 4)
    })
    .await;
    let (old, new) = (replica_slots(&before), replica_slots(&after));
    let moved: Vec<&(u64, u64)> = new.difference(&old).collect();
    let fraction = moved.len() as f64 / new.len() as f64;
    println!(
        "scale-out 3 -> 4 nodes: {} of {} replica slots moved ({fraction:.3}; ideal 0.25)",
        moved.len(),
        new.len()
    );
    assert!(
        moved.iter().all(|(_, n)| *n == 4),
        "replicas moved between old nodes: {moved:?}"
    );
    assert!(fraction > 0.0 && fraction <= 0.5, "{fraction}");
    // The layout's history: every partition that moved has its move committed as finished,
    // to the replicas it now has, and the latest rebalance is complete.
    let moved_partitions: BTreeSet<u64> = moved.iter().map(|(p, _)| *p).collect();
    let history = wait_for_status(&nodes[3], Duration::from_secs(30), |s| {
        s["summary"]["moves_in_progress"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    })
    .await;
    for p in history["partitions"].as_array().unwrap() {
        if !moved_partitions.contains(&p["partition"].as_u64().unwrap()) {
            continue;
        }
        assert!(p["move"]["finished_ms"].as_u64().is_some(), "{p}");
        assert_eq!(p["move"]["to"], p["replicas"], "{p}");
        assert_eq!(p["target"], p["replicas"], "{p}");
    }
    let rebalance = &history["summary"]["rebalance"];
    assert!(
        rebalance["total"].as_u64() >= Some(moved_partitions.len() as u64) && rebalance["done"] == rebalance["total"],
        "{rebalance}"
    );
    // Each partition moved to node 4 arrived as one copy of its data, taken at its fence.
    let copied = metric_sum(&nodes[3], "ringchat_partition_copies_total").await;
    assert!(
        copied >= moved.len() as u64,
        "node 4 received {copied} copies for {} moved replicas",
        moved.len()
    );
    // Each node runs exactly one group per replica set it is in that carries a partition:
    // the new node opened its groups as partitions moved in, the old nodes closed the groups
    // of the sets no partition has any more.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cluster_status(&nodes[0]).unwrap();
        let running = groups_running(&nodes).await;
        let expected = groups_expected(&status, 4);
        if running == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "groups running {running:?}, replica sets with partitions {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Disk is reclaimed: a node keeps the keys of exactly the partitions placed on it.
    let placed_on_1: BTreeSet<u16> = replica_slots(&cluster_status(&nodes[0]).unwrap())
        .iter()
        .filter(|(_, n)| *n == 1)
        .map(|(p, _)| *p as u16)
        .collect();
    assert!(placed_on_1.len() < 8, "node 1 gave no replica away: {placed_on_1:?}");
    let groups_on_1 = groups_expected(&cluster_status(&nodes[0]).unwrap(), 4)[0];
    // Node 1 deletes the data of each partition it gave away (a pass a second).
    let gave_away = 8 - placed_on_1.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_sum(&nodes[0], "ringchat_partitions_reclaimed_total").await < gave_away {
        assert!(
            Instant::now() < deadline,
            "node 1 did not delete the partitions it gave away"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(nodes[0].terminate().map(|s| s.success()), Some(true));
    assert_eq!(partitions_stored(&nodes[0].data_dir), placed_on_1);
    assert_eq!(set_groups_stored(&nodes[0].data_dir).len() as u64, groups_on_1);
    nodes[0].restart().await;
    wait_for_status(&nodes[1], Duration::from_secs(60), |s| settled(s, 4, 3)).await;
    // Everything written before is readable through the new node.
    let alice4 = nodes[3].http().with_token(&alice.token);
    for cid in &dms {
        let page = alice4.history(cid, None, None, None).await.unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }
    for (cid, sent) in &long_logs {
        let mut seqs = Vec::new();
        let mut before = None;
        for _ in 0..10 {
            let page = alice4.history(cid, before, None, None).await.unwrap();
            if page.messages.is_empty() {
                break;
            }
            before = page.messages.iter().map(|m| m.seq).min();
            seqs.extend(page.messages.iter().map(|m| m.seq));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=*sent as u64).collect::<Vec<_>>(), "history of {cid}");
    }
    // Remove node 4 again: drained first, then dead, and the data is still all there.
    remove_node(&nodes[1], 4);
    let status = cluster_status(&nodes[1]).unwrap();
    assert_eq!(member(&status, 4)["state"], "dead");
    assert!(replica_slots(&status).iter().all(|(_, n)| *n != 4));
    let alice2 = nodes[1].http().with_token(&alice.token);
    for cid in &dms {
        assert_eq!(alice2.history(cid, None, None, None).await.unwrap().messages.len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_declared_after_the_grace_period_and_its_replicas_rebuilt_then_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, &["--dead-after-secs", "3"]).await;
    wait_for_status(&nodes[0], Duration::from_secs(60), |s| settled(s, 3, 3)).await;
    let alice = new_user(&nodes[0].base, "alice").await;
    let bob = new_user(&nodes[1].base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    alice.http.send_message(&dm.channel_id, "before", "m1").await.unwrap();
    nodes[2].kill9();
    // Node 3 is declared dead and every partition is rebuilt on the two live nodes.
    let status = wait_for_status(&nodes[0], Duration::from_secs(60), |s| healed_without(s, 3, &[3])).await;
    assert!(status["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["replicas"].as_array().unwrap().len() == 2));
    alice
        .http
        .send_message(&dm.channel_id, "while 3 is dead", "m2")
        .await
        .unwrap();
    // It comes back with its data dir: active again, three replicas again, nothing lost.
    nodes[2].restart().await;
    wait_for_status(&nodes[0], Duration::from_secs(90), |s| settled(s, 3, 3)).await;
    assert_eq!(
        texts_read_at(&nodes[2], &bob, &dm.channel_id).await,
        ["before", "while 3 is dead"]
    );
}

/// True when every partition's actual Raft voters (from its leader) and committed replicas
/// are exactly `live`, with no learners left and a leader among them.
fn replicated_on_exactly(s: &Value, live: &[u64]) -> bool {
    let want: BTreeSet<u64> = live.iter().copied().collect();
    let ids = |v: &Value| -> BTreeSet<u64> { v.as_array().into_iter().flatten().filter_map(Value::as_u64).collect() };
    s["partitions"].as_array().is_some_and(|ps| {
        !ps.is_empty()
            && ps.iter().all(|p| {
                ids(&p["voters"]) == want
                    && ids(&p["replicas"]) == want
                    && ids(&p["learners"]).is_empty()
                    && p["leader"].as_u64().is_some_and(|l| want.contains(&l))
            })
    })
}

/// Replacing a dead node: kill -9 one of three under load, add a fourth while it is dead.
/// Once the grace runs out the new node takes every replica of the dead one, each move
/// committed on its own, so that within the grace + 30 s every partition has three live
/// voters; then `cluster remove` works on the dead node and leaves no trace of it in the
/// layout. Nothing acked is lost, duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_while_one_is_dead_takes_its_replicas_and_the_dead_one_can_be_removed() {
    const GRACE: Duration = Duration::from_secs(10);
    let dir = tempfile::tempdir().unwrap();
    let (nodes, work, killed) = kill_one_of_three_and_add_a_fourth(dir.path(), GRACE, Duration::from_secs(2)).await;
    // While moves wait for the verdict on node 3 (or run, 8 at a time), status shows the
    // partitions still to move: their target is not their committed replicas, they count as
    // moving, and the rebalance's total already includes them.
    let during = wait_for_status(&nodes[0], GRACE + Duration::from_secs(30), |s| {
        s["summary"]["pending"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    let pending: Vec<&Value> = during["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pending"] == true)
        .collect();
    assert_eq!(pending.len(), during["summary"]["pending"].as_array().unwrap().len());
    for p in &pending {
        assert_ne!(p["target"], p["replicas"], "{p}");
        assert_eq!(p["moving"], true, "{p}");
    }
    let rebalance = &during["summary"]["rebalance"];
    assert!(
        rebalance["total"].as_u64().unwrap() >= rebalance["done"].as_u64().unwrap() + pending.len() as u64,
        "{rebalance} with {} pending",
        pending.len()
    );
    let healed = wait_for_status(
        &nodes[0],
        (GRACE + Duration::from_secs(30)).saturating_sub(killed.elapsed()),
        |s| replicated_on_exactly(s, &[1, 2, 4]),
    )
    .await;
    println!(
        "replacement: every partition on live voters [1, 2, 4] {:?} after kill -9 (grace {GRACE:?})",
        killed.elapsed()
    );
    assert_eq!(member(&healed, 3)["state"], "dead");
    // Settled: every partition is where it belongs.
    let after = wait_for_status(&nodes[0], Duration::from_secs(10), |s| {
        s["summary"]["pending"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    for p in after["partitions"].as_array().unwrap() {
        assert_eq!(p["target"], p["replicas"], "{p}");
    }
    // Removing the dead node returns once it is out of the layout and the meta group.
    remove_node(&nodes[0], 3);
    assert!(replicated_on_exactly(&cluster_status(&nodes[1]).unwrap(), &[1, 2, 4]));
    finish_and_check(work, &[&nodes[0], &nodes[1], &nodes[3]]).await;
}

/// The same while the operator removes the dead node before its grace has run out: the
/// removal drains it at once (its replicas are rebuilt from the survivors, nothing waits for
/// the verdict) and `cluster remove` returns within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_node_that_just_died_rebuilds_its_replicas_on_a_new_node_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, work, killed) =
        kill_one_of_three_and_add_a_fourth(dir.path(), Duration::from_secs(30), Duration::ZERO).await;
    remove_node(&nodes[0], 3);
    let removed = killed.elapsed();
    let status = wait_for_status(&nodes[1], Duration::from_secs(10), |s| {
        replicated_on_exactly(s, &[1, 2, 4])
    })
    .await;
    println!("removal of a node that just died: done {removed:?} after kill -9 (grace 30 s)");
    assert!(
        removed < Duration::from_secs(30),
        "removal took {removed:?}: it waited for the grace"
    );
    assert_eq!(member(&status, 3)["state"], "dead");
    finish_and_check(work, &[&nodes[0], &nodes[1], &nodes[3]]).await;
}

/// Three nodes (64 partitions, the default count: a replacement moves 64 replicas, not the
/// tests' usual 8) under 6 writers that go through nodes 1 and 2 only, so no client waits on
/// the node that dies; node 3 is killed with kill -9 and, `join_after` later, node 4 joins.
/// Returns the four nodes, the running writers and the moment of the kill.
async fn kill_one_of_three_and_add_a_fourth(
    dir: &std::path::Path,
    dead_after: Duration,
    join_after: Duration,
) -> (Vec<NodeProcess>, Workload, Instant) {
    let grace = dead_after.as_secs().to_string();
    let extra = ["--dead-after-secs", grace.as_str(), "--partitions", "64"];
    let mut nodes = start_cluster(dir, 3, &extra).await;
    let writer_bases: Vec<String> = nodes[..2].iter().map(|n| n.base.clone()).collect();
    let work = Workload::start(&writer_bases, 6).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    nodes[2].kill9();
    let killed = Instant::now();
    tokio::time::sleep(join_after).await;
    let joined = start_cluster_node(dir, 4, Some(&nodes[0].cluster_addr), &extra).await;
    nodes.push(joined);
    (nodes, work, killed)
}

/// Sends more than one AppendEntries batch of messages (`FILL_BY_LOG_MAX_ENTRIES`) into a
/// group of every one of the `partitions` partitions, one partition per task; returns the
/// groups with what each holds. Groups, not DMs: a DM needs a new user per channel, and
/// sign-ups are rate-limited per address.
async fn fill_every_partition_log(alice: &TestUser, partitions: u16) -> Vec<(String, usize)> {
    let per_log = ringchat_cluster::meta::snapshot_fill::FILL_BY_LOG_MAX_ENTRIES as usize + 2;
    let mut group_of: std::collections::BTreeMap<u16, String> = Default::default();
    for i in 0..200 {
        if group_of.len() == partitions as usize {
            break;
        }
        let group = alice.http.create_group(&format!("fill {i}"), &[]).await.unwrap();
        let p = ringchat_cluster::placement::partition_of(&group.channel_id, partitions);
        group_of.entry(p).or_insert(group.channel_id);
    }
    assert_eq!(group_of.len(), partitions as usize, "a group in every partition");
    let mut tasks = Vec::new();
    for channel in group_of.into_values() {
        let http = alice.http.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..per_log {
                http.send_message(&channel, &format!("fill {j}"), &format!("f-{channel}-{j}"))
                    .await
                    .unwrap();
            }
            (channel, per_log)
        }));
    }
    let mut filled = Vec::new();
    for task in tasks {
        filled.push(task.await.unwrap());
    }
    filled
}

/// Stops `work` and checks every acked message on each of `live`: none lost, duplicated, out
/// of order or with gaps.
async fn finish_and_check(work: Workload, live: &[&NodeProcess]) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (users, channels, history) = work.finish().await;
    let bases: Vec<String> = live.iter().map(|n| n.base.clone()).collect();
    let v = check(&bases, &users, &channels, &history).await;
    println!("checker: {}", summary(&history, &v));
    assert!(v.acked > 50, "too few acked to mean anything: {}", v.acked);
    assert_eq!((v.lost, v.duplicates, v.gaps, v.order_mismatches), (0, 0, 0, 0));
}

/// How many Raft groups each node runs (`ringchat_raft_groups`), in order.
async fn groups_running(nodes: &[NodeProcess]) -> Vec<u64> {
    let mut running = Vec::new();
    for node in nodes {
        running.push(metric_sum(node, "ringchat_raft_groups").await);
    }
    running
}

/// The texts of `channel`'s newest page as `user` reads them through `node`.
async fn texts_read_at(node: &NodeProcess, user: &TestUser, channel: &str) -> Vec<String> {
    let page = node
        .http()
        .with_token(&user.token)
        .history(channel, None, None, None)
        .await
        .unwrap();
    page.messages.into_iter().map(|m| m.text).collect()
}

/// True when `s` shows `node` dead, no partition replica on any of `gone`, and a leader for
/// every partition.
fn healed_without(s: &Value, node: u64, gone: &[u64]) -> bool {
    let dead = s["members"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["node_id"] == node && m["state"] == "dead"));
    dead && replica_slots(s).iter().all(|(_, n)| !gone.contains(n))
        && s["partitions"]
            .as_array()
            .is_some_and(|ps| ps.iter().all(|p| p["leader"].as_u64().is_some()))
}

/// Six nodes: the first five are the meta voters, the sixth a learner. Three of the voters die
/// one after another. Without replacing dead voters the third death would leave two of five
/// voters alive: no meta quorum, so the third node would never be declared dead and its
/// replicas never rebuilt. With the sixth node promoted in the first dead voter's place, the
/// cluster heals after every death and keeps serving what was written before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_keeps_healing_after_losing_three_of_its_five_meta_voters() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 6, &["--dead-after-secs", "3"]).await;
    let alice = new_user(&nodes[0].base, "alice").await;
    let bob = new_user(&nodes[1].base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    alice.http.send_message(&dm.channel_id, "before", "m1").await.unwrap();

    let mut gone = Vec::new();
    for victim in [5u64, 4, 3] {
        nodes[victim as usize - 1].kill9();
        gone.push(victim);
        wait_for_status(&nodes[0], Duration::from_secs(90), |s| healed_without(s, victim, &gone)).await;
    }

    // Nodes 1, 2 and 6 are left and hold every replica.
    let status = cluster_status(&nodes[0]).unwrap();
    assert!(replica_slots(&status).iter().all(|(_, n)| [1, 2, 6].contains(n)));
    alice
        .http
        .send_message(&dm.channel_id, "after three deaths", "m2")
        .await
        .unwrap();
    assert_eq!(
        texts_read_at(&nodes[5], &bob, &dm.channel_id).await,
        ["before", "after three deaths"]
    );
}

/// Lines in `log` from byte `from` on.
fn log_lines_since(log: &std::path::Path, from: usize) -> Vec<String> {
    let text = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(&text[from.min(text.len())..])
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surviving_node_writes_few_log_lines_while_a_peer_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, &[]).await;
    let alice = new_user(&nodes[0].base, "alice").await;
    let bob = new_user(&nodes[0].base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap().channel_id;
    let log = nodes[0].data_dir.with_extension("log");
    let from = std::fs::metadata(&log).map(|m| m.len() as usize).unwrap_or(0);
    // Node 3 dies; node 1 keeps taking writes for 60 s (past the 30 s dead-after grace, so
    // the survivors also rebuild its replicas meanwhile).
    nodes[2].kill9();
    let down = Instant::now();
    let mut acked = 0;
    let mut i = 0;
    while down.elapsed() < Duration::from_secs(60) {
        i += 1;
        if alice
            .http
            .send_message(&dm, "while down", &format!("d{i}"))
            .await
            .is_ok()
        {
            acked += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lines = log_lines_since(&log, from);
    let mut by_message: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for l in &lines {
        // The message text: what follows the level and the target.
        let key = l.split(": ").nth(1).unwrap_or(l).chars().take(60).collect::<String>();
        *by_message.entry(key).or_default() += 1;
    }
    println!(
        "{} log lines in 60 s with a peer down ({acked} sends acked): {by_message:#?}",
        lines.len()
    );
    assert!(acked > 100, "the survivors stopped taking writes: {acked} acked");
    assert!(
        lines.len() < 100,
        "{} log lines in 60 s with one peer down: {by_message:#?}",
        lines.len()
    );
    let outage = lines
        .iter()
        .find(|l| l.contains("peer unreachable") && l.contains("groups_affected="))
        .unwrap_or_else(|| panic!("the outage itself was not logged: {by_message:#?}"));
    // It says how much of this node the outage touches: every group it shares with the peer.
    let affected: u64 = outage
        .split("groups_affected=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(affected > 0, "no groups named as affected: {outage}");
}

/// Partitions that `status` says node `id` leads.
fn led_by(s: &Value, id: u64) -> usize {
    leaders_per_node(s).get(&id).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_leaderships_over_and_a_rolling_restart_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, &[]).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let work = Workload::start(&bases, 6).await;
    for i in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let id = i as u64 + 1;
        let witness = (i + 1) % 3;
        let before = led_by(&cluster_status(&nodes[witness]).unwrap(), id);
        assert!(before > 0, "node {id} leads nothing to hand over");
        let exit = nodes[i].terminate();
        assert!(
            exit.is_some_and(|s| s.success()),
            "node {id} stops cleanly on SIGTERM: {exit:?}"
        );
        let stopped = Instant::now();
        // A leader that just exits stays "leader" for its followers until their election
        // timeout (≥ 1 s); one that handed over first is already replaced.
        let mut still = before;
        while stopped.elapsed() < Duration::from_millis(700) {
            if let Ok(s) = cluster_status(&nodes[witness]) {
                still = led_by(&s, id);
                if still == 0 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "node {id}: led {before}, still listed as leader of {still} after {:?}",
            stopped.elapsed()
        );
        assert_eq!(
            still, 0,
            "node {id} stopped while still leading {still} of {before} partitions"
        );
        nodes[i].restart().await;
        wait_for_status(&nodes[(i + 1) % 3], Duration::from_secs(60), |s| {
            settled(s, 3, 3) && leaders_on_preferred_replicas(s)
        })
        .await;
    }
    let (users, channels, history) = work.finish().await;
    let v = check(&bases, &users, &channels, &history).await;
    println!("rolling restart checker: {}", summary(&history, &v));
    assert!(v.acked > 50, "too few acked to mean anything: {}", v.acked);
    assert_eq!((v.lost, v.duplicates, v.gaps, v.order_mismatches), (0, 0, 0, 0));
    assert!(
        history.max_unavailable < Duration::from_secs(5),
        "a send waited {:?} during the rolling restart",
        history.max_unavailable
    );
}

/// Sum of the counter `name{method="METHOD",…}` over its label sets in node `base`'s `/metrics`.
async fn peer_calls(base: &str, method: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let prefix = "ringchat_peer_call_seconds_count{";
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!("method=\"{method}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_sends_no_raft_traffic_for_its_partitions_but_still_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, &[]).await;
    wait_for_status(&nodes[0], Duration::from_secs(60), |s| settled(s, 3, 3)).await;
    let alice = new_user(&nodes[0].base, "alice").await;
    let bob = new_user(&nodes[1].base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap().channel_id;
    alice.http.send_message(&dm, "before", "q-1").await.unwrap();
    // Quiet: once replication has settled, the 8 partition groups send nothing; one beat per node pair
    // every 250 ms carries liveness (with openraft's heartbeats: 8 × 4 AppendEntries a second
    // to each peer from the groups a node leads).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ae_before, beats_before) = (
        peer_calls(&nodes[0].base, "APPEND_ENTRIES").await,
        peer_calls(&nodes[0].base, "BEAT").await,
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let appends = peer_calls(&nodes[0].base, "APPEND_ENTRIES").await - ae_before;
    let beats = peer_calls(&nodes[0].base, "BEAT").await - beats_before;
    println!("idle 5 s on node 1: {appends} AppendEntries calls, {beats} beats");
    // The meta group keeps openraft's heartbeats (one group); the 8 partitions add none.
    assert!(appends <= 5.0 * 4.0 * 2.0 + 4.0, "{appends} AppendEntries in 5 idle s");
    assert!(beats >= 2.0 * 5.0 * 3.0, "{beats} beats in 5 s to 2 peers");
    // A quiet group's first write renews the leader's lease and goes through.
    alice.http.send_message(&dm, "after the quiet", "q-2").await.unwrap();
    // And a dead leader is still replaced: kill the node that leads the DM's partition.
    let status = cluster_status(&nodes[2]).unwrap();
    let p = status["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["leader"].as_u64() == Some(1))
        .map(|p| p["partition"].as_u64().unwrap())
        .expect("node 1 leads a partition");
    nodes[0].kill9();
    let started = Instant::now();
    let moved = wait_for_status(&nodes[2], Duration::from_secs(20), |s| {
        s["partitions"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|q| q["partition"].as_u64() == Some(p) && q["leader"].as_u64().is_some_and(|l| l != 1))
        })
    })
    .await;
    println!(
        "partition {p} led by a survivor after {:?}: {}",
        started.elapsed(),
        moved["partitions"][p as usize]["leader"]
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failover took {:?}",
        started.elapsed()
    );
    // Nothing acked was lost: both messages are in the history, read through a survivor.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match bob.http.history(&dm, None, None, Some(10)).await {
            Ok(page) if page.messages.len() == 2 => break,
            other => assert!(Instant::now() < deadline, "history after failover: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A data dir with one Raft group per partition (a node that ran without peers, as every
/// node of the releases before groups named by replica sets did) joins the group world: the
/// node restarts with a cluster secret, a second node joins under load, and every partition
/// moves from its own group into the group of its replica set, copied to the new node at its
/// fence. The two nodes end up running one group per replica set (two) instead of one per
/// partition (eight), the partitions' own groups are gone from the disk, history written
/// before is intact, and nothing acked under load is lost, duplicated or reordered; a node
/// restarted on its data dir reopens the groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_their_own_groups_move_into_one_group_per_replica_set_without_losing_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut alone = NodeProcess::start(&dir.path().join("n1"), &["--node-id", "1"]).await;
    assert_eq!(
        metric_sum(&alone, "ringchat_raft_groups").await,
        8,
        "one group per partition"
    );
    let alice = new_user(&alone.base, "alice").await;
    let bob = new_user(&alone.base, "bob").await;
    let dm = alice.http.open_dm(&bob.user_id).await.unwrap();
    for i in 0..5 {
        alice
            .http
            .send_message(&dm.channel_id, &format!("alone {i}"), &format!("a{i}"))
            .await
            .unwrap();
    }
    // The same node, on the same addresses, now with a cluster secret.
    assert_eq!(alone.terminate().map(|s| s.success()), Some(true));
    alone
        .extra
        .extend(["--cluster-secret".to_string(), CLUSTER_SECRET.to_string()]);
    alone.restart().await;
    let first = alone;
    let work = Workload::start(std::slice::from_ref(&first.base), 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = start_cluster_node(dir.path(), 2, Some(&first.cluster_addr), &[]).await;
    let mut nodes = vec![first, second];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let running = groups_running(&nodes).await;
        let status = cluster_status(&nodes[0]).unwrap();
        if running == [2, 2] && settled(&status, 2, 2) {
            break;
        }
        assert!(Instant::now() < deadline, "groups running {running:?}; status {status}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    finish_and_check(work, &[&nodes[0], &nodes[1]]).await;
    // History from before reads the same on the new node; chat goes on across the nodes.
    let bob2 = TestUser {
        http: nodes[1].http().with_token(&bob.token),
        ..bob
    };
    let texts = texts_read_at(&nodes[1], &bob2, &dm.channel_id).await;
    assert_eq!(texts, (0..5).map(|i| format!("alone {i}")).collect::<Vec<_>>());
    bob2.http.send_message(&dm.channel_id, "together", "t1").await.unwrap();
    nodes[1].restart().await;
    wait_for_status(&nodes[0], Duration::from_secs(60), |s| settled(s, 2, 2)).await;
    assert_eq!(metric_sum(&nodes[1], "ringchat_raft_groups").await, 2);
    alice
        .http
        .send_message(&dm.channel_id, "after a restart", "r2")
        .await
        .unwrap();
    let texts = texts_read_at(&nodes[1], &bob2, &dm.channel_id).await;
    assert_eq!(texts.last().map(String::as_str), Some("after a restart"));
    assert_eq!(texts.len(), 7, "{texts:?}");
    // The partitions' own groups left no Raft state behind: node 1 keeps its partitions'
    // data and the state of the two groups.
    assert_eq!(nodes[0].terminate().map(|s| s.success()), Some(true));
    assert_eq!(set_groups_stored(&nodes[0].data_dir).len(), 2);
    let store = ringchat_storage::Store::open(&nodes[0].data_dir).unwrap();
    for p in 0..8u16 {
        assert!(
            store.log.prefix(p.to_be_bytes()).next().is_none(),
            "partition {p}'s own group left its log"
        );
    }
}

/// Moves between groups survive a crash: a third node joins two under load (replication 3),
/// and is killed with -9 as soon as the first partition copy to it finished, then restarted
/// on its data dir: the moves cut short are run again, every node ends on one group per
/// replica set, and nothing acked is lost, duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_cut_short_by_a_kill_of_the_new_node_are_finished_after_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 2, &[]).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let work = Workload::start(&bases, 4).await;
    nodes.push(start_cluster_node(dir.path(), 3, Some(&nodes[0].cluster_addr), &[]).await);
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric_sum(&nodes[2], "ringchat_partition_copies_total").await < 1 {
        assert!(Instant::now() < deadline, "no partition was copied to node 3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes[2].kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes[2].restart().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = cluster_status(&nodes[0]).unwrap();
        let running = groups_running(&nodes).await;
        let want = groups_expected(&status, 3);
        if settled(&status, 3, 3) && running == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "groups running {running:?}, replica sets {want:?}; status {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    finish_and_check(work, &[&nodes[0], &nodes[1], &nodes[2]]).await;
}
