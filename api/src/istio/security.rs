//! `security.istio.io`: PeerAuthentication (mTLS mode), AuthorizationPolicy
//! (who may call what) and RequestAuthentication (JWT validation).

use std::collections::BTreeMap;

use super::message;
use super::shared::WorkloadSelector;

message!(
    /// A reference to the object a policy attaches to.
    PolicyTargetReference { group: String, kind: String, name: String, namespace: String }
);

message!(
    /// The mTLS mode.
    Mtls { mode: String }
);

message!(
    /// The spec of a PeerAuthentication.
    PeerAuthenticationSpec { selector: WorkloadSelector, mtls: Mtls, port_level_mtls: BTreeMap<u32, Mtls> }
);

message!(
    /// The spec of an AuthorizationPolicy.
    AuthorizationPolicySpec {
        selector: WorkloadSelector,
        target_ref: PolicyTargetReference,
        target_refs: Vec<PolicyTargetReference>,
        rules: Vec<Rule>,
        action: String,
        provider: ExtensionProvider,
    }
);

message!(
    /// The external authorizer of a CUSTOM policy.
    ExtensionProvider { name: String }
);

message!(
    /// One rule: all of from, to and when must match.
    Rule { from: Vec<From>, to: Vec<To>, when: Vec<Condition> }
);

message!(
    /// Where a request comes from.
    From { source: Source }
);

message!(
    /// What a request does.
    To { operation: Operation }
);

message!(
    /// Source attributes; each list matches any of its values.
    Source {
        principals: Vec<String>,
        not_principals: Vec<String>,
        request_principals: Vec<String>,
        not_request_principals: Vec<String>,
        namespaces: Vec<String>,
        not_namespaces: Vec<String>,
        ip_blocks: Vec<String>,
        not_ip_blocks: Vec<String>,
        remote_ip_blocks: Vec<String>,
        not_remote_ip_blocks: Vec<String>,
        service_accounts: Vec<String>,
        not_service_accounts: Vec<String>,
    }
);

message!(
    /// Operation attributes.
    Operation {
        hosts: Vec<String>,
        not_hosts: Vec<String>,
        ports: Vec<String>,
        not_ports: Vec<String>,
        methods: Vec<String>,
        not_methods: Vec<String>,
        paths: Vec<String>,
        not_paths: Vec<String>,
    }
);

message!(
    /// An extra condition on a request attribute.
    Condition { key: String, values: Vec<String>, not_values: Vec<String> }
);

message!(
    /// The spec of a RequestAuthentication.
    RequestAuthenticationSpec {
        selector: WorkloadSelector,
        target_ref: PolicyTargetReference,
        target_refs: Vec<PolicyTargetReference>,
        jwt_rules: Vec<JwtRule>,
    }
);

message!(
    /// How to validate JWTs of one issuer.
    JwtRule {
        issuer: String,
        audiences: Vec<String>,
        jwks_uri: String,
        jwks: String,
        from_headers: Vec<JwtHeader>,
        from_params: Vec<String>,
        from_cookies: Vec<String>,
        output_payload_to_header: String,
        forward_original_token: bool,
        output_claim_to_headers: Vec<ClaimToHeader>,
        timeout: String,
    }
);

message!(
    /// A header carrying the token.
    JwtHeader { name: String, prefix: String }
);

message!(
    /// Copy a claim to a header.
    ClaimToHeader { header: String, claim: String }
);
