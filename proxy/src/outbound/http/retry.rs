//! Retries with Envoy's meaning ([`crate::traffic::retry`]): each try
//! through the try stack (which bounds it by the per-try timeout), retried by the route's
//! policy, the host's retry budget and a jittered backoff, on another
//! endpoint when there is one. A request is admitted once against the
//! subset's connection-pool limits (503 `UO` beyond them) and counts as
//! active for the budget while it lasts. The first try streams the body;
//! later ones replay the recorded copy, or a request that never left.

use std::convert::Infallible;

use crate::http::service_head;
use hyper::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};

use super::record::Recorded;
use super::{Failure, Head, Selected, StreamInfo, Tries, TryStack};
use crate::http::stream_info::flags;
use crate::http::{Body, error_response, is_upgrade};
use crate::traffic::retry::{Next, Outcome, RetryState};

/// The retry layer.
#[derive(Clone)]
pub(crate) struct Retry<S> {
    inner: S,
    /// The port the app connected to.
    app_port: u16,
}

impl<S> Retry<S> {
    /// Retries tries of the inner (one-try) stack.
    pub fn layer(app_port: u16) -> impl Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(move |inner| Self { inner, app_port })
    }
}

/// The local reply for a try without a response: its flag, status and
/// reason.
type LocalReply = (&'static str, StatusCode, String);

/// What a try came to, for the retry policy, and the response it gives
/// when it is the last.
fn outcome(
    result: Result<Response<Body>, Failure>,
    pending: &mut Option<Request<Body>>,
) -> (Outcome, Result<Response<Body>, LocalReply>) {
    match result {
        Ok(r) => (
            Outcome::Response {
                status: r.status().as_u16(),
                grpc: r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            },
            Ok(r),
        ),
        Err(Failure::Connect(back, e)) => {
            *pending = back.map(|b| *b);
            (
                Outcome::ConnectFailure,
                Err((flags::CONNECT_FAILURE, StatusCode::SERVICE_UNAVAILABLE, e)),
            )
        }
        Err(Failure::Refused(e)) => (
            Outcome::RefusedStream,
            Err((flags::RESET, StatusCode::SERVICE_UNAVAILABLE, e)),
        ),
        // Envoy's local reply for a reset before headers is a 503.
        Err(Failure::Reset(e)) => (
            Outcome::Reset,
            Err((flags::RESET, StatusCode::SERVICE_UNAVAILABLE, e)),
        ),
        Err(Failure::Timeout) => (
            Outcome::Timeout,
            Err((
                flags::TIMEOUT,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream per-try timeout".to_string(),
            )),
        ),
        Err(Failure::NoEndpoint(e)) => (
            Outcome::ConnectFailure,
            Err((flags::NO_HEALTHY, StatusCode::SERVICE_UNAVAILABLE, e)),
        ),
    }
}

impl<S> Service<Request<Body>> for Retry<S>
where
    S: TryStack,
{
    service_head!(Infallible);

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let app_port = self.app_port;
        Box::pin(async move { Ok(serve(inner, app_port, req).await) })
    }
}

async fn serve<S>(inner: S, app_port: u16, mut req: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Failure> + Clone,
{
    let Some(selected) = req.extensions().get::<Selected>().cloned() else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "no route selected");
    };
    let (backend, sub) = match selected.cluster(app_port) {
        Ok((b, s, _)) => (b, s),
        Err(e) => {
            return StreamInfo::flagged(
                error_response(StatusCode::SERVICE_UNAVAILABLE, &e),
                flags::NO_HEALTHY,
            );
        }
    };
    let tries = Tries::default();
    let finish = |mut r: Response<Body>, attempts: u32| {
        let log = tries.lock();
        if let Some(c) = &log.set_cookie {
            r.headers_mut().append(hyper::header::SET_COOKIE, c.clone());
        }
        let info = StreamInfo::of(&mut r);
        info.attempts = attempts;
        info.upstream = log.last.clone();
        r
    };
    if is_upgrade(&req) {
        // One try on a connection of its own; nothing to replay.
        req.extensions_mut().insert(tries.clone());
        let r = match inner.oneshot(req).await {
            Ok(r) => r,
            Err(e) => {
                let what = match e {
                    Failure::NoEndpoint(e) => return finish(no_endpoint(&e), 1),
                    e => format!("{e:?}"),
                };
                StreamInfo::flagged(
                    error_response(StatusCode::BAD_GATEWAY, &format!("upgrade: {what}")),
                    flags::CONNECT_FAILURE,
                )
            }
        };
        return finish(r, 1);
    }
    let Ok(_slot) = sub.limits.admit().await else {
        let (host, _, _) = selected.target();
        return StreamInfo::flagged(
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{host}: connection pool overflow"),
            ),
            flags::OVERFLOW,
        );
    };
    let _active = backend.budget.request();
    let tape = req.extensions().get::<Recorded>().map(|r| r.0.clone());
    let head = Head::of(&req);
    let mut pending = Some(req);
    let policy = &selected.route().retry;
    let mut state = RetryState::new(policy, &backend.budget);
    let mut _retry_slot = None;
    loop {
        let attempts = state.begin();
        let Some(mut req) = pending
            .take()
            .or_else(|| tape.as_ref()?.replay().map(|b| head.with(b)))
        else {
            return finish(
                error_response(StatusCode::BAD_GATEWAY, "request body cannot be replayed"),
                attempts,
            );
        };
        req.extensions_mut().insert(tries.clone());
        let result = inner.clone().oneshot(req).await;
        if let Err(Failure::NoEndpoint(e)) = &result {
            return finish(no_endpoint(e), attempts);
        }
        let (outcome, resp) = outcome(result, &mut pending);
        let replayable = pending.is_some() || tape.as_ref().is_some_and(|t| t.replay().is_some());
        match state.after(outcome, replayable) {
            Next::Retry(wait, slot) => {
                _retry_slot = Some(slot);
                tracing::debug!(?outcome, attempt = attempts, "retrying");
                tokio::time::sleep(wait).await;
            }
            Next::Stop { exhausted } => {
                let mut r = match resp {
                    Ok(r) => r,
                    Err((flag, status, e)) => {
                        let at = tries
                            .lock()
                            .last
                            .as_ref()
                            .map(|e| e.workload().address.to_string())
                            .unwrap_or_default();
                        StreamInfo::flagged(error_response(status, &format!("{at}: {e}")), flag)
                    }
                };
                if exhausted {
                    StreamInfo::of(&mut r)
                        .flags
                        .insert(0, flags::RETRIES_EXHAUSTED);
                }
                return finish(r, attempts);
            }
        }
    }
}

fn no_endpoint(e: &str) -> Response<Body> {
    StreamInfo::flagged(
        error_response(StatusCode::SERVICE_UNAVAILABLE, e),
        flags::NO_HEALTHY,
    )
}
