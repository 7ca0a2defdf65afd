//! A pod netns wired to a peer netns with a veth pair, servers that say who
//! they are, and clients that connect as a given uid/gid.
//!
//! ```text
//!  pod netns                                peer netns
//!  eth0 10.248.0.2/24 fd00:248::2/64  <-->  peer0 10.248.0.1/24 fd00:248::1/64
//!  default via the peer                     lo: 10.249.0.1/16 192.168.77.1/24 fd00:249::1/64
//! ```
//!
//! Every server answers each TCP connection / UDP datagram with one line,
//! `<role> <local address> <original destination>`, so the client learns
//! exactly where its connection landed: the fake proxy's outbound (15001),
//! inbound (15006) or DNS (15053) listener, an app listener in the pod, or a
//! peer listener.

use std::io::{BufRead, BufReader, IoSliceMut, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use istio_cni::netns::run_in_netns;
use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    SockaddrStorage, bind, connect, getsockopt, recvmsg, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

use super::TestNetns;

pub const POD4: Ipv4Addr = Ipv4Addr::new(10, 248, 0, 2);
pub const PEER4: Ipv4Addr = Ipv4Addr::new(10, 248, 0, 1);
pub const FAR4: Ipv4Addr = Ipv4Addr::new(10, 249, 0, 1);
pub const OTHER4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
pub const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x248, 0, 0, 0, 0, 0, 2);
pub const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x248, 0, 0, 0, 0, 0, 1);
pub const FAR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x249, 0, 0, 0, 0, 0, 1);

/// Ports the app listens on inside the pod.
pub const APP_PORTS: &[u16] = &[8080, 9090, 3306, 15020, 15021, 15090];
/// Ports peer listeners serve (TCP on every address; UDP 53 too).
pub const PEER_PORTS: &[u16] = &[53, 80, 443, 3306, 5432, 8080, 9090, 15020];

const TIMEOUT: Duration = Duration::from_millis(1500);

/// Which addresses the pod has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// IPv4 only.
    V4,
    /// IPv6 only (plus loopback).
    V6,
    /// Both (IPv4 is listed first by the kernel).
    Dual,
}

impl Stack {
    fn v4(self) -> bool {
        self != Stack::V6
    }
    fn v6(self) -> bool {
        self != Stack::V4
    }
}

/// The two namespaces and their veth link.
pub struct Topology {
    pub pod: TestNetns,
    pub peer: TestNetns,
    pub stack: Stack,
}

impl Topology {
    /// Builds the namespaces, the veth pair, addresses and routes.
    pub fn new(stack: Stack) -> Self {
        let pod = TestNetns::new();
        let peer = TestNetns::new();
        pod.ip(&format!(
            "link add eth0 type veth peer name peer0 netns {}",
            peer.path.display()
        ));
        pod.ip("link set eth0 up");
        peer.ip("link set peer0 up");
        if stack.v4() {
            pod.ip("addr add 10.248.0.2/24 dev eth0");
            peer.ip("addr add 10.248.0.1/24 dev peer0");
            pod.ip("route add default via 10.248.0.1");
        }
        if stack.v6() {
            pod.ip("addr add fd00:248::2/64 dev eth0 nodad");
            peer.ip("addr add fd00:248::1/64 dev peer0 nodad");
            pod.ip("-6 route add default via fd00:248::1");
        }
        peer.ip("addr add 10.249.0.1/16 dev lo");
        peer.ip("addr add 192.168.77.1/24 dev lo");
        peer.ip("addr add fd00:249::1/64 dev lo nodad");
        Self { pod, peer, stack }
    }

