//! Servers of a test's own: a PostgreSQL cluster, a Redis server and a
//! Kafka-protocol broker that only this test uses, so that it can restart,
//! stop or flush them under load without touching the shared ones every
//! other test runs against. Each is stopped and its files removed when the
//! value is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use uuid::Uuid;

use crate::eventually;

/// A fresh directory under the system's temporary directory.
fn scratch_dir(kind: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("erp-test-{kind}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Waits until something accepts connections on `port`.
async fn listening(port: u16, what: &str) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), what, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
    })
    .await
}

/// Runs `command` to completion; fails with its output when it fails.
fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.stdin(Stdio::null()).output()?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed with {}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A PostgreSQL cluster of the test's own (initdb into a temporary
/// directory, trust authentication, loopback only, no fsync).
#[derive(Debug)]
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    /// PostgreSQL refuses to run as root: as root, it runs as `postgres`.
    as_postgres: bool,
}

impl Postgres {
    /// The directory of the newest installed PostgreSQL's programs.
    fn bin_dir() -> anyhow::Result<PathBuf> {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")?
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, bin): &(u32, PathBuf)| bin.join("pg_ctl").exists())
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin).ok_or_else(|| anyhow::anyhow!("no PostgreSQL server in /usr/lib/postgresql"))
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// Creates and starts a cluster on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let as_postgres = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let dir = scratch_dir("postgres")?;
        if as_postgres {
            run(Command::new("chown").args(["postgres:postgres"]).arg(&dir))?;
        }
        let pg = Self { port: crate::free_port(), bin: Self::bin_dir()?, dir, as_postgres };
        let data = pg.dir.join("data");
        run(pg.command("initdb").args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"]).arg(&data))?;
        pg.pg_ctl("start")?;
        listening(pg.port, "the test's PostgreSQL").await?;
        Ok(pg)
    }

    fn pg_ctl(&self, action: &str) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        run(self.command("pg_ctl").args(["-w", "-m", "fast", "-D"]).arg(self.dir.join("data")).args(["-o", &options, "-l"]).arg(log).arg(action))
    }

    /// The admin URL (`postgres` database).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restarts with a fast shutdown: every session is ended, running
    /// transactions are rolled back, the server comes back on the same port.
    pub async fn restart_fast(&self) -> anyhow::Result<()> {
        self.pg_ctl("restart")?;
        listening(self.port, "the test's PostgreSQL after the restart").await
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-m", "immediate", "-D"]).arg(self.dir.join("data")).arg("stop").output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis server of the test's own, keeping nothing on disk: a restart
/// comes back empty.
#[derive(Debug)]
pub struct Redis {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Redis {
    fn spawn(port: u16, dir: &Path) -> anyhow::Result<Child> {
        Ok(Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    /// Starts a server on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let (port, dir) = (crate::free_port(), scratch_dir("redis")?);
        let child = Self::spawn(port, &dir)?;
        listening(port, "the test's Redis").await?;
        Ok(Self { port, child, dir })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL) and starts an empty one on the same port.
    pub async fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.child = Self::spawn(self.port, &self.dir)?;
        listening(self.port, "the test's Redis after the restart").await
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Kafka-protocol broker of a test's own (Tansu on a temporary SQLite
/// file), so that a test can take it down and bring it back with its data.
#[derive(Debug)]
pub struct Broker {
    /// The port it listens on.
    pub port: u16,
    /// The port it tells clients to connect to (a proxy's, or its own).
    pub advertised: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl Broker {
    /// The broker binary: `ERP_TANSU_BIN`, else where `scripts/infra.sh` builds it.
    pub fn binary() -> PathBuf {
        std::env::var_os("ERP_TANSU_BIN").map(Into::into).unwrap_or_else(|| {
            let home = std::env::var("HOME").unwrap_or_default();
            format!("{home}/.cache/erp-stock/tansu-0.6.0/bin/tansu").into()
        })
    }

    /// Starts a broker on `port` and waits until it accepts connections.
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        Self::start_advertising(port, port).await
    }

    /// Starts a broker on `port` that sends clients to `advertised` (where
    /// a test's proxy listens, so that every connection passes through it).
    pub async fn start_advertising(port: u16, advertised: u16) -> anyhow::Result<Self> {
        let mut broker = Self { port, advertised, child: None, dir: scratch_dir("broker")? };
        broker.resume().await?;
        Ok(broker)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// Stops the broker (SIGKILL); its data stays for [`Self::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port with the same data.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let url = |port: u16| format!("tcp://127.0.0.1:{port}");
        // Tansu resolves the sqlite:// path against its working directory.
        let child = Command::new(Self::binary())
            .args(["broker", "--listener-url", &url(self.port), "--advertised-listener-url", &url(self.advertised)])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        listening(self.port, "the broker").await?;
        index_headers(&self.dir.join("tansu.db")).await
    }
}

/// Indexes the broker's record headers, as `scripts/infra.sh` does for its
/// brokers: Tansu 0.6.0's SQLite schema has none, so every fetched record
/// scans every header row and a partition of a few thousand records slows
/// fetches (and the produces waiting on the same database) to a crawl.
async fn index_headers(db: &Path) -> anyhow::Result<()> {
    let sql = "create index if not exists header_by_record on header (topition, offset_id)";
    eventually(Duration::from_secs(10), "the broker's header index", || async {
        let made = Command::new("sqlite3").arg(db).arg(sql).stdout(Stdio::null()).stderr(Stdio::null()).status();
        made.ok().filter(|s| s.success()).map(|_| ())
    })
    .await
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
