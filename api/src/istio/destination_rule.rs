//! `DestinationRule`: what happens to traffic for a host once routed:
//! balancing, connection pools, outlier detection, TLS, subsets.

use std::collections::BTreeMap;

use super::message;
use super::shared::{PortSelector, WorkloadSelector};

message!(
    /// The spec of a DestinationRule.
    DestinationRuleSpec {
        host: String,
        traffic_policy: TrafficPolicy,
        subsets: Vec<Subset>,
        export_to: Vec<String>,
        workload_selector: WorkloadSelector,
    }
);

message!(
    /// Policies for a host, a subset or a port.
    TrafficPolicy {
        load_balancer: LoadBalancerSettings,
        connection_pool: ConnectionPoolSettings,
        outlier_detection: OutlierDetection,
        tls: ClientTlsSettings,
        port_level_settings: Vec<PortTrafficPolicy>,
        tunnel: TunnelSettings,
        proxy_protocol: ProxyProtocol,
        retry_budget: RetryBudget,
    }
);

message!(
    /// Caps concurrent retries to a share of active requests.
    RetryBudget { percent: f64, min_retry_concurrency: u32, budget_interval: String }
);

message!(
    /// Slow start for new endpoints.
    WarmupConfiguration { duration: String, minimum_percent: f64, aggression: f64 }
);

message!(
    /// Policies for one port.
    PortTrafficPolicy {
        port: PortSelector,
        load_balancer: LoadBalancerSettings,
        connection_pool: ConnectionPoolSettings,
        outlier_detection: OutlierDetection,
        tls: ClientTlsSettings,
    }
);

message!(
    /// A named group of endpoints, by labels.
    Subset { name: String, labels: BTreeMap<String, String>, traffic_policy: TrafficPolicy }
);

message!(
    /// Load balancing: a simple policy or consistent hashing.
    LoadBalancerSettings {
        simple: String,
        consistent_hash: ConsistentHashLb,
        locality_lb_setting: LocalityLoadBalancerSetting,
        warmup_duration_secs: String,
        warmup: WarmupConfiguration,
    }
);

message!(
    /// What to hash on.
    ConsistentHashLb {
        http_header_name: String,
        http_cookie: HttpCookie,
        use_source_ip: bool,
        http_query_parameter_name: String,
        ring_hash: RingHash,
        maglev: MagLev,
        minimum_ring_size: u64,
    }
);

message!(
    /// A cookie to hash on (made if absent when a TTL is given).
    HttpCookie { name: String, path: String, ttl: String, attributes: Vec<CookieAttribute> }
);

message!(
    /// An extra cookie attribute.
    CookieAttribute { name: String, value: String }
);

message!(
    /// Ring hash settings.
    RingHash { minimum_ring_size: u64 }
);

message!(
    /// Maglev settings.
    MagLev { table_size: u64 }
);

message!(
    /// Locality-aware balancing.
    LocalityLoadBalancerSetting {
        distribute: Vec<LocalityDistribute>,
        failover: Vec<LocalityFailover>,
        failover_priority: Vec<String>,
        enabled: bool,
    }
);

message!(
    /// Weighted distribution from one locality.
    LocalityDistribute { from: String, to: BTreeMap<String, u32> }
);

message!(
    /// Failover from one region to another.
    LocalityFailover { from: String, to: String }
);

message!(
    /// Connection pool limits.
    ConnectionPoolSettings { tcp: TcpSettings, http: HttpSettings }
);

message!(
    /// TCP limits.
    TcpSettings {
        max_connections: i32,
        connect_timeout: String,
        tcp_keepalive: TcpKeepalive,
        max_connection_duration: String,
        idle_timeout: String,
    }
);

message!(
    /// TCP keepalive.
    TcpKeepalive { probes: u32, time: String, interval: String }
);

message!(
    /// HTTP limits.
    HttpSettings {
        http1_max_pending_requests: i32,
        http2_max_requests: i32,
        max_requests_per_connection: i32,
        max_retries: i32,
        idle_timeout: String,
        h2_upgrade_policy: String,
        use_client_protocol: bool,
        max_concurrent_streams: i32,
    }
);

message!(
    /// Ejection of failing endpoints.
    OutlierDetection {
        split_external_local_origin_errors: bool,
        consecutive_local_origin_failures: u32,
        consecutive_gateway_errors: u32,
        consecutive_5xx_errors: u32,
        consecutive_errors: i32,
        interval: String,
        base_ejection_time: String,
        max_ejection_percent: i32,
        min_health_percent: i32,
    }
);

message!(
    /// TLS to the destination.
    ClientTlsSettings {
        mode: String,
        client_certificate: String,
        private_key: String,
        ca_certificates: String,
        credential_name: String,
        subject_alt_names: Vec<String>,
        sni: String,
        insecure_skip_verify: bool,
        ca_crl: String,
    }
);

message!(
    /// Tunnel settings.
    TunnelSettings { protocol: String, target_host: String, target_port: u32 }
);

message!(
    /// PROXY protocol to the upstream.
    ProxyProtocol { version: String }
);
