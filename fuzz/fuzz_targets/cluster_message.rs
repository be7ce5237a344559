//! What a peer sends on the cluster port: pipe batches (protobuf) and the payloads inside their
//! calls (the binary codec). Each input is tried as sent, and sealed with a valid checksum so
//! that it reaches the payload decoder behind the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use prost::Message;
use ringchat_cluster::codec::{decode, seal};
use ringchat_cluster::rpc::pipe_proto::PipeBatch;
use ringchat_cluster::{Command, Query, TypeConfig};

fn payloads(bytes: &[u8]) {
    let _ = decode::<AppendEntriesRequest<TypeConfig>>(bytes);
    let _ = decode::<VoteRequest<TypeConfig>>(bytes);
    let _ = decode::<TransferLeaderRequest<TypeConfig>>(bytes);
    let _ = decode::<Command>(bytes);
    let _ = decode::<Query>(bytes);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = PipeBatch::decode(data) {
        for call in &batch.calls {
            payloads(&call.body);
        }
    }
    payloads(data);
    payloads(&seal(data));
});
