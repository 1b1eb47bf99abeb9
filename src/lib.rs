//! feedmux: watches many news feeds and serves one clean, deduplicated, filtered feed.
//!
//! The modules are the pipeline's stages, in the order data flows through them:
//! [`fetch`] -> [`parse`] -> [`dedup`] -> [`store`] -> [`publish`] -> [`http`], with
//! [`filter`] deciding which stored items each output feed shows, [`schedule`] deciding when
//! each source is polled, and [`refresh`] the one place that runs a source through every stage.
//! [`daemon`] wires them together and holds the [`clock`] everything is dated by; [`config`]
//! reads the TOML file; [`redact`] is the one form in which source URLs leave the process.
//! See ARCHITECTURE.md.

pub mod clock;
pub mod config;
pub mod daemon;
pub mod dedup;
pub mod fetch;
pub mod filter;
pub mod http;
pub mod metrics;
pub mod model;
pub mod opml;
pub mod parse;
pub mod publish;
pub mod redact;
pub mod refresh;
pub mod sanitise;
pub mod schedule;
pub mod store;
pub mod systemd;
pub mod text;
pub mod watcher;
