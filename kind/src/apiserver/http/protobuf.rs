//! Just enough of Kubernetes' protobuf encoding to read the access-review
//! requests `kubectl auth can-i` / `kubectl auth whoami` send (typed clients
//! post protobuf). Other protobuf bodies are answered with 415.
//!
//! The envelope is the magic `k8s\0` followed by a `runtime.Unknown`
//! message: field 1 `typeMeta` (1 `apiVersion`, 2 `kind`), field 2 `raw` (the
//! object's own message).

use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// One field of a protobuf message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint too long".into())
}

/// The fields of a message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let field = match tag & 7 {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 | 5 => {
                pos += if tag & 7 == 1 { 8 } else { 4 };
                if pos > buf.len() {
                    return Err("truncated fixed field".into());
                }
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length overflow")?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push((tag >> 3, field));
    }
    Ok(out)
}

fn bytes_of<'a>(fs: &[(u64, Field<'a>)], n: u64) -> Option<&'a [u8]> {
    fs.iter().rev().find_map(|(k, f)| match f {
        Field::Bytes(b) if *k == n => Some(*b),
        _ => None,
    })
}

fn string_of(fs: &[(u64, Field<'_>)], n: u64) -> String {
    bytes_of(fs, n)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

fn strings_of(fs: &[(u64, Field<'_>)], n: u64) -> Vec<String> {
    fs.iter()
        .filter_map(|(k, f)| match f {
            Field::Bytes(b) if *k == n => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

/// `ResourceAttributes` / `NonResourceAttributes` of an access review spec.
fn attributes(spec: &[(u64, Field<'_>)]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    if let Some(ra) = bytes_of(spec, 1) {
        let f = fields(ra)?;
        let names = [
            "namespace",
            "verb",
            "group",
            "version",
            "resource",
            "subresource",
            "name",
        ];
        let mut attrs = Map::new();
        for (i, name) in names.iter().enumerate() {
            attrs.insert((*name).into(), json!(string_of(&f, i as u64 + 1)));
        }
        out.insert("resourceAttributes".into(), Value::Object(attrs));
    }
    if let Some(nra) = bytes_of(spec, 2) {
        let f = fields(nra)?;
        out.insert(
            "nonResourceAttributes".into(),
            json!({"path": string_of(&f, 1), "verb": string_of(&f, 2)}),
        );
    }
    Ok(out)
}

/// Decodes a protobuf-encoded review (SelfSubjectAccessReview,
/// SubjectAccessReview, SelfSubjectReview) into its JSON form.
pub fn decode_review(body: &[u8]) -> Result<Value, String> {
    let body = body.strip_prefix(MAGIC).ok_or("not a Kubernetes protobuf body")?;
    let envelope = fields(body)?;
    let type_meta = fields(bytes_of(&envelope, 1).unwrap_or_default())?;
    let (api_version, kind) = (string_of(&type_meta, 1), string_of(&type_meta, 2));
    let raw = fields(bytes_of(&envelope, 2).unwrap_or_default())?;
    let spec = fields(bytes_of(&raw, 2).unwrap_or_default())?;
    let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {}});
    match kind.as_str() {
        "SelfSubjectAccessReview" => obj["spec"] = Value::Object(attributes(&spec)?),
        "SubjectAccessReview" => {
            let mut s = attributes(&spec)?;
            s.insert("user".into(), json!(string_of(&spec, 3)));
            s.insert("groups".into(), json!(strings_of(&spec, 4)));
            obj["spec"] = Value::Object(s);
        }
        "SelfSubjectReview" => {}
        other => {
            return Err(format!(
                "protobuf bodies of kind {other:?} are not supported; send application/json"
            ));
        }
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubectl auth can-i list pods/foo -n ns1` sends.
    const SSAR_RESOURCE: &[u8] = b"k8s\0\n2\n\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\x12<\n\x10\n\0\x12\0\x1a\0\"\0*\x002\x008\x00B\0\x12\x1e\n\x1c\n\x03ns1\x12\x04list\x1a\0\"\0*\x04pods2\0:\x03foo\x1a\x08\x08\0\x12\0\x1a\0 \0\x1a\0\"\0";
    /// What `kubectl auth can-i get /healthz` sends.
    const SSAR_PATH: &[u8] = b"k8s\0\n2\n\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\x12/\n\x10\n\0\x12\0\x1a\0\"\0*\x002\x008\x00B\0\x12\x11\x12\x0f\n\x08/healthz\x12\x03get\x1a\x08\x08\0\x12\0\x1a\0 \0\x1a\0\"\0";
    /// What `kubectl auth whoami` sends.
    const WHOAMI: &[u8] = b"k8s\0\n-\n\x18authentication.k8s.io/v1\x12\x11SelfSubjectReview\x12\x1a\n\x10\n\0\x12\0\x1a\0\"\0*\x002\x008\x00B\0\x12\x06\n\x04\n\0\x12\0\x1a\0\"\0";

    #[test]
    fn resource_review() {
        let v = decode_review(SSAR_RESOURCE).unwrap();
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        let ra = &v["spec"]["resourceAttributes"];
        assert_eq!(
            (
                ra["namespace"].as_str(),
                ra["verb"].as_str(),
                ra["resource"].as_str(),
                ra["name"].as_str()
            ),
            (Some("ns1"), Some("list"), Some("pods"), Some("foo"))
        );
        assert_eq!(ra["subresource"], "");
    }

    #[test]
    fn non_resource_review_and_whoami() {
        let v = decode_review(SSAR_PATH).unwrap();
        assert_eq!(
            v["spec"]["nonResourceAttributes"],
            json!({"path": "/healthz", "verb": "get"})
        );
        let w = decode_review(WHOAMI).unwrap();
        assert_eq!(
            (w["apiVersion"].as_str(), w["kind"].as_str()),
            (Some("authentication.k8s.io/v1"), Some("SelfSubjectReview"))
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode_review(b"{}").is_err());
        assert!(decode_review(b"k8s\0\x0a\xff").is_err());
        assert!(decode_review(b"k8s\0\x0a\x02\x0a").is_err());
        let configmap = b"k8s\0\n\x0f\n\x02v1\x12\tConfigMap\x12\0";
        assert!(decode_review(configmap).unwrap_err().contains("ConfigMap"));
    }
}
