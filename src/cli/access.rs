//! How a command reaches the store: [`StoreAccess::Local`] opens it, and when a running
//! daemon holds it (sled allows one process), [`StoreAccess::Daemon`] asks that daemon over
//! its HTTP API instead. Commands read through the methods here and never choose themselves.

use anyhow::Context;

use feedmux::config::Config;
use feedmux::daemon;
use feedmux::fetch::address::AddressPolicy;
use feedmux::fetch::{FetchError, FetchOutcome, Fetcher, Validators};
use feedmux::model::{Item, SourceState};
use feedmux::publish::{Format, Publisher};
use feedmux::store::{Store, StoreError};

use super::runtime;

pub(crate) enum StoreAccess {
    /// The store, opened by this process.
    Local(Store),
    /// The daemon that holds the store, asked over HTTP.
    Daemon(Daemon),
}

impl StoreAccess {
    /// The store itself, or the daemon serving this config when it holds the store.
    pub(crate) fn open(config: &Config) -> anyhow::Result<StoreAccess> {
        match daemon::open_store(config) {
            Ok(store) => Ok(StoreAccess::Local(store)),
            Err(StoreError::Locked { .. }) => Ok(StoreAccess::Daemon(Daemon::of(config)?)),
            Err(e) => Err(e.into()),
        }
    }

    /// The store itself, for commands that need more than the HTTP API tells.
    pub(crate) fn open_local(config: &Config) -> anyhow::Result<Store> {
        daemon::open_store(config).map_err(|e| match e {
            StoreError::Locked { .. } => anyhow::anyhow!(
                "{e}: stop the daemon first (systemctl stop feedmux), or run this on a copy of the store"
            ),
            other => other.into(),
        })
    }

    /// Each configured source with its state. The daemon's states have redacted URLs
    /// (`SourceState::public`); the configured URL is put back where the daemon said the
    /// source is gone from it or moved from it.
    pub(crate) fn source_states(
        &self,
        config: &Config,
    ) -> anyhow::Result<Vec<(String, SourceState)>> {
        match self {
            StoreAccess::Local(store) => config
                .sources
                .iter()
                .map(|s| Ok((s.name.clone(), store.source_state(&s.name)?)))
                .collect(),
            StoreAccess::Daemon(daemon) => {
                #[derive(serde::Deserialize)]
                struct Row {
                    name: String,
                    state: SourceState,
                }
                let body = daemon.get("/api/sources")?.unwrap_or_default();
                let rows: Vec<Row> = serde_json::from_slice(&body)
                    .context("the daemon's /api/sources is not valid")?;
                Ok(rows
                    .into_iter()
                    .map(|r| {
                        let state = match config.source(&r.name) {
                            Some(source) => r.state.from_public(source.url.as_str()),
                            None => r.state,
                        };
                        (r.name, state)
                    })
                    .collect())
            }
        }
    }

    /// The newest `limit` stored items of each of `sources`, newest first, `limit` in all.
    pub(crate) fn newest_items(
        &self,
        sources: &[String],
        limit: usize,
    ) -> anyhow::Result<Vec<Item>> {
        let mut items = Vec::new();
        match self {
            StoreAccess::Local(store) => {
                for source in sources {
                    items.extend(store.source_items(source, limit)?);
                }
            }
            StoreAccess::Daemon(daemon) => {
                let limit = limit.min(feedmux::http::routes::MAX_API_ITEMS);
                for source in sources {
                    let path = format!("/api/items?source={source}&limit={limit}");
                    // None: a source new in the edited file that the daemon does not know yet.
                    if let Some(body) = daemon.get(&path)? {
                        items.extend(
                            serde_json::from_slice::<Vec<Item>>(&body)
                                .context("the daemon's /api/items is not valid")?,
                        );
                    }
                }
            }
        }
        items.sort_by(|a, b| b.published.cmp(&a.published).then(a.id.cmp(&b.id)));
        items.truncate(limit);
        Ok(items)
    }

    /// An output feed as it is served (the caller has checked that `feed` is configured).
    pub(crate) fn render(
        &self,
        config: &Config,
        feed: &str,
        format: Format,
    ) -> anyhow::Result<Vec<u8>> {
        match self {
            StoreAccess::Local(store) => {
                daemon::sync_feed_indexes(store, config)?;
                let rendered = Publisher::new().render(store, config, feed)?;
                Ok(rendered
                    .get(format)
                    .map(|doc| doc.body.to_vec())
                    .unwrap_or_default())
            }
            StoreAccess::Daemon(daemon) => {
                let path = format!("/feeds/{feed}.{}", format.extension());
                daemon
                    .get(&path)?
                    .with_context(|| format!("the daemon does not serve {path} (yet)"))
            }
        }
    }
}

/// The running daemon that serves a config, asked over its HTTP API.
pub(crate) struct Daemon {
    base: String,
    /// Where the store is, for messages.
    store: std::path::PathBuf,
    fetcher: Fetcher,
    runtime: tokio::runtime::Runtime,
}

impl Daemon {
    fn of(config: &Config) -> anyhow::Result<Daemon> {
        let mut addr = config.server.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let base = format!("http://{addr}");
        let fetcher = Fetcher::new(&config.poll)?;
        // The daemon is on this machine, often on 127.0.0.1: trust its address.
        fetcher.set_address_policy(AddressPolicy::new([&url::Url::parse(&base)?], Vec::new()));
        Ok(Daemon {
            base,
            store: config.storage.path.clone(),
            fetcher,
            runtime: runtime()?,
        })
    }

    /// The body of `path`, or `None` when the daemon answers 404.
    fn get(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let url = url::Url::parse(&format!("{}{path}", self.base))?;
        match self
            .runtime
            .block_on(self.fetcher.fetch(&url, &Validators::default()))
        {
            Ok(FetchOutcome::Fetched(fetched)) => Ok(Some(fetched.body.to_vec())),
            Ok(FetchOutcome::NotModified(_)) => anyhow::bail!("unexpected 304 from {url}"),
            Err(FetchError::Status { status, .. }) if status == reqwest::StatusCode::NOT_FOUND => {
                Ok(None)
            }
            Err(e) => Err(anyhow::anyhow!(
                "the store at {} is in use by a running feedmux, and asking it at {url} failed: {e}",
                self.store.display()
            )),
        }
    }
}
