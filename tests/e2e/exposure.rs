//! The HTTP surface as an attacker meets it: read-only, bound to loopback by default, request
//! size, header size and slow-client limits, and no way out of `/feeds/` through a feed name.
//! Requests go over raw TCP where a client library would tidy them up.

use std::time::{Duration, Instant};

use feedmux::daemon::Control;
use feedmux::http::listener::{self, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::served::Served;
use crate::upstream::Upstream;
use crate::{config, rss_feed, source, tempdir, RssItem};

/// A daemon in this process with one source and one feed `all`, serving on a free port
/// (`Served::addr`). It holds its turn at sled until dropped.
async fn daemon_with_a_feed() -> (Served, tempfile::TempDir, Upstream) {
    let upstream = Upstream::start().await;
    upstream.put(
        "/f.xml",
        &[("content-type", "application/rss+xml")],
        rss_feed(
            "t",
            "https://x.example/",
            [RssItem::new(1, "one", "https://x.example/1")],
        ),
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"all\"\n",
            source("s", &upstream.url("/f.xml"))
        ),
    );
    let served = Served::with_config(config).await;
    // Bounded wait until it serves.
    for _ in 0..100 {
        if raw(
            served.addr(),
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .starts_with("HTTP/1.1 200")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (served, dir, upstream)
}

/// Sends `request` as is and reads the answer until the server closes (at most 5 s).
async fn raw(addr: &str, request: &[u8]) -> String {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return String::new();
    };
    if stream.write_all(request).await.is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or("")
}

#[tokio::test]
async fn only_get_and_head_are_answered() {
    let (served, _dir, _upstream) = daemon_with_a_feed().await;
    let addr = served.addr().to_owned();
    for method in [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "BREW",
    ] {
        for path in ["/", "/feeds/all.atom", "/healthz", "/no/such/path"] {
            let answer = raw(
                &addr,
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await;
            assert_eq!(status(&answer), "405", "{method} {path}: {answer}");
            assert!(
                answer.to_ascii_lowercase().contains("allow: get, head"),
                "{answer}"
            );
        }
    }
    let head = raw(
        &addr,
        b"HEAD /feeds/all.atom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&head), "200", "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    let _ = served.control().send(Control::Shutdown).await;
}

#[tokio::test]
async fn a_request_body_is_refused() {
    let (served, _dir, _upstream) = daemon_with_a_feed().await;
    let addr = served.addr().to_owned();
    let with_length = raw(
        &addr,
        b"GET /feeds/all.atom HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(status(&with_length), "413", "{with_length}");
    let chunked = raw(
        &addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&chunked), "413", "{chunked}");
    // A large body is not read: the answer comes, and the connection closes, at once.
    let started = Instant::now();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 413"));
    assert!(started.elapsed() < Duration::from_secs(2));
    let _ = served.control().send(Control::Shutdown).await;
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let (served, _dir, _upstream) = daemon_with_a_feed().await;
    let addr = served.addr().to_owned();
    let big = format!(
        "GET /feeds/all.atom HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw(&addr, big.as_bytes()).await;
    assert!(
        answer.is_empty() || status(&answer) == "431",
        "64 KiB of headers: {}",
        &answer[..answer.len().min(200)]
    );
    let many = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        (0..400)
            .map(|n| format!("X-H{n}: {n}\r\n"))
            .collect::<String>()
    );
    let answer = raw(&addr, many.as_bytes()).await;
    assert!(
        answer.is_empty() || status(&answer) == "431",
        "400 headers: {}",
        &answer[..answer.len().min(200)]
    );
    // Headers of ordinary size still pass.
    let fine = format!(
        "GET /feeds/all.atom HTTP/1.1\r\nHost: x\r\nUser-Agent: {}\r\nConnection: close\r\n\r\n",
        "r".repeat(4000)
    );
    assert_eq!(status(&raw(&addr, fine.as_bytes()).await), "200");
    let _ = served.control().send(Control::Shutdown).await;
}

#[tokio::test]
async fn feed_names_cannot_reach_files() {
    let (served, _dir, _upstream) = daemon_with_a_feed().await;
    let addr = served.addr().to_owned();
    for path in [
        "/feeds/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/feeds/..%2F..%2F..%2F..%2Fetc%2Fpasswd.atom",
        "/feeds/../../../../etc/passwd",
        "/feeds/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/feeds/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/feeds/%252e%252e%252fetc%252fpasswd",
        "/feeds/..%5c..%5c..%5cetc%5cpasswd",
        "/feeds/all.atom%00.json",
        "/feeds/all.atom/../../../etc/passwd",
        "/feeds/..",
        "/feeds/.atom",
        "/feeds/%2fetc%2fpasswd",
        "//etc/passwd",
        "/../../etc/passwd",
        "/feeds/Cargo.toml",
        "/feeds/feedmux.toml",
        "/feeds/store",
    ] {
        let answer = raw(
            &addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(matches!(status(&answer), "404" | "400"), "{path}: {answer}");
        for secret in ["root:", "[storage]", "[package]", "[[source]]"] {
            assert!(!answer.contains(secret), "{path} leaked {secret}: {answer}");
        }
    }
    let _ = served.control().send(Control::Shutdown).await;
}

#[test]
fn the_default_bind_is_loopback() {
    let dir = tempdir();
    let path = dir.path().join("feedmux.toml");
    let config = feedmux::config::parse(&path, "[storage]\npath = \"store\"\n").unwrap();
    assert!(
        config.server.listen.ip().is_loopback(),
        "{}",
        config.server.listen
    );
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
}

/// A slowloris client: opens `n` connections and sends each a request head that never ends,
/// one byte at a time (some send nothing at all).
async fn slowloris(addr: &str, n: usize) -> Vec<tokio::task::JoinHandle<Option<Duration>>> {
    let mut held = Vec::new();
    for i in 0..n {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            break;
        };
        held.push(tokio::spawn(async move {
            let started = Instant::now();
            if i % 4 != 0 {
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .ok()?;
            }
            let mut buf = [0u8; 256];
            // Until the server closes the connection (returns how long that took), or 20 s.
            for _ in 0..100 {
                if i % 4 != 0 && stream.write_all(b"X").await.is_err() {
                    return Some(started.elapsed());
                }
                match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                    Ok(Ok(_)) => return Some(started.elapsed()), // an error answer, then close
                    Err(_) => {}
                }
            }
            None
        }));
    }
    held
}

/// With the daemon's default limits, hundreds of half-sent requests leave readers unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_does_not_block_readers() {
    let (served, _dir, _upstream) = daemon_with_a_feed().await;
    let addr = served.addr().to_owned();
    let held = slowloris(&addr, 400).await;
    assert!(held.len() >= 300, "opened only {} connections", held.len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        let started = Instant::now();
        let answer = raw(
            &addr,
            b"GET /feeds/all.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status(&answer), "200", "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a reader waited {:?}",
            started.elapsed()
        );
    }
    for h in held {
        h.abort();
    }
    let _ = served.control().send(Control::Shutdown).await;
}

/// More slow clients than connection slots: the header read timeout frees the slots, so a
/// reader is served within about that timeout, and every slow connection is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_cut_off_by_the_header_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let limits = Limits {
        max_connections: 16,
        header_read_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listener::serve(listener, app, limits, async {
        let _ = stopped.await;
    }));
    let held = slowloris(&addr, 48).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let answer = raw(
        &addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), "200", "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the reader waited {:?} behind slow clients",
        started.elapsed()
    );
    let mut cut = 0;
    for h in held {
        let closed_after = h.await.unwrap();
        assert!(
            closed_after.is_some_and(|d| d < Duration::from_secs(8)),
            "a slow connection was held: {closed_after:?}"
        );
        cut += 1;
    }
    assert_eq!(cut, 48);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// The paths `server::router` routes, read from its source: a route added there without
