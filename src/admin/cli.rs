//! The `carrier-server admin …` command line: which request each command
//! is, how it reaches the server (its socket when it runs, its store under
//! the data-directory lock when it does not), and how answers print.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{AdminError, Context, LinkState, Reply, Request, execute, socket};
use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::data_lock::{DataDirLock, DatabaseLock, LockError, without_query};
use crate::db::{Location, Store};
use crate::private_files;

/// `carrier-server admin` and its flags.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Print lists as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Version, uptime, users, sessions, queue totals and each link.
    Status,
    /// Registered users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// One-time codes.
    #[command(subcommand)]
    Otp(OtpCommand),
    /// Recipients' queues.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Neighbours: link state, outbound depth and oldest message age.
    Links,
    /// Neighbour keys pinned on first contact.
    #[command(subcommand)]
    Pins(PinsCommand),
    /// An online, consistent copy of the database and the keys.
    Backup {
        /// The new backup file (the keys go beside it).
        file: PathBuf,
    },
    /// Checks a configuration file without starting; exit code 0 or 1.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Every registered user.
    List,
    /// One user: key, queue, sessions.
    Show { phone: String },
    /// Removes the user, their queue and pending codes, and withdraws their
    /// directory entry from the neighbourhood.
    Delete { phone: String },
    /// Refuses the user's logins (and closes their sessions).
    Disable { phone: String },
    /// Lets a disabled user log in again.
    Enable { phone: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum OtpCommand {
    /// Forgets a phone's pending code and code counters.
    Reset { phone: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// Messages and bytes waiting per recipient.
    Stats,
    /// Deletes every message waiting for a phone.
    Purge { phone: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum PinsCommand {
    /// Every pinned neighbour key.
    List,
    /// Forgets the key pinned for a neighbour address.
    Forget { address: String },
}

/// Runs an admin command and prints its answer; the error is one line.
pub async fn run(config: &ServerConfig, args: AdminArgs) -> Result<(), AdminError> {
    let request = match args.command {
        AdminCommand::CheckConfig { file } => return check_config(&file),
        AdminCommand::Status => Request::Status,
        AdminCommand::Users(UsersCommand::List) => Request::UsersList,
        AdminCommand::Users(UsersCommand::Show { phone }) => Request::UsersShow { phone },
        AdminCommand::Users(UsersCommand::Delete { phone }) => Request::UsersDelete { phone },
        AdminCommand::Users(UsersCommand::Disable { phone }) => Request::UsersDisable { phone },
        AdminCommand::Users(UsersCommand::Enable { phone }) => Request::UsersEnable { phone },
        AdminCommand::Otp(OtpCommand::Reset { phone }) => Request::OtpReset { phone },
        AdminCommand::Queue(QueueCommand::Stats) => Request::QueueStats,
        AdminCommand::Queue(QueueCommand::Purge { phone }) => Request::QueuePurge { phone },
        AdminCommand::Links => Request::Links,
        AdminCommand::Pins(PinsCommand::List) => Request::PinsList,
        AdminCommand::Pins(PinsCommand::Forget { address }) => Request::PinsForget { address },
        AdminCommand::Backup { file } => Request::Backup {
            file: std::path::absolute(&file)
                .map_err(|e| AdminError::Io(format!("{}: {e}", file.display())))?,
        },
    };
    let reply = send(config, request).await?;
    print(&reply, args.json)
}

/// Through the socket when a server holds the data directory, directly on
/// the store (holding the lock meanwhile) when none does.
async fn send(config: &ServerConfig, request: Request) -> Result<Reply, AdminError> {
    let dir = &config.data_dir;
    if !dir.is_dir() {
        return Err(AdminError::Refused(format!(
            "there is no data directory at {}; pass the server's --config or --data-dir",
            dir.display()
        )));
    }
    let _lock = match DataDirLock::acquire(dir) {
        Ok(lock) => lock,
        Err(LockError::Held { .. }) => return socket::call(dir, &request).await,
        Err(e) => return Err(AdminError::Io(e.to_string())),
    };
    let location = config.database_location();
    if let Location::Sqlite(path) = &location {
        prepare_database(&without_query(path))?;
    }
    let _db_lock = match &location {
        Location::Sqlite(path) => Some(DatabaseLock::acquire(path).map_err(|e| match e {
            LockError::DatabaseHeld { .. } => AdminError::Refused(e.to_string()),
            e => AdminError::Io(e.to_string()),
        })?),
        Location::Postgres(_) => None,
    };
    let (store, _committed) = Store::open(&location, config.quotas()).await?;
    let cx = Context {
        store: store.clone(),
        clock: Clock::System,
        data_dir: dir.clone(),
        neighbours: crate::link::Configured::new(config.neighbours.clone()),
        live: None,
    };
    let reply = execute(&cx, request).await;
    drop(cx);
    store.close().await;
    reply
}

/// Root running an offline command on a database in another user's
/// directory (OPERATING's advice under systemd's dynamic user) must not
/// follow a link that user planted, nor leave a database that user cannot
/// open. There the database must be one plain file, and a new one is made
/// and given to the directory's owner before SQLite opens it (SQLite, run
/// by root, gives its WAL files to the database's owner).
fn prepare_database(file: &Path) -> Result<(), AdminError> {
    if !private_files::root_in_another_users(private_files::directory_of(file)) {
        return Ok(());
    }
    let io = |e: std::io::Error| AdminError::Io(format!("{}: {e}", file.display()));
    let not_plain = |path: &Path| {
        AdminError::Refused(format!(
            "{} is not a plain file of its own (a symbolic or hard link, or not a file); \
             run as root, an admin command does not follow it in a directory another user \
             owns: run it as that user, or put the file itself there",
            path.display()
        ))
    };
    // SQLite, run by root, writes its journals and gives them to the
    // database's owner: they must be plain files too.
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut journal = file.as_os_str().to_owned();
        journal.push(suffix);
        let journal = PathBuf::from(journal);
        if std::fs::symlink_metadata(&journal).is_ok_and(|m| !private_files::is_plain(&m)) {
            return Err(not_plain(&journal));
        }
    }
    match std::fs::symlink_metadata(file) {
        Ok(meta) if private_files::is_plain(&meta) => Ok(()),
        Ok(_) => Err(not_plain(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let made = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)
                .map_err(io)?;
            private_files::give_to_directory_owner(&made, file);
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

fn check_config(file: &std::path::Path) -> Result<(), AdminError> {
    match crate::config::check_file(file) {
        Ok(()) => write_out(&format!("{}: the configuration is valid\n", file.display())),
        Err(problem) => Err(AdminError::Refused(problem)),
    }
}

/// Writes the answer to standard output. A reader that went away
/// (`… users list --json | head -3`) is one error line and exit code 1,
/// where `println!` would panic.
fn print(reply: &Reply, json: bool) -> Result<(), AdminError> {
    write_out(&render(reply, json))
}

/// Writes `text` to standard output, saying what failed if it cannot.
fn write_out(text: &str) -> Result<(), AdminError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| AdminError::Io(format!("cannot write to standard output: {e}")))
}

/// The answer as text for people, or as pretty JSON.
fn render(reply: &Reply, json: bool) -> String {
    let mut out = Vec::new();
    if json {
        let value = match reply {
            Reply::Status(s) => serde_json::to_value(s),
            Reply::Users(u) => serde_json::to_value(u),
            Reply::User(u) => serde_json::to_value(u),
            Reply::Queues(q) => serde_json::to_value(q),
            Reply::Links(l) => serde_json::to_value(l),
            Reply::Pins(p) => serde_json::to_value(p),
            Reply::Done(d) => serde_json::to_value(serde_json::json!({ "done": d })),
        };
        let value = value.expect("an answer always serialises");
        return format!("{}\n", serde_json::to_string_pretty(&value).expect("JSON"));
    }
    match reply {
        Reply::Status(s) => {
            let state = match s.uptime_secs {
                Some(up) => format!("running for {up} s"),
                None => "stopped".into(),
            };
            out.push(format!("carrier-server {} ({state})", s.version));
            out.push(format!(
                "users: {} ({} disabled)",
                s.users, s.disabled_users
            ));
            if let Some(sessions) = s.sessions {
                out.push(format!("sessions: {sessions}"));
            }
            out.push(format!(
                "queued: {} messages, {} bytes",
                s.queued_messages, s.queued_bytes
            ));
            print_links(&mut out, &s.links);
        }
        Reply::Users(users) if users.is_empty() => out.push("no users registered".into()),
        Reply::Users(users) => {
            for u in users {
                let disabled = if u.disabled { "  disabled" } else { "" };
                out.push(format!(
                    "{}  {}  queued {}{disabled}",
                    u.phone, u.fingerprint, u.queued_messages
                ));
            }
        }
        Reply::User(u) => {
            out.push(format!("phone: {}", u.phone));
            out.push(format!("key: {} {}", u.key_type, u.fingerprint));
            out.push(format!(
                "registered at: {}",
                crate::clock::utc(u.registered_at)
            ));
            out.push(format!(
                "disabled: {}",
                if u.disabled { "yes" } else { "no" }
            ));
            out.push(format!(
                "queued: {} messages, {} bytes",
                u.queued_messages, u.queued_bytes
            ));
            if let Some(n) = u.sessions {
                out.push(format!("sessions: {n}"));
            }
        }
        Reply::Queues(queues) if queues.is_empty() => out.push("no messages queued".into()),
        Reply::Queues(queues) => {
            for q in queues {
                out.push(format!(
                    "{}  {} messages  {} bytes",
                    q.owner, q.messages, q.bytes
                ));
            }
        }
        Reply::Links(links) if links.is_empty() => {
            out.push("no neighbours configured or linked".into())
        }
        Reply::Links(links) => print_links(&mut out, links),
        Reply::Pins(pins) if pins.is_empty() => out.push("no neighbour keys pinned".into()),
        Reply::Pins(pins) => {
            for p in pins {
                out.push(format!("{}  {}", p.address, p.fingerprint));
            }
        }
        Reply::Done(sentence) => out.push(sentence.clone()),
    }
    out.iter().map(|line| format!("{line}\n")).collect()
}

fn print_links(out: &mut Vec<String>, links: &[LinkState]) {
    for l in links {
        let name = l.address.as_deref().unwrap_or("(not configured)");
        let fp = l.fingerprint.as_deref().unwrap_or("(key not yet pinned)");
        let state = match l.up {
            Some(true) => "up",
            Some(false) => "down",
            None => "-",
        };
        let oldest = l
            .oldest_age_secs
            .map_or(String::new(), |s| format!(", oldest {s} s"));
        out.push(format!(
            "link {name} {fp}: {state}, {} waiting{oldest}",
            l.outbound_messages
        ));
    }
}