    /// Starts the fake proxy and app listeners in the pod and the peer
    /// listeners. The DNS socket is created as `proxy` uid/gid so that the
    /// DNS conntrack-zone rules treat its replies as the agent's.
    pub fn start_servers(&self, proxy: (u32, u32)) -> Servers {
        let mut sockets = Vec::new();
        let pod_addrs = wildcard_addrs();
        sockets.extend(in_netns(&self.pod, move || {
            let mut v = Vec::new();
            for ip in pod_addrs {
                v.push(tcp(Role::Outbound, SocketAddr::new(ip, 15001), false));
                v.push(tcp(Role::Inbound, SocketAddr::new(ip, 15006), true));
                for port in APP_PORTS {
                    v.push(tcp(Role::App, SocketAddr::new(ip, *port), false));
                }
            }
            v
        }));
        sockets.extend(in_netns(&self.pod, move || {
            as_user(proxy.0, proxy.1);
            let lo4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 15053));
            let lo6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 15053));
            vec![
                tcp(Role::Dns, lo4, false),
                tcp(Role::Dns, lo6, false),
                udp(Role::Dns, lo4),
                udp(Role::Dns, lo6),
            ]
        }));
        let peer_addrs = wildcard_addrs();
        let mut udp_addrs = vec![IpAddr::V4(FAR4), IpAddr::V4(OTHER4), IpAddr::V6(FAR6)];
        if self.stack.v4() {
            udp_addrs.push(IpAddr::V4(PEER4));
        }
        if self.stack.v6() {
            udp_addrs.push(IpAddr::V6(PEER6));
        }
        sockets.extend(in_netns(&self.peer, move || {
            let mut v = Vec::new();
            for ip in peer_addrs {
                for port in PEER_PORTS {
                    v.push(tcp(Role::Peer, SocketAddr::new(ip, *port), false));
                }
            }
            // UDP replies come from the bound address, so bind each one.
            for ip in udp_addrs {
                v.push(udp(Role::Peer, SocketAddr::new(ip, 53)));
            }
            v
        }));
        Servers::start(sockets)
    }
}

fn wildcard_addrs() -> [IpAddr; 2] {
    [IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
}

fn in_netns<T: Send + 'static>(ns: &TestNetns, f: impl FnOnce() -> T + Send + 'static) -> T {
    run_in_netns(&ns.path, f).unwrap_or_else(|e| panic!("in netns {}: {e}", ns.name))
}

/// Who answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Fake proxy outbound listener (15001).
    Outbound,
    /// Fake proxy inbound listener (15006, transparent).
    Inbound,
    /// Fake DNS agent (15053, tcp+udp, on loopback).
    Dns,
    /// An app listener in the pod.
    App,
    /// A server in the peer netns.
    Peer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Outbound => "outbound",
            Role::Inbound => "inbound",
            Role::Dns => "dns",
            Role::App => "app",
            Role::Peer => "peer",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        [Role::Outbound, Role::Inbound, Role::Dns, Role::App, Role::Peer]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

/// Where a connection landed, as reported by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub role: Role,
    /// The server socket's local address.
    pub local: SocketAddr,
    /// SO_ORIGINAL_DST / IP_ORIGDSTADDR (the local address when there is none).
    pub orig: SocketAddr,
}

enum Sock {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

struct Served {
    role: Role,
    sock: Sock,
}

fn tcp(role: Role, addr: SocketAddr, transparent: bool) -> Served {
    let fd = bound_socket(addr, SockType::Stream, |fd| {
        setsockopt(fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
        if transparent {
            set_transparent(fd, addr.is_ipv6());
        }
    });
    nix::sys::socket::listen(&fd, Backlog::new(64).expect("backlog")).expect("listen");
    let listener = TcpListener::from(fd);
    listener.set_nonblocking(true).expect("nonblocking");
    Served {
        role,
        sock: Sock::Tcp(listener),
    }
}

fn udp(role: Role, addr: SocketAddr) -> Served {
    let fd = bound_socket(addr, SockType::Datagram, |fd| {
        if addr.is_ipv6() {
            setsockopt(fd, sockopt::Ipv6OrigDstAddr, &true).expect("IPV6_RECVORIGDSTADDR");
        } else {
            setsockopt(fd, sockopt::Ipv4OrigDstAddr, &true).expect("IP_RECVORIGDSTADDR");
        }
    });
    let sock = UdpSocket::from(fd);
    sock.set_nonblocking(true).expect("nonblocking");
    Served {
        role,
        sock: Sock::Udp(sock),
    }
}

/// A server socket for `addr`, bound after `options` are set on it (the
/// ones that must precede bind, such as SO_REUSEADDR and IP_TRANSPARENT).
fn bound_socket(addr: SocketAddr, ty: SockType, options: impl FnOnce(&OwnedFd)) -> OwnedFd {
    let fd = new_socket(addr, ty);
    options(&fd);
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).unwrap_or_else(|e| panic!("bind {ty:?} {addr}: {e}"));
    fd
}

fn new_socket(addr: SocketAddr, ty: SockType) -> OwnedFd {
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).expect("IPV6_V6ONLY");
    }
    fd
}

