//! The milter socket: TCP with TCP_NODELAY, or a UNIX socket with its mode and group, cleaned up
//! at start and exit; accept errors are survived instead of ending the daemon.

use crate::config::{Listen, MilterConfig};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Pause after a failed accept (EMFILE and the like), so that the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

enum Inner {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A bound milter socket.
pub struct MilterListener {
    inner: Inner,
    /// The UNIX socket we created, with its device and inode, removed at drop if still ours.
    unix_path: Option<(PathBuf, u64, u64)>,
}

impl MilterListener {
    /// Binds the configured socket.
    pub async fn bind(cfg: &MilterConfig) -> io::Result<MilterListener> {
        match &cfg.listen {
            Listen::Inet { host, port } => {
                let l = TcpListener::bind((host.as_str(), *port)).await?;
                Ok(MilterListener { inner: Inner::Tcp(l), unix_path: None })
            }
            Listen::Unix(path) => bind_unix(path, cfg.socket_mode, cfg.socket_group.as_deref()).await,
        }
    }

    /// Wraps an already bound TCP listener (tests bind port 0 first).
    pub fn from_tcp(l: TcpListener) -> MilterListener {
        MilterListener { inner: Inner::Tcp(l), unix_path: None }
    }

    /// The bound address, for logs.
    pub fn local_addr(&self) -> String {
        match &self.inner {
            Inner::Tcp(l) => l.local_addr().map_or_else(|e| e.to_string(), |a| format!("inet:{a}")),
            Inner::Unix(_) => {
                self.unix_path.as_ref().map_or_else(String::new, |(p, ..)| format!("unix:{}", p.display()))
            }
        }
    }
}

async fn bind_unix(path: &Path, mode: u32, group: Option<&str>) -> io::Result<MilterListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; not removing it", path.display()),
            ));
        }
        // A socket that still answers belongs to a running daemon: do not steal it.
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another running process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(group) = group {
        let gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => nix::unistd::Group::from_name(group)
                .map_err(io::Error::from)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no group named {group:?}")))?
                .gid
                .as_raw(),
        };
        // bind() gave the socket our effective group: chown only to another one (which the
        // systemd unit's system-call filter denies; there, Postfix joins our group instead).
        if std::fs::metadata(path)?.gid() != gid {
            std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot give {} to group {group}: {e}; leave socket_group empty (the socket gets \
                         the daemon's group) or make the daemon a member of {group}",
                        path.display()
                    ),
                )
            })?;
        }
    }
    let meta = std::fs::metadata(path)?;
    Ok(MilterListener {
        inner: Inner::Unix(l),
        unix_path: Some((path.to_path_buf(), meta.dev(), meta.ino())),
    })
}

impl Drop for MilterListener {
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = &self.unix_path
            && std::fs::metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino)
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An accepted connection.
pub enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl MilterListener {
    /// The next connection. A failed accept (a full file table, a connection aborted before it
    /// was taken) must not stop the daemon: it is logged, and the next one is awaited.
    pub async fn accept(&mut self) -> Accepted {
        loop {
            let accepted = match &self.inner {
                Inner::Tcp(l) => l.accept().await.map(|(s, _)| {
                    // Without it, each message waits for a delayed ACK (40-88 ms on loopback).
                    if let Err(e) = s.set_nodelay(true) {
                        tracing::warn!("cannot set TCP_NODELAY on a milter connection: {e}");
                    }
                    Accepted::Tcp(s)
                }),
                Inner::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
            };
            match accepted {
                Ok(s) => return s,
                Err(e) => {
                    tracing::error!("accepting a milter connection failed: {e}; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn unix_cfg(path: &Path) -> MilterConfig {
        let mut c = Config::defaults(Path::new("/x.toml")).milter;
        c.listen = Listen::Unix(path.to_path_buf());
        c
    }

    #[tokio::test]
    async fn unix_socket_is_replaced_when_stale_and_removed_at_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        // A stale socket left by a crash: bound once, listener gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let l = MilterListener::bind(&unix_cfg(&path)).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // While it runs, a second daemon must not take the socket away.
        let err = MilterListener::bind(&unix_cfg(&path)).await.err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(l);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_regular_file_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, "data").unwrap();
        assert!(MilterListener::bind(&unix_cfg(&path)).await.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }

    #[tokio::test]
    async fn unknown_group_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = unix_cfg(&dir.path().join("m.sock"));
        cfg.socket_group = Some("no-such-group-here".into());
        assert!(MilterListener::bind(&cfg).await.is_err());
    }

    #[tokio::test]
    async fn tcp_connections_get_nodelay() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut ml = MilterListener::from_tcp(l);
        let _client = TcpStream::connect(addr).await.unwrap();
        match ml.accept().await {
            Accepted::Tcp(s) => assert!(s.nodelay().unwrap()),
            Accepted::Unix(_) => panic!("expected TCP"),
        }
    }
}
