//! CORS as Envoy's filter applies a route's `corsPolicy`: a preflight from
//! an allowed origin is answered by the proxy; an actual request from one
//! gets the `Access-Control-*` response headers. Origins that do not match
//! pass through untouched (Istio's default for unmatched preflights:
//! forward).

use api::istio::virtual_service::CorsPolicy;
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

fn joined(v: Option<&Vec<String>>, at: &str) -> Result<Option<HeaderValue>, String> {
    match v {
        Some(v) if !v.is_empty() => HeaderValue::try_from(v.join(","))
            .map(Some)
            .map_err(|e| format!("{at}: {e}")),
        _ => Ok(None),
    }
}

impl Cors {
    /// Compiles `c`; `at` names it in errors.
    pub fn compile(c: &CorsPolicy, at: &str) -> Result<Self, String> {
        let mut origins = c
            .allow_origins
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, m)| StrMatch::compile(m, &format!("{at}.allowOrigins[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        origins.extend(c.allow_origin.iter().flatten().map(|o| {
            if o == "*" {
                StrMatch::Present
            } else {
                StrMatch::Exact(o.clone())
            }
        }));
        let max_age = c
            .max_age
            .as_deref()
            .map(|m| {
                api::duration::parse(m)
                    .map(|d| HeaderValue::from(d.as_secs()))
                    .map_err(|e| format!("{at}.maxAge: {e}"))
            })
            .transpose()?;
        Ok(Self {
            origins,
            methods: joined(c.allow_methods.as_ref(), &format!("{at}.allowMethods"))?,
            headers: joined(c.allow_headers.as_ref(), &format!("{at}.allowHeaders"))?,
            expose: joined(c.expose_headers.as_ref(), &format!("{at}.exposeHeaders"))?,
            max_age,
            credentials: c.allow_credentials.unwrap_or(false),
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
        let c: CorsPolicy = serde_yaml_ng::from_str(
            "{allowOrigins: [{exact: 'https://shop.example'}, {regex: 'https://.*\\.dev\\.example'}], allowMethods: [GET, POST], allowHeaders: [x-token], maxAge: 24h, allowCredentials: true}",
        )
        .unwrap();
        let c = Cors::compile(&c, "corsPolicy").unwrap();
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