fn set_transparent(fd: &OwnedFd, v6: bool) {
    if !v6 {
        setsockopt(fd, sockopt::IpTransparent, &true).expect("IP_TRANSPARENT");
        return;
    }
    let one: libc::c_int = 1;
    // SAFETY: valid fd, pointer to a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_IPV6,
            libc::IPV6_TRANSPARENT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IPV6_TRANSPARENT: {}", std::io::Error::last_os_error());
}

/// The server thread; stopped and joined on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Servers {
    fn start(sockets: Vec<Served>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let mut busy = false;
                for s in &sockets {
                    busy |= serve_one(s);
                }
                if !busy {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Handles at most one pending connection/datagram; true if it did.
fn serve_one(s: &Served) -> bool {
    match &s.sock {
        Sock::Tcp(l) => match l.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let local = stream.local_addr().unwrap_or_else(|_| unspecified());
                let orig = original_dst(&stream).unwrap_or(local);
                let _ = stream.set_write_timeout(Some(TIMEOUT));
                let _ = writeln!(stream, "{} {local} {orig}", s.role.name());
                true
            }
            Err(_) => false,
        },
        Sock::Udp(u) => {
            let mut buf = [0u8; 512];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut cmsg = nix::cmsg_space!(libc::sockaddr_in6);
            let Ok(msg) = recvmsg::<SockaddrStorage>(u.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            else {
                return false;
            };
            let local = u.local_addr().unwrap_or_else(|_| unspecified());
            let orig = msg
                .cmsgs()
                .ok()
                .and_then(|mut c| c.find_map(|m| orig_from_cmsg(&m)))
                .unwrap_or(local);
            let from = msg.address.and_then(storage_to_std);
            if let Some(from) = from {
                let _ = u.send_to(format!("{} {local} {orig}\n", s.role.name()).as_bytes(), from);
            }
            true
        }
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
}

fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    if stream.local_addr().ok()?.is_ipv6() {
        getsockopt(&stream.as_fd(), sockopt::Ip6tOriginalDst).ok().map(from_in6)
    } else {
        getsockopt(&stream.as_fd(), sockopt::OriginalDst).ok().map(from_in4)
    }
}

fn orig_from_cmsg(m: &ControlMessageOwned) -> Option<SocketAddr> {
    match m {
        ControlMessageOwned::Ipv4OrigDstAddr(sin) => Some(from_in4(*sin)),
        ControlMessageOwned::Ipv6OrigDstAddr(sin6) => Some(from_in6(*sin6)),
        _ => None,
    }
}

fn from_in4(sin: libc::sockaddr_in) -> SocketAddr {
    SocketAddr::V4(SockaddrIn::from(sin).into())
}

fn from_in6(sin6: libc::sockaddr_in6) -> SocketAddr {
    SocketAddr::V6(SockaddrIn6::from(sin6).into())
}

fn storage_to_std(s: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*a)));
    }
    s.as_sockaddr_in6().map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
}

/// Changes the credentials of the *calling thread only*. glibc's
/// setuid/setresuid wrappers would change every thread of the test process,
/// so the raw syscalls are used; only call this on a throw-away thread.
pub fn as_user(uid: u32, gid: u32) {
    // SAFETY: plain syscalls with integer/null arguments.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            0,
            "setgroups"
        );
        assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0, "setresgid {gid}");
        assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0, "setresuid {uid}");
    }
}

