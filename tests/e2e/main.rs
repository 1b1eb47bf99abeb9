//! End-to-end tests: real upstream servers on 127.0.0.1, the real pipeline, and output read
//! back the way a feed reader reads it.

mod broken;
mod browser;
mod caching;
mod cli;
mod clock;
mod cluster;
mod copy_store;
mod crash;
mod daemon;
mod damaged;
mod encodings;
mod exposure;
mod faults;
mod feed_rules;
mod files;
mod fuzz_corpus;
mod hostile;
mod ingest;
mod load;
mod logs;
mod metrics;
mod opml;
mod paging;
mod postgres;
mod postgres_tls;
mod preview;
mod properties;
mod readers;
mod reload;
mod retention;
mod secrets;
mod service;
mod ssrf;
mod status;
mod stories;
mod upgrade;
mod validity;
mod websub;
mod xss;

mod support;
// The helpers, as `crate::upstream::Upstream`, `crate::fixture`, ...
pub use support::*;
