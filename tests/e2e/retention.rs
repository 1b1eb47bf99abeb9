//! Retention: items past `retention_days` or beyond `max_items` are pruned, stay out while
//! their source's feed still lists them, and their tombstones go once the feed drops them.

use std::time::Duration;

use chrono::Utc;
use feedmux::store::Store;

use crate::served::Served;
use crate::upstream::Upstream;
use crate::{config, poll_all, rss_feed, source, tempdir, titles, RssItem};

fn rss(items: &[(&str, &str, chrono::Duration)]) -> String {
    let now = Utc::now();
    let items = items.iter().map(|(guid, title, age)| {
        RssItem::new(guid, title, format!("https://r.example/{guid}"))
            .dated(&(now - *age).to_rfc2822())
    });
    rss_feed("r", "https://r.example/", items)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn old_items_are_pruned_on_schedule_and_not_ingested_again() {
    let fresh = ("fresh", "Fresh one", chrono::Duration::hours(1));
    let old1 = ("old1", "Old one", chrono::Duration::days(5));
    let old2 = ("old2", "Older one", chrono::Duration::days(10));
    let upstream = Upstream::start().await;
    let put = |items: &[(&str, &str, chrono::Duration)]| {
        upstream.put(
            "/r.xml",
            &[("content-type", "application/rss+xml")],
            rss(items),
        );
    };
    put(&[fresh, old1, old2]);
    let dir = tempdir();
    let mut config = config(
        dir.path(),
        &format!(
            "{}schedule = \"* * * * * *\"\n\n[[feed]]\nname = \"all\"\n",
            source("r", &upstream.url("/r.xml"))
        ),
    );
    config.storage.retention_days = Some(3);
    config.storage.prune_interval = Duration::from_millis(500);
    let storage = config.storage.clone();
    let served = Served::with_config(config).await;
    let base = served.base.clone();
    let get = |path: &'static str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };

    // Ingested, then pruned by the next pass.
    let mut metrics = String::new();
    for _ in 0..150 {
        metrics = get("/metrics").await;
        if metric(&metrics, "feedmux_items_pruned_total") >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&metrics, "feedmux_items_pruned_total"), 2.0);
    assert_eq!(metric(&metrics, "feedmux_items_stored"), 1.0);
    let feed = get("/feeds/all.atom").await;
    let shown: Vec<String> = crate::read_back(feed.as_bytes())
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(shown, ["Fresh one"]);

    // Polled every second: the feed still lists the pruned items, which stay out.
    let polls = upstream.requests("/r.xml").len();
    for _ in 0..100 {
        if upstream.requests("/r.xml").len() >= polls + 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(upstream.requests("/r.xml").len() >= polls + 3);
    let metrics = get("/metrics").await;
    assert_eq!(
        metric(&metrics, "feedmux_items_ingested_total{kind=\"new\"}"),
        3.0,
        "pruned items were ingested again"
    );
    assert_eq!(metric(&metrics, "feedmux_items_stored"), 1.0);
    let sources = get("/api/sources").await;
    assert!(sources.contains("\"item_count\":1"), "{sources}");

    // The feed drops one of them: its tombstone goes with the next poll.
    put(&[fresh, old1]);
    let polls = upstream.requests("/r.xml").len();
    for _ in 0..100 {
        if upstream.requests("/r.xml").len() >= polls + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served.stop().await;
    // The turn is taken again for the store opened here.
    let _turn = crate::served::sled_turn().await;
    let store = Store::open_configured(&storage).unwrap();
    assert_eq!(store.item_count(), 1);
    assert_eq!(
        store.tombstone_count(),
        1,
        "only the item still listed keeps one"
    );
}

#[tokio::test]
async fn max_items_keeps_the_newest_and_everything_else_consistent() {
    let upstream = Upstream::start().await;
    let items: Vec<(String, String, chrono::Duration)> = (0..5)
        .map(|i| {
            (
                format!("g{i}"),
                format!("Story number {i}"),
                chrono::Duration::hours(i + 1),
            )
        })
        .collect();
    let as_refs: Vec<(&str, &str, chrono::Duration)> = items
        .iter()
        .map(|(g, t, a)| (g.as_str(), t.as_str(), *a))
        .collect();
    upstream.put(
        "/r.xml",
        &[("content-type", "application/rss+xml")],
        rss(&as_refs),
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"all\"\n",
            source("r", &upstream.url("/r.xml"))
        ),
    );
    poll_all(&config).await;
    assert_eq!(titles(&config, "all").len(), 5);

    {
        let store = Store::open_configured(&config.storage).unwrap();
        let size_before = store.size_on_disk();
        let lost = store.prune(None, Some(2), Utc::now()).unwrap();
        assert_eq!(lost.get("r"), Some(&3));
        assert_eq!(store.item_count(), 2);
        assert_eq!(store.source_state("r").unwrap().item_count, 2);
        assert_eq!(store.tombstone_count(), 3);
        assert!(store.size_on_disk() > 0 && size_before > 0);
        // Pruning again removes nothing.
        assert!(store.prune(None, Some(2), Utc::now()).unwrap().is_empty());
    }
    assert_eq!(titles(&config, "all"), ["Story number 0", "Story number 1"]);

    // The source still lists all five: polling it again brings none back.
    poll_all(&config).await;
    assert_eq!(titles(&config, "all"), ["Story number 0", "Story number 1"]);
    let store = Store::open_configured(&config.storage).unwrap();
    assert_eq!(store.item_count(), 2);

    // Pruning everything leaves nothing that names an item: no index entry, membership,
    // URL claim, story link, fingerprint or key term.
    store
        .prune(
            Some(Utc::now() + chrono::Duration::days(1)),
            None,
            Utc::now(),
        )
        .unwrap();
    for (tree, n) in store.record_counts() {
        match tree {
            "sources" => assert_eq!(n, 1),
            "tombstones" => assert_eq!(n, 5),
            _ => assert_eq!(n, 0, "{tree} still holds {n} records"),
        }
    }
}

#[tokio::test]
async fn compact_gives_the_space_of_pruned_items_back_and_keeps_the_rest() {
    let upstream = Upstream::start().await;
    let body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(20);
    let items = (0..2000).map(|i| {
        RssItem::new(
            format!("g{i}"),
            format!("Story {i}"),
            format!("https://r.example/{i}"),
        )
        .with(&format!("<description>{body} {i}</description>"))
        .dated(&(Utc::now() - chrono::Duration::minutes(i)).to_rfc2822())
    });
    upstream.put(
        "/r.xml",
        &[("content-type", "application/rss+xml")],
        rss_feed("r", "https://r.example/", items),
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"all\"\n",
            source("r", &upstream.url("/r.xml"))
        ),
    );
    poll_all(&config).await;
    let pruned_size = {
        let store = Store::open_configured(&config.storage).unwrap();
        store.prune(None, Some(10), Utc::now()).unwrap();
        store.flush().unwrap();
        store.size_on_disk()
    };
    let out = std::process::Command::new(crate::binary())
        .args(["compact", "--config"])
        .arg(&config.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open_configured(&config.storage).unwrap();
    let compacted = store.size_on_disk();
    println!("store after pruning 1990 of 2000 items: {pruned_size} bytes; compacted: {compacted}");
    // What is left is sled's floor, whatever was pruned: one or two 512 KiB segments of the
    // log (the kept items, the pruned ones' tombstones) and the term statistics (a 1 MiB
    // blob).
    assert!(
        compacted * 2 < pruned_size && compacted <= 2 * 1024 * 1024 + 64 * 1024,
        "{pruned_size} bytes before compacting, {compacted} after: {:?}",
        files_in(&config.storage.path)
    );
    assert_eq!(store.item_count(), 10);
    assert_eq!(store.tombstone_count(), 1990);
    assert_eq!(store.source_state("r").unwrap().item_count, 10);
    drop(store);
    assert_eq!(titles(&config, "all").len(), 10);
    assert!(!dir.path().join("store.compacting").exists());
    assert!(!dir.path().join("store.before-compacting").exists());
}

/// Every file under `dir` with its size, for a failure message.
fn files_in(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_in(&path));
        } else {
            let len = entry.metadata().map_or(0, |m| m.len());
            files.push((path.display().to_string(), len));
        }
    }
    files
}
