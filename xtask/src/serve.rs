//! A minimal HTTP/1.1 server answering every request with a body of a
//! fixed size (or the `?size=N` the request asks for): the benchmark's
//! backend, cheap enough not to be the limit.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// `serve` flags.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], a.port))).await?;
    let body = Bytes::from(vec![b'x'; a.size]);
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let body = body.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let asked = req
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("size="))
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| *n <= 1 << 20);
                let body = match asked {
                    Some(n) => Bytes::from(vec![b'x'; n]),
                    None => body.clone(),
                };
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
