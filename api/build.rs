//! Generates the controller-to-proxy gRPC code and the OTLP trace export
//! (client and, for tests, server) from `proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/mesh/v1/identity.proto",
        "proto/mesh/v1/discovery.proto",
        "proto/mesh/v1/resources.proto",
        "proto/opentelemetry/proto/collector/trace/v1/trace_service.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=proto/opentelemetry");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Maps encode in key order, so that equal content encodes to
        // equal bytes (and versions).
        .btree_map(".")
        // Encoded once, shared by every subscriber's response.
        .bytes(".mesh.v1.Resource.body")
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
