//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`,
//! which kubectl ≥ 1.32, helm and client-go send for built-in kinds), decoded
//! with k8s-pb and turned into the JSON the same request would have carried,
//! so the rest of the server sees one form. Responses stay JSON.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown`: `typeMeta`
//! (apiVersion, kind) and `raw`, the object's own message.

pub(crate) mod json;

use k8s_pb as pb;
use prost::Message;
use serde_json::{Value, json};

use self::json::Json;

const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("not a Kubernetes protobuf body: it does not start with \"k8s\\0\"")]
    NoMagic,
    #[error("invalid protobuf envelope (runtime.Unknown): {0}")]
    Envelope(#[source] prost::DecodeError),
    #[error("protobuf envelope has content encoding {0:?}; only unencoded objects are read")]
    Encoding(String),
    #[error("protobuf bodies of kind {kind:?} ({api_version}) are not supported; send application/json")]
    UnsupportedKind { api_version: String, kind: String },
    #[error("invalid protobuf {kind}: {source}")]
    Object {
        kind: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("protobuf {kind} cannot be represented as JSON: {reason}")]
    Convert { kind: String, reason: String },
}

impl DecodeError {
    /// The HTTP status: 415 for a kind the server cannot read, 400 otherwise.
    pub fn code(&self) -> u16 {
        match self {
            DecodeError::UnsupportedKind { .. } => 415,
            _ => 400,
        }
    }
}

type Convert = fn(&[u8]) -> Result<Value, ConvertError>;

enum ConvertError {
    Decode(prost::DecodeError),
    Json(String),
}

fn convert<M: Message + Default + Json>(raw: &[u8]) -> Result<Value, ConvertError> {
    let msg = M::decode(raw).map_err(ConvertError::Decode)?;
    msg.json().map_err(ConvertError::Json)
}

/// The kinds read from protobuf, by group and kind (version `v1` throughout).
fn converter(group: &str, kind: &str) -> Option<Convert> {
    use pb::api::{apps, authentication, authorization, coordination, core, policy, rbac, scheduling};
    Some(match (group, kind) {
        // Sent with every group's version, as in client-go.
        (_, "DeleteOptions") => convert::<pb::apimachinery::pkg::apis::meta::v1::DeleteOptions>,
        ("", "Namespace") => convert::<core::v1::Namespace>,
        ("", "Node") => convert::<core::v1::Node>,
        ("", "Pod") => convert::<core::v1::Pod>,
        ("", "Binding") => convert::<core::v1::Binding>,
        ("", "Event") => convert::<core::v1::Event>,
        ("", "ServiceAccount") => convert::<core::v1::ServiceAccount>,
        ("", "ConfigMap") => convert::<core::v1::ConfigMap>,
        ("", "Secret") => convert::<core::v1::Secret>,
        ("", "Service") => convert::<core::v1::Service>,
        ("apps", "DaemonSet") => convert::<apps::v1::DaemonSet>,
        ("apps", "Deployment") => convert::<apps::v1::Deployment>,
        ("apps", "ReplicaSet") => convert::<apps::v1::ReplicaSet>,
        ("apps", "ControllerRevision") => convert::<apps::v1::ControllerRevision>,
        ("rbac.authorization.k8s.io", "ClusterRole") => convert::<rbac::v1::ClusterRole>,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => convert::<rbac::v1::ClusterRoleBinding>,
        ("rbac.authorization.k8s.io", "Role") => convert::<rbac::v1::Role>,
        ("rbac.authorization.k8s.io", "RoleBinding") => convert::<rbac::v1::RoleBinding>,
        ("coordination.k8s.io", "Lease") => convert::<coordination::v1::Lease>,
        ("scheduling.k8s.io", "PriorityClass") => convert::<scheduling::v1::PriorityClass>,
        ("policy", "Eviction") => convert::<policy::v1::Eviction>,
        ("authorization.k8s.io", "SelfSubjectAccessReview") => convert::<authorization::v1::SelfSubjectAccessReview>,
        ("authorization.k8s.io", "SubjectAccessReview") => convert::<authorization::v1::SubjectAccessReview>,
        ("authentication.k8s.io", "SelfSubjectReview") => convert::<authentication::v1::SelfSubjectReview>,
        _ => return None,
    })
}

/// Decodes a protobuf body into the JSON object it stands for, with its
/// `apiVersion` and `kind`.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let body = body.strip_prefix(MAGIC).ok_or(DecodeError::NoMagic)?;
    let unknown = pb::apimachinery::pkg::runtime::Unknown::decode(body).map_err(DecodeError::Envelope)?;
    let encoding = unknown.content_encoding.unwrap_or_default();
    if !encoding.is_empty() {
        return Err(DecodeError::Encoding(encoding));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version.as_str()));
    let convert = converter(group, &kind)
        .filter(|_| version == "v1")
        .ok_or_else(|| DecodeError::UnsupportedKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let mut obj = convert(unknown.raw.as_deref().unwrap_or_default()).map_err(|e| match e {
        ConvertError::Decode(source) => DecodeError::Object {
            kind: kind.clone(),
            source,
        },
        ConvertError::Json(reason) => DecodeError::Convert {
            kind: kind.clone(),
            reason,
        },
    })?;
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests;
