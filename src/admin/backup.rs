//! `admin backup FILE`: an online, consistent copy of the database
//! (SQLite) and the key files beside it; on PostgreSQL, the keys and what
//! to run for the database. A backup that fails part-way removes what it
//! wrote, so nothing left behind looks like a backup, and it never writes
//! over (or removes) a file it did not create.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::AdminError;
use super::execute::Context;

/// Copies the database to `file` and the keys to `file.KEYNAME`; returns
/// the sentence saying where.
pub(super) async fn backup(cx: &Context, file: &Path) -> Result<String, AdminError> {
    let mut made = Made::default();
    // Created empty and 0600 first (SQLite fills an empty file), so the
    // copy is never readable by others, and an existing file is refused
    // by the same call that would create it.
    let created = create_private(file)?;
    made.add(file, created);
    let copied = cx.store.backup_into(file).await?;
    if !copied {
        made.remove(file);
    }
    let mut keys = Vec::new();
    for name in [
        crate::crypto::SERVER_KEY_FILE,
        crate::auth::code_key::CODE_KEY_FILE,
    ] {
        let to = PathBuf::from(format!("{}.{name}", file.display()));
        copy_private(&cx.data_dir.join(name), &to, &mut made)?;
        keys.push(to.display().to_string());
    }
    made.keep();
    let keys = keys.join(" and ");
    Ok(if copied {
        format!(
            "Backed up the database to {} and the keys to {keys}",
            file.display()
        )
    } else {
        format!(
            "Copied the keys to {keys}. The database is PostgreSQL: back it up with \
             pg_dump --format=custom (see docs/OPERATING.md)"
        )
    })
}

/// The files this backup created, each with its open handle, removed
/// when it is dropped before [`Made::keep`]: on every early return of
/// [`backup`].
#[derive(Default)]
struct Made(Vec<(PathBuf, File)>);

impl Made {
    /// Notes `path`, which this backup has just created as `file`.
    fn add(&mut self, path: &Path, file: File) {
        self.0.push((path.to_owned(), file));
    }

    fn remove(&mut self, path: &Path) {
        self.0.retain(|(p, file)| {
            if p == path {
                remove_if_same(p, file);
            }
            p != path
        });
    }

    /// The backup is whole: its files stay.
    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for (path, file) in &self.0 {
            remove_if_same(path, file);
        }
    }
}

/// Removes `path` only while it still names `file`: in a directory others
/// may write to, another file could have been put at that path since.
fn remove_if_same(path: &Path, file: &File) {
    let (Ok(there), Ok(ours)) = (std::fs::symlink_metadata(path), file.metadata()) else {
        return;
    };
    if (there.dev(), there.ino()) == (ours.dev(), ours.ino()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Creates `path`, 0600, refusing a file that exists.
fn create_private(path: &Path) -> Result<File, AdminError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => AdminError::Refused(format!(
                "{} exists already; choose a new file",
                path.display()
            )),
            _ => AdminError::Io(format!("cannot create {}: {e}", path.display())),
        })
}

/// Copies the key file `from` to a new 0600 file `to`, noted in `made`
/// once created.
fn copy_private(from: &Path, to: &Path, made: &mut Made) -> Result<(), AdminError> {
    let bytes = std::fs::read(from)
        .map_err(|e| AdminError::Io(format!("cannot read {}: {e}", from.display())))?;
    let mut file = create_private(to)?;
    let written = file.write_all(&bytes).and_then(|()| file.sync_all());
    made.add(to, file);
    written.map_err(|e| AdminError::Io(format!("cannot write {}: {e}", to.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed backup removes the files it created, but not a file put at
    /// one of their paths since: that one is someone else's.
    #[test]
    fn cleanup_leaves_a_file_swapped_in_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("backup");
        let swapped = dir.path().join("backup.server.key");
        let mut made = Made::default();
        made.add(&ours, create_private(&ours).unwrap());
        made.add(&swapped, create_private(&swapped).unwrap());
        std::fs::remove_file(&swapped).unwrap();
        std::fs::write(&swapped, "someone else's").unwrap();
        drop(made);
        assert!(!ours.exists(), "the backup's own file is removed");
        let left = std::fs::read_to_string(&swapped).unwrap();
        assert_eq!(left, "someone else's");
    }
}
