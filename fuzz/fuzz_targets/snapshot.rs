//! A partition snapshot as a peer streams it to a replica being installed: the file format and
//! the records inside it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_cluster::codec::decode;
use ringchat_cluster::partition::snapshot::read_snapshot_from;
use ringchat_cluster::{ChannelRecord, MessageRecord};

fuzz_target!(|data: &[u8]| {
    let _ = read_snapshot_from(data, 7, |_key, value| {
        let _ = decode::<ChannelRecord>(value);
        let _ = decode::<MessageRecord>(value);
        Ok(())
    });
});
