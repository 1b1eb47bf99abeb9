//! What a request asks for in its headers: a coding (`Accept-Encoding`) and whether a
//! browser would rather have the HTML view (`Accept`), by their `q` weights.

use super::*;

/// A header's comma-separated values with their `q` weights (RFC 9110 12.4.2), lowercased.
fn weighted(headers: &HeaderMap, name: header::HeaderName) -> Vec<(String, f32)> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let value = parts.next()?.trim().to_ascii_lowercase();
            if value.is_empty() {
                return None;
            }
            let q = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| v.trim().parse::<f32>().ok())?
                })
                .next()
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            Some((value, q))
        })
        .collect()
}

/// Media types a feed reader may ask for.
const FEED_TYPES: [&str; 7] = [
    "application/atom+xml",
    "application/rss+xml",
    "application/feed+json",
    "application/rdf+xml",
    "application/xml",
    "text/xml",
    "application/json",
];

/// Whether `Accept` gives `text/html` a higher `q` than every feed type: what a browser
/// sends, and never what a feed reader sends (no `Accept`, `*/*`, or feed types first). Each
/// type's `q` is that of the most specific range that names it.
pub(super) fn prefers_html(headers: &HeaderMap) -> bool {
    let ranges = weighted(headers, header::ACCEPT);
    let q_of = |media: &str| {
        let (kind, _) = media.split_once('/').unwrap_or((media, ""));
        let wildcard = format!("{kind}/*");
        ranges
            .iter()
            .find(|(r, _)| r == media)
            .or_else(|| ranges.iter().find(|(r, _)| *r == wildcard))
            .or_else(|| ranges.iter().find(|(r, _)| r == "*/*"))
            .map_or(0.0, |(_, q)| *q)
    };
    let html = q_of("text/html");
    html > 0.0 && FEED_TYPES.iter().all(|t| q_of(t) < html)
}

/// The coding `Accept-Encoding` prefers among brotli, gzip and identity: the highest `q`,
/// brotli before gzip before identity on a tie. `*` stands for every coding not named;
/// identity is the fallback, acceptable unless refused by name or by `*;q=0`. No header:
/// identity.
pub(super) fn preferred_coding(headers: &HeaderMap) -> Coding {
    let accepted = weighted(headers, header::ACCEPT_ENCODING);
    if accepted.is_empty() {
        return Coding::Identity;
    }
    let q_of = |name: &str, default: f32| {
        accepted
            .iter()
            .find(|(v, _)| v == name)
            .or_else(|| accepted.iter().find(|(v, _)| v == "*"))
            .map_or(default, |(_, q)| *q)
    };
    let candidates = [
        (Coding::Brotli, q_of("br", 0.0)),
        (Coding::Gzip, q_of("gzip", 0.0).max(q_of("x-gzip", 0.0))),
        // Unnamed identity is acceptable but the last choice (RFC 9110 12.5.3).
        (Coding::Identity, q_of("identity", 0.001)),
    ];
    candidates
        .iter()
        .filter(|(_, q)| *q > 0.0)
        .fold(None::<(Coding, f32)>, |best, &(c, q)| match best {
            Some((_, bq)) if bq >= q => best,
            _ => Some((c, q)),
        })
        .map_or(Coding::Identity, |(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coding_for(accept_encoding: &str) -> Coding {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept_encoding).unwrap(),
        );
        preferred_coding(&h)
    }

    #[test]
    fn content_coding_follows_q_values() {
        assert_eq!(preferred_coding(&HeaderMap::new()), Coding::Identity);
        assert_eq!(coding_for("gzip, deflate, br"), Coding::Brotli);
        assert_eq!(coding_for("gzip, deflate"), Coding::Gzip);
        assert_eq!(coding_for("br;q=0.5, gzip;q=0.8"), Coding::Gzip);
        assert_eq!(coding_for("br;q=0, gzip"), Coding::Gzip);
        assert_eq!(coding_for("gzip;q=0, identity"), Coding::Identity);
        assert_eq!(coding_for("identity"), Coding::Identity);
        assert_eq!(coding_for("*"), Coding::Brotli);
        assert_eq!(coding_for("*;q=0.5, br;q=0.1"), Coding::Gzip);
        assert_eq!(coding_for("deflate"), Coding::Identity);
        assert_eq!(coding_for("GZIP ; Q=0.9, identity;q=0.5"), Coding::Gzip);
        assert_eq!(coding_for("br;q=0.3, identity;q=0.9"), Coding::Identity);
    }

    #[test]
    fn browsers_prefer_html_and_readers_do_not() {
        let prefers = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            prefers_html(&h)
        };
        assert!(!prefers_html(&HeaderMap::new()), "no Accept: the feed");
        // Chromium and Firefox.
        assert!(prefers("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"));
        assert!(prefers(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        // feedparser, a typical reader, curl.
        assert!(!prefers("application/atom+xml,application/rdf+xml,application/rss+xml,application/x-netcdf,application/xml;q=0.9,text/xml;q=0.2,*/*;q=0.1"));
        assert!(!prefers(
            "application/rss+xml, application/atom+xml, text/html;q=0.5"
        ));
        assert!(!prefers("*/*"));
        assert!(
            !prefers("text/html, application/atom+xml"),
            "a tie is the feed"
        );
        assert!(
            !prefers("text/*, application/xml"),
            "text/xml ties text/html"
        );
    }
}
