//! One invocation of the plugin under test, uninterpreted: how it exited,
//! what its stdout holds (nothing, one JSON object, or something else), and
//! the helpers cases use to demand a result, an error code or silence.

use serde_json::Value;

/// What a plugin printed on stdout.
#[derive(Debug, Clone, PartialEq)]
pub enum Stdout {
    /// Nothing but whitespace.
    Empty,
    /// Exactly one JSON object (surrounding whitespace allowed).
    Document(Value),
    /// Anything else, and why it is not one JSON object.
    Invalid(String),
}

impl Stdout {
    /// Classifies stdout bytes.
    pub fn classify(bytes: &[u8]) -> Self {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Stdout::Empty;
        }
        let mut docs = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
        let first = match docs.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Stdout::Invalid(format!("stdout is not JSON: {e}")),
            None => return Stdout::Empty,
        };
        if !first.is_object() {
            return Stdout::Invalid(format!(
                "stdout is JSON but not an object: {}",
                excerpt(&first.to_string())
            ));
        }
        match docs.next() {
            None => Stdout::Document(first),
            Some(Ok(_)) => Stdout::Invalid("stdout holds more than one JSON document".to_owned()),
            Some(Err(_)) => Stdout::Invalid("stdout has data after the JSON document".to_owned()),
        }
    }
}

/// A finished invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: String,
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Raw stdout.
    pub stdout: Vec<u8>,
    /// Stderr as text.
    pub stderr: String,
    /// Stdout, classified.
    pub shape: Stdout,
}

