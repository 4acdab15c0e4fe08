//! Request bodies kept for retries and mirrors. The first try streams the
//! body as it arrives (no added latency, no deadlock for streaming calls)
//! and records a copy on the side, up to [`LIMIT`]; a later try or a
//! mirror replays the copy, but only once the whole body was recorded.
//! Larger bodies are not retried or mirrored (Envoy's buffer limit rule).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper::header::HeaderMap;
use tokio::sync::Notify;

use super::Body;

/// The most a request body may be to stay retriable.
pub const LIMIT: usize = 64 * 1024;

#[derive(Default)]
struct State {
    data: Vec<Bytes>,
    size: usize,
    trailers: Option<HeaderMap>,
    done: bool,
    overflow: bool,
}

/// The recorded copy.
#[derive(Default)]
pub struct Tape {
    state: Mutex<State>,
    finished: Notify,
}

impl Tape {
    /// Whether the body was recorded whole.
    fn complete(&self) -> Option<(Vec<Bytes>, Option<HeaderMap>)> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (s.done && !s.overflow).then(|| (s.data.clone(), s.trailers.clone()))
    }

    /// Whether recording ended (whole, too big, or broken).
    fn ended(&self) -> bool {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.done || s.overflow
    }

    /// A copy of the body if it was recorded whole.
    pub fn replay(&self) -> Option<Body> {
        let (data, trailers) = self.complete()?;
        let frames = data
            .into_iter()
            .map(Frame::data)
            .chain(trailers.map(Frame::trailers))
            .map(Ok::<_, hyper::Error>);
        Some(http_body_util::StreamBody::new(tokio_stream::iter(frames)).boxed())
    }

    /// Waits until recording ended, then replays.
    pub async fn replay_when_done(&self) -> Option<Body> {
        loop {
            let notified = self.finished.notified();
            if self.ended() {
                return self.replay();
            }
            notified.await;
        }
    }

    fn record(&self, f: &Frame<Bytes>) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.overflow {
            return;
        }
        if let Some(d) = f.data_ref() {
            s.size += d.len();
            if s.size > LIMIT {
                s.overflow = true;
                s.data.clear();
                drop(s);
                self.finished.notify_waiters();
                return;
            }
            s.data.push(d.clone());
        } else if let Some(t) = f.trailers_ref() {
            s.trailers = Some(t.clone());
        }
    }

    fn finish(&self, whole: bool) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if whole {
            s.done = true;
        } else {
            s.overflow = true;
        }
        drop(s);
        self.finished.notify_waiters();
    }
}

/// A body that records what passes through it on a [`Tape`].
pub struct Recording<B> {
    inner: B,
    tape: Arc<Tape>,
}

/// Wraps `body`; the tape is complete at once when the body is empty.
pub fn record<B>(body: B) -> (Recording<B>, Arc<Tape>)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let tape = Arc::new(Tape::default());
    if body.is_end_stream() {
        tape.finish(true);
    }
    (
        Recording {
            inner: body,
            tape: tape.clone(),
        },
        tape,
    )
}

impl<B> hyper::body::Body for Recording<B>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                self.tape.record(f);
                if self.inner.is_end_stream() {
                    self.tape.finish(true);
                }
            }
            Poll::Ready(None) => self.tape.finish(true),
            Poll::Ready(Some(Err(_))) => self.tape.finish(false),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Recording<B> {
    fn drop(&mut self) {
        // Dropped before the end: whatever was recorded is partial.
        if !self.tape.ended() {
            self.tape.finish(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{Full, StreamBody};

    use super::*;

    fn chunks(parts: Vec<&'static [u8]>) -> Body {
        let frames = parts
            .into_iter()
            .map(|p| Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(p))));
        StreamBody::new(tokio_stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn a_small_body_streams_and_replays_whole() {
        let (body, tape) = record(chunks(vec![b"hello ", b"world"]));
        assert!(tape.replay().is_none(), "not yet read");
        let first = body.collect().await.unwrap().to_bytes();
        assert_eq!(first, "hello world");
        for _ in 0..2 {
            let again = tape.replay().unwrap().collect().await.unwrap().to_bytes();
            assert_eq!(again, "hello world");
        }
    }

    #[tokio::test]
    async fn an_empty_body_is_complete_at_once() {
        let (_body, tape) = record(Full::new(Bytes::new()).map_err(|n| match n {}).boxed());
        assert_eq!(
            tape.replay_when_done()
                .await
                .unwrap()
                .collect()
                .await
                .unwrap()
                .to_bytes(),
            ""
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_not_kept() {
        static BIG: [u8; LIMIT] = [7; LIMIT];
        let (body, tape) = record(chunks(vec![&BIG, b"x"]));
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), LIMIT + 1, "the first try still gets everything");
        assert!(tape.replay().is_none());
        assert!(tape.replay_when_done().await.is_none());
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_is_not_replayed() {
        let (mut body, tape) = record(chunks(vec![b"a", b"b"]));
        let _ = body.frame().await;
        drop(body);
        assert!(tape.replay_when_done().await.is_none());
    }
}
