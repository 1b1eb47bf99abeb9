//! Parse benchmark: what reading a broken feed costs against reading the same feed well-formed,
//! and whether hostile inputs take time in proportion to their size.
//!
//! Part 1 parses a 1,000-item feed (about 2 KB per item, half Chinese) through
//! `parse_feed` well-formed (the strict reading), then broken in ways that send it through the
//! repair pass: a bare `&` in the last item (the strict reading fails at the end, the worst
//! case), in the first, a document cut off in its last item, and one entry that feed-rs
//! refuses even repaired (read entry by entry). Each is printed as a ratio to the well-formed
//! reading, measured in the same run; the bound for the repair is 2x.
//!
//! Part 2 parses hostile documents at two sizes, n and 4n: time growing 4x is linear, 16x
//! quadratic. Run with `cargo bench --bench parse`.

use std::time::{Duration, Instant};

use chrono::Utc;
use feedmux::parse::parse_feed;
use url::Url;

/// The middle of `runs`.
fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

/// The allocator the `feedmux` binary uses (jemalloc), so the figures are the product's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ITEMS: usize = 1_000;

fn item(i: usize, title: &str) -> String {
    let en = "Researchers describe a new training method for large language models that reduces the compute needed for alignment while keeping quality on standard benchmarks. ";
    let zh = "研究人员提出一种新的大模型训练方法，在保持基准测试表现的同时显著降低对齐所需的算力，并公开了代码与数据。";
    let para = if i.is_multiple_of(2) { en } else { zh };
    let mut body = String::new();
    while body.len() < 1_700 {
        body.push_str("&lt;p&gt;");
        body.push_str(para);
        body.push_str("&lt;a href=\"/more\"&gt;more&lt;/a&gt;&lt;/p&gt;");
    }
    format!(
        "<item><title>{title}</title><link>https://bench.example/posts/{i}</link><guid>bench-{i}</guid><pubDate>Tue, 10 Nov 2026 08:00:00 +0800</pubDate><description>{body}</description></item>\n"
    )
}

/// The feed, with `last` as its last item's markup (`None`: a well-formed one), and `first`
/// as its first item's title.
fn feed(first: &str, last: Option<&str>) -> Vec<u8> {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\" xmlns:m=\"http://search.yahoo.com/mrss/\"><channel><title>Bench</title><link>https://bench.example/</link><description>bench</description>\n");
    for i in 0..ITEMS {
        let title = match i {
            0 => first.to_owned(),
            _ if i % 2 == 0 => format!("AI model release number {i}"),
            _ => format!("第{i}号大模型发布：人工智能新进展"),
        };
        if i + 1 == ITEMS {
            if let Some(last) = last {
                out.push_str(last);
                return out.into_bytes();
            }
        }
        out.push_str(&item(i, &title));
    }
    out.push_str("</channel></rss>\n");
    out.into_bytes()
}

/// The median time of `runs` readings of `body`, and the entries the last one gave (none
/// for a body that is not read as a feed).
fn time(body: &[u8], runs: usize) -> (Duration, usize, Vec<String>) {
    let base = Url::parse("https://bench.example/feed.xml").unwrap();
    let mut times = Vec::new();
    let mut entries = 0;
    let mut recovered = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let parsed = parse_feed(body, None, &base, Utc::now());
        times.push(t.elapsed());
        if let Ok(parsed) = parsed {
            entries = parsed.entries.len();
            recovered = parsed.recovered;
        }
    }
    (median(times), entries, recovered)
}

fn main() {
    let well_formed = feed("AI model release number 0", None);
    let bare_last = feed(
        "AI model release number 0",
        Some(&(item(ITEMS - 1, "Q&A: the last item") + "</channel></rss>\n")),
    );
    let bare_first = feed("Q&A: the first item", None);
    let mut cut_off = well_formed.clone();
    cut_off.truncate(well_formed.len() - 900);
    let refused = feed(
        "AI model release number 0",
        Some(
            &(item(ITEMS - 1, "refused").replace(
                "</item>",
                "<m:group><m:title type=\"bogus\">x</m:title></m:group></item>",
            ) + "</channel></rss>\n"),
        ),
    );
    println!(
        "part 1: a {ITEMS}-item feed, {} bytes (median of 7)",
        well_formed.len()
    );
    let (strict, n, recovered) = time(&well_formed, 7);
    assert!(n == ITEMS && recovered.is_empty());
    println!(
        "{:<58} {:>8.1}ms   1.00x",
        "well-formed (the strict reading)",
        strict.as_secs_f64() * 1e3
    );
    for (name, body, want) in [
        (
            "a bare & in the last item (strict fails at the end)",
            &bare_last,
            ITEMS,
        ),
        ("a bare & in the first item", &bare_first, ITEMS),
        (
            "cut off in the last item (it is dropped)",
            &cut_off,
            ITEMS - 1,
        ),
        (
            "one entry feed-rs refuses (read entry by entry)",
            &refused,
            ITEMS - 1,
        ),
    ] {
        let (t, n, recovered) = time(body, 7);
        assert_eq!(n, want, "{name}: {recovered:?}");
        assert!(!recovered.is_empty(), "{name}");
        println!(
            "{:<58} {:>8.1}ms {:>6.2}x",
            name,
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() / strict.as_secs_f64()
        );
    }

    println!("\npart 2: hostile documents at n and 4n (4x is linear, 16x quadratic; median of 3)");
    let root = |inner: &str| {
        format!("<rss version=\"2.0\"><channel><title>t</title><item><title>x</title><guid>1</guid>{inner}</item></channel></rss>")
    };
    type Make = fn(usize, &dyn Fn(&str) -> String) -> String;
    let cases: [(&str, usize, Make); 6] = [
        ("<!x> before the root", 25_000, |n, _| {
            "<!x>".repeat(n) + "<rss version=\"2.0\"><channel><title>t</title></channel></rss>"
        }),
        (
            "escaped nested <div> in a description",
            10_000,
            |n, root| {
                root(&format!(
                    "<description>{}deep{}</description>",
                    "&lt;div&gt;".repeat(n),
                    "&lt;/div&gt;".repeat(n)
                ))
            },
        ),
        ("nested elements in an item (repair)", 25_000, |n, root| {
            root(&format!("{}deep{} &", "<a>".repeat(n), "</a>".repeat(n)))
        }),
        ("attributes on one element (repair)", 25_000, |n, root| {
            let attributes: String = (0..n).map(|i| format!(" a{i}=\"1\"")).collect();
            root(&format!("<x{attributes}/> &"))
        }),
        ("stray < in a title (repair)", 25_000, |n, _| {
            format!(
                "<rss version=\"2.0\"><channel><item><title>{}</title></item></channel></rss>",
                "a < b ".repeat(n)
            )
        }),
        ("undeclared prefixes (repair)", 25_000, |n, root| {
            root(&(0..n).map(|i| format!("<p{i}:x/>")).collect::<String>())
        }),
    ];
    println!("{:<42} {:>10} {:>10} {:>7}", "input", "n", "4n", "ratio");
    for (name, n, make) in cases {
        let small = make(n, &root);
        let large = make(4 * n, &root);
        let (a, _, _) = time(small.as_bytes(), 3);
        let (b, _, _) = time(large.as_bytes(), 3);
        println!(
            "{:<42} {:>8.1}ms {:>8.1}ms {:>6.1}x",
            name,
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}