/// Shortens text for a report line.
pub fn excerpt(text: &str) -> String {
    const MAX: usize = 300;
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX {
        flat
    } else {
        let cut: String = flat.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// A plugin's error document.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorDoc {
    /// `code`.
    pub code: u64,
    /// `msg`.
    pub msg: String,
    /// `details` (empty when absent).
    pub details: String,
}

impl ErrorDoc {
    /// `msg` and `details` together, for matching.
    pub fn text(&self) -> String {
        format!("{} {}", self.msg, self.details)
    }
}

impl Invocation {
    /// Builds an invocation record from what the process did.
    pub fn new(command: &str, code: Option<i32>, stdout: Vec<u8>, stderr: Vec<u8>) -> Self {
        Self {
            command: command.to_owned(),
            code,
            shape: Stdout::classify(&stdout),
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Whether it exited 0.
    pub fn succeeded(&self) -> bool {
        self.code == Some(0)
    }

    /// A one-line account for failure messages: exit status, stdout, stderr.
    pub fn describe(&self) -> String {
        let status = match self.code {
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".to_owned(),
        };
        let stdout = String::from_utf8_lossy(&self.stdout);
        let mut text = format!("{status}, stdout {:?}", excerpt(&stdout));
        if !self.stderr.trim().is_empty() {
            text.push_str(&format!(", stderr {:?}", excerpt(&self.stderr)));
        }
        text
    }

    /// The error document of a failed invocation: exit non-zero and exactly
    /// one JSON object on stdout with a numeric `code` and a string `msg`.
    pub fn error_doc(&self) -> Result<ErrorDoc, String> {
        if self.succeeded() {
            return Err(format!(
                "{} succeeded, an error was expected ({})",
                self.command,
                self.describe()
            ));
        }
        let doc = match &self.shape {
            Stdout::Document(doc) => doc,
            Stdout::Empty => {
                return Err(format!(
                    "{} failed without an error document on stdout (libcni reads errors from stdout) ({})",
                    self.command,
                    self.describe()
                ));
            }
            Stdout::Invalid(why) => return Err(format!("{} failed and {why} ({})", self.command, self.describe())),
        };
        let code = doc.get("code").and_then(Value::as_u64).ok_or_else(|| {
            format!(
                "{} error document has no numeric \"code\" ({})",
                self.command,
                self.describe()
            )
        })?;
        let msg = doc.get("msg").and_then(Value::as_str).ok_or_else(|| {
            format!(
                "{} error document has no string \"msg\" ({})",
                self.command,
                self.describe()
            )
        })?;
        Ok(ErrorDoc {
            code,
            msg: msg.to_owned(),
            details: doc.get("details").and_then(Value::as_str).unwrap_or("").to_owned(),
        })
    }

    /// Demands a failure with error code `code`; returns the document.
    pub fn expect_code(&self, code: u64) -> Result<ErrorDoc, String> {
        let doc = self.error_doc()?;
        if doc.code != code {
            return Err(format!(
                "{} failed with code {} ({:?}), expected code {code}",
                self.command,
                doc.code,
                excerpt(&doc.text())
            ));
        }
        Ok(doc)
    }

    /// Demands success.
    pub fn expect_success(&self) -> Result<(), String> {
        if self.succeeded() {
            Ok(())
        } else {
            Err(format!("{} failed: {}", self.command, self.failure_summary()))
        }
    }

    /// Demands success with exactly one JSON object on stdout; returns it.
    pub fn expect_document(&self) -> Result<Value, String> {
        self.expect_success()?;
        match &self.shape {
            Stdout::Document(doc) => Ok(doc.clone()),
            Stdout::Empty => Err(format!("{} succeeded but printed nothing on stdout", self.command)),
            Stdout::Invalid(why) => Err(format!("{} succeeded but {why} ({})", self.command, self.describe())),
        }
    }

    /// A failure in a few words: the error document's code and message when
    /// there is one, otherwise the raw account.
    pub fn failure_summary(&self) -> String {
        match self.error_doc() {
            Ok(doc) => format!("code {}: {}", doc.code, excerpt(&doc.text())),
            Err(_) => self.describe(),
        }
    }

    /// Checks the stdout discipline libcni relies on: an error is exactly one
    /// JSON object; ADD and VERSION successes are exactly one JSON object;
    /// other successes print nothing or one JSON object.
    pub fn stdout_violation(&self) -> Option<String> {
        let must_print = matches!(self.command.as_str(), "ADD" | "VERSION") || !self.succeeded();
        match &self.shape {
            Stdout::Document(_) => None,
            Stdout::Empty if !must_print => None,
            Stdout::Empty if self.succeeded() => Some(format!("{} succeeded with an empty stdout", self.command)),
            Stdout::Empty => Some(format!("{} failed with an empty stdout", self.command)),
            Stdout::Invalid(why) => Some(format!(
                "{} ({}): {why}: {:?}",
                self.command,
                if self.succeeded() { "success" } else { "error" },
                excerpt(&String::from_utf8_lossy(&self.stdout))
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(command: &str, code: i32, stdout: &str) -> Invocation {
        Invocation::new(command, Some(code), stdout.as_bytes().to_vec(), b"log line\n".to_vec())
    }

    #[test]
    fn stdout_shapes() {
        assert_eq!(Stdout::classify(b" \n"), Stdout::Empty);
        assert!(matches!(Stdout::classify(b"{\"a\":1}\n"), Stdout::Document(_)));
        let two = Stdout::classify(b"{\"a\":1}\n{\"b\":2}");
        assert_eq!(two, Stdout::Invalid("stdout holds more than one JSON document".into()));
        let trailing = Stdout::classify(b"{\"a\":1} done");
        assert_eq!(
            trailing,
            Stdout::Invalid("stdout has data after the JSON document".into())
        );
        assert!(matches!(Stdout::classify(b"starting\n{}"), Stdout::Invalid(w) if w.contains("not JSON")));
        assert!(matches!(Stdout::classify(b"[1]"), Stdout::Invalid(w) if w.contains("not an object")));
    }

    #[test]
    fn error_documents_and_codes() {
        let e = inv(
            "ADD",
            1,
            r#"{"code":4,"msg":"required env variables [CNI_NETNS] missing"}"#,
        );
        assert_eq!(
            e.expect_code(4).unwrap().msg,
            "required env variables [CNI_NETNS] missing"
        );
        assert!(e.expect_code(7).unwrap_err().contains("expected code 7"));
        assert!(e.expect_success().unwrap_err().contains("code 4"));
        assert!(
            inv("ADD", 1, "")
                .error_doc()
                .unwrap_err()
                .contains("without an error document")
        );
        assert!(
            inv("ADD", 1, r#"{"msg":"x"}"#)
                .error_doc()
                .unwrap_err()
                .contains("numeric")
        );
        assert!(inv("ADD", 0, "{}").error_doc().unwrap_err().contains("succeeded"));
    }

    #[test]
    fn stdout_discipline() {
        assert_eq!(inv("DEL", 0, "").stdout_violation(), None);
        assert_eq!(inv("ADD", 0, r#"{"cniVersion":"1.0.0"}"#).stdout_violation(), None);
        assert!(inv("ADD", 0, "").stdout_violation().is_some());
        assert!(inv("VERSION", 0, "").stdout_violation().is_some());
        assert!(inv("DEL", 1, "").stdout_violation().is_some());
        assert!(inv("ADD", 0, "level=info\n{}").stdout_violation().is_some());
        assert!(inv("ADD", 0, "{}").expect_document().is_ok());
    }
}
