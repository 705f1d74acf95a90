//! Generates the gRPC code with a vendored protoc, so building needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Hand the path to prost-build directly (setting PROTOC would need `unsafe` in edition 2024).
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Data payloads are `bytes::Bytes`: decoding slices the receive buffer instead of copying.
    config.bytes(["."]);
    // The descriptors of both services, for the coordinator's gRPC server reflection.
    let descriptors =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("dagraid_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .compile_with_config(
            config,
            &[
                "dagraid/storage/v1/storage.proto",
                "dagraid/volume/v1/volume.proto",
            ],
            &["."],
        )?;
    println!("cargo:rerun-if-changed=dagraid");
    Ok(())
}
