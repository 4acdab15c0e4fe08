//! CORS as Envoy's filter applies a route's `corsPolicy`: a preflight from
//! an allowed origin is answered by the proxy; an actual request from one
//! gets the `Access-Control-*` response headers. Origins that do not match
//! pass through untouched (Istio's default for unmatched preflights:
//! forward).

use api::proto;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request};

use super::matching::StrMatch;

/// A compiled `corsPolicy`.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<StrMatch>,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

fn joined(v: &[String], at: &str) -> Result<Option<HeaderValue>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    HeaderValue::try_from(v.join(","))
        .map(Some)
        .map_err(|e| format!("{at}: {e}"))
}

impl Cors {
    /// Compiles `c`; `at` names it in errors.
    pub fn compile(c: &proto::Cors, at: &str) -> Result<Self, String> {
        let origins = c
            .allow_origins
            .iter()
            .enumerate()
            .map(|(i, m)| StrMatch::compile(m, &format!("{at}.allowOrigins[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            origins,
            methods: joined(&c.allow_methods, &format!("{at}.allowMethods"))?,
            headers: joined(&c.allow_headers, &format!("{at}.allowHeaders"))?,
            expose: joined(&c.expose_headers, &format!("{at}.exposeHeaders"))?,
            max_age: c
                .max_age
                .as_ref()
                .map(|d| HeaderValue::from(api::routing::from_wire(d).as_secs())),
            credentials: c.allow_credentials,
        })
    }

    /// The request's origin, if the policy allows it.
    pub fn allowed<B>(&self, req: &Request<B>) -> Option<HeaderValue> {
        let origin = req.headers().get(header::ORIGIN)?;
        let s = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|m| m.matches(s, false))
            .then(|| origin.clone())
    }

    /// Whether `req` is a preflight.
    pub fn is_preflight<B>(req: &Request<B>) -> bool {
        req.method() == Method::OPTIONS
            && req.headers().contains_key(header::ORIGIN)
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Headers answering a preflight from `origin`.
    pub fn preflight_headers(&self, origin: HeaderValue, h: &mut HeaderMap) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if let Some(v) = &self.methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
        }
        if let Some(v) = &self.headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        self.credentials_header(h);
    }

    /// Headers on an actual response to `origin`.
    pub fn response_headers(&self, origin: HeaderValue, h: &mut HeaderMap) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if let Some(v) = &self.expose {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        self.credentials_header(h);
    }

    fn credentials_header(&self, h: &mut HeaderMap) {
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_origins_get_headers_and_others_none() {
        let r = super::super::tests::wire_route(
            "{corsPolicy: {allowOrigins: [{exact: 'https://shop.example'}, {regex: 'https://.*\\.dev\\.example'}], allowMethods: [GET, POST], allowHeaders: [x-token], maxAge: 24h, allowCredentials: true}}",
        );
        let c = Cors::compile(r.cors.as_ref().unwrap(), "corsPolicy").unwrap();
        let req = |origin: &str| {
            Request::builder()
                .method(Method::OPTIONS)
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .body(())
                .unwrap()
        };
        assert!(Cors::is_preflight(&req("https://shop.example")));
        let origin = c.allowed(&req("https://shop.example")).unwrap();
        let mut h = HeaderMap::new();
        c.preflight_headers(origin, &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET,POST");
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "86400");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(c.allowed(&req("https://a.dev.example")).is_some());
        assert!(c.allowed(&req("https://evil.example")).is_none());
        assert!(!Cors::is_preflight(&Request::new(())));
    }
}
