//! nfnetlink message encoding for nf_tables: netlink headers, nested
//! attributes and the `BATCH_BEGIN … BATCH_END` envelope that makes the
//! kernel commit every message in between as one transaction.
//!
//! Only what the transaction compiler needs; numbers are the kernel's uapi
//! (`linux/netfilter/nfnetlink.h`, `nf_tables.h`). docs/nftables.md lists them.

/// `NFNL_SUBSYS_NFTABLES`.
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
/// `NFPROTO_UNSPEC`: no family (the generation request).
pub(crate) const NFPROTO_UNSPEC: u8 = 0;
/// `NFPROTO_INET`: the family of every table we write.
pub const NFPROTO_INET: u8 = 1;
/// `NFPROTO_IPV4` and `NFPROTO_IPV6`: the families iptables-nft writes.
pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_IPV6: u8 = 10;

/// nf_tables message types (without the subsystem byte): what the
/// transaction writes, and what the detection asks and reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum MsgType {
    NewTable = 0,
    GetTable = 1,
    NewChain = 3,
    NewRule = 6,
    DelRule = 8,
    NewSet = 9,
    NewSetElem = 12,
    NewGen = 15,
    GetGen = 16,
}

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLMSG_ERROR`: the type of acknowledgements and errors.
pub const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
pub(crate) const NLMSG_HDRLEN: usize = 16;

pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink attribute stream being written; nests are closed by `nest`'s
/// closure, so lengths are always patched.
#[derive(Debug, Default)]
pub struct Attrs {
    buf: Vec<u8>,
}

impl Attrs {
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded attributes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// A raw attribute.
    pub fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A NUL-terminated string attribute.
    pub fn str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut v = Vec::with_capacity(value.len() + 1);
        v.extend_from_slice(value.as_bytes());
        v.push(0);
        self.bytes(kind, &v)
    }

    /// A big-endian u32 attribute (nf_tables' integer attributes are network order).
    pub fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// A nested attribute whose content `f` writes.
    pub fn nest(&mut self, kind: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        let mut inner = Attrs {
            buf: std::mem::take(&mut self.buf),
        };
        f(&mut inner);
        self.buf = inner.buf;
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }
}

/// One batch: the envelope plus the messages, each with its sequence number.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    next_seq: u32,
    first_seq: u32,
}

impl Batch {
    /// A batch whose messages are numbered from `first_seq`.
    pub fn new(first_seq: u32) -> Self {
        let mut b = Batch {
            buf: Vec::with_capacity(16 * 1024),
            next_seq: first_seq,
            first_seq,
        };
        b.message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, &[]);
        b
    }

    /// Appends an nf_tables message for family `inet`, asking for an
    /// acknowledgement; returns its sequence number.
    pub fn push(&mut self, kind: MsgType, flags: u16, attrs: Attrs) -> u32 {
        let msg_type = (NFNL_SUBSYS_NFTABLES << 8) | kind as u16;
        self.message(
            msg_type,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            NFPROTO_INET,
            0,
            &attrs.into_bytes(),
        )
    }

    /// Closes the batch; returns the bytes and the sequence numbers of the
    /// messages between the envelope.
    pub fn finish(mut self) -> (Vec<u8>, std::ops::Range<u32>) {
        let seqs = self.first_seq + 1..self.next_seq;
        self.message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, &[]);
        (self.buf, seqs)
    }

    fn message(&mut self, msg_type: u16, flags: u16, family: u8, res_id: u16, payload: &[u8]) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        put_message(&mut self.buf, msg_type, flags, seq, family, res_id, payload);
        seq
    }
}

/// Appends one nfnetlink message to `buf`: the netlink header (port id 0:
/// the kernel), the nfgenmsg header and `payload`, padded to 4 bytes.
pub(crate) fn put_message(
    buf: &mut Vec<u8>,
    msg_type: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    payload: &[u8],
) {
    let len = NLMSG_HDRLEN + 4 + payload.len();
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&msg_type.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version (NFNETLINK_V0), res_id (big endian).
    buf.push(family);
    buf.push(0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// One netlink message of a datagram.
pub(crate) struct Message<'a> {
    pub kind: u16,
    pub seq: u32,
    /// What follows the netlink header.
    pub body: &'a [u8],
}

/// The netlink messages of one datagram, in order. A length that does not
/// fit the datagram is an error and ends it.
pub(crate) fn messages(mut data: &[u8]) -> impl Iterator<Item = Result<Message<'_>, String>> {
    std::iter::from_fn(move || {
        if data.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            let e = format!("malformed netlink reply (length {len} of {} bytes)", data.len());
            data = &[];
            return Some(Err(e));
        }
        let message = Message {
            kind: u16::from_ne_bytes([data[4], data[5]]),
            seq: u32::from_ne_bytes([data[8], data[9], data[10], data[11]]),
            body: &data[NLMSG_HDRLEN..len],
        };
        data = &data[align4(len).min(data.len())..];
        Some(Ok(message))
    })
}

/// A reply read back from the socket: an acknowledgement (`errno == 0`) or
/// an error for the message with sequence number `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub seq: u32,
    /// Positive errno; 0 for success.
    pub errno: i32,
}

