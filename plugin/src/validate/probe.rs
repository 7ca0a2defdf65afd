//! The probe itself: listeners that read `SO_ORIGINAL_DST`, and a client that
//! connects to the magic address the pod's nat rules must redirect.
//!
//! Plain std threads and blocking sockets: the probe lives for a few seconds.
//! Socket options the standard library lacks (`SO_REUSEPORT`, timeouts on a
//! listener, binding a client's source address before `connect`) are set
//! through `nix`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, SockaddrStorage, sockopt};
use nix::sys::time::TimeVal;

use super::log::Logger;

/// Original destination port that proves the redirect (`--iptables-probe-port`).
pub const DEFAULT_PROBE_PORT: u16 = 15002;
/// How long the probe keeps trying (`--probe-timeout`).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two client connection attempts.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Upper bound on one client `connect`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// IPv4 target address: the address the sidecar uses for its inbound
/// passthrough, which the pod's rules treat specially.
pub const TARGET_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// IPv6 target address (`::6`).
pub const TARGET_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// How often an idle listener thread checks whether the probe is over.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// What to probe, independent of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Ports to listen on (the `-p` and `-z` ports). Duplicates are bound once.
    pub listen_ports: Vec<u16>,
    /// The destination port the client connects to; a listener that sees it as
    /// the original destination proves the redirect.
    pub probe_port: u16,
    /// Overall deadline, counted from the moment the listeners are up.
    pub timeout: Duration,
    /// Use IPv6 (`::1` and `::6`) instead of IPv4 (`127.0.0.1` and
    /// `127.0.0.6`).
    pub ipv6: bool,
    /// Pause between client attempts.
    pub retry_interval: Duration,
    /// Upper bound on one client `connect`.
    pub connect_timeout: Duration,
    /// Where progress is logged.
    pub log: Logger,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self::new(false)
    }
}

impl ProbeConfig {
    /// Istio's defaults (ports 15001 and 15006, probe port 15002, 5 s) for
    /// the given address family.
    pub fn new(ipv6: bool) -> Self {
        Self {
            listen_ports: vec![15001, 15006],
            probe_port: DEFAULT_PROBE_PORT,
            timeout: DEFAULT_PROBE_TIMEOUT,
            ipv6,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            log: Logger::default(),
        }
    }

    /// The loopback address the listeners bind and the client connects from:
    /// `127.0.0.1` or `::1`.
    pub fn listen_ip(&self) -> IpAddr {
        if self.ipv6 {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    }

    /// Where the client connects: `127.0.0.6:<probe port>` or
    /// `[::6]:<probe port>`.
    pub fn target(&self) -> SocketAddr {
        let ip = if self.ipv6 {
            IpAddr::V6(TARGET_V6)
        } else {
            IpAddr::V4(TARGET_V4)
        };
        SocketAddr::new(ip, self.probe_port)
    }
}

/// How a probe that ran to completion ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A listener received a connection whose original destination port was
    /// the probe port: the redirect rules are in place.
    Passed {
        /// Time from listeners up to success.
        elapsed: Duration,
        /// Client connection attempts made.
        attempts: u32,
    },
    /// The deadline passed without a redirected connection.
    TimedOut {
        /// Time from listeners up to giving up.
        elapsed: Duration,
        /// Client connection attempts made.
        attempts: u32,
        /// The last client error, if the last attempt failed (typically
        /// "connection refused": nothing redirected the connection).
        last_error: Option<String>,
    },
}

impl ProbeOutcome {
    /// Whether the rules were found in place.
    pub fn passed(&self) -> bool {
        matches!(self, Self::Passed { .. })
    }
}

/// Why the probe could not run to a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// None of the listen ports could be bound (exit status 126, as in Istio).
    #[error("no listener available: {}", failures.join("; "))]
    NoListener {
        /// One `address: error` entry per port.
        failures: Vec<String>,
    },
    /// Every interface address is loopback or link-local, so there is no host
    /// IP to pick the address family from (exit status 1).
    #[error(
        "no usable local IP address: every interface address is loopback or link-local \
         (or there is none), so the pod's address family cannot be determined"
    )]
    NoHostIp,
    /// The interface addresses could not be read (exit status 1).
    #[error("cannot read interface addresses: {0}")]
    Interfaces(#[source] io::Error),
}

