//! The PostgreSQL storage engine's surroundings: the private test cluster works (its
//! databases are separate and take connections, it stops and starts), and `feedmux check`
//! shows a database URL without its password.

use std::process::{Command, Output};

use crate::pg_cluster::PgCluster;
use crate::{binary, tempdir};

/// Connects to `url` (on a thread of its own, as the cluster's harness does) and returns the
/// database's name, or the connection error.
fn current_database(url: &str) -> Result<String, String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client =
            ::postgres::Client::connect(&url, ::postgres::NoTls).map_err(|e| e.to_string())?;
        let row = client
            .query_one("SELECT current_database()", &[])
            .map_err(|e| e.to_string())?;
        Ok(row.get::<_, String>(0))
    })
    .join()
    .expect("the connecting thread")
}

#[test]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
fn two_fresh_databases_are_distinct_and_accept_connections() {
    let cluster = PgCluster::shared();
    let first = cluster.fresh_database("harness self-test");
    let second = cluster.fresh_database("harness self-test");
    assert_ne!(first, second);
    let (a, b) = (current_database(&first), current_database(&second));
    let (a, b) = (a.expect("first database"), b.expect("second database"));
    assert_ne!(a, b);
    assert!(a.starts_with("harness_self_test_"), "{a}");
    assert!(
        first.starts_with("postgres://feedmux@127.0.0.1:"),
        "{first}"
    );
    assert_eq!(cluster.url_for(&a), first);
}

#[test]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
fn a_stopped_cluster_refuses_connections_until_started_again() {
    let cluster = PgCluster::private();
    let url = cluster.fresh_database("restarted");
    assert!(current_database(&url).is_ok());
    cluster.stop();
    assert!(
        current_database(&url).is_err(),
        "connected to a stopped server"
    );
    cluster.start();
    assert_eq!(current_database(&url).as_deref(), Ok("restarted_0"));
}

/// `feedmux check` of `config`, with `FEEDMUX_STORAGE_URL` set to `env_url` (or unset).
fn check(config: &str, env_url: Option<&str>) -> Output {
    let dir = tempdir();
    let path = dir.path().join("feedmux.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(binary());
    command.args(["check", "--config"]).arg(&path);
    match env_url {
        Some(url) => command.env("FEEDMUX_STORAGE_URL", url),
        None => command.env_remove("FEEDMUX_STORAGE_URL"),
    };
    command.output().unwrap()
}

#[test]
fn check_shows_the_database_url_without_its_password() {
    let secret = "hunter2-not-for-logs";
    let config = format!(
        "[storage]\nengine = \"postgres\"\nurl = \"postgres://feedmux:{secret}@db.example:5432/feeds\"\n"
    );
    let out = check(&config, None);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("store in PostgreSQL at postgres://feedmux:***@db.example:5432/feeds"),
        "{stdout}"
    );
    assert!(stdout.contains("storage engine postgres"), "{stdout}");
    assert!(
        stdout.contains("database TLS: sslmode=prefer: encrypted when the server offers it; the server's certificate is not verified"),
        "{stdout}"
    );
    assert!(stdout.contains("PGPASSWORD or ~/.pgpass"), "{stdout}");
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "{stdout}{stderr}"
    );
}

#[test]
fn check_takes_the_database_from_feedmux_storage_url() {
    let secret = "env-secret-value";
    let url = format!("postgresql://feedmux:{secret}@db.example/feeds?sslmode=require");
    let out = check("", Some(&url));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "store in PostgreSQL at postgresql://feedmux:***@db.example/feeds?sslmode=require"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains(secret), "{stdout}");
    assert!(
        stdout.contains("database TLS: sslmode=require: always encrypted; the server's certificate is not verified"),
        "{stdout}"
    );
    let ca_dir = tempdir();
    let ca = ca_dir.path().join("db-ca.pem");
    std::fs::write(&ca, "").unwrap();
    let url = format!(
        "postgres://feedmux@db.example/feeds?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let out = check("", Some(&url));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("database TLS: sslmode=verify-full: always encrypted; the server's certificate verified against the CA certificates of {}, and its host name", ca.display())),
        "{stdout}"
    );
    // Without the variable, the same file is sled's.
    let out = check("", None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("store at ./data"), "{stdout}");
}

#[test]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
fn instances_starting_together_migrate_the_database_once() {
    let url = PgCluster::shared().fresh_database("migrate");
    let parsed = feedmux::config::DatabaseUrl::parse(&url).unwrap();
    // Six instances open the new database at the same moment: each migration runs once, under
    // the database's lock, and every instance opens it.
    let opened: Vec<_> = (0..6)
        .map(|_| {
            let parsed = parsed.clone();
            std::thread::spawn(move || feedmux::store::Store::open_postgres(&parsed).map(|_| ()))
        })
        .collect();
    for open in opened {
        open.join().unwrap().unwrap();
    }
    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let versions: Vec<i32> = client
        .query("SELECT version FROM feedmux_schema", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert!(versions[0] >= 2, "{versions:?}");
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'poll_claims'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
}
