//! An output feed's own rules as a reader sees them: a busy source capped (`max_per_source`),
//! old entries left out (`max_age`), keywords on titles only (`match_in`), the earliest report
//! representing a story, and an edit at the source showing as a new `updated` date.

use feedmux::publish::{render_view, Cursor, Format, Publisher, View};
use feedmux::store::Store;

use crate::upstream::Upstream;
use crate::{config, poll_all, read_back, source, tempdir, titles};

/// An item of a test feed: guid, title, link, description (HTML, escaped here), date.
#[derive(Clone)]
struct Item<'a> {
    guid: String,
    title: String,
    link: String,
    body: &'a str,
    date: chrono::DateTime<chrono::Utc>,
}

fn item(guid: &str, title: &str, minutes_ago: i64) -> Item<'static> {
    Item {
        guid: guid.to_owned(),
        title: title.to_owned(),
        link: format!("https://{guid}.example/"),
        body: "",
        date: chrono::Utc::now() - chrono::Duration::minutes(minutes_ago),
    }
}

fn rss(items: &[Item<'_>]) -> String {
    let mut body = String::from("<rss version=\"2.0\"><channel><title>T</title><link>https://t.example/</link><description>d</description>");
    for i in items {
        let date = i.date.to_rfc2822();
        body.push_str(&format!(
            "<item><guid>{}</guid><title>{}</title><link>{}</link><description>{}</description><pubDate>{date}</pubDate></item>",
            i.guid,
            i.title,
            i.link,
            html_escape::encode_text(i.body)
        ));
    }
    body + "</channel></rss>"
}

fn serve(upstream: &Upstream, path: &str, items: &[Item<'_>]) {
    upstream.put(path, &[("content-type", "application/rss+xml")], rss(items));
}

/// Words for titles that no text comparison takes for one story.
const WORDS: [&str; 10] = [
    "harbour", "violin", "glacier", "tractor", "saffron", "lantern", "meteor", "orchid", "bakery",
    "canyon",
];

#[tokio::test]
async fn a_busy_source_is_capped_so_the_small_sources_are_all_shown() {
    let upstream = Upstream::start().await;
    // arXiv: 200 papers in the last 200 minutes, all newer than the small sources' posts.
    let papers: Vec<Item> = (0..200)
        .map(|i| {
            item(
                &format!("arxiv{i}"),
                &format!("Paper {i:03} on {}", WORDS[i % 10]),
                i as i64,
            )
        })
        .collect();
    serve(&upstream, "/arxiv.xml", &papers);
    let blog: Vec<Item> = ["pottery", "sailing", "chess", "gardening"]
        .iter()
        .enumerate()
        .map(|(i, w)| {
            item(
                &format!("blog{i}"),
                &format!("Notes on {w}"),
                300 + i as i64,
            )
        })
        .collect();
    serve(&upstream, "/blog.xml", &blog);
    let lab: Vec<Item> = ["falcons", "volcanoes", "tides"]
        .iter()
        .enumerate()
        .map(|(i, w)| {
            item(
                &format!("lab{i}"),
                &format!("Field study of {w}"),
                400 + i as i64,
            )
        })
        .collect();
    serve(&upstream, "/lab.xml", &lab);
    let dir = tempdir();
    let sources = source("arxiv", &upstream.url("/arxiv.xml"))
        + &source("blog", &upstream.url("/blog.xml"))
        + &source("lab", &upstream.url("/lab.xml"));
    let cfg = config(
        dir.path(),
        &format!("{sources}[[feed]]\nname = \"capped\"\nmax_per_source = 20\n\n[[feed]]\nname = \"flooded\"\n"),
    );
    poll_all(&cfg).await;

    let flooded = titles(&cfg, "flooded");
    assert_eq!(flooded.len(), 100);
    assert!(
        flooded.iter().all(|t| t.starts_with("Paper")),
        "without a cap arXiv fills the feed: {flooded:?}"
    );

    let capped = titles(&cfg, "capped");
    let newest_papers: Vec<String> = papers[..20].iter().map(|p| p.title.clone()).collect();
    let expected: Vec<String> = newest_papers
        .iter()
        .cloned()
        .chain(blog.iter().map(|b| b.title.clone()))
        .chain(lab.iter().map(|l| l.title.clone()))
        .collect();
    assert_eq!(
        capped, expected,
        "arXiv's 20 newest, then every post of the small sources"
    );
    assert_eq!(
        pages_of(&cfg, "capped", 6),
        expected,
        "the cap holds page by page"
    );
}

/// The titles of every page of `feed` in JSON Feed, `per_page` at a time, following
/// `next_url` as a reader does.
fn pages_of(cfg: &feedmux::config::Config, feed: &str, per_page: usize) -> Vec<String> {
    let store = Store::open_configured(&cfg.storage).unwrap();
    let mut view = View {
        limit: Some(per_page),
        ..View::default()
    };
    let mut titles = Vec::new();
    for _ in 0..100 {
        let doc = render_view(&store, cfg, feed, &view, Format::Json).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&doc.body).unwrap();
        let items = json["items"].as_array().unwrap();
        assert!(items.len() <= per_page);
        titles.extend(
            items
                .iter()
                .map(|i| i["title"].as_str().unwrap().to_owned()),
        );
        let Some(next) = json["next_url"].as_str() else {
            return titles;
        };
        let next = url::Url::parse(next).unwrap();
        let before = next.query_pairs().find(|(k, _)| k == "before").unwrap().1;
        view.before = Some(Cursor::parse(&before).unwrap());
    }
    panic!("the pages of {feed} never end");
}

#[tokio::test]
async fn entries_older_than_max_age_are_left_out() {
    let upstream = Upstream::start().await;
    let day = 24 * 60;
    serve(
        &upstream,
        "/s.xml",
        &[
            item("today", "Harbour news of today", 60),
            item("days", "Violin news of three days ago", 3 * day),
            item("week", "Glacier news of eight days ago", 8 * day),
            item("month", "Tractor news of a month ago", 30 * day),
        ],
    );
    let dir = tempdir();
    let cfg = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"week\"\nmax_age = \"7d\"\n\n[[feed]]\nname = \"all\"\n",
            source("s", &upstream.url("/s.xml"))
        ),
    );
    poll_all(&cfg).await;
    assert_eq!(
        titles(&cfg, "week"),
        ["Harbour news of today", "Violin news of three days ago"]
    );
    assert_eq!(titles(&cfg, "all").len(), 4);
}