/// Parses the `NLMSG_ERROR` messages in one datagram; other types are skipped.
pub fn parse_acks(data: &[u8]) -> Result<Vec<Ack>, String> {
    let mut acks = Vec::new();
    for message in messages(data) {
        let Message { kind, body, .. } = message?;
        if kind == NLMSG_ERROR {
            // struct nlmsgerr { int error; struct nlmsghdr msg; ... }
            if body.len() < 4 + NLMSG_HDRLEN {
                return Err("truncated netlink acknowledgement".into());
            }
            let error = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
            let seq = u32::from_ne_bytes([body[12], body[13], body[14], body[15]]);
            acks.push(Ack {
                seq,
                errno: error.checked_neg().unwrap_or(i32::MAX),
            });
        }
    }
    Ok(acks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_length_and_flag() {
        let mut a = Attrs::new();
        a.str(1, "t1").nest(4, |n| {
            n.be32(1, 3).be32(2, (-100i32) as u32);
        });
        let b = a.into_bytes();
        // "t1\0" padded to 4: len 7.
        assert_eq!(&b[..8], &[7, 0, 1, 0, b't', b'1', 0, 0]);
        assert_eq!(u16::from_ne_bytes([b[8], b[9]]), 20);
        assert_eq!(u16::from_ne_bytes([b[10], b[11]]), 4 | NLA_F_NESTED);
        assert_eq!(&b[16..20], &3u32.to_be_bytes());
        assert_eq!(&b[24..28], &[0xff, 0xff, 0xff, 0x9c]);
    }

    #[test]
    fn batch_envelope_and_sequence_numbers() {
        let mut batch = Batch::new(100);
        let mut a = Attrs::new();
        a.str(1, "t");
        let seq = batch.push(MsgType::NewTable, NLM_F_CREATE, a);
        let (bytes, seqs) = batch.finish();
        assert_eq!(seq, 101);
        assert_eq!(seqs, 101..102);
        // BEGIN: type 16, nfgenmsg res_id = 10 big endian.
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), NFNL_MSG_BATCH_BEGIN);
        assert_eq!(&bytes[16..20], &[0, 0, 0, 10]);
        // The table message: type 0x0a00, inet family.
        assert_eq!(u16::from_ne_bytes([bytes[24], bytes[25]]), 0x0a00);
        assert_eq!(bytes[36], NFPROTO_INET);
        let end = &bytes[bytes.len() - 20..];
        assert_eq!(u16::from_ne_bytes([end[4], end[5]]), NFNL_MSG_BATCH_END);
    }

    #[test]
    fn acks_are_parsed_and_garbage_is_an_error() {
        let mut msg = Vec::new();
        msg.extend_from_slice(&36u32.to_ne_bytes());
        msg.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&(-2i32).to_ne_bytes());
        msg.extend_from_slice(&[0; 8]);
        msg.extend_from_slice(&7u32.to_ne_bytes());
        msg.extend_from_slice(&[0; 4]);
        assert_eq!(parse_acks(&msg).unwrap(), vec![Ack { seq: 7, errno: 2 }]);
        let mut bad = msg.clone();
        bad[0] = 200;
        assert!(parse_acks(&bad).is_err());
    }
}