impl ProbeError {
    /// The process exit status for this error: 126 when the pod's networking
    /// is at fault (like a timeout), 1 for configuration errors.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::NoListener { .. } => super::EXIT_VALIDATION_FAILED,
            Self::NoHostIp | Self::Interfaces(_) => super::EXIT_CONFIG_ERROR,
        }
    }
}

/// The pod's addresses as far as the probe cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAddresses {
    /// The first non-loopback, non-link-local address; its family is the
    /// probe's family.
    pub host_ip: IpAddr,
    /// Whether any usable IPv4 address exists.
    pub has_ipv4: bool,
    /// Whether any usable IPv6 address exists.
    pub has_ipv6: bool,
}

/// Whether `ip` can be the host IP: not loopback, not link-local, not
/// unspecified. IPv4-mapped IPv6 addresses are judged as IPv4.
pub fn is_usable_host_ip(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unicast_link_local() || v6.is_unspecified()),
    }
}

/// Picks the host IP out of interface addresses listed in kernel order:
/// the first usable one (see [`is_usable_host_ip`]).
pub fn select_host_ip(addrs: impl IntoIterator<Item = IpAddr>) -> Option<HostAddresses> {
    let mut found: Option<HostAddresses> = None;
    for ip in addrs.into_iter().filter(|ip| is_usable_host_ip(*ip)) {
        let h = found.get_or_insert(HostAddresses {
            host_ip: ip,
            has_ipv4: false,
            has_ipv6: false,
        });
        if ip.to_canonical().is_ipv4() {
            h.has_ipv4 = true;
        } else {
            h.has_ipv6 = true;
        }
    }
    found
}

/// Reads this network namespace's interface addresses (`getifaddrs`) and
/// picks the host IP with [`select_host_ip`].
pub fn detect_host_ip() -> Result<HostAddresses, ProbeError> {
    let ifaddrs = nix::ifaddrs::getifaddrs().map_err(|e| ProbeError::Interfaces(e.into()))?;
    let addrs = ifaddrs.filter_map(|ifa| {
        let addr = ifa.address?;
        if let Some(v4) = addr.as_sockaddr_in() {
            Some(IpAddr::V4(v4.ip()))
        } else {
            addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        }
    });
    select_host_ip(addrs).ok_or(ProbeError::NoHostIp)
}

/// Runs the probe: binds the listeners, then connects to
/// [`ProbeConfig::target`] from [`ProbeConfig::listen_ip`] every
/// [`ProbeConfig::retry_interval`] until a listener sees a connection whose
/// original destination port is [`ProbeConfig::probe_port`], or the timeout
/// passes.
///
/// All threads it starts have finished (and all sockets are closed) when it
/// returns, so it can be called repeatedly in one process.
pub fn run_probe(config: &ProbeConfig) -> Result<ProbeOutcome, ProbeError> {
    let log = &config.log;
    let listen_ip = config.listen_ip();

    let mut ports: Vec<u16> = Vec::with_capacity(config.listen_ports.len());
    for &p in &config.listen_ports {
        if !ports.contains(&p) {
            ports.push(p);
        }
    }

    let mut listeners = Vec::new();
    let mut failures = Vec::new();
    for port in ports {
        let addr = SocketAddr::new(listen_ip, port);
        match bind_listener(addr) {
            Ok(l) => {
                log.debug(format_args!("Listening on {addr}"));
                listeners.push((addr, l));
            }
            Err(e) => {
                log.warn(format_args!("Cannot listen on {addr}, skipping it: {e}"));
                failures.push(format!("{addr}: {e}"));
            }
        }
    }
    if listeners.is_empty() {
        if failures.is_empty() {
            failures.push("no listen ports configured".to_string());
        }
        return Err(ProbeError::NoListener { failures });
    }

    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    let outcome = thread::scope(|scope| {
        for (addr, listener) in &listeners {
            let tx = tx.clone();
            let stop = &stop;
            scope.spawn(move || accept_loop(*addr, listener, config, stop, &tx));
        }
        drop(tx);
        let outcome = client_loop(config, &rx);
        stop.store(true, Ordering::Relaxed);
        outcome
    });
    Ok(outcome)
}

