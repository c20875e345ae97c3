//! The `carrier-server` and `carrier` binaries as child processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use carrier::domain::Fingerprint;
use tempfile::TempDir;

use crate::common::{PATIENCE, Reachable, SHUTDOWN_PATIENCE};
use crate::test_db::TestDb;

/// The configuration every test server starts from.
const BASE_CONFIG: &str = "[server]\nhost = \"127.0.0.1\"\nport = 0\ndata_dir = \"data\"\n\n\
                           [otp]\ndelivery = \"file\"\nfile = \"otp.txt\"\n";

/// A server's files: a config (port 0, codes to a file), its data directory
/// and the server's log. Survives restarts of the process.
pub struct ServerFiles {
    /// Holds everything below; deleted on drop.
    _dir: TempDir,
    pub config: PathBuf,
    pub otp_file: PathBuf,
    pub log: PathBuf,
    /// Whether the config has a link port.
    links: bool,
    /// The PostgreSQL schema, when the suite runs against PostgreSQL.
    postgres: Option<TestDb>,
    /// The database the config names, if not the data directory's.
    database_url: Option<String>,
}

impl ServerFiles {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("server.toml");
        let postgres = TestDb::postgres_blocking();
        let files = Self {
            otp_file: dir.path().join("otp.txt"),
            log: dir.path().join("server.log"),
            config,
            _dir: dir,
            links: false,
            database_url: postgres.as_ref().map(TestDb::url),
            postgres,
        };
        files.write_config(BASE_CONFIG.to_owned());
        files
    }

    /// Files for another member of `first`'s cluster (which has started
    /// once): its database, a copy of its keys, everything else of its own.
    /// `None` unless the suite runs against PostgreSQL.
    pub fn member_of(first: &ServerFiles) -> Option<Self> {
        Some(Self::sharing_keys(first, first.postgres.as_ref()?.url()))
    }

    /// Files for a server with a copy of `first`'s keys (it has started
    /// once) on the database at `database_url`.
    pub fn sharing_keys(first: &ServerFiles, database_url: String) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = Self {
            otp_file: dir.path().join("otp.txt"),
            log: dir.path().join("server.log"),
            config: dir.path().join("server.toml"),
            _dir: dir,
            links: false,
            postgres: None,
            database_url: Some(database_url),
        };
        std::fs::create_dir_all(files.data_dir()).unwrap();
        let code_key = carrier::auth::code_key::CODE_KEY_FILE;
        for file in [carrier::server::KEY_FILE, code_key] {
            let to = files.data_dir().join(file);
            std::fs::copy(first.data_dir().join(file), &to).expect("the key is copied");
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        }
        files.write_config(BASE_CONFIG.to_owned());
        files
    }

    /// Files for a server on SQLite in its data directory, whatever the
    /// suite runs against.
    pub fn on_sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = Self {
            otp_file: dir.path().join("otp.txt"),
            log: dir.path().join("server.log"),
            config: dir.path().join("server.toml"),
            _dir: dir,
            links: false,
            postgres: None,
            database_url: None,
        };
        files.write_config(BASE_CONFIG.to_owned());
        files
    }

    /// The PostgreSQL schema the server uses, when the suite runs against
    /// PostgreSQL.
    pub fn postgres(&self) -> Option<&TestDb> {
        self.postgres.as_ref()
    }

    /// Whether the config names a PostgreSQL database (so it can be shared).
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// The data directory (key files, SQLite database).
    pub fn data_dir(&self) -> PathBuf {
        self.config.with_file_name("data")
    }

    /// Writes `text` as the config, naming the database when the suite
    /// runs against PostgreSQL.
    fn write_config(&self, mut text: String) {
        if let Some(url) = &self.database_url {
            text.push_str(&format!("\n[database]\nurl = \"{url}\"\n"));
        }
        std::fs::write(&self.config, text).expect("the config is written");
    }

    /// Rewrites the config with `server_lines` added to its `[server]`
    /// section and `sections` after it. Read at the next start.
    pub fn set_extra_config(&self, server_lines: &str, sections: &str) {
        let base = BASE_CONFIG.replacen("[server]\n", &format!("[server]\n{server_lines}\n"), 1);
        self.write_config(format!("{base}\n{sections}\n"));
    }

    /// Rewrites the config with `otp` in place of the `[otp]` section
    /// (codes to `otp.txt`). Read at the next start or reload.
    pub fn set_otp_section(&self, otp: &str) {
        self.write_config(BASE_CONFIG.replacen(
            "[otp]\ndelivery = \"file\"\nfile = \"otp.txt\"\n",
            otp,
            1,
        ));
    }

    /// Rewrites the config to listen for links on `link_port` (0: any free
    /// port) and to link to `neighbours` (link addresses, with the key to
    /// expect or `None` to pin the first one seen). Read at the next start.
    pub fn set_links(&mut self, link_port: u16, neighbours: &[(SocketAddr, Option<Fingerprint>)]) {
        let mut text =
            format!("{BASE_CONFIG}\n[neighbourhood]\nserver_port = {link_port}\nneighbours = [\n");
        for (addr, fp) in neighbours {
            match fp {
                Some(fp) => text.push_str(&format!(
                    "  {{ address = \"{addr}\", fingerprint = \"{fp}\" }},\n"
                )),
                None => text.push_str(&format!("  {{ address = \"{addr}\" }},\n")),
            }
        }
        text.push_str("]\n");
        self.write_config(text);
        self.links = true;
    }

    /// Starts `carrier-server --config` and waits for its fingerprint and
    /// addresses.
    pub fn start(&self) -> ServerProcess {
        self.start_with(Command::new(env!("CARGO_BIN_EXE_carrier-server")))
    }

    /// Starts the server as [`ServerFiles::start`] does, with its open-file
    /// limit (`ulimit -n`) lowered to `limit`.
    pub fn start_with_open_file_limit(&self, limit: u64) -> ServerProcess {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -n \"$1\" && shift && exec \"$@\"", "sh"])
            .arg(limit.to_string())
            .arg(env!("CARGO_BIN_EXE_carrier-server"));
        self.start_with(cmd)
    }

    /// Whether the server keeps its data in SQLite (not PostgreSQL).
    pub fn uses_sqlite(&self) -> bool {
        self.postgres.is_none()
    }

    /// `carrier-server --config <this config>` with a clean environment,
    /// for subcommands and for starts a test expects to fail.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_carrier-server"));
        cmd.arg("--config").arg(&self.config);
        clean_server_env(&mut cmd);
        cmd
    }

    /// [`ServerFiles::command`] with the process's address space (`ulimit
    /// -v`) limited to `kib` KiB: a limit even root is held to, unlike the
    /// one on processes.
    pub fn command_with_address_space(&self, kib: u64) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -v \"$1\" && shift && exec \"$@\"", "sh"])
            .arg(kib.to_string())
            .arg(env!("CARGO_BIN_EXE_carrier-server"))
            .arg("--config")
            .arg(&self.config);
        clean_server_env(&mut cmd);
        cmd
    }

    fn start_with(&self, mut server: Command) -> ServerProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        clean_server_env(&mut server);
        let mut child = server
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("carrier-server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        // Drains standard output for the life of the process.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut next_line = || match lines.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "carrier-server printed no address ({e}); log:\n{}",
                    self.log_text()
                );
            }
        };
        let mut fingerprint = None;
        let addr = loop {
            let line = next_line();
            if let Some(fp) = line.strip_prefix("Carrier server fingerprint: ") {
                fingerprint = Some(Fingerprint::parse(fp.trim()).expect("a fingerprint"));
            }
            if let Some(rest) = line.strip_prefix("Listening on ") {
                break rest
                    .split_whitespace()
                    .next()
                    .expect("an address")
                    .to_owned();
            }
        };
        let link_addr = self.links.then(|| {
            let line = next_line();
            let addr = line
                .strip_prefix("Listening for neighbour servers on ")
                .unwrap_or_else(|| panic!("no link address but {line:?}"));
            addr.trim().parse().expect("a link address")
        });
        let serves_metrics = std::fs::read_to_string(&self.config)
            .unwrap_or_default()
            .contains("[metrics]");
        let metrics_addr = serves_metrics.then(|| {
            let line = next_line();
            line.strip_prefix("Metrics on http://")
                .and_then(|rest| rest.strip_suffix("/metrics"))
                .unwrap_or_else(|| panic!("no metrics address but {line:?}"))
                .to_owned()
        });
        let fingerprint = fingerprint.expect("the fingerprint is printed before the address");
        ServerProcess {
            child: Some(child),
            addr,
            link_addr,
            metrics_addr,
            fingerprint,
            otp_file: self.otp_file.clone(),
            _lines: lines,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A running `carrier-server`. Killed (SIGKILL) if dropped while running.
pub struct ServerProcess {
    child: Option<Child>,
    pub addr: String,
    /// Where neighbour servers reach it, when its config has a link port.
    pub link_addr: Option<SocketAddr>,
    /// Where `/metrics` is served, when its config has `[metrics]`.
    pub metrics_addr: Option<String>,
    pub fingerprint: Fingerprint,
    otp_file: PathBuf,
    /// Keeps the drain of standard output going.
    _lines: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown, no flush; the process is gone when this returns.
    pub fn kill_9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL is delivered");
        child.wait().expect("the killed server is reaped");
    }

    /// SIGTERM, then the exit status once the process ended.
    pub fn terminate(&mut self) -> ExitStatus {
        let child = self.child.take().expect("running");
        let pid = child.id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
        wait_for(
            child,
            SHUTDOWN_PATIENCE,
            "carrier-server to exit after SIGTERM",
        )
        .status
    }
}

