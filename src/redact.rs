//! Redaction: the one form in which a source's or a hub's URL leaves feedmux.
//!
//! A configured URL may carry secrets: a user and password (`https://user:pass@host/feed`),
//! an API key or token in the query (`?token=…`, `?api_key=…`) or, rarely, in the fragment.
//! The fetcher uses the full URL; everything that leaves the process (output feeds, the HTML
//! view, the status page, OPML, `/api/sources`, `/readyz`, log lines and error messages)
//! shows only its **scheme, host (with port) and path**: [`url()`] drops the userinfo, the query
//! and the fragment. The path is kept although it may hold a token too: without it, two feeds
//! of one site could not be told apart.
//!
//! [`text`] does the same to every `scheme://` URL inside a free text (error messages of
//! other crates, config errors, errors stored by older versions), and [`Public`] displays a
//! URL in its public form (for `tracing` fields). [`Urls`] is what a public output does with
//! source URLs: show them redacted, or hide them altogether (`[server] show_source_urls`).
//!
//! This module does no I/O and knows nothing else of feedmux.

use std::borrow::Cow;
use std::fmt;

use url::Url;

/// What replaces a URL where source URLs are hidden (`[server] show_source_urls = false`).
pub const HIDDEN: &str = "(URL hidden)";

/// `url` without userinfo, query and fragment: `scheme://host[:port]/path`.
///
/// ```
/// let u = url::Url::parse("https://me:pw@example.com:8443/feed.xml?token=s3cret#top").unwrap();
/// assert_eq!(feedmux::redact::url(&u), "https://example.com:8443/feed.xml");
/// ```
pub fn url(url: &Url) -> String {
    public_url(url).into()
}

/// `url` without userinfo, query and fragment, as a URL: what [`url()`] writes. Relative
/// links of a feed resolve against it, so that no item link inherits a password or a query.
pub fn public_url(url: &Url) -> Url {
    let mut public = url.clone();
    // Both fail only for URLs that cannot have a user (`file:`, `mailto:`): nothing to drop.
    let _ = public.set_username("");
    let _ = public.set_password(None);
    public.set_query(None);
    public.set_fragment(None);
    public
}

/// A URL kept as text (a source's stored state): its public form when it parses, else
/// whatever [`text`] leaves of it.
pub fn url_str(text: &str) -> String {
    match Url::parse(text.trim()) {
        Ok(parsed) => url(&parsed),
        Err(_) => self::text(text).into_owned(),
    }
}

/// Displays a URL in its public form ([`url()`]): `tracing::info!(url = %Public(&url), …)`.
#[derive(Debug, Clone, Copy)]
pub struct Public<'a>(pub &'a Url);

impl fmt::Display for Public<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&url(self.0))
    }
}

/// `text` with every `scheme://` URL in it in its public form (see the module's doc).
///
/// A URL ends at white space, a quote or an angle bracket (one that follows a double quote
/// ends at the closing quote, spaces or not: `{:?}` quotes URLs so); its userinfo (up to the last `@`
/// of the authority) is dropped, and so is everything from its first `?` or `#` to its end,
/// except closing punctuation (`).,;:!]`) at the very end, which is most likely the
/// sentence's. URLs that do not parse are cut the same way, so a malformed one in an error
/// message is redacted too.
///
/// ```
/// let said = "error sending request for url (https://u:p@example.com/feed?key=abc)";
/// assert_eq!(
///     feedmux::redact::text(said),
///     "error sending request for url (https://example.com/feed)"
/// );
/// ```
pub fn text(text: &str) -> Cow<'_, str> {
    replace_urls(text, |u| Cow::Owned(public_part(u)))
}

/// `text` with every `scheme://` URL in it replaced by [`HIDDEN`].
pub fn hide_urls(text: &str) -> Cow<'_, str> {
    replace_urls(text, |_| Cow::Borrowed(HIDDEN))
}

/// How a public output shows source URLs: `[server] show_source_urls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Urls {
    /// Scheme, host and path ([`url()`]), the default.
    #[default]
    Redacted,
    /// Not at all: links to the source feeds are left out, and URLs in texts are replaced
    /// by [`HIDDEN`].
    Hidden,
}

impl Urls {
    /// The form of `source` shown, if any.
    pub fn url(self, source: &Url) -> Option<String> {
        match self {
            Urls::Redacted => Some(url(source)),
            Urls::Hidden => None,
        }
    }

    /// The form of a URL kept as text shown, if any.
    pub fn url_str(self, source: &str) -> Option<String> {
        match self {
            Urls::Redacted => Some(url_str(source)),
            Urls::Hidden => None,
        }
    }

