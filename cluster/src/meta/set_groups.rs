//! Groups named by replica sets, as this node reads them from its meta replica: which exist
//! and which group carries each partition (its home), with the home map the router uses. A
//! partition without a recorded home is carried by its own group (`id = partition`), as every
//! partition was before groups carried several (docs/raft-groups.md). The records and their
//! apply rules: `group_records.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use openraft::async_runtime::watch::WatchReceiver;

use super::group_records::set_groups_in;
use super::model::{GroupRecord, FIRST_SET_GROUP};
use super::META_PARTITION;
use crate::cluster::Cluster;
use crate::error::ClusterError;
use crate::partition::tables as t;

/// The partition → group map this node routes by, as of the meta replica's applied log id it
/// was read at: read again only when the meta group applied something since, so a route
/// costs a lock and an index.
#[derive(Default)]
pub struct HomeCache {
    cached: RwLock<(Option<u64>, Arc<Vec<u16>>)>,
}

impl Cluster {
    /// The id of the group carrying partition `p` as this node's meta replica knows it (its
    /// own id when none is recorded, or when the record cannot be read).
    pub fn home_of(&self, p: u16) -> u16 {
        if p >= self.partitions() {
            return p;
        }
        let applied = {
            let m = self.meta.metrics();
            let m = m.borrow_watched();
            m.last_applied.as_ref().map(|l| l.index())
        };
        {
            let cached = self.homes_cache.cached.read().unwrap_or_else(|e| e.into_inner());
            if cached.0 == applied && !cached.1.is_empty() {
                return cached.1.get(p as usize).copied().unwrap_or(p);
            }
        }
        match self.homes() {
            Ok(homes) => {
                let home = homes.get(p as usize).copied().unwrap_or(p);
                *self.homes_cache.cached.write().unwrap_or_else(|e| e.into_inner()) = (applied, Arc::new(homes));
                home
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "reading the partition's group failed; using its own");
                p
            }
        }
    }

    /// Every group named by a replica set, by id (read from this node's meta replica).
    pub fn set_groups(&self) -> Result<BTreeMap<u16, GroupRecord>, ClusterError> {
        Ok(set_groups_in(&self.store)?)
    }

    /// The record of set group `g` if this node is one of its replicas.
    pub(crate) fn set_group_here(&self, g: u16) -> Option<GroupRecord> {
        self.set_group(g).filter(|group| group.replicas.contains(&self.node_id))
    }

    /// The record of set group `g`, if it is defined (and readable).
    pub(crate) fn set_group(&self, g: u16) -> Option<GroupRecord> {
        if g < FIRST_SET_GROUP {
            return None;
        }
        let v = self.store.sm.get(t::meta_group(META_PARTITION, g)).ok()??;
        crate::codec::decode::<GroupRecord>(&v).ok()
    }

    /// The group carrying each partition, by partition (its own id where none is recorded).
    pub fn homes(&self) -> Result<Vec<u16>, ClusterError> {
        let mut out: Vec<u16> = (0..self.partitions()).collect();
        for (partition, group) in self.records_by_partition::<u16>(&t::meta_homes(META_PARTITION))? {
            if let Some(home) = out.get_mut(usize::from(partition)) {
                *home = group;
            }
        }
        Ok(out)
    }
}
