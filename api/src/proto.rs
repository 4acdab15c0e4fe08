//! Generated protobuf and gRPC code (`proto/mesh/v1`). Wire types; convert
//! them with [`crate::discovery`] before use.
#![allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]

tonic::include_proto!("mesh.v1");
