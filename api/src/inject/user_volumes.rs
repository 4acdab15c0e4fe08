//! `sidecar.istio.io/userVolume` and `sidecar.istio.io/userVolumeMount`:
//! volumes the proxy mounts, such as the certificates a DestinationRule's
//! `SIMPLE` or `MUTUAL` TLS names by path. Istio takes a JSON array of
//! Kubernetes `Volume` and `VolumeMount` objects, or the older JSON object
//! keyed by name; both are read. A volume the pod already has (same name)
//! is not added again.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Volume, VolumeMount};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::InjectError;

/// The annotation of the volumes.
pub const USER_VOLUME: &str = "sidecar.istio.io/userVolume";
/// The annotation of the proxy's mounts.
pub const USER_VOLUME_MOUNT: &str = "sidecar.istio.io/userVolumeMount";

/// What the two annotations ask for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UserVolumes {
    /// Volumes for the pod.
    pub volumes: Vec<Volume>,
    /// Mounts for the proxy container.
    pub mounts: Vec<VolumeMount>,
}

fn bad(annotation: &str, message: String) -> InjectError {
    InjectError {
        annotation: annotation.into(),
        message,
    }
}

/// The objects of an array, or of a map keyed by name (the name put in).
fn items(annotation: &str, json: &str) -> Result<Vec<Value>, InjectError> {
    let v: Value = serde_json::from_str(json).map_err(|e| {
        bad(
            annotation,
            format!("not JSON ({e}); write a JSON array such as [{{\"name\": \"certs\", ...}}]"),
        )
    })?;
    match v {
        Value::Array(a) => Ok(a),
        Value::Object(m) => Ok(m
            .into_iter()
            .map(|(name, mut item)| {
                if let Value::Object(o) = &mut item {
                    o.entry("name").or_insert(Value::String(name));
                }
                item
            })
            .collect()),
        _ => Err(bad(
            annotation,
            "expected a JSON array of objects, or an object keyed by name".into(),
        )),
    }
}

fn parse<T: DeserializeOwned>(annotation: &str, item: Value, what: &str) -> Result<T, InjectError> {
    serde_json::from_value(item)
        .map_err(|e| bad(annotation, format!("not a Kubernetes {what}: {e}")))
}

impl UserVolumes {
    /// Reads the annotations; an error names the annotation and the item.
    pub fn read(annotations: &BTreeMap<String, String>) -> Result<Self, InjectError> {
        let mut out = Self::default();
        if let Some(json) = annotations.get(USER_VOLUME) {
            for item in items(USER_VOLUME, json)? {
                let v: Volume = parse(USER_VOLUME, item, "Volume")?;
                if v.name.is_empty() {
                    return Err(bad(USER_VOLUME, "a volume has no name".into()));
                }
                out.volumes.push(v);
            }
        }
        if let Some(json) = annotations.get(USER_VOLUME_MOUNT) {
            for mut item in items(USER_VOLUME_MOUNT, json)? {
                // Istio's documentation writes `readonly`; Go's JSON
                // decoding takes it for `readOnly`.
                if let Value::Object(o) = &mut item
                    && let Some(v) = o.remove("readonly")
                {
                    o.entry("readOnly").or_insert(v);
                }
                let m: VolumeMount = parse(USER_VOLUME_MOUNT, item, "VolumeMount")?;
                if !m.mount_path.starts_with('/') {
                    return Err(bad(
                        USER_VOLUME_MOUNT,
                        format!(
                            "{}: mountPath {:?} is not absolute; write e.g. /etc/certs",
                            m.name, m.mount_path
                        ),
                    ));
                }
                out.mounts.push(m);
            }
        }
        Ok(out)
    }

    /// Adds the volumes `existing` lacks; the mounts go to the proxy.
    pub fn add_to(&self, existing: &mut Vec<Volume>, mounts: &mut Vec<VolumeMount>) {
        for v in &self.volumes {
            if !existing.iter().any(|e| e.name == v.name) {
                existing.push(v.clone());
            }
        }
        mounts.extend(self.mounts.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(volume: &str, mount: &str) -> Result<UserVolumes, InjectError> {
        UserVolumes::read(&BTreeMap::from([
            (USER_VOLUME.to_string(), volume.to_string()),
            (USER_VOLUME_MOUNT.to_string(), mount.to_string()),
        ]))
    }

    #[test]
    fn both_of_istios_shapes_are_read() {
        let list = read(
            r#"[{"name":"client-credential","secret":{"secretName":"client-credential"}}]"#,
            r#"[{"name":"client-credential","mountPath":"/etc/client-credential","readonly":true}]"#,
        )
        .unwrap();
        let map = read(
            r#"{"client-credential":{"secret":{"secretName":"client-credential"}}}"#,
            r#"{"client-credential":{"mountPath":"/etc/client-credential","readOnly":true}}"#,
        )
        .unwrap();
        assert_eq!(list, map);
        assert_eq!(list.volumes[0].name, "client-credential");
        assert_eq!(
            list.volumes[0]
                .secret
                .as_ref()
                .unwrap()
                .secret_name
                .as_deref(),
            Some("client-credential")
        );
        assert_eq!(list.mounts[0].read_only, Some(true));
        assert_eq!(list.mounts[0].mount_path, "/etc/client-credential");
    }

    #[test]
    fn bad_annotations_are_named() {
        let e = read("[", "[]").unwrap_err();
        assert_eq!(e.annotation, USER_VOLUME);
        assert!(e.message.contains("not JSON"), "{}", e.message);
        let e = read("[]", r#"[{"name":"c","mountPath":"etc/c"}]"#).unwrap_err();
        assert_eq!(e.annotation, USER_VOLUME_MOUNT);
        assert!(e.message.contains("not absolute"), "{}", e.message);
        let e = read(r#"[{"name":"","secret":{}}]"#, "[]").unwrap_err();
        assert!(e.message.contains("no name"), "{}", e.message);
        assert!(read("3", "[]").is_err());
    }

    #[test]
    fn a_volume_the_pod_has_is_not_added_twice() {
        let u = read(
            r#"[{"name":"certs","emptyDir":{}}, {"name":"more","emptyDir":{}}]"#,
            r#"[{"name":"certs","mountPath":"/etc/certs"}]"#,
        )
        .unwrap();
        let mut volumes = vec![Volume {
            name: "certs".into(),
            ..Default::default()
        }];
        let mut mounts = vec![];
        u.add_to(&mut volumes, &mut mounts);
        let names: Vec<_> = volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["certs", "more"]);
        assert_eq!(mounts.len(), 1);
    }
}
