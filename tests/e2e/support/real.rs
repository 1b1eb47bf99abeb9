//! The real `feedmux run` binary as a child process, for tests that kill it, load it or take
//! its disk away: a free port, a config file, its log in a file, and a bounded wait for
//! `/readyz`. The child is killed when the handle is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::binary;

pub struct RealDaemon {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RealDaemon {
    /// Starts `feedmux run --config <dir>/feedmux.toml` in `dir`, its log appended to
    /// `<dir>/feedmux.log`.
    pub fn start(dir: &Path, port: u16) -> RealDaemon {
        let log = dir.join("feedmux.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(dir.join("feedmux.toml"))
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        RealDaemon { child, port, log }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits (at most `limit`) until `/readyz` answers 200; panics with the log otherwise.
    pub async fn wait_ready(&mut self, http: &reqwest::Client, limit: Duration) {
        let started = Instant::now();
        let url = format!("{}/readyz", self.base());
        while started.elapsed() < limit {
            if let Ok(r) = http.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("feedmux exited with {status}:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("feedmux not ready after {limit:?}:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The resident set size of the process, in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    /// The threads the process runs, from /proc.
    pub fn threads(&self) -> u64 {
        self.status_field("Threads:")
    }

    /// A number of /proc/<pid>/status (its unit dropped), 0 when it cannot be read.
    fn status_field(&self, name: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RealDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}
