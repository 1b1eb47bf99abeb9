//! The commands that show what the store holds and why: `sources`, `stories`, `why` and
//! `preview`. They read through [`StoreAccess`], so they work beside a running daemon too
//! (`stories` and `why` need the store itself).

use std::process::ExitCode;

use feedmux::config::Config;
use feedmux::model::{Hold, SourceState};
use feedmux::redact::Urls;

use super::access::StoreAccess;

/// Lists the stories reported by more than one source since `since` ago ("24h", "7d").
pub(crate) fn stories(config: &Config, since: &str) -> anyhow::Result<ExitCode> {
    let Ok(since) = humantime::parse_duration(since) else {
        eprintln!("feedmux: invalid --since {since:?}: expected e.g. 24h or 7d");
        return Ok(ExitCode::from(2));
    };
    let store = StoreAccess::open_local(config)?;
    // A span longer than the calendar (`--since 1000000y`) means everything.
    let since = chrono::Duration::from_std(since)
        .ok()
        .and_then(|since| chrono::Utc::now().checked_sub_signed(since))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let groups = feedmux::dedup::explain::stories(&store, since)?;
    if groups.is_empty() {
        println!("no story was reported by more than one source in that time");
    }
    for group in groups {
        println!("story {}", group.story);
        for (item, link) in group.members {
            let how = match link {
                None => "first".to_owned(),
                Some(l) => format!(
                    "{} {:.2}{}",
                    match l.kind {
                        feedmux::dedup::MergeKind::Url => "same URL",
                        feedmux::dedup::MergeKind::Text => "similar",
                        feedmux::dedup::MergeKind::Through => "through",
                    },
                    l.score,
                    l.meaning
                        .map_or(String::new(), |m| format!(" meaning {m:.3}"))
                ),
            };
            println!(
                "  {}  {:<14} {:<16} {}",
                item.id, how, item.source, item.title
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Says whether and why the items `a` and `b` (ids or unique prefixes) are one story.
pub(crate) fn why(config: &Config, a: &str, b: &str) -> anyhow::Result<ExitCode> {
    let store = StoreAccess::open_local(config)?;
    let find = |text: &str| -> anyhow::Result<Option<feedmux::model::Item>> {
        Ok(feedmux::dedup::explain::find_item(&store, text)?)
    };
    let (Some(item_a), Some(item_b)) = (find(a)?, find(b)?) else {
        eprintln!("feedmux: no item (or more than one) matches {a:?} or {b:?}; ids are listed by `feedmux stories`");
        return Ok(ExitCode::from(2));
    };
    for line in feedmux::dedup::explain::why(&store, &item_a, &item_b, &config.dedup)? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a table of the configured sources: health, items, last and next poll, last error.
pub(crate) fn sources(config: &Config) -> anyhow::Result<()> {
    let states = StoreAccess::open(config)?.source_states(config)?;
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "-".to_owned())
    };
    let width = config
        .sources
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let health = |source: &feedmux::config::SourceConfig, s: &SourceState| {
        if source.enabled {
            s.health()
        } else {
            "disabled".to_owned()
        }
    };
    let status_width = config
        .sources
        .iter()
        .map(|source| {
            let s = states
                .iter()
                .find(|(n, _)| *n == source.name)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            health(source, &s).chars().count()
        })
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<width$}  {:<status_width$}  {:>6}  {:<16}  {:<16}  LAST ERROR / NOTE",
        "SOURCE", "STATUS", "ITEMS", "LAST POLL", "NEXT POLL"
    );
    for source in &config.sources {
        let s = states
            .iter()
            .find(|(name, _)| *name == source.name)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        let next = match s.hold(source.url.as_str(), chrono::Utc::now()) {
            _ if !source.enabled => None,
            Some(Hold::Gone) => None,
            _ => s
                .next_poll
                .or_else(|| feedmux::schedule::next_slot(&source.schedule, chrono::Utc::now())),
        };
        println!(
            "{:<width$}  {:<status_width$}  {:>6}  {:<16}  {:<16}  {}",
            source.name,
            health(source, &s),
            s.item_count,
            when(s.last_poll),
            when(next),
            s.note(source.url.as_str(), Urls::Redacted)
        );
    }
    Ok(())
}

/// Judges the newest stored items of a feed's sources by the feed's rules in the config file.
pub(crate) fn preview(config: &Config, feed: &str, limit: usize) -> anyhow::Result<ExitCode> {
    let Some(feed_config) = config.feed(feed) else {
        eprintln!("feedmux: unknown feed {feed:?}");
        return Ok(ExitCode::from(2));
    };
    let filter = feedmux::filter::FeedFilter::new(feed_config);
    let items = StoreAccess::open(config)?.newest_items(&feed_config.sources, limit)?;
    println!(
        "feed {} ({}): rules of {}, sources: {}",
        feed_config.name,
        feed_config.title,
        config.path.display(),
        feed_config.sources.join(", ")
    );
    let source_width = items
        .iter()
        .map(|i| i.source.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut kept = 0;
    let mut why_dropped: std::collections::BTreeMap<String, usize> = Default::default();
    let mut limits = FeedLimits::new(feed_config);
    for item in &items {
        let decision = filter.decide(item);
        let (keep, rule) = match decision.kept() {
            true => limits.judge(item, decision.rule().to_string()),
            false => (false, decision.rule().to_string()),
        };
        if keep {
            kept += 1;
        } else {
            *why_dropped.entry(rule.clone()).or_default() += 1;
        }
        println!(
            "{}  {}  {:<source_width$}  {:<28}  {}",
            if keep { "KEEP" } else { "DROP" },
            item.published.format("%Y-%m-%d %H:%M"),
            item.source,
            rule,
            item.title
        );
    }
    let reasons: Vec<String> = why_dropped
        .iter()
        .map(|(rule, n)| format!("{rule}: {n}"))
        .collect();
    println!(
        "{feed} keeps {kept} and drops {} of the {} newest stored items of its sources{}; it serves the newest {} kept{}",
        items.len() - kept,
        items.len(),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        feed_config.limit,
        if feed_config.group_stories {
            ", one per story"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// A feed's `max_age` and `max_per_source`, applied as `preview` meets the items, newest first.
struct FeedLimits<'a> {
    feed: &'a feedmux::config::FeedConfig,
    oldest: Option<chrono::DateTime<chrono::Utc>>,
    kept_of_source: std::collections::HashMap<String, usize>,
}

impl<'a> FeedLimits<'a> {
    fn new(feed: &'a feedmux::config::FeedConfig) -> FeedLimits<'a> {
        let oldest = feed.oldest_allowed(chrono::Utc::now());
        FeedLimits {
            feed,
            oldest,
            kept_of_source: Default::default(),
        }
    }

    /// Whether an item the rules keep stays in the feed, and the rule that says so.
    fn judge(&mut self, item: &feedmux::model::Item, rule: String) -> (bool, String) {
        if let (Some(oldest), Some(age)) = (self.oldest, self.feed.max_age) {
            if item.published < oldest {
                return (
                    false,
                    format!("max_age {}", humantime::format_duration(age)),
                );
            }
        }
        if let Some(cap) = self.feed.max_per_source {
            let kept = self.kept_of_source.entry(item.source.clone()).or_default();
            if *kept >= cap {
                return (false, format!("max_per_source {cap}"));
            }
            *kept += 1;
        }
        (true, rule)
    }
}
