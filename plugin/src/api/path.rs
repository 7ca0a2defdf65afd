//! API paths built from pod identity. The names are checked as Kubernetes
//! names before any request (`cni::args`); each segment is percent-encoded
//! as well, so a name that slipped past the check still names exactly one
//! path segment and never a query, fragment or parent.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything except RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `/api/v1/namespaces/<ns>/pods/<name>`, each segment encoded.
pub fn pod(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{}/pods/{}", segment(namespace), segment(name))
}

fn segment(s: &str) -> String {
    // `.` and `..` are unreserved yet mean "here" and "up" in a path.
    if s.chars().all(|c| c == '.') {
        return s.replace('.', "%2E");
    }
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_unchanged() {
        assert_eq!(pod("default", "web-0.web"), "/api/v1/namespaces/default/pods/web-0.web");
    }

    #[test]
    fn anything_else_stays_inside_its_segment() {
        assert_eq!(pod("default", "web?x=1"), "/api/v1/namespaces/default/pods/web%3Fx%3D1");
        assert_eq!(pod("default", "web#frag"), "/api/v1/namespaces/default/pods/web%23frag");
        assert_eq!(pod("a/b", "c d"), "/api/v1/namespaces/a%2Fb/pods/c%20d");
        assert_eq!(pod("..", "."), "/api/v1/namespaces/%2E%2E/pods/%2E");
        assert_eq!(pod("default", "%2e"), "/api/v1/namespaces/default/pods/%252e");
        assert_eq!(pod("default", "wéb"), "/api/v1/namespaces/default/pods/w%C3%A9b");
    }
}
