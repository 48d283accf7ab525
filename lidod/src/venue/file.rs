//! Files that a broker's state must survive a crash in: the paper venue's
//! state, Kraken's nonce, Schwab's tokens and order map.
//!
//! [`replace`] writes the new contents to a temporary file beside the old
//! one, syncs it, renames it over the old one and syncs the folder, so after
//! a crash at any point the file holds either the old or the new contents,
//! never part of either, and a completed call is on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Who may read a file [`replace`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The process's usual permissions (its umask).
    Default,
    /// Owner read and write only (0600), for secrets such as tokens.
    OwnerOnly,
}

/// Atomically replaces `path` with `contents` (see the module docs),
/// creating its folder if needed.
pub fn replace(path: &Path, contents: &[u8], access: Access) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = temporary(path);
    let written = write_synced(&tmp, contents, access).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable only once the folder's entry is.
    File::open(dir)?.sync_all()
}

/// `NAME.tmp-PID` beside `path`: two processes never share one.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(name)
}

fn write_synced(path: &Path, contents: &[u8], access: Access) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if access == Access::OwnerOnly {
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    if access == Access::OwnerOnly {
        // `mode` applies only when the file is created; make sure either way.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("lido-file-test-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn replaces_contents_and_leaves_no_temporary_file() {
        let dir = temp_dir();
        let path = dir.join("sub").join("state.json");
        replace(&path, b"one", Access::Default).unwrap();
        replace(&path, b"two", Access::Default).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["state.json"], "only the file itself remains");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn owner_only_files_are_0600_even_when_they_existed() {
        let dir = temp_dir();
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.json");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        replace(&path, b"secret", Access::OwnerOnly).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = temp_dir();
        let path = dir.join("state.json");
        replace(&path, b"old", Access::Default).unwrap();
        // A folder where the temporary file would go makes the write fail.
        fs::create_dir_all(temporary(&path)).unwrap();
        assert!(replace(&path, b"new", Access::Default).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        fs::remove_dir_all(&dir).unwrap();
    }
}
