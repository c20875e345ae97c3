//! The real `carrier-server` as a child process on ports that stay the
//! same across restarts, as a supervised server's would: started, killed
//! with SIGKILL, started again on the same data directory, and stopped
//! with SIGTERM at the end.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use carrier::domain::Fingerprint;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to print where it listens.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// How long a server may take to stop after SIGTERM.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// Starts tried when the port is not free yet (a killed server's sockets
/// linger for a moment).
const START_TRIES: u32 = 20;

/// One server: its directory (configuration, data, codes, log) and, while
/// it runs, its process.
pub struct Server {
    pub name: &'static str,
    dir: PathBuf,
    bin: PathBuf,
    pub addr: SocketAddr,
    pub link_addr: SocketAddr,
    pub fingerprint: Fingerprint,
    child: Option<Child>,
}

/// Ports picked for a run, each held open until every port of the run
/// (the servers' and the proxies') is taken: a port released at once may
/// be handed out again by the next pick, and a server whose port another
/// listener took could never start.
#[derive(Default)]
pub struct HeldPorts(Vec<std::net::TcpListener>);

impl HeldPorts {
    fn pick(&mut self) -> Result<SocketAddr> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a local port")?;
        let addr = listener.local_addr()?;
        self.0.push(listener);
        Ok(addr)
    }
}

impl Server {
    /// Makes the server's key (so its fingerprint is known before it first
    /// runs) and picks its two ports, held in `ports` until it starts.
    pub fn prepare(
        bin: &Path,
        dir: PathBuf,
        name: &'static str,
        ports: &mut HeldPorts,
    ) -> Result<Self> {
        let fingerprint = carrier::bench::server::prepare_key(&dir)?;
        Ok(Self {
            name,
            bin: bin.to_owned(),
            addr: ports.pick()?,
            link_addr: ports.pick()?,
            fingerprint,
            dir,
            child: None,
        })
    }

    pub fn otp_file(&self) -> PathBuf {
        self.dir.join("otp.txt")
    }

    pub fn database(&self) -> PathBuf {
        self.dir.join("data").join(carrier::db::DATABASE_FILE)
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Writes the configuration: codes to a file, and links to
    /// `neighbours` (addresses with the key to expect there).
    pub fn configure(&self, neighbours: &[(SocketAddr, Fingerprint)]) -> Result<()> {
        let mut toml = format!(
            "[server]\nhost = \"127.0.0.1\"\nport = {}\ndata_dir = \"data\"\nname = \"{}\"\n\n\
             [otp]\ndelivery = \"file\"\nfile = \"otp.txt\"\n\n\
             [neighbourhood]\nserver_port = {}\nneighbours = [\n",
            self.addr.port(),
            self.name,
            self.link_addr.port()
        );
        for (addr, fp) in neighbours {
            toml.push_str(&format!(
                "  {{ address = \"{addr}\", fingerprint = \"{fp}\" }},\n"
            ));
        }
        toml.push_str("]\n");
        let path = self.dir.join("server.toml");
        std::fs::write(&path, toml).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Starts the server and returns once it listens; retries while its
    /// ports are still held by the process killed a moment ago.
    pub async fn start(&mut self) -> Result<()> {
        for _ in 0..START_TRIES {
            match self.start_once().await {
                Err(e) if e.to_string().contains("in use") => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                done => return done,
            }
        }
        bail!(
            "{}: its ports stayed in use:\n{}",
            self.name,
            self.log_tail(10)
        )
    }

    async fn start_once(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())?;
        let mut child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.join("server.toml"))
            .env("RUST_LOG", "info")
            .env_remove("CARRIER_CONFIG")
            .env_remove("CARRIER_HOST")
            .env_remove("CARRIER_PORT")
            .env_remove("CARRIER_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut fingerprint = None;
        let listening = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(fp) = line.strip_prefix("Carrier server fingerprint: ") {
                    fingerprint = Fingerprint::parse(fp.trim());
                }
                if line.starts_with("Listening for neighbour servers on ") {
                    return Ok::<_, std::io::Error>(true);
                }
            }
            Ok(false)
        };
        match tokio::time::timeout(START_PATIENCE, listening).await {
            Ok(Ok(true)) => {}
            outcome => {
                let _ = child.kill().await;
                let tail = self.log_tail(10);
                if tail.contains("in use") {
                    bail!("address in use");
                }
                bail!("{} did not start ({outcome:?}):\n{tail}", self.name);
            }
        }
        if fingerprint != Some(self.fingerprint) {
            bail!("{} came up with another key: {fingerprint:?}", self.name);
        }
        // Keep reading standard output so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no shutdown, no flush. Returns once the process is gone.
    pub async fn kill_9(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        child.start_kill()?;
        let status = child.wait().await?;
        use std::os::unix::process::ExitStatusExt;
        if status.signal() != Some(9) {
            bail!(
                "{} ended with {status} before it could be killed:\n{}",
                self.name,
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("{} has exited", self.name))?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        let status = tokio::time::timeout(STOP_PATIENCE, child.wait())
            .await
            .map_err(|_| anyhow!("{} did not stop within {STOP_PATIENCE:?}", self.name))??;
        if !status.success() {
            bail!(
                "{} stopped with {status}:\n{}",
                self.name,
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        carrier::bench::server::log_tail(&self.log_file(), lines)
    }

    /// Log lines at level ERROR, and whether any says the server panicked.
    pub fn log_errors(&self) -> (usize, bool) {
        let text = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let errors = text.lines().filter(|l| l.contains(" ERROR ")).count();
        (errors, text.contains("panicked"))
    }
}

/// `PRAGMA integrity_check` of a stopped server's database: `ok`, or what
/// SQLite found.
pub async fn integrity_check(database: &Path) -> Result<String> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(database)
        .read_only(true)
        .connect()
        .await
        .with_context(|| format!("cannot open {}", database.display()))?;
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await?;
    Ok(rows.join("; "))
}
