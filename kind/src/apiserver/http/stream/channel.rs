//! The remote-command channel protocol over WebSocket (pure): every binary
//! message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr,
//! 3 error (a `Status` JSON once, at the end), 4 resize (terminal size
//! JSON) — and, in v5 only, 255 "close": `[255, channel]` half-closes a
//! channel (kubectl sends it when its stdin ends, e.g. `kubectl cp`).

use serde_json::{Value, json};

use super::TerminalSize;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
/// The subprotocols served, best first.
pub const PROTOCOLS: [&str; 2] = [V5, V4];

/// What a client message means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    Stdin(&'a [u8]),
    /// The client closed its stdin (v5).
    StdinClosed,
    Resize(TerminalSize),
    /// A close signal for another channel, an empty message, or a channel
    /// the server does not read: nothing to do.
    Ignored,
}

/// Why a client message is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid resize message {text:?}: {reason}")]
    Resize { text: String, reason: String },
}

/// Decodes one client message under protocol `v5` (else v4).
pub fn decode(message: &[u8], v5: bool) -> Result<Inbound<'_>, FrameError> {
    let Some((&channel, data)) = message.split_first() else {
        return Ok(Inbound::Ignored);
    };
    Ok(match channel {
        STDIN => Inbound::Stdin(data),
        RESIZE => {
            let size = serde_json::from_slice(data).map_err(|e| FrameError::Resize {
                text: String::from_utf8_lossy(data).into_owned(),
                reason: e.to_string(),
            })?;
            Inbound::Resize(size)
        }
        CLOSE if v5 && data.first() == Some(&STDIN) => Inbound::StdinClosed,
        _ => Inbound::Ignored,
    })
}

/// A server message on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// The error channel's `Status` for a command that exited with `code`:
/// `Success`, or `NonZeroExitCode` with an `ExitCode` cause (which kubectl
/// turns into its own exit status).
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The error channel's `Status` for a session that failed (kubectl prints
/// the message).
pub fn failure_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_client_messages() {
        assert_eq!(decode(b"\x00hello", true).unwrap(), Inbound::Stdin(b"hello"));
        assert_eq!(decode(b"\x00", true).unwrap(), Inbound::Stdin(b""));
        assert_eq!(decode(&[CLOSE, STDIN], true).unwrap(), Inbound::StdinClosed);
        // v4 has no close signal; a close for another channel changes nothing.
        assert_eq!(decode(&[CLOSE, STDIN], false).unwrap(), Inbound::Ignored);
        assert_eq!(decode(&[CLOSE, RESIZE], true).unwrap(), Inbound::Ignored);
        assert_eq!(decode(b"", true).unwrap(), Inbound::Ignored);
        assert_eq!(
            decode(b"\x04{\"Width\":120,\"Height\":40}", true).unwrap(),
            Inbound::Resize(TerminalSize { width: 120, height: 40 })
        );
        let err = decode(b"\x04{\"Width\":-1}", false).unwrap_err();
        assert!(err.to_string().contains("invalid resize message"), "{err}");
    }

    #[test]
    fn frames_and_statuses() {
        assert_eq!(frame(STDOUT, b"out"), b"\x01out");
        assert_eq!(frame(STDERR, b""), b"\x02");
        assert_eq!(exit_status(0)["status"], "Success");
        let failed = exit_status(3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        assert_eq!(failure_status("boom")["message"], "boom");
    }
}
