//! Container logs for the `pods/log` subresource, supplied by the harness.

use std::collections::HashMap;
use std::sync::Mutex;

/// Where pod logs come from.
pub trait LogSource: Send + Sync {
    /// The log of `container` in pod `namespace/pod` (of its previous
    /// instance when `previous`), or `None` when there is none (the server
    /// answers 400, as Kubernetes does for a container that has not started).
    ///
    /// For `follow=true` the server polls this and streams what was appended,
    /// until the container terminates, the pod is deleted or the client leaves.
    fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<String>;

    /// The current instance's log opened for reading from its start, when
    /// the source keeps it in a file. A follower reads through this handle,
    /// so what a container writes just before its pod goes away (a SIGTERM
    /// handler's last line) still reaches the client. `None`: poll `logs`.
    fn open(&self, _namespace: &str, _pod: &str, _container: &str) -> Option<std::fs::File> {
        None
    }
}

/// A [`LogSource`] kept in memory: set or append text per container.
#[derive(Debug, Default)]
pub struct MemoryLogs {
    map: Mutex<HashMap<(String, String, String, bool), String>>,
}

impl MemoryLogs {
    pub fn new() -> MemoryLogs {
        MemoryLogs::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String, bool), String>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the (current) log of a container.
    pub fn set(&self, namespace: &str, pod: &str, container: &str, text: &str) {
        self.map()
            .insert((namespace.into(), pod.into(), container.into(), false), text.into());
    }

    /// Replaces the log of a container's previous instance.
    pub fn set_previous(&self, namespace: &str, pod: &str, container: &str, text: &str) {
        self.map()
            .insert((namespace.into(), pod.into(), container.into(), true), text.into());
    }

    /// Appends to the (current) log of a container.
    pub fn append(&self, namespace: &str, pod: &str, container: &str, text: &str) {
        self.map()
            .entry((namespace.into(), pod.into(), container.into(), false))
            .or_default()
            .push_str(text);
    }
}

impl LogSource for MemoryLogs {
    fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<String> {
        self.map()
            .get(&(namespace.into(), pod.into(), container.into(), previous))
            .cloned()
    }
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let mut count = 0;
    for (i, b) in trimmed.bytes().enumerate().rev() {
        if b == b'\n' {
            count += 1;
            if count == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

/// The first `limit` bytes of `text`, cut at a char boundary.
pub fn limit_bytes(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_lines("a\nb\n", 5), "a\nb\n");
        assert_eq!(tail_lines("a\nb\n", 0), "");
        assert_eq!(tail_lines("", 3), "");
        assert_eq!(limit_bytes("héllo", 2), "h");
        assert_eq!(limit_bytes("hello", 10), "hello");
    }

    #[test]
    fn memory_logs() {
        let m = MemoryLogs::new();
        assert_eq!(m.logs("ns", "p", "c", false), None);
        m.append("ns", "p", "c", "one\n");
        m.append("ns", "p", "c", "two\n");
        m.set_previous("ns", "p", "c", "old\n");
        assert_eq!(m.logs("ns", "p", "c", false).as_deref(), Some("one\ntwo\n"));
        assert_eq!(m.logs("ns", "p", "c", true).as_deref(), Some("old\n"));
    }
}
