//! Sources in: formats, encodings, links, dedup, edits, filters, conditional GET.

use std::collections::HashSet;

use feedmux::publish::Format;
use feedmux::store::Store;

use crate::upstream::Upstream;
use crate::{config, fixture, poll, poll_all, read_back, render, source, tempdir, titles};

fn rss(items: &[(&str, &str, &str)]) -> String {
    let mut body = String::from(
        "<?xml version=\"1.0\"?>\n<rss version=\"2.0\"><channel><title>Test source</title><link>https://site.example/</link><description>d</description>\n",
    );
    for (guid, title, link) in items {
        body.push_str(&format!(
            "<item><guid isPermaLink=\"false\">{guid}</guid><title>{title}</title><link>{link}</link><description>About {title}</description><pubDate>Wed, 25 Nov 2026 10:00:00 GMT</pubDate></item>\n"
        ));
    }
    body.push_str("</channel></rss>\n");
    body
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn every_format_in_comes_out_in_every_format() {
    let upstream = Upstream::start().await;
    let fixtures = [
        ("rss090.xml", "application/rdf+xml"),
        ("rss_0.91_spec_1.xml", "application/rss+xml"),
        ("rss092.xml", "text/xml"),
        ("rss_1.0_spec_1.xml", "application/rdf+xml"),
        ("rss_2.0_spec_1.xml", "application/rss+xml"),
        ("atom_spec_1.xml", "application/atom+xml"),
        ("atom_xml_base.xml", "application/atom+xml"),
        ("jsonfeed_spec_1.json", "application/feed+json"),
    ];
    let mut tables = String::new();
    let mut expected = Vec::new();
    for (i, (name, content_type)) in fixtures.iter().enumerate() {
        let body = fixture(&format!("formats/{name}"));
        let parsed = feed_rs::parser::parse(body.as_slice()).unwrap();
        for entry in parsed.entries {
            if let Some(t) = entry.title {
                let t = collapse(&t.content);
                if !t.is_empty() {
                    expected.push((name.to_string(), t));
                }
            }
        }
        upstream.put(&format!("/{i}"), &[("content-type", content_type)], body);
        tables.push_str(&source(&format!("s{i}"), &upstream.url(&format!("/{i}"))));
    }
    tables.push_str("[[feed]]\nname = \"all\"\nlimit = 1000\n");
    let dir = tempdir();
    let config = config(dir.path(), &tables);
    poll_all(&config).await;

    let shown: HashSet<String> = titles(&config, "all")
        .into_iter()
        .map(|t| collapse(&t))
        .collect();
    for (name, title) in &expected {
        assert!(
            shown.contains(title),
            "{name}: {title:?} missing from output: {shown:?}"
        );
    }
    assert!(shown.len() >= 20, "{shown:?}");
    // feed-rs alone reads no items from RSS 0.90; feedmux does.
    for title in ["New Status Updates", "Bugzilla Reorganized"] {
        assert!(
            shown.contains(title),
            "RSS 0.90 item {title:?} missing: {shown:?}"
        );
    }
}

#[tokio::test]
async fn gbk_feed_labelled_only_by_the_http_header_comes_out_as_chinese() {
    let upstream = Upstream::start().await;
    let text = rss(&[("g1", "国产大模型发布：AI芯片再提速", "/news/1.html")])
        .replace("Test source", "机器之心");
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(&text);
    assert!(!unmappable);
    assert!(
        std::str::from_utf8(&gbk).is_err(),
        "the body really is GBK, not UTF-8"
    );
    upstream.put(
        "/gbk",
        &[("content-type", "text/xml; charset=gbk")],
        gbk.into_owned(),
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"zh\"\n",
            source("jqzx", &upstream.url("/gbk"))
        ),
    );
    poll_all(&config).await;
    assert_eq!(
        titles(&config, "zh"),
        vec!["国产大模型发布：AI芯片再提速".to_owned()]
    );
    let atom = String::from_utf8(render(&config, "zh", Format::Atom)).unwrap();
    assert!(
        atom.contains("<title type=\"text\">机器之心</title>"),
        "source title decoded: {atom}"
    );
}

