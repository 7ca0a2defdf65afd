//! `mesh-probe`: the container image of the scenario tests.
//!
//! - `mesh-probe proxy`: a fake sidecar. Listens on 15001 and 15006 (TCP)
//!   and 15053 (TCP and UDP), IPv4 and IPv6. Logs every accepted connection
//!   and datagram with its original destination (`SO_ORIGINAL_DST`, i.e.
//!   where it was going before an iptables/nftables REDIRECT) and answers
//!   with one line naming itself and that destination.
//! - `mesh-probe echo --port P [--port Q]`: a fake app on TCP and UDP; answers
//!   each connection/datagram with one line naming itself and the port.
//! - `mesh-probe client --target HOST:PORT [...]`: connects (or, with `--udp`,
//!   sends a datagram) to each target and logs the outcome: `connected`
//!   (TCP) or `answered` (UDP) with the peer's answer, `refused`, `timeout`,
//!   `unreachable`, `error`. Exits 0 only when every attempt got an answer.
//! - `mesh-probe http --port P`: a fake app for kubelet probes: `/ready`,
//!   `/healthz`, readiness flipped through `/ready/pass` and `/ready/fail`
//!   (see `mesh-probe/http.rs`).
//!
//! Every event is one JSON line on stdout, flushed at once, e.g.
//! `{"event":"accepted","mode":"proxy","proto":"tcp","listener":15001,
//! "peer":"10.0.0.2:41234","local":"127.0.0.1:15001",
//! "orig_dst":"10.96.0.5:80","ts":1700000000123}`. The answer line is also
//! JSON: `{"server":"proxy","name":..,"listener":15001,"orig_dst":..}` or
//! `{"server":"echo","name":..,"port":8080}`, so a client's log tells whether
//! it reached the app or was captured by the proxy. The name is `$POD_NAME`,
//! else the hostname. SIGTERM and SIGINT end every mode cleanly (exit 0 for
//! servers, after an `exit` event).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrStorage, bind,
    listen, recvmsg, sendmsg, setsockopt, socket, sockopt,
};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};

#[path = "mesh-probe/http.rs"]
mod http;

/// Outbound capture port of the sidecar.
const OUTBOUND_PORT: u16 = 15001;
/// Inbound capture port of the sidecar.
const INBOUND_PORT: u16 = 15006;
/// DNS capture port of the sidecar.
const DNS_PORT: u16 = 15053;
/// Longest answer line a client reads.
const MAX_ANSWER: usize = 4096;

#[derive(Debug, Parser)]
#[command(name = "mesh-probe", about = "Fake sidecar, app and client for mesh scenario tests")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Fake sidecar: log and answer traffic redirected to 15001/15006/15053.
    Proxy {
        /// TCP ports to listen on.
        #[arg(long = "tcp-port", default_values_t = [OUTBOUND_PORT, INBOUND_PORT, DNS_PORT])]
        tcp_ports: Vec<u16>,
        /// UDP ports to listen on.
        #[arg(long = "udp-port", default_values_t = [DNS_PORT])]
        udp_ports: Vec<u16>,
        /// Name in answers and logs (default: $POD_NAME, else the hostname).
        #[arg(long)]
        name: Option<String>,
    },
    /// Fake app: answer each TCP connection and UDP datagram with a line.
    Echo {
        /// Ports to serve (TCP and UDP each).
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
        /// Serve TCP only.
        #[arg(long)]
        no_udp: bool,
        /// Name in answers and logs (default: $POD_NAME, else the hostname).
        #[arg(long)]
        name: Option<String>,
    },
    /// Fake app for kubelet probes: /ready, /healthz, /ready/pass, /ready/fail.
    Http {
        /// TCP port to serve (IPv4 and IPv6).
        #[arg(long)]
        port: u16,
        /// /ready answers 503 until /ready/pass is requested.
        #[arg(long)]
        start_unready: bool,
        /// /healthz answers 500.
        #[arg(long)]
        fail_healthz: bool,
        /// /ready answers 200 only to requests carrying this header (NAME=VALUE).
        #[arg(long, value_parser = http::parse_header)]
        require_header: Option<(String, String)>,
        /// Serve HTTPS with a self-signed certificate.
        #[arg(long)]
        tls: bool,
        /// Name in logs (default: $POD_NAME, else the hostname).
        #[arg(long)]
        name: Option<String>,
    },
    /// Connect to targets and log each outcome.
    Client {
        /// HOST:PORT (IPv6 as [addr]:port); repeatable.
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        /// Send UDP datagrams instead of TCP connections.
        #[arg(long)]
        udp: bool,
        /// Per-attempt timeout (e.g. 2s, 500ms, 1.5).
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: Duration,
        /// Rounds over all targets.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Pause between rounds.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Payload sent after connecting (TCP) or as the datagram (UDP).
        #[arg(long, default_value = "probe\n")]
        payload: String,
    },
}

