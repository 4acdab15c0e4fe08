//! Generates the controller-to-proxy gRPC code from `proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/mesh/v1/identity.proto",
        "proto/mesh/v1/discovery.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
