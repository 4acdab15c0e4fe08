//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! leaderelection does: the holder renews it; another replica takes it
//! over once a renewal is overdue by the lease's duration. Every replica
//! serves proxies; only the leader writes.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// How long a lease holds without renewal.
pub const DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews and the others look.
pub const RETRY: Duration = Duration::from_secs(2);

/// Runs the election for `name` in `namespace` as `identity`; the
/// receiver says whether this replica leads.
pub fn elect(client: Client, namespace: &str, name: &str, identity: &str) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let (name, identity) = (name.to_string(), identity.to_string());
    tokio::spawn(async move {
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            match attempt(&api, &name, &identity).await {
                Ok(leads) => {
                    if leads {
                        last_renewal = Some(tokio::time::Instant::now());
                    }
                    if *tx.borrow() != leads {
                        tracing::info!(%identity, leads, "leadership changed");
                    }
                    tx.send_replace(leads);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease");
                    // A leader that cannot renew steps down before another
                    // may take over.
                    if last_renewal.is_none_or(|t| t.elapsed() > DURATION / 2) {
                        tx.send_replace(false);
                    }
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    });
    rx
}

/// One round: create, renew or take over the lease; `Ok(true)` when held.
async fn attempt(api: &Api<Lease>, name: &str, identity: &str) -> kube::Result<bool> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            spec: Some(held(identity, now, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let mine = spec.holder_identity.as_deref() == Some(identity);
    if !mine && !expired(&spec, now) {
        return Ok(false);
    }
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
    lease.spec = Some(LeaseSpec {
        acquire_time: if mine {
            spec.acquire_time
        } else {
            Some(MicroTime(now))
        },
        ..held(identity, now, transitions)
    });
    // The resourceVersion in `lease` makes this a compare-and-swap.
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn held(identity: &str, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(DURATION.as_secs() as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Whether the holder's last renewal is older than the lease's duration.
pub fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(
        spec.lease_duration_seconds
            .unwrap_or(DURATION.as_secs() as i32),
    );
    now.duration_since(renewed.0) > SignedDuration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed_secs_ago: i64) -> LeaseSpec {
        let now = Timestamp::now();
        LeaseSpec {
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            ..held("other", now, 0)
        }
    }

    #[test]
    fn a_lease_renewed_within_its_duration_holds() {
        assert!(!expired(&spec(3), Timestamp::now()));
    }

    #[test]
    fn a_lease_not_renewed_for_longer_than_its_duration_is_free() {
        assert!(expired(&spec(16), Timestamp::now()));
        assert!(expired(&LeaseSpec::default(), Timestamp::now()));
    }
}
