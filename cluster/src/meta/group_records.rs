//! The meta group's records of groups named by replica sets, without the node around them:
//! the apply rules of `MetaDefineGroup`, `MetaDropGroup` and `MetaSetHome` (run by the meta
//! group's state machine, `partition/apply.rs`) and the plain read of the records from a store
//! (docs/raft-groups.md). `set_groups.rs` serves the same records to the rest of the node.

use std::collections::BTreeMap;

use ringchat_storage::StorageError;

use super::model::{GroupRecord, FIRST_SET_GROUP, LAST_SET_GROUP};
use super::META_PARTITION;
use crate::command::{ApplyError, Response};
use crate::partition::overlay::Overlay;
use crate::partition::tables as t;

fn refused(why: &str) -> Response {
    Response::Rejected(ApplyError::Invalid(why.into()))
}

/// Applies `MetaDefineGroup` in meta group `m`.
pub fn define(ov: &mut Overlay<'_>, m: u16, group: &GroupRecord) -> Result<Response, StorageError> {
    if !(FIRST_SET_GROUP..=LAST_SET_GROUP).contains(&group.id) || group.replicas.is_empty() {
        return Ok(refused("a group needs an id of its own range and at least one replica"));
    }
    if let Some(existing) = ov.get_record::<GroupRecord>(&t::meta_group(m, group.id))? {
        return Ok(if existing == *group {
            Response::Done
        } else {
            Response::Rejected(ApplyError::Conflict)
        });
    }
    let highest = ov.get_record::<u16>(&t::meta_group_ids(m))?;
    if highest.is_some_and(|h| group.id <= h) {
        // A dropped group's id: a replica that never heard of the drop could take the new
        // group's log for the old one's.
        return Ok(Response::Rejected(ApplyError::Conflict));
    }
    ov.put_record(t::meta_group(m, group.id), group);
    ov.put_record(t::meta_group_ids(m), &group.id);
    Ok(Response::Done)
}

/// Applies `MetaDropGroup` in meta group `m`.
pub fn drop(ov: &mut Overlay<'_>, m: u16, id: u16) -> Result<Response, StorageError> {
    for home in ov.values_under(&t::meta_homes(m))? {
        if crate::codec::decode::<u16>(&home)? == id {
            return Ok(refused("a partition is still at home in this group"));
        }
    }
    ov.delete(t::meta_group(m, id));
    Ok(Response::Done)
}

/// Applies `MetaSetHome` in meta group `m`.
pub fn set_home(ov: &mut Overlay<'_>, m: u16, partition: u16, group: u16) -> Result<Response, StorageError> {
    if group == partition {
        ov.delete(t::meta_home(m, partition));
        return Ok(Response::Done);
    }
    if ov.get(&t::meta_group(m, group))?.is_none() {
        return Ok(refused("no such group"));
    }
    ov.put_record(t::meta_home(m, partition), &group);
    Ok(Response::Done)
}

/// Every group named by a replica set in `store`'s meta replica, by id.
pub(crate) fn set_groups_in(store: &ringchat_storage::Store) -> Result<BTreeMap<u16, GroupRecord>, StorageError> {
    let mut out = BTreeMap::new();
    for item in store.sm.prefix(t::meta_groups(META_PARTITION)) {
        let (_, v) = item.into_inner()?;
        let group = crate::codec::decode::<GroupRecord>(&v)?;
        out.insert(group.id, group);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::partition::apply::apply_command;
    use ringchat_storage::Store;

    fn run(store: &Store, cmd: Command) -> Response {
        let mut ov = Overlay::new(&store.sm);
        let r = apply_command(&mut ov, META_PARTITION, &cmd).unwrap();
        ov.commit(&store.db).unwrap();
        r
    }

    fn define(id: u16, replicas: &[u64]) -> Command {
        Command::MetaDefineGroup {
            group: GroupRecord {
                id,
                replicas: replicas.to_vec(),
            },
        }
    }

    fn refused(r: &Response) -> bool {
        matches!(r, Response::Rejected(_))
    }

    #[test]
    fn groups_are_defined_once_with_ids_never_reused_and_dropped_only_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(run(&store, define(0x8000, &[1, 2])), Response::Done));
        assert!(
            matches!(run(&store, define(0x8000, &[1, 2])), Response::Done),
            "same again"
        );
        assert!(matches!(
            run(&store, define(0x8000, &[2, 1])),
            Response::Rejected(ApplyError::Conflict)
        ));
        assert!(refused(&run(&store, define(0x7FFF, &[1]))), "a partition's id");
        assert!(refused(&run(&store, define(0x8002, &[]))), "no replicas");
        assert!(matches!(run(&store, define(0x8001, &[2, 1])), Response::Done));
        // Homes point at defined groups only; a group with a partition at home stays.
        let home = |partition, group| Command::MetaSetHome { partition, group };
        assert!(matches!(run(&store, home(5, 0x8001)), Response::Done));
        assert!(refused(&run(&store, home(6, 0x9000))));
        assert!(refused(&run(&store, Command::MetaDropGroup { id: 0x8001 })));
        // A packed meta entry sees its own staged home change.
        let mut ov = Overlay::new(&store.sm);
        let mut owned = crate::partition::ownership::Ownership::own_partition(META_PARTITION);
        let r = crate::partition::ownership::apply_entry(
            &mut ov,
            META_PARTITION,
            1,
            &mut owned,
            &Command::Batch(vec![home(5, 5), Command::MetaDropGroup { id: 0x8001 }]),
        )
        .unwrap();
        ov.commit(&store.db).unwrap();
        assert!(
            matches!(&r, Response::Batch(a) if a.iter().all(|r| matches!(r, Response::Done))),
            "{r:?}"
        );
        assert!(store.sm.get(t::meta_group(META_PARTITION, 0x8001)).unwrap().is_none());
        assert!(store.sm.get(t::meta_home(META_PARTITION, 5)).unwrap().is_none());
        // Dropped ids and ids below the highest are never given out again.
        assert!(matches!(
            run(&store, define(0x8001, &[2, 1])),
            Response::Rejected(ApplyError::Conflict)
        ));
        assert!(matches!(run(&store, define(0x8002, &[2, 1])), Response::Done));
    }
}
