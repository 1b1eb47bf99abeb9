//! Connections to the database, each owned by a worker thread of its own.
//!
//! The `postgres` client blocks, and must not be called from inside the daemon's async
//! runtime; the engine's traits are synchronous and are called from both. So every database
//! call is a job sent to one of a few worker threads, each holding one connection, and the
//! caller waits for its answer. A connection that broke (the server restarted, the network
//! dropped) is opened again by the next job, so the engine recovers by itself once the
//! database is back; until then every call fails quickly with [`StoreError::Database`].

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use postgres::Client;

use super::tls::Connector;
use crate::store::StoreError;

/// How long opening a connection may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A worker's connection, opened on first use and again after it broke.
pub(super) struct Connection {
    connector: Arc<Connector>,
    shown: Arc<str>,
    client: Option<Client>,
}

impl Connection {
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let client = self
                .connector
                .connect()
                .map_err(|e| StoreError::Unreachable {
                    url: self.shown.to_string(),
                    message: describe(&e),
                })?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| StoreError::Unreachable {
            url: self.shown.to_string(),
            message: "no connection".to_owned(),
        })
    }
}

/// What went wrong opening a connection: the server's own message ("database \"x\" does
/// not exist") or the cause ("Connection refused"), not the client's bare "db error".
fn describe(e: &postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => db.to_string(),
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    }
}

/// The worker threads and the queue of jobs they take from.
pub(super) struct Pool {
    jobs: Mutex<mpsc::Sender<Job>>,
    shown: Arc<str>,
}

impl Pool {
    /// Starts `connections` workers connecting with `connector`; `shown` is the database's URL
    /// without its password, for messages. No connection is opened until a job needs one.
    pub(super) fn new(mut connector: Connector, shown: &str, connections: usize) -> Pool {
        connector.config.connect_timeout(CONNECT_TIMEOUT);
        connector.config.application_name("feedmux");
        let connector = Arc::new(connector);
        let shown: Arc<str> = Arc::from(shown);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..connections {
            let receiver = receiver.clone();
            let mut connection = Connection {
                connector: connector.clone(),
                shown: shown.clone(),
                client: None,
            };
            let started = std::thread::Builder::new()
                .name(format!("feedmux-db-{n}"))
                .spawn(move || work(&receiver, &mut connection));
            if let Err(e) = started {
                tracing::warn!(error = %e, "cannot start a database worker thread");
            }
        }
        Pool {
            jobs: Mutex::new(sender),
            shown,
        }
    }

    /// Runs `job` on a connection and returns its answer. Database errors come back as
    /// [`StoreError::Database`]; a connection that cannot be opened as
    /// [`StoreError::Unreachable`].
    pub(super) fn run<R, F>(&self, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Client) -> Result<R, StoreError> + Send + 'static,
    {
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |connection: &mut Connection| {
            let mut result = connection.client().and_then(job);
            // A statement that failed because the connection broke says the database went
            // away, not that it refused the statement.
            let broke = connection.client.as_ref().is_some_and(|c| c.is_closed());
            if let (Err(StoreError::Database { message }), true) = (&result, broke) {
                result = Err(StoreError::Unreachable {
                    url: connection.shown.to_string(),
                    message: message.clone(),
                });
            }
            let _ = answer.send(result);
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        if sent.is_err() {
            return Err(self.gone());
        }
        answered.recv().unwrap_or_else(|_| Err(self.gone()))
    }

    fn gone(&self) -> StoreError {
        StoreError::Unreachable {
            url: self.shown.to_string(),
            message: "the database call failed unexpectedly (its worker stopped)".to_owned(),
        }
    }
}

/// A worker: takes jobs until the pool is dropped. A job that panics loses its connection (its
/// transaction's state is unknown), never the worker.
fn work(jobs: &Mutex<mpsc::Receiver<Job>>, connection: &mut Connection) {
    loop {
        let job = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job(connection)));
        if ran.is_err() {
            connection.client = None;
        }
    }
}
