//! Servers under test: each a separate `carrier-server` process (so its CPU
//! time and memory can be read from `/proc`) in its own directory with a
//! generated configuration, or a server someone else runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::users::{Endpoint, OtpReader};
use crate::config::ServerConfig;
use crate::domain::Fingerprint;
use crate::tls::Pin;

/// How the bench starts a server.
#[derive(Debug, Clone)]
pub enum ServerBin {
    /// A `carrier-server` executable.
    Binary(PathBuf),
    /// This executable in its hidden serve mode (same library code), used
    /// when no `carrier-server` sits next to it.
    SelfServe(PathBuf),
}

impl ServerBin {
    /// `carrier-server` next to this executable, else this executable.
    /// Returns a warning to show if the choice deserves one.
    pub fn locate(explicit: Option<PathBuf>) -> Result<(Self, Option<String>)> {
        if let Some(path) = explicit {
            if !path.is_file() {
                bail!("--server-bin {}: no such file", path.display());
            }
            return Ok((Self::Binary(path), None));
        }
        let me = std::env::current_exe().context("cannot find the bench's own executable")?;
        let sibling = me.with_file_name("carrier-server");
        if sibling.is_file() {
            let older = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let warning = match (older(&sibling), older(&me)) {
                (Some(s), Some(b)) if s + Duration::from_secs(120) < b => Some(format!(
                    "{} is older than the bench; if the server changed since, rebuild it (cargo build --release --bins)",
                    sibling.display()
                )),
                _ => None,
            };
            return Ok((Self::Binary(sibling), warning));
        }
        let note = format!(
            "no carrier-server next to {}: serving from the bench binary itself (same library code; \
             build carrier-server to measure the real binary)",
            me.display()
        );
        Ok((Self::SelfServe(me), Some(note)))
    }

    fn command(&self, config: &Path) -> tokio::process::Command {
        let mut cmd = match self {
            Self::Binary(p) => tokio::process::Command::new(p),
            Self::SelfServe(p) => {
                let mut c = tokio::process::Command::new(p);
                c.arg("--serve-config");
                c
            }
        };
        if matches!(self, Self::Binary(_)) {
            cmd.arg("--config");
        }
        cmd.arg(config);
        cmd
    }
}

/// A peer of a server in a neighbourhood.
#[derive(Debug, Clone)]
pub struct Neighbour {
    pub link_addr: String,
    pub fingerprint: Option<Fingerprint>,
}

/// What goes in a server's configuration file.
#[derive(Debug, Clone, Default)]
pub struct ServerSpec {
    pub max_connections: usize,
    /// `[neighbourhood] server_port`, if it is part of one.
    pub link_port: Option<u16>,
    pub neighbours: Vec<Neighbour>,
    /// `[database] url`; `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    /// Where codes are written; `None`: `otp-codes.txt` in the server's
    /// directory. The members of a cluster share one file, since a code may
    /// be sent by a member other than the one that verifies it.
    pub otp_file: Option<PathBuf>,
}

/// The `[limits]` of a bench server: far past anything the bench does, so
/// it measures the server's speed rather than its limits on one user.
const UNLIMITED: &str = "[limits]\n\
    send_messages_per_second = 1000000000\nsend_message_burst = 1000000000\n\
    send_bytes_per_second = 1099511627776\nsend_byte_burst = 1099511627776\n\
    max_sessions_per_user = 1000000\n\
    max_session_backlog_bytes = 1073741824\nmax_user_backlog_bytes = 1099511627776\n";

impl ServerSpec {
    fn toml(&self, port: u16) -> String {
        let mut t = format!(
            "# Written by carrier-bench.\n\
             [server]\nhost = \"127.0.0.1\"\nport = {port}\ndata_dir = \"data\"\nmax_connections = {}\n\n\
             [otp]\ndelivery = \"file\"\nfile = {:?}\nmax_codes_per_window = 1000000\n\
             register_per_address_per_minute = 1000000000\nregister_burst_per_address = 1000000000\n\n\
             [queue]\nmax_messages_per_recipient = 100000000\nmax_bytes_per_recipient = 1099511627776\n\
             max_messages_per_sender = 100000000\nmax_bytes_per_sender = 1099511627776\n\n\
             {UNLIMITED}",
            self.max_connections.max(1),
            self.otp_file
                .as_deref()
                .unwrap_or(Path::new(OTP_FILE))
                .display()
                .to_string()
        );
        if let Some(url) = &self.database_url {
            t.push_str(&format!("\n[database]\nurl = \"{url}\"\n"));
        }
        if let Some(link) = self.link_port {
            t.push_str(&format!(
                "\n[neighbourhood]\nserver_port = {link}\nneighbours = [\n"
            ));
            for n in &self.neighbours {
                match n.fingerprint {
                    Some(fp) => t.push_str(&format!(
                        "  {{ address = \"{}\", fingerprint = \"{fp}\" }},\n",
                        n.link_addr
                    )),
                    None => t.push_str(&format!("  {{ address = \"{}\" }},\n", n.link_addr)),
                }
            }
            t.push_str("]\n");
        }
        t
    }
}

