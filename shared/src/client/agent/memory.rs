//! Pipes inside one process. A service run as a task inside its node
//! (`mode = "task"`) serves its pipe on an in-memory stream instead of a
//! loopback socket: DESIGN.md's "the same messages over an in-memory pipe".
//! It checks in with a `mem://<key>/pipe` URL, and the manager dials that
//! URL with [`connect`]. The WebSocket handshake, the cluster-secret check
//! and every frame are the same as on a socket; what goes is the kernel:
//! no loopback syscalls, and no wake-up of another process.
//!
//! A `mem://` URL means something only in the process that bound it: any
//! other process dials it in vain, as it would a closed port.

use std::collections::HashMap;
use std::io;
use std::sync::{LazyLock, Mutex, MutexGuard};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// The scheme of an in-memory pipe's URL.
pub const SCHEME: &str = "mem://";

/// Bytes in flight each way before a writer waits for its reader.
const BUFFER_BYTES: usize = 256 * 1024;

/// Dials not yet accepted, per listener.
const BACKLOG: usize = 8;

/// The bound listeners of this process, by key.
static LISTENERS: LazyLock<Mutex<HashMap<String, mpsc::Sender<DuplexStream>>>> = LazyLock::new(Default::default);

fn listeners() -> MutexGuard<'static, HashMap<String, mpsc::Sender<DuplexStream>>> {
    LISTENERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A pipe listener inside this process; unbound when dropped.
pub struct MemoryListener {
    key: String,
    dials: mpsc::Receiver<DuplexStream>,
    /// The sender this listener registered, to unbind only its own entry.
    own: mpsc::Sender<DuplexStream>,
}

impl MemoryListener {
    /// Binds `key` (unique in the process: callers put their instance in
    /// it); a stale listener of the same key is replaced.
    pub fn bind(key: &str) -> Self {
        let (own, dials) = mpsc::channel(BACKLOG);
        listeners().insert(key.to_string(), own.clone());
        Self { key: key.to_string(), dials, own }
    }

    /// The URL a manager dials.
    pub fn url(&self) -> String {
        format!("{SCHEME}{}/pipe", self.key)
    }

    /// The next dialled stream.
    pub async fn accept(&mut self) -> Option<DuplexStream> {
        self.dials.recv().await
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        let mut map = listeners();
        if map.get(&self.key).is_some_and(|tx| tx.same_channel(&self.own)) {
            map.remove(&self.key);
        }
    }
}

/// Whether `url` names an in-memory pipe.
pub fn is_memory_url(url: &str) -> bool {
    url.starts_with(SCHEME)
}

/// The URL the WebSocket handshake on a `mem://` stream names: the client
/// handshake takes `ws://` and `wss://` only, so it says `ws://` with the
/// same key and path.
pub fn handshake_url(url: &str) -> String {
    match url.strip_prefix(SCHEME) {
        Some(rest) => format!("ws://{rest}"),
        None => url.to_string(),
    }
}

/// Whether something in this process listens at the in-memory `url`.
pub fn is_bound(url: &str) -> bool {
    listeners().contains_key(key_of(url))
}

fn key_of(url: &str) -> &str {
    url.strip_prefix(SCHEME).and_then(|rest| rest.split('/').next()).unwrap_or_default()
}

/// Dials the in-memory pipe at `url`: the manager's end of a new stream
/// whose other end the listener accepts. Refused, as a closed port would
/// be, when nothing in this process listens there.
pub fn connect(url: &str) -> io::Result<DuplexStream> {
    let key = key_of(url);
    let refused = |why: &str| io::Error::new(io::ErrorKind::ConnectionRefused, format!("in-memory pipe {url}: {why}"));
    let listener = listeners().get(key).cloned().ok_or_else(|| {
        refused("nothing listens there in this process (the task stopped, or the service runs in another process)")
    })?;
    let (manager_end, service_end) = tokio::io::duplex(BUFFER_BYTES);
    listener.try_send(service_end).map_err(|_| refused("the service is not accepting"))?;
    Ok(manager_end)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_dial_reaches_the_listener_until_it_is_dropped() {
        let mut listener = MemoryListener::bind("memory-test-1");
        let url = listener.url();
        assert_eq!(url, "mem://memory-test-1/pipe");
        let mut manager = connect(&url).expect("dial a bound listener");
        let mut service = listener.accept().await.expect("the dial is accepted");
        manager.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        service.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        assert!(is_bound(&url));
        drop(listener);
        assert!(!is_bound(&url));
        let err = connect(&url).expect_err("a dropped listener refuses");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert!(err.to_string().contains("nothing listens there"), "{err}");
    }

    #[test]
    fn a_stale_listener_does_not_unbind_its_replacement() {
        let old = MemoryListener::bind("memory-test-2");
        let new = MemoryListener::bind("memory-test-2");
        drop(old);
        assert!(connect(&new.url()).is_ok(), "the replacement still listens");
        assert!(connect("mem://memory-test-unbound/pipe").is_err());
    }
}
