//! `import-opml` and `export-opml`: the config file's sources to and from a feed reader's
//! subscription list.

use std::process::ExitCode;

use anyhow::Context;

use feedmux::config::{self, Config};
use feedmux::fetch::address;
use feedmux::opml::FeedUrls;
use feedmux::redact;

use super::access::StoreAccess;

/// Adds the feeds of the OPML list `file` to the config file, keeping its comments and
/// layout; writes nothing when the result would not be a valid config.
pub(crate) fn import_opml(config: &Config, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let list = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let feeds = match feedmux::opml::parse(&String::from_utf8_lossy(&list)) {
        Ok(feeds) => feeds,
        Err(e) => {
            eprintln!("feedmux: {}: {e}", file.display());
            return Ok(ExitCode::from(2));
        }
    };
    let path = &config.path;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (new_text, report) = feedmux::opml::add_sources(&text, &feeds)
        .with_context(|| format!("cannot edit {}", path.display()))?;
    // The config is written before anything is printed: a reader of the output that goes
    // away (`| head`) must not cost the import.
    if !report.added.is_empty() {
        if let Err(errors) = config::parse(path, &new_text) {
            eprintln!(
                "feedmux: {} left unchanged: with these sources it would not be valid:",
                path.display()
            );
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return Ok(ExitCode::from(2));
        }
        write_replacing(path, &new_text)?;
    }
    let mut out = String::new();
    for (name, url, tags) in &report.added {
        let url = redact::url_str(url);
        if tags.is_empty() {
            out.push_str(&format!("added    {name:<28} {url}\n"));
        } else {
            out.push_str(&format!(
                "added    {name:<28} {url}  tags: {}\n",
                tags.join(", ")
            ));
        }
    }
    for (url, why) in &report.skipped {
        out.push_str(&format!("skipped  {}: {why}\n", redact::url_str(url)));
    }
    warn_of_private_sources(&report.added);
    if report.added.is_empty() {
        out.push_str(&format!("nothing to add to {}\n", path.display()));
    } else {
        out.push_str(&format!(
            "{} added, {} skipped; {} updated (a running feedmux reloads it by itself)\n",
            report.added.len(),
            report.skipped.len(),
            path.display()
        ));
    }
    print_ignoring_closed_stdout(&out);
    Ok(ExitCode::SUCCESS)
}

/// Warns on stderr of each imported source that points into a private network: feedmux
/// trusts configured sources wherever they point, so a list from someone else must not
/// smuggle in `http://localhost:8080/admin`.
fn warn_of_private_sources(added: &[(String, String, Vec<String>)]) {
    for (name, url, _) in added {
        let Ok(parsed) = url::Url::parse(url) else {
            continue;
        };
        if let Some(why) = address::private_looking(&parsed) {
            eprintln!(
                "feedmux: warning: source {name:?} ({}) points into a private network ({why}); \
                 configured sources may reach it, so remove it unless you meant it",
                redact::url_str(url)
            );
        }
    }
}

/// Writes `text` to stdout; a closed stdout (a pipe whose reader has gone) is not an error
/// worth failing for once the work is done (`println!` would panic).
fn print_ignoring_closed_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Replaces `path` with `text` in one step (a temporary file beside it, renamed over it), so
/// a daemon watching the file never reads half of it. The file's permissions are kept.
fn write_replacing(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let temp = path.with_file_name(format!(".{name}.feedmux-new"));
    std::fs::write(&temp, text).with_context(|| format!("cannot write {}", temp.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&temp, meta.permissions());
    }
    std::fs::rename(&temp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// Writes the configured sources as OPML to stdout: public URLs, or as configured with
/// `full_urls`.
pub(crate) fn export_opml(config: &Config, full_urls: bool) -> anyhow::Result<()> {
    let states = StoreAccess::open(config)?.source_states(config)?;
    let urls = if full_urls {
        FeedUrls::Full
    } else {
        FeedUrls::Public(config.server.source_urls)
    };
    print!("{}", feedmux::opml::write(config, &states, urls));
    Ok(())
}
