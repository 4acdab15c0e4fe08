//! OpenTelemetry's OTLP trace types and export service (the part of
//! upstream's `opentelemetry-proto` in `proto/opentelemetry`), for the
//! proxy's spans. The modules nest as the packages do, which the
//! generated code's paths between packages need.
#![allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]

pub mod opentelemetry {
    pub mod proto {
        pub mod common {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.common.v1");
            }
        }
        pub mod resource {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.resource.v1");
            }
        }
        pub mod trace {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.trace.v1");
            }
        }
        pub mod collector {
            pub mod trace {
                pub mod v1 {
                    tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
                }
            }
        }
    }
}

pub use opentelemetry::proto::collector::trace::v1 as collector;
pub use opentelemetry::proto::common::v1 as common;
pub use opentelemetry::proto::resource::v1 as resource;
pub use opentelemetry::proto::trace::v1 as trace;
