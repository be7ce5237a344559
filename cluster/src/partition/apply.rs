//! Applying one command to a partition's state: the deterministic heart of the write path.
//! Every replica runs exactly this on the same log and reaches the same bytes.

use ringchat_storage::StorageError;

use super::overlay::Overlay;
use super::tables as t;
use crate::command::{ApplyError, Command, Response};
use crate::meta::{Layout, MoveRecord};
use crate::model::*;

/// How many chars of a message a push preview carries.
pub const PUSH_PREVIEW_CHARS: usize = 100;

/// Applies the plain command `cmd` to partition `p`, staging writes in `ov` (log entries go
/// through `ownership::apply_entry`, which unpacks them).
pub fn apply_command(ov: &mut Overlay<'_>, p: u16, cmd: &Command) -> Result<Response, StorageError> {
    Ok(match cmd {
        Command::ClaimUsername { username, record } => {
            let key = t::username(p, username);
            match ov.get_record::<UsernameRecord>(&key)? {
                Some(existing) if existing.user_id == record.user_id => Response::Done,
                Some(_) => Response::Rejected(ApplyError::Conflict),
                None => {
                    ov.put_record(key, record);
                    Response::Done
                }
            }
        }
        Command::EnsureUser { user } => {
            let key = t::user(p, &user.user_id);
            if ov.get(&key)?.is_none() {
                ov.put_record(key, user);
            }
            Response::Done
        }
        Command::CreateDevice {
            user_id,
            device,
            cursors,
        } => {
            let key = t::device(p, user_id, &device.device_id);
            if ov.get(&key)?.is_none() {
                ov.put_record(key, device);
                for (channel_id, seq) in cursors {
                    ov.put_record(t::cursor(p, user_id, &device.device_id, channel_id), seq);
                }
            }
            Response::Done
        }
        Command::SetPush {
            user_id,
            device_id,
            push,
        } => {
            let key = t::device(p, user_id, device_id);
            match ov.get_record::<DeviceRecord>(&key)? {
                Some(mut device) => {
                    device.push = Some(push.clone());
                    ov.put_record(key, &device);
                    Response::Done
                }
                None => Response::Rejected(ApplyError::NotFound),
            }
        }
        Command::SetLastSeen { user_id, ms } => {
            let key = t::user(p, user_id);
            if let Some(mut user) = ov.get_record::<UserRecord>(&key)? {
                if user.last_seen.is_none_or(|old| old < *ms) {
                    user.last_seen = Some(*ms);
                    ov.put_record(key, &user);
                }
            }
            Response::Done
        }
        Command::CreateSession { token_hash, session } => {
            ov.put_record(t::session(p, token_hash), session);
            Response::Done
        }
        Command::DeleteSession { token_hash } => {
            ov.delete(t::session(p, token_hash));
            Response::Done
        }
        Command::CreateChannel { channel, max_members } => {
            let key = t::channel(p, &channel.channel_id);
            match ov.get_channel(&key)? {
                Some(existing) => Response::Channel {
                    channel: existing,
                    changed: false,
                },
                None if channel.members.len() > *max_members => Response::Rejected(ApplyError::GroupFull),
                None => {
                    ov.put_channel(key, channel);
                    Response::Channel {
                        channel: channel.clone(),
                        changed: true,
                    }
                }
            }
        }
        Command::AddMember {
            channel_id,
            actor,
            user_id,
            max_members,
        } => {
            let key = t::channel(p, channel_id);
            let mut channel = match group_for_member_change(ov, &key, actor)? {
                Ok(channel) => channel,
                Err(refused) => return Ok(refused),
            };
            if channel.members.contains(user_id) {
                Response::Channel {
                    channel,
                    changed: false,
                }
            } else if channel.members.len() >= *max_members {
                Response::Rejected(ApplyError::GroupFull)
            } else {
                channel.members.push(user_id.clone());
                ov.put_channel(key, &channel);
                Response::Channel { channel, changed: true }
            }
        }
        Command::RemoveMember {
            channel_id,
            actor,
            user_id,
        } => {
            let key = t::channel(p, channel_id);
            let mut channel = match group_for_member_change(ov, &key, actor)? {
                Ok(channel) => channel,
                Err(refused) => return Ok(refused),
            };
            if actor != user_id && *actor != channel.creator {
                Response::Rejected(ApplyError::Forbidden)
            } else if !channel.members.contains(user_id) {
                Response::Rejected(ApplyError::NotFound)
            } else {
                channel.members.retain(|m| m != user_id);
                ov.put_channel(key, &channel);
                Response::Channel { channel, changed: true }
            }
        }
        Command::LinkUserChannel {
            user_id,
            channel_id,
            join_seq,
        } => {
            let key = t::user_channel(p, user_id, channel_id);
            if ov.get(&key)?.is_none() {
                ov.put_record(key, &UserChannelRecord { join_seq: *join_seq });
            }
            Response::Done
        }
        Command::UnlinkUserChannel { user_id, channel_id } => {
            ov.delete(t::user_channel(p, user_id, channel_id));
            Response::Done
        }
        Command::SendMessage {
            channel_id,
            sender_id,
            text,
            client_msg_id,
            ts,
            push,
        } => send_message(ov, p, channel_id, sender_id, text, client_msg_id, *ts, *push)?,
        Command::Ack {
            user_id,
            device_id,
            channel_id,
            seq,
        } => raise_position(ov, t::cursor(p, user_id, device_id, channel_id), *seq)?,
        Command::SetReadMarker {
            channel_id,
            user_id,
            seq,
        } => raise_position(ov, t::read_marker(p, channel_id, user_id), *seq)?,
        Command::PushDone { channel_id, seq } => {
            ov.delete(t::push_outbox(p, channel_id, *seq));
            Response::Done
        }
        Command::MetaUpsertNode { node } => {
            ov.put_record(t::meta_node(p, node.node_id), node);
            Response::Done
        }
        Command::MetaSetLayout { layout } => {
            let key = t::meta_layout(p);
            let current = ov.get_record::<Layout>(&key)?.unwrap_or_default();
            if layout.version > current.version {
                ov.put_record(key, layout);
            }
            Response::Done
        }
        // What a log entry holds around plain commands is the group's business
        // (`ownership::apply_entry`), never a partition's.
        Command::Batch(_)
        | Command::For { .. }
        | Command::Adopt { .. }
        | Command::Fence { .. }
        | Command::Release { .. } => Response::Rejected(ApplyError::Invalid(format!("{cmd} is not a plain command"))),
        Command::MetaRecordMove { partition, record } => {
            let key = t::meta_move(p, *partition);
            let newer = match ov.get_record::<MoveRecord>(&key)? {
                // A finish completes only the start it names; an older start (a deposed meta
                // leader's late proposal) never replaces a newer one.
                Some(current) if record.finished_ms.is_some() => {
                    current.started_ms == record.started_ms && current.to == record.to
                }
                Some(current) => record.started_ms > current.started_ms,
                None => true,
            };
            if newer {
                ov.put_record(key, record);
            }
            Response::Done
        }
        Command::MetaDefineGroup { group } => crate::meta::group_records::define(ov, p, group)?,
        Command::MetaDropGroup { id } => crate::meta::group_records::drop(ov, p, *id)?,
        Command::MetaSetHome { partition, group } => crate::meta::group_records::set_home(ov, p, *partition, *group)?,
        Command::EnsureDmIdKey { key } => {
            let at = t::dm_id_key(p);
            match ov.get_record::<Vec<u8>>(&at)? {
                Some(stored) => Response::Key(stored),
                None => {
                    ov.put_record(at, key);
                    Response::Key(key.clone())
                }
            }
        }
    })
}

