//! Reloading the config on SIGHUP or a file change: validated first (an invalid one leaves
//! the running config in place and is reported), then applied to the scheduler, the fetcher
//! (`fetcher_for`), the filters and the rendered feeds; settings that need a restart are
//! named (`restart_only_changes`).

use super::*;

/// Reads the config file again and, if it is valid, makes it the running config and brings
/// the output feeds in line with it (indexes of changed rules rebuilt, every feed
/// re-rendered). Returns the new config when it was applied; the caller reschedules sources.
/// A refused config is logged and kept in `reload_failure` for the status page.
pub(super) async fn reload(shared: &Arc<Shared>) -> Option<Arc<Config>> {
    let current = shared.config();
    let refuse = |errors: Vec<String>| {
        // Config errors are redacted where they are made; whatever else is said here too.
        let errors: Vec<String> = errors
            .iter()
            .map(|e| redact::text(e).into_owned())
            .collect();
        for e in &errors {
            error!(error = %e, "config reload refused; keeping the running config");
        }
        *shared
            .reload_failure
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(ReloadFailure {
            at: shared.now(),
            errors,
        });
        None
    };
    let new = match config::load(&current.path) {
        Ok(c) => c,
        Err(errors) => return refuse(errors.0.iter().map(|e| e.to_string()).collect()),
    };
    for change in restart_only_changes(&current, &new) {
        warn!("{change} changes only on restart");
    }
    let store = shared.pipeline.store.clone();
    if new.dedup.memory_items != current.dedup.memory_items {
        store.keep_recent_in_memory(new.dedup.memory_items);
    }
    if new.dedup.model != current.dedup.model {
        spawn_backfill(store.clone(), new.dedup.clone(), shared.clock.clock().now());
    }
    let publisher = shared.publisher.clone();
    let new = Arc::new(new);
    let for_render = new.clone();
    let rebuilt = tokio::task::spawn_blocking(move || {
        sync_feed_indexes(&store, &for_render)?;
        publisher.render_all(&store, &for_render)?;
        let changed: Vec<(String, Vec<Format>)> = for_render
            .feeds
            .iter()
            .filter_map(|f| {
                publisher
                    .get(&f.name)
                    .map(|r| (f.name.clone(), r.changed.clone()))
            })
            .collect();
        Ok::<_, DaemonError>(changed)
    })
    .await;
    match rebuilt {
        Ok(Ok(changed)) => shared.ping_hub(&new, changed),
        Ok(Err(e)) => {
            return refuse(vec![format!(
                "rebuilding the output feeds for the new config failed: {e}"
            )])
        }
        Err(e) => return refuse(vec![format!("config reload task failed: {e}")]),
    }
    shared
        .pipeline
        .fetcher
        .set_address_policy(AddressPolicy::for_config(&new));
    *shared.filters.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(filters_of(&new));
    *shared.config.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
    *shared
        .reload_failure
        .write()
        .unwrap_or_else(|p| p.into_inner()) = None;
    info!(
        sources = new.sources.len(),
        feeds = new.feeds.len(),
        "config reloaded"
    );
    Some(new)
}

/// The HTTP client of `config`: its `[poll]` limits, its sources' and hub's hosts trusted.
pub(super) fn fetcher_for(config: &Config) -> Result<Fetcher, DaemonError> {
    let fetcher = Fetcher::new(&config.poll)?;
    fetcher.set_address_policy(AddressPolicy::for_config(config));
    Ok(fetcher)
}

/// The settings that a reload cannot change in a running daemon, named when they differ.
pub(super) fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.poll, &new.poll);
    let mut changes = Vec::new();
    if old.server.listen != new.server.listen {
        changes.push("[server] listen");
    }
    if old.storage.engine.name() != new.storage.engine.name() {
        changes.push("[storage] engine");
    } else if old.storage.engine != new.storage.engine {
        changes.push("[storage] url");
    }
    if old.storage.path != new.storage.path {
        changes.push("[storage] path");
    }
    if old.storage.cache_bytes != new.storage.cache_bytes {
        changes.push("[storage] cache_size");
    }
    if (
        a.connect_timeout,
        a.timeout,
        a.idle_timeout,
        a.max_body_bytes,
    ) != (
        b.connect_timeout,
        b.timeout,
        b.idle_timeout,
        b.max_body_bytes,
    ) || (a.per_host_concurrency, a.per_host_interval)
        != (b.per_host_concurrency, b.per_host_interval)
    {
        changes.push("[poll] connection settings (timeouts, body size, per-host limits)");
    }
    if old.log_level != new.log_level {
        changes.push("[log] level");
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_storage(storage: &str) -> Config {
        let text = format!("[storage]\n{storage}\n");
        config::parse_with(
            std::path::Path::new("t.toml"),
            &text,
            &config::Environment::default(),
        )
        .expect("a valid config")
    }

    #[test]
    fn a_new_storage_engine_or_database_waits_for_a_restart() {
        let sled = with_storage("engine = \"sled\"");
        let db = with_storage("url = \"postgres://feedmux@db/feeds\"");
        let other_db = with_storage("url = \"postgres://feedmux@db/other\"");
        assert_eq!(restart_only_changes(&sled, &db), ["[storage] engine"]);
        assert_eq!(restart_only_changes(&db, &other_db), ["[storage] url"]);
        assert!(restart_only_changes(&db, &db.clone()).is_empty());
    }
}