/// Who makes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// A process in the pod with this uid/gid, optionally bound to a source IP.
    Pod { uid: u32, gid: u32, src: Option<IpAddr> },
    /// A root process in the peer netns.
    Peer,
}

/// Transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Opens a connection (or sends a datagram) and reads the server's line.
pub fn probe(topo: &Topology, from: Client, proto: Proto, dst: SocketAddr) -> Result<Landed, String> {
    let (ns, creds, src) = match from {
        Client::Pod { uid, gid, src } => (&topo.pod, Some((uid, gid)), src),
        Client::Peer => (&topo.peer, None, None),
    };
    in_netns(ns, move || {
        if let Some((uid, gid)) = creds {
            as_user(uid, gid);
        }
        let line = match proto {
            Proto::Tcp => tcp_exchange(src, dst),
            Proto::Udp => udp_exchange(src, dst),
        }?;
        parse_line(&line)
    })
}

fn tcp_exchange(src: Option<IpAddr>, dst: SocketAddr) -> Result<String, String> {
    let fd = new_socket(dst, SockType::Stream);
    // connect(2) honours SO_SNDTIMEO as its timeout on Linux.
    setsockopt(
        &fd,
        sockopt::SendTimeout,
        &TimeVal::new(TIMEOUT.as_secs() as _, TIMEOUT.subsec_micros() as _),
    )
    .map_err(|e| e.to_string())?;
    if let Some(ip) = src {
        bind(fd.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(ip, 0))).map_err(|e| format!("bind {ip}: {e}"))?;
    }
    connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)).map_err(|e| format!("connect: {e}"))?;
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    Ok(line)
}

fn udp_exchange(src: Option<IpAddr>, dst: SocketAddr) -> Result<String, String> {
    let bind_ip = src.unwrap_or(if dst.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    });
    let sock = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).map_err(|e| format!("bind: {e}"))?;
    sock.connect(dst).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    sock.send(b"query").map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).map_err(|e| format!("recv: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn parse_line(line: &str) -> Result<Landed, String> {
    let mut parts = line.split_whitespace();
    let (Some(role), Some(local), Some(orig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("malformed server line {line:?}"));
    };
    Ok(Landed {
        role: Role::parse(role).ok_or_else(|| format!("unknown role in {line:?}"))?,
        local: local.parse().map_err(|e| format!("{line:?}: {e}"))?,
        orig: orig.parse().map_err(|e| format!("{line:?}: {e}"))?,
    })
}

/// Sends one TCP segment with the SYN+FIN flags (a combination conntrack
/// classifies as INVALID) from the peer to `dst`, through a raw socket.
pub fn send_invalid_tcp(topo: &Topology, dst: SocketAddrV4) {
    in_netns(&topo.peer, move || {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            nix::sys::socket::SockProtocol::Tcp,
        )
        .expect("raw socket");
        let src = SocketAddrV4::new(PEER4, 0);
        bind(fd.as_raw_fd(), &SockaddrIn::from(src)).expect("bind raw socket");
        let segment = tcp_segment(PEER4, *dst.ip(), 40000, dst.port(), 0x03);
        nix::sys::socket::sendto(fd.as_raw_fd(), &segment, &SockaddrIn::from(dst), MsgFlags::empty())
            .expect("send raw segment");
    });
}

/// A 20-byte TCP header with the given flags and a correct checksum.
fn tcp_segment(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut seg = Vec::with_capacity(20);
    seg.extend_from_slice(&sport.to_be_bytes());
    seg.extend_from_slice(&dport.to_be_bytes());
    seg.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // seq
    seg.extend_from_slice(&0u32.to_be_bytes()); // ack
    seg.push(5 << 4); // data offset: 5 words
    seg.push(flags);
    seg.extend_from_slice(&1024u16.to_be_bytes()); // window
    seg.extend_from_slice(&[0, 0]); // checksum, filled below
    seg.extend_from_slice(&[0, 0]); // urgent pointer
    let mut pseudo = Vec::with_capacity(12 + seg.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&seg);
    let sum = pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    seg[16..18].copy_from_slice(&checksum.to_be_bytes());
    seg
}
