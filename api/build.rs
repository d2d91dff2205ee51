//! Generates the Rust types, the gRPC service and the proto3-JSON serde impls from `proto/`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let protos = ["stratus/v1/meta.proto", "stratus/v1/resources.proto", "stratus/v1/api.proto"].map(|p| root.join(p));
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor = out.join("stratus_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .btree_map(".")
        .compile_protos(&protos, &[root])?;
    let set = std::fs::read(&descriptor)?;
    pbjson_build::Builder::new().register_descriptors(&set)?.btree_map(["."]).build(&[".stratus"])?;
    Ok(())
}
