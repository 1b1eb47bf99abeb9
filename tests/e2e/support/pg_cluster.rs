//! A private PostgreSQL cluster for the tests of the PostgreSQL engine: `initdb` into a fresh
//! temporary directory, the server listening on 127.0.0.1 only at a free port (its Unix socket
//! inside that directory), `fsync` off, every connection trusted, superuser `feedmux`.
//!
//! [`PgCluster::shared`] starts one per test process on first use and stops it when the
//! process exits; each test takes its own database from it ([`PgCluster::fresh_database`]).
//! A test that stops the server (a database that goes down) takes a [`PgCluster::private`]
//! one instead, stopped when dropped; a test of TLS a [`PgCluster::private_with_tls`] one,
//! with `ssl = on` and TCP connections over TLS only. A watchdog process stops a cluster and removes its
//! directory within a second of the test process dying, killed or not.
//!
//! As root (CI containers) the PostgreSQL programs run as the `postgres` user
//! (`runuser -u postgres --`), which owns the cluster's directory. The programs are found on
//! PATH or under `/usr/lib/postgresql/*/bin` (the newest); `.ci/run` installs Debian's
//! `postgresql` when neither has them.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The superuser the clusters are made with (and every URL connects as).
pub const SUPERUSER: &str = "feedmux";

static SHARED: OnceLock<PgCluster> = OnceLock::new();

/// Clusters made by this process, for unique directory names.
static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// A server certificate and its key, PEM, for a cluster with `ssl = on`.
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

/// One running PostgreSQL cluster of this test process.
pub struct PgCluster {
    /// Holds `data` (the cluster), `sock` (the Unix socket) and `log` (the server's log).
    dir: PathBuf,
    port: u16,
    programs: Programs,
    /// `ssl = on` with this certificate, and TCP connections over TLS only.
    tls: Option<ServerTls>,
    /// Databases made so far, for unique names.
    databases: AtomicUsize,
}

