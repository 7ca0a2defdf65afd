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
/// true (runtimes always send `IgnoreUnknown=1`). A pod name or namespace
/// that is present must be a valid Kubernetes name: they become API URL path
/// segments, and `web?x` or `web#x` would otherwise fetch another pod `web`.
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
    // Empty means absent: the caller leaves such a sandbox alone.
    let checks = [
        (
            "K8S_POD_NAMESPACE",
            &args.pod_namespace,
            dns1123_label as fn(&str) -> Result<(), String>,
        ),
        ("K8S_POD_NAME", &args.pod_name, dns1123_subdomain),
    ];
    for (key, value, check) in checks {
        if !value.is_empty()
            && let Err(reason) = check(value)
        {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("ARGS: {key} {value:?} is not a valid Kubernetes name: {reason}"),
            ));
        }
    }
    Ok(args)
}

const LABEL_RULE: &str = "lowercase letters, digits and '-', starting and ending with a letter or digit";

/// A namespace name: a DNS-1123 label.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    let rule = || format!("a namespace is {LABEL_RULE}, at most 63 characters");
    if s.len() > 63 {
        return Err(format!("{} characters; {}", s.len(), rule()));
    }
    label(s).map_err(|reason| format!("{reason}; {}", rule()))
}

/// An object name such as a pod's: a DNS-1123 subdomain.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    let rule = || format!("a pod name is dot-separated parts of {LABEL_RULE}, at most 253 characters");
    if s.len() > 253 {
        return Err(format!("{} characters; {}", s.len(), rule()));
    }
    s.split('.')
        .try_for_each(label)
        .map_err(|reason| format!("{reason}; {}", rule()))
}

fn label(s: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if let Some(c) = s.chars().find(|&c| !alnum(c) && c != '-') {
        return Err(format!("{c:?} is not allowed"));
    }
    if s.is_empty() {
        return Err("empty part between dots".into());
    }
    if !s.starts_with(alnum) || !s.ends_with(alnum) {
        return Err(format!("{s:?} starts or ends with '-'"));
    }
    Ok(())
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

    #[test]
    fn pod_names_and_namespaces_must_be_kubernetes_names() {
        let long_name = format!("{}.{}", "a".repeat(200), "b".repeat(53));
        assert_eq!(long_name.len(), 254);
        let cases = [
            ("K8S_POD_NAME", "web?", "'?' is not allowed"),
            ("K8S_POD_NAME", "web#frag", "'#' is not allowed"),
            ("K8S_POD_NAME", "a/b", "'/' is not allowed"),
            ("K8S_POD_NAME", "..", "empty part"),
            ("K8S_POD_NAME", "web..1", "empty part"),
            ("K8S_POD_NAME", "web.-1", "starts or ends with '-'"),
            ("K8S_POD_NAME", "Web", "'W' is not allowed"),
            ("K8S_POD_NAME", "web%2f", "'%' is not allowed"),
            ("K8S_POD_NAME", &long_name, "254 characters"),
            ("K8S_POD_NAMESPACE", "a.b", "'.' is not allowed"),
            ("K8S_POD_NAMESPACE", "-ns", "starts or ends with '-'"),
            ("K8S_POD_NAMESPACE", &"n".repeat(64), "64 characters"),
            ("K8S_POD_NAMESPACE", "default?", "'?' is not allowed"),
        ];
        for (key, value, reason) in cases {
            let e = parse(&format!("{key}={value}")).unwrap_err();
            assert_eq!(e.code, 4, "{key}={value}");
            assert!(
                e.msg.contains(key) && e.msg.contains(&format!("{value:?}")) && e.msg.contains(reason),
                "{key}={value}: {}",
                e.msg
            );
        }
        let ok = parse(&format!(
            "K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
            "n".repeat(63),
            &long_name[1..]
        ))
        .unwrap();
        assert_eq!(ok.pod_name.len(), 253);
        assert!(parse("K8S_POD_NAME=web-0.web.default-1;K8S_POD_NAMESPACE=kube-system").is_ok());
        // Empty values mean "not given", as before.
        assert_eq!(parse("K8S_POD_NAME=;K8S_POD_NAMESPACE=").unwrap(), K8sArgs::default());
    }
}
