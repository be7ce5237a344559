//! This node's replicas: the groups it hosts, found by partition, with the store and the
//! proposal packers a leader's writes go through (the calls themselves are `leader_calls.rs`).

use ringchat_storage::Store;

use crate::command::Command;
use crate::proposal_packer::Packers;
use crate::rpc::GroupRegistry;
use crate::rpc::PartitionGroups;
use crate::types::PartitionRaft;

/// This node's replica of the group carrying a partition, and the store holding its state.
#[derive(Clone)]
pub struct Replica {
    /// The group's id: the partition's own, or a group carrying several (docs/raft-groups.md).
    pub group: u16,
    /// The group.
    pub raft: PartitionRaft,
    /// The node's store.
    pub store: Store,
}

impl Replica {
    /// `cmd` for partition `p` as this group takes it: named by its partition when the group
    /// is not the partition's own (`Command::For`), as it is otherwise.
    pub fn command_for(&self, p: u16, cmd: Command) -> Command {
        if self.group == p {
            cmd
        } else {
            Command::For {
                partition: p,
                command: Box::new(cmd),
            }
        }
    }
}

/// The partitions this node hosts and the store their state machines live in: what the router
/// and the node RPC server need to serve a request locally.
pub trait LocalPartitions: Send + Sync + 'static {
    /// The local replica of the group carrying `p`, or `None` if this node does not host it
    /// (now).
    fn replica(&self, p: u16) -> Option<Replica>;

    /// The local replica of group `g` itself, whatever it carries.
    fn group_replica(&self, g: u16) -> Option<Replica>;

    /// Where this node packs the writes it leads (`proposal_packer.rs`); `None` proposes each
    /// write as its own entry.
    fn packers(&self) -> Option<&Packers> {
        None
    }
}

/// A mutable set of hosted groups over one store: for nodes assembled by hand (tests, tools)
/// rather than by `Cluster::open`. Cloning shares the set.
#[derive(Clone)]
pub struct HostedPartitions {
    groups: GroupRegistry,
    store: Store,
}

impl HostedPartitions {
    /// No groups yet, over `store`.
    pub fn new(store: Store) -> Self {
        HostedPartitions {
            groups: GroupRegistry::new(),
            store,
        }
    }

    /// The registry of groups (also usable as the Raft RPC server's `PartitionGroups`).
    pub fn groups(&self) -> &GroupRegistry {
        &self.groups
    }
}

impl LocalPartitions for HostedPartitions {
    fn replica(&self, p: u16) -> Option<Replica> {
        self.group_replica(p)
    }

    fn group_replica(&self, g: u16) -> Option<Replica> {
        self.groups.group(g).map(|raft| Replica {
            group: g,
            raft,
            store: self.store.clone(),
        })
    }
}

impl PartitionGroups for HostedPartitions {
    fn group(&self, partition: u16) -> Option<PartitionRaft> {
        self.groups.group(partition)
    }
}
