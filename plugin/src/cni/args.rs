//! `CNI_ARGS`: `K=V;K2=V2`, as kubelet and containerd send it.

use super::error::{CniError, Code};

/// The Kubernetes keys of `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sArgs {
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_infra_container_id: String,
    pub pod_uid: String,
}

/// Parses `CNI_ARGS`. Unknown keys are an error unless `IgnoreUnknown` is
/// true (runtimes always send `IgnoreUnknown=1`).
pub fn parse(raw: &str) -> Result<K8sArgs, CniError> {
    let mut args = K8sArgs::default();
    let mut unknown = Vec::new();
    let mut ignore_unknown = false;
    if raw.is_empty() {
        return Ok(args);
    }
    for pair in raw.split(';') {
        let mut parts = pair.split('=');
        let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("ARGS: invalid pair {pair:?}"),
            ));
        };
        match key {
            "IgnoreUnknown" => {
                ignore_unknown = match value.to_ascii_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => {
                        return Err(CniError::new(
                            Code::InvalidEnvironment,
                            format!("ARGS: IgnoreUnknown must be 1, true, 0 or false, not {value:?}"),
                        ));
                    }
                }
            }
            "K8S_POD_NAME" => args.pod_name = value.to_string(),
            "K8S_POD_NAMESPACE" => args.pod_namespace = value.to_string(),
            "K8S_POD_INFRA_CONTAINER_ID" => args.pod_infra_container_id = value.to_string(),
            "K8S_POD_UID" => args.pod_uid = value.to_string(),
            other => unknown.push(other.to_string()),
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            format!("ARGS: unknown args {unknown:?} (set IgnoreUnknown=1 to allow them)"),
        ));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_args() {
        let a = parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;EXTRA=x").unwrap();
        assert_eq!(
            (a.pod_namespace.as_str(), a.pod_name.as_str(), a.pod_uid.as_str()),
            ("default", "web-1", "u-1")
        );
    }

    #[test]
    fn unknown_keys_need_ignore_unknown() {
        assert!(parse("FOO=bar").unwrap_err().msg.contains("unknown args"));
        assert!(parse("IgnoreUnknown=TRUE;FOO=bar").is_ok());
        assert!(parse("IgnoreUnknown=0;FOO=bar").is_err());
    }

    #[test]
    fn malformed_pairs_are_rejected() {
        for bad in ["K8S_POD_NAME", "A=b=c", "K8S_POD_NAME=a;", "IgnoreUnknown=yes"] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, 4, "{bad}");
        }
        assert_eq!(parse("").unwrap(), K8sArgs::default());
    }
}
