//! Checking the `[[feed]]` tables: names, sources and tags, keywords and regexes, and the
//! feed's limits (`limit`, `max_per_source`, `max_age`, `match_in`).

use super::*;

pub(super) fn validate_feeds(
    raw: Vec<Spanned<RawFeed>>,
    sources: &[SourceConfig],
    declared: &HashSet<String>,
    report: &mut Reporter<'_>,
) -> Vec<FeedConfig> {
    let mut seen = HashSet::new();
    let mut feeds = Vec::with_capacity(raw.len());
    for spanned in raw {
        let raw = spanned.into_inner();
        check_name("feed", &raw.name, report);
        if !seen.insert(raw.name.get_ref().clone()) {
            report.at(
                raw.name.span(),
                format!("duplicate feed name {:?}", raw.name.get_ref()),
            );
        }
        let mut selected: Vec<String> = match &raw.sources {
            Some(names) => {
                let mut list = Vec::new();
                for name in names {
                    if sources.iter().any(|s| &s.name == name.get_ref()) {
                        list.push(name.get_ref().clone());
                    } else if !declared.contains(name.get_ref()) {
                        report.at(
                            name.span(),
                            format!(
                                "feed {:?} names unknown source {:?}",
                                raw.name.get_ref(),
                                name.get_ref()
                            ),
                        );
                    }
                }
                list
            }
            None => sources.iter().map(|s| s.name.clone()).collect(),
        };
        if let Some(tags) = &raw.tags {
            let known: HashSet<&str> = sources
                .iter()
                .flat_map(|s| s.tags.iter().map(String::as_str))
                .collect();
            for tag in tags {
                if !known.contains(tag.get_ref().as_str()) {
                    report.at(
                        tag.span(),
                        format!("no source carries tag {:?}", tag.get_ref()),
                    );
                }
            }
            selected.retain(|name| {
                sources
                    .iter()
                    .find(|s| &s.name == name)
                    .is_some_and(|s| tags.iter().any(|t| s.tags.contains(t.get_ref())))
            });
        }
        selected.dedup();
        let include = keywords(&raw.include, report);
        let exclude = keywords(&raw.exclude, report);
        let include_regex = regexes(&raw.include_regex, report);
        let exclude_regex = regexes(&raw.exclude_regex, report);
        let limit = match raw.limit {
            Some(n) if *n.get_ref() < 1 || *n.get_ref() as u64 > MAX_FEED_LIMIT as u64 => {
                report.at(
                    n.span(),
                    format!("limit must be between 1 and {MAX_FEED_LIMIT}"),
                );
                DEFAULT_FEED_LIMIT
            }
            Some(n) => *n.get_ref() as usize,
            None => DEFAULT_FEED_LIMIT,
        };
        let feed = raw.name.get_ref().as_str();
        let max_per_source = feed_max_per_source(feed, raw.max_per_source, report);
        let max_age = feed_max_age(feed, raw.max_age, report);
        let match_in = feed_match_in(feed, raw.match_in, report);
        let name = raw.name.into_inner();
        feeds.push(FeedConfig {
            title: raw
                .title
                .filter(|t| !t.trim().is_empty())
                .unwrap_or_else(|| name.clone()),
            name,
            description: raw.description,
            sources: selected,
            include,
            exclude,
            include_regex,
            exclude_regex,
            limit,
            group_stories: raw.group_stories.unwrap_or(true),
            max_per_source,
            max_age,
            match_in,
        });
    }
    feeds
}

/// `[[feed]] max_per_source`: a whole number from 1.
pub(super) fn feed_max_per_source(
    feed: &str,
    raw: Option<Spanned<i64>>,
    report: &mut Reporter<'_>,
) -> Option<usize> {
    let value = raw?;
    match usize::try_from(*value.get_ref()) {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            report.at(
                value.span(),
                format!(
                    "feed {feed:?}: max_per_source must be at least 1 (got {}; leave it out for no cap)",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

/// `[[feed]] max_age`: a duration above zero ("7d", "36h").
pub(super) fn feed_max_age(
    feed: &str,
    raw: Option<Spanned<String>>,
    report: &mut Reporter<'_>,
) -> Option<Duration> {
    let text = raw?;
    match humantime::parse_duration(text.get_ref().trim()) {
        Ok(d) if !d.is_zero() => Some(d),
        _ => {
            report.at(
                text.span(),
                format!(
                    "feed {feed:?}: invalid max_age {:?}: expected a duration such as \"7d\", \"36h\" or \"90m\"",
                    text.get_ref()
                ),
            );
            None
        }
    }
}

/// `[[feed]] match_in`: `"all"` (title, summary and content) or `"title"`.
pub(super) fn feed_match_in(
    feed: &str,
    raw: Option<Spanned<String>>,
    report: &mut Reporter<'_>,
) -> MatchIn {
    let Some(text) = raw else {
        return MatchIn::All;
    };
    match text.get_ref().trim() {
        "all" => MatchIn::All,
        "title" => MatchIn::Title,
        other => {
            report.at(
                text.span(),
                format!(
                    "feed {feed:?}: match_in must be \"title\" or \"all\" (title, summary and content), not {other:?}"
                ),
            );
            MatchIn::All
        }
    }
}

pub(super) fn keywords(raw: &[Spanned<String>], report: &mut Reporter<'_>) -> Vec<String> {
    let mut out = Vec::with_capacity(raw.len());
    for k in raw {
        if k.get_ref().trim().is_empty() {
            report.at(k.span(), "empty keyword".to_owned());
        } else {
            out.push(k.get_ref().trim().to_owned());
        }
    }
    out
}

pub(super) fn regexes(raw: &[Spanned<String>], report: &mut Reporter<'_>) -> Vec<Regex> {
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        match Regex::new(r.get_ref()) {
            Ok(re) => out.push(re),
            Err(e) => {
                let detail = e.to_string().lines().last().unwrap_or_default().to_owned();
                report.at(
                    r.span(),
                    format!("invalid regex {:?}: {detail}", r.get_ref()),
                )
            }
        }
    }
    out
}
