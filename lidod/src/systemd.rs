//! systemd integration (`Type=notify`): `READY=1` once lidod really serves,
//! `STOPPING=1` when it starts to shut down, and the watchdog ping when the
//! unit sets `WatchdogSec=`. Outside systemd (`NOTIFY_SOCKET` unset) every
//! call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Tells systemd the process is ready, with a one-line status for
/// `systemctl status`, and starts the watchdog ping if systemd asks for one.
pub fn ready(status: &str, stop: CancellationToken) {
    send(&[NotifyState::Ready, NotifyState::Status(status)], "READY=1");
    spawn_watchdog(stop);
}

/// Tells systemd an orderly shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")], "STOPPING=1");
}

fn send(state: &[NotifyState], what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(state) {
        Ok(()) => debug!(what, "told systemd"),
        Err(error) => {
            warn!(what, %error, "cannot notify systemd (NOTIFY_SOCKET is set); with Type=notify the unit will time out: check the unit's NotifyAccess")
        }
    }
}

/// With `WatchdogSec=` set (`WATCHDOG_USEC` for this pid), pings systemd at
/// half that period from a task on lidod's runtime, so a runtime that no
/// longer runs tasks gets the process restarted.
fn spawn_watchdog(stop: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = watchdog_interval(period);
    info!(watchdog_ms = period.as_millis() as u64, ping_ms = every.as_millis() as u64, "systemd watchdog on");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(error) = sd_notify::notify(&[NotifyState::Watchdog]) {
                warn!(%error, "cannot ping the systemd watchdog");
            }
        }
    });
}

/// Half the watchdog period, at least 10 ms.
fn watchdog_interval(period: Duration) -> Duration {
    (period / 2).max(Duration::from_millis(10))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_its_period() {
        assert_eq!(watchdog_interval(Duration::from_secs(30)), Duration::from_secs(15));
        assert_eq!(watchdog_interval(Duration::from_millis(5)), Duration::from_millis(10));
    }

    /// The datagrams reach a socket named by NOTIFY_SOCKET, as systemd's
    /// does. One test sets the variable, so no other test races on it.
    #[tokio::test]
    async fn ready_and_stopping_reach_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("lidod-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

        // functions, called from this test alone.
        std::env::set_var("NOTIFY_SOCKET", &path);
        let stop = CancellationToken::new();
        ready("serving http://127.0.0.1:7700", stop.clone());
        stopping();
        std::env::remove_var("NOTIFY_SOCKET");
        stop.cancel();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(first.contains("READY=1") && first.contains("STATUS=serving http://127.0.0.1:7700"), "{first}");
        let n = socket.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
