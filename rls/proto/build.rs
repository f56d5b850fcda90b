//! Generates the RLS and fleet messages (and, with feature `server`, the tonic
//! services) from proto/*.proto with protox, a protobuf compiler in Rust: no
//! protoc needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/rls.proto");
    println!("cargo:rerun-if-changed=proto/fleet.proto");
    let fds = protox::compile(["proto/rls.proto", "proto/fleet.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
