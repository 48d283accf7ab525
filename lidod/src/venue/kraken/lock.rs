//! An exclusive, cross-process lock on a file (`flock`, through std's
//! `File::lock`): what lets the node's broker processes on one API key take
//! nonces in turn (see [`super::sign::NonceSource`]). The kernel releases
//! it when the holder exits, even by a crash.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::time::Duration;

/// How often a waiting process retries a held lock.
const LOCK_POLL: Duration = Duration::from_millis(2);

/// An exclusive lock on a file, held until dropped.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock on `path` (created with its folder if absent),
    /// waiting up to `within` for another holder to let go.
    pub async fn acquire(path: &Path, within: Duration) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{} stayed locked by another broker for {within:?}", path.display()),
                    ))
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lock_is_exclusive_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/nonce.lock");
        let first = FileLock::acquire(&path, Duration::from_secs(1)).await.unwrap();
        let err = FileLock::acquire(&path, Duration::from_millis(20)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(first);
        FileLock::acquire(&path, Duration::from_millis(20)).await.unwrap();
    }
}
