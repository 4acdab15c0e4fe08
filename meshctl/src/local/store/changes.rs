//! One object applied to or deleted from the store's state, with the
//! answer `apply` and `delete` print: created, configured, unchanged,
//! deleted, or refused with the field and why.

use std::net::Ipv4Addr;

use api::manifest::{Object, address};

use super::super::objects::ObjectResult;
use super::{BUILTIN_NAMESPACES, Key, State, selects, template_labels};

fn result(o: &Object, action: &str) -> ObjectResult {
    ObjectResult {
        object: address(o),
        action: action.into(),
        field: String::new(),
        message: String::new(),
        error: false,
    }
}

fn failure(o: &Object, field: &str, message: String) -> ObjectResult {
    ObjectResult {
        object: address(o),
        action: String::new(),
        field: field.into(),
        message,
        error: true,
    }
}

pub(super) fn key(o: &Object) -> Key {
    (o.namespace().to_string(), o.name().to_string())
}

pub(super) fn apply_one(s: &mut State, o: Object) -> (ObjectResult, bool) {
    let k = key(&o);
    if !matches!(o, Object::Namespace(_)) && !s.namespaces.contains_key(&k.0) {
        return (
            failure(
                &o,
                "metadata.namespace",
                format!("namespace {:?} not found; apply the Namespace first", k.0),
            ),
            false,
        );
    }
    match &o {
        Object::Namespace(n) => {
            let labels = n.metadata.labels.clone().unwrap_or_default();
            let prev = s.namespaces.insert(k.1.clone(), labels.clone());
            s.service_accounts
                .insert((k.1.clone(), "default".into()), ());
            let action = match prev {
                None => "created",
                Some(p) if p == labels => "unchanged",
                Some(_) => "configured",
            };
            (result(&o, action), action != "unchanged")
        }
        Object::ServiceAccount(_) => {
            let created = s.service_accounts.insert(k, ()).is_none();
            (
                result(&o, if created { "created" } else { "unchanged" }),
                created,
            )
        }
        Object::Service(svc) => {
            let prev = s.services.get(&k);
            if prev.is_some_and(|(p, _)| p == &**svc) {
                return (result(&o, "unchanged"), false);
            }
            let ip = match prev {
                Some((_, ip)) => *ip,
                None => match s.service_ips.allocate() {
                    Some(ip) => ip,
                    None => return (failure(&o, "spec", "no Service address left".into()), false),
                },
            };
            let action = if prev.is_some() {
                "configured"
            } else {
                "created"
            };
            s.services.insert(k, ((**svc).clone(), ip));
            (result(&o, action), true)
        }
        Object::Deployment(d) => {
            let sa = d
                .spec
                .as_ref()
                .and_then(|sp| sp.template.spec.as_ref())
                .and_then(|p| p.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            if !s.service_accounts.contains_key(&(k.0.clone(), sa.clone())) {
                return (
                    failure(
                        &o,
                        "spec.template.spec.serviceAccountName",
                        format!("ServiceAccount {}/{sa} not found; apply it first", k.0),
                    ),
                    false,
                );
            }
            let prev = s.deployments.get(&k);
            if prev.is_some_and(|p| p == &**d) {
                return (result(&o, "unchanged"), false);
            }
            let action = if prev.is_some() {
                "configured"
            } else {
                "created"
            };
            s.deployments.insert(k, (**d).clone());
            (result(&o, action), true)
        }
        // Every other kind is a mesh resource, kept for the controller.
        _ => {
            let mk = (o.kind().to_string(), k.0.clone(), k.1.clone());
            let action = match s.mesh.get(&mk) {
                None => "created",
                Some(prev) if prev == &o => "unchanged",
                Some(_) => "configured",
            };
            let r = result(&o, action);
            s.mesh.insert(mk, o);
            (r, action != "unchanged")
        }
    }
}

pub(super) fn delete_one(s: &mut State, o: &Object) -> (ObjectResult, bool) {
    let k = key(o);
    let found = match o {
        Object::Namespace(_) => {
            if BUILTIN_NAMESPACES.contains(&k.1.as_str()) {
                return (
                    failure(
                        o,
                        "metadata.name",
                        "built-in namespaces cannot be deleted".into(),
                    ),
                    false,
                );
            }
            let ns = k.1.clone();
            let found = s.namespaces.remove(&ns).is_some();
            s.service_accounts.retain(|(n, _), _| n != &ns);
            s.deployments.retain(|(n, _), _| n != &ns);
            s.mesh.retain(|(_, n, _), _| n != &ns);
            let gone: Vec<Ipv4Addr> = s
                .services
                .iter()
                .filter(|((n, _), _)| n == &ns)
                .map(|(_, (_, ip))| *ip)
                .collect();
            for ip in gone {
                s.service_ips.release(ip);
            }
            s.services.retain(|(n, _), _| n != &ns);
            found
        }
        Object::ServiceAccount(_) => s.service_accounts.remove(&k).is_some(),
        Object::Deployment(_) => s.deployments.remove(&k).is_some(),
        Object::Service(_) => match s.services.remove(&k) {
            Some((_, ip)) => {
                s.service_ips.release(ip);
                true
            }
            None => false,
        },
        // Every other kind is a mesh resource.
        _ => s
            .mesh
            .remove(&(o.kind().to_string(), k.0.clone(), k.1.clone()))
            .is_some(),
    };
    if found {
        (result(o, "deleted"), true)
    } else {
        (failure(o, "metadata.name", "not found".into()), false)
    }
}

/// A warning when a Service's selector picks no Deployment's pods.
pub(super) fn selector_warning(s: &State, k: &Key) -> Option<(String, String)> {
    let (svc, _) = s.services.get(k)?;
    let selector = svc
        .spec
        .as_ref()
        .and_then(|sp| sp.selector.clone())
        .unwrap_or_default();
    if selector.is_empty() {
        return Some((
            "spec.selector".into(),
            "no selector: the Service has no endpoints".into(),
        ));
    }
    let matches_any = s
        .deployments
        .iter()
        .any(|((ns, _), d)| ns == &k.0 && selects(&selector, &template_labels(d)));
    (!matches_any).then(|| {
        let sel = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        (
            "spec.selector".into(),
            format!("{sel} matches no Deployment's pods in namespace {:?}: the Service has no endpoints until one does", k.0),
        )
    })
}
