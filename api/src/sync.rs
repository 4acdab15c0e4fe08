//! Sync status: what the controller sent each connected proxy and what the
//! proxy said of it (ACK, or NACK with the reason per resource). The
//! controller serves a list of [`ProxySync`] (`/debug/syncz`); `meshctl
//! proxy-status` reads and prints the same type.

use serde::{Deserialize, Serialize};

/// One response of the controller, or a proxy's answer to one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// The response's nonce.
    pub nonce: String,
    /// The controller's config version the response reflects.
    pub version: String,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
}

/// A resource that a proxy refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The resource's name (an address).
    pub name: String,
    /// The proxy's reason, with the field path.
    pub error: String,
}

/// A NACK: the response refused and each resource's reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// Which response.
    #[serde(flatten)]
    pub of: Exchange,
    /// The refused resources (the others were applied).
    pub errors: Vec<Refusal>,
}

/// One proxy's discovery stream, as the controller sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySync {
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod IP.
    pub ip: String,
    /// The SPIFFE ID its certificate carries.
    pub identity: String,
    /// The controller instance that holds the stream.
    pub controller: String,
    /// Names the proxy subscribes to.
    pub subscriptions: usize,
    /// When the stream opened (seconds since the epoch).
    pub connected_at: u64,
    /// The last message from the proxy.
    pub last_seen: u64,
    /// The last response sent.
    pub sent: Option<Exchange>,
    /// The last response acknowledged.
    pub acked: Option<Exchange>,
    /// The last response refused.
    pub nacked: Option<Nack>,
}

/// Where a proxy stands, as `istioctl proxy-status` words it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncStatus {
    /// It acknowledged the last response.
    #[serde(rename = "SYNCED")]
    Synced,
    /// Nothing was sent yet (it subscribed to nothing).
    #[serde(rename = "NOT SENT")]
    NotSent,
    /// The last response is not acknowledged yet.
    #[serde(rename = "STALE")]
    Stale,
    /// No response was ever acknowledged.
    #[serde(rename = "STALE (Never Acknowledged)")]
    NeverAcknowledged,
    /// It refused (part of) the last response.
    #[serde(rename = "ERROR")]
    Error,
}

impl SyncStatus {
    /// The words shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "SYNCED",
            Self::NotSent => "NOT SENT",
            Self::Stale => "STALE",
            Self::NeverAcknowledged => "STALE (Never Acknowledged)",
            Self::Error => "ERROR",
        }
    }
}

impl ProxySync {
    /// A stream that just opened at `now`: nothing sent or answered yet.
    pub fn opened(pod: &str, namespace: &str, ip: &str, identity: &str, now: u64) -> Self {
        Self {
            pod: pod.into(),
            namespace: namespace.into(),
            ip: ip.into(),
            identity: identity.into(),
            controller: String::new(),
            subscriptions: 0,
            connected_at: now,
            last_seen: now,
            sent: None,
            acked: None,
            nacked: None,
        }
    }

    /// `pod.namespace`, the name `istioctl` shows.
    pub fn name(&self) -> String {
        format!("{}.{}", self.pod, self.namespace)
    }

    /// Its status, from the last response sent and the last answers.
    pub fn status(&self) -> SyncStatus {
        let Some(sent) = &self.sent else {
            return SyncStatus::NotSent;
        };
        if self
            .nacked
            .as_ref()
            .is_some_and(|n| n.of.nonce == sent.nonce)
        {
            return SyncStatus::Error;
        }
        match &self.acked {
            Some(a) if a.nonce == sent.nonce => SyncStatus::Synced,
            Some(_) => SyncStatus::Stale,
            None if self.nacked.is_some() => SyncStatus::Stale,
            None => SyncStatus::NeverAcknowledged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(nonce: &str) -> Exchange {
        Exchange {
            nonce: nonce.into(),
            version: "7".into(),
            at: 0,
        }
    }

    fn proxy() -> ProxySync {
        ProxySync::opened(
            "web-1",
            "shop",
            "10.244.0.3",
            "spiffe://cluster.local/ns/shop/sa/web",
            0,
        )
    }

    #[test]
    fn status_follows_the_last_response() {
        let mut p = proxy();
        assert_eq!(p.status(), SyncStatus::NotSent);
        p.sent = Some(ex("1"));
        assert_eq!(p.status(), SyncStatus::NeverAcknowledged);
        p.acked = Some(ex("1"));
        assert_eq!(p.status(), SyncStatus::Synced);
        p.sent = Some(ex("2"));
        assert_eq!(p.status(), SyncStatus::Stale);
        p.nacked = Some(Nack {
            of: ex("2"),
            errors: vec![],
        });
        assert_eq!(p.status(), SyncStatus::Error);
        // A later response that is acknowledged clears the error.
        p.sent = Some(ex("3"));
        p.acked = Some(ex("3"));
        assert_eq!(p.status(), SyncStatus::Synced);
        assert_eq!(p.name(), "web-1.shop");
    }

    #[test]
    fn statuses_serialize_as_istioctl_shows_them() {
        for s in [
            SyncStatus::Synced,
            SyncStatus::NotSent,
            SyncStatus::Stale,
            SyncStatus::NeverAcknowledged,
            SyncStatus::Error,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
