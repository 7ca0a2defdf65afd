//! CNI errors: the spec's codes and the error document a plugin prints on
//! stdout (libcni reads the error from stdout, never from stderr), written by
//! a plugin ([`CniError::to_json`]) and read by a runtime
//! ([`CniError::from_output`]).

use std::fmt;

use serde::Deserialize;

/// Error codes from the CNI specification's "Error" section, plus libcni's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    /// libcni's `ErrInvalidNetNS`: `CNI_NETNS` is the plugin's own netns.
    InvalidNetns = 8,
    TryAgainLater = 11,
    /// STATUS: the plugin is not ready to serve ADD.
    NotAvailable = 50,
    /// libcni's code for an error that carries no CNI code.
    Internal = 999,
}

/// A CNI error result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CniError {
    /// The code (0 when a runtime got no error document from the plugin).
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error document for stdout, in the request's version.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut doc = serde_json::Map::new();
        doc.insert("cniVersion".into(), cni_version.into());
        doc.insert("code".into(), self.code.into());
        doc.insert("msg".into(), self.msg.clone().into());
        if !self.details.is_empty() {
            doc.insert("details".into(), self.details.clone().into());
        }
        // Serializing a map of strings and numbers cannot fail.
        serde_json::to_string_pretty(&serde_json::Value::Object(doc)).unwrap_or_default()
    }

    /// A runtime's reading of a failed plugin's output, as libcni's: the
    /// error document from stdout; without stdout, a message quoting stderr;
    /// unparsable stdout is quoted (code 0 in both fallbacks). `status` is
    /// the exit status as text.
    pub fn from_output(stdout: &[u8], stderr: &[u8], status: &str) -> CniError {
        if stdout.iter().all(u8::is_ascii_whitespace) {
            let msg = if stderr.iter().all(u8::is_ascii_whitespace) {
                format!("netplugin failed with no error message: {status}")
            } else {
                format!("netplugin failed: {:?}", String::from_utf8_lossy(stderr))
            };
            return CniError {
                msg,
                ..CniError::default()
            };
        }
        serde_json::from_slice::<CniError>(stdout).unwrap_or_else(|e| CniError {
            msg: format!(
                "netplugin failed but error parsing its diagnostic message {:?}: {e}",
                String::from_utf8_lossy(stdout)
            ),
            ..CniError::default()
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_reads_back() {
        let e = CniError::new(Code::InvalidConfig, "bad").with_details("d");
        let doc = e.to_json("1.0.0");
        assert!(doc.contains("\"cniVersion\": \"1.0.0\""), "{doc}");
        assert_eq!(CniError::from_output(doc.as_bytes(), b"", "exit status: 1"), e);
        assert_eq!(e.to_string(), "bad (code 7): d");
        assert!(!CniError::new(Code::Io, "x").to_json("0.4.0").contains("details"));
    }

    #[test]
    fn error_output_like_libcni() {
        let e = CniError::from_output(
            br#"{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"d"}"#,
            b"log",
            "exit 1",
        );
        assert_eq!((e.code, e.msg.as_str(), e.details.as_str()), (7, "bad", "d"));
        let e = CniError::from_output(b"", b"boom\n", "exit 1");
        assert_eq!(e.msg, "netplugin failed: \"boom\\n\"");
        assert_eq!(e.code, 0);
        let e = CniError::from_output(b"", b"", "exit status: 2");
        assert_eq!(e.msg, "netplugin failed with no error message: exit status: 2");
        let e = CniError::from_output(b"garbage", b"", "exit 1");
        assert!(
            e.msg
                .starts_with("netplugin failed but error parsing its diagnostic message \"garbage\"")
        );
    }
}