/// Parses `2s`, `500ms`, `1.5s`, `1m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 2s, 500ms, 1.5"))?;
    let factor = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(format!("invalid duration unit in {text:?}: use ms, s or m")),
    };
    let secs = value * factor;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {text:?}: must be a non-negative number"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Current time in milliseconds since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Writes one event line (with `ts`) to stdout and flushes it.
fn emit(mut fields: Map<String, Value>) {
    fields.insert("ts".into(), json!(now_ms()));
    let line = Value::Object(fields).to_string();
    let mut out = std::io::stdout().lock();
    // A closed stdout must not kill the probe; the event is simply lost.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Builds an event map from `json!` object syntax.
fn event(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => {
            let mut map = Map::new();
            map.insert("value".into(), other);
            map
        }
    }
}

/// The probe's name: `--name`, `$POD_NAME`, the hostname, or `mesh-probe`.
fn identity(name: Option<String>) -> String {
    name.filter(|n| !n.is_empty())
        .or_else(|| std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "mesh-probe".to_owned())
}

/// IPv4-mapped IPv6 addresses shown as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// The pre-NAT destination of an accepted TCP connection.
fn original_dst(stream: &impl AsFd, local: SocketAddr) -> Result<SocketAddr, String> {
    if local.is_ipv4() {
        let raw = nix::sys::socket::getsockopt(stream, sockopt::OriginalDst)
            .map_err(|e| format!("getsockopt(SOL_IP, SO_ORIGINAL_DST): {e}"))?;
        Ok(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr)),
            u16::from_be(raw.sin_port),
        )))
    } else {
        let raw = nix::sys::socket::getsockopt(stream, sockopt::Ip6tOriginalDst)
            .map_err(|e| format!("getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST): {e}"))?;
        Ok(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(raw.sin6_addr.s6_addr),
            u16::from_be(raw.sin6_port),
            raw.sin6_flowinfo,
            raw.sin6_scope_id,
        )))
    }
}

/// A bound socket of `ty` on `addr`; IPv6 sockets are IPv6-only so the
/// IPv4 and IPv6 listeners of a port coexist.
fn bound_socket(addr: SocketAddr, ty: SockType) -> Result<std::os::fd::OwnedFd, String> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .map_err(|e| format!("socket for {addr}: {e}"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| format!("SO_REUSEADDR on {addr}: {e}"))?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(|e| format!("IPV6_V6ONLY on {addr}: {e}"))?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(|e| format!("bind {addr}: {e}"))?;
    Ok(fd)
}

fn tcp_listener(addr: SocketAddr) -> Result<TcpListener, String> {
    let fd = bound_socket(addr, SockType::Stream)?;
    listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN)).map_err(|e| format!("listen {addr}: {e}"))?;
    TcpListener::from_std(std::net::TcpListener::from(fd)).map_err(|e| format!("register {addr}: {e}"))
}

