//! The file as TOML gives it: every section and key, each value with its place in the file
//! (`Spanned`) so that an error can point at it. Nothing is checked here.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) storage: RawStorage,
    #[serde(default)]
    pub(super) poll: RawPoll,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) dedup: RawDedup,
    #[serde(default, rename = "source")]
    pub(super) sources: Vec<Spanned<RawSource>>,
    #[serde(default, rename = "feed")]
    pub(super) feeds: Vec<Spanned<RawFeed>>,
    #[serde(default)]
    pub(super) websub: Option<RawWebSub>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebSub {
    pub(super) hub: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) base_url: Option<Spanned<String>>,
    pub(super) show_source_urls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) engine: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) path: Option<String>,
    pub(super) retention_days: Option<Spanned<u32>>,
    pub(super) max_items: Option<Spanned<u64>>,
    pub(super) max_items_per_source: Option<Spanned<u64>>,
    pub(super) prune_interval: Option<Spanned<String>>,
    pub(super) cache_size: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPoll {
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) concurrency: Option<Spanned<usize>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) max_body_size: Option<Spanned<String>>,
    pub(super) per_host_concurrency: Option<Spanned<usize>>,
    pub(super) per_host_interval: Option<Spanned<String>>,
    pub(super) max_interval: Option<Spanned<String>>,
    pub(super) backoff_base: Option<Spanned<String>>,
    pub(super) backoff_max: Option<Spanned<String>>,
    pub(super) max_new_items: Option<Spanned<usize>>,
    #[serde(default)]
    pub(super) allow_private_networks: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDedup {
    pub(super) enabled: Option<bool>,
    pub(super) threshold: Option<Spanned<f64>>,
    pub(super) window: Option<Spanned<String>>,
    pub(super) memory_items: Option<usize>,
    pub(super) index_age: Option<Spanned<String>>,
    pub(super) model: Option<Spanned<String>>,
    pub(super) meaning_threshold: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) name: Spanned<String>,
    pub(super) url: Spanned<String>,
    pub(super) schedule: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tags: Vec<Spanned<String>>,
    pub(super) title: Option<String>,
    pub(super) enabled: Option<bool>,
    pub(super) priority: Option<i32>,
    pub(super) max_items: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFeed {
    pub(super) name: Spanned<String>,
    pub(super) title: Option<String>,
    pub(super) description: Option<String>,
    pub(super) sources: Option<Vec<Spanned<String>>>,
    pub(super) tags: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) include: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) exclude: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) include_regex: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) exclude_regex: Vec<Spanned<String>>,
    pub(super) limit: Option<Spanned<i64>>,
    pub(super) group_stories: Option<bool>,
    pub(super) max_per_source: Option<Spanned<i64>>,
    pub(super) max_age: Option<Spanned<String>>,
    pub(super) match_in: Option<Spanned<String>>,
}
