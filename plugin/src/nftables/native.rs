//! Sends a compiled transaction to the kernel over `NETLINK_NETFILTER`, as
//! one batch, and reads back one acknowledgement per message.
//!
//! The kernel processes a batch inside `sendmsg(2)`: when it returns, every
//! acknowledgement is already queued on the socket, so they are read without
//! waiting (`MSG_DONTWAIT`); a missing one is an error, never a hang. Any
//! error aborts the whole batch in the kernel, so a failure leaves the
//! netns as it was.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send, setsockopt, socket,
    sockopt,
};

use super::transaction::{Step, Transaction};
use super::wire::{Ack, parse_acks};
use crate::netns::{NetnsError, run_in_netns};

/// Why the kernel did not take the transaction.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// No nf_tables in this kernel (or netns): the netfilter netlink family,
    /// the nf_tables subsystem or the `inet` family is missing.
    #[error("nf_tables is not available in the pod netns ({step}): {source}")]
    Unavailable {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    /// The socket could not be created in the pod netns.
    #[error("open a netlink socket in the pod netns: {0}")]
    Netns(#[from] NetnsError),
    /// A socket operation failed.
    #[error("{step}: {source}")]
    Socket {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel rejected a message; nothing of the batch was applied.
    #[error("the kernel rejected line {line} `{text}`, nothing was applied: {source}")]
    Rejected {
        line: usize,
        text: String,
        #[source]
        source: io::Error,
    },
    /// The kernel's replies do not match the batch.
    #[error("unexpected reply to the nf_tables batch: {0}")]
    Protocol(String),
}

/// Sends `tx` to the nf_tables of the netns at `netns`. Returns the number
/// of messages the kernel acknowledged.
pub fn send_transaction(tx: &Transaction, netns: &Path) -> Result<usize, NativeError> {
    let fd = open_socket(netns)?;
    let first_seq = 1;
    let (batch, steps) = tx.encode(first_seq);
    let sent = send(fd.as_raw_fd(), &batch, MsgFlags::empty()).map_err(|e| socket_error("send the batch", e))?;
    if sent != batch.len() {
        return Err(NativeError::Protocol(format!("sent {sent} of {} bytes", batch.len())));
    }
    collect_acks(&fd, first_seq, &steps)
}

/// A netfilter netlink socket created inside the netns at `netns` (a socket
/// stays in the netns it was created in). When the calling thread is already
/// there, no thread is spawned.
fn open_socket(netns: &Path) -> Result<OwnedFd, NativeError> {
    if same_netns(netns) {
        return new_socket();
    }
    run_in_netns(netns, new_socket)?
}

fn same_netns(netns: &Path) -> bool {
    match (std::fs::metadata("/proc/thread-self/ns/net"), std::fs::metadata(netns)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn new_socket() -> Result<OwnedFd, NativeError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| match e {
        Errno::EPROTONOSUPPORT | Errno::EAFNOSUPPORT => NativeError::Unavailable {
            step: "open a netfilter netlink socket",
            source: e.into(),
        },
        e => socket_error("open a netfilter netlink socket", e),
    })?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| socket_error("bind the netlink socket", e))?;
    // Room for every acknowledgement of a large batch (the kernel caps it
    // at rmem_max; the default already holds a few hundred).
    let _ = setsockopt(&fd, sockopt::RcvBuf, &(1 << 20));
    Ok(fd)
}

fn socket_error(step: &'static str, e: Errno) -> NativeError {
    NativeError::Socket { step, source: e.into() }
}

/// Reads the queued replies: one per message in `steps`.
fn collect_acks(fd: &OwnedFd, first_seq: u32, steps: &[Step]) -> Result<usize, NativeError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut acked = 0usize;
    let mut first_error: Option<NativeError> = None;
    loop {
        let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(socket_error("read the kernel's replies", e)),
        };
        for ack in parse_acks(&buf[..n]).map_err(NativeError::Protocol)? {
            if ack.errno == 0 {
                acked += 1;
                continue;
            }
            let err = classify(ack, first_seq, steps);
            first_error.get_or_insert(err);
        }
    }
    if let Some(err) = first_error {
        return Err(err);
    }
    if acked != steps.len() {
        return Err(NativeError::Protocol(format!(
            "{acked} of {} messages acknowledged",
            steps.len()
        )));
    }
    Ok(acked)
}

/// The error for a failed acknowledgement, naming the transaction line.
fn classify(ack: Ack, first_seq: u32, steps: &[Step]) -> NativeError {
    let source = io::Error::from_raw_os_error(ack.errno);
    let step = steps.iter().find(|s| s.seq == ack.seq);
    // No nf_tables subsystem (answered on the batch header) or no `inet`
    // family (answered on the first table). Elsewhere these errnos are a
    // refused rule (e.g. tproxy outside prerouting).
    let on_setup = step.is_none_or(|s| s.text.starts_with("add table"));
    if on_setup && matches!(Errno::from_raw(ack.errno), Errno::EOPNOTSUPP | Errno::EAFNOSUPPORT) {
        return NativeError::Unavailable {
            step: "start an nf_tables batch",
            source,
        };
    }
    match step {
        Some(step) => NativeError::Rejected {
            line: step.line,
            text: step.text.clone(),
            source,
        },
        None if ack.seq == first_seq => NativeError::Protocol(format!("batch refused: {source}")),
        None => NativeError::Protocol(format!("error for unknown message {}: {source}", ack.seq)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps() -> Vec<Step> {
        vec![Step {
            seq: 2,
            line: 7,
            text: "add rule inet t c counter jump x".into(),
        }]
    }

    #[test]
    fn a_refused_message_names_its_line() {
        let err = classify(
            Ack {
                seq: 2,
                errno: libc::ENOENT,
            },
            1,
            &steps(),
        );
        assert_eq!(
            err.to_string(),
            "the kernel rejected line 7 `add rule inet t c counter jump x`, nothing was applied: \
             No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_kernel_without_nf_tables_is_named() {
        for errno in [libc::EOPNOTSUPP, libc::EAFNOSUPPORT] {
            let err = classify(Ack { seq: 1, errno }, 1, &steps());
            assert!(matches!(err, NativeError::Unavailable { .. }), "{err}");
            assert!(
                err.to_string()
                    .starts_with("nf_tables is not available in the pod netns"),
                "{err}"
            );
        }
        let err = classify(
            Ack {
                seq: 9,
                errno: libc::EINVAL,
            },
            1,
            &steps(),
        );
        assert!(err.to_string().contains("unknown message 9"), "{err}");
        // On a rule, EOPNOTSUPP is the rule's fault.
        let err = classify(
            Ack {
                seq: 2,
                errno: libc::EOPNOTSUPP,
            },
            1,
            &steps(),
        );
        assert!(matches!(err, NativeError::Rejected { line: 7, .. }), "{err}");
    }
}
