//! A small HTTP/1.1 client over a Unix socket: how the CLI and the
//! controller's local store talk to the local runtime's API.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Errors talking to the socket.
#[derive(Debug, thiserror::Error)]
pub enum UnixHttpError {
    /// Could not connect: the server is not running.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
}

async fn send(
    sock: &Path,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<hyper::Response<Incoming>, UnixHttpError> {
    let stream = UnixStream::connect(sock)
        .await
        .map_err(|source| UnixHttpError::Connect {
            path: sock.display().to_string(),
            source,
        })?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "local")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    Ok(tx.send_request(req).await?)
}

/// One request; the whole response body.
pub async fn request(
    sock: &Path,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), UnixHttpError> {
    let resp = send(sock, method, path, body).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A streamed response read line by line (NDJSON watches).
pub struct Lines {
    body: Incoming,
    buf: BytesMut,
}

impl Lines {
    /// Opens `GET path` and returns its body as lines.
    pub async fn open(sock: &Path, path: &str) -> Result<(StatusCode, Self), UnixHttpError> {
        let resp = send(sock, Method::GET, path, Vec::new()).await?;
        Ok((
            resp.status(),
            Self {
                body: resp.into_body(),
                buf: BytesMut::new(),
            },
        ))
    }

    /// The next line; `None` at the end of the stream.
    pub async fn next_line(&mut self) -> Result<Option<Bytes>, UnixHttpError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(i + 1);
                return Ok(Some(line.freeze().slice(..i)));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
