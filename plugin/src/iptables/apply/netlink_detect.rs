//! Reading nf_tables state over nfnetlink, without side effects: whether
//! nf_tables answers in the calling thread's netns (`NFT_MSG_GETGEN`) and
//! which tables of a family exist (`NFT_MSG_GETTABLE` dump).
//!
//! A raw `NETLINK_NETFILTER` socket belongs to the netns of the thread that
//! opens it, so call these from a thread inside the pod netns. Replies are
//! bounded: a receive timeout and a cap on the number of messages.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::detect::Family;
use crate::nftables::wire::{self, MsgType, NFNL_SUBSYS_NFTABLES, NFPROTO_IPV4, NFPROTO_IPV6, NFPROTO_UNSPEC, align4};

const NFTA_TABLE_NAME: u16 = 1;
const NFGENMSG_LEN: usize = 4;
/// No reply within this time is "unexpected" (the caller falls back).
const RECV_TIMEOUT: Duration = Duration::from_millis(500);
/// A pod netns has a handful of tables; more replies than this is not one.
const MAX_MESSAGES: usize = 4096;

/// An nfnetlink socket in the calling thread's netns.
pub struct Nfnl {
    fd: OwnedFd,
    seq: u32,
}

impl Nfnl {
    /// Opens the socket (in the netns of the calling thread).
    pub fn open() -> io::Result<Nfnl> {
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: RECV_TIMEOUT.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: setsockopt with a correctly sized timeval.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Nfnl { fd, seq: 0 })
    }

    /// The ruleset generation: succeeds iff nf_tables serves this netns
    /// (and we may use it: every nfnetlink request needs `CAP_NET_ADMIN`).
    pub fn generation(&mut self) -> io::Result<u32> {
        let seq = self.send(MsgType::GetGen, NFPROTO_UNSPEC, libc::NLM_F_REQUEST as u16)?;
        let mut gen_id = None;
        self.receive(seq, |msg_type, payload| {
            if msg_type == MsgType::NewGen as u16 {
                gen_id = attr(payload, 1).and_then(|v| v.try_into().ok()).map(u32::from_be_bytes);
            }
        })?;
        gen_id.ok_or_else(|| invalid("NFT_MSG_GETGEN: no generation in the reply"))
    }

    /// The names of the nf_tables tables of `family` (`ip` or `ip6`).
    pub fn tables(&mut self, family: Family) -> io::Result<Vec<String>> {
        let proto = match family {
            Family::V4 => NFPROTO_IPV4,
            Family::V6 => NFPROTO_IPV6,
        };
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        let seq = self.send(MsgType::GetTable, proto, flags)?;
        let mut names = Vec::new();
        let mut bad = false;
        self.receive(seq, |_, payload| match attr(payload, NFTA_TABLE_NAME) {
            Some(name) => names.push(String::from_utf8_lossy(name.strip_suffix(&[0]).unwrap_or(name)).into_owned()),
            None => bad = true,
        })?;
        if bad {
            return Err(invalid("NFT_MSG_GETTABLE: a table without a name"));
        }
        Ok(names)
    }

    fn send(&mut self, msg: MsgType, proto: u8, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut buf = Vec::with_capacity(32);
        let (msg_type, flags) = ((NFNL_SUBSYS_NFTABLES << 8) | msg as u16, flags | libc::NLM_F_ACK as u16);
        wire::put_message(&mut buf, msg_type, flags, self.seq, proto, 0, &[]);
        // SAFETY: sending an initialized buffer of its own length.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Reads replies to `seq` until the ack (`NLMSG_ERROR` 0) or `NLMSG_DONE`;
    /// `each` gets every nf_tables message's type and payload (after nfgenmsg).
    fn receive(&self, seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut messages = 0;
        loop {
            // SAFETY: receiving into a buffer of the given length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            for message in wire::messages(&buf[..n as usize]) {
                let wire::Message {
                    kind: msg_type,
                    seq: msg_seq,
                    body,
                } = message.map_err(|e| invalid(&e))?;
                if msg_seq != seq {
                    continue; // a stale reply to an earlier request
                }
                messages += 1;
                if messages > MAX_MESSAGES {
                    return Err(invalid("too many netlink replies"));
                }
                match msg_type as i32 {
                    libc::NLMSG_DONE => {
                        // A dump that failed part-way ends with a negative errno.
                        return match body.get(0..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes) {
                            Some(e) if e < 0 => Err(io::Error::from_raw_os_error(-e)),
                            _ => Ok(()),
                        };
                    }
                    libc::NLMSG_ERROR => {
                        let code = body
                            .get(0..4)
                            .and_then(|b| b.try_into().ok())
                            .map(i32::from_ne_bytes)
                            .ok_or_else(|| invalid("short NLMSG_ERROR"))?;
                        return match code {
                            0 => Ok(()),
                            e => Err(io::Error::from_raw_os_error(-e)),
                        };
                    }
                    _ if msg_type >> 8 == NFNL_SUBSYS_NFTABLES && body.len() >= NFGENMSG_LEN => {
                        each(msg_type & 0xff, &body[NFGENMSG_LEN..]);
                    }
                    _ => return Err(invalid("unexpected netlink message type")),
                }
            }
        }
    }
}

/// The value of the first attribute of type `kind` (nested flag masked).
fn attr(mut payload: &[u8], kind: u16) -> Option<&[u8]> {
    while payload.len() >= 4 {
        let len = u16::from_ne_bytes([payload[0], payload[1]]) as usize;
        let ty = u16::from_ne_bytes([payload[2], payload[3]]) & 0x3fff;
        if len < 4 || len > payload.len() {
            return None;
        }
        if ty == kind {
            return Some(&payload[4..len]);
        }
        payload = &payload[align4(len).min(payload.len())..];
    }
    None
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_found_and_bounded() {
        // NFTA_TABLE_NAME "nat\0", then NFTA_TABLE_FLAGS (u32).
        let payload = [8u8, 0, 1, 0, b'n', b'a', b't', 0, 8, 0, 2, 0, 0, 0, 0, 0];
        assert_eq!(attr(&payload, 1), Some(&b"nat\0"[..]));
        assert_eq!(attr(&payload, 2), Some(&[0u8, 0, 0, 0][..]));
        assert_eq!(attr(&payload, 3), None);
        // A length beyond the buffer ends the walk instead of reading past it.
        assert_eq!(attr(&[200u8, 0, 1, 0, 1, 2], 1), None);
        assert_eq!(attr(&[2u8, 0, 1, 0], 1), None);
    }
}
