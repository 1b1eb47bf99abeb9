//! feedmux as a systemd service: the shipped unit passes `systemd-analyze verify` and
//! `security`, and the real binary speaks the notification protocol (ready, watchdog,
//! reloading, stopping) to a socket the test binds in place of systemd's.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{binary, tempdir};

/// `systemd-analyze`, which `.ci/run` installs; the test fails when it is missing unless
/// FEEDMUX_SKIP_SYSTEMD=1 says to skip it.
fn systemd_analyze() -> Option<Command> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(Command::new("systemd-analyze"));
    }
    if std::env::var("FEEDMUX_SKIP_SYSTEMD").as_deref() == Ok("1") {
        eprintln!("systemd-analyze missing; skipped because FEEDMUX_SKIP_SYSTEMD=1");
        return None;
    }
    panic!("systemd-analyze not found: install the Debian package `systemd` (.ci/run does), or set FEEDMUX_SKIP_SYSTEMD=1 to skip");
}

/// The shipped unit with `ExecStart` pointing at the binary under test (verify wants the
/// program to exist).
fn unit_copy(dir: &Path) -> std::path::PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/feedmux.service");
    let text = std::fs::read_to_string(&shipped).unwrap();
    assert!(
        text.contains("ExecStart=/usr/local/bin/feedmux run "),
        "the unit runs the installed binary"
    );
    let text = text.replace(
        "ExecStart=/usr/local/bin/feedmux",
        &format!("ExecStart={}", binary().display()),
    );
    let path = dir.join("feedmux.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
#[ignore = "needs systemd-analyze: run by .ci/run, or cargo test -- --include-ignored"]
fn the_systemd_unit_verifies_and_rates_ok_for_exposure() {
    let Some(mut verify) = systemd_analyze() else {
        return;
    };
    let dir = tempdir();
    let unit = unit_copy(dir.path());
    let out = verify.arg("verify").arg(&unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("feedmux.service"),
        "systemd-analyze verify complains about the unit: {stderr}"
    );

    let Some(mut security) = systemd_analyze() else {
        return;
    };
    let out = security
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for feedmux.service:"))
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{stdout}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"));
    println!("systemd-analyze security: {line}");
    assert!(score <= 2.0, "exposure {score} is over 2.0:\n{stdout}");
}

/// Reads notification datagrams until one contains `wanted`; returns every line seen.
fn wait_for(socket: &UnixDatagram, wanted: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = message.lines().any(|l| l == wanted);
                seen.extend(message.lines().map(str::to_owned));
                if found {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    panic!("no {wanted} within 20 s; received: {seen:?}");
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_real_binary_notifies_ready_watchdog_reloading_and_stopping() {
    let dir = tempdir();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples");
    let config = dir.path().join("feedmux.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"store\"\n[[source]]\nname = \"lab\"\nurl = \"file://{}/lab-blog.atom\"\n[[feed]]\nname = \"all\"\n",
            samples.display()
        ),
    )
    .unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut daemon = crate::cli::KillOnDrop(
        Command::new(binary())
            .args(["run", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    let mut seen = Vec::new();
    wait_for(&socket, "READY=1", &mut seen);
    // Ready means serving: the status names the bound address, which answers /readyz.
    let status = seen
        .iter()
        .find_map(|l| l.strip_prefix("STATUS=serving 1 output feeds from 1 sources on "))
        .unwrap_or_else(|| panic!("{seen:?}"));
    let addr: std::net::SocketAddr = status.parse().unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /readyz HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    // Pings every WATCHDOG_USEC/2: several within a second.
    seen.clear();
    wait_for(&socket, "WATCHDOG=1", &mut seen);
    wait_for(&socket, "WATCHDOG=1", &mut seen);

    seen.clear();
    signal(pid, "HUP");
    wait_for(&socket, "RELOADING=1", &mut seen);
    assert!(
        seen.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 comes with MONOTONIC_USEC: {seen:?}"
    );
    wait_for(&socket, "READY=1", &mut seen);

    seen.clear();
    signal(pid, "TERM");
    wait_for(&socket, "STOPPING=1", &mut seen);
    let status = daemon.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "clean stop on SIGTERM");
}
