use super::*;
use api::peer::Peer;

fn labels<'a>(a: &'a Peer, b: &'a Peer, code: &'a str) -> RequestLabels<'a> {
    RequestLabels {
        conn: ConnLabels {
            reporter: Reporter::Source,
            source: Side {
                peer: a,
                principal: "p",
            },
            destination: Side {
                peer: b,
                principal: "q",
            },
            service: Svc {
                host: "svc.ns.svc.cluster.local",
                name: "svc",
                namespace: "ns",
            },
            protocol: "http",
            flags: "-",
            mtls: false,
        },
        code,
        grpc_status: "",
    }
}

fn series(text: &str, metric: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .map(str::to_string)
        .collect()
}

#[test]
fn handles_are_resolved_once_per_kind_and_bounded() {
    let m = Metrics::new().unwrap();
    let (a, b) = (Peer::decode("w=a,n=ns,a=a"), Peer::decode("w=b,n=ns,v=v2"));
    let cache = HandleCache::default();
    let mut resolved = 0;
    let sizes = Sizes {
        request_bytes: 120,
        response_bytes: 3000,
        messages: None,
    };
    for _ in 0..10 {
        cache
            .get(200u16, |_| {
                resolved += 1;
                m.request_handles(&labels(&a, &b, "200"), &Overrides::default(), &[])
            })
            .record(Duration::from_millis(3), sizes);
    }
    assert_eq!(resolved, 1);
    let text = m.render();
    let requests = series(&text, "istio_requests_total");
    assert_eq!(requests.len(), 1, "{text}");
    for part in [
        "reporter=\"source\"",
        "source_workload=\"a\"",
        "source_app=\"a\"",
        "source_version=\"unknown\"",
        "destination_workload=\"b\"",
        "destination_version=\"v2\"",
        "destination_service=\"svc.ns.svc.cluster.local\"",
        "destination_service_name=\"svc\"",
        "response_code=\"200\"",
        "grpc_response_status=\"\"",
    ] {
        assert!(requests[0].contains(part), "{part} in {}", requests[0]);
    }
    assert!(requests[0].ends_with(" 10"), "{}", requests[0]);
    // Sizes land in Envoy's buckets: 120 bytes under 250, 3000 under 5000.
    let bucket = |metric: &str, le: &str| {
        series(&text, metric)
            .into_iter()
            .find(|l| l.contains(&format!("le=\"{le}\"")))
            .unwrap_or_else(|| panic!("{metric} le={le} in {text}"))
    };
    assert!(bucket("istio_request_bytes_bucket", "100").ends_with(" 0"));
    assert!(bucket("istio_request_bytes_bucket", "250").ends_with(" 10"));
    assert!(bucket("istio_response_bytes_bucket", "2500").ends_with(" 0"));
    assert!(bucket("istio_response_bytes_bucket", "5000").ends_with(" 10"));
    // Past the bound, still counted, no longer kept.
    for code in 0..(HandleCache::<u16>::MAX as u16 + 10) {
        cache.get(1000 + code, |_| {
            m.request_handles(&labels(&a, &b, "599"), &Overrides::default(), &[])
        });
    }
    assert_eq!(cache.map.lock().unwrap().len(), HandleCache::<u16>::MAX);
}

#[test]
fn grpc_messages_are_counted_for_grpc_only() {
    let m = Metrics::new().unwrap();
    let p = Peer::unknown();
    let h = m.request_handles(&labels(&p, &p, "200"), &Overrides::default(), &[]);
    h.record(Duration::from_millis(1), Sizes::default());
    h.record(
        Duration::from_millis(1),
        Sizes {
            messages: Some((3, 5)),
            ..Sizes::default()
        },
    );
    let text = m.render();
    assert!(series(&text, "istio_request_messages_total")[0].ends_with(" 3"));
    assert!(series(&text, "istio_response_messages_total")[0].ends_with(" 5"));
}

#[test]
fn series_are_bounded_whatever_peers_claim() {
    let m = Metrics::new().unwrap();
    let me = Peer::decode("w=me,n=ns");
    let names: Vec<Peer> = (0..MAX_SERIES + 500)
        .map(|i| Peer::decode(&format!("w=attacker-{i},n=ns")))
        .collect();
    for p in &names {
        m.request_handles(&labels(p, &me, "200"), &Overrides::default(), &[])
            .record(Duration::from_millis(1), Sizes::default());
    }
    let text = m.render();
    let requests = series(&text, "istio_requests_total");
    assert_eq!(
        requests.len(),
        MAX_SERIES + 1,
        "the kept ones and the overflow"
    );
    let overflow: Vec<_> = requests
        .iter()
        .filter(|l| l.contains("source_workload=\"overflow\""))
        .collect();
    assert_eq!(overflow.len(), 1);
    assert!(overflow[0].ends_with(" 500"), "{}", overflow[0]);
    assert!(
        text.contains("mesh_metric_series_overflow_total 500"),
        "{text}"
    );
    // A known set keeps its own series once the bound is reached.
    m.request_handles(&labels(&names[0], &me, "200"), &Overrides::default(), &[])
        .record(Duration::from_millis(1), Sizes::default());
    assert!(
        series(&m.render(), "istio_requests_total")
            .iter()
            .any(|l| l.contains("attacker-0\"") && l.ends_with(" 2"))
    );
}

#[test]
fn an_added_tag_remakes_its_family_alone() {
    use api::proto::{MetricOverride, TagOverride};
    let m = Metrics::new().unwrap();
    let p = Peer::decode("w=a,n=ns");
    let sizes = Sizes::default();
    m.request_handles(&labels(&p, &p, "200"), &Overrides::default(), &[])
        .record(Duration::from_millis(1), sizes);
    let o = Overrides::compile(&[MetricOverride {
        metric: "REQUEST_COUNT".into(),
        client: true,
        server: false,
        disabled: false,
        tags: [(
            "team".to_string(),
            TagOverride {
                remove: false,
                value: "'payments'".into(),
            },
        )]
        .into(),
    }]);
    m.reshape(&o);
    struct None_;
    impl api::telemetry::expr::Attributes for None_ {
        fn get(&self, _: &api::telemetry::expr::Attr) -> api::telemetry::expr::Value<'_> {
            api::telemetry::expr::Value::Absent
        }
    }
    let evaluated = o.evaluated(&None_);
    m.request_handles(&labels(&p, &p, "200"), &o, &evaluated)
        .record(Duration::from_millis(1), sizes);
    let text = m.render();
    let requests = series(&text, "istio_requests_total");
    assert_eq!(requests.len(), 1, "a new family, from zero: {text}");
    assert!(requests[0].contains("team=\"payments\""), "{text}");
    let durations = series(&text, "istio_request_duration_milliseconds_count");
    assert_eq!(durations.len(), 1, "{text}");
    assert!(!durations[0].contains("team="), "{text}");
    // A request begun under the old overrides is counted, its added tag
    // empty (no label, to Prometheus).
    m.request_handles(&labels(&p, &p, "500"), &Overrides::default(), &[])
        .record(Duration::from_millis(1), sizes);
    let requests = series(&m.render(), "istio_requests_total");
    assert_eq!(requests.len(), 2);
    assert!(
        requests
            .iter()
            .any(|r| r.contains("team=\"\"") && r.contains("response_code=\"500\""))
    );
}