/// The group at `key` for a member change by `actor`, or the refusal: it must exist, `actor`
/// must be a member, and a DM's members are fixed.
fn group_for_member_change(
    ov: &Overlay<'_>,
    key: &[u8],
    actor: &str,
) -> Result<Result<ChannelRecord, Response>, StorageError> {
    // A missing channel is refused like one the actor is not in (PROTOCOL v1.1): outsiders
    // must not learn which channels exist.
    let Some(channel) = ov.get_channel(key)? else {
        return Ok(Err(Response::Rejected(ApplyError::Forbidden)));
    };
    if !channel.members.iter().any(|m| m == actor) {
        return Ok(Err(Response::Rejected(ApplyError::Forbidden)));
    }
    if channel.kind == ChannelKind::Dm {
        return Ok(Err(Response::Rejected(ApplyError::Invalid(
            "the members of a DM are fixed".into(),
        ))));
    }
    Ok(Ok(channel))
}

/// Raises the position at `key` (a device cursor or a read marker) to `seq`, never lowering
/// it, and answers the position now stored.
fn raise_position(ov: &mut Overlay<'_>, key: Vec<u8>, seq: u64) -> Result<Response, StorageError> {
    let old = ov.get_record::<u64>(&key)?.unwrap_or(0);
    if seq > old {
        ov.put_record(key, &seq);
    }
    Ok(Response::Position(old.max(seq)))
}