/// Binds a TCP listener with `SO_REUSEADDR` and `SO_REUSEPORT`, and a receive
/// timeout so `accept` wakes up regularly.
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = new_tcp_socket(addr)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    // On Linux, SO_RCVTIMEO bounds accept().
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &timeval(ACCEPT_POLL))?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    socket::listen(&fd, Backlog::new(128)?)?;
    Ok(TcpListener::from(fd))
}

fn new_tcp_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    Ok(socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?)
}

fn timeval(d: Duration) -> TimeVal {
    let secs = libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX);
    let micros = libc::suseconds_t::from(d.subsec_micros());
    // A zero timeval means "block forever"; keep at least 1 µs.
    if secs == 0 && micros == 0 {
        TimeVal::new(0, 1)
    } else {
        TimeVal::new(secs, micros)
    }
}

/// Serves one listener until `stop` is set: reports each connection's
/// original destination port back to the peer, and signals `tx` when it is
/// the probe port.
fn accept_loop(
    addr: SocketAddr,
    listener: &TcpListener,
    config: &ProbeConfig,
    stop: &AtomicBool,
    tx: &mpsc::Sender<SocketAddr>,
) {
    let log = &config.log;
    while !stop.load(Ordering::Relaxed) {
        let (stream, peer) = match listener.accept() {
            Ok(conn) => conn,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                log.debug(format_args!("Accept on {addr} failed: {e}"));
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        match original_dst_port(&stream, config.ipv6) {
            Ok(port) => {
                // Tell the peer what we saw, then close. The client usually
                // closed already, so errors here are expected and ignored.
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = socket::send(stream.as_raw_fd(), port.to_string().as_bytes(), MsgFlags::MSG_NOSIGNAL);
                drop(stream);
                if port == config.probe_port {
                    log.debug(format_args!(
                        "{addr} accepted a connection from {peer} redirected from port {port}"
                    ));
                    let _ = tx.send(addr);
                } else {
                    log.debug(format_args!(
                        "{addr} ignoring a connection from {peer}: original destination port \
                         {port} is not the probe port {}",
                        config.probe_port
                    ));
                }
            }
            Err(e) => {
                log.debug(format_args!(
                    "{addr} cannot read the original destination of a connection from {peer}: {e}"
                ));
            }
        }
    }
}

/// Reads the pre-NAT destination port of an accepted connection
/// (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`).
fn original_dst_port(stream: &TcpStream, ipv6: bool) -> io::Result<u16> {
    if ipv6 {
        let sa = socket::getsockopt(&stream.as_fd(), sockopt::Ip6tOriginalDst)?;
        Ok(u16::from_be(sa.sin6_port))
    } else {
        let sa = socket::getsockopt(&stream.as_fd(), sockopt::OriginalDst)?;
        Ok(u16::from_be(sa.sin_port))
    }
}

/// Connects once from `<listen ip>:0` to the target and closes.
fn connect_once(config: &ProbeConfig, timeout: Duration) -> io::Result<()> {
    let source = SocketAddr::new(config.listen_ip(), 0);
    let target = config.target();
    let fd = new_tcp_socket(target)?;
    // On Linux, SO_SNDTIMEO bounds a blocking connect() (EINPROGRESS on expiry).
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeval(timeout))?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(source))?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(target)) {
        Ok(()) => Ok(()),
        Err(Errno::EINPROGRESS) | Err(Errno::EAGAIN) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {}ms", timeout.as_millis()),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The client side: connect, wait for a success report, repeat until the
/// deadline.
fn client_loop(config: &ProbeConfig, rx: &mpsc::Receiver<SocketAddr>) -> ProbeOutcome {
    let log = &config.log;
    let start = Instant::now();
    // A timeout too large to represent means "no deadline".
    let deadline = start.checked_add(config.timeout);
    let remaining = || deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
    let source = SocketAddr::new(config.listen_ip(), 0);
    let target = config.target();
    let mut attempts: u32 = 0;
    let mut last_error = None;

    loop {
        let left = remaining();
        if left.is_zero() {
            break;
        }
        attempts = attempts.saturating_add(1);
        let connect_timeout = config.connect_timeout.min(left).max(Duration::from_millis(10));
        match connect_once(config, connect_timeout) {
            Ok(()) => {
                last_error = None;
                log.debug(format_args!(
                    "Connected to {target} from {source}; waiting for a listener to report it"
                ));
            }
            Err(e) => {
                log.debug(format_args!("Error connecting to {target} from {source}: {e}"));
                last_error = Some(e.to_string());
            }
        }
        let wait = config.retry_interval.min(remaining());
        match rx.recv_timeout(wait) {
            Ok(_) => {
                return ProbeOutcome::Passed {
                    elapsed: start.elapsed(),
                    attempts,
                };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Listener threads only exit once the client is done; if they
            // are gone anyway, keep the retry cadence.
            Err(mpsc::RecvTimeoutError::Disconnected) => thread::sleep(wait),
        }
    }
    if rx.try_recv().is_ok() {
        return ProbeOutcome::Passed {
            elapsed: start.elapsed(),
            attempts,
        };
    }
    ProbeOutcome::TimedOut {
        elapsed: start.elapsed(),
        attempts,
        last_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    #[test]
    fn host_ip_selection() {
        let h = select_host_ip([
            v4("127.0.0.1"),
            v4("169.254.1.1"),
            v4("10.1.0.2"),
            v4("10.1.0.3"),
            v6("::1"),
            v6("fe80::1"),
            v6("fd00::2"),
        ])
        .unwrap();
        assert_eq!(h.host_ip, v4("10.1.0.2"));
        assert!(h.has_ipv4 && h.has_ipv6);

        let h = select_host_ip([v4("127.0.0.1"), v6("::1"), v6("fe80::1"), v6("fd00::2")]).unwrap();
        assert_eq!(h.host_ip, v6("fd00::2"));
        assert!(!h.has_ipv4 && h.has_ipv6);

        // The first usable address decides, even if it is IPv6.
        let h = select_host_ip([v6("2001:db8::1"), v4("10.0.0.1")]).unwrap();
        assert!(h.host_ip.is_ipv6());

        assert_eq!(select_host_ip([v4("127.0.0.1"), v6("::1"), v6("fe80::9")]), None);
        assert_eq!(select_host_ip([]), None);
        assert!(!is_usable_host_ip(v6("::ffff:127.0.0.1")));
        assert!(!is_usable_host_ip(v4("0.0.0.0")));
    }

    #[test]
    fn addresses() {
        let c = ProbeConfig::new(false);
        assert_eq!(c.listen_ip(), v4("127.0.0.1"));
        assert_eq!(c.target(), "127.0.0.6:15002".parse().unwrap());
        let c = ProbeConfig::new(true);
        assert_eq!(c.listen_ip(), v6("::1"));
        assert_eq!(c.target(), "[::6]:15002".parse().unwrap());
    }

    #[test]
    fn no_listener_when_every_port_is_taken() {
        // A plain std listener has no SO_REUSEPORT, so our bind must fail.
        let blocker = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = blocker.local_addr().unwrap().port();
        let config = ProbeConfig {
            listen_ports: vec![port, port],
            timeout: Duration::from_millis(100),
            log: Logger::silent(),
            ..ProbeConfig::new(false)
        };
        let err = run_probe(&config).unwrap_err();
        assert_eq!(err.exit_code(), 126);
        let msg = err.to_string();
        assert!(msg.starts_with("no listener available: "), "{msg}");
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");

        let empty = ProbeConfig {
            listen_ports: vec![],
            log: Logger::silent(),
            ..ProbeConfig::new(false)
        };
        assert!(matches!(run_probe(&empty), Err(ProbeError::NoListener { .. })));
    }

    #[test]
    fn times_out_without_rules_and_cleans_up() {
        // Ports picked by the kernel so parallel tests cannot collide; no
        // nat rules exist in the test's namespace, so nothing is redirected
        // (unless something happens to be listening on 127.0.0.6:<port>, which
        // only makes the client connect and still times out).
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let probe_port = probe.local_addr().unwrap().port();
        drop(probe);
        let config = ProbeConfig {
            listen_ports: vec![0],
            probe_port,
            timeout: Duration::from_millis(300),
            retry_interval: Duration::from_millis(50),
            log: Logger::silent(),
            ..ProbeConfig::new(false)
        };
        let started = Instant::now();
        let outcome = run_probe(&config).unwrap();
        let took = started.elapsed();
        match outcome {
            ProbeOutcome::TimedOut { attempts, .. } => assert!(attempts >= 2, "{attempts}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(took >= Duration::from_millis(300), "{took:?}");
        // Listener threads poll every 50 ms, so the return is prompt.
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}
