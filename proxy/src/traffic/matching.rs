//! VirtualService request matching, compiled once per configuration:
//! string matches (exact, prefix, RE2-style regex anchored at both ends as
//! in Envoy), presence, and the conditions of one `HTTPMatchRequest`, all
//! of which must hold.

use std::collections::BTreeMap;

use api::proto;
use hyper::Request;
use hyper::header::{HOST, HeaderName};
use regex::Regex;

/// One compiled string condition.
#[derive(Debug, Clone)]
pub enum StrMatch {
    /// The whole value.
    Exact(String),
    /// A leading part.
    Prefix(String),
    /// The whole value matches the expression.
    Regex(Regex),
    /// Any value (an empty match: the header or parameter is present).
    Present,
}

impl StrMatch {
    /// Compiles a match; `field` names it in the error.
    pub fn compile(m: &proto::StringMatch, field: &str) -> Result<Self, String> {
        use proto::string_match::Kind;
        match &m.kind {
            Some(Kind::Exact(e)) => Ok(Self::Exact(e.clone())),
            Some(Kind::Prefix(p)) => Ok(Self::Prefix(p.clone())),
            Some(Kind::Regex(r)) => Regex::new(&format!("^(?:{r})$"))
                .map(Self::Regex)
                .map_err(|e| format!("{field}.regex: {e}")),
            None => Ok(Self::Present),
        }
    }

    /// Compiles an optional match (`None` stays `None`).
    pub fn compile_opt(
        m: Option<&proto::StringMatch>,
        field: &str,
    ) -> Result<Option<Self>, String> {
        m.map(|m| Self::compile(m, field)).transpose()
    }

    /// Whether `v` matches; `ignore_case` applies to exact and prefix.
    pub fn matches(&self, v: &str, ignore_case: bool) -> bool {
        match self {
            Self::Exact(e) if ignore_case => v.eq_ignore_ascii_case(e),
            Self::Exact(e) => v == e,
            Self::Prefix(p) if ignore_case => {
                v.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p))
            }
            Self::Prefix(p) => v.starts_with(p.as_str()),
            Self::Regex(r) => r.is_match(v),
            Self::Present => true,
        }
    }
}

/// Who sends the request (for `sourceLabels` and `sourceNamespace`).
#[derive(Debug, Default, Clone)]
pub struct Source {
    /// The client pod's labels.
    pub labels: BTreeMap<String, String>,
    /// Its namespace.
    pub namespace: String,
}

/// One compiled `HTTPMatchRequest`.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    /// Against the path without the query.
    pub uri: Option<StrMatch>,
    ignore_uri_case: bool,
    scheme: Option<StrMatch>,
    method: Option<StrMatch>,
    authority: Option<StrMatch>,
    headers: Vec<(HeaderName, StrMatch)>,
    without_headers: Vec<(HeaderName, StrMatch)>,
    query: Vec<(String, StrMatch)>,
    port: Option<u16>,
    source_labels: BTreeMap<String, String>,
    source_namespace: Option<String>,
}

