//! `admin backup FILE`: an online, consistent copy of the database
//! (SQLite) and the key files beside it; on PostgreSQL, the keys and what
//! to run for the database. A backup that fails part-way removes what it
//! wrote, so nothing left behind looks like a backup, and it never writes
//! over (or removes) a file it did not create.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
    create_private(file)?;
    made.add(file);
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

/// The files this backup created, removed when it is dropped before
/// [`Made::keep`]: on every early return of [`backup`].
#[derive(Default)]
struct Made(Vec<PathBuf>);

impl Made {
    /// Notes `path`, which this backup has just created.
    fn add(&mut self, path: &Path) {
        self.0.push(path.to_owned());
    }

    fn remove(&mut self, path: &Path) {
        let _ = std::fs::remove_file(path);
        self.0.retain(|p| p != path);
    }

    /// The backup is whole: its files stay.
    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
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
    made.add(to);
    written.map_err(|e| AdminError::Io(format!("cannot write {}: {e}", to.display())))
}
