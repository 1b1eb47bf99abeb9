//! A daemon running in the test process on 127.0.0.1:0, as readers and browsers reach it.
//!
//! sled 0.34 guards every database of a process with one global reader-writer lock: a batch
//! write in one store waits for readers in all of them, and a store flushing (holding a read
//! guard while its I/O threads need another) then never finishes. Two in-process daemons
//! started side by side deadlocked that way, so the tests here take turns ([`sled_turn`]);
//! a separate process per store, as in production, is not affected by the other stores.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use feedmux::clock::{self, Clock};
use feedmux::config;
use feedmux::daemon::{self, Control};
use feedmux::publish::Publisher;

use super::storage_keys;
use tokio::sync::{mpsc, Mutex, OwnedMutexGuard};

/// Waits until no other test of these modules has a store open in this process.
pub async fn sled_turn() -> OwnedMutexGuard<()> {
    static TURN: OnceLock<Arc<Mutex<()>>> = OnceLock::new();
    TURN.get_or_init(|| Arc::new(Mutex::new(())))
        .clone()
        .lock_owned()
        .await
}

/// A daemon in this process, stopped by [`Served::stop`]; it holds the test's turn at sled
/// until dropped.
pub struct Served {
    /// `http://127.0.0.1:port`, where it listens.
    pub base: String,
    control: mpsc::Sender<Control>,
    task: tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
    _turn: OwnedMutexGuard<()>,
}

impl Served {
    /// Starts the daemon on a config of `tables` (sources, feeds, extra sections) whose
    /// `base_url` is the address it listens on; the store lives in `dir`.
    pub async fn start(dir: &Path, tables: &str) -> Served {
        Served::start_with(dir, tables, Arc::new(Publisher::new())).await
    }

    /// [`Served::start`], serving from `publisher` (a test may hold its search slots).
    pub async fn start_with(dir: &Path, tables: &str, publisher: Arc<Publisher>) -> Served {
        let turn = sled_turn().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nbase_url = \"{base}\"\n[storage]\n{}[poll]\nper_host_interval = \"0s\"\n{tables}",
            storage_keys(dir)
        );
        let path = dir.join("feedmux.toml");
        std::fs::write(&path, &text).unwrap();
        let config = config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        Served::spawn(turn, config, listener, clock::system(), publisher)
    }

    /// Starts the daemon on `config` as it is (its `base_url` too), listening on a free port.
    pub async fn with_config(config: config::Config) -> Served {
        Served::with_clock(config, clock::system()).await
    }

    /// [`Served::with_config`], every time of day read from `clock`.
    pub async fn with_clock(config: config::Config, clock: Arc<dyn Clock>) -> Served {
        let turn = sled_turn().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Served::spawn(turn, config, listener, clock, Arc::new(Publisher::new()))
    }

    /// [`Served::with_config`] for a test that took its `turn` at sled before (to use the
    /// store before the daemon starts).
    pub async fn in_turn(turn: OwnedMutexGuard<()>, config: config::Config) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Served::spawn(
            turn,
            config,
            listener,
            clock::system(),
            Arc::new(Publisher::new()),
        )
    }

    fn spawn(
        turn: OwnedMutexGuard<()>,
        config: config::Config,
        listener: tokio::net::TcpListener,
        clock: Arc<dyn Clock>,
        publisher: Arc<Publisher>,
    ) -> Served {
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (control, rx) = mpsc::channel(1);
        let task = tokio::spawn(daemon::run_with_publisher(
            config, listener, rx, clock, publisher,
        ));
        Served {
            base,
            control,
            task,
            _turn: turn,
        }
    }

    /// `127.0.0.1:port`, for a raw TCP connection.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The daemon's control channel (a reload, a shutdown without waiting for it).
    pub fn control(&self) -> &mpsc::Sender<Control> {
        &self.control
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits (bounded) until `/feeds/{feed}.json` lists `entries` items.
    pub async fn wait_for(&self, feed: &str, entries: usize) {
        let http = reqwest::Client::new();
        let url = self.url(&format!("/feeds/{feed}.json"));
        let mut seen = 0;
        for _ in 0..200 {
            if let Ok(r) = http.get(&url).send().await {
                let body = r.bytes().await.unwrap_or_default();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    seen = v["items"].as_array().map_or(0, |a| a.len());
                    if seen >= entries {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{url} has {seen} entries, not {entries}, after 10 s");
    }

    /// Stops the daemon cleanly, within a minute (a poll in flight is waited for).
    pub async fn stop(self) {
        self.stop_within(Duration::from_secs(60)).await;
    }

    /// Stops the daemon, failing unless it stopped cleanly within `time`.
    pub async fn stop_within(self, time: Duration) {
        self.control.send(Control::Shutdown).await.unwrap();
        tokio::time::timeout(time, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
