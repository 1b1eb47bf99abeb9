//! The PostgreSQL engine over TLS, with libpq's `sslmode` and `sslrootcert`, against a private
//! cluster with `ssl = on` whose certificate (for the address 127.0.0.1 only) a CA made in the
//! test signed, and whose `pg_hba.conf` takes TCP connections over TLS only: a store that opens
//! at all talks TLS. `verify-full` with that CA connects, stores and serves; another CA, or
//! another host name under `verify-full`, is refused with the certificate's problem named and
//! the URL shown without its password; `verify-ca` and `require` connect; `disable` is refused
//! by the server. And an `sslmode` libpq does not know, or a CA file that cannot be read, is an
//! error of `feedmux check`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use feedmux::config::DatabaseUrl;
use feedmux::store::{Store, StoreError};

use crate::pg_cluster::PgCluster;
use crate::real::{free_port, RealDaemon};
use crate::test_ca::TestCa;
use crate::upstream::Upstream;
use crate::{binary, rss_feed, tempdir, RssItem};

/// The TLS-only cluster the tests of this file share, and the PEM of the CA that signed its
/// certificate and of another CA.
struct TlsServer {
    cluster: PgCluster,
    ca_pem: String,
    other_ca_pem: String,
}

/// Started on first use; stopped by the cluster's watchdog when the test process ends.
fn server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let ca = TestCa::new("feedmux test CA");
        let other = TestCa::new("feedmux other CA");
        let cluster = PgCluster::private_with_tls(ca.server_cert(&["127.0.0.1"]));
        TlsServer {
            cluster,
            ca_pem: ca.cert_pem().to_owned(),
            other_ca_pem: other.cert_pem().to_owned(),
        }
    })
}

