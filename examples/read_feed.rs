//! Reads feed files as a `file://` source would be read and prints, per file, one JSON line:
//! `{"path", "titles", "recovered"}` or `{"path", "error"}`. Used by `tools/corpus-agreement` to compare
//! feedmux with Python feedparser; not part of the daemon.
//!
//! Usage: `cargo run --example read_feed -- FILE...`

use std::io::Write;

fn main() {
    let now = chrono::Utc::now();
    let mut out = std::io::stdout().lock();
    for path in std::env::args().skip(1) {
        let line = match read(&path, now) {
            Ok((titles, recovered)) => {
                serde_json::json!({ "path": path, "titles": titles, "recovered": recovered })
            }
            Err(error) => serde_json::json!({ "path": path, "error": error }),
        };
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
}

type Read = (Vec<String>, Vec<String>);

fn read(path: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Read, String> {
    let body = std::fs::read(path).map_err(|e| e.to_string())?;
    let absolute = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    let base = url::Url::from_file_path(&absolute).map_err(|()| "not a file path".to_owned())?;
    let feed = feedmux::parse::parse_feed(&body, None, &base, now).map_err(|e| e.to_string())?;
    let titles = feed.entries.into_iter().map(|e| e.title).collect();
    Ok((titles, feed.recovered))
}