impl PgCluster {
    /// The cluster this test process shares, started on first use and stopped at exit.
    pub fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| {
            let cluster = PgCluster::start_new(None);
            // SAFETY: `stop_shared` is a plain function that only reads SHARED.
            unsafe { libc::atexit(stop_shared) };
            cluster
        })
    }

    /// A cluster of the caller's own, stopped and removed when dropped: for a test that stops
    /// and starts the server, which would break the tests sharing [`PgCluster::shared`].
    pub fn private() -> PgCluster {
        PgCluster::start_new(None)
    }

    /// A cluster of the caller's own with `ssl = on`, serving `tls`'s certificate, whose
    /// `pg_hba.conf` takes TCP connections over TLS only (`hostssl` trusted, `hostnossl`
    /// rejected): a client that connects at all connected over TLS. The harness itself
    /// connects over the Unix socket.
    pub fn private_with_tls(tls: ServerTls) -> PgCluster {
        PgCluster::start_new(Some(tls))
    }

    /// A new, empty database whose name starts with `name_hint`; its URL.
    pub fn fresh_database(&self, name_hint: &str) -> String {
        let number = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}_{number}", database_name(name_hint));
        self.run_as_admin(&format!("CREATE DATABASE \"{name}\""));
        self.url_for(&name)
    }

    /// Runs `statements` in the `postgres` database as the superuser, over the Unix socket
    /// (which a TLS-only cluster trusts too).
    pub fn run_as_admin(&self, statements: &str) {
        let statements = statements.to_owned();
        self.as_admin(move |client| {
            client
                .batch_execute(&statements)
                .unwrap_or_else(|e| panic!("{statements}: {e}"));
        });
    }

    /// The rows of `query` (each column read as text) in the `postgres` database as the
    /// superuser, over the Unix socket.
    pub fn query_as_admin(&self, query: &str) -> Vec<Vec<Option<String>>> {
        let query = query.to_owned();
        self.as_admin(move |client| {
            client
                .query(&query, &[])
                .unwrap_or_else(|e| panic!("{query}: {e}"))
                .iter()
                .map(|row| (0..row.len()).map(|i| row.get(i)).collect())
                .collect()
        })
    }

    /// `job`'s answer on a connection to the `postgres` database as the superuser, over the
    /// Unix socket; on a thread of its own: the sync client runs a runtime, which cannot start
    /// inside a `#[tokio::test]`'s.
    fn as_admin<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut ::postgres::Client) -> R + Send + 'static,
    ) -> R {
        let mut admin = ::postgres::Config::new();
        admin
            .host_path(self.dir.join("sock"))
            .port(self.port)
            .user(SUPERUSER)
            .dbname("postgres");
        std::thread::spawn(move || {
            let mut client = admin
                .connect(::postgres::NoTls)
                .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {e}"));
            job(&mut client)
        })
        .join()
        .expect("the admin connection")
    }

    /// The URL of database `database` in this cluster.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The port the server listens on (at 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (fast shutdown: connections are closed), keeping its data.
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-w", "-m", "fast"]);
    }

    /// Starts the stopped server again, on the same port.
    pub fn start(&self) {
        let started = self.try_start();
        assert!(started, "{}", self.log_tail());
    }

    fn start_new(tls: Option<ServerTls>) -> PgCluster {
        let programs = Programs::find();
        let dir = cluster_dir(&programs);
        let mut cluster = PgCluster {
            dir,
            port: 0,
            programs,
            tls,
            databases: AtomicUsize::new(0),
        };
        // Watched from before initdb: a test killed at any point leaves nothing behind.
        watch(&cluster);
        cluster.init();
        for _attempt in 0..5 {
            // Another process may take the port between its finding and the server's start.
            cluster.port = free_port();
            cluster.configure();
            if cluster.try_start() {
                return cluster;
            }
        }
        panic!("the test cluster did not start: {}", cluster.log_tail());
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn init(&self) {
        let out = self
            .programs
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-U", SUPERUSER, "--auth=trust", "--no-sync"])
            .args(["--encoding=UTF8", "--locale=C"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Appends the test settings to `postgresql.conf` (a later line wins over an earlier one).
    fn configure(&self) {
        let settings = format!(
            "\n# feedmux tests\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n# Every test's daemons and handles hold a few connections each, many tests at once.\nmax_connections = 500\n",
            self.port,
            self.dir.join("sock").display()
        );
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .expect("postgresql.conf of the test cluster");
        file.write_all(settings.as_bytes())
            .expect("write postgresql.conf");
        if let Some(tls) = &self.tls {
            self.configure_tls(tls, &mut file);
        }
    }

    /// `ssl = on` with `tls`'s certificate and key (the key 0600 and the server user's, as
    /// the server demands), and a `pg_hba.conf` that rejects TCP connections without TLS.
    fn configure_tls(&self, tls: &ServerTls, conf: &mut fs::File) {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data();
        for (name, text, mode) in [
            ("server.crt", &tls.cert_pem, 0o644),
            ("server.key", &tls.key_pem, 0o600),
            (
                "pg_hba.conf",
                &"local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n".to_owned(),
                0o600,
            ),
        ] {
            let path = data.join(name);
            fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
            if let Some((uid, gid)) = self.programs.as_postgres {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
            }
        }
        conf.write_all(b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
            .expect("write postgresql.conf");
    }

    fn try_start(&self) -> bool {
        let log = self.dir.join("log");
        let log = log.to_str().expect("a UTF-8 temporary directory");
        self.pg_ctl_status(&["start", "-w", "-t", "60", "-l", log])
    }

    fn pg_ctl(&self, args: &[&str]) {
        let ok = self.pg_ctl_status(args);
        assert!(ok, "pg_ctl {args:?} failed: {}", self.log_tail());
    }

    fn pg_ctl_status(&self, args: &[&str]) -> bool {
        self.programs
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The end of the server's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops the server at once and removes its directory.
    fn remove(&self) {
        let _ = self.pg_ctl_status(&["stop", "-m", "immediate"]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.remove();
    }
}

extern "C" fn stop_shared() {
    if let Some(cluster) = SHARED.get() {
        cluster.remove();
    }
}

/// Where the PostgreSQL programs are, and whom they run as.
struct Programs {
    bin: PathBuf,
    /// As root: the programs run as the `postgres` user, whose ids these are.
    as_postgres: Option<(u32, u32)>,
}

impl Programs {
    fn find() -> Programs {
        let bin = bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql/*/bin): run .ci/run, or apt-get install postgresql"
            )
        });
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let as_postgres = root.then(|| {
            postgres_user().unwrap_or_else(|| {
                panic!("running as root, the test cluster runs as the postgres user, and there is none: apt-get install postgresql")
            })
        });
        Programs { bin, as_postgres }
    }

    /// `program` of the PostgreSQL installation, run as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.as_postgres {
            Some(_) => {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    /// The command (with its arguments) that stops the cluster in `data` at once.
    fn stop_command(&self, data: &Path) -> Vec<String> {
        let mut words = Vec::new();
        if self.as_postgres.is_some() {
            words.extend(["runuser", "-u", "postgres", "--"].map(String::from));
        }
        words.push(self.bin.join("pg_ctl").display().to_string());
        words.extend(["-D".to_owned(), data.display().to_string()]);
        words.extend(["stop", "-m", "immediate"].map(String::from));
        words
    }
}

/// The directory holding `initdb` and `pg_ctl`: that of the `initdb` on PATH, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Option<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .map(|dir| dir.join("initdb"))
        .filter(|initdb| initdb.is_file())
        .filter_map(|initdb| fs::canonicalize(initdb).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|dir| has_all(dir));
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_all(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The uid and gid of the `postgres` user.
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: the name is a valid C string; the entry is read before any other getpw* call.
    unsafe {
        let entry = libc::getpwnam(c"postgres".as_ptr());
        if entry.is_null() {
            None
        } else {
            Some(((*entry).pw_uid, (*entry).pw_gid))
        }
    }
}

/// A fresh directory for a cluster, owned by the user the programs run as. As root it is
/// made in `/tmp` when the temporary directory's parents are closed to the postgres user.
fn cluster_dir(programs: &Programs) -> PathBuf {
    let mut base = std::env::temp_dir();
    if programs.as_postgres.is_some() && !traversable(&base) {
        base = PathBuf::from("/tmp");
    }
    remove_orphans(&base, programs);
    let number = CLUSTERS.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!("feedmux-pg-{}-{number}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    fs::create_dir(dir.join("sock")).expect("socket directory");
    if let Some((uid, gid)) = programs.as_postgres {
        for path in [dir.clone(), dir.join("sock")] {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
    dir
}

/// Stops and removes the clusters in `base` of test processes that are gone (a watchdog that
/// could not do it: the machine was restarted, say).
fn remove_orphans(base: &Path, programs: &Programs) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("feedmux-pg-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let words = programs.stop_command(&entry.path().join("data"));
            let _ = Command::new(&words[0])
                .args(&words[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether others may pass through `dir` and each of its parents.
fn traversable(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors()
        .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// `hint` as the start of a database name: lowercase letters, digits and `_`, 40 at most.
fn database_name(hint: &str) -> String {
    let name: String = hint
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .take(40)
        .collect();
    if name.is_empty() {
        "test".to_owned()
    } else {
        name
    }
}

/// Starts a process, outside this one's process group, that waits for this process to end
/// (however it ends) and then stops `cluster` and removes its directory.
fn watch(cluster: &PgCluster) {
    use std::os::unix::process::CommandExt;
    let script = r#"pid=$1; dir=$2; shift 2
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
"$@" >/dev/null 2>&1
rm -rf "$dir""#;
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("feedmux-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(&cluster.dir)
        .args(cluster.programs.stop_command(&cluster.data()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        panic!("cannot start the test cluster's watchdog: {e}");
    }
}
