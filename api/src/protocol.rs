//! Application protocols of Service ports, as Istio and Kubernetes declare
//! them: `appProtocol`, else the port name's prefix (`http-web`, `grpc`).

use serde::{Deserialize, Serialize};

/// What a proxy should expect on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// Nothing declared: sniff the first bytes.
    #[default]
    Detect,
    /// HTTP/1.1.
    Http,
    /// HTTP/2 (prior knowledge).
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
    /// Opaque TCP: never parsed.
    Tcp,
}

impl AppProtocol {
    /// Istio's rule: `appProtocol` wins; otherwise the port name, either
    /// equal to a protocol or prefixed by one and `-` (`http-metrics`).
    pub fn declared(app_protocol: Option<&str>, port_name: Option<&str>) -> Self {
        if let Some(p) = app_protocol.and_then(Self::from_name) {
            return p;
        }
        port_name
            .and_then(|n| Self::from_name(n.split('-').next().unwrap_or(n)))
            .unwrap_or(Self::Detect)
    }

    fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "http" | "http1" | "kubernetes.io/http" => Some(Self::Http),
            "http2" | "kubernetes.io/h2c" => Some(Self::Http2),
            "grpc" | "grpc-web" => Some(Self::Grpc),
            // TLS is opaque to a sidecar (routed by SNI), as in Istio.
            "tcp" | "tls" | "https" | "redis" | "mysql" | "mongo" | "postgres" | "postgresql" => {
                Some(Self::Tcp)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AppProtocol::{self, *};

    #[test]
    fn app_protocol_wins_over_name() {
        assert_eq!(AppProtocol::declared(Some("grpc"), Some("http-x")), Grpc);
        assert_eq!(
            AppProtocol::declared(Some("kubernetes.io/h2c"), None),
            Http2
        );
        assert_eq!(AppProtocol::declared(Some("unknown"), Some("tcp-db")), Tcp);
    }

    #[test]
    fn name_prefix() {
        assert_eq!(AppProtocol::declared(None, Some("http")), Http);
        assert_eq!(AppProtocol::declared(None, Some("http-web")), Http);
        assert_eq!(AppProtocol::declared(None, Some("http2-api")), Http2);
        assert_eq!(AppProtocol::declared(None, Some("grpc")), Grpc);
        assert_eq!(AppProtocol::declared(None, Some("redis")), Tcp);
        assert_eq!(AppProtocol::declared(None, Some("tls-api")), Tcp);
        assert_eq!(AppProtocol::declared(None, Some("https")), Tcp);
        assert_eq!(AppProtocol::declared(None, Some("httpx")), Detect);
        assert_eq!(AppProtocol::declared(None, Some("web")), Detect);
        assert_eq!(AppProtocol::declared(None, None), Detect);
    }
}
