use prost::Message;

use super::*;

fn workload() -> Workload {
    Workload {
        name: "orders-1".into(),
        namespace: "shop".into(),
        address: "10.244.0.7".parse().unwrap(),
        identity: Some("spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap()),
        labels: [("app".to_string(), "orders".to_string())].into(),
        workload: "orders".into(),
        policy: None,
    }
}

fn service() -> Service {
    Service {
        name: "orders".into(),
        namespace: "shop".into(),
        hostname: "orders.shop.svc.cluster.local".into(),
        addresses: vec!["10.96.0.3".parse().unwrap()],
        ports: vec![ServicePort {
            name: "http".into(),
            port: 8080,
            protocol: AppProtocol::Http,
        }],
        routing: Some(Box::new(proto::Routing {
            http: vec![proto::HttpRoute {
                name: "r".into(),
                timeout: Some(proto::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            ..Default::default()
        })),
    }
}

fn endpoints() -> Endpoints {
    Endpoints {
        host: "orders.shop.svc.cluster.local".into(),
        endpoints: vec![Endpoint {
            workload: workload(),
            ports: [(8080, 9090)].into(),
        }],
    }
}

#[test]
fn round_trips_through_the_wire() {
    for r in [
        Decoded::Address(Resolved::Service(service())),
        Decoded::Address(Resolved::Workload(workload())),
        Decoded::Endpoints(endpoints()),
    ] {
        let wire = encode("x".into(), &r);
        assert_eq!(decode(&wire).unwrap(), r);
        assert_eq!(
            wire.version,
            encode("y".into(), &r).version,
            "content decides"
        );
    }
    let a = encode("x".into(), &Decoded::Endpoints(endpoints()));
    let b = encode("x".into(), &Decoded::Endpoints(Endpoints::default()));
    assert_ne!(a.version, b.version);
}

#[test]
fn rejects_bad_fields_with_their_path() {
    let bad = |m: &dyn Fn(&mut proto::Endpoints)| {
        let mut e = proto::Endpoints::from(&endpoints());
        m(&mut e);
        Endpoints::try_from(&e).unwrap_err().field
    };
    assert_eq!(
        bad(&|e| e.endpoints[0].workload.as_mut().unwrap().identity = "spiffe://x/bad".into()),
        "endpoints[0].workload.identity"
    );
    assert_eq!(
        bad(&|e| e.endpoints[0].ports = [(8080, 70000)].into()),
        "endpoints[0].ports[8080]"
    );
    let mut s = proto::Service::from(&service());
    s.ports[0].port = 70000;
    assert_eq!(Service::try_from(&s).unwrap_err().field, "ports[0].port");
    let mut s = proto::Service::from(&service());
    s.addresses[0] = "nope".into();
    assert_eq!(Service::try_from(&s).unwrap_err().field, "addresses[0]");
    let unknown = proto::Resource {
        type_url: "type.mesh.io/mesh.v9.Gadget".into(),
        ..Default::default()
    };
    assert_eq!(decode(&unknown).unwrap_err().field, "type_url");
    let garbage = proto::Resource {
        type_url: SERVICE_TYPE.into(),
        body: vec![0xff, 0xff, 0xff].into(),
        ..Default::default()
    };
    assert_eq!(decode(&garbage).unwrap_err().field, "body");
}

/// Appends field `tag` (a string, wire type 2) to an encoded message, as a
/// newer version of the message would carry it.
fn with_new_field(mut bytes: Vec<u8>, tag: u32, value: &str) -> Vec<u8> {
    prost::encoding::string::encode(tag, &value.to_string(), &mut bytes);
    bytes
}

/// A controller one version newer adds fields, at any depth; this decoder
/// skips them and reads the rest unchanged.
#[test]
fn a_newer_controllers_fields_are_skipped() {
    let svc = service();
    let mut wire = proto::Service::from(&svc);
    // A newer HttpRoute (field 99 in it) inside a newer Routing (field
    // 100) inside a newer Service (field 101).
    let route = with_new_field(
        wire.routing.as_ref().unwrap().http[0].encode_to_vec(),
        99,
        "new",
    );
    let mut routing = wire.routing.take().unwrap();
    routing.http.clear();
    let mut routing_bytes = routing.encode_to_vec();
    prost::encoding::bytes::encode(2, &route, &mut routing_bytes);
    let routing_bytes = with_new_field(routing_bytes, 100, "newer");
    let mut service_bytes = wire.encode_to_vec();
    prost::encoding::bytes::encode(8, &routing_bytes, &mut service_bytes);
    let service_bytes = with_new_field(service_bytes, 101, "newest");
    let newer = proto::Resource {
        name: "10.96.0.3".into(),
        version: "v".into(),
        type_url: SERVICE_TYPE.into(),
        body: service_bytes.into(),
    };
    assert_eq!(
        decode(&newer).unwrap(),
        Decoded::Address(Resolved::Service(svc))
    );
}
