use super::*;

#[test]
fn suggestions() {
    assert_eq!(did_you_mean("hsts", &["hosts", "gateways"]), Some("hosts"));
    assert_eq!(
        did_you_mean("retryon", &["retryOn", "attempts"]),
        Some("retryOn")
    );
    assert_eq!(did_you_mean("zzzzzz", &["hosts"]), None);
    let (name, msg) =
        unknown_field("unknown field `hots`, expected one of `hosts`, `gateways`").unwrap();
    assert_eq!(name, "hots");
    assert_eq!(msg, "unknown field \"hots\"; did you mean \"hosts\"?");
    assert!(unknown_field("invalid type: string").is_none());
}