fn udp_socket(addr: SocketAddr) -> Result<UdpSocket, String> {
    let fd = bound_socket(addr, SockType::Datagram)?;
    // Learn each datagram's destination address, to answer from it.
    let pktinfo = if addr.is_ipv4() {
        setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)
    } else {
        setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)
    };
    pktinfo.map_err(|e| format!("enabling packet info on {addr}: {e}"))?;
    UdpSocket::from_std(std::net::UdpSocket::from(fd)).map_err(|e| format!("register {addr}: {e}"))
}

/// A received datagram: its length, sender and destination address.
struct Datagram {
    len: usize,
    peer: SocketAddr,
    dst: Option<IpAddr>,
}

fn storage_to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// `recvmsg` with the `IP_PKTINFO`/`IPV6_PKTINFO` destination address.
async fn recv_datagram(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<Datagram> {
    let fd = sock.as_raw_fd();
    sock.async_io(tokio::io::Interest::READABLE, || {
        let mut iov = [std::io::IoSliceMut::new(&mut *buf)];
        let mut space = nix::cmsg_space!(libc::in6_pktinfo);
        let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut space), MsgFlags::empty())
            .map_err(std::io::Error::from)?;
        let mut dst = None;
        for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
            match cmsg {
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    dst = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        let peer = msg
            .address
            .as_ref()
            .and_then(storage_to_std)
            .ok_or_else(|| std::io::Error::other("datagram without a sender address"))?;
        Ok(Datagram {
            len: msg.bytes,
            peer,
            dst,
        })
    })
    .await
}

/// `sendmsg` to `peer` from source address `src` (so that a REDIRECTed
/// datagram's answer leaves from the redirect target and conntrack maps it
/// back to the original destination).
async fn send_datagram(sock: &UdpSocket, data: &[u8], peer: SocketAddr, src: Option<IpAddr>) -> std::io::Result<usize> {
    let fd = sock.as_raw_fd();
    let dest = SockaddrStorage::from(peer);
    sock.async_io(tokio::io::Interest::WRITABLE, || {
        let iov = [std::io::IoSlice::new(data)];
        let sent = match src {
            Some(IpAddr::V4(a)) if peer.is_ipv4() => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv4PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&dest),
                )
            }
            Some(IpAddr::V6(a)) if peer.is_ipv6() => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr { s6_addr: a.octets() },
                    ipi6_ifindex: 0,
                };
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&dest),
                )
            }
            _ => sendmsg(fd, &iov, &[], MsgFlags::empty(), Some(&dest)),
        };
        sent.map_err(std::io::Error::from)
    })
    .await
}

/// Who answers: the proxy or an echo app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Proxy,
    Echo,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Proxy => "proxy",
            Role::Echo => "echo",
        }
    }
}

/// The wildcard addresses of both families for `port`.
fn wildcards(port: u16) -> [SocketAddr; 2] {
    [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    ]
}

/// A bound listener of either protocol.
enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Opens every listener; returns how many succeeded. Failures are logged as
/// `bind_failed` events (e.g. IPv6 disabled in the namespace).
fn open_listeners(
    role: Role,
    name: &str,
    tcp_ports: &[u16],
    udp_ports: &[u16],
    tasks: &mut tokio::task::JoinSet<()>,
) -> usize {
    let mut opened = 0;
    let wanted = tcp_ports
        .iter()
        .map(|&p| ("tcp", p))
        .chain(udp_ports.iter().map(|&p| ("udp", p)));
    for (proto, port) in wanted {
        for addr in wildcards(port) {
            let bound = if proto == "tcp" {
                tcp_listener(addr).map(Bound::Tcp)
            } else {
                udp_socket(addr).map(Bound::Udp)
            };
            match bound {
                Ok(bound) => {
                    opened += 1;
                    emit(event(
                        json!({"event": "listening", "mode": role.as_str(), "proto": proto, "addr": addr.to_string(), "listener": port}),
                    ));
                    match bound {
                        Bound::Tcp(listener) => tasks.spawn(serve_tcp(role, name.to_owned(), port, listener)),
                        Bound::Udp(sock) => tasks.spawn(serve_udp(role, name.to_owned(), port, sock)),
                    };
                }
                Err(e) => emit(event(
                    json!({"event": "bind_failed", "mode": role.as_str(), "proto": proto, "addr": addr.to_string(), "error": e}),
                )),
            }
        }
    }
    opened
}