    /// A text (an error message) with the URLs in it redacted or hidden.
    pub fn text(self, said: &str) -> String {
        match self {
            Urls::Redacted => text(said).into_owned(),
            Urls::Hidden => hide_urls(said).into_owned(),
        }
    }
}

/// Calls `replace` on each `scheme://…` URL of `text` and puts what it returns in its place.
fn replace_urls<'t>(text: &'t str, replace: impl Fn(&str) -> Cow<'_, str>) -> Cow<'t, str> {
    let mut out = String::new();
    let mut copied = 0; // `text[..copied]` is dealt with
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let sep = search + found;
        let start = scheme_start(text, sep);
        if start == sep || start < copied {
            search = sep + 3;
            continue;
        }
        let end = match quote_before(&text[..start]) {
            // Quoted as Rust's `{:?}` quotes (config errors): up to the closing quote, so
            // that a URL with a space in it is redacted whole.
            Some(close) => text[sep + 3..]
                .find(close)
                .map_or(text.len(), |at| sep + 3 + at),
            None => url_end(text, sep + 3),
        };
        out.push_str(&text[copied..start]);
        let (url, trailing) = split_trailing(&text[start..end]);
        out.push_str(&replace(url));
        out.push_str(trailing);
        copied = end;
        search = end.max(sep + 3);
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Where the scheme ending at `sep` (the index of `://`) starts: RFC 3986's
/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`. `sep` itself when there is none.
fn scheme_start(text: &str, sep: usize) -> usize {
    let bytes = text.as_bytes();
    let mut start = sep;
    while start > 0 {
        let b = bytes[start - 1];
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.') {
            start -= 1;
        } else {
            break;
        }
    }
    // The scheme starts with a letter: skip digits and signs before it ("1.https://x").
    while start < sep && !bytes[start].is_ascii_alphabetic() {
        start += 1;
    }
    start
}

/// The quote that closes a URL opened by the quote `before` ends with (`"`, or `\"` within
/// a quoted text), if it ends with one.
fn quote_before(before: &str) -> Option<&'static str> {
    if before.ends_with("\\\"") {
        Some("\\\"")
    } else if before.ends_with('"') {
        Some("\"")
    } else {
        None
    }
}

/// The end of a URL whose authority starts at `from`: the first white space, quote, angle
/// bracket or backslash-escaped quote (Rust's `{:?}`), or the end of the text.
fn url_end(text: &str, from: usize) -> usize {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace()
            || b.is_ascii_control()
            || matches!(b, b'"' | b'\'' | b'<' | b'>' | b'`')
        {
            break;
        }
        if b == b'\\' && matches!(bytes.get(i + 1), Some(b'"' | b'\'')) {
            break;
        }
        i += 1;
    }
    // Non-ASCII white space ends it too.
    match text[from..i]
        .char_indices()
        .find(|(_, c)| c.is_whitespace())
    {
        Some((at, _)) => from + at,
        None => i,
    }
}

/// Closing punctuation at the end of a URL that carries a query or fragment: kept out of
/// the URL so that "(https://h/p?k=v)." still reads as a sentence once the query is gone.
fn split_trailing(url: &str) -> (&str, &str) {
    if !url.contains(['?', '#']) {
        return (url, "");
    }
    let kept = url.trim_end_matches([')', '.', ',', ';', ':', '!', ']']);
    url.split_at(kept.len())
}

