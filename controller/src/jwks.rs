//! The JWKS of RequestAuthentications that name a `jwksUri` (or only an
//! issuer with OpenID discovery), fetched by the controller as istiod
//! does, so that proxies never call out.
//!
//! A layer on the store's feed: every mesh config passing through gets
//! the documents it needs in `MeshConfig::jwks`. A source seen for the
//! first time is fetched before its config goes on (bounded by the rule's
//! `timeout`, 5 s by default), so that a new policy never starts without
//! its keys. Every source is fetched again each refresh interval (Istio's
//! default: 20 minutes), and sooner, every few seconds, while one fails;
//! a changed document (a rotated key) is sent on as a new config. A
//! refresh that fails keeps the last document that was read.

use std::collections::BTreeMap;
use std::time::Duration;

use api::cluster::MeshConfig;
use mesh_controller_core::index::{self, Change, Changes, Feed};
use tokio::time::Instant;

mod fetch;

/// How soon a failed source is tried again (at most the refresh
/// interval).
const RETRY: Duration = Duration::from_secs(5);

/// Each source with its fetch timeout.
fn sources(config: &MeshConfig) -> BTreeMap<String, Duration> {
    let mut out = BTreeMap::new();
    for rule in config
        .request_authentications
        .iter()
        .flat_map(|ra| ra.spec.jwt_rules.iter().flatten())
    {
        if let Some(src) = api::jwt::jwks_source(rule) {
            let timeout = rule
                .timeout
                .as_deref()
                .and_then(|t| api::duration::parse(t).ok())
                .unwrap_or(fetch::DEFAULT_TIMEOUT);
            out.insert(src, timeout);
        }
    }
    out
}

async fn fetch_all(wanted: &BTreeMap<String, Duration>) -> Vec<(String, Result<String, String>)> {
    let fetches = wanted.iter().map(|(src, timeout)| async move {
        let r = fetch::jwks(src, *timeout).await;
        if let Err(e) = &r {
            tracing::warn!(source = %src, error = %e, "JWKS not fetched");
        }
        (src.clone(), r)
    });
    futures_util::future::join_all(fetches).await
}

/// The documents, and the config they were last sent with.
struct Keys {
    fetched: BTreeMap<String, Result<String, String>>,
    last: Option<MeshConfig>,
    refresh: Duration,
}

impl Keys {
    /// Fills `config` in, fetching what it names for the first time.
    async fn fill(&mut self, config: &mut MeshConfig) {
        let wanted = sources(config);
        self.fetched.retain(|src, _| wanted.contains_key(src));
        let new: BTreeMap<String, Duration> = wanted
            .into_iter()
            .filter(|(src, _)| !self.fetched.contains_key(src))
            .collect();
        self.fetched.extend(fetch_all(&new).await);
        config.jwks = self.fetched.clone();
        self.last = Some(config.clone());
    }

    /// Fetches every source again; the config to send when a document
    /// changed.
    async fn refresh(&mut self) -> Option<MeshConfig> {
        let mut config = self.last.clone()?;
        let mut changed = false;
        for (src, r) in fetch_all(&sources(&config)).await {
            let old = self.fetched.get(&src);
            let keep_good = r.is_err() && old.is_some_and(Result::is_ok);
            if !keep_good && old != Some(&r) {
                if r.is_ok() {
                    tracing::info!(source = %src, "JWKS changed");
                }
                self.fetched.insert(src, r);
                changed = true;
            }
        }
        changed.then(|| {
            config.jwks = self.fetched.clone();
            self.last = Some(config.clone());
            config
        })
    }

    fn next_refresh(&self) -> Instant {
        let failing = self.fetched.values().any(Result::is_err);
        let wait = if failing {
            RETRY.min(self.refresh)
        } else {
            self.refresh
        };
        Instant::now() + wait
    }
}

/// Puts the fetcher between a store's `changes` and the indexer.
pub fn spawn(mut changes: Changes, refresh: Duration) -> Changes {
    let (feed, out): (Feed, Changes) = index::feed();
    let mut keys = Keys {
        fetched: BTreeMap::new(),
        last: None,
        refresh,
    };
    tokio::spawn(async move {
        let mut next = keys.next_refresh();
        loop {
            tokio::select! {
                batch = changes.recv() => {
                    let Some(mut batch) = batch else { break };
                    for change in &mut batch {
                        if let Change::Config(config) = change {
                            keys.fill(config).await;
                            next = keys.next_refresh();
                        }
                    }
                    if !feed.send(batch) {
                        break;
                    }
                }
                () = tokio::time::sleep_until(next), if !keys.fetched.is_empty() => {
                    if let Some(config) = keys.refresh().await
                        && !feed.send(vec![Change::Config(Box::new(config))])
                    {
                        break;
                    }
                    next = keys.next_refresh();
                }
            }
        }
    });
    out
}