/// A failed accept or receive (`what`) on a listener: reported, then a
/// short pause so a persistent error does not spin.
async fn listener_error(what: &str, role: Role, port: u16, e: std::io::Error) {
    emit(event(
        json!({"event": what, "mode": role.as_str(), "listener": port, "error": e.to_string()}),
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// What a listener answers a client: the proxy says which listener and
/// original destination, the echo server which port.
fn answer(role: Role, name: &str, proto: &str, port: u16, orig_dst: Option<String>, peer: &str) -> Value {
    match role {
        Role::Proxy => {
            json!({"server": "proxy", "name": name, "proto": proto, "listener": port, "orig_dst": orig_dst, "peer": peer})
        }
        Role::Echo => json!({"server": "echo", "name": name, "proto": proto, "port": port, "peer": peer}),
    }
}

async fn serve_tcp(role: Role, name: String, port: u16, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                listener_error("accept_error", role, port, e).await;
                continue;
            }
        };
        let name = name.clone();
        tokio::spawn(async move { answer_tcp(role, &name, port, stream, peer).await });
    }
}

async fn answer_tcp(role: Role, name: &str, port: u16, mut stream: TcpStream, peer: SocketAddr) {
    let peer = canonical(peer);
    let local = stream.local_addr().map(canonical).ok();
    let orig = local.map(|l| original_dst(&stream, l));
    let mut ev = event(json!({
        "event": "accepted",
        "mode": role.as_str(),
        "proto": "tcp",
        "listener": port,
        "peer": peer.to_string(),
        "local": local.map(|l| l.to_string()),
    }));
    let orig_text = match &orig {
        Some(Ok(dst)) => Some(dst.to_string()),
        _ => None,
    };
    ev.insert("orig_dst".into(), json!(orig_text));
    if let Some(Err(e)) = &orig {
        ev.insert("orig_dst_error".into(), json!(e));
    }
    emit(ev);
    let line = format!("{}\n", answer(role, name, "tcp", port, orig_text, &peer.to_string()));
    if let Err(e) = stream.write_all(line.as_bytes()).await {
        emit(event(
            json!({"event": "answer_failed", "mode": role.as_str(), "listener": port, "peer": peer.to_string(), "error": e.to_string()}),
        ));
        return;
    }
    let _ = stream.shutdown().await;
    // Drain what the client sends so closing does not reset the connection
    // before it has read the answer.
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn serve_udp(role: Role, name: String, port: u16, sock: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Datagram { len, peer, dst } = match recv_datagram(&sock, &mut buf).await {
            Ok(got) => got,
            Err(e) => {
                listener_error("recv_error", role, port, e).await;
                continue;
            }
        };
        let peer_text = canonical(peer).to_string();
        emit(event(json!({
            "event": "datagram",
            "mode": role.as_str(),
            "proto": "udp",
            "listener": port,
            "peer": peer_text,
            "bytes": len,
            "local_dst": dst.map(|d| SocketAddr::new(d, port).to_string()),
            // SO_ORIGINAL_DST only exists for TCP; a REDIRECTed datagram's
            // original destination is not visible to the receiver.
            "orig_dst": Value::Null,
        })));
        let answer = answer(role, &name, "udp", port, None, &peer_text);
        if let Err(e) = send_datagram(&sock, format!("{answer}\n").as_bytes(), peer, dst).await {
            emit(event(
                json!({"event": "answer_failed", "mode": role.as_str(), "listener": port, "peer": peer_text, "error": e.to_string()}),
            ));
        }
    }
}