/// The code file of a server the bench starts, in its directory.
const OTP_FILE: &str = "otp-codes.txt";

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a local port")?;
    Ok(l.local_addr()?.port())
}

/// A running server process that the bench started.
pub struct ServerProc {
    child: tokio::process::Child,
    pub pid: u32,
    pub addr: String,
    pub fingerprint: Fingerprint,
    pub dir: PathBuf,
}

impl ServerProc {
    /// Writes the configuration into `dir` and starts the server there;
    /// returns once it listens. The log goes to `dir/server.log`.
    pub async fn start(
        bin: &ServerBin,
        dir: &Path,
        spec: &ServerSpec,
        log_level: &str,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut last_err = None;
        // The port is picked free and released before the server binds it;
        // another process may take it in between, so try a few times.
        for _ in 0..3 {
            match Self::start_once(bin, dir, spec, log_level).await {
                Ok(s) => return Ok(s),
                Err(e) if e.to_string().contains("cannot listen") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("the server did not start")))
    }

    async fn start_once(
        bin: &ServerBin,
        dir: &Path,
        spec: &ServerSpec,
        log_level: &str,
    ) -> Result<Self> {
        let port = free_port()?;
        let config = dir.join("server.toml");
        std::fs::write(&config, spec.toml(port))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let log_path = dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut child = bin
            .command(&config)
            .env("RUST_LOG", log_level)
            .env_remove("CARRIER_CONFIG")
            .env_remove("CARRIER_HOST")
            .env_remove("CARRIER_PORT")
            .env_remove("CARRIER_DATA_DIR")
            .env_remove("CARRIER_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the server {bin:?}"))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server exited at once"))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut fingerprint = None;
        let read = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(fp) = line.strip_prefix("Carrier server fingerprint: ") {
                    fingerprint = Fingerprint::parse(fp.trim());
                } else if let Some(rest) = line.strip_prefix("Listening on ") {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    return Ok::<_, std::io::Error>(Some(addr));
                }
            }
            Ok(None)
        };
        let addr = match tokio::time::timeout(Duration::from_secs(120), read).await {
            Ok(Ok(Some(addr))) => addr,
            outcome => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let tail = log_tail(&log_path, 15);
                let why = match outcome {
                    Err(_) => "did not print its address within 120 s".to_owned(),
                    Ok(Err(e)) => format!("could not be read: {e}"),
                    Ok(Ok(_)) => "exited before listening".to_owned(),
                };
                bail!("the server in {} {why}:\n{tail}", dir.display());
            }
        };
        let fingerprint =
            fingerprint.ok_or_else(|| anyhow!("the server printed no fingerprint"))?;
        // Keep reading standard output so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            addr,
            fingerprint,
            dir: dir.to_owned(),
        })
    }

    /// The server as clients reach it, with its code file.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            addr: self.addr.clone(),
            pin: Pin::Expect(self.fingerprint),
            otp: Arc::new(OtpReader::new(&self.dir.join(OTP_FILE), false)),
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.dir.join("server.log"), lines)
    }

    /// SIGTERM, then waits up to `grace` for a clean stop; after that the
    /// server is killed. Returns how long it took, and whether it had to be
    /// killed; an error if it stopped with a failure status.
    pub async fn stop(mut self, grace: Duration) -> Result<Stopped> {
        let started = std::time::Instant::now();
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!(
                        "the server in {} stopped with {status}:\n{}",
                        self.dir.display(),
                        self.log_tail(10)
                    );
                }
                Ok(Stopped {
                    seconds: started.elapsed().as_secs_f64(),
                    killed: false,
                })
            }
            Err(_) => {
                let _ = self.child.kill().await;
                Ok(Stopped {
                    seconds: started.elapsed().as_secs_f64(),
                    killed: true,
                })
            }
        }
    }
}

/// Starts `n` members of one cluster on `spec`'s database (PostgreSQL), in
/// `dir/member-1`, `dir/member-2`, …: the first makes the keys, the others
/// get copies of them (as an operator copies them, SCALING.md) and write
/// their codes to the first one's file. Returns them in order.
pub async fn start_members(
    bin: &ServerBin,
    dir: &Path,
    spec: &ServerSpec,
    log_level: &str,
    n: usize,
) -> Result<Vec<ServerProc>> {
    let first_dir = dir.join("member-1");
    let first = ServerProc::start(bin, &first_dir, spec, log_level).await?;
    let shared = ServerSpec {
        otp_file: Some(first_dir.join(OTP_FILE)),
        ..spec.clone()
    };
    let mut members = vec![first];
    for i in 2..=n {
        let dir = dir.join(format!("member-{i}"));
        copy_keys(&first_dir.join("data"), &dir.join("data"))?;
        members.push(ServerProc::start(bin, &dir, &shared, log_level).await?);
    }
    Ok(members)
}

