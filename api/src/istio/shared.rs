//! Types several Istio resources share.

use std::collections::BTreeMap;

use super::message;

message!(
    /// Match a string: exactly one of exact, prefix or regex (RE2); empty
    /// means "present" where a header is matched.
    StringMatch { exact: String, prefix: String, regex: String }
);

message!(
    /// A port by number.
    PortSelector { number: u32 }
);

message!(
    /// Where traffic goes: a host (service name), a subset, a port.
    Destination { host: String, subset: String, port: PortSelector }
);

message!(
    /// A percentage, 0 to 100, fractions allowed.
    Percent { value: f64 }
);

message!(
    /// Header changes: set replaces, add appends, remove deletes.
    HeaderOperations { set: BTreeMap<String, String>, add: BTreeMap<String, String>, remove: Vec<String> }
);

message!(
    /// Header changes for requests and responses.
    Headers { request: HeaderOperations, response: HeaderOperations }
);

message!(
    /// Labels that select workloads.
    WorkloadSelector { match_labels: BTreeMap<String, String> }
);
