//! Compiles `proto/` with protox (pure Rust, no system `protoc`) into tonic/prost code,
//! and writes the encoded descriptor set (imports included) that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["chat/v1/chat.proto"], ["proto"])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // protox ignores tonic-prost-build's `file_descriptor_set_path`, so write it here.
    fs::write(
        out_dir.join("chat_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // A codec with a small initial buffer: see `LeanCodec` in src/proto.rs.
        .codec_path("crate::proto::LeanCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