/// Writes `pem` to `dir/name`; its path.
fn pem_file(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

/// A fresh database of the shared server, its URL with `query` appended.
fn database_url(name_hint: &str, query: &str) -> String {
    let url = server().cluster.fresh_database(name_hint);
    format!("{url}?{query}")
}

/// Opens the store at `url` as the daemon does.
fn open(url: &str) -> Result<Store, StoreError> {
    Store::open_postgres(&DatabaseUrl::parse(url).unwrap())
}

/// The URL and message of an [`StoreError::Unreachable`]; panics on anything else.
fn unreachable(opened: Result<Store, StoreError>) -> (String, String) {
    match opened {
        Err(StoreError::Unreachable { url, message }) => (url, message),
        Err(other) => panic!("not Unreachable: {other}"),
        Ok(_) => panic!("the store opened"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
async fn verify_full_with_the_servers_ca_connects_stores_and_serves_over_tls() {
    let server = server();
    let dir = tempdir();
    let ca = pem_file(dir.path(), "ca.pem", &server.ca_pem);
    let plain_url = server.cluster.fresh_database("tls_daemon");
    let database = plain_url.rsplit('/').next().unwrap().to_owned();
    let url = format!(
        "{plain_url}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let upstream = Upstream::start().await;
    upstream.put(
        "/news.xml",
        &[("content-type", "application/rss+xml")],
        rss_feed(
            "News",
            "http://example.com/",
            (0..2).map(|i| {
                RssItem::new(
                    format!("n{i}"),
                    format!("Report {i} about topic {}", 40 + i),
                    format!("http://example.com/{i}"),
                )
            }),
        ),
    );
    let port = free_port();
    std::fs::write(
        dir.path().join("feedmux.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nbase_url = \"http://feeds.test\"\n\
             [storage]\nengine = \"postgres\"\nurl = {url:?}\n\
             [poll]\nschedule = \"*/2 * * * * *\"\nper_host_interval = \"0s\"\n\
             [dedup]\nenabled = false\n\
             [[source]]\nname = \"news\"\nurl = {:?}\n[[feed]]\nname = \"all\"\n",
            upstream.url("/news.xml")
        ),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let mut daemon = RealDaemon::start(dir.path(), port);
    daemon.wait_ready(&http, Duration::from_secs(30)).await;
    // It polled, stored and serves the items.
    let started = Instant::now();
    loop {
        let body = http
            .get(format!("{}/feeds/all.json", daemon.base()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains("Report 0 about topic 40") && body.contains("Report 1 about topic 41") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the items are not served:\n{body}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every connection of the daemon is encrypted: the pool's and the listener of other
    // instances' changes, as the server itself sees them.
    let query = format!(
        "SELECT a.application_name, s.ssl::text FROM pg_stat_activity a \
         JOIN pg_stat_ssl s ON s.pid = a.pid WHERE a.datname = '{database}'"
    );
    let started = Instant::now();
    loop {
        let rows = server.cluster.query_as_admin(&query);
        let names: Vec<&str> = rows.iter().filter_map(|r| r[0].as_deref()).collect();
        if names.contains(&"feedmux") && names.contains(&"feedmux (changes)") {
            for row in &rows {
                assert_eq!(row[1].as_deref(), Some("true"), "{rows:?}");
            }
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the daemon's connections are not all there: {rows:?}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.kill();
}

#[test]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
fn verify_full_with_another_ca_is_refused_naming_the_problem_and_not_the_password() {
    let dir = tempdir();
    let other = pem_file(dir.path(), "other.pem", &server().other_ca_pem);
    let secret = "tls-secret-never-shown";
    let url = database_url(
        "tls_other_ca",
        &format!("sslmode=verify-full&sslrootcert={}", other.display()),
    )
    .replacen("feedmux@", &format!("feedmux:{secret}@"), 1);
    let opened = open(&url);
    if let Err(e) = &opened {
        let shown = e.to_string();
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.starts_with("cannot reach the database at"), "{shown}");
    }
    let (shown_url, message) = unreachable(opened);
    assert!(
        shown_url.starts_with("postgres://feedmux:***@127.0.0.1:"),
        "{shown_url}"
    );
    assert!(!shown_url.contains(secret), "{shown_url}");
    assert!(
        message.contains("invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
}

#[test]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let dir = tempdir();
    let ca = pem_file(dir.path(), "ca.pem", &server().ca_pem);
    // The certificate is for 127.0.0.1; "localhost" is the same server by another name.
    let full = database_url(
        "tls_name",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    )
    .replacen("@127.0.0.1:", "@localhost:", 1);
    let (_, message) = unreachable(open(&full));
    assert!(
        message.contains("invalid peer certificate: certificate not valid for name \"localhost\""),
        "{message}"
    );
    let ca_only = full.replacen("sslmode=verify-full", "sslmode=verify-ca", 1);
    open(&ca_only).unwrap();
    // By the name in its certificate, verify-full connects.
    let by_address = full.replacen("@localhost:", "@127.0.0.1:", 1);
    open(&by_address).unwrap();
}

#[test]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
fn require_and_the_default_prefer_connect_without_any_roots() {
    open(&database_url("tls_require", "sslmode=require")).unwrap();
    // No sslmode: prefer, which finds TLS offered (and the server takes nothing else).
    open(&server().cluster.fresh_database("tls_prefer")).unwrap();
    // require with an sslrootcert verifies the chain, as in libpq.
    let dir = tempdir();
    let other = pem_file(dir.path(), "other.pem", &server().other_ca_pem);
    let url = database_url(
        "tls_require_root",
        &format!("sslmode=require&sslrootcert={}", other.display()),
    );
    let (_, message) = unreachable(open(&url));
    assert!(message.contains("UnknownIssuer"), "{message}");
}

#[test]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
fn disable_against_a_tls_only_server_is_refused_with_the_servers_message() {
    let (_, message) = unreachable(open(&database_url("tls_disable", "sslmode=disable")));
    assert!(
        message.contains("pg_hba.conf rejects connection") && message.contains("no encryption"),
        "{message}"
    );
}

#[test]
fn verify_full_without_a_readable_root_file_is_an_error_before_connecting() {
    let dir = tempdir();
    let missing = dir.path().join("absent.pem");
    // Nothing listens there: the error comes before any connection.
    let url = format!(
        "postgres://feedmux@127.0.0.1:{}/feeds?sslmode=verify-full&sslrootcert={}",
        free_port(),
        missing.display()
    );
    match open(&url) {
        Err(StoreError::Open { message, .. }) => assert!(
            message.contains(&format!(
                "sslrootcert {}: cannot read it",
                missing.display()
            )),
            "{message}"
        ),
        Err(other) => panic!("not Open: {other}"),
        Ok(_) => panic!("the store opened"),
    }
}

/// `feedmux check` of the config at `path`, which must refuse it: what it printed.
fn check_refused(path: &std::path::Path) -> String {
    let out = std::process::Command::new(binary())
        .args(["check", "--config"])
        .arg(path)
        .env_remove("FEEDMUX_STORAGE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    stdout
}

#[test]
fn check_refuses_an_sslmode_libpq_does_not_know_and_an_unreadable_ca_file() {
    let dir = tempdir();
    let path = dir.path().join("feedmux.toml");
    std::fs::write(
        &path,
        "[storage]\nengine = \"postgres\"\nurl = \"postgres://feedmux:pw@db.example/feeds?sslmode=verify-fulll\"\n",
    )
    .unwrap();
    let stdout = check_refused(&path);
    assert!(
        stdout.contains("invalid sslmode \"verify-fulll\": expected disable, prefer, require, verify-ca or verify-full"),
        "{stdout}"
    );
    assert!(
        stdout.contains("feedmux.toml:3:7: [storage] url"),
        "{stdout}"
    );
    assert!(!stdout.contains(":pw@"), "{stdout}");
    // A CA file that cannot be read, too.
    let missing = dir.path().join("absent.pem");
    std::fs::write(
        &path,
        format!("[storage]\nurl = \"postgres://feedmux@db.example/feeds?sslmode=verify-full&sslrootcert={}\"\n", missing.display()),
    )
    .unwrap();
    let stdout = check_refused(&path);
    assert!(
        stdout.contains(&format!(
            "feedmux.toml:2:7: [storage] url: sslrootcert {}: cannot read it",
            missing.display()
        )),
        "{stdout}"
    );
}
