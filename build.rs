//! Generates the gRPC code for the broker-to-broker contracts in `proto/`.
//! `protox` parses the files in Rust, so no system `protoc` is needed.

const PROTO_FILES: &[&str] = &["proto/ferry/cluster/v1/cluster.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTO_FILES, ["proto"])?;
    tonic_prost_build::configure()
        // `bytes` fields become `bytes::Bytes`, so fetched batches are
        // shared with the segment reader's buffers instead of copied.
        .bytes(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
