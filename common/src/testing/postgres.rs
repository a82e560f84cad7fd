//! A PostgreSQL server of a test's own: made with the installed `initdb`
//! in a temporary directory, listening on a free loopback port, run as the
//! `postgres` user (the server refuses root). A test can stop and start it
//! (a database outage) without touching the shared server that every other
//! test uses, so it runs beside them. Removed, data and all, when dropped.
//!
//! Needs the server's programs (`/usr/lib/postgresql/*/bin`), the
//! `postgres` account and, when run as root, `runuser`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A private PostgreSQL server (see the module docs).
#[derive(Debug)]
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Makes and starts a server; returns once it accepts connections.
    pub fn start() -> io::Result<PrivatePostgres> {
        let bin = server_bin()?;
        let dir = tempfile::Builder::new().prefix("celeriac-pg").tempdir()?;
        run(Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir.path()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let pg = PrivatePostgres { bin, dir, port };
        let data = pg.data();
        run(pg
            .as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data))?;
        pg.start_again()?;
        Ok(pg)
    }

    /// A URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it at once (`immediate`: connections are cut, as in a crash).
    pub fn stop(&self) -> io::Result<()> {
        run(self
            .as_postgres("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.data()))
    }

    /// Starts it (again); returns once it accepts connections.
    pub fn start_again(&self) -> io::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        run(self
            .as_postgres("pg_ctl")
            .args(["start", "-w", "-t", "30", "-o", &options, "-l"])
            .arg(self.dir.path().join("server.log"))
            .arg("-D")
            .arg(self.data()))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` of the server's, run as `postgres` (directly when this
    /// process is that user already).
    fn as_postgres(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The newest installed server's `bin` directory.
fn server_bin() -> io::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| io::Error::other("no PostgreSQL server in /usr/lib/postgresql"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs `cmd`; a failure carries its command line and stderr.
fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
