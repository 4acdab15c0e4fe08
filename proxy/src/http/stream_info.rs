//! What happened to one request, as Envoy's stream info holds it: the
//! endpoint that answered, the response flags, the route and the tries.
//! Each layer notes its part on the response (in its extensions) on the
//! way out; metrics and the access log read it at the top of the stack.

use std::sync::Arc;

use api::discovery::{Endpoint, Workload};
use hyper::Response;

/// One endpoint of a backend, by index into the backend's shared list:
/// noting which endpoint a try went to copies a pointer, not the
/// endpoint's workload.
#[derive(Debug, Clone)]
pub struct EndpointRef {
    /// The backend's endpoints.
    pub endpoints: Arc<[Endpoint]>,
    /// Which one.
    pub index: usize,
}

impl EndpointRef {
    /// The endpoint's workload.
    pub fn workload(&self) -> &Workload {
        &self.endpoints[self.index].workload
    }
}

/// Envoy's response flags that the proxy sets.
pub mod flags {
    /// No route matched.
    pub const NO_ROUTE: &str = "NR";
    /// No healthy upstream (empty subset).
    pub const NO_HEALTHY: &str = "UH";
    /// Connecting failed.
    pub const CONNECT_FAILURE: &str = "UF";
    /// The upstream reset the stream.
    pub const RESET: &str = "UR";
    /// Timed out.
    pub const TIMEOUT: &str = "UT";
    /// Over a connection pool limit.
    pub const OVERFLOW: &str = "UO";
    /// Retries exhausted.
    pub const RETRIES_EXHAUSTED: &str = "URX";
    /// Delay injected.
    pub const DELAY: &str = "DI";
    /// Abort injected.
    pub const ABORT: &str = "FI";
    /// Refused by the local rate limit.
    pub const RATE_LIMITED: &str = "RL";
    /// Denied by an AuthorizationPolicy (Envoy's RBAC filter).
    pub const RBAC: &str = "RBAC";
    /// Denied by an external authorizer, or it could not be asked.
    pub const EXT_AUTHZ: &str = "UAEX";
    /// Nothing to report.
    pub const NONE: &str = "-";
}

/// What happened, for metrics and the access log.
#[derive(Debug, Default, Clone)]
pub struct StreamInfo {
    /// The endpoint that answered last.
    pub upstream: Option<EndpointRef>,
    /// Response flags, in the order they were set.
    pub flags: Vec<&'static str>,
    /// The route's name.
    pub route: Option<String>,
    /// Tries made.
    pub attempts: u32,
    /// Set by the layer that refused the request itself (a policy): what
    /// it was and why, for the access log and `/config_dump`.
    pub refused: Option<Box<Refused>>,
}

/// A request the proxy refused, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    /// What the access log prints of it.
    pub request: crate::access_log::Request,
    /// Envoy's `response_code_details`: the policy and rule, or the
    /// token's fault.
    pub details: String,
    /// The cluster it was for (`inbound|PORT||`).
    pub cluster: String,
}

impl StreamInfo {
    /// Flags as Envoy prints them (`-` for none).
    pub fn flags(&self) -> String {
        Self::flags_text(&self.flags)
    }

    /// `flags` as Envoy prints them (`-` for none).
    pub fn flags_text(flags: &[&'static str]) -> String {
        if flags.is_empty() {
            flags::NONE.into()
        } else {
            flags.join(",")
        }
    }

    /// The stream info a response carries (made on first use).
    pub fn of<B>(resp: &mut Response<B>) -> &mut Self {
        resp.extensions_mut().get_or_insert_default::<Self>()
    }

    /// `resp`, refused here for `why`, with `flag` noted.
    pub fn refused<B>(resp: Response<B>, flag: Option<&'static str>, why: Refused) -> Response<B> {
        let mut resp = match flag {
            Some(f) => Self::flagged(resp, f),
            None => resp,
        };
        Self::of(&mut resp).refused = Some(Box::new(why));
        resp
    }

    /// Envoy's `response_code_details`: why the proxy answered itself,
    /// `via_upstream` when the app did, `-` otherwise.
    pub fn details(&self) -> &str {
        match (&self.refused, &self.upstream) {
            (Some(r), _) => &r.details,
            (None, Some(_)) => "via_upstream",
            (None, None) => flags::NONE,
        }
    }

    /// `resp` with `flag` noted.
    pub fn flagged<B>(mut resp: Response<B>, flag: &'static str) -> Response<B> {
        Self::of(&mut resp).flags.push(flag);
        resp
    }
}
