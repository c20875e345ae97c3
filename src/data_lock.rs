//! One server per data directory. Two servers on one directory would share
//! a key and, on SQLite, a database each believes it alone writes: the
//! second is refused at once with the first one's PID.
//!
//! The lock is an advisory `flock` on a file in the directory, held for the
//! life of the process: the kernel releases it when the process ends, even
//! after `kill -9`, so a stale lock file never blocks a restart. The file
//! holds the PID of the holder, for the error message and for operators.
//!
//! An SQLite database is locked the same way, by `<file>.lock` beside it
//! ([`DatabaseLock`]): one outside the data directory is otherwise
//! guarded by no server's lock, and `migrate` would copy it while it runs.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::private_files;

/// File name of the lock inside the data directory.
pub const LOCK_FILE: &str = "carrier-server.lock";

/// Held while a server (or an offline admin command) uses a data directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Why the data directory (or a database) could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another carrier-server (PID {pid}) is using the data directory {dir}; stop it first, or give this one its own --data-dir"
    )]
    Held { dir: PathBuf, pid: String },
    #[error(
        "another carrier-server (PID {pid}) is using the database {db}; stop it first, or give this one its own database"
    )]
    DatabaseHeld { db: PathBuf, pid: String },
    #[error(
        "cannot open {path}: permission denied; run this as the user that owns the data directory (the one the server runs as), or as root"
    )]
    NotYours { path: PathBuf },
    #[error(
        "the database {db} would be in {dir}, which does not exist; create that directory (owned by the user the server runs as), or choose another database path"
    )]
    NoDirectory { db: PathBuf, dir: PathBuf },
    #[error(
        "{path} is not a plain file of its own (a symbolic or hard link, a directory or a FIFO); remove it and try again"
    )]
    NotPlain { path: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DataDirLock {
    /// Takes the lock on `dir`, waiting no more than about 100 ms for a
    /// momentary probe to let go of it (see [`lock_past_probes`]), and
    /// writes this process's PID into it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let held = |pid| LockError::Held {
            dir: dir.to_owned(),
            pid,
        };
        Ok(Self {
            _file: acquire(&dir.join(LOCK_FILE), held)?,
        })
    }

    /// Whether a process holds the lock on `dir` now (without taking it).
    pub fn is_held(dir: &Path) -> bool {
        Self::check_free(dir).is_err()
    }

    /// Refuses as [`DataDirLock::acquire`] would if a process holds the
    /// lock on `dir` now, but takes no lock and creates nothing. A start
    /// that cannot bind a port asks before it reports that: a server
    /// holding the directory is then the cause to name.
    pub fn check_free(dir: &Path) -> Result<(), LockError> {
        check_free(&dir.join(LOCK_FILE), |pid| LockError::Held {
            dir: dir.to_owned(),
            pid,
        })
    }
}

/// Held while a server (or `migrate`, or an offline admin command) uses an
/// SQLite database, wherever it lies: the same kind of lock as the data
/// directory's, on `<database file>.lock` beside it. A database outside
/// the data directory is then still one server's, and two databases in
/// one directory are locked apart. The database file itself is never
/// locked: opening and closing it here would drop SQLite's own locks.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
}

impl DatabaseLock {
    /// Takes the lock on the SQLite database at `db` (see
    /// [`DataDirLock::acquire`]).
    pub fn acquire(db: &Path) -> Result<Self, LockError> {
        let held = |pid| LockError::DatabaseHeld {
            db: db.to_owned(),
            pid,
        };
        let file = Self::file(db);
        let dir = private_files::directory_of(&file);
        if !dir.is_dir() {
            return Err(LockError::NoDirectory {
                db: db.to_owned(),
                dir: dir.to_owned(),
            });
        }
        Ok(Self {
            _file: acquire(&file, held)?,
        })
    }

    /// Refuses as [`DatabaseLock::acquire`] would if a process holds the
    /// lock on `db` now, taking none (see [`DataDirLock::check_free`]).
    pub fn check_free(db: &Path) -> Result<(), LockError> {
        check_free(&Self::file(db), |pid| LockError::DatabaseHeld {
            db: db.to_owned(),
            pid,
        })
    }