#[allow(clippy::too_many_arguments)]
fn send_message(
    ov: &mut Overlay<'_>,
    p: u16,
    channel_id: &str,
    sender_id: &str,
    text: &str,
    client_msg_id: &Option<String>,
    ts: u64,
    push: bool,
) -> Result<Response, StorageError> {
    let key = t::channel(p, channel_id);
    // Missing and not-a-member are one answer (PROTOCOL v1.1).
    let Some(mut channel) = ov.get_channel(&key)? else {
        return Ok(Response::Rejected(ApplyError::Forbidden));
    };
    if !channel.members.iter().any(|m| m == sender_id) {
        return Ok(Response::Rejected(ApplyError::Forbidden));
    }
    if let Some(cmid) = client_msg_id {
        let idem = t::idempotency(p, channel_id, sender_id, cmid);
        if let Some(seq) = ov.get_record::<u64>(&idem)? {
            if let Some(message) = ov.get_record::<MessageRecord>(&t::message(p, channel_id, seq))? {
                return Ok(Response::Sent {
                    message,
                    members: channel.members,
                    duplicate: true,
                });
            }
        }
    }
    let seq = channel.last_seq + 1;
    // Never below the previous message's: a leader whose clock is behind the last one's (a
    // new leader after a failover, a skewed node) must not make time run backwards in a channel.
    let ts = ts.max(channel.last_ts);
    let message = MessageRecord {
        channel_id: channel_id.to_string(),
        seq,
        sender_id: sender_id.to_string(),
        text: text.to_string(),
        ts,
        client_msg_id: client_msg_id.clone(),
    };
    ov.put_record(t::message(p, channel_id, seq), &message);
    if let Some(cmid) = client_msg_id {
        ov.put_record(t::idempotency(p, channel_id, sender_id, cmid), &seq);
    }
    // The position moves with the message; the record itself is not rewritten
    // (`channel_position.rs`).
    channel.last_seq = seq;
    channel.last_ts = ts;
    let members = channel.members.clone();
    ov.advance_channel(key, channel);
    let recipients: Vec<String> = members.iter().filter(|m| *m != sender_id).cloned().collect();
    if push && !recipients.is_empty() {
        let outbox = PushOutboxRecord {
            channel_id: channel_id.to_string(),
            seq,
            sender_id: sender_id.to_string(),
            recipients,
            preview: text.chars().take(PUSH_PREVIEW_CHARS).collect(),
        };
        ov.put_record(t::push_outbox(p, channel_id, seq), &outbox);
    }
    Ok(Response::Sent {
        message,
        members,
        duplicate: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::ownership::{apply_entry, Ownership};
    use ringchat_storage::Store;

    fn group(members: &[&str]) -> ChannelRecord {
        ChannelRecord {
            channel_id: "g_1".into(),
            kind: ChannelKind::Group,
            name: Some("g".into()),
            creator: members[0].into(),
            members: members.iter().map(|s| s.to_string()).collect(),
            last_seq: 0,
            created_ms: 1,
            last_ts: 0,
        }
    }

    /// Applies `cmd` as a log entry of group 3 (which carries partition 3 unless its
    /// ownership record says otherwise).
    fn run(store: &Store, cmd: Command) -> Response {
        let mut ov = Overlay::new(&store.sm);
        let mut owned = Ownership::load(&ov, 3).unwrap();
        let r = apply_entry(&mut ov, 3, 1, &mut owned, &cmd).unwrap();
        ov.commit(&store.db).unwrap();
        r
    }

    fn send(cmid: &str, sender: &str) -> Command {
        Command::SendMessage {
            channel_id: "g_1".into(),
            sender_id: sender.into(),
            text: "hi".into(),
            client_msg_id: Some(cmid.into()),
            ts: 7,
            push: true,
        }
    }

    /// A fresh store holding group `g_1` of `a` and `b` (the directory lives as long as it).
    fn store_with_group() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        run(
            &store,
            Command::CreateChannel {
                channel: group(&["a", "b"]),
                max_members: 100,
            },
        );
        (dir, store)
    }

    #[test]
    fn a_move_record_keeps_the_newest_start_and_only_its_own_finish() {
        let (_dir, store) = store_with_group();
        let record = |to: u64, started_ms, finished_ms| MoveRecord {
            from: vec![1, 2, 3],
            to: vec![1, 2, to],
            started_ms,
            finished_ms,
        };
        let stored = || -> Option<MoveRecord> {
            let v = store.sm.get(t::meta_move(3, 7)).unwrap()?;
            Some(crate::codec::decode(&v).unwrap())
        };
        let put = |r: MoveRecord| {
            run(
                &store,
                Command::MetaRecordMove {
                    partition: 7,
                    record: r,
                },
            )
        };
        put(record(4, 100, None));
        assert_eq!(stored(), Some(record(4, 100, None)));
        // A late start from a deposed meta leader, and a finish of another start: ignored.
        put(record(5, 50, None));
        put(record(5, 50, Some(60)));
        assert_eq!(stored(), Some(record(4, 100, None)));
        // Its own finish completes it; a newer start replaces it.
        put(record(4, 100, Some(900)));
        assert_eq!(stored(), Some(record(4, 100, Some(900))));
        put(record(5, 1_000, None));
        assert_eq!(stored(), Some(record(5, 1_000, None)));
    }

    #[test]
    fn a_packed_entry_applies_its_commands_in_order_and_answers_each() {
        let (_dir, store) = store_with_group();
        let batch = Command::Batch(vec![
            send("c1", "a"),
            send("c2", "b"),
            send("c1", "a"),
            Command::Batch(vec![send("c9", "a")]),
            send("c3", "stranger"),
        ]);
        let Response::Batch(answers) = run(&store, batch) else {
            panic!("a batch is answered with a batch");
        };
        assert_eq!(answers.len(), 5, "one answer per command");
        let seq = |r: &Response| match r {
            Response::Sent { message, duplicate, .. } => (message.seq, *duplicate),
            other => panic!("{other:?}"),
        };
        assert_eq!(seq(&answers[0]), (1, false));
        assert_eq!(seq(&answers[1]), (2, false));
        // A retry inside the same entry finds the write staged before it.
        assert_eq!(seq(&answers[2]), (1, true));
        assert!(matches!(&answers[3], Response::Rejected(ApplyError::Invalid(_))));
        assert!(matches!(&answers[4], Response::Rejected(ApplyError::Forbidden)));
        // The next entry continues the sequence: nothing of the batch was lost or doubled.
        assert_eq!(seq(&run(&store, send("c4", "a"))), (3, false));
    }

    #[test]
    fn a_group_applies_commands_of_the_partitions_it_carries_and_refuses_the_rest() {
        let (_dir, store) = store_with_group();
        let named = |partition, command| Command::For {
            partition,
            command: Box::new(command),
        };
        let seq = |r: &Response| match r {
            Response::Sent { message, .. } => message.seq,
            other => panic!("{other:?}"),
        };
        // The group's own partition (3): applied to its keys, continuing the bare commands.
        assert_eq!(seq(&run(&store, named(3, send("c1", "a")))), 1);
        assert_eq!(seq(&run(&store, send("c2", "a"))), 2);
        // Another partition: refused, nothing written; a packed entry mixes both.
        assert!(matches!(
            run(&store, named(4, send("c3", "a"))),
            Response::Rejected(ApplyError::NotHere)
        ));
        let Response::Batch(answers) = run(
            &store,
            Command::Batch(vec![named(5, send("c4", "a")), named(3, send("c5", "b"))]),
        ) else {
            panic!("a batch is answered with a batch");
        };
        assert!(matches!(answers[0], Response::Rejected(ApplyError::NotHere)));
        assert_eq!(seq(&answers[1]), 3);
        // A name holds one plain command.
        assert!(matches!(
            run(&store, named(3, Command::Batch(vec![send("c6", "a")]))),
            Response::Rejected(ApplyError::Invalid(_))
        ));
        // Adopting partition 4: its commands apply to its own keys (no g_1 there: a send is
        // refused the way a missing channel is).
        run(
            &store,
            Command::Adopt {
                partition: 4,
                from: 4,
                after: 0,
            },
        );
        assert!(matches!(
            run(&store, named(4, send("c3", "a"))),
            Response::Rejected(ApplyError::Forbidden)
        ));
        // A fence refuses the partition's commands, named or bare, until it is lifted; it
        // answers its own log index.
        assert!(matches!(
            run(&store, Command::Fence { partition: 3 }),
            Response::Position(1)
        ));
        assert!(matches!(
            run(&store, send("c6", "a")),
            Response::Rejected(ApplyError::NotHere)
        ));
        assert!(matches!(
            run(&store, named(3, send("c6", "a"))),
            Response::Rejected(ApplyError::NotHere)
        ));
        assert!(matches!(
            run(&store, Command::Fence { partition: 9 }),
            Response::Rejected(ApplyError::NotHere)
        ));
        run(
            &store,
            Command::Adopt {
                partition: 3,
                from: 3,
                after: 0,
            },
        );
        assert_eq!(seq(&run(&store, send("c6", "a"))), 4);
        // Released: refused again; the record on disk says what the group carries.
        run(&store, Command::Release { partition: 4 });
        assert!(matches!(
            run(&store, named(4, send("c3", "a"))),
            Response::Rejected(ApplyError::NotHere)
        ));
        let stored = Ownership::load(&Overlay::new(&store.sm), 3).unwrap();
        assert_eq!(stored, Ownership::own_partition(3));
        assert!(
            store.sm.get(t::meta_ownership(3)).unwrap().is_some(),
            "recorded once changed"
        );
        // Entries of both shapes round-trip through the codec (the new variant is appended,
        // so entries written before it keep their numbers).
        let entry = named(3, send("c7", "a"));
        let back: Command = crate::codec::decode(&crate::codec::encode(&entry)).unwrap();
        assert_eq!(format!("{back}"), "For(SendMessage)");
    }

    #[test]
    fn seqs_are_gap_free_and_retries_return_the_original() {
        let (_dir, store) = store_with_group();
        for i in 1..=5u64 {
            match run(&store, send(&format!("c{i}"), "a")) {
                Response::Sent { message, duplicate, .. } => {
                    assert_eq!(message.seq, i);
                    assert!(!duplicate);
                }
                other => panic!("{other:?}"),
            }
        }
        match run(&store, send("c3", "a")) {
            Response::Sent { message, duplicate, .. } => {
                assert_eq!(message.seq, 3);
                assert!(duplicate);
            }
            other => panic!("{other:?}"),
        }
        // Same client_msg_id from another sender is a different message.
        match run(&store, send("c3", "b")) {
            Response::Sent { message, .. } => assert_eq!(message.seq, 6),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_members_cannot_send_and_groups_enforce_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        run(
            &store,
            Command::CreateChannel {
                channel: group(&["a", "b"]),
                max_members: 3,
            },
        );
        assert!(matches!(
            run(&store, send("x", "z")),
            Response::Rejected(ApplyError::Forbidden)
        ));
        let add = |u: &str| Command::AddMember {
            channel_id: "g_1".into(),
            actor: "b".into(),
            user_id: u.into(),
            max_members: 3,
        };
        assert!(matches!(run(&store, add("c")), Response::Channel { changed: true, .. }));
        assert!(matches!(
            run(&store, add("d")),
            Response::Rejected(ApplyError::GroupFull)
        ));
        // Only the creator removes others; anyone removes itself.
        let rm = |actor: &str, u: &str| Command::RemoveMember {
            channel_id: "g_1".into(),
            actor: actor.into(),
            user_id: u.into(),
        };
        assert!(matches!(
            run(&store, rm("b", "c")),
            Response::Rejected(ApplyError::Forbidden)
        ));
        assert!(matches!(
            run(&store, rm("c", "c")),
            Response::Channel { changed: true, .. }
        ));
        assert!(matches!(
            run(&store, rm("a", "b")),
            Response::Channel { changed: true, .. }
        ));
    }

    #[test]
    fn ack_never_moves_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ack = |seq| Command::Ack {
            user_id: "a".into(),
            device_id: "d".into(),
            channel_id: "g_1".into(),
            seq,
        };
        assert!(matches!(run(&store, ack(5)), Response::Position(5)));
        assert!(matches!(run(&store, ack(2)), Response::Position(5)));
        assert!(matches!(run(&store, ack(9)), Response::Position(9)));
    }

    /// The cached path must answer exactly what the uncached one does, batch after batch,
    /// including several writes of one channel within one batch.
    #[test]
    fn the_channel_cache_changes_no_answer() {
        use crate::partition::channel_cache::ChannelCache;
        let plain = tempfile::tempdir().unwrap();
        let cached = tempfile::tempdir().unwrap();
        let (plain, cached) = (Store::open(plain.path()).unwrap(), Store::open(cached.path()).unwrap());
        let cache = ChannelCache::new(1 << 20);
        let generation = cache.new_generation();
        let add = |user: &str| Command::AddMember {
            channel_id: "g_1".into(),
            actor: "a".into(),
            user_id: user.into(),
            max_members: 3,
        };
        let remove = |user: &str| Command::RemoveMember {
            channel_id: "g_1".into(),
            actor: "a".into(),
            user_id: user.into(),
        };
        let batches: Vec<Vec<Command>> = vec![
            vec![Command::CreateChannel {
                channel: group(&["a", "b"]),
                max_members: 3,
            }],
            vec![send("1", "a"), send("2", "b"), send("1", "a")],
            vec![add("c"), send("3", "c"), add("d")],
            vec![remove("b"), send("4", "b"), send("5", "a")],
            vec![send("6", "c")],
        ];
        for batch in batches {
            let mut ov_plain = Overlay::new(&plain.sm);
            let mut ov_cached = Overlay::new(&cached.sm).with_channel_cache(&cache, generation);
            for cmd in &batch {
                let want = apply_command(&mut ov_plain, 3, cmd).unwrap();
                let got = apply_command(&mut ov_cached, 3, cmd).unwrap();
                assert_eq!(format!("{got:?}"), format!("{want:?}"), "{cmd:?}");
            }
            ov_plain.commit(&plain.db).unwrap();
            ov_cached.commit(&cached.db).unwrap();
        }
        let key = t::channel(3, "g_1");
        let stored = Overlay::new(&cached.sm).get_channel(&key).unwrap().unwrap();
        assert_eq!(
            cache.get(generation, &key),
            Some(stored.clone()),
            "cache holds the committed record"
        );
        assert_eq!(stored.last_seq, 5);
        assert_eq!(stored.members, vec!["a", "c"]);
    }

    /// A message stores itself, its idempotency key and nothing else; the channel's position
    /// is read back from its newest message wherever the record is read from fjall.
    #[test]
    fn a_message_does_not_rewrite_its_channel_record_and_the_position_still_reads_back() {
        let (_dir, store) = store_with_group();
        let key = t::channel(3, "g_1");
        let raw = || store.sm.get(&key).unwrap().unwrap().to_vec();
        let created = raw();
        for (cmid, ts) in [("1", 10), ("2", 20), ("3", 30)] {
            let mut cmd = send(cmid, "a");
            if let Command::SendMessage { ts: at, .. } = &mut cmd {
                *at = ts;
            }
            assert!(matches!(run(&store, cmd), Response::Sent { duplicate: false, .. }));
        }
        assert_eq!(raw(), created, "the stored record is the one written at creation");
        let read = Overlay::new(&store.sm).get_channel(&key).unwrap().unwrap();
        assert_eq!((read.last_seq, read.last_ts), (3, 30));
        // The next message continues from the newest one, and a retry still finds its original.
        match run(&store, send("4", "b")) {
            Response::Sent { message, .. } => assert_eq!((message.seq, message.ts), (4, 30)),
            other => panic!("{other:?}"),
        }
        match run(&store, send("2", "a")) {
            Response::Sent { message, duplicate, .. } => assert_eq!((message.seq, duplicate), (2, true)),
            other => panic!("{other:?}"),
        }
        // A membership change writes the record at its current position.
        run(
            &store,
            Command::AddMember {
                channel_id: "g_1".into(),
                actor: "a".into(),
                user_id: "c".into(),
                max_members: 100,
            },
        );
        let stored: ChannelRecord = crate::codec::decode(&raw()).unwrap();
        assert_eq!((stored.last_seq, stored.last_ts, stored.members.len()), (4, 30, 3));
    }

    /// A data dir of a release that rewrote the record per message: the record carries the
    /// position, and numbering continues from it.
    #[test]
    fn a_record_written_per_message_by_an_older_release_keeps_its_position() {
        let (_dir, store) = store_with_group();
        let mut old = group(&["a", "b"]);
        old.last_seq = 7;
        old.last_ts = 70;
        let mut ov = Overlay::new(&store.sm);
        ov.put_record(t::channel(3, "g_1"), &old);
        ov.commit(&store.db).unwrap();
        match run(&store, send("1", "a")) {
            Response::Sent { message, .. } => assert_eq!((message.seq, message.ts), (8, 70)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_channels_times_never_run_backwards_whatever_the_proposers_clock() {
        let (_dir, store) = store_with_group();
        let at = |cmid: &str, ts: u64| Command::SendMessage {
            channel_id: "g_1".into(),
            sender_id: "a".into(),
            text: "t".into(),
            client_msg_id: Some(cmid.into()),
            ts,
            push: false,
        };
        let mut times = Vec::new();
        // A leader an hour ahead, then one on time, then time moving on.
        for (cmid, ts) in [("1", 3_601_000), ("2", 1_000), ("3", 1_500), ("4", 3_700_000)] {
            match run(&store, at(cmid, ts)) {
                Response::Sent { message, .. } => times.push(message.ts),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(times, vec![3_601_000, 3_601_000, 3_601_000, 3_700_000]);
    }

    #[test]
    fn the_leader_stamps_messages_with_its_own_clock() {
        let cmd = send("x", "a").stamped(42);
        assert!(matches!(cmd, Command::SendMessage { ts: 42, .. }), "{cmd:?}");
        let other = Command::PushDone {
            channel_id: "g_1".into(),
            seq: 1,
        };
        assert!(matches!(other.stamped(42), Command::PushDone { .. }));
    }
}
