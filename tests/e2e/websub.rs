//! WebSub: with `[websub] hub = ...`, every feed names the hub and itself, and the daemon
//! sends the hub `hub.mode=publish` for each feed URL whose bytes changed, and only then.
//! The hub is a stub on 127.0.0.1 that records what it is told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use crate::served::Served;
use crate::upstream::Upstream;
use crate::{eventually, rss_feed, tempdir, RssItem};

#[derive(Clone, Default)]
struct Hub {
    pings: Arc<Mutex<Vec<(String, String)>>>,
}

impl Hub {
    async fn start() -> (Hub, String) {
        let hub = Hub::default();
        let app = Router::new()
            .route("/hub", post(receive))
            .with_state(hub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hub", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (hub, url)
    }

    /// The `hub.url` of every publish ping so far, sorted.
    fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .pings
            .lock()
            .unwrap()
            .iter()
            .map(|(content_type, body)| {
                assert_eq!(content_type, "application/x-www-form-urlencoded");
                let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
                assert_eq!(form.len(), 2, "{body}");
                assert_eq!(form[0], ("hub.mode".into(), "publish".into()), "{body}");
                assert_eq!(form[1].0, "hub.url", "{body}");
                form[1].1.clone()
            })
            .collect();
        topics.sort();
        topics
    }
}

async fn receive(State(hub): State<Hub>, headers: HeaderMap, body: String) -> StatusCode {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    hub.pings.lock().unwrap().push((content_type, body));
    StatusCode::NO_CONTENT
}

fn rss(titles: &[&str]) -> String {
    let items = titles.iter().enumerate().map(|(i, t)| {
        RssItem::new(i, t, format!("https://t.example/{i}"))
            .dated(&format!("Wed, 25 Nov 2026 0{i}:00:00 GMT"))
    });
    rss_feed("T", "https://t.example/", items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_is_advertised_and_told_when_a_feed_changes() {
    let (hub, hub_url) = Hub::start().await;
    let upstream = Upstream::start().await;
    upstream.put(
        "/t.xml",
        &[("content-type", "application/rss+xml")],
        rss(&["One"]),
    );
    let dir = tempdir();
    let served = Served::start(
        dir.path(),
        &format!(
            "[websub]\nhub = \"{hub_url}\"\n\n[[source]]\nname = \"t\"\nurl = \"{}\"\nschedule = \"* * * * * *\"\n\n[[feed]]\nname = \"all\"\n\n[[feed]]\nname = \"none\"\ninclude = [\"no-such-word\"]\n",
            upstream.url("/t.xml")
        ),
    )
    .await;
    served.wait_for("all", 1).await;
    let feeds: Vec<String> = ["atom", "json", "rss"]
        .iter()
        .map(|f| served.url(&format!("/feeds/all.{f}")))
        .collect();

    // Advertised: rel="hub" and rel="self" in every format.
    let text = |url: String| async move { reqwest::get(url).await.unwrap().text().await.unwrap() };
    let atom = text(served.url("/feeds/all.atom")).await;
    assert!(
        atom.contains(&format!("<link rel=\"hub\" href=\"{hub_url}\"/>")),
        "{atom}"
    );
    assert!(
        atom.contains(&format!(
            "<link rel=\"self\" type=\"application/atom+xml\" href=\"{}\"/>",
            feeds[0]
        )),
        "{atom}"
    );
    let rss_doc = text(served.url("/feeds/all.rss")).await;
    assert!(
        rss_doc.contains(&format!("<atom:link href=\"{hub_url}\" rel=\"hub\"/>")),
        "{rss_doc}"
    );
    assert!(
        rss_doc.contains(&format!("<atom:link href=\"{}\" rel=\"self\"", feeds[2])),
        "{rss_doc}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&text(served.url("/feeds/all.json")).await).unwrap();
    assert_eq!(
        json["hubs"],
        serde_json::json!([{"type": "WebSub", "url": hub_url}])
    );
    assert_eq!(json["feed_url"], feeds[1].as_str());

    // The first poll filled `all`: one ping per format URL; `none` did not change.
    eventually("pings after the first poll", || hub.topics().len() >= 3).await;
    assert_eq!(hub.topics(), feeds);

    // Polls every second that find nothing new tell the hub nothing.
    let polls = upstream.requests("/t.xml").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        upstream.requests("/t.xml").len() > polls,
        "polled again meanwhile"
    );
    assert_eq!(hub.topics().len(), 3, "no ping without a change");

    // A new item: each format is announced again.
    upstream.put(
        "/t.xml",
        &[("content-type", "application/rss+xml")],
        rss(&["One", "Two"]),
    );
    served.wait_for("all", 2).await;
    eventually("pings after the change", || hub.topics().len() >= 6).await;
    let expected: Vec<String> = feeds.iter().flat_map(|f| [f.clone(), f.clone()]).collect();
    assert_eq!(hub.topics(), expected);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_hub_nothing_is_advertised() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/t.xml",
        &[("content-type", "application/rss+xml")],
        rss(&["One"]),
    );
    let dir = tempdir();
    let served = Served::start(
        dir.path(),
        &format!(
            "[[source]]\nname = \"t\"\nurl = \"{}\"\n\n[[feed]]\nname = \"all\"\n",
            upstream.url("/t.xml")
        ),
    )
    .await;
    served.wait_for("all", 1).await;
    for format in ["atom", "rss", "json"] {
        let body = reqwest::get(served.url(&format!("/feeds/all.{format}")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !body.contains("rel=\"hub\"") && !body.contains("\"hubs\""),
            "{format}: {body}"
        );
    }
    served.stop().await;
}