    /// The lock file of the database at `db`: the name of the file SQLite
    /// opens with `.lock` added. SQLite follows a symbolic link to the
    /// database and drops a URL's `?query`, so the lock does too: two
    /// spellings of one database must meet at one lock.
    pub fn file(db: &Path) -> PathBuf {
        let mut name = resolved(&without_query(db)).into_os_string();
        name.push(".lock");
        PathBuf::from(name)
    }
}

/// The file an SQLite database path names: without a URL's `?query`.
pub fn without_query(db: &Path) -> PathBuf {
    match db.to_string_lossy().split_once('?') {
        Some((path, _query)) => PathBuf::from(path),
        None => db.to_owned(),
    }
}

/// `db` with symbolic links resolved: the file itself when it exists, else
/// its directory (a database not created yet).
fn resolved(db: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(db) {
        return real;
    }
    let dir = private_files::directory_of(db);
    match (std::fs::canonicalize(dir), db.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => db.to_owned(),
    }
}

/// Takes the lock file at `path` and writes this process's PID into it;
/// `held` is the refusal when another process holds it.
fn acquire(path: &Path, held: impl FnOnce(String) -> LockError) -> Result<File, LockError> {
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::PermissionDenied => LockError::NotYours {
            path: path.to_owned(),
        },
        // What opening without following a link says of a link.
        _ if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            LockError::NotPlain {
                path: path.to_owned(),
            }
        }
        _ => LockError::Io {
            path: path.to_owned(),
            source,
        },
    };
    // Never through a symbolic link: whoever owns the directory could
    // otherwise have root (running an offline admin command) create, and
    // then hand over, a file anywhere.
    let no_follow = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(no_follow)
        .open(path)
        .map_err(io)?;
    // Nor through a hard link, which would have root write a PID into
    // (and hand over) another file.
    let meta = file.metadata().map_err(io)?;
    if !private_files::is_plain(&meta) {
        return Err(LockError::NotPlain {
            path: path.to_owned(),
        });
    }
    // One made by root (an offline admin command, as OPERATING advises
    // under systemd's dynamic user) would otherwise shut the server's own
    // user out of it.
    private_files::give_to_directory_owner(&file, path);
    match lock_past_probes(&file) {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(held(holder(&mut file))),
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

/// `held`'s refusal if a process holds the lock file at `path` now.
fn check_free(path: &Path, held: impl FnOnce(String) -> LockError) -> Result<(), LockError> {
    let Ok(mut file) = File::open(path) else {
        return Ok(());
    };
    match file.try_lock_shared() {
        Err(TryLockError::WouldBlock) => Err(held(holder(&mut file))),
        _ => Ok(()),
    }
}

/// Attempts at the exclusive lock before it is refused as held.
const ATTEMPTS: u32 = 10;
/// The pause between two attempts: [`ATTEMPTS`] span about 100 ms.
const PAUSE: Duration = Duration::from_millis(10);

/// Takes the exclusive lock on `file`, trying again for a moment while it
/// is held. [`DataDirLock::check_free`], asked by a start that found a
/// port taken, holds a shared lock for an instant; a start that met it
/// must not be refused as if a server held the directory, naming a PID
/// that may have exited long ago. A running server holds the lock for its
/// lifetime, so waiting ~100 ms before refusing only delays its answer.
fn lock_past_probes(file: &File) -> Result<(), TryLockError> {
    for _ in 1..ATTEMPTS {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) => std::thread::sleep(PAUSE),
            done => return done,
        }
    }
    file.try_lock()
}