#[tokio::test]
async fn relative_links_are_made_absolute() {
    let upstream = Upstream::start().await;
    let body = rss(&[("r1", "Relative", "/posts/42")]).replace(
        "<description>About Relative</description>",
        "<description>&lt;a href=\"../img/x.png\"&gt;picture&lt;/a&gt;</description>",
    );
    upstream.put(
        "/blog/feed.xml",
        &[("content-type", "application/rss+xml")],
        body,
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"all\"\n",
            source("blog", &upstream.url("/blog/feed.xml"))
        ),
    );
    poll_all(&config).await;
    for format in Format::ALL {
        let doc = render(&config, "all", format);
        let entries = read_back(&doc);
        assert_eq!(
            entries[0].1.as_deref(),
            Some(upstream.url("/posts/42").as_str()),
            "{format:?}"
        );
        let text = String::from_utf8(doc).unwrap();
        assert!(
            text.contains(&upstream.url("/img/x.png")),
            "{format:?}: {text}"
        );
    }
}

#[tokio::test]
async fn the_same_story_from_two_sources_is_shown_once_with_the_other_source_named() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/a",
        &[],
        rss(&[(
            "a1",
            "Lab ships model",
            "https://News.Example.com:443/story/7?utm_source=rss&amp;utm_medium=feed&amp;spm=1.2",
        )]),
    );
    upstream.put(
        "/b",
        &[],
        rss(&[
            (
                "b1",
                "实验室发布新模型",
                "https://news.example.com/story/7#comments",
            ),
            ("b2", "Another story", "https://news.example.com/story/8"),
        ]),
    );
    let dir = tempdir();
    let tables = format!(
        "{}{}[[feed]]\nname = \"all\"\n[[feed]]\nname = \"only-b\"\nsources = [\"b\"]\n",
        source("a", &upstream.url("/a")),
        source("b", &upstream.url("/b"))
    );
    let config = config(dir.path(), &tables);
    // Poll a first, then b, so that a's item leads the story.
    poll(&config, &["a"]).await;
    poll(&config, &["b"]).await;

    let mut all = titles(&config, "all");
    all.sort();
    assert_eq!(all, vec!["Another story", "Lab ships model"]);
    let atom = String::from_utf8(render(&config, "all", Format::Atom)).unwrap();
    assert!(atom.contains("Also reported by"), "{atom}");
    // A feed that selects only the second source still shows the story, once.
    let mut only_b = titles(&config, "only-b");
    only_b.sort();
    assert_eq!(only_b, vec!["Another story", "实验室发布新模型"]);
}

#[tokio::test]
async fn a_link_shared_by_several_items_of_one_source_identifies_nothing() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/podcast",
        &[],
        rss(&[
            ("ep1", "Episode 1", "https://pod.example/"),
            ("ep2", "Episode 2", "https://pod.example/"),
        ]),
    );
    upstream.put(
        "/other",
        &[],
        rss(&[("x", "Unrelated post", "https://pod.example/")]),
    );
    let dir = tempdir();
    let tables = format!(
        "{}{}[[feed]]\nname = \"all\"\n",
        source("podcast", &upstream.url("/podcast")),
        source("other", &upstream.url("/other"))
    );
    let config = config(dir.path(), &tables);
    poll(&config, &["podcast"]).await;
    poll(&config, &["other"]).await;
    let mut all = titles(&config, "all");
    all.sort();
    assert_eq!(all, vec!["Episode 1", "Episode 2", "Unrelated post"]);
}

#[tokio::test]
async fn items_without_guids_sharing_one_link_are_all_kept_and_stay_put() {
    let upstream = Upstream::start().await;
    let item = |title: &str| {
        format!("<item><title>{title}</title><link>https://lab.example/news</link><description>About {title}</description></item>")
    };
    let feed = |titles: &[&str]| {
        let items: String = titles.iter().map(|t| item(t)).collect();
        format!("<rss version=\"2.0\"><channel><title>Lab</title>{items}</channel></rss>")
    };
    upstream.put(
        "/f",
        &[],
        feed(&["Model A", "Model B", "Model C", "Model D"]),
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"all\"\n",
            source("lab", &upstream.url("/f"))
        ),
    );
    poll_all(&config).await;
    let mut all = titles(&config, "all");
    all.sort();
    assert_eq!(all, ["Model A", "Model B", "Model C", "Model D"]);

    // The next poll, with one more item on top, adds one item and changes none.
    upstream.put(
        "/f",
        &[],
        feed(&["Model E", "Model A", "Model B", "Model C", "Model D"]),
    );
    let outcomes = poll(&config, &[]).await;
    let report = outcomes[0].1.as_ref().unwrap();
    assert_eq!((report.new_items, report.updated_items), (1, 0));
    assert_eq!(
        Store::open_configured(&config.storage)
            .unwrap()
            .item_count(),
        5
    );
}