/// The public part of one URL found in a text: through [`url()`] when it parses, else cut by
/// hand (userinfo, query and fragment dropped).
fn public_part(found: &str) -> String {
    if let Ok(parsed) = Url::parse(found) {
        return url(&parsed);
    }
    let Some(sep) = found.find("://") else {
        return found.to_owned();
    };
    let (scheme, rest) = (&found[..sep + 3], &found[sep + 3..]);
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let authority_end = rest.find(['/', '\\']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(text: &str) -> String {
        url(&Url::parse(text).unwrap())
    }

    #[test]
    fn userinfo_query_and_fragment_are_dropped() {
        assert_eq!(
            public("https://user:secret@example.com/feed.xml?token=SECRET123&x=1#frag"),
            "https://example.com/feed.xml"
        );
        assert_eq!(
            public("http://user@example.com/a/b/"),
            "http://example.com/a/b/"
        );
        assert_eq!(public("https://:pw@example.com/"), "https://example.com/");
        assert_eq!(
            public("https://example.com/rss#secret"),
            "https://example.com/rss"
        );
        assert_eq!(
            public("https://example.com/?api_key=k"),
            "https://example.com/"
        );
        assert_eq!(public("https://example.com"), "https://example.com/");
    }

    #[test]
    fn ports_and_ipv6_hosts_are_kept() {
        assert_eq!(
            public("http://u:p@127.0.0.1:8080/feed?t=1"),
            "http://127.0.0.1:8080/feed"
        );
        assert_eq!(
            public("http://u:p@[::1]:8080/feed?t=1"),
            "http://[::1]:8080/feed"
        );
        assert_eq!(
            public("https://[2001:db8::1]/a?b"),
            "https://[2001:db8::1]/a"
        );
        // The scheme's own port is not written out.
        assert_eq!(public("https://example.com:443/a"), "https://example.com/a");
    }

    #[test]
    fn other_schemes_keep_their_path_only() {
        assert_eq!(public("file:///srv/feeds/a.xml"), "file:///srv/feeds/a.xml");
        assert_eq!(
            public("file:///srv/feeds/a.xml?token=x#y"),
            "file:///srv/feeds/a.xml"
        );
        assert_eq!(
            public("ftp://u:p@ftp.example.com/pub/feed"),
            "ftp://ftp.example.com/pub/feed"
        );
        assert_eq!(
            public("mailto:me@example.com?subject=x"),
            "mailto:me@example.com"
        );
    }

    #[test]
    fn the_path_is_kept_even_with_a_token_in_it() {
        assert_eq!(
            public("https://example.com/u/TOKEN/feed.rss?k=v"),
            "https://example.com/u/TOKEN/feed.rss"
        );
    }

    #[test]
    fn urls_inside_texts_are_redacted() {
        assert_eq!(
            text("error sending request for url (http://u:SECRET@127.0.0.1:9/f?token=SECRET123): refused"),
            "error sending request for url (http://127.0.0.1:9/f): refused"
        );
        assert_eq!(
            text("invalid URL \"https://u:SECRET@host/x?token=SECRET\": bad"),
            "invalid URL \"https://host/x\": bad"
        );
        assert_eq!(
            text("a https://a.example/?k=1, then ftp://b.example/p?q#f."),
            "a https://a.example/, then ftp://b.example/p."
        );
        assert_eq!(
            text("with {:?}: \\\"https://h/?t=1\\\" done"),
            "with {:?}: \\\"https://h/\\\" done"
        );
        assert_eq!(text("<https://u:p@h/a?t>"), "<https://h/a>");
        assert_eq!(text("no URL here: a://"), "no URL here: a://");
        assert!(matches!(text("nothing to do"), Cow::Borrowed(_)));
    }

    #[test]
    fn malformed_urls_inside_texts_are_cut_by_hand() {
        // Not a valid URL (a space in the host is not allowed, a port too large), redacted all
        // the same.
        assert_eq!(
            text("invalid URL \"https://u:SECRET@host:99999/p?token=SECRET\""),
            "invalid URL \"https://host:99999/p\""
        );
        assert_eq!(text("http://u:p@[::1/x?y"), "http://[::1/x");
        // A quoted URL runs to its closing quote, through a space.
        assert_eq!(
            text("invalid URL \"https://u:SECRET@exa mple.com/x?token=SECRET\": bad domain"),
            "invalid URL \"https://exa mple.com/x\": bad domain"
        );
        assert_eq!(
            text("said \\\"https://u:p@h/a b?t=SECRET\\\" then"),
            "said \\\"https://h/a%20b\\\" then"
        );
        assert_eq!(
            text("weird+1.scheme://us:er@h/p#SECRET"),
            "weird+1.scheme://h/p"
        );
    }

    #[test]
    fn hidden_urls_leave_nothing() {
        assert_eq!(
            hide_urls("redirect loop: https://h.example/p was reached twice"),
            format!("redirect loop: {HIDDEN} was reached twice")
        );
        let source = Url::parse("https://u:p@h.example/p?t=1").unwrap();
        assert_eq!(Urls::Hidden.url(&source), None);
        assert_eq!(Urls::Hidden.url_str(source.as_str()), None);
        assert_eq!(
            Urls::Redacted.url(&source).as_deref(),
            Some("https://h.example/p")
        );
        assert_eq!(
            Urls::Redacted.text("at https://u:p@h.example/p?t=1"),
            "at https://h.example/p"
        );
    }

    #[test]
    fn stored_url_texts_are_redacted_whether_or_not_they_parse() {
        assert_eq!(
            url_str("https://u:p@h.example/p?t=1"),
            "https://h.example/p"
        );
        assert_eq!(
            url_str("https://u:p@h.example:99999/p?t=1"),
            "https://h.example:99999/p"
        );
        assert_eq!(url_str("not a url"), "not a url");
    }

    #[test]
    fn public_displays_the_public_form() {
        let source = Url::parse("https://u:p@h.example/p?t=1").unwrap();
        assert_eq!(Public(&source).to_string(), "https://h.example/p");
    }
}
