//! The status page at `/`: one self-contained HTML document (inline CSS and SVG, no script,
//! nothing fetched from elsewhere) showing every output feed with its subscribe links and
//! autodiscovery tags, the sources [`SOURCES_PER_PAGE`] to a page (`/?page=N`, failing ones
//! first) each with its state, polls, last error and a 30-day chart of its items, a refused
//! config reload, a failing store and a recent jump of the clock if there are.
//!
//! It reads the config, the store's source states and `by_source` index, and the publisher's
//! cache; it changes nothing and renders no feed. Every text that comes from a config, a feed
//! or an error is escaped here, and source URLs (links, errors, moves) are shown only as
//! `[server] show_source_urls` says (`redact::Urls`). The HTTP side (headers, the route) is
//! the server's.

use std::fmt::Write;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::clock::{ClockJump, ClockSkew};
use crate::config::{Config, SourceConfig};
use crate::metrics::StoreFault;
use crate::model::{Hold, ReloadFailure, SourceState, SourceStatus};
use crate::publish::{feed_url, Format, Publisher};
use crate::schedule;
use crate::store::{Store, StoreError};

/// Days shown in each source's chart, today included.
pub const CHART_DAYS: usize = 30;

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1d2230;--muted:#667085;--line:#e4e7ec;--bg:#fff;--card:#f8f9fb;--ok:#1a7f37;--bad:#c0262d;--off:#8a6d00;--bar:#3b6fd8}
@media (prefers-color-scheme:dark){:root{--fg:#e6e8ee;--muted:#98a2b3;--line:#2c3342;--bg:#141821;--card:#1b202b;--ok:#4ac26b;--bad:#ff6b6b;--off:#e3b341;--bar:#6d9bff}}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Noto Sans','Noto Sans CJK SC','PingFang SC',sans-serif;margin:0;color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:24px 20px 40px}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:8px 20px;margin-bottom:12px}
h1{font-size:24px;margin:0}
h2{font-size:17px;margin:28px 0 8px}
.muted,header p{color:var(--muted);margin:0}
.summary{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0 4px;padding:0;list-style:none}
.summary li{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:6px 12px}
.summary b{font-size:18px;margin-right:4px}
table{border-collapse:collapse;width:100%}
th,td{padding:7px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
a{color:var(--bar)}
.state{font-weight:600;max-width:170px}
.state.ok{color:var(--ok)}.state.recovered{color:var(--off)}.state.failing{color:var(--bad)}.state.off{color:var(--off)}.state.new{color:var(--muted)}
.error{color:var(--bad);min-width:220px;max-width:360px;overflow-wrap:anywhere;font-size:13px}
.when{white-space:nowrap;font-size:13px}
.sub a{display:inline-block;margin-right:8px;padding:1px 8px;border:1px solid var(--line);border-radius:10px;text-decoration:none;font-size:13px}
svg.chart{display:block}svg.chart rect{fill:var(--bar)}svg.chart rect.zero{fill:var(--line)}
.alert{border:1px solid var(--bad);border-left-width:5px;border-radius:6px;padding:10px 14px;margin:14px 0;background:var(--card)}
.alert.notice{border-color:var(--off)}
.alert p{margin:0 0 6px}.alert ul{margin:0;padding-left:20px;color:var(--bad);font-family:ui-monospace,monospace;font-size:13px}
footer{margin-top:28px;color:var(--muted);font-size:13px}
nav.pages{margin:8px 0;color:var(--muted);font-size:14px}nav.pages a{margin-left:10px}
";

/// The media type of a format, without parameters, for `type` attributes.
fn media_type(format: Format) -> &'static str {
    match format {
        Format::Atom => "application/atom+xml",
        Format::Rss => "application/rss+xml",
        Format::Json => "application/feed+json",
        Format::Html => "text/html",
    }
}

fn label(format: Format) -> &'static str {
    match format {
        Format::Atom => "Atom",
        Format::Rss => "RSS",
        Format::Json => "JSON Feed",
        Format::Html => "Web page",
    }
}

fn esc(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

fn attr(s: &str) -> String {
    html_escape::encode_double_quoted_attribute(s).into_owned()
}

/// An absolute time with a relative hint, e.g. "3 min ago" titled "2026-11-27 02:31:00 UTC".
fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(t) = t else {
        return "<span class=\"muted\">—</span>".to_owned();
    };
    let absolute = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let seconds = (t - now).num_seconds();
    let span = |s: i64| match s {
        0..60 => format!("{s} s"),
        60..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    };
    let relative = if seconds == 0 {
        "just now".to_owned()
    } else if seconds < 0 {
        format!("{} ago", span(-seconds))
    } else {
        format!("in {}", span(seconds))
    };
    format!(
        "<time class=\"when\" datetime=\"{}\" title=\"{}\">{}</time>",
        t.to_rfc3339(),
        attr(&absolute),
        esc(&relative)
    )
}

/// Items per UTC day over the last [`CHART_DAYS`] days, oldest first, ending today.
pub fn per_day(times: &[DateTime<Utc>], now: DateTime<Utc>) -> Vec<(NaiveDate, u64)> {
    let today = now.date_naive();
    let mut days: Vec<(NaiveDate, u64)> = (0..CHART_DAYS)
        .rev()
        .map(|back| (today - Duration::days(back as i64), 0))
        .collect();
    for t in times {
        let back = (today - t.date_naive()).num_days();
        if (0..CHART_DAYS as i64).contains(&back) {
            days[CHART_DAYS - 1 - back as usize].1 += 1;
        }
    }
    days
}

/// A bar chart of `days` as inline SVG, each bar titled with its date and count.
fn chart(source: &str, days: &[(NaiveDate, u64)]) -> String {
    const BAR: usize = 5;
    const GAP: usize = 1;
    const HEIGHT: u64 = 28;
    let total: u64 = days.iter().map(|(_, n)| n).sum();
    let max = days.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let width = days.len() * (BAR + GAP);
    let mut svg = format!(
        "<svg class=\"chart\" width=\"{width}\" height=\"{HEIGHT}\" viewBox=\"0 0 {width} {HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        attr(&format!("{source}: {total} items in the last {} days, at most {max} a day", days.len()))
    );
    for (i, (day, n)) in days.iter().enumerate() {
        // A day with items is at least 2 px high; an empty day a 1 px baseline.
        let h = if *n == 0 {
            1
        } else {
            (n * (HEIGHT - 2) / max).max(2)
        };
        let _ = write!(
            svg,
            "<rect{} x=\"{}\" y=\"{}\" width=\"{BAR}\" height=\"{h}\"><title>{day}: {n} item{}</title></rect>",
            if *n == 0 { " class=\"zero\"" } else { "" },
            i * (BAR + GAP),
            HEIGHT - h,
            if *n == 1 { "" } else { "s" }
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The state of a source in a word or a few, and its CSS class.
fn state_of(source: &SourceConfig, state: &SourceState) -> (String, &'static str) {
    if !source.enabled {
        return ("disabled".to_owned(), "off");
    }
    let class = match state.status {
        SourceStatus::Ok | SourceStatus::NotModified if state.recovered.is_some() => "recovered",
        SourceStatus::Ok | SourceStatus::NotModified => "ok",
        SourceStatus::Failing => "failing",
        SourceStatus::Gone => "off",
        SourceStatus::New => "new",
    };
    (state.health(), class)
}

/// When `source` is next polled, as `feedmux sources` tells it.
fn next_poll(
    source: &SourceConfig,
    state: &SourceState,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match state.hold(source.url.as_str(), now) {
        _ if !source.enabled => None,
        Some(Hold::Gone) => None,
        _ => state
            .next_poll
            .or_else(|| schedule::next_slot(&source.schedule, now)),
    }
}

/// What is wrong or unusual, shown at the top of the status page.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults<'a> {
    /// Why the last reload was refused, until one succeeds.
    pub reload_failure: Option<&'a ReloadFailure>,
    /// The store failing its writes, while it does.
    pub store_fault: Option<&'a StoreFault>,
    /// A recent jump of the wall clock (information, not a failure).
    pub clock_jump: Option<&'a ClockJump>,
    /// The clock compared with the feed servers' (shown when it is wrong).
    pub clock_skew: Option<&'a ClockSkew>,
}

/// Sources listed on one page of the status page.
pub const SOURCES_PER_PAGE: usize = 100;

/// A source as the status page lists it.
struct Listed<'a> {
    source: &'a SourceConfig,
    state: SourceState,
}

impl Listed<'_> {
    fn failing(&self) -> bool {
        self.source.enabled && self.state.status == SourceStatus::Failing
    }
}

/// Page `number` (from 1) of the status page: the summary, faults and output feeds, then
/// [`SOURCES_PER_PAGE`] sources, failing ones first (else in config order), with links to
/// the pages before and after. A page past the last lists no source and says where they are.
pub fn page(
    config: &Config,
    store: &Store,
    publisher: &Publisher,
    faults: Faults<'_>,
    now: DateTime<Utc>,
    number: usize,
) -> Result<String, StoreError> {
    let tolerate = faults.store_fault.is_some();
    let mut states = tolerant(store.source_states(), tolerate)?;
    let mut listed = Vec::with_capacity(config.sources.len());
    for source in &config.sources {
        let state = states.remove(&source.name).unwrap_or_default();
        listed.push(Listed { source, state });
    }
    // Failing sources first, so that page 1 shows every problem (the sort is stable).
    listed.sort_by_key(|l| !l.failing());
    let day_ago = now - Duration::hours(24);
    let mut last_day = 0;
    for l in &listed {
        last_day += tolerant(store.source_item_times(&l.source.name, day_ago), tolerate)?.len();
    }
    let mut html = String::with_capacity(64 * 1024);
    head(&mut html, config);
    let _ = write!(
        html,
        "<header><h1>feedmux</h1><p>status at {} · version {}</p></header>\n<ul class=\"summary\"><li><b>{}</b>sources</li><li><b>{}</b>failing</li><li><b>{}</b>output feeds</li><li><b>{last_day}</b>items in the last 24 h</li><li><b>{}</b>items stored</li></ul>\n",
        now.format("%Y-%m-%d %H:%M:%S UTC"),
        env!("CARGO_PKG_VERSION"),
        listed.len(),
        listed.iter().filter(|l| l.failing()).count(),
        config.feeds.len(),
        store.item_count()
    );
    alerts(&mut html, config, faults);
    feeds_table(&mut html, config, publisher);
    let first = number.saturating_sub(1).saturating_mul(SOURCES_PER_PAGE);
    let shown = listed.get(first..).unwrap_or_default();
    let shown = &shown[..shown.len().min(SOURCES_PER_PAGE)];
    let pager = pager(number, listed.len());
    html.push_str("<h2>Sources</h2>\n");
    html.push_str(&pager);
    sources_table(&mut html, config, store, shown, now, tolerate)?;
    html.push_str(&pager);
    html.push_str("<footer>Also: <a href=\"/opml\">OPML of the sources</a> · <a href=\"/metrics\">metrics</a> · <a href=\"/api/sources\">sources as JSON</a> · <a href=\"/healthz\">health</a></footer>\n</main></body></html>\n");
    Ok(html)
}

/// A store read's value; its default when the store is failing (it may be closed while it
/// is reopened, and the page still says why).
fn tolerant<T: Default>(read: Result<T, StoreError>, tolerate: bool) -> Result<T, StoreError> {
    match read {
        Err(_) if tolerate => Ok(T::default()),
        read => read,
    }
}

/// Pages needed for `sources` sources (at least one).
pub fn pages_for(sources: usize) -> usize {
    sources.div_ceil(SOURCES_PER_PAGE).max(1)
}

/// Where page `number` stands among the pages of `total` sources, with links to its
/// neighbours (relative, so that the page works under any prefix a proxy adds).
fn pager(number: usize, total: usize) -> String {
    let pages = pages_for(total);
    let link =
        |n: usize, rel: &str, text: &str| format!("<a href=\"?page={n}\" rel=\"{rel}\">{text}</a>");
    let mut nav = String::from("<nav class=\"pages\">");
    let first = number.saturating_sub(1).saturating_mul(SOURCES_PER_PAGE);
    if total == 0 {
        nav.push_str("<span>no sources</span>");
    } else if first >= total {
        let _ = write!(
            nav,
            "<span>no sources on page {number}: there are {total}, on pages 1-{pages}</span> {}",
            link(pages, "prev", "last page")
        );
    } else {
        let last = (first + SOURCES_PER_PAGE).min(total);
        let _ = write!(
            nav,
            "<span>sources {}-{last} of {total} (page {number} of {pages})</span>",
            first + 1
        );
        if number > 1 {
            nav.push(' ');
            nav.push_str(&link(number - 1, "prev", "← previous"));
        }
        if number < pages {
            nav.push(' ');
            nav.push_str(&link(number + 1, "next", "next →"));
        }
    }
    nav.push_str("</nav>\n");
    nav
}

/// The document's head: title, autodiscovery of every output feed, the style.
fn head(html: &mut String, config: &Config) {
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>feedmux status</title>\n");
    for feed in &config.feeds {
        for format in Format::ALL {
            let _ = writeln!(
                html,
                "<link rel=\"alternate\" type=\"{}\" title=\"{}\" href=\"{}\">",
                media_type(format),
                attr(&format!("{} ({})", feed.title, label(format))),
                attr(&feed_url(config, &feed.name, format))
            );
        }
    }
    let _ = write!(html, "<style>{STYLE}</style>\n</head><body><main>\n");
}

/// What is wrong or unusual: a failing store, a jump or skew of the clock, a refused reload.
fn alerts(html: &mut String, config: &Config, faults: Faults<'_>) {
    let Faults {
        reload_failure,
        store_fault,
        clock_jump,
        clock_skew,
    } = faults;
    if let Some(fault) = store_fault {
        let _ = writeln!(
            html,
            "<section class=\"alert\" id=\"store-error\"><p><strong>The store is failing its writes</strong> since {}: feedmux serves the feeds it has, polls fail until it recovers, and it reopens the store by itself ({} attempts so far; what was stored stays). Free space on its disk if it is full.</p><ul><li>{}</li></ul></section>",
            esc(&fault.since.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            fault.reopen_attempts,
            esc(&fault.error)
        );
    }

    if let Some(jump) = clock_jump {
        let _ = writeln!(
            html,
            "<section class=\"alert notice\" id=\"clock-jump\"><p><strong>The system clock jumped {}</strong> at {} (the time of day moved that much more than the time that passed). feedmux goes on polling by the schedule and serving; {}</p></section>",
            esc(&jump.describe()),
            esc(&jump.at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            if jump.forward() {
                "items are not pruned by age until the clock has kept time for an hour, in case the jump is undone."
            } else {
                "what is first seen now is dated by the new clock."
            }
        );
    }

    if let Some(skew) = clock_skew.filter(|s| s.is_wrong()) {
        let _ = writeln!(
            html,
            "<section class=\"alert notice\" id=\"clock-skew\"><p><strong>The system clock is {}</strong> (their HTTP <code>Date</code> headers). feedmux dates what it first sees by this clock; {} Set the clock right (NTP: <code>timedatectl set-ntp true</code>).</p></section>",
            esc(&skew.describe()),
            if skew.is_ahead() {
                "items are not pruned by age while it is ahead."
            } else {
                "items are pruned later than they would be."
            }
        );
    }

    if let Some(failure) = reload_failure {
        let _ = write!(
            html,
            "<section class=\"alert\" id=\"reload-error\"><p><strong>The config file was changed but not applied</strong> ({}): feedmux goes on with the config it had. Fix the file and save it again, or run <code>feedmux check</code>.</p><ul>",
            esc(&failure.at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        );
        for e in &failure.errors {
            let e = config.server.source_urls.text(e);
            let _ = write!(html, "<li>{}</li>", esc(&e));
        }
        html.push_str("</ul></section>\n");
    }
}

/// Every output feed with its entries and subscribe links.
fn feeds_table(html: &mut String, config: &Config, publisher: &Publisher) {
    html.push_str("<h2>Output feeds</h2>\n<table id=\"feeds\"><thead><tr><th>feed</th><th>title</th><th class=\"num\">entries</th><th>subscribe</th></tr></thead><tbody>\n");
    for feed in &config.feeds {
        let entries = publisher
            .get(&feed.name)
            .map(|r| r.entries.to_string())
            .unwrap_or_else(|| "—".to_owned());
        // The three formats to subscribe to, then the feed as a web page.
        let links: String = Format::ALL
            .iter()
            .chain([Format::Html].iter())
            .map(|f| {
                format!(
                    "<a href=\"{}\" type=\"{}\">{}</a>",
                    attr(&feed_url(config, &feed.name, *f)),
                    media_type(*f),
                    label(*f)
                )
            })
            .collect();
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{entries}</td><td class=\"sub\">{links}</td></tr>",
            esc(&feed.name),
            esc(&feed.title)
        );
    }
    html.push_str("</tbody></table>\n");
}

/// The sources of one page, each with its state, polls, counts, chart and last error.
fn sources_table(
    html: &mut String,
    config: &Config,
    store: &Store,
    shown: &[Listed<'_>],
    now: DateTime<Utc>,
    tolerate: bool,
) -> Result<(), StoreError> {
    let since = now - Duration::days(CHART_DAYS as i64 - 1) - Duration::hours(24);
    let day_ago = now - Duration::hours(24);
    html.push_str("<table id=\"sources\"><thead><tr><th>source</th><th>state</th><th>last poll</th><th>next poll</th><th class=\"num\">24 h</th><th class=\"num\">stored</th><th>last 30 days</th><th>last error</th></tr></thead><tbody>\n");
    for Listed { source, state } in shown {
        let times = tolerant(store.source_item_times(&source.name, since), tolerate)?;
        let (health, class) = state_of(source, state);
        let title = source.title.clone().or_else(|| state.title.clone());
        // The feed's URL in its public form (never its password or token), or none.
        let name = match config.server.source_urls.url(&source.url) {
            Some(url) => format!("<a href=\"{}\">{}</a>", attr(&url), esc(&source.name)),
            None => esc(&source.name),
        };
        let name = match &title {
            Some(t) if *t != source.name => {
                format!("{name}<br><span class=\"muted\">{}</span>", esc(t))
            }
            _ => name,
        };
        let in_day = times.iter().filter(|t| **t >= day_ago).count();
        let _ = writeln!(
            html,
            "<tr data-source=\"{}\"><td>{name}</td><td class=\"state {class}\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{in_day}</td><td class=\"num\">{}</td><td>{}</td><td class=\"error\">{}</td></tr>",
            attr(&source.name),
            esc(&health),
            when(state.last_poll, now),
            when(next_poll(source, state, now), now),
            state.item_count,
            chart(&source.name, &per_day(&times, now)),
            esc(&state.note(source.url.as_str(), config.server.source_urls))
        );
    }
    html.push_str("</tbody></table>\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn items_fall_on_their_utc_day_and_older_ones_are_left_out() {
        let now = Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap();
        let times = [
            now,
            now - Duration::hours(11), // still today (00:xx)
            now - Duration::hours(13), // yesterday
            now - Duration::days(29),  // the first day shown
            now - Duration::days(30),  // too old
        ];
        let days = per_day(&times, now);
        assert_eq!(days.len(), CHART_DAYS);
        assert_eq!(days[29], (now.date_naive(), 2));
        assert_eq!(days[28].1, 1);
        assert_eq!(days[0], ((now - Duration::days(29)).date_naive(), 1));
        assert_eq!(days.iter().map(|(_, n)| n).sum::<u64>(), 4);
    }

    #[test]
    fn the_chart_has_one_titled_bar_per_day_scaled_to_the_busiest() {
        let now = Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap();
        let times = vec![now; 4];
        let svg = chart("a<b", &per_day(&times, now));
        assert_eq!(svg.matches("<rect").count(), CHART_DAYS);
        assert!(svg.contains("<title>2026-03-31: 4 items</title>"));
        assert!(svg.contains("height=\"26\""), "{svg}");
        assert!(svg.contains("a&lt;b: 4 items"), "{svg}");
    }
}