/// The PID the holder wrote, or "unknown" while it has not yet.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim() {
        "" => "unknown".into(),
        pid => pid.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        assert!(DataDirLock::is_held(dir.path()));
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        let told = DataDirLock::check_free(dir.path()).unwrap_err().to_string();
        assert_eq!(told, err, "told without taking it, the same refusal");
        drop(first);
        assert!(!DataDirLock::is_held(dir.path()));
        DataDirLock::acquire(dir.path()).expect("free again once dropped");
    }

    #[test]
    fn a_database_is_locked_apart_from_its_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("carrier.db");
        let first = DatabaseLock::acquire(&db).unwrap();
        let err = DatabaseLock::acquire(&db).unwrap_err().to_string();
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains(&db.display().to_string()), "{err}");
        assert!(DatabaseLock::check_free(&db).is_err());
        assert!(!db.exists(), "the database file itself is not touched");
        DatabaseLock::acquire(&dir.path().join("other.db")).expect("another file, another lock");
        assert!(!DataDirLock::is_held(dir.path()), "nor is the directory");
        drop(first);
        DatabaseLock::acquire(&db).expect("free again once dropped");
    }

    /// A lock file belongs to whoever owns its directory, also when root
    /// made it (as root, the directory is first given to `nobody`).
    #[test]
    fn a_lock_file_belongs_to_its_directorys_owner() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let _ = std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534));
        let _data = DataDirLock::acquire(dir.path()).unwrap();
        let _db = DatabaseLock::acquire(&dir.path().join("carrier.db")).unwrap();
        let owner = std::fs::metadata(dir.path()).unwrap();
        for file in [LOCK_FILE, "carrier.db.lock"] {
            let meta = std::fs::metadata(dir.path().join(file)).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (owner.uid(), owner.gid()),
                "{file}"
            );
        }
    }

    #[test]
    fn a_database_in_a_missing_directory_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not-made");
        let err = DatabaseLock::acquire(&missing.join("carrier.db")).unwrap_err();
        assert!(matches!(err, LockError::NoDirectory { .. }), "{err:?}");
        let told = err.to_string();
        assert!(
            told.contains(&format!("in {}, which does not exist", missing.display())),
            "{told}"
        );
        assert!(!missing.exists(), "nothing is created");
    }

    /// A lock file planted as a symbolic link is refused, and what it
    /// points to neither made nor given away.
    #[test]
    fn a_lock_file_that_is_a_symbolic_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(LOCK_FILE)).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, LockError::NotPlain { .. }), "{err:?}");
        assert!(!elsewhere.exists(), "made through the link");
    }

    /// A lock file that is a hard link to another file is refused before
    /// anything is written to it.
    #[test]
    fn a_lock_file_that_is_a_hard_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "important").unwrap();
        std::fs::hard_link(&elsewhere, dir.path().join(LOCK_FILE)).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, LockError::NotPlain { .. }), "{err:?}");
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "important");
    }

    /// A link to the database, or its URL's query, is the same database.
    #[test]
    fn spellings_of_one_database_meet_at_one_lock() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("data").join("carrier.db");
        std::fs::create_dir(real.parent().unwrap()).unwrap();
        std::fs::write(&real, b"").unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let _held = DatabaseLock::acquire(&link).unwrap();
        assert!(DatabaseLock::acquire(&real).is_err(), "through the link");
        let query = PathBuf::from(format!("{}?mode=rwc", real.display()));
        assert!(DatabaseLock::acquire(&query).is_err(), "with a query");
        assert!(!dir.path().join("link.db.lock").exists());
    }

    #[test]
    fn a_lock_held_for_a_moment_does_not_refuse_a_start() {
        let dir = tempfile::tempdir().unwrap();
        drop(DataDirLock::acquire(dir.path()).unwrap());
        let probe = File::open(dir.path().join(LOCK_FILE)).unwrap();
        probe
            .try_lock_shared()
            .expect("a shared lock, as a probe takes");
        let (starting, told) = std::sync::mpsc::channel();
        let prober = std::thread::spawn(move || {
            told.recv().unwrap();
            // Held past `acquire`'s first try, so only its retries take it;
            // let go well inside the time they last.
            std::thread::sleep(2 * PAUSE);
            drop(probe);
        });
        starting.send(()).unwrap();
        DataDirLock::acquire(dir.path()).expect("taken once the probe lets go");
        prober.join().unwrap();
    }
}
