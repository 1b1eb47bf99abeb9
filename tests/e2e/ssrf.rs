//! SSRF: a feed that sends feedmux into private networks (a redirect to loopback, to a
//! cloud's metadata address, to an address in disguise) is refused with an error naming the
//! address, and nothing there is requested or republished; configured sources and
//! `[poll] allow_private_networks` are the ways in.

use feedmux::config::Config;
use feedmux::model::SourceState;
use feedmux::store::Store;

use crate::upstream::{Page, Upstream};
use crate::{config, poll, tempdir, titles};

const FEED: &str = "<rss version=\"2.0\"><channel><title>inside</title><link>http://inside.test/</link><description>d</description><item><guid>secret-1</guid><title>internal admin page</title><link>http://inside.test/1</link></item></channel></rss>";

/// A config whose one source, `jump` at `source_url`, is polled with `poll` settings.
fn with_source(dir: &std::path::Path, source_url: &str, poll: &str) -> Config {
    config(
        dir,
        &format!(
            "[poll]\nper_host_interval = \"0s\"\n{poll}\n[[source]]\nname = \"jump\"\nurl = {source_url:?}\n\n[[feed]]\nname = \"all\"\n"
        ),
    )
}

fn state(config: &Config) -> SourceState {
    Store::open_configured(&config.storage)
        .unwrap()
        .source_state("jump")
        .unwrap()
}

/// Polls `jump` once: its error, or "" when it succeeded.
async fn poll_error(config: &Config) -> String {
    let results = poll(config, &["jump"]).await;
    match &results[0].1 {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn redirects_into_private_networks_are_refused_and_nothing_there_is_requested() {
    let upstream = Upstream::start().await;
    let port = upstream.addr.port();
    upstream.put("/private", &[], FEED);
    // The source is configured by name (`localhost`); what it redirects to is not.
    let source_url = format!("http://localhost:{port}/jump");
    for (target, refusal) in [
        (
            format!("http://127.0.0.1:{port}/private"),
            "refused to connect to 127.0.0.1 (127.0.0.1, a loopback address)",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/private"),
            "refused to connect to [::ffff:7f00:1] (::ffff:127.0.0.1, a loopback address)",
        ),
        (
            // 169.254.169.254, the metadata service of most clouds, written as one number.
            "http://2852039166/latest/meta-data/".to_owned(),
            "refused to connect to 169.254.169.254 (169.254.169.254, a link-local address)",
        ),
        (
            format!("http://0x7f.0.0.1:{port}/private"),
            "refused to connect to 127.0.0.1 (127.0.0.1, a loopback address)",
        ),
    ] {
        upstream.put_page("/jump", Page::new(302, &[("location", &target)], ""));
        let dir = tempdir();
        let config = with_source(dir.path(), &source_url, "");
        let error = poll_error(&config).await;
        assert!(
            error.starts_with(&format!("fetch failed: {refusal}")),
            "{target}: {error}"
        );
        assert!(error.contains("allow_private_networks"), "{error}");
        assert_eq!(state(&config).last_error.as_deref(), Some(error.as_str()));
        assert!(titles(&config, "all").is_empty());
        assert!(
            upstream.requests("/private").is_empty(),
            "{target} was requested"
        );
    }
}

#[tokio::test]
async fn a_name_resolving_into_private_networks_is_refused_when_it_is_not_configured() {
    let upstream = Upstream::start().await;
    let port = upstream.addr.port();
    upstream.put("/private", &[], FEED);
    // Configured by address; the redirect's target is a name that resolves to loopback.
    upstream.put_page(
        "/jump",
        Page::new(
            301,
            &[("location", &format!("http://localhost:{port}/private"))],
            "",
        ),
    );
    let source_url = upstream.url("/jump");
    let dir = tempdir();
    let config = with_source(dir.path(), &source_url, "");
    let error = poll_error(&config).await;
    assert!(
        error.contains("refused to connect to localhost (")
            && error.contains("a loopback address)"),
        "{error}"
    );
    assert!(upstream.requests("/private").is_empty());

    // The user allows loopback: the same redirect is followed and its items stored.
    let dir = tempdir();
    let config = with_source(
        dir.path(),
        &source_url,
        "allow_private_networks = [\"127.0.0.0/8\", \"::1\"]",
    );
    assert_eq!(poll_error(&config).await, "");
    assert_eq!(titles(&config, "all"), ["internal admin page"]);
    assert_eq!(upstream.requests("/private").len(), 1);
}

/// Behind an HTTP proxy the proxy resolves host names, not feedmux: a redirect to a name
/// that resolves into a private network is resolved and refused before the request all the
/// same. The test's upstream plays the proxy (it answers by path whatever the host); the
/// binary runs as a child with `HTTP_PROXY` set (its own environment, not the tests').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_a_redirect_to_a_private_name_is_refused_before_the_request() {
    let proxy = Upstream::start().await;
    let port = proxy.addr.port();
    proxy.put("/private", &[], FEED);
    proxy.put_page(
        "/jump",
        Page::new(
            302,
            &[("location", &format!("http://localhost:{port}/private"))],
            "",
        ),
    );
    // A configured name, which only the proxy could resolve (and this one answers for it).
    let poll_through_proxy = |poll_keys: &str| {
        let dir = tempdir();
        let config = with_source(dir.path(), "http://feeds.example/jump", poll_keys);
        let out = std::process::Command::new(crate::binary())
            .args(["poll", "--config"])
            .arg(dir.path().join("feedmux.toml"))
            .env("HTTP_PROXY", proxy.url(""))
            .env_remove("http_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, config, said)
    };
    let (_dir, config, said) = poll_through_proxy("");
    assert_eq!(
        proxy.requests("/jump").len(),
        1,
        "not through the proxy: {said}"
    );
    assert!(
        said.contains("refused to connect to localhost (") && said.contains("a loopback address"),
        "{said}"
    );
    assert!(proxy.requests("/private").is_empty(), "{said}");
    assert!(titles(&config, "all").is_empty());

    // Allowed by the user, the same redirect goes through the proxy.
    let (_dir, config, said) =
        poll_through_proxy("allow_private_networks = [\"127.0.0.0/8\", \"::1\"]");
    assert_eq!(proxy.requests("/private").len(), 1, "{said}");
    assert_eq!(titles(&config, "all"), ["internal admin page"]);
}

#[tokio::test]
async fn a_configured_private_source_and_its_own_redirects_are_followed() {
    let upstream = Upstream::start().await;
    upstream.put("/moved", &[], FEED);
    upstream.put_page("/jump", Page::new(302, &[("location", "/moved")], ""));
    let dir = tempdir();
    let config = with_source(dir.path(), &upstream.url("/jump"), "");
    assert_eq!(poll_error(&config).await, "");
    assert_eq!(titles(&config, "all"), ["internal admin page"]);
}

#[test]
fn a_bad_network_in_the_allow_list_is_a_config_error_with_its_place() {
    let dir = tempdir();
    let path = dir.path().join("feedmux.toml");
    std::fs::write(
        &path,
        "[poll]\nallow_private_networks = [\"10.0.0.0/8\", \"intranet\"]\n",
    )
    .unwrap();
    let errors = feedmux::config::load(&path).unwrap_err().to_string();
    assert!(
        errors.contains("feedmux.toml:2:")
            && errors
                .contains("\"intranet\" is not a network (10.0.0.0/8, fd00::/8) or an address"),
        "{errors}"
    );
}