#[tokio::test]
async fn a_source_inventing_new_guids_every_poll_stays_within_its_quota() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/quiet",
        &[],
        rss(&[
            ("q1", "A quiet source's story", "https://quiet.example/1"),
            ("q2", "Another quiet story", "https://quiet.example/2"),
        ]),
    );
    let dir = tempdir();
    let tables = format!(
        "{}max_items = 6\n\n{}[[feed]]\nname = \"all\"\n",
        source("flood", &upstream.url("/flood")),
        source("quiet", &upstream.url("/quiet"))
    );
    let config = config(
        dir.path(),
        &format!("[poll]\nper_host_interval = \"0s\"\nmax_new_items = 4\n{tables}"),
    );
    poll(&config, &["quiet"]).await;
    // Every poll, the same 5 stories under new GUIDs (and new links).
    for round in 0..4 {
        let items: Vec<(String, String, String)> = (0..5)
            .map(|i| {
                (
                    format!("r{round}-{i}"),
                    format!("Flood story {i} round {round}"),
                    format!("https://flood.example/{round}/{i}"),
                )
            })
            .collect();
        let refs: Vec<(&str, &str, &str)> = items
            .iter()
            .map(|(g, t, l)| (g.as_str(), t.as_str(), l.as_str()))
            .collect();
        upstream.put("/flood", &[], rss(&refs));
        let outcomes = poll(&config, &["flood"]).await;
        let report = outcomes[0].1.as_ref().unwrap();
        // At most 4 new items a poll; the fifth waits.
        assert_eq!(
            (report.new_items, report.over_quota),
            (4, 1),
            "round {round}"
        );
    }
    let store = Store::open_configured(&config.storage).unwrap();
    assert_eq!(store.source_state("flood").unwrap().item_count, 6);
    assert_eq!(store.source_items("flood", 100).unwrap().len(), 6);
    assert_eq!(store.source_items("quiet", 100).unwrap().len(), 2);
    drop(store);
    let all = titles(&config, "all");
    assert!(
        all.contains(&"A quiet source's story".to_owned()),
        "{all:?}"
    );
    assert_eq!(all.len(), 8, "{all:?}");
}

#[tokio::test]
async fn an_edited_item_is_updated_in_place_not_duplicated() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/f",
        &[],
        rss(&[("same-guid", "First wording", "https://e.example/1")]),
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"all\"\n",
            source("s", &upstream.url("/f"))
        ),
    );
    poll_all(&config).await;
    assert_eq!(titles(&config, "all"), vec!["First wording"]);

    upstream.put(
        "/f",
        &[],
        rss(&[("same-guid", "Corrected wording", "https://e.example/1")]),
    );
    let outcomes = poll(&config, &[]).await;
    let report = outcomes[0].1.as_ref().unwrap();
    assert_eq!((report.new_items, report.updated_items), (0, 1));
    assert_eq!(titles(&config, "all"), vec!["Corrected wording"]);
    assert_eq!(
        Store::open_configured(&config.storage)
            .unwrap()
            .item_count(),
        1
    );
}

#[tokio::test]
async fn include_and_exclude_work_on_english_and_chinese_text() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/mixed",
        &[],
        rss(&[
            ("1", "AI芯片出货量创新高", "https://e.example/1"),
            ("2", "He said the weather was fine", "https://e.example/2"),
            ("3", "OpenAI ships a model", "https://e.example/3"),
            ("4", "大模型广告：限时优惠", "https://e.example/4"),
            ("5", "AI-powered search arrives", "https://e.example/5"),
            ("6", "人工智能大会开幕", "https://e.example/6"),
            (
                "7",
                "Sponsored: GPUs for LLM training",
                "https://e.example/7",
            ),
            ("8", "New LLM tops the charts", "https://e.example/8"),
        ]),
    );
    let dir = tempdir();
    let tables = format!(
        "{}[[feed]]\nname = \"ai\"\ninclude = [\"AI\", \"人工智能\", \"大模型\"]\nexclude = [\"广告\"]\ninclude_regex = [\"\\\\bLLM\\\\b\"]\nexclude_regex = [\"^Sponsored:\"]\n",
        source("mixed", &upstream.url("/mixed"))
    );
    let config = config(dir.path(), &tables);
    poll_all(&config).await;
    let mut shown = titles(&config, "ai");
    shown.sort();
    assert_eq!(
        shown,
        vec![
            "AI-powered search arrives",
            "AI芯片出货量创新高",
            "New LLM tops the charts",
            "人工智能大会开幕"
        ]
    );
}