/// Copies the server key and the code key from one data directory to a
/// new one, private as the server wants them.
fn copy_keys(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(to)?;
    for file in [
        crate::server::KEY_FILE,
        crate::auth::code_key::CODE_KEY_FILE,
    ] {
        let target = to.join(file);
        std::fs::copy(from.join(file), &target)
            .with_context(|| format!("cannot copy {file} to {}", to.display()))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// How a server stop went.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    pub seconds: f64,
    pub killed: bool,
}

/// Creates the server key in `dir` (as the server would on its first
/// start) so its fingerprint is known before it runs: neighbours can then
/// be configured with each other's fingerprints.
pub fn prepare_key(dir: &Path) -> Result<Fingerprint> {
    use std::os::unix::fs::DirBuilderExt;
    let data = dir.join("data");
    if !data.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data)?;
    }
    let path = data.join(crate::server::KEY_FILE);
    let (key, _) = crate::crypto::load_or_create_server_key(&path)
        .with_context(|| format!("cannot create the server key {}", path.display()))?;
    Ok(key.fingerprint())
}

/// The last `lines` lines of a server's log, leaving out stack backtraces:
/// with `RUST_BACKTRACE` set, a startup error is followed by dozens of
/// frames, and a plain tail would show frames instead of the reason (such
/// as a port still in use, which callers retry on).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut kept = Vec::new();
    let mut in_backtrace = false;
    for line in text.lines() {
        // A backtrace's frames are indented; the next log line is not.
        in_backtrace = line == "Stack backtrace:" || (in_backtrace && line.starts_with(' '));
        if !in_backtrace {
            kept.push(line);
        }
    }
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// The hidden serve mode (`--serve-config PATH`): what
/// `carrier-server --config PATH` does, for when no carrier-server binary
/// sits next to the bench.
pub fn serve_in_process(config_path: &Path) -> Result<()> {
    crate::telemetry::init("info");
    let config = ServerConfig::load(config_path)?;
    tokio::runtime::Runtime::new()?.block_on(async {
        crate::server::serve(&config, crate::server::shutdown_on_signal(), None).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_tail_shows_a_startup_error_rather_than_its_backtrace() {
        let log = "2026-12-05T16:14:02.001Z  INFO carrier::server: opening the database\n\
                   Error: cannot listen on 127.0.0.1:45999\n\n\
                   Caused by:\n    0: cannot bind\n    1: Address already in use (os error 98)\n\n\
                   Stack backtrace:\n   0: anyhow::error::<impl anyhow::Error>::msg\n\
                   \x20            at ./src/error.rs:83:36\n  28: main\n  31: _start\n\
                   2026-12-05T16:14:02.300Z  INFO carrier::server: opening the database again\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        std::fs::write(&path, log).unwrap();
        let tail = log_tail(&path, 6);
        assert!(tail.contains("0: cannot bind"), "{tail}");
        assert!(tail.contains("Address already in use"), "{tail}");
        assert!(
            !tail.contains("_start") && !tail.contains("error.rs"),
            "{tail}"
        );
        assert!(tail.contains("opening the database again"), "{tail}");
        assert!(!tail.contains("opening the database\n"), "{tail}");
    }

    #[test]
    fn config_with_neighbours() {
        let spec = ServerSpec {
            max_connections: 10,
            link_port: Some(7001),
            neighbours: vec![
                Neighbour {
                    link_addr: "127.0.0.1:7002".into(),
                    fingerprint: None,
                },
                Neighbour {
                    link_addr: "127.0.0.1:7003".into(),
                    fingerprint: Some(Fingerprint::of_spki(b"k")),
                },
            ],
            database_url: Some("postgres://bench@127.0.0.1:5432/bench".into()),
            otp_file: Some("/tmp/member-1/otp-codes.txt".into()),
        };
        let text = spec.toml(5000);
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["server"]["port"].as_integer(), Some(5000));
        assert_eq!(
            v["database"]["url"].as_str(),
            Some("postgres://bench@127.0.0.1:5432/bench")
        );
        assert_eq!(
            v["otp"]["file"].as_str(),
            Some("/tmp/member-1/otp-codes.txt")
        );
        assert_eq!(v["neighbourhood"]["server_port"].as_integer(), Some(7001));
        let n = v["neighbourhood"]["neighbours"].as_array().unwrap();
        assert_eq!(n.len(), 2);
        assert!(n[1]["fingerprint"].as_str().unwrap().len() == 64);
        // Without a neighbourhood the file is one today's servers accept.
        let plain = ServerSpec {
            max_connections: 10,
            ..Default::default()
        }
        .toml(5000);
        let dir = std::env::temp_dir().join(format!("carrier-bench-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server.toml"), plain).unwrap();
        crate::config::ServerConfig::load(&dir.join("server.toml")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
