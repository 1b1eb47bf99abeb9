//! Canonical forms: a link without tracking parameters or fragments, in one spelling
//! ([`canonical_url`], what "the same article" means), and an entry's content hash (whether an
//! item's text changed). Must not read the store.

use super::*;

/// Query parameters that only track where a click came from.
pub(super) const TRACKING_PARAMS: &[&str] = &[
    "spm",
    "fbclid",
    "gclid",
    "dclid",
    "msclkid",
    "yclid",
    "mc_cid",
    "mc_eid",
    "ref",
    "ref_src",
    "_hsenc",
    "_hsmi",
    "igshid",
    "mkt_tok",
    "vero_id",
    "wt_mc",
    "cmpid",
    "scm",
    "share_token",
];
/// `from=`/`source=` values that name a channel rather than select content.
pub(super) const TRACKING_ORIGINS: &[&str] = &[
    "rss",
    "feed",
    "feeds",
    "atom",
    "feedly",
    "inoreader",
    "newsletter",
    "email",
    "mail",
    "timeline",
    "singlemessage",
    "groupmessage",
    "twitter",
    "x",
    "weibo",
    "wechat",
    "weixin",
    "share",
    "social",
    "homepage",
    "home",
    "app",
    "ios",
    "android",
    "google",
    "facebook",
    "fb",
    "linkedin",
    "reddit",
    "hn",
    "hackernews",
    "toutiao",
    "zhihu",
    "douban",
    "telegram",
    "web",
];

/// A hash of everything a reader sees of an entry; an edit changes it.
pub fn content_hash(entry: &Entry) -> u64 {
    let mut hasher = Sha256::new();
    for part in [
        entry.title.as_str(),
        entry.url.as_deref().unwrap_or_default(),
        entry.summary_html.as_deref().unwrap_or_default(),
        entry.content_html.as_deref().unwrap_or_default(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for author in &entry.authors {
        hasher.update(author.as_bytes());
        hasher.update([1]);
    }
    for enclosure in &entry.enclosures {
        hasher.update(enclosure.url.as_bytes());
        hasher.update([2]);
    }
    if let Some(p) = entry.published {
        hasher.update(p.timestamp().to_be_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The canonical form of a URL, under which the same article from two sources compares equal:
/// scheme and host lowercased, default port and fragment dropped, tracking parameters removed,
/// the remaining query keys sorted. `None` for URLs that are not http(s).
pub fn canonical_url(raw: &str) -> Option<String> {
    let mut url = Url::parse(raw.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    url.set_fragment(None);
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, v)| !is_tracking(k, v))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Some(url.to_string())
}

fn is_tracking(key: &str, value: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.starts_with("utm_") || TRACKING_PARAMS.contains(&key.as_str()) {
        return true;
    }
    if key == "from" || key == "source" {
        let value = value.to_ascii_lowercase();
        return TRACKING_ORIGINS.contains(&value.as_str())
            || value.starts_with("rss")
            || value.ends_with("_rss")
            || value.ends_with("feed");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_url_drops_tracking_and_sorts() {
        assert_eq!(
            canonical_url(
                "HTTPS://Example.COM:443/a/b?utm_source=rss&z=1&spm=a.b&a=2&from=timeline#frag"
            )
            .as_deref(),
            Some("https://example.com/a/b?a=2&z=1")
        );
        assert_eq!(
            canonical_url("http://example.com:80/x?ref=hn&fbclid=1&gclid=2&mc_cid=3&mc_eid=4")
                .as_deref(),
            Some("http://example.com/x")
        );
        // from/source that select content are kept
        assert_eq!(
            canonical_url("https://example.com/search?from=2026-01-01&source=arxiv").as_deref(),
            Some("https://example.com/search?from=2026-01-01&source=arxiv")
        );
        assert_eq!(canonical_url("mailto:a@b.c"), None);
    }

    #[test]
    fn canonical_url_is_idempotent() {
        for raw in [
            "https://example.com/a?b=1&a=2",
            "https://例子.中国/路径?q=中文&utm_medium=x",
            "http://example.com",
        ] {
            let once = canonical_url(raw).unwrap();
            assert_eq!(canonical_url(&once).unwrap(), once);
        }
    }
}