#[tokio::test]
async fn a_second_poll_sends_the_stored_validators_and_a_304_changes_nothing() {
    let upstream = Upstream::start().await;
    let lm = "Wed, 25 Nov 2026 10:00:00 GMT";
    upstream.put(
        "/c",
        &[("etag", "\"v1\""), ("last-modified", lm)],
        rss(&[("1", "Hello", "https://e.example/1")]),
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"all\"\n",
            source("c", &upstream.url("/c"))
        ),
    );
    poll_all(&config).await;
    let before = render(&config, "all", Format::Atom);

    let outcomes = poll(&config, &[]).await;
    assert!(outcomes[0].1.as_ref().unwrap().not_modified);
    let requests = upstream.requests("/c");
    assert_eq!(requests.len(), 2);
    assert!(requests[0].get("if-none-match").is_none());
    assert_eq!(requests[1].get("if-none-match").unwrap(), "\"v1\"");
    assert_eq!(requests[1].get("if-modified-since").unwrap(), lm);
    let ua = requests[0].get("user-agent").unwrap().to_str().unwrap();
    assert!(ua.starts_with("feedmux/"), "{ua}");
    assert_eq!(render(&config, "all", Format::Atom), before);
    let state = Store::open_configured(&config.storage)
        .unwrap()
        .source_state("c")
        .unwrap();
    assert_eq!(state.etag.as_deref(), Some("\"v1\""));
    assert_eq!(state.item_count, 1);
}

/// A server without validators answers 200 with the same bytes every time: the second poll
/// sees the body it stored last time and neither parses it again nor loses the feed's
/// `<ttl>`; a changed body, or the same bytes declared in another charset, is parsed.
#[tokio::test]
async fn a_200_with_the_last_body_is_not_parsed_again_and_a_changed_one_is() {
    let upstream = Upstream::start().await;
    let with_ttl = |items: &[(&str, &str, &str)]| {
        rss(items).replace(
            "<description>d</description>",
            "<description>d</description><ttl>600</ttl>",
        )
    };
    let first = with_ttl(&[("1", "Hello", "https://e.example/1")]);
    upstream.put(
        "/same",
        &[("content-type", "application/rss+xml")],
        first.clone(),
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"all\"\n",
            source("same", &upstream.url("/same"))
        ),
    );
    let report = |outcomes: Vec<(String, Result<feedmux::refresh::PollReport, _>)>| {
        outcomes.into_iter().next().unwrap().1.unwrap()
    };
    let polled = report(poll(&config, &[]).await);
    assert_eq!((polled.new_items, polled.same_body), (1, false));

    let before = chrono::Utc::now();
    let again = report(poll(&config, &[]).await);
    assert!(again.same_body && again.not_modified, "{again:?}");
    assert_eq!((again.entries, again.new_items), (0, 0));
    let state = Store::open_configured(&config.storage)
        .unwrap()
        .source_state("same")
        .unwrap();
    let next = state.next_poll.unwrap();
    assert!(
        next >= before + chrono::Duration::minutes(590),
        "the feed's ttl of 600 minutes still holds the next poll back: {next}"
    );
    assert_eq!(state.item_count, 1);

    upstream.put(
        "/same",
        &[("content-type", "application/rss+xml; charset=iso-8859-1")],
        first,
    );
    let recoded = report(poll(&config, &[]).await);
    assert!(!recoded.same_body, "another charset is another text");

    upstream.put(
        "/same",
        &[("content-type", "application/rss+xml")],
        with_ttl(&[
            ("1", "Hello", "https://e.example/1"),
            ("2", "World", "https://e.example/2"),
        ]),
    );
    let changed = report(poll(&config, &[]).await);
    assert_eq!((changed.same_body, changed.new_items), (false, 1));
    assert_eq!(titles(&config, "all").len(), 2);
}

