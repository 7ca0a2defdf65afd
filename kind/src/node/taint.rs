//! The taints a node registers with, in kubelet's `--register-with-taints`
//! form: `key=value:Effect` or `key:Effect`, comma-separated.

use std::fmt;
use std::str::FromStr;

/// One taint a node registers with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeTaint {
    /// A label key (`dedicated`, `example.com/gpu`).
    pub key: String,
    /// May be empty.
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// Why a taint does not parse; the text names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("taint {input:?}: {reason}")]
pub struct TaintError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

impl NodeTaint {
    /// A taint from its parts, checked as the API server checks them.
    pub fn new(key: &str, value: &str, effect: &str) -> Result<NodeTaint, TaintError> {
        let input = if value.is_empty() {
            format!("{key}:{effect}")
        } else {
            format!("{key}={value}:{effect}")
        };
        let bad = |reason: String| TaintError {
            input: input.clone(),
            reason,
        };
        check_key(key).map_err(bad)?;
        if value.len() > 63 || !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(bad(format!(
                "value {value:?} must be at most 63 letters, digits, '-', '_' or '.'"
            )));
        }
        if !EFFECTS.contains(&effect) {
            return Err(bad(format!("effect {effect:?} is not one of {}", EFFECTS.join(", "))));
        }
        Ok(NodeTaint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        })
    }

    /// Parses a comma-separated list (`a=b:NoSchedule,c:NoExecute`); empty gives none.
    pub fn parse_list(list: &str) -> Result<Vec<NodeTaint>, TaintError> {
        list.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::parse)
            .collect()
    }

    /// As the Node object carries it.
    pub fn to_k8s(&self) -> k8s_openapi::api::core::v1::Taint {
        k8s_openapi::api::core::v1::Taint {
            key: self.key.clone(),
            value: (!self.value.is_empty()).then(|| self.value.clone()),
            effect: self.effect.clone(),
            time_added: None,
        }
    }
}

/// A qualified name: an optional DNS-subdomain prefix and `/`, then at most
/// 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let edge_ok = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
    };
    if name.is_empty()
        || name.len() > 63
        || !edge_ok(name)
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "key {key:?}: the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && edge_ok(label)
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if !ok {
            return Err(format!("key {key:?}: the prefix must be a lower-case DNS subdomain"));
        }
    }
    Ok(())
}

impl FromStr for NodeTaint {
    type Err = TaintError;

    fn from_str(s: &str) -> Result<NodeTaint, TaintError> {
        let Some((kv, effect)) = s.rsplit_once(':') else {
            return Err(TaintError {
                input: s.into(),
                reason: "expected key=value:Effect or key:Effect".into(),
            });
        };
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        NodeTaint::new(key, value, effect).map_err(|e| TaintError { input: s.into(), ..e })
    }
}

impl fmt::Display for NodeTaint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect)
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_forms_parse_and_print_back() {
        for text in [
            "dedicated=gpu:NoSchedule",
            "example.com/edge:NoExecute",
            "a=b:PreferNoSchedule",
        ] {
            let t: NodeTaint = text.parse().unwrap();
            assert_eq!(t.to_string(), text);
        }
        let t: NodeTaint = "k=v:NoSchedule".parse().unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_str(), t.effect.as_str()),
            ("k", "v", "NoSchedule")
        );
        let k8s = "k:NoExecute".parse::<NodeTaint>().unwrap().to_k8s();
        assert_eq!(
            (k8s.key.as_str(), k8s.value, k8s.effect.as_str()),
            ("k", None, "NoExecute")
        );
        let list = NodeTaint::parse_list("a=1:NoSchedule, b:NoExecute,").unwrap();
        assert_eq!(list.len(), 2);
        assert!(NodeTaint::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn bad_taints_say_what_is_wrong() {
        let err = |s: &str| s.parse::<NodeTaint>().unwrap_err().to_string();
        assert_eq!(
            err("dedicated=gpu"),
            "taint \"dedicated=gpu\": expected key=value:Effect or key:Effect"
        );
        assert!(
            err("k=v:NoWay").contains("effect \"NoWay\" is not one of NoSchedule"),
            "{}",
            err("k=v:NoWay")
        );
        assert!(err("=v:NoSchedule").contains("key \"\""), "{}", err("=v:NoSchedule"));
        assert!(err("-k:NoSchedule").contains("starting and ending"));
        assert!(err("Bad_Prefix/k:NoSchedule").contains("prefix"));
        assert!(err("k=a b:NoSchedule").contains("value \"a b\""));
        assert!(
            NodeTaint::parse_list("a:NoSchedule,b")
                .unwrap_err()
                .to_string()
                .starts_with("taint \"b\"")
        );
    }
}
