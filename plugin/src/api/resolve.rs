//! Name resolution for the API client: an IP-literal host (what the node
//! agent's kubeconfig names) becomes its address right here, with no
//! lookup. ureq's own resolver, given a timeout, runs every lookup on a
//! fresh thread, even for a literal; on a busy node each thread hand-off
//! can wait for a CPU. Host names still go to ureq's resolver.

use std::net::{IpAddr, SocketAddr};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// IP literals inline, names through [`DefaultResolver`].
#[derive(Debug, Default)]
pub struct LiteralFirst(DefaultResolver);

impl Resolver for LiteralFirst {
    fn resolve(&self, uri: &Uri, config: &Config, timeout: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        match literal(uri) {
            Some(addr) => {
                let mut addrs = self.empty();
                addrs.push(addr);
                Ok(addrs)
            }
            None => self.0.resolve(uri, config, timeout),
        }
    }
}

/// The socket address of an `http(s)` URI whose host is an IP literal.
fn literal(uri: &Uri) -> Option<SocketAddr> {
    let default_port = match uri.scheme_str()? {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = uri.authority()?;
    let host = authority.host();
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, authority.port_u16().unwrap_or(default_port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str) -> Option<SocketAddr> {
        literal(&uri.parse().unwrap())
    }

    #[test]
    fn ip_literals_resolve_to_themselves() {
        assert_eq!(
            parse("https://10.96.0.1:6443/api"),
            Some("10.96.0.1:6443".parse().unwrap())
        );
        assert_eq!(parse("https://10.96.0.1/api"), Some("10.96.0.1:443".parse().unwrap()));
        assert_eq!(parse("http://127.0.0.1/"), Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(
            parse("https://[fd00::1]:6443/"),
            Some("[fd00::1]:6443".parse().unwrap())
        );
        assert_eq!(parse("https://[::1]/"), Some("[::1]:443".parse().unwrap()));
    }

    #[test]
    fn names_and_other_schemes_are_left_to_the_lookup() {
        assert_eq!(parse("https://kubernetes.default.svc:443/"), None);
        assert_eq!(parse("https://localhost/"), None);
        assert_eq!(parse("socks5://127.0.0.1:1080/"), None);
    }

    #[test]
    fn the_resolver_answers_a_literal_itself() {
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from_secs(1),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        let uri: Uri = "https://192.0.2.7:6443/".parse().unwrap();
        let addrs = LiteralFirst::default()
            .resolve(&uri, &Config::default(), timeout)
            .unwrap();
        assert_eq!(&addrs[..], ["192.0.2.7:6443".parse().unwrap()]);
    }
}