/// sample requests in [`requests_for`] fails the test below.
fn routes() -> Vec<String> {
    let source = include_str!("../../src/http/routes.rs");
    let route = regex::Regex::new(r#"\.route\(\s*"([^"]+)""#).unwrap();
    route
        .captures_iter(source)
        .map(|c| c[1].to_owned())
        .collect()
}

/// Requests (path and extra header lines) for `route`: its answers, errors and 304s.
fn requests_for(route: &str) -> Vec<(String, &'static str)> {
    let plain = |paths: &[&str]| -> Vec<(String, &'static str)> {
        paths.iter().map(|p| (p.to_string(), "")).collect()
    };
    match route {
        "/" => plain(&["/", "/?page=1", "/?page=99", "/?page=0", "/?page=x"]),
        "/feeds/{file}" => {
            let mut requests = plain(&[
                "/feeds/all.atom",
                "/feeds/all.rss",
                "/feeds/all.json",
                "/feeds/all.html",
                "/feeds/all.json?q=one",
                "/feeds/all.html?q=one&limit=5",
                "/feeds/all.atom?limit=0",
                "/feeds/none.atom",
                "/feeds/all.txt",
            ]);
            requests.push(("/feeds/all.atom".into(), "Accept: text/html\r\n"));
            requests.push(("/feeds/all.html".into(), "If-None-Match: *\r\n"));
            requests.push(("/feeds/all.json".into(), "Accept-Encoding: br\r\n"));
            requests
        }
        "/api/items" => plain(&["/api/items?source=s", "/api/items?source=x", "/api/items"]),
        "/healthz" | "/readyz" | "/metrics" | "/opml" | "/api/sources" => plain(&[route]),
        other => panic!("route {other} has no sample requests in this test"),
    }
}

/// Every route the server has, its errors and refusals included, answers with `nosniff`, and
/// every HTML answer with a Content-Security-Policy that allows no script.
#[tokio::test]
async fn every_answer_says_nosniff_and_every_page_forbids_scripts() {
    let (served, _dir, _upstream) = daemon_with_a_feed().await;
    let addr = served.addr().to_owned();
    let routes = routes();
    assert!(routes.len() >= 8, "routes read from server.rs: {routes:?}");
    let mut requests: Vec<(String, String)> = routes
        .iter()
        .flat_map(|r| requests_for(r))
        .map(|(path, headers)| {
            (
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"),
                path,
            )
        })
        .collect();
    for (request, what) in [
        ("GET /no/such/path HTTP/1.1\r\n", "an unknown path"),
        ("POST / HTTP/1.1\r\n", "a refused method"),
        ("GET / HTTP/1.1\r\nContent-Length: 3\r\n", "a request body"),
    ] {
        requests.push((
            format!("{request}Host: x\r\nConnection: close\r\n\r\nabc"),
            what.to_owned(),
        ));
    }
    let (mut statuses, mut pages) = (std::collections::BTreeSet::new(), 0);
    for (request, what) in &requests {
        let answer = raw(&addr, request.as_bytes()).await;
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        statuses.insert(status(&answer).to_owned());
        assert!(
            head.contains("\r\nx-content-type-options: nosniff"),
            "{what}: no nosniff:\n{head}"
        );
        if head.contains("\r\ncontent-type: text/html") {
            pages += 1;
            let csp = head
                .lines()
                .find_map(|l| l.strip_prefix("content-security-policy: "))
                .unwrap_or_else(|| panic!("{what}: an HTML page without a CSP:\n{head}"));
            assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
            for loose in ["script-src", "unsafe-eval", "*"] {
                assert!(!csp.contains(loose), "{what}: {loose} in {csp}");
            }
        }
    }
    assert!(pages >= 4, "HTML pages seen: {pages}");
    for expected in ["200", "304", "400", "404", "405", "413"] {
        assert!(
            statuses.contains(expected),
            "no {expected} among {statuses:?}"
        );
    }
    let _ = served.control().send(Control::Shutdown).await;
}
