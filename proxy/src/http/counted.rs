//! Bodies that count what passes: bytes, gRPC messages (the 5-byte
//! length prefixes, followed across frames) and the `grpc-status` of the
//! trailers; the response's body calls its `done` once, when the stream
//! ends, fails or is dropped (a client gone), so that a request is
//! measured as Istio measures it: to its last byte.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper::{HeaderMap, Request, Response};
use std::time::{Duration, Instant};

use crate::metrics::Sizes;

use super::Body;

/// What one direction of a request carried.
#[derive(Debug, Default)]
pub struct Tally {
    bytes: AtomicU64,
    messages: AtomicU64,
}

impl Tally {
    /// Body bytes so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// gRPC messages started so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
}

/// Follows gRPC's framing (a flag byte, a u32 length, the message) across
/// data frames.
#[derive(Debug, Default)]
struct Framing {
    /// Bytes of the current prefix read (0..5).
    prefix: usize,
    /// The length being read.
    len: u32,
    /// Message bytes still to skip.
    skip: u64,
}

impl Framing {
    /// Reads `data`; returns how many messages started in it.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut started = 0;
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64);
                self.skip -= n;
                data = &data[n as usize..];
                continue;
            }
            if self.prefix == 0 {
                started += 1;
                self.len = 0;
            } else if self.prefix >= 1 {
                self.len = (self.len << 8) | u32::from(data[0]);
            }
            self.prefix += 1;
            data = &data[1..];
            if self.prefix == 5 {
                self.prefix = 0;
                self.skip = u64::from(self.len);
            }
        }
        started
    }
}

/// The approximate size of a header block as sent (names, values and
/// separators).
pub fn headers_size(h: &HeaderMap) -> u64 {
    h.iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
        .sum()
}

/// The length of `uri` as written (its `Display`), without writing it.
fn uri_len(uri: &hyper::Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
}

/// Called once when the response's stream ends: with the `grpc-status`
/// its trailers (or headers) carried.
pub type Done = Box<dyn FnOnce(Option<Bytes>) + Send + Sync>;

/// A body that counts into a [`Tally`].
pub struct Counted {
    inner: Body,
    tally: Arc<Tally>,
    grpc: Option<Framing>,
    status: Option<Bytes>,
    done: Option<Done>,
}

impl Counted {
    /// Counts `inner` into `tally` (gRPC messages too when `grpc`).
    pub fn new(inner: Body, tally: Arc<Tally>, grpc: bool) -> Self {
        Self {
            inner,
            tally,
            grpc: grpc.then(Framing::default),
            status: None,
            done: None,
        }
    }

    /// Calls `done` at the end of the stream, with `status` unless the
    /// trailers say otherwise.
    pub fn on_done(mut self, status: Option<Bytes>, done: Done) -> Self {
        self.status = status;
        self.done = Some(done);
        self
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.status.take());
        }
    }
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.tally
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Some(f) = &mut this.grpc {
                        let started = f.feed(data);
                        this.tally.messages.fetch_add(started, Ordering::Relaxed);
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    this.tally
                        .bytes
                        .fetch_add(headers_size(t), Ordering::Relaxed);
                    if let Some(s) = t.get("grpc-status") {
                        this.status = Some(Bytes::copy_from_slice(s.as_bytes()));
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One request being measured: when it started, the size of its head
/// and what its body carried so far.
pub struct Measure {
    started: Instant,
    grpc: bool,
    head: u64,
    request: Arc<Tally>,
}

impl Measure {
    /// Starts measuring `req`; returns it with a body that counts.
    pub fn start(req: Request<Body>) -> (Self, Request<Body>) {
        let started = Instant::now();
        let grpc = super::is_grpc(&req);
        let head =
            (req.method().as_str().len() + uri_len(req.uri())) as u64 + headers_size(req.headers());
        let request = Arc::new(Tally::default());
        let tally = request.clone();
        let req = req.map(|body| Counted::new(body, tally, grpc).boxed());
        let measure = Self {
            started,
            grpc,
            head,
            request,
        };
        (measure, req)
    }

    /// Whether the request is gRPC.
    pub fn grpc(&self) -> bool {
        self.grpc
    }

    /// `resp`, whose body calls `done` when its stream ends, with the
    /// request's duration, its sizes and the gRPC status.
    pub fn finish(
        self,
        resp: Response<Body>,
        done: impl FnOnce(Duration, Sizes, Option<Bytes>) + Send + Sync + 'static,
    ) -> Response<Body> {
        let head = 3 + headers_size(resp.headers());
        let status = resp
            .headers()
            .get("grpc-status")
            .map(|v| Bytes::copy_from_slice(v.as_bytes()));
        let response = Arc::new(Tally::default());
        let tally = response.clone();
        let grpc = self.grpc;
        resp.map(move |body| {
            Counted::new(body, tally, grpc)
                .on_done(
                    status,
                    Box::new(move |status| {
                        let sizes = Sizes {
                            request_bytes: self.head + self.request.bytes(),
                            response_bytes: head + response.bytes(),
                            messages: grpc.then(|| (self.request.messages(), response.messages())),
                        };
                        done(self.started.elapsed(), sizes, status);
                    }),
                )
                .boxed()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn grpc_message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    }

    /// A body of set frames.
    struct Frames(std::collections::VecDeque<Result<Frame<Bytes>, hyper::Error>>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    #[test]
    fn uri_length_is_that_of_its_text() {
        for u in [
            "/",
            "/a/b?x=1&y",
            "http://orders:8080/pay?id=7",
            "https://h",
            "*",
        ] {
            let uri: hyper::Uri = u.parse().unwrap();
            assert_eq!(uri_len(&uri), uri.to_string().len(), "{u}");
        }
    }

    #[test]
    fn framing_follows_messages_across_frames() {
        let mut stream = Vec::new();
        for len in [0, 3, 70_000, 1] {
            stream.extend(grpc_message(len));
        }
        for chunk in [1, 2, 5, 7, 4096, stream.len()] {
            let mut f = Framing::default();
            let n: u64 = stream.chunks(chunk).map(|c| f.feed(c)).sum();
            assert_eq!(n, 4, "chunks of {chunk}");
        }
    }

    #[tokio::test]
    async fn counts_bytes_messages_and_status_then_calls_done_once() {
        let tally = Arc::new(Tally::default());
        let mut data = grpc_message(10);
        data.extend(grpc_message(20));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        let frames = vec![
            Ok::<_, hyper::Error>(Frame::data(Bytes::from(data[..7].to_vec()))),
            Ok(Frame::data(Bytes::from(data[7..].to_vec()))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = Frames(frames.into()).boxed();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let counted = Counted::new(body, tally.clone(), true)
            .on_done(None, Box::new(move |status| s.lock().unwrap().push(status)));
        let collected = counted.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "5");
        assert_eq!(tally.messages(), 2);
        assert!(tally.bytes() > data.len() as u64);
        assert_eq!(*seen.lock().unwrap(), vec![Some(Bytes::from_static(b"5"))]);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_is_done_too() {
        let seen = Arc::new(AtomicU64::new(0));
        let s = seen.clone();
        let c = Counted::new(super::super::full("abc"), Arc::default(), false).on_done(
            Some(Bytes::from_static(b"0")),
            Box::new(move |status| {
                assert_eq!(status.as_deref(), Some(&b"0"[..]));
                s.fetch_add(1, Ordering::Relaxed);
            }),
        );
        drop(c);
        assert_eq!(seen.load(Ordering::Relaxed), 1);
    }
}
