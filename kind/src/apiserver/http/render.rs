//! Response representations: full objects and lists, Tables, and
//! `PartialObjectMetadata` (chosen by the `Accept` header).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::apiserver::http::table::{self, IncludeObject};
use crate::apiserver::registry::ListPage;
use crate::apiserver::registry::resources::ResourceInfo;

/// How objects are rendered for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    Full,
    Table(IncludeObject),
    /// `as=PartialObjectMetadata` / `as=PartialObjectMetadataList`.
    Metadata,
}

impl Repr {
    /// From the `Accept` header and the `includeObject` parameter.
    pub fn negotiate(accept: &str, include_object: Option<&str>) -> Repr {
        if table::wants_table(accept) {
            return Repr::Table(IncludeObject::parse(include_object));
        }
        let first = accept.split(',').next().unwrap_or("");
        if first.contains("as=PartialObjectMetadata") && first.contains("g=meta.k8s.io") {
            return Repr::Metadata;
        }
        Repr::Full
    }
}

fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// One object as the response (or watch event) body.
pub fn object(info: &ResourceInfo, obj: &Arc<Value>, repr: Repr) -> Value {
    match repr {
        Repr::Full => (**obj).clone(),
        Repr::Metadata => partial(obj),
        Repr::Table(include) => {
            let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
            table::table(info, std::slice::from_ref(obj), include, json!({"resourceVersion": rv}))
        }
    }
}

fn list_meta(page: &ListPage) -> Value {
    let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(n) = page.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    meta
}

/// A list response body, serialized without copying the items into a new tree.
pub fn list(info: &ResourceInfo, page: &ListPage, repr: Repr) -> Vec<u8> {
    match repr {
        Repr::Table(include) => {
            serde_json::to_vec(&table::table(info, &page.items, include, list_meta(page))).unwrap_or_default()
        }
        Repr::Full | Repr::Metadata => {
            let (kind, api_version) = if repr == Repr::Metadata {
                ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1".to_string())
            } else {
                (info.list_kind(), info.api_version())
            };
            let mut out = Vec::with_capacity(256 + page.items.len() * 512);
            out.extend_from_slice(b"{\"kind\":");
            out.extend_from_slice(json!(kind).to_string().as_bytes());
            out.extend_from_slice(b",\"apiVersion\":");
            out.extend_from_slice(json!(api_version).to_string().as_bytes());
            out.extend_from_slice(b",\"metadata\":");
            out.extend_from_slice(list_meta(page).to_string().as_bytes());
            out.extend_from_slice(b",\"items\":[");
            for (i, item) in page.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let written = if repr == Repr::Metadata {
                    serde_json::to_writer(&mut out, &partial(item))
                } else {
                    serde_json::to_writer(&mut out, &**item)
                };
                if written.is_err() {
                    out.extend_from_slice(b"null");
                }
            }
            out.extend_from_slice(b"]}");
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::resources::{RESOURCES, ids};

    fn page() -> ListPage {
        ListPage {
            items: vec![Arc::new(json!({"metadata": {"name": "a"}, "spec": {}}))],
            resource_version: 7,
            continue_token: Some("tok".into()),
            remaining: Some(3),
        }
    }

    #[test]
    fn full_list() {
        let v: Value = serde_json::from_slice(&list(&RESOURCES[ids::PODS], &page(), Repr::Full)).unwrap();
        assert_eq!(v["kind"], "PodList");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(
            v["metadata"],
            json!({"resourceVersion": "7", "continue": "tok", "remainingItemCount": 3})
        );
        assert_eq!(v["items"][0]["metadata"]["name"], "a");
    }

    #[test]
    fn metadata_and_table_lists() {
        let v: Value = serde_json::from_slice(&list(&RESOURCES[ids::PODS], &page(), Repr::Metadata)).unwrap();
        assert_eq!(v["kind"], "PartialObjectMetadataList");
        assert_eq!(
            v["items"][0],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "a"}})
        );
        let t: Value = serde_json::from_slice(&list(
            &RESOURCES[ids::PODS],
            &page(),
            Repr::Table(IncludeObject::Object),
        ))
        .unwrap();
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["rows"][0]["object"]["spec"], json!({}));
    }

    #[test]
    fn negotiation() {
        assert_eq!(Repr::negotiate("application/json", None), Repr::Full);
        assert_eq!(
            Repr::negotiate(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
                Some("Object")
            ),
            Repr::Table(IncludeObject::Object)
        );
        assert_eq!(
            Repr::negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1", None),
            Repr::Metadata
        );
    }
}
