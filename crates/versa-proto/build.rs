//! Compiles `proto/` with protox (pure Rust; no system `protoc`) and generates
//! prost messages plus tonic clients and servers.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is built: a build
    // script binary may be reused from a checkout at another path.
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    // TensorFlow Serving's contract, vendored untouched at the top level.
    let proto_root = manifest_dir.join("../../proto");
    // Versa's own extensions (package `versa.v1`), kept apart from it.
    let versa_root = manifest_dir.join("proto");
    let files = [
        "tensorflow_serving/apis/prediction_service.proto",
        "tensorflow_serving/apis/model_service.proto",
        "tensorflow_serving/apis/model_management.proto",
        "tensorflow_serving/apis/get_model_status.proto",
        "tensorflow_serving/apis/get_model_metadata.proto",
        "tensorflow_serving/config/model_server_config.proto",
        "tensorflow_serving/config/monitoring_config.proto",
        "tensorflow_serving/config/platform_config.proto",
        "tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        "tensorflow/core/framework/tensor.proto",
        "versa/v1/telemetry.proto",
    ];
    let descriptors = protox::compile(files, [&proto_root, &versa_root])?;

    // Rebuild when any proto changes (protox reports every file it read).
    for file in &descriptors.file {
        for root in [&proto_root, &versa_root] {
            let path = root.join(file.name());
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }

    // The descriptor set is also shipped, for text-format parsing and reflection.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("versa_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    // Every message knows its full name, so the codec can find its
    // descriptor and bound its decoded size before decoding it.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::BoundedCodec")
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}