#[tokio::test]
async fn a_failing_source_keeps_its_items_and_others_keep_working() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/good",
        &[],
        rss(&[("1", "Good news", "https://e.example/g")]),
    );
    upstream.put(
        "/flaky",
        &[],
        rss(&[("1", "Kept item", "https://e.example/k")]),
    );
    let dir = tempdir();
    let tables = format!(
        "{}{}[[feed]]\nname = \"all\"\n",
        source("good", &upstream.url("/good")),
        source("flaky", &upstream.url("/flaky"))
    );
    let config = config(dir.path(), &tables);
    poll_all(&config).await;
    upstream.put("/flaky", &[("content-type", "text/html")], "<!DOCTYPE html><html><head><link rel=\"alternate\" type=\"application/rss+xml\" href=\"/rss\"></head></html>");
    upstream.put(
        "/good",
        &[],
        rss(&[
            ("1", "Good news", "https://e.example/g"),
            ("2", "More good news", "https://e.example/g2"),
        ]),
    );
    let outcomes = poll(&config, &[]).await;
    let flaky = outcomes.iter().find(|o| o.0 == "flaky").unwrap();
    let error = flaky.1.as_ref().unwrap_err().to_string();
    assert!(
        error.contains("HTML page") && error.contains(&upstream.url("/rss")),
        "{error}"
    );
    let mut all = titles(&config, "all");
    all.sort();
    assert_eq!(all, vec!["Good news", "Kept item", "More good news"]);
    let state = Store::open_configured(&config.storage)
        .unwrap()
        .source_state("flaky")
        .unwrap();
    assert_eq!(state.consecutive_failures, 1);
    assert!(state.last_error.unwrap().contains("HTML page"));
}

#[tokio::test]
async fn an_item_without_a_date_gets_the_time_it_was_first_seen() {
    let upstream = Upstream::start().await;
    let body = rss(&[("1", "Undated", "https://e.example/u")])
        .replace("<pubDate>Wed, 25 Nov 2026 10:00:00 GMT</pubDate>", "");
    upstream.put("/u", &[], body);
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"all\"\n",
            source("u", &upstream.url("/u"))
        ),
    );
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    poll_all(&config).await;
    let feed = feed_rs::parser::parse(render(&config, "all", Format::Atom).as_slice()).unwrap();
    let published = feed.entries[0].published.unwrap();
    assert!(
        published >= before && published <= chrono::Utc::now(),
        "{published}"
    );
    // A second poll does not move it.
    poll_all(&config).await;
    let again = feed_rs::parser::parse(render(&config, "all", Format::Atom).as_slice()).unwrap();
    assert_eq!(again.entries[0].published.unwrap(), published);
}

#[test]
fn atom_0_3_and_versionless_rss_are_read() {
    let base = url::Url::parse("https://e.example/feed").unwrap();
    let atom03 = feedmux::parse::parse_feed(
        &fixture("formats/atom03.xml"),
        None,
        &base,
        chrono::Utc::now(),
    )
    .unwrap();
    assert_eq!(atom03.entries.len(), 1);
    assert!(!atom03.entries[0].title.is_empty());
    let rss =
        b"<rss><channel><title>t</title><item><title>No version</title></item></channel></rss>";
    let parsed = feedmux::parse::parse_feed(rss, None, &base, chrono::Utc::now()).unwrap();
    assert_eq!(parsed.entries[0].title, "No version");
}

fn dated_rss(items: &[(&str, &str, &str, &str, &str)]) -> String {
    let mut body = String::from(
        "<rss version=\"2.0\"><channel><title>S</title><link>https://site.example/</link><description>d</description>\n",
    );
    for (guid, title, link, summary, date) in items {
        body.push_str(&format!(
            "<item><guid isPermaLink=\"false\">{guid}</guid><title>{title}</title><link>{link}</link><description>{summary}</description><pubDate>{date}</pubDate></item>\n"
        ));
    }
    body.push_str("</channel></rss>\n");
    body
}

