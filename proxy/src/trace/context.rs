//! Trace context on the wire: W3C `traceparent`/`tracestate` and B3, in
//! its multi-header (`x-b3-*`) and single-header (`b3`) forms. Read from
//! whichever the request carries (W3C first), and written back in W3C
//! and B3 multi-header form (and single-header form when the request came
//! with it), so that an app that forwards either family keeps the trace.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// What a request says of its trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The caller's span: ours is its child.
    pub parent: [u8; 8],
    /// The caller's sampling decision, when it made one.
    pub sampled: Option<bool>,
    /// `tracestate`, passed on unchanged.
    pub state: Option<HeaderValue>,
    /// Whether it came as a single `b3` header.
    pub b3_single: bool,
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    // B3 allows 64-bit trace ids: left-padded to 128.
    if s.len() > 2 * N || !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    let mut out = [0u8; N];
    let pad = N - s.len() / 2;
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        out[pad + i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn sampled_flag(s: &str) -> Option<bool> {
    match s {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn w3c(h: &HeaderMap) -> Option<Incoming> {
    let mut parts = text(h, &TRACEPARENT)?.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version == "ff" || version.len() != 2 || trace.len() != 32 || parent.len() != 16 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Incoming {
        trace_id: hex(trace)?,
        parent: hex(parent)?,
        sampled: Some(flags & 1 == 1),
        state: h.get(TRACESTATE).cloned(),
        b3_single: false,
    })
}

fn b3_single(h: &HeaderMap) -> Option<Incoming> {
    let mut parts = text(h, &B3)?.split('-');
    let trace = parts.next()?;
    let span = parts.next()?;
    Some(Incoming {
        trace_id: hex(trace)?,
        parent: hex(span)?,
        sampled: parts.next().and_then(sampled_flag),
        state: None,
        b3_single: true,
    })
}

fn b3_multi(h: &HeaderMap) -> Option<Incoming> {
    let debug = text(h, &B3_FLAGS) == Some("1");
    Some(Incoming {
        trace_id: hex(text(h, &B3_TRACE_ID)?)?,
        parent: hex(text(h, &B3_SPAN_ID)?)?,
        sampled: if debug {
            Some(true)
        } else {
            text(h, &B3_SAMPLED).and_then(sampled_flag)
        },
        state: None,
        b3_single: false,
    })
}

/// The sampling decision alone (`b3: 0`, `x-b3-sampled: 0` without ids):
/// B3's way to say "do not trace".
fn decision_only(h: &HeaderMap) -> Option<bool> {
    text(h, &B3)
        .filter(|v| v.len() == 1)
        .and_then(sampled_flag)
        .or_else(|| text(h, &B3_SAMPLED).and_then(sampled_flag))
}

/// What `h` says of its trace: a context, or only a sampling decision.
pub fn extract(h: &HeaderMap) -> (Option<Incoming>, Option<bool>) {
    match w3c(h).or_else(|| b3_single(h)).or_else(|| b3_multi(h)) {
        Some(i) => {
            let s = i.sampled;
            (Some(i), s)
        }
        None => (None, decision_only(h)),
    }
}

/// Our span, as the next hop is told.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
    pub incoming: Option<&'a Incoming>,
}

fn value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Writes `o` into `h`, replacing what the caller sent.
pub fn inject(h: &mut HeaderMap, o: &Outgoing<'_>) {
    let trace = to_hex(&o.trace_id);
    let span = to_hex(&o.span_id);
    let flag = if o.sampled { "1" } else { "0" };
    h.insert(TRACEPARENT, value(format!("00-{trace}-{span}-0{flag}")));
    match o.incoming.and_then(|i| i.state.clone()) {
        Some(state) => {
            h.insert(TRACESTATE, state);
        }
        None => {
            h.remove(TRACESTATE);
        }
    }
    h.insert(B3_TRACE_ID, value(trace.clone()));
    h.insert(B3_SPAN_ID, value(span.clone()));
    match o.parent {
        Some(p) => h.insert(B3_PARENT_SPAN_ID, value(to_hex(&p))),
        None => h.remove(B3_PARENT_SPAN_ID),
    };
    h.insert(
        B3_SAMPLED,
        HeaderValue::from_static(if o.sampled { "1" } else { "0" }),
    );
    h.remove(B3_FLAGS);
    if o.incoming.is_some_and(|i| i.b3_single) {
        let parent = o
            .parent
            .map(|p| format!("-{}", to_hex(&p)))
            .unwrap_or_default();
        h.insert(B3, value(format!("{trace}-{span}-{flag}{parent}")));
    } else {
        h.remove(B3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(
                HeaderName::try_from(*n).unwrap(),
                HeaderValue::try_from(*v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn reads_each_form() {
        let (w3c, s) = extract(&headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]));
        let w3c = w3c.unwrap();
        assert_eq!(to_hex(&w3c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(&w3c.parent), "00f067aa0ba902b7");
        assert_eq!(s, Some(true));
        assert!(w3c.state.is_some());

        let (multi, s) = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ]));
        assert_eq!(
            to_hex(&multi.unwrap().trace_id),
            "0000000000000000463ac35c9f6413ad",
            "64-bit ids are padded"
        );
        assert_eq!(s, Some(false));

        let (single, s) = extract(&headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90",
        )]));
        let single = single.unwrap();
        assert!(single.b3_single);
        assert_eq!(to_hex(&single.parent), "e457b5a2e4d86bd1");
        assert_eq!(s, Some(true), "debug means sampled");

        assert_eq!(extract(&headers(&[("b3", "0")])), (None, Some(false)));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
        ] {
            assert_eq!(extract(&headers(&[("traceparent", bad)])).0, None, "{bad}");
        }
    }

    #[test]
    fn writes_both_families() {
        let (incoming, _) = extract(&headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        )]));
        let incoming = incoming.unwrap();
        let mut h = headers(&[("x-b3-flags", "1")]);
        inject(
            &mut h,
            &Outgoing {
                trace_id: incoming.trace_id,
                span_id: [1, 2, 3, 4, 5, 6, 7, 8],
                parent: Some(incoming.parent),
                sampled: true,
                incoming: Some(&incoming),
            },
        );
        let get = |n: &str| h.get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(
            get("traceparent"),
            "00-80f198ee56343ba864fe8b2a57d3eff7-0102030405060708-01"
        );
        assert_eq!(get("x-b3-traceid"), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(get("x-b3-spanid"), "0102030405060708");
        assert_eq!(get("x-b3-parentspanid"), "e457b5a2e4d86bd1");
        assert_eq!(get("x-b3-sampled"), "1");
        assert_eq!(
            get("b3"),
            "80f198ee56343ba864fe8b2a57d3eff7-0102030405060708-1-e457b5a2e4d86bd1"
        );
        assert!(h.get("x-b3-flags").is_none());
        // What was written reads back as our span.
        let (again, _) = extract(&h);
        assert_eq!(again.unwrap().parent, [1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
