//! The access log: one JSON object per request on stdout, with Envoy's
//! field names and response flags (`UT`, `URX`, `NR`, `FI`...), as Istio
//! prints it with `accessLogEncoding: JSON`. `MESH_ACCESS_LOG=off` turns it
//! off.

use std::io::Write;
use std::time::{Duration, SystemTime};

use hyper::Response;
use hyper::header::{HeaderName, USER_AGENT};

use crate::http::stream_info::StreamInfo as Info;

/// What is logged of a request, taken before it is forwarded.
pub struct Request {
    method: String,
    path: String,
    authority: String,
    protocol: String,
    request_id: String,
    user_agent: String,
    start: SystemTime,
}

fn header<B>(req: &hyper::Request<B>, name: &HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

impl Request {
    /// Reads `req`.
    pub fn of<B>(req: &hyper::Request<B>) -> Self {
        Self {
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            authority: crate::traffic::matching::authority(req).to_string(),
            protocol: format!("{:?}", req.version()),
            request_id: header(req, &HeaderName::from_static("x-request-id")),
            user_agent: header(req, &USER_AGENT),
            start: SystemTime::now(),
        }
    }

    /// Writes the line for `resp`.
    pub fn write<B>(&self, resp: &Response<B>, info: &Info, service: &str, took: Duration) {
        let start = time::OffsetDateTime::from(self.start);
        let line = serde_json::json!({
            "start_time": start.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "authority": self.authority,
            "response_code": resp.status().as_u16(),
            "response_flags": info.flags(),
            "route_name": info.route.as_deref().unwrap_or("default"),
            "upstream_cluster": service,
            "upstream_host": info.upstream.as_ref().map(|w| w.address.to_string()),
            "attempts": info.attempts,
            "duration": u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            "x_request_id": self.request_id,
            "user_agent": self.user_agent,
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}
