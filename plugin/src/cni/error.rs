//! CNI errors: the spec's codes, printed as JSON on stdout (libcni reads the
//! error from stdout, never from stderr).

use std::fmt;

/// Error codes from the CNI specification (SPEC.md §"Error"), plus libcni's.
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
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
