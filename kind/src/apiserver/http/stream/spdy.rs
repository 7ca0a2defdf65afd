//! SPDY/3.1 framing, the subset a `portforward.k8s.io` server needs (pure
//! apart from zlib): stream opens with their headers, data, resets, pings
//! and goaway in; replies, data, pings out. No flow control: the Go SPDY
//! implementation kubectl uses neither sends nor honours window updates.
//!
//! Frames start with 8 bytes. Control: `1`, 15-bit version (3), 16-bit type,
//! 8-bit flags, 24-bit length. Data: `0`, 31-bit stream id, flags, length.
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are one zlib stream per
//! direction, sync-flushed per frame; the client compresses with the preset
//! dictionary of SPDY/3 ([`dictionary`]). The server's blocks are stored
//! (uncompressed) deflate blocks, which any inflater reads.

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};

pub const FLAG_FIN: u8 = 0x01;
const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
/// Largest header block accepted once inflated.
const MAX_HEADER_BLOCK: usize = 256 << 10;
/// Most header pairs accepted in a block.
const MAX_HEADER_PAIRS: u32 = 256;
/// Data frames sent are at most this long.
pub const MAX_DATA: usize = 32 << 10;
/// RST_STREAM status: the stream is refused / was cancelled.
pub const REFUSED_STREAM: u32 = 3;

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY and unknown types: read
    /// (header blocks inflated, to keep the zlib stream in step) and ignored.
    Other,
}

/// Why the client's bytes are not SPDY/3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("SPDY control frame type {kind} is {len} bytes, too short")]
    Short { kind: u16, len: usize },
    #[error("SPDY header block: {0}")]
    Headers(String),
}

/// The Adler-32 checksum of [`dictionary`], as a peer's zlib header names it.
const DICTIONARY_ADLER32: u32 = 0xe3c6_a7c2;

/// The SPDY/3 header-compression dictionary: these names and values, each
/// with a 4-byte big-endian length before it, then the status codes, reason
/// phrases, dates and media types below, with no lengths.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &[&str] = &[
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information",
        "204 No Content",
        "301 Moved Permanently",
        "400 Bad Request",
        "401 Unauthorized",
        "403 Forbidden",
        "404 Not Found",
        "500 Internal Server Error",
        "501 Not Implemented",
        "503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
        "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
        "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    ];
    let mut out = Vec::with_capacity(1424);
    for w in WORDS {
        out.extend_from_slice(&(w.len() as u32).to_be_bytes());
        out.extend_from_slice(w.as_bytes());
    }
    for t in TAIL {
        out.extend_from_slice(t.as_bytes());
    }
    out
}

/// Reads client frames off a byte buffer, keeping the header inflater.
pub struct Decoder {
    inflate: Decompress,
    dictionary: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            inflate: Decompress::new(true),
            dictionary: dictionary(),
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Decoder {
    /// The next whole frame in `buf` (consumed), or `None` until more bytes come.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let head = buf.split_to(8);
        let payload = buf.split_to(len).freeze();
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: be32(&head[..4]) & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = match kind {
            SYN_STREAM => 10,
            SYN_REPLY | HEADERS | PING => 4,
            RST_STREAM | GOAWAY => 8,
            _ => 0,
        };
        if payload.len() < need {
            return Err(SpdyError::Short {
                kind,
                len: payload.len(),
            });
        }
        Ok(Some(match kind {
            SYN_STREAM => Frame::SynStream {
                stream_id: be32(&payload) & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                headers: self.headers(&payload[10..])?,
            },
            SYN_REPLY | HEADERS => {
                self.headers(&payload[4..])?;
                Frame::Other
            }
            RST_STREAM => Frame::RstStream {
                stream_id: be32(&payload) & 0x7fff_ffff,
                status: be32(&payload[4..]),
            },
            PING => Frame::Ping(be32(&payload)),
            GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        }))
    }

    fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let raw = self.inflate(block)?;
        parse_header_block(&raw)
    }

    /// Inflates one frame's part of the header stream (sync-flushed).
    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut used = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(SpdyError::Headers(format!("larger than {MAX_HEADER_BLOCK} bytes")));
                }
                out.reserve(out.len().max(256));
            }
            let (in_before, out_before) = (self.inflate.total_in(), out.len());
            let result = self
                .inflate
                .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync);
            used += (self.inflate.total_in() - in_before) as usize;
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let room = out.len() < out.capacity();
                    if used == input.len() && room {
                        break;
                    }
                    if room && out.len() == out_before && self.inflate.total_in() == in_before {
                        return Err(SpdyError::Headers("truncated compressed block".into()));
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(wanted) if wanted != DICTIONARY_ADLER32 => {
                        return Err(SpdyError::Headers(format!(
                            "the client's dictionary (adler32 {wanted:#010x}) is not SPDY/3's ({DICTIONARY_ADLER32:#010x})"
                        )));
                    }
                    Some(_) => {
                        self.inflate
                            .set_dictionary(&self.dictionary)
                            .map_err(|e| SpdyError::Headers(e.to_string()))?;
                    }
                    None => return Err(SpdyError::Headers(e.to_string())),
                },
            }
        }
        Ok(out)
    }
}

