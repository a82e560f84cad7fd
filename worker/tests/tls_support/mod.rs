//! Fixtures for the TLS tests: a throw-away CA made with rcgen, a TLS
//! listener on the shared RabbitMQ node, and private PostgreSQL and MariaDB
//! servers with TLS on. Each stops and deletes what it started when dropped,
//! also when a test fails.
//!
//! Needs root (to run the database servers as their system users and to
//! let RabbitMQ read the certificates), `rabbitmqctl`, PostgreSQL 15's
//! `initdb`/`postgres` and `mariadb-install-db`/`mariadbd`/`mariadb`.
#![allow(dead_code, unreachable_pub, missing_docs)]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A CA, a server certificate for `localhost` / `127.0.0.1` and a client
/// certificate (CN `celeriac`) signed by it, plus an unrelated CA; PEM files
/// in a directory everyone can read (the servers run as other users).
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca")
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        set_mode(dir.path(), 0o755);
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write pem");
            set_mode(&path, 0o644);
            path
        };
        let root = ca("celeriac test CA");
        let other = ca("some other CA");
        let (server_pem, server_key) = leaf(
            &root,
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_pem, client_key) =
            leaf(&root, "celeriac", &[], ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca: write("ca.pem", &root.pem()),
            other_ca: write("other-ca.pem", &other.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key),
            dir,
        }
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_port(port: u16, timeout: Duration, what: &str, log: impl Fn() -> String) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "{what} did not listen on {port} within {timeout:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

fn erlang_string(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// An `amqps` listener on the running RabbitMQ node, on its own port,
/// started with `rabbit_networking:start_ssl_listener/3` (no restart) and
/// stopped with `stop_tcp_listener/1` on drop.
pub struct RabbitTlsListener {
    pub port: u16,
}

impl RabbitTlsListener {
    /// `require_client_cert`: the broker verifies client certificates
    /// against the CA and refuses a client without one.
    pub fn start(pki: &Pki, require_client_cert: bool) -> RabbitTlsListener {
        let port = free_port();
        let opts = format!(
            "[{{certfile,{}}},{{keyfile,{}}},{{cacertfile,{}}},{{verify,{}}},{{fail_if_no_peer_cert,{}}}]",
            erlang_string(&pki.server_cert),
            erlang_string(&pki.server_key),
            erlang_string(&pki.ca),
            if require_client_cert {
                "verify_peer"
            } else {
                "verify_none"
            },
            require_client_cert,
        );
        let listener = RabbitTlsListener { port };
        let out = run(Command::new("rabbitmqctl").arg("eval").arg(format!(
            "rabbit_networking:start_ssl_listener({{\"127.0.0.1\", {port}}}, {opts}, 1)."
        )));
        assert!(out.trim() == "ok", "cannot start a TLS listener: {out}");
        wait_port(
            port,
            Duration::from_secs(10),
            "RabbitMQ TLS listener",
            String::new,
        );
        listener
    }

    pub fn url(&self, host: &str) -> String {
        format!("amqps://guest:guest@{host}:{}/%2f", self.port)
    }
}

impl Drop for RabbitTlsListener {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .arg("eval")
            .arg(format!(
                "rabbit_networking:stop_tcp_listener({{\"127.0.0.1\", {}}}).",
                self.port
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A server process of ours, stopped with `signal` (then SIGKILL) on drop.
struct Server {
    child: Child,
    signal: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(format!("-{}", self.signal))
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A private PostgreSQL 15 server with `ssl = on` whose only TCP access
/// is `hostssl ... cert`: TLS with a client certificate signed by the
/// test CA, CN = the role (`celeriac`, the bootstrap superuser).
pub struct PrivatePostgres {
    pub port: u16,
    server: Server,
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    pub fn start(pki: &Pki) -> PrivatePostgres {
        let dir = tempfile::tempdir().expect("tempdir");
        set_mode(dir.path(), 0o755);
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let key = dir.path().join("server.key");
        std::fs::copy(&pki.server_key, &key).expect("copy key");
        set_mode(&key, 0o600);
        run(Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(dir.path()));
        let as_postgres = |program: &str| {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(format!("{PG_BIN}/{program}"));
            c
        };
        run(as_postgres("initdb").arg("-D").arg(&data).args([
            "-U",
            "celeriac",
            "--auth-local=trust",
            "--no-sync",
        ]));
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 cert\nhostssl all all ::1/128 cert\n",
        )
        .expect("pg_hba.conf");
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let log_file = std::fs::File::create(&log).expect("log");
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", pki.server_cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .arg("-c")
            .arg(format!("ssl_ca_file={}", pki.ca.display()))
            .args(["-c", "fsync=off", "-c", "shared_buffers=16MB"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn postgres");
        let pg = PrivatePostgres {
            port,
            server: Server {
                child,
                signal: "INT", // fast shutdown
            },
            dir,
        };
        wait_port(port, Duration::from_secs(30), "PostgreSQL", || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
        pg
    }

    /// The `postgres` database as role `celeriac`, with `query` appended
    /// (TLS parameters).
    pub fn url(&self, query: &str) -> String {
        format!(
            "postgres://celeriac@localhost:{}/postgres?{query}",
            self.port
        )
    }
}

/// A private MariaDB server with TLS whose user `celeriac` is created
/// `REQUIRE X509` (a client certificate signed by the test CA).
pub struct PrivateMariaDb {
    pub port: u16,
    server: Server,
    dir: tempfile::TempDir,
}

impl PrivateMariaDb {
    pub fn start(pki: &Pki) -> PrivateMariaDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        run(Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ]));
        let port = free_port();
        let socket = dir.path().join("mysqld.sock");
        let log = dir.path().join("error.log");
        let arg = |k: &str, v: &Path| format!("--{k}={}", v.display());
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(arg("datadir", &data))
            .arg("--user=root")
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(arg("socket", &socket))
            .arg(arg("pid-file", &dir.path().join("mysqld.pid")))
            .arg(arg("log-error", &log))
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=16M")
            .arg(arg("ssl-cert", &pki.server_cert))
            .arg(arg("ssl-key", &pki.server_key))
            .arg(arg("ssl-ca", &pki.ca))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        let db = PrivateMariaDb {
            port,
            server: Server {
                child,
                signal: "TERM",
            },
            dir,
        };
        wait_port(port, Duration::from_secs(30), "MariaDB", || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
        run(Command::new("mariadb")
            .arg("--no-defaults")
            .arg(arg("socket", &socket))
            .args(["-u", "root", "-e"])
            .arg(
                "CREATE USER celeriac@'127.0.0.1' REQUIRE X509; \
                 GRANT ALL ON *.* TO celeriac@'127.0.0.1'; CREATE DATABASE celeriac;",
            ));
        db
    }

    /// Database `celeriac` as user `celeriac`, with `query` appended.
    pub fn url(&self, query: &str) -> String {
        format!("mysql://celeriac@127.0.0.1:{}/celeriac?{query}", self.port)
    }
}
