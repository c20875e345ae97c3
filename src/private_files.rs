//! Files and directories only their owner may read: the server's key and
//! database, a user's key, history and account. Directories are created
//! 0700 and files 0600 from the start, never loosened afterwards.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` (and missing parents) with mode 0700; an existing
/// directory is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates an empty file with mode 0600 unless it exists, so a program that
/// opens it afterwards (SQLite) never makes it readable by others.
pub fn create_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map(drop),
    }
}

/// Someone else's file where only ours belongs: its owner can change its
/// mode or contents behind our back.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} belongs to user id {owner}, but this process runs as user id {me}; \
     make it ours (chown) or remove it"
)]
pub struct ForeignOwner {
    pub path: PathBuf,
    pub owner: u32,
    pub me: u32,
}

/// Checks that `path`, if it exists, is owned by the user this process
/// runs as (its effective user id).
pub fn check_owner(path: &Path) -> io::Result<Result<(), ForeignOwner>> {
    use std::os::unix::fs::MetadataExt;
    let owner = match fs::symlink_metadata(path) {
        Ok(meta) => meta.uid(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(())),
        Err(e) => return Err(e),
    };
    let me = rustix::process::geteuid().as_raw();
    if owner == me {
        return Ok(Ok(()));
    }
    Ok(Err(ForeignOwner {
        path: path.to_owned(),
        owner,
        me,
    }))
}

/// Replaces `path` with `contents` atomically and durably: written to a new
/// 0600 file beside it, synced, renamed over it, and the rename synced.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path)?;
    let written = write_new(&tmp, contents).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_parent(path)
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    use rand::TryRng;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut suffix = [0u8; 8];
    rand::rngs::SysRng
        .try_fill_bytes(&mut suffix)
        .map_err(io::Error::other)?;
    let mut tmp_name = name.to_owned();
    tmp_name.push(format!(".tmp-{}", hex::encode(suffix)));
    Ok(path.with_file_name(tmp_name))
}

fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes a rename in the file's directory durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// The directory `path` is in (`.` for a bare file name).
pub fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Whether a file is one plain file: not a directory, device or FIFO, and
/// not a hard link to a file elsewhere. Root writes only to such a file in
/// a directory another user owns, who could otherwise point it anywhere.
pub fn is_plain(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.file_type().is_file() && meta.nlink() == 1
}

/// Whether this process runs as root and `dir` belongs to another user, or
/// others may write in it: the case where a file planted there could turn
/// root's writes against another file, and where a file root makes could
/// shut the directory's owner out.
pub fn root_in_another_users(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    rustix::process::geteuid().is_root()
        && fs::metadata(dir).is_ok_and(|m| m.uid() != 0 || m.mode() & 0o022 != 0)
}

/// Gives `file`, open at `path`, to whoever owns its directory: root making
/// a file in the server's directory must not shut the server's user out.
/// The open file is given, not whatever the path names by then. Anyone but
/// root cannot give a file away, and needs not: the attempt's failure is
/// ignored.
pub fn give_to_directory_owner(file: &File, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = fs::metadata(directory_of(path)) {
        let _ = std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()));
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_file_of_another_user_is_foreign() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("key");
        assert!(
            check_owner(&file).unwrap().is_ok(),
            "a missing file is fine"
        );
        create_file(&file).unwrap();
        assert!(check_owner(&file).unwrap().is_ok(), "our own file is fine");
        let stranger = rustix::process::geteuid().as_raw() ^ 0x5a5a;
        match std::os::unix::fs::chown(&file, Some(stranger), None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return eprintln!("skipped: giving a file away needs root ({e})");
            }
            Err(e) => panic!("chown: {e}"),
        }
        let foreign = check_owner(&file).unwrap().unwrap_err();
        assert_eq!(foreign.owner, stranger);
        assert!(foreign.to_string().contains("chown"), "{foreign}");
    }

    #[test]
    fn everything_is_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("db");
        create_file(&file).unwrap();
        create_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        write_atomic(&file, b"hello").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"hello");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
