//! Generates the tonic clients and servers of `proto/raft.proto` (Raft transport),
//! `proto/node.proto` (requests forwarded to a partition leader) and `proto/member.proto`
//! (membership and cross-node delivery) and `proto/pipe.proto` (the batched stream that carries
//! the frequent calls of the other three).
//!
//! `protox` parses the proto in pure Rust, so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["raft.proto", "node.proto", "member.proto", "pipe.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