/// SIGTERM and SIGINT handlers, installed before anything is announced so
/// that a signal sent right after `ready` is never lost.
struct Termination {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Termination {
    fn install() -> Self {
        Self {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Waits for either signal and names it.
    async fn wait(&mut self) -> &'static str {
        async fn next(sig: &mut Option<tokio::signal::unix::Signal>) {
            match sig {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => "SIGTERM",
            _ = next(&mut self.int) => "SIGINT",
        }
    }
}

async fn run_server(role: Role, name: String, tcp_ports: Vec<u16>, udp_ports: Vec<u16>) -> ExitCode {
    let mut termination = Termination::install();
    let mut tasks = tokio::task::JoinSet::new();
    if open_listeners(role, &name, &tcp_ports, &udp_ports, &mut tasks) == 0 {
        emit(event(
            json!({"event": "exit", "mode": role.as_str(), "reason": "no listener could be opened"}),
        ));
        return ExitCode::from(2);
    }
    emit(event(json!({"event": "ready", "mode": role.as_str(), "name": name})));
    let reason = termination.wait().await;
    tasks.abort_all();
    emit(event(json!({"event": "exit", "mode": role.as_str(), "reason": reason})));
    ExitCode::SUCCESS
}

/// The outcome of one client attempt, as an event.
fn classify(err: &std::io::Error) -> &'static str {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::TimedOut => "timeout",
        _ => match err.raw_os_error() {
            Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => "unreachable",
            Some(libc::ECONNREFUSED) => "refused",
            _ => "error",
        },
    }
}

/// Parses an answer line: JSON if possible, else the text.
fn answer_value(bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next().unwrap_or("").trim();
    serde_json::from_str::<Value>(line).unwrap_or_else(|_| Value::String(line.to_owned()))
}

async fn resolve(target: &str) -> std::io::Result<SocketAddr> {
    tokio::net::lookup_host(target)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{target} resolved to nothing")))
}

async fn tcp_attempt(target: &str, addr: SocketAddr, timeout: Duration, payload: &str) -> (bool, Map<String, Value>) {
    let base = |ev: &str| {
        event(json!({"event": ev, "mode": "client", "proto": "tcp", "target": target, "addr": addr.to_string()}))
    };
    let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return (false, base("timeout")),
        Ok(Err(e)) => {
            let mut ev = base(classify(&e));
            ev.insert("error".into(), json!(e.to_string()));
            return (false, ev);
        }
        Ok(Ok(stream)) => stream,
    };
    let mut ev = base("connected");
    if let Ok(local) = stream.local_addr() {
        ev.insert("local".into(), json!(canonical(local).to_string()));
    }
    if !payload.is_empty() {
        let _ = stream.write_all(payload.as_bytes()).await;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(timeout, async {
        let mut chunk = [0u8; 512];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.contains(&b'\n') || buf.len() >= MAX_ANSWER {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    // What arrived is the reply, also when the read then failed.
    let reply = if buf.is_empty() {
        Value::Null
    } else {
        answer_value(&buf)
    };
    ev.insert("reply".into(), reply);
    match read {
        Err(_) => {
            ev.insert("reply_error".into(), json!("timeout waiting for an answer"));
        }
        Ok(Err(e)) => {
            ev.insert("reply_error".into(), json!(e.to_string()));
        }
        Ok(Ok(())) => {}
    }
    (true, ev)
}

async fn udp_attempt(target: &str, addr: SocketAddr, timeout: Duration, payload: &str) -> (bool, Map<String, Value>) {
    let base = |ev: &str| {
        event(json!({"event": ev, "mode": "client", "proto": "udp", "target": target, "addr": addr.to_string()}))
    };
    let fail = |e: std::io::Error| {
        let mut ev = base(classify(&e));
        ev.insert("error".into(), json!(e.to_string()));
        (false, ev)
    };
    let bind_addr = if addr.is_ipv4() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    };
    let sock = match UdpSocket::bind(bind_addr).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if let Err(e) = sock.connect(addr).await {
        return fail(e);
    }
    if let Err(e) = sock.send(payload.as_bytes()).await {
        return fail(e);
    }
    let mut buf = vec![0u8; MAX_ANSWER];
    match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
        Err(_) => (false, base("timeout")),
        Ok(Err(e)) => fail(e),
        Ok(Ok(n)) => {
            let mut ev = base("answered");
            if let Ok(local) = sock.local_addr() {
                ev.insert("local".into(), json!(canonical(local).to_string()));
            }
            ev.insert("reply".into(), answer_value(&buf[..n]));
            (true, ev)
        }
    }
}

async fn run_client(
    targets: Vec<String>,
    udp: bool,
    timeout: Duration,
    count: u32,
    interval: Duration,
    payload: String,
) -> ExitCode {
    let mut termination = Termination::install();
    let rounds = async {
        let (mut attempts, mut answered) = (0u32, 0u32);
        for round in 0..count.max(1) {
            if round > 0 {
                tokio::time::sleep(interval).await;
            }
            for target in &targets {
                attempts += 1;
                let addr = match resolve(target).await {
                    Ok(addr) => addr,
                    Err(e) => {
                        emit(event(
                            json!({"event": "error", "mode": "client", "proto": if udp { "udp" } else { "tcp" }, "target": target, "error": format!("resolving {target}: {e}")}),
                        ));
                        continue;
                    }
                };
                let (ok, mut ev) = if udp {
                    udp_attempt(target, addr, timeout, &payload).await
                } else {
                    tcp_attempt(target, addr, timeout, &payload).await
                };
                ev.insert("round".into(), json!(round));
                emit(ev);
                if ok {
                    answered += 1;
                }
            }
        }
        (attempts, answered)
    };
    tokio::select! {
        (attempts, answered) = rounds => {
            emit(event(json!({"event": "summary", "mode": "client", "attempts": attempts, "succeeded": answered})));
            if attempts == answered { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        reason = termination.wait() => {
            emit(event(json!({"event": "exit", "mode": "client", "reason": reason})));
            ExitCode::SUCCESS
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh-probe: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        match cli.mode {
            Mode::Proxy {
                tcp_ports,
                udp_ports,
                name,
            } => run_server(Role::Proxy, identity(name), tcp_ports, udp_ports).await,
            Mode::Echo { ports, no_udp, name } => {
                let udp = if no_udp { Vec::new() } else { ports.clone() };
                run_server(Role::Echo, identity(name), ports, udp).await
            }
            Mode::Http {
                port,
                start_unready,
                fail_healthz,
                require_header,
                tls,
                name,
            } => {
                let behaviour = http::Behaviour {
                    start_unready,
                    fail_healthz,
                    require_header,
                    tls,
                };
                http::run(identity(name), port, behaviour).await
            }
            Mode::Client {
                targets,
                udp,
                timeout,
                count,
                interval,
                payload,
            } => run_client(targets, udp, timeout, count, interval, payload).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn mapped_addresses_are_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        assert_eq!(canonical(mapped).to_string(), "10.0.0.1:80");
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn answers_parse_as_json_or_text() {
        assert_eq!(answer_value(b"{\"server\":\"echo\"}\nmore"), json!({"server": "echo"}));
        assert_eq!(answer_value(b"hello\n"), json!("hello"));
    }

    #[test]
    fn errors_are_classified() {
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(classify(&refused), "refused");
        assert_eq!(
            classify(&std::io::Error::from_raw_os_error(libc::ENETUNREACH)),
            "unreachable"
        );
        assert_eq!(classify(&std::io::Error::from_raw_os_error(libc::EACCES)), "error");
    }

    #[test]
    fn cli_defaults() {
        let cli = Cli::try_parse_from(["mesh-probe", "proxy"]).unwrap();
        match cli.mode {
            Mode::Proxy {
                tcp_ports, udp_ports, ..
            } => {
                assert_eq!(tcp_ports, [15001, 15006, 15053]);
                assert_eq!(udp_ports, [15053]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["mesh-probe", "echo"]).is_err());
        assert!(Cli::try_parse_from(["mesh-probe", "client", "--target", "a:1", "--timeout", "bad"]).is_err());
    }
}