fn named(at: &str, m: &[proto::NamedMatch]) -> Result<Vec<(String, StrMatch)>, String> {
    m.iter()
        .map(|n| {
            let f = format!("{at}.{}", n.name);
            let m = StrMatch::compile_opt(n.r#match.as_ref(), &f)?.unwrap_or(StrMatch::Present);
            Ok((n.name.clone(), m))
        })
        .collect()
}

fn header_matches(
    at: &str,
    m: &[proto::NamedMatch],
) -> Result<Vec<(HeaderName, StrMatch)>, String> {
    named(at, m)?
        .into_iter()
        .map(|(k, m)| {
            let name = HeaderName::try_from(k.to_ascii_lowercase())
                .map_err(|e| format!("{at}.{k}: {e}"))?;
            Ok((name, m))
        })
        .collect()
}

impl RequestMatch {
    /// Compiles `m`; `at` is its field path for errors.
    pub fn compile(m: &proto::RequestMatch, at: &str) -> Result<Self, String> {
        let one = |s: &Option<proto::StringMatch>, f: &str| {
            StrMatch::compile_opt(s.as_ref(), &format!("{at}.{f}"))
        };
        Ok(Self {
            uri: one(&m.uri, "uri")?,
            ignore_uri_case: m.ignore_uri_case,
            scheme: one(&m.scheme, "scheme")?,
            method: one(&m.method, "method")?,
            authority: one(&m.authority, "authority")?,
            headers: header_matches(&format!("{at}.headers"), &m.headers)?,
            without_headers: header_matches(&format!("{at}.withoutHeaders"), &m.without_headers)?,
            query: named(&format!("{at}.queryParams"), &m.query_params)?,
            port: u16::try_from(m.port).ok().filter(|p| *p != 0),
            source_labels: m.source_labels.clone(),
            source_namespace: Some(m.source_namespace.clone()).filter(|s| !s.is_empty()),
        })
    }

    /// Whether every condition holds for `req` to `port` from `src`.
    pub fn matches<B>(&self, req: &Request<B>, port: u16, src: &Source) -> bool {
        if self.port.is_some_and(|p| p != port)
            || !api::cluster::labels_match(&self.source_labels, &src.labels)
            || self
                .source_namespace
                .as_ref()
                .is_some_and(|ns| ns != &src.namespace)
        {
            return false;
        }
        if let Some(u) = &self.uri
            && !u.matches(req.uri().path(), self.ignore_uri_case)
        {
            return false;
        }
        if let Some(s) = &self.scheme
            && !s.matches(req.uri().scheme_str().unwrap_or("http"), false)
        {
            return false;
        }
        if let Some(m) = &self.method
            && !m.matches(req.method().as_str(), false)
        {
            return false;
        }
        if let Some(a) = &self.authority
            && !a.matches(authority(req), false)
        {
            return false;
        }
        let header = |n: &HeaderName| req.headers().get(n).and_then(|v| v.to_str().ok());
        if !self
            .headers
            .iter()
            .all(|(n, m)| header(n).is_some_and(|v| m.matches(v, false)))
        {
            return false;
        }
        if self
            .without_headers
            .iter()
            .any(|(n, m)| header(n).is_some_and(|v| m.matches(v, false)))
        {
            return false;
        }
        self.query.iter().all(|(k, m)| {
            query_param(req.uri().query().unwrap_or(""), k).is_some_and(|v| m.matches(v, false))
        })
    }
}

/// The request's authority: the URI's, else the Host header.
pub fn authority<B>(req: &Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
}

/// The first value of `key` in a query string (not percent-decoded, as
/// Envoy compares it).
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(yaml: &str) -> proto::RequestMatch {
        api::routing::request_match(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    fn compile(yaml: &str) -> RequestMatch {
        RequestMatch::compile(&wire(yaml), "m").unwrap()
    }

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn uri_matches_exact_prefix_regex_and_case() {
        let src = Source::default();
        let m = compile("uri: {prefix: /v1/}");
        assert!(m.matches(&req("/v1/orders?x=1", &[]), 80, &src));
        assert!(!m.matches(&req("/V1/orders", &[]), 80, &src));
        let m = compile("uri: {prefix: /v1/}\nignoreUriCase: true");
        assert!(m.matches(&req("/V1/orders", &[]), 80, &src));
        let m = compile("uri: {exact: /health}");
        assert!(m.matches(&req("/health?full", &[]), 80, &src));
        assert!(!m.matches(&req("/healthz", &[]), 80, &src));
        let m = compile("uri: {regex: '/orders/[0-9]+'}");
        assert!(m.matches(&req("/orders/42", &[]), 80, &src));
        assert!(!m.matches(&req("/orders/42/items", &[]), 80, &src));
    }

    #[test]
    fn headers_presence_absence_and_query() {
        let src = Source::default();
        let m = compile("headers: {x-canary: {exact: 'true'}, x-user: {}}");
        assert!(m.matches(&req("/", &[("x-canary", "true"), ("x-user", "")]), 80, &src));
        assert!(!m.matches(&req("/", &[("x-canary", "true")]), 80, &src));
        assert!(!m.matches(
            &req("/", &[("x-canary", "false"), ("x-user", "a")]),
            80,
            &src
        ));
        let m = compile("withoutHeaders: {x-debug: {}}");
        assert!(m.matches(&req("/", &[]), 80, &src));
        assert!(!m.matches(&req("/", &[("x-debug", "1")]), 80, &src));
        let m = compile("queryParams: {v: {regex: '[0-9]'}}");
        assert!(m.matches(&req("/?a=b&v=2", &[]), 80, &src));
        assert!(!m.matches(&req("/?v=22", &[]), 80, &src));
        assert!(!m.matches(&req("/", &[]), 80, &src));
    }

    #[test]
    fn method_authority_port_and_source() {
        let m = compile(
            "method: {exact: POST}\nauthority: {prefix: orders}\nport: 8080\nsourceLabels: {app: web}\nsourceNamespace: shop",
        );
        let web = Source {
            labels: [("app".to_string(), "web".to_string())].into(),
            namespace: "shop".into(),
        };
        let mut r = req("/", &[("host", "orders:8080")]);
        *r.method_mut() = hyper::Method::POST;
        assert!(m.matches(&r, 8080, &web));
        assert!(!m.matches(&r, 80, &web));
        assert!(!m.matches(&r, 8080, &Source::default()));
        let other_ns = Source {
            namespace: "x".into(),
            ..web.clone()
        };
        assert!(!m.matches(&r, 8080, &other_ns));
        assert!(!m.matches(&req("/", &[("host", "orders:8080")]), 8080, &web));
    }

    #[test]
    fn a_bad_regex_is_named() {
        let err =
            RequestMatch::compile(&wire("uri: {regex: '('}"), "spec.http[0].match[0]").unwrap_err();
        assert!(err.starts_with("spec.http[0].match[0].uri.regex:"), "{err}");
    }
}
