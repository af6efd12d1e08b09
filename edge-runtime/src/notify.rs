//! systemd service notifications (`sd_notify`), without libsystemd: a datagram to the socket
//! named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). `edge-seg run` under
//! a `Type=notify` unit with `WatchdogSec=` (the units `edge-seg image` writes) says `READY=1`
//! when the first frame reaches the outputs and `WATCHDOG=1` while frames keep flowing, so
//! systemd restarts a pipeline that stalls. Outside systemd (no `NOTIFY_SOCKET`) it does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Where the notifications go.
enum Target {
    Path(std::path::PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(std::os::unix::net::SocketAddr),
}

/// Sends `READY=1`, `WATCHDOG=1`, `STATUS=…` and `STOPPING=1` to systemd.
pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
    /// `WatchdogSec=` as systemd passed it (`WATCHDOG_USEC`); pings go out at half of it.
    watchdog: Option<Duration>,
    ready: bool,
    last_ping: Option<Instant>,
    warned: bool,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self {
            socket: None,
            watchdog: None,
            ready: false,
            last_ping: None,
            warned: false,
        }
    }

    /// From the environment systemd sets: `NOTIFY_SOCKET`, and `WATCHDOG_USEC` (honoured when
    /// `WATCHDOG_PID` is unset or this process). Disabled when `NOTIFY_SOCKET` is unset or the
    /// socket cannot be created (with a warning).
    pub fn from_env() -> Self {
        let Some(addr) = std::env::var_os("NOTIFY_SOCKET").filter(|a| !a.is_empty()) else {
            return Self::disabled();
        };
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && pid_ok)
            .map(Duration::from_micros);
        match Self::new(&addr.to_string_lossy(), watchdog) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={}: {e}; not notifying systemd", addr.to_string_lossy());
                Self::disabled()
            }
        }
    }

    /// A notifier for the socket `addr` (a path, or `@name` for the abstract namespace) with
    /// the watchdog period `watchdog`.
    pub fn new(addr: &str, watchdog: Option<Duration>) -> std::io::Result<Self> {
        let target = match addr.strip_prefix('@') {
            #[cfg(target_os = "linux")]
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                Target::Abstract(std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?)
            }
            #[cfg(not(target_os = "linux"))]
            Some(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "abstract sockets need Linux",
                ))
            }
            None => Target::Path(addr.into()),
        };
        Ok(Self {
            socket: Some((UnixDatagram::unbound()?, target)),
            watchdog,
            ready: false,
            last_ping: None,
            warned: false,
        })
    }

    /// Whether notifications go anywhere.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one notification (newline-separated `KEY=VALUE` lines).
    pub fn send(&self, msg: &str) -> std::io::Result<()> {
        let Some((sock, target)) = &self.socket else {
            return Ok(());
        };
        match target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p)?,
            #[cfg(target_os = "linux")]
            Target::Abstract(a) => sock.send_to_addr(msg.as_bytes(), a)?,
        };
        Ok(())
    }

    /// A frame reached the outputs: `READY=1` the first time, then `WATCHDOG=1` at most every
    /// half watchdog period (none without a watchdog), each with a `STATUS=` line.
    pub fn frame(&mut self, frames_out: u64, fps: f64) {
        if self.socket.is_none() {
            return;
        }
        let now = Instant::now();
        let msg = if !self.ready {
            self.ready = true;
            self.last_ping = Some(now);
            "READY=1\nSTATUS=segmenting: first frame out".to_string()
        } else {
            let Some(period) = self.watchdog else { return };
            if self.last_ping.is_some_and(|t| now.duration_since(t) < period / 2) {
                return;
            }
            self.last_ping = Some(now);
            format!("WATCHDOG=1\nSTATUS=segmenting: {frames_out} frames out, {fps:.1} FPS")
        };
        self.report(self.send(&msg));
    }

    /// The run is ending: `STOPPING=1`.
    pub fn stopping(&mut self) {
        if self.socket.is_some() {
            let r = self.send("STOPPING=1\nSTATUS=stopping");
            self.report(r);
        }
    }

    fn report(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r {
            if !self.warned {
                self.warned = true;
                tracing::warn!("cannot notify systemd: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv_all(sock: &UnixDatagram) -> Vec<String> {
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        let mut msgs = Vec::new();
        while let Ok(n) = sock.recv(&mut buf) {
            msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        msgs
    }

    #[test]
    fn ready_once_then_watchdog_pings_at_half_the_period() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut n = Notifier::new(path.to_str().unwrap(), Some(Duration::from_millis(200))).unwrap();
        assert!(n.is_active());
        n.frame(1, 0.0);
        n.frame(2, 10.0); // too soon for a ping
        std::thread::sleep(Duration::from_millis(120));
        n.frame(3, 10.0);
        n.stopping();
        let msgs = recv_all(&server);
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("READY=1\n"), "{msgs:?}");
        assert!(
            msgs[1].starts_with("WATCHDOG=1\nSTATUS=segmenting: 3 frames out"),
            "{msgs:?}"
        );
        assert!(msgs[2].starts_with("STOPPING=1"), "{msgs:?}");
    }

    #[test]
    fn without_a_watchdog_only_ready_goes_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut n = Notifier::new(path.to_str().unwrap(), None).unwrap();
        for i in 1..=5 {
            n.frame(i, 1.0);
        }
        assert_eq!(recv_all(&server), ["READY=1\nSTATUS=segmenting: first frame out"]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_names_work() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("edge-seg-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let mut n = Notifier::new(&format!("@{name}"), None).unwrap();
        n.frame(1, 0.0);
        assert_eq!(recv_all(&server).len(), 1);
    }

    #[test]
    fn disabled_and_unreachable_notifiers_do_not_fail() {
        let mut n = Notifier::disabled();
        assert!(!n.is_active());
        n.frame(1, 0.0);
        n.stopping();
        // a socket path nobody listens on: warned once, never an error for the run
        let mut n = Notifier::new("/nonexistent/edge-seg/notify", Some(Duration::from_millis(1))).unwrap();
        n.frame(1, 0.0);
        n.frame(2, 0.0);
        assert!(n.warned);
    }
}