/// Name/value pairs of an inflated header block (names are lower case).
pub fn parse_header_block(mut raw: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let bad = |what: &str| SpdyError::Headers(what.to_string());
    let take = |raw: &mut &[u8]| -> Result<String, SpdyError> {
        if raw.len() < 4 {
            return Err(bad("truncated length"));
        }
        let n = raw.get_u32() as usize;
        if raw.len() < n {
            return Err(bad("truncated name or value"));
        }
        let s = String::from_utf8_lossy(&raw[..n]).into_owned();
        raw.advance(n);
        Ok(s)
    };
    if raw.len() < 4 {
        return Err(bad("no pair count"));
    }
    let count = raw.get_u32();
    if count > MAX_HEADER_PAIRS {
        return Err(SpdyError::Headers(format!(
            "{count} pairs, more than {MAX_HEADER_PAIRS}"
        )));
    }
    let mut pairs = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name = take(&mut raw)?;
        let value = take(&mut raw)?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// Writes server frames; owns the server's header stream.
#[derive(Debug, Default)]
pub struct Encoder {
    started: bool,
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

impl Encoder {
    /// A header block as the next part of the server's zlib stream: the
    /// zlib header once, then non-final stored deflate blocks.
    fn header_block(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
        for (name, value) in pairs {
            for s in [name, value] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 8);
        if !self.started {
            // CMF: deflate, 32 KiB window; FLG: no dictionary, check bits.
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for chunk in raw.chunks(u16::MAX as usize) {
            let len = chunk.len() as u16;
            out.push(0x00); // BFINAL 0, BTYPE 00 (stored), padding
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // An empty stored block: the sync-flush marker, on which inflaters
        // (Go's) hand out what they hold; without it a peer waits for more.
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        out
    }

    /// Accepts a client's stream (no headers).
    pub fn syn_reply(&mut self, stream_id: u32) -> Vec<u8> {
        let mut payload = stream_id.to_be_bytes().to_vec();
        payload.extend(self.header_block(&[]));
        control(SYN_REPLY, 0, &payload)
    }
}

/// A data frame (`data` at most 16 MiB; callers send [`MAX_DATA`] chunks).
pub fn data(stream_id: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
    out.push(if fin { FLAG_FIN } else { 0 });
    out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(data);
    out
}

/// The answer to a client's ping.
pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

/// Resets a stream.
pub fn rst_stream(stream_id: u32, status: u32) -> Vec<u8> {
    let mut payload = stream_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &payload)
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, FlushCompress};

    use super::*;

    /// A client's header stream: zlib with the SPDY dictionary, sync flushes.
    struct ClientHeaders(Compress);

    impl ClientHeaders {
        fn new() -> Self {
            let mut c = Compress::new(Compression::best(), true);
            c.set_dictionary(&dictionary()).unwrap();
            ClientHeaders(c)
        }

        fn block(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
            let mut raw = (pairs.len() as u32).to_be_bytes().to_vec();
            for (n, v) in pairs {
                for s in [n, v] {
                    raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    raw.extend_from_slice(s.as_bytes());
                }
            }
            let mut out = Vec::with_capacity(raw.len() + 128);
            self.0.compress_vec(&raw, &mut out, FlushCompress::Sync).unwrap();
            out
        }

        fn syn_stream(&mut self, id: u32, pairs: &[(&str, &str)]) -> Vec<u8> {
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            payload.extend(self.block(pairs));
            control(SYN_STREAM, 0, &payload)
        }
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
        // The Adler-32 a SPDY/3 peer's zlib header names.
        let mut c = Compress::new(Compression::best(), true);
        assert_eq!(c.set_dictionary(&d).unwrap(), DICTIONARY_ADLER32);
    }

    #[test]
    fn reads_stream_opens_across_frames_and_partial_input() {
        let mut client = ClientHeaders::new();
        let mut wire = client.syn_stream(1, &[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]);
        wire.extend(data(1, true, b""));
        wire.extend(client.syn_stream(3, &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]));
        wire.extend(data(3, false, b"GET / HTTP/1.0\r\n\r\n"));
        wire.extend(control(PING, 0, &7u32.to_be_bytes()));
        wire.extend(control(4, 0, &[0, 0, 0, 0])); // SETTINGS, empty
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        // One byte at a time: frames only come out whole.
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = dec.next(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        let h = |t: &str| {
            vec![
                ("streamtype".to_string(), t.to_string()),
                ("port".into(), "8080".into()),
                ("requestid".into(), "0".into()),
            ]
        };
        assert_eq!(
            frames,
            vec![
                Frame::SynStream {
                    stream_id: 1,
                    fin: false,
                    headers: h("error")
                },
                Frame::Data {
                    stream_id: 1,
                    fin: true,
                    data: Bytes::new()
                },
                Frame::SynStream {
                    stream_id: 3,
                    fin: false,
                    headers: h("data")
                },
                Frame::Data {
                    stream_id: 3,
                    fin: false,
                    data: Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n")
                },
                Frame::Ping(7),
                Frame::Other,
            ]
        );
    }

    #[test]
    fn refuses_other_versions_and_bad_blocks() {
        let mut dec = Decoder::default();
        let mut v2 = BytesMut::from(&[0x80, 0x02, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert_eq!(dec.next(&mut v2).unwrap_err(), SpdyError::Version(2));
        let mut short = BytesMut::from(&[0x80, 0x03, 0, 1, 0, 0, 0, 2, 0, 1][..]);
        assert!(matches!(
            dec.next(&mut short),
            Err(SpdyError::Short { kind: 1, len: 2 })
        ));
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(parse_header_block(&[0xff, 0, 0, 0]).is_err());
        // A block compressed with another dictionary is named as such.
        let mut c = Compress::new(Compression::best(), true);
        c.set_dictionary(b"not the spdy dictionary").unwrap();
        let mut block = Vec::with_capacity(64);
        c.compress_vec(&[0, 0, 0, 0], &mut block, FlushCompress::Sync).unwrap();
        let mut payload = 1u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0; 6]);
        payload.extend(block);
        let mut buf = BytesMut::from(&control(SYN_STREAM, 0, &payload)[..]);
        let err = dec.next(&mut buf).unwrap_err();
        assert!(err.to_string().contains("is not SPDY/3's"), "{err}");
    }

    #[test]
    fn server_frames() {
        let mut enc = Encoder::default();
        let first = enc.syn_reply(1);
        let second = enc.syn_reply(3);
        assert_eq!(&first[..8], &[0x80, 3, 0, 2, 0, 0, 0, 20]);
        assert!(first.ends_with(&[0, 0, 0, 0xff, 0xff]));
        // The zlib header is sent once: the second block is 2 bytes shorter.
        assert_eq!(second.len() + 2, first.len());
        // Both blocks inflate, in sequence, to empty header lists.
        let mut inflate = Decompress::new(true);
        for f in [&first, &second] {
            let mut out = Vec::with_capacity(64);
            inflate
                .decompress_vec(&f[12..], &mut out, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(parse_header_block(&out).unwrap(), vec![]);
        }
        assert_eq!(data(5, true, b"ab"), [0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']);
        assert_eq!(ping(9), [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 9]);
        assert_eq!(&rst_stream(5, REFUSED_STREAM)[8..], &[0, 0, 0, 5, 0, 0, 0, 3]);
    }
}