impl Reachable for ServerProcess {
    fn addr(&self) -> String {
        self.addr.clone()
    }
    fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    fn otp_file(&self) -> &Path {
        &self.otp_file
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Removes the variables that would override the test's config.
fn clean_server_env(cmd: &mut Command) {
    for var in [
        "CARRIER_HOST",
        "CARRIER_PORT",
        "CARRIER_DATA_DIR",
        "CARRIER_CONFIG",
        "CARRIER_DATABASE_URL",
    ] {
        cmd.env_remove(var);
    }
}

/// Waits for `child` to end and collects its output; kills it and fails the
/// test naming `what` if it hangs.
pub fn wait_within(child: Child, what: &str) -> Output {
    wait_for(child, PATIENCE, what)
}

fn wait_for(child: Child, patience: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(patience) {
        Ok(output) => output.expect("the child's output is collected"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what}: did not finish within {patience:?}");
        }
    }
}

/// `carrier --server ADDR --home HOME` with a clean environment.
pub fn carrier(server: &str, home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_carrier"));
    cmd.arg("--server").arg(server).arg("--home").arg(home);
    for var in [
        "CARRIER_SERVER",
        "CARRIER_SERVER_FINGERPRINT",
        "CARRIER_HOME",
        "CARRIER_PASSPHRASE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Runs `cmd` with no standard input and returns its output.
pub fn run(cmd: &mut Command, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    wait_within(child, what)
}

/// Runs `cmd` with its standard output a pipe already closed at the
/// reading end, as `cmd | head -1` is once `head` has read its line.
pub fn run_into_closed_pipe(cmd: &mut Command, what: &str) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    wait_within(child, what)
}

/// Checks that a command whose output nobody read any more ended with one
/// line on standard error starting with `prefix` and exit status 1: no
/// panic.
pub fn ended_with_one_line(o: &Output, prefix: &str, what: &str) {
    let stderr = stderr_of(o);
    assert_eq!(o.status.code(), Some(1), "{what}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
    assert!(stderr.starts_with(prefix), "{what}: {stderr}");
}

pub fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