#[tokio::test]
async fn the_same_story_in_other_words_from_another_source_is_one_entry() {
    let upstream = Upstream::start().await;
    let now = chrono::Utc::now();
    let recent = (now - chrono::Duration::hours(3)).to_rfc2822();
    let earlier = (now - chrono::Duration::hours(5)).to_rfc2822();
    let long_ago = (now - chrono::Duration::days(5)).to_rfc2822();
    upstream.put(
        "/qbit",
        &[],
        dated_rss(&[
            (
                "q1",
                "智谱发布 GLM-6 大模型，支持百万 token 上下文",
                "https://qbit.example/a/1",
                "智谱今天发布 GLM-6，上下文长度达到一百万 token，API 价格下调一半。",
                &earlier,
            ),
            (
                "q2",
                "DeepSeek 开源新推理模型 R3",
                "https://qbit.example/a/2",
                "DeepSeek 开源了 R3 推理模型，数学和代码能力提升明显。",
                &long_ago,
            ),
        ]),
    );
    upstream.put(
        "/jqzx",
        &[],
        dated_rss(&[
            (
                "j1",
                "【独家】智谱发布GLM-6大模型：支持百万token上下文 | 机器之心",
                "https://jqzx.example/p/77",
                "据悉，智谱今天发布 GLM-6，上下文长度达到一百万 token。",
                &recent,
            ),
            (
                "j2",
                "DeepSeek 开源新推理模型 R3",
                "https://jqzx.example/p/78",
                "DeepSeek 开源了 R3 推理模型，数学和代码能力提升明显。",
                &recent,
            ),
            (
                "j3",
                "智谱发布 GLM-6 安全报告",
                "https://jqzx.example/p/79",
                "智谱公布了 GLM-6 的红队测试结果。",
                &recent,
            ),
        ]),
    );
    let dir = tempdir();
    let tables = format!(
        "{}{}[[feed]]\nname = \"all\"\n[[feed]]\nname = \"flat\"\ngroup_stories = false\n[[feed]]\nname = \"jqzx-only\"\nsources = [\"jqzx\"]\n",
        source("qbit", &upstream.url("/qbit")),
        source("jqzx", &upstream.url("/jqzx"))
    );
    let config = config(dir.path(), &tables);
    poll(&config, &["qbit"]).await;
    let report = poll(&config, &["jqzx"]).await;
    assert_eq!(report[0].1.as_ref().unwrap().merged, 1, "one merge by text");

    let mut all = titles(&config, "all");
    all.sort();
    // The GLM-6 story once (the earlier report), the R3 story twice (5 days apart: outside
    // the 72 h window), the safety report on its own.
    assert_eq!(
        all,
        vec![
            "DeepSeek 开源新推理模型 R3",
            "DeepSeek 开源新推理模型 R3",
            "智谱发布 GLM-6 大模型，支持百万 token 上下文",
            "智谱发布 GLM-6 安全报告",
        ]
    );
    let atom = String::from_utf8(render(&config, "all", Format::Atom)).unwrap();
    assert!(
        atom.contains("Also reported by &lt;a href=&quot;https://jqzx.example/p/77&quot;"),
        "{atom}"
    );
    // group_stories = false: every item.
    assert_eq!(titles(&config, "flat").len(), 5);
    // A feed of the second source alone still has the story, once.
    assert!(titles(&config, "jqzx-only")
        .iter()
        .any(|t| t.contains("GLM-6大模型")));
}

#[tokio::test]
async fn the_highest_priority_source_represents_a_story() {
    let upstream = Upstream::start().await;
    let date = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc2822();
    upstream.put(
        "/blog",
        &[],
        dated_rss(&[(
            "b",
            "Lab ships Atlas-2 model",
            "https://news.example/atlas?utm_source=x",
            "s",
            &date,
        )]),
    );
    upstream.put(
        "/media",
        &[],
        dated_rss(&[(
            "m",
            "Atlas-2 ships from the lab",
            "https://news.example/atlas",
            "s",
            &date,
        )]),
    );
    let dir = tempdir();
    let tables = format!(
        "{}\npriority = 10\n\n{}[[feed]]\nname = \"all\"\n",
        source("media", &upstream.url("/media")).trim_end(),
        source("blog", &upstream.url("/blog"))
    );
    let config = config(dir.path(), &tables);
    poll(&config, &["blog"]).await; // the blog reports first
    poll(&config, &["media"]).await;
    assert_eq!(titles(&config, "all"), vec!["Atlas-2 ships from the lab"]);
}
