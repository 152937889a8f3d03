//! Listening sockets for pools: addresses, binding with a backlog and
//! `SO_REUSEPORT`, and stale Unix socket files.
//!
//! Every socket made here is close-on-exec (socket2 opens them with
//! `SOCK_CLOEXEC`); a replica gets one only as a `LISTEN_FDS` fd, dup2'd
//! into place by the spawn.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use socket2::{Domain, SockAddr, Socket, Type};

/// Where a pool socket listens: `127.0.0.1:8080`, `[::1]:8080` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A TCP address (IPv4 or IPv6).
    Tcp(SocketAddr),
    /// A Unix stream socket at this path.
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path".into());
            }
            return Ok(ListenAddr::Unix(path.into()));
        }
        text.parse().map(ListenAddr::Tcp).map_err(|_| {
            format!("{text:?} is not an address like \"127.0.0.1:8080\", \"[::1]:8080\" or \"unix:/path\"")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Binds `addr` and, with `listen`, listens with `backlog`. With
/// `reuseport`, `SO_REUSEPORT` is set first, so that more sockets can bind
/// the same address; a bound socket that does not listen holds the port
/// without being given connections.
pub fn bind(
    addr: &ListenAddr,
    backlog: u32,
    reuseport: bool,
    listen: bool,
) -> std::io::Result<OwnedFd> {
    let socket = match addr {
        ListenAddr::Tcp(tcp) => {
            let socket = Socket::new(Domain::for_address(*tcp), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if tcp.is_ipv6() {
                socket.set_only_v6(true)?;
            }
            if reuseport {
                socket.set_reuse_port(true)?;
            }
            socket.bind(&SockAddr::from(*tcp))?;
            socket
        }
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket.bind(&SockAddr::unix(path)?)?;
            socket
        }
    };
    if listen {
        socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    }
    Ok(socket.into())
}

/// The address `fd` is bound to (to learn the port the kernel chose for `:0`).
pub fn local_addr(fd: &OwnedFd) -> std::io::Result<ListenAddr> {
    let socket = Socket::from(fd.try_clone()?);
    let addr = socket.local_addr()?;
    match (addr.as_socket(), addr.as_pathname()) {
        (Some(tcp), _) => Ok(ListenAddr::Tcp(tcp)),
        (None, Some(path)) => Ok(ListenAddr::Unix(path.to_path_buf())),
        (None, None) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a TCP or named Unix socket",
        )),
    }
}

/// Makes way for a Unix socket at `path`: removes a socket file nobody
/// listens on (left by a process that died), refuses a live one or a file
/// that is not a socket.
pub fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !metadata.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not touching it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{} is in use by a live process", path.display()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!("removing stale socket {}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            "127.0.0.1:8080".parse::<ListenAddr>(),
            Ok(ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap()))
        );
        assert!(matches!("[::1]:80".parse(), Ok(ListenAddr::Tcp(a)) if a.is_ipv6()));
        assert_eq!(
            "unix:/run/x.sock".parse::<ListenAddr>(),
            Ok(ListenAddr::Unix("/run/x.sock".into()))
        );
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert!("localhost".parse::<ListenAddr>().is_err());
        assert_eq!(
            "[::1]:80".parse::<ListenAddr>().unwrap().to_string(),
            "[::1]:80"
        );
    }

    #[test]
    fn reuseport_sockets_share_a_port() {
        let any: ListenAddr = "127.0.0.1:0".parse().unwrap();
        let anchor = bind(&any, 16, true, false).unwrap();
        let addr = local_addr(&anchor).unwrap();
        let a = bind(&addr, 16, true, true).unwrap();
        let b = bind(&addr, 16, true, true).unwrap();
        assert_eq!(local_addr(&a).unwrap(), addr);
        assert_eq!(local_addr(&b).unwrap(), addr);
        // Without SO_REUSEPORT the port is taken.
        assert!(bind(&addr, 16, false, true).is_err());
        assert!(arbor_protocol::is_cloexec(std::os::fd::AsFd::as_fd(&a)).unwrap());
    }
}
