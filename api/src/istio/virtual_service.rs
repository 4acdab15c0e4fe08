//! `VirtualService`: how requests to a host are routed.

use std::collections::BTreeMap;

use super::message;
use super::shared::{Destination, Headers, Percent, StringMatch};

message!(
    /// The spec of a VirtualService.
    VirtualServiceSpec {
        hosts: Vec<String>,
        gateways: Vec<String>,
        http: Vec<HttpRoute>,
        tls: Vec<TlsRoute>,
        tcp: Vec<TcpRoute>,
        export_to: Vec<String>,
    }
);

message!(
    /// One HTTP route: the first whose match applies wins.
    HttpRoute {
        name: String,
        r#match: Vec<HttpMatchRequest>,
        route: Vec<HttpRouteDestination>,
        redirect: HttpRedirect,
        direct_response: HttpDirectResponse,
        delegate: Delegate,
        rewrite: HttpRewrite,
        timeout: String,
        retries: HttpRetry,
        fault: HttpFaultInjection,
        mirror: Destination,
        mirrors: Vec<HttpMirrorPolicy>,
        mirror_percentage: Percent,
        mirror_percent: u32,
        cors_policy: CorsPolicy,
        headers: Headers,
    }
);

message!(
    /// Conditions of a route; all set fields must hold.
    HttpMatchRequest {
        name: String,
        uri: StringMatch,
        scheme: StringMatch,
        method: StringMatch,
        authority: StringMatch,
        headers: BTreeMap<String, StringMatch>,
        port: u32,
        source_labels: BTreeMap<String, String>,
        gateways: Vec<String>,
        query_params: BTreeMap<String, StringMatch>,
        ignore_uri_case: bool,
        without_headers: BTreeMap<String, StringMatch>,
        source_namespace: String,
        stat_prefix: String,
    }
);

message!(
    /// A weighted destination of an HTTP route.
    HttpRouteDestination { destination: Destination, weight: i32, headers: Headers }
);

message!(
    /// Answer with a redirect.
    HttpRedirect { uri: String, authority: String, port: u32, derive_port: String, scheme: String, redirect_code: u32 }
);

message!(
    /// The body of a direct response.
    HttpBody { string: String, bytes: String }
);

message!(
    /// Answer directly, without a backend.
    HttpDirectResponse { status: u32, body: HttpBody }
);

message!(
    /// Hand the route over to another VirtualService.
    Delegate { name: String, namespace: String }
);

message!(
    /// A regex rewrite of the path.
    RegexRewrite { r#match: String, rewrite: String }
);

message!(
    /// Rewrite the request before forwarding.
    HttpRewrite { uri: String, authority: String, uri_regex_rewrite: RegexRewrite }
);

message!(
    /// Retries.
    HttpRetry { attempts: i32, per_try_timeout: String, retry_on: String, retry_remote_localities: bool }
);

message!(
    /// A delay before forwarding.
    Delay { fixed_delay: String, exponential_delay: String, percentage: Percent, percent: i32 }
);

message!(
    /// An error instead of forwarding.
    Abort { http_status: i32, grpc_status: String, http2_error: String, percentage: Percent }
);

message!(
    /// Faults to inject.
    HttpFaultInjection { delay: Delay, abort: Abort }
);

message!(
    /// One mirror.
    HttpMirrorPolicy { destination: Destination, percentage: Percent }
);

message!(
    /// CORS.
    CorsPolicy {
        allow_origins: Vec<StringMatch>,
        allow_origin: Vec<String>,
        allow_methods: Vec<String>,
        allow_headers: Vec<String>,
        expose_headers: Vec<String>,
        max_age: String,
        allow_credentials: bool,
        unmatched_preflights: String,
    }
);

message!(
    /// A weighted destination of a TCP or TLS route.
    RouteDestination { destination: Destination, weight: i32 }
);

message!(
    /// Conditions of a TCP route.
    L4MatchAttributes {
        destination_subnets: Vec<String>,
        port: u32,
        source_labels: BTreeMap<String, String>,
        gateways: Vec<String>,
        source_namespace: String,
    }
);

message!(
    /// A TCP route.
    TcpRoute { r#match: Vec<L4MatchAttributes>, route: Vec<RouteDestination> }
);

message!(
    /// Conditions of a TLS route (by SNI).
    TlsMatchAttributes {
        sni_hosts: Vec<String>,
        destination_subnets: Vec<String>,
        port: u32,
        source_labels: BTreeMap<String, String>,
        gateways: Vec<String>,
        source_namespace: String,
    }
);

message!(
    /// A TLS route.
    TlsRoute { r#match: Vec<TlsMatchAttributes>, route: Vec<RouteDestination> }
);
