//! Istio's standard labels, in Istio's names: both sides of a request or
//! connection (workload, namespace, principal, app, version, canonical
//! service and revision, cluster), the destination service, the protocol,
//! the response and the connection's security.

use api::peer::{Peer, UNKNOWN};

/// The labels of the TCP metrics, in [`ConnLabels::values`] order.
pub const CONN: [&str; 23] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
];

/// The labels of the request metrics: [`CONN`]'s and the response's.
pub const REQUEST: [&str; 25] = {
    let mut out = [""; 25];
    let mut i = 0;
    while i < CONN.len() {
        out[i] = CONN[i];
        i += 1;
    }
    out[23] = "response_code";
    out[24] = "grpc_response_status";
    out
};

/// The `response_code` and `grpc_response_status` values of a response
/// with `status`, for a gRPC request (`grpc`) with `grpc_status`.
pub fn response(status: u16, grpc: bool, grpc_status: Option<&[u8]>) -> (String, String) {
    let g = match (grpc, grpc_status) {
        (true, Some(s)) => String::from_utf8_lossy(s).into_owned(),
        _ => String::new(),
    };
    (status.to_string(), g)
}

/// Which proxy reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// The client's proxy.
    Source,
    /// The server's proxy.
    Destination,
}

impl Reporter {
    /// 0 for the source, 1 for the destination.
    pub fn index(self) -> usize {
        match self {
            Self::Source => 0,
            Self::Destination => 1,
        }
    }
}

/// One side: the workload and the principal its certificate proves
/// (`unknown` without one).
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// The workload.
    pub peer: &'a Peer,
    /// Its SPIFFE ID.
    pub principal: &'a str,
}

/// The destination service as labels name it.
#[derive(Debug, Clone, Copy)]
pub struct Svc<'a> {
    /// Its hostname (`destination_service`).
    pub host: &'a str,
    /// Its short name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
}

impl<'a> From<&'a api::peer::ServiceRef> for Svc<'a> {
    fn from(s: &'a api::peer::ServiceRef) -> Self {
        Self {
            host: &s.host,
            name: &s.name,
            namespace: &s.namespace,
        }
    }
}

impl Svc<'_> {
    /// Nothing known.
    pub const UNKNOWN: Svc<'static> = Svc {
        host: UNKNOWN,
        name: UNKNOWN,
        namespace: UNKNOWN,
    };
}

/// Everything a connection's labels say.
#[derive(Debug, Clone, Copy)]
pub struct ConnLabels<'a> {
    /// Which side reports.
    pub reporter: Reporter,
    /// The client.
    pub source: Side<'a>,
    /// The server.
    pub destination: Side<'a>,
    /// The service it was for.
    pub service: Svc<'a>,
    /// `tcp`, `http` or `grpc`.
    pub protocol: &'a str,
    /// Envoy's response flags (`-` for none).
    pub flags: &'a str,
    /// Whether over mesh mTLS (the source reporter says `unknown`, as
    /// Istio's does: only the server sees the connection's security).
    pub mtls: bool,
}

impl<'a> ConnLabels<'a> {
    /// The values, in [`CONN`] order.
    pub fn values(&self) -> [&'a str; 23] {
        let (s, d) = (self.source, self.destination);
        [
            match self.reporter {
                Reporter::Source => "source",
                Reporter::Destination => "destination",
            },
            &s.peer.workload,
            &s.peer.canonical_service,
            &s.peer.canonical_revision,
            &s.peer.namespace,
            s.principal,
            &s.peer.app,
            &s.peer.version,
            &s.peer.cluster,
            &d.peer.workload,
            &d.peer.namespace,
            d.principal,
            &d.peer.app,
            &d.peer.version,
            self.service.host,
            &d.peer.canonical_service,
            &d.peer.canonical_revision,
            self.service.name,
            self.service.namespace,
            &d.peer.cluster,
            self.protocol,
            self.flags,
            match (self.reporter, self.mtls) {
                (Reporter::Source, _) => UNKNOWN,
                (Reporter::Destination, true) => "mutual_tls",
                (Reporter::Destination, false) => "none",
            },
        ]
    }
}

/// Everything a request's labels say.
#[derive(Debug, Clone, Copy)]
pub struct RequestLabels<'a> {
    /// The connection's.
    pub conn: ConnLabels<'a>,
    /// The HTTP status.
    pub code: &'a str,
    /// The gRPC status (empty when not gRPC).
    pub grpc_status: &'a str,
}

impl<'a> RequestLabels<'a> {
    /// The values, in [`REQUEST`] order.
    pub fn values(&self) -> [&'a str; 25] {
        let c = self.conn.values();
        let mut v = [""; 25];
        v[..23].copy_from_slice(&c);
        v[23] = self.code;
        v[24] = self.grpc_status;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_line_up_with_names() {
        let (a, b) = (
            Peer::decode("w=web,n=shop,a=web,v=v1,cs=web,cr=v1,c=K"),
            Peer::decode("w=orders-v2,n=shop,a=orders,v=v2,cs=orders,cr=v2,c=K"),
        );
        let l = RequestLabels {
            conn: ConnLabels {
                reporter: Reporter::Destination,
                source: Side {
                    peer: &a,
                    principal: "spiffe://cluster.local/ns/shop/sa/web",
                },
                destination: Side {
                    peer: &b,
                    principal: "spiffe://cluster.local/ns/shop/sa/orders",
                },
                service: Svc {
                    host: "orders.shop.svc.cluster.local",
                    name: "orders",
                    namespace: "shop",
                },
                protocol: "grpc",
                flags: "-",
                mtls: true,
            },
            code: "200",
            grpc_status: "0",
        };
        let pairs: Vec<(&str, &str)> = REQUEST.iter().copied().zip(l.values()).collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| *n == k).unwrap().1;
        assert_eq!(get("reporter"), "destination");
        assert_eq!(get("source_workload"), "web");
        assert_eq!(get("source_version"), "v1");
        assert_eq!(get("destination_workload"), "orders-v2");
        assert_eq!(get("destination_canonical_revision"), "v2");
        assert_eq!(get("destination_service"), "orders.shop.svc.cluster.local");
        assert_eq!(get("destination_service_name"), "orders");
        assert_eq!(get("destination_service_namespace"), "shop");
        assert_eq!(
            get("destination_principal"),
            "spiffe://cluster.local/ns/shop/sa/orders"
        );
        assert_eq!(get("connection_security_policy"), "mutual_tls");
        assert_eq!(get("grpc_response_status"), "0");
        assert_eq!(REQUEST[..23], CONN);
        assert_eq!(
            response(200, false, Some(b"0")),
            ("200".into(), String::new())
        );
        assert_eq!(response(200, true, Some(b"14")).1, "14");
    }
}
