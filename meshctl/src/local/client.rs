//! The CLI's side of the runtime API.

use hyper::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StateDir;

/// Talks to the daemon of a state directory.
pub struct Client {
    state: StateDir,
}

impl Client {
    /// For `state`.
    pub fn new(state: StateDir) -> Self {
        Self { state }
    }

    /// The raw call: status and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(hyper::StatusCode, bytes::Bytes)> {
        common::unix_http::request(&self.state.socket(), method, path, body)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "the local runtime at {} is not running ({e}); start it with `meshctl local up`",
                    self.state.0.display()
                )
            })
    }

    /// GET a JSON document.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (status, body) = self.call(Method::GET, path, Vec::new()).await?;
        anyhow::ensure!(
            status.is_success(),
            "{path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(serde_json::from_slice(&body)?)
    }

    /// POST JSON, read JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let (status, body) = self
            .call(Method::POST, path, serde_json::to_vec(body)?)
            .await?;
        anyhow::ensure!(
            status.is_success(),
            "{path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(serde_json::from_slice(&body)?)
    }

    /// Whether the daemon answers.
    pub async fn alive(&self) -> bool {
        matches!(self.call(Method::GET, "/healthz", Vec::new()).await, Ok((s, _)) if s.is_success())
    }
}
