//! Test fixtures shared by the core's unit tests.

use api::cluster;

/// A ready, meshed pod `<app>-1` of `ns`, labelled `app: <app>`, without
/// an address.
pub fn pod(ns: &str, app: &str) -> cluster::Pod {
    cluster::Pod {
        name: format!("{app}-1"),
        namespace: ns.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        service_account: app.into(),
        ip: None,
        meshed: true,
        ready: true,
        named_ports: Default::default(),
        owner: app.into(),
        app_exited: false,
    }
}