#[tokio::test]
async fn match_in_title_looks_at_titles_only() {
    let upstream = Upstream::start().await;
    let with_body = |guid: &str, title: &str, body: &'static str, ago| Item {
        body,
        ..item(guid, title, ago)
    };
    serve(
        &upstream,
        "/s.xml",
        &[
            with_body("a", "New GPU announced", "<p>Specs inside.</p>", 1),
            with_body("b", "Quarterly results", "<p>Strong GPU sales.</p>", 2),
            with_body("c", "GPU prices fall", "<p>Sponsored by a shop.</p>", 3),
            with_body("d", "Weather today", "<p>Rain.</p>", 4),
            with_body("e", "Sponsored: GPU deals", "<p>Buy now.</p>", 5),
        ],
    );
    let dir = tempdir();
    let rules = "include = [\"GPU\"]\nexclude = [\"sponsored\"]\n";
    let cfg = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"titles\"\nmatch_in = \"title\"\n{rules}\n[[feed]]\nname = \"everywhere\"\n{rules}\n[[feed]]\nname = \"regex\"\nmatch_in = \"title\"\ninclude_regex = [\"(?i)results|rain\"]\n",
            source("s", &upstream.url("/s.xml"))
        ),
    );
    poll_all(&cfg).await;
    assert_eq!(
        titles(&cfg, "titles"),
        ["New GPU announced", "GPU prices fall"],
        "GPU in the title only; a sponsor named in the body does not drop"
    );
    assert_eq!(
        titles(&cfg, "everywhere"),
        ["New GPU announced", "Quarterly results"],
        "the default: title, summary and content"
    );
    assert_eq!(titles(&cfg, "regex"), ["Quarterly results"]);
}

#[tokio::test]
async fn a_story_is_shown_as_its_earliest_published_report() {
    let upstream = Upstream::start().await;
    let report = |guid: &str, title: &str, ago| Item {
        link: "https://lab.example/announcement".into(),
        ..item(guid, title, ago)
    };
    // The later report is stored first; the earlier one arrives on a later poll.
    serve(
        &upstream,
        "/late.xml",
        &[report("l1", "Lab announces new model (late copy)", 10)],
    );
    serve(&upstream, "/early.xml", &[]);
    let dir = tempdir();
    let cfg = config(
        dir.path(),
        &format!(
            "{}{}[[feed]]\nname = \"all\"\n",
            source("late", &upstream.url("/late.xml")),
            source("early", &upstream.url("/early.xml"))
        ),
    );
    poll_all(&cfg).await;
    serve(
        &upstream,
        "/early.xml",
        &[report("e1", "Lab announces new model", 60)],
    );
    poll_all(&cfg).await;
    assert_eq!(titles(&cfg, "all"), ["Lab announces new model"]);
    let json = String::from_utf8(crate::render(&cfg, "all", Format::Json)).unwrap();
    assert!(
        json.contains("\"also_reported_by\"") && json.contains("late.xml"),
        "the later report is listed as another source: {json}"
    );
}

/// Atom `<updated>` and the JSON Feed `date_modified` of the one entry, and the RSS guid.
fn dates_of(store: &Store, cfg: &feedmux::config::Config, publisher: &Publisher) -> Dated {
    let rendered = publisher.render(store, cfg, "all").unwrap();
    let atom = String::from_utf8(rendered.get(Format::Atom).unwrap().body.to_vec()).unwrap();
    let entry = &atom[atom.find("<entry>").unwrap()..];
    let between = |doc: &str, open: &str, close: &str| {
        let start = doc.find(open).unwrap() + open.len();
        doc[start..start + doc[start..].find(close).unwrap()].to_owned()
    };
    let json: serde_json::Value =
        serde_json::from_slice(&rendered.get(Format::Json).unwrap().body).unwrap();
    let rss = String::from_utf8(rendered.get(Format::Rss).unwrap().body.to_vec()).unwrap();
    Dated {
        title: read_back(&rendered.get(Format::Atom).unwrap().body)[0]
            .0
            .clone(),
        published: between(entry, "<published>", "</published>"),
        updated: between(entry, "<updated>", "</updated>"),
        date_modified: json["items"][0]["date_modified"]
            .as_str()
            .map(str::to_owned),
        guid: between(&rss, "<guid isPermaLink=\"false\">", "</guid>"),
        etag: rendered.get(Format::Atom).unwrap().etag.clone(),
    }
}

#[derive(Debug)]
struct Dated {
    title: String,
    published: String,
    updated: String,
    date_modified: Option<String>,
    guid: String,
    etag: String,
}

#[tokio::test]
async fn an_edit_at_the_source_gives_the_entry_a_new_updated_date() {
    let upstream = Upstream::start().await;
    let original = item("x", "Model released", 120);
    serve(&upstream, "/s.xml", std::slice::from_ref(&original));
    let dir = tempdir();
    let cfg = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"all\"\n",
            source("s", &upstream.url("/s.xml"))
        ),
    );
    poll_all(&cfg).await;
    let publisher = Publisher::new();
    let before = {
        let store = Store::open_configured(&cfg.storage).unwrap();
        dates_of(&store, &cfg, &publisher)
    };
    assert_eq!(before.updated, before.published, "not edited: {before:?}");
    // feed-rs reads an RSS pubDate as the updated date too: at most the published date.
    assert!(
        before.date_modified.iter().all(|d| *d == before.published),
        "{before:?}"
    );

    // The publisher corrects the title (same guid, same pubDate), seen on the next poll.
    let edited = Item {
        title: "Model released under an open licence".into(),
        ..original.clone()
    };
    serve(&upstream, "/s.xml", &[edited]);
    poll_all(&cfg).await;
    let after = {
        let store = Store::open_configured(&cfg.storage).unwrap();
        dates_of(&store, &cfg, &publisher)
    };
    assert_eq!(after.title, "Model released under an open licence");
    assert_eq!(after.published, before.published, "{after:?}");
    assert!(
        after.updated > before.updated,
        "Atom updated moved: {before:?} {after:?}"
    );
    assert_eq!(after.date_modified.as_deref(), Some(after.updated.as_str()));
    assert_eq!(
        after.guid, before.guid,
        "the RSS guid stays: one item, edited"
    );
    assert_ne!(after.etag, before.etag, "the feed's ETag changed");
}
