//! Character encodings: turn a feed body in any encoding into UTF-8 before feed-rs sees it.
//!
//! The encoding is chosen as RFC 7303 orders it: a byte-order mark, then the `charset` of the
//! HTTP `Content-Type`, then the XML declaration, then UTF-8. Labels go through the WHATWG
//! encoding table (encoding_rs), which also repairs the common mislabels (GB2312 means GBK,
//! ISO-8859-1 means windows-1252). When the body is re-encoded, the XML declaration's
//! `encoding` is rewritten to UTF-8 so that the XML parser does not decode a second time.
//!
//! Labels are often wrong, so a label is checked against the bytes: a body that is valid
//! UTF-8 (with some non-ASCII text) is read as UTF-8 whatever an 8-bit label says, and a body
//! that does not decode cleanly in its labelled encoding (or has no label and is not UTF-8)
//! is read in the encoding chardetng, Firefox's detector, finds, with the top-level domain
//! of the feed's URL as a hint (`.cn` favours GBK, `.jp` Shift_JIS). Any sequence still
//! invalid becomes U+FFFD rather than failing the whole feed, and control characters that
//! XML forbids are dropped.

use std::borrow::Cow;

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8};
use url::Url;

/// Where the chosen encoding came from (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingSource {
    ByteOrderMark,
    HttpHeader,
    XmlDeclaration,
    Default,
    /// The bytes themselves: the label (named here, if any) did not fit them.
    Detected {
        label: Option<&'static str>,
    },
}

/// The encoding the body was read as, and the body as UTF-8.
#[derive(Debug)]
pub struct Decoded<'a> {
    /// The encoding's name, e.g. "GBK" or "UTF-32LE".
    pub encoding: &'static str,
    pub source: EncodingSource,
    pub utf8: Cow<'a, [u8]>,
    /// Sequences invalid in the encoding, each read as U+FFFD.
    pub invalid: usize,
    /// Control characters that XML forbids were dropped.
    pub dropped_controls: bool,
}

impl Decoded<'_> {
    /// What a reader of source health should know: the encoding was not the one labelled
    /// (or none was), e.g. "read as GBK, labelled UTF-8"; bytes were invalid or forbidden.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        match self.source {
            EncodingSource::Detected { label: Some(label) } => {
                notes.push(format!("read as {}, labelled {label}", self.encoding))
            }
            EncodingSource::Detected { label: None } => {
                notes.push(format!("read as {}, no encoding declared", self.encoding))
            }
            _ => {}
        }
        if self.invalid > 0 {
            notes.push(format!(
                "{} invalid {} sequence{}",
                self.invalid,
                self.encoding,
                if self.invalid == 1 { "" } else { "s" }
            ));
        }
        if self.dropped_controls {
            notes.push("control characters".to_owned());
        }
        notes
    }
}

/// An encoding feeds use: one of the WHATWG set, or UTF-32 (which the WHATWG set leaves out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Whatwg(&'static Encoding),
    Utf32 { big_endian: bool },
}

impl Charset {
    fn name(self) -> &'static str {
        match self {
            Charset::Whatwg(e) => e.name(),
            Charset::Utf32 { big_endian: true } => "UTF-32BE",
            Charset::Utf32 { big_endian: false } => "UTF-32LE",
        }
    }

    fn decode(self, body: &[u8]) -> Cow<'_, str> {
        match self {
            Charset::Whatwg(e) if e == UTF_8 => String::from_utf8_lossy(body),
            Charset::Whatwg(e) => e.decode_without_bom_handling(body).0,
            Charset::Utf32 { big_endian } => Cow::Owned(
                body.chunks(4)
                    .map(|unit| {
                        let bytes: [u8; 4] = unit.try_into().unwrap_or([0, 0, 0xFF, 0xFD]);
                        let code = if big_endian {
                            u32::from_be_bytes(bytes)
                        } else {
                            u32::from_le_bytes(bytes)
                        };
                        char::from_u32(code).unwrap_or('\u{FFFD}')
                    })
                    .collect(),
            ),
        }
    }
}

/// Decodes `body` to UTF-8 following RFC 7303's precedence, checking a label (or its
/// absence) against the bytes. `url`, where the body came from, hints at the encoding.
pub fn decode<'a>(body: &'a [u8], content_type: Option<&str>, url: Option<&Url>) -> Decoded<'a> {
    let (charset, source, bom_len) = choose(body, content_type);
    let (charset, source) = checked(charset, source, &body[bom_len..], url);
    let text = charset.decode(&body[bom_len..]);
    let invalid = match (charset, &text) {
        (Charset::Whatwg(e), Cow::Owned(t)) if e == UTF_8 => t.matches('\u{FFFD}').count(),
        _ => 0,
    };
    // Controls first: one before the declaration would hide it from the rewrite.
    let (text, dropped_controls) = drop_forbidden_controls(text);
    let text = rewrite_declared_encoding(text);
    let text = drop_stray_declarations(text);
    let text = declarations_name_utf8(text);
    let utf8 = match text {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    };
    Decoded {
        encoding: charset.name(),
        source,
        utf8,
        invalid,
        dropped_controls,
    }
}

/// The encoding to read `body` in, given the one labelled (or defaulted to) as `charset`:
/// a label that the bytes contradict gives way to what the bytes say.
fn checked(
    charset: Charset,
    source: EncodingSource,
    body: &[u8],
    url: Option<&Url>,
) -> (Charset, EncodingSource) {
    let Charset::Whatwg(labelled) = charset else {
        return (charset, source);
    };
    if matches!(source, EncodingSource::ByteOrderMark)
        || labelled == UTF_16LE
        || labelled == UTF_16BE
    {
        return (charset, source);
    }
    let label = (source != EncodingSource::Default).then(|| labelled.name());
    let utf8 = std::str::from_utf8(body).is_ok();
    if labelled == UTF_8 {
        if utf8 || mostly_utf8(body) {
            return (charset, source);
        }
    } else if utf8 {
        // Valid UTF-8 with non-ASCII text is almost never text in another encoding: the
        // label is wrong (a server default of ISO-8859-1 for a UTF-8 file, say).
        if body.is_ascii() || !labelled.is_single_byte() && !long_utf8(body) {
            return (charset, source);
        }
        return (Charset::Whatwg(UTF_8), EncodingSource::Detected { label });
    } else if !has_errors(labelled, body) {
        return (charset, source);
    }
    let detected = detect(body, url);
    if detected == labelled {
        return (charset, source);
    }
    (
        Charset::Whatwg(detected),
        EncodingSource::Detected { label },
    )
}

/// Whether `body`, not valid UTF-8, is UTF-8 with a few stray bytes: at most one invalid
/// sequence for every ten valid non-ASCII characters. (Text in a legacy encoding read as UTF-8
/// is nearly all invalid sequences.)
fn mostly_utf8(body: &[u8]) -> bool {
    let (mut valid, mut invalid) = (0usize, 0usize);
    for chunk in body.utf8_chunks() {
        valid += chunk.valid().chars().filter(|c| !c.is_ascii()).count();
        invalid += usize::from(!chunk.invalid().is_empty());
    }
    valid > 0 && invalid * 10 <= valid
}

/// Whether valid UTF-8 `body` holds enough multi-byte sequences that a legacy multi-byte
/// encoding (GBK, Shift_JIS, Big5) could not have made them by chance.
fn long_utf8(body: &[u8]) -> bool {
    body.iter()
        .filter(|b| (0xC2..=0xF4).contains(*b))
        .take(8)
        .count()
        >= 8
}

/// Whether `body` holds sequences that are invalid in `encoding`.
fn has_errors(encoding: &'static Encoding, body: &[u8]) -> bool {
    encoding
        .decode_without_bom_handling_and_without_replacement(body)
        .is_none()
}

/// The encoding chardetng finds for `body`, with the URL's top-level domain as a hint.
fn detect(body: &[u8], url: Option<&Url>) -> &'static Encoding {
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    detector.feed(body, true);
    let tld = url
        .and_then(Url::host_str)
        .and_then(|host| host.rsplit('.').next())
        .map(str::to_ascii_lowercase)
        .filter(|tld| !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_lowercase()));
    detector.guess(
        tld.as_deref().map(str::as_bytes),
        chardetng::Utf8Detection::Allow,
    )
}

fn choose(body: &[u8], content_type: Option<&str>) -> (Charset, EncodingSource, usize) {
    // UTF-32's marks first: FF FE 00 00 would otherwise read as UTF-16LE's.
    match body {
        [0, 0, 0xFE, 0xFF, ..] => {
            return (
                Charset::Utf32 { big_endian: true },
                EncodingSource::ByteOrderMark,
                4,
            )
        }
        [0xFF, 0xFE, 0, 0, ..] => {
            return (
                Charset::Utf32 { big_endian: false },
                EncodingSource::ByteOrderMark,
                4,
            )
        }
        _ => {}
    }
    if let Some((encoding, len)) = Encoding::for_bom(body) {
        return (
            Charset::Whatwg(encoding),
            EncodingSource::ByteOrderMark,
            len,
        );
    }
    // Bytes that can only be `<?` in a wide encoding outrank any label: the label was
    // readable only by guessing the encoding already.
    if let Some(charset) = wide_without_bom(body) {
        return (charset, EncodingSource::XmlDeclaration, 0);
    }
    if let Some(charset) = content_type.and_then(charset_param).and_then(label) {
        return (charset, EncodingSource::HttpHeader, 0);
    }
    if let Some(charset) = declared_encoding(body).and_then(label) {
        return (charset, EncodingSource::XmlDeclaration, 0);
    }
    (Charset::Whatwg(UTF_8), EncodingSource::Default, 0)
}

/// An encoding label as the WHATWG table reads it, plus the spellings feeds use that the
/// table lacks (UTF-32, `utf16`, `u16`, `utf_32`). Wide encodings named for an ASCII-looking
/// body are ignored: the body would not be readable if they were right.
fn label(name: &str) -> Option<Charset> {
    let name = name.trim().to_ascii_lowercase().replace('_', "-");
    match name.as_str() {
        "utf-32" | "utf32" | "u32" | "ucs-4" | "utf-32be" => {
            return Some(Charset::Utf32 { big_endian: true })
        }
        "utf-32le" => return Some(Charset::Utf32 { big_endian: false }),
        _ => {}
    }
    let encoding = Encoding::for_label(name.as_bytes())?;
    // "replacement" is the WHATWG answer for labels that must never decode; x-user-defined is
    // never a real feed's encoding; a UTF-16 label on a body without wide `<?` is wrong.
    if encoding == encoding_rs::REPLACEMENT
        || encoding == encoding_rs::X_USER_DEFINED
        || encoding == UTF_16LE
        || encoding == UTF_16BE
    {
        return None;
    }
    Some(Charset::Whatwg(encoding))
}

/// The `charset` parameter of a `Content-Type` value.
fn charset_param(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if key.trim().eq_ignore_ascii_case("charset") {
            let value = value.trim().trim_matches(['"', '\'']);
            (!value.is_empty()).then_some(value)
        } else {
            None
        }
    })
}

/// `<` written in UTF-32 or UTF-16 without a byte-order mark (XML 1.0 appendix F).
fn wide_without_bom(body: &[u8]) -> Option<Charset> {
    match body {
        [0, 0, 0, b'<', ..] => Some(Charset::Utf32 { big_endian: true }),
        [b'<', 0, 0, 0, ..] => Some(Charset::Utf32 { big_endian: false }),
        [b'<', 0, b'?', 0, ..] => Some(Charset::Whatwg(UTF_16LE)),
        [0, b'<', 0, b'?', ..] => Some(Charset::Whatwg(UTF_16BE)),
        _ => None,
    }
}

/// The `encoding` of the XML declaration, read as ASCII.
fn declared_encoding(body: &[u8]) -> Option<&str> {
    let decl = xml_declaration(body)?;
    let text = std::str::from_utf8(decl).ok()?;
    let at = text.find("encoding")?;
    let rest = text[at + "encoding".len()..].trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &rest[1..];
    let end = rest.find(quote)?;
    Some(&rest[..end])
}

/// The bytes of `<?xml ... ?>` at the start of the body (after whitespace), if present.
fn xml_declaration(body: &[u8]) -> Option<&[u8]> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let body = &body[start..];
    if !body.starts_with(b"<?xml") {
        return None;
    }
    let end = body.iter().take(512).position(|b| *b == b'>')?;
    Some(&body[..=end])
}

/// Rewrites `encoding="..."` in the XML declaration to UTF-8, since the text is now UTF-8.
fn rewrite_declared_encoding(text: Cow<'_, str>) -> Cow<'_, str> {
    let Some(declared) = declared_encoding(text.as_bytes()) else {
        return text;
    };
    if declared.eq_ignore_ascii_case("utf-8") {
        return text;
    }
    let Some(decl) = xml_declaration(text.as_bytes()) else {
        return text;
    };
    let decl_start = text.len() - text.trim_start().len();
    let decl_end = decl_start + decl.len();
    let decl_text = &text[decl_start..decl_end];
    let Some(at) = decl_text.find(declared) else {
        return text;
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..decl_start + at]);
    out.push_str("UTF-8");
    out.push_str(&text[decl_start + at + declared.len()..]);
    Cow::Owned(out)
}

/// Removes every XML declaration (`<?xml ...?>`) that is not at the start of the document, or
/// that the rewrite could not read, outside CDATA sections and comments. Such a declaration is malformed XML, and the XML
/// parser under feed-rs panics on one that names an encoding (found by fuzzing).
fn drop_stray_declarations(text: Cow<'_, str>) -> Cow<'_, str> {
    let is_declaration = |rest: &str| {
        rest.starts_with("<?xml")
            && rest[5..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_whitespace() || c == '?')
    };
    // The leading declaration stays when it is one the rewrite could read (short, plain, and
    // now naming UTF-8 or nothing); any other is dropped too (found by fuzzing: the parser
    // panics on its encoding once its look-ahead is used up).
    let readable = xml_declaration(text.as_bytes()).is_some_and(plain_declaration)
        && declared_encoding(text.as_bytes()).is_none_or(|e| e.eq_ignore_ascii_case("utf-8"));
    let leading = if readable {
        text.len() - text.trim_start().len()
    } else {
        usize::MAX
    };
    let stray = |from: usize| {
        text[from..]
            .match_indices("<?xml")
            .any(|(at, _)| from + at != leading)
    };
    if !stray(0) {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let skip_to = |open: &str, close: &str| {
            rest.starts_with(open)
                .then(|| rest.find(close).map_or(rest.len(), |end| end + close.len()))
        };
        if let Some(len) = skip_to("<![CDATA[", "]]>").or_else(|| skip_to("<!--", "-->")) {
            out.push_str(&rest[..len]);
            at += len;
        } else if at != leading && is_declaration(rest) {
            at += rest.find("?>").map_or(rest.len(), |end| end + 2);
        } else {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            at += c.len_utf8();
        }
    }
    Cow::Owned(out)
}

/// Makes every XML declaration left anywhere in the text (where the scan above took it for
/// a comment or CDATA, but the XML parser may not) name UTF-8: the parser under feed-rs
/// panics when a declaration it meets late names another encoding, and the text is UTF-8 now.
fn declarations_name_utf8(text: Cow<'_, str>) -> Cow<'_, str> {
    static DECLARATION: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static ENCODING: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    if !text.contains("<?xml") {
        return text;
    }
    let declaration =
        DECLARATION.get_or_init(|| regex::Regex::new(r"(?s)<\?xml.*?\?>").expect("a valid regex"));
    let encoding = ENCODING.get_or_init(|| {
        regex::Regex::new(r#"encoding\s*=\s*("[^"]*"|'[^']*')"#).expect("a valid regex")
    });
    let named = |d: &str| {
        encoding
            .captures_iter(d)
            .any(|c| !c[1].trim_matches(['"', '\'']).eq_ignore_ascii_case("utf-8"))
    };
    if !declaration.find_iter(&text).any(|d| named(d.as_str())) {
        return text;
    }
    Cow::Owned(
        declaration
            .replace_all(&text, |c: &regex::Captures<'_>| {
                encoding
                    .replace_all(&c[0], "encoding=\"UTF-8\"")
                    .into_owned()
            })
            .into_owned(),
    )
}

/// Whether `decl` (from `<?xml` to the first `>`) is a declaration the XML parser reads as
/// this module does: it ends with `?>` and holds only names, `=`, quotes, spaces and the
/// characters of version and encoding values, and names an encoding at most once.
fn plain_declaration(decl: &[u8]) -> bool {
    decl.len() <= 128
        && decl.ends_with(b"?>")
        && decl.windows(8).filter(|w| w == b"encoding").count() <= 1
        && decl[5..decl.len() - 2].iter().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b' ' | b'\t' | b'\r' | b'\n' | b'=' | b'"' | b'\'' | b'.' | b'-' | b'_' | b':'
                )
        })
}

/// XML 1.0 allows tab, LF and CR among the C0 controls; the rest (and DEL's C1 neighbours
/// are fine) make strict parsers stop, so they are dropped.
/// (Answers too whether there were any.)
fn drop_forbidden_controls(text: Cow<'_, str>) -> (Cow<'_, str>, bool) {
    let forbidden = |c: char| (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}';
    if !text.contains(forbidden) {
        return (text, false);
    }
    (
        Cow::Owned(text.chars().filter(|c| !forbidden(*c)).collect()),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf8(d: &Decoded<'_>) -> String {
        String::from_utf8(d.utf8.to_vec()).unwrap()
    }

    #[test]
    fn stray_declarations_are_dropped_outside_cdata() {
        let body = "\u{0}<?xml version=\"1.0\" encoding=\"big5\"?><rss><a><?xml version=\"1.0\" encoding=\"big5\"?>x</a><![CDATA[<?xml version=\"1.0\"?>]]></rss>";
        assert_eq!(
            utf8(&decode(body.as_bytes(), None, None)),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss><a>x</a><![CDATA[<?xml version=\"1.0\"?>]]></rss>"
        );
    }

    #[test]
    fn declarations_the_scan_leaves_name_utf8() {
        let body = "<rss><!-- <?xml version=\"1.0\" encoding='big5'?> --><a>é</a></rss>";
        assert_eq!(
            utf8(&decode(body.as_bytes(), None, None)),
            "<rss><!-- <?xml version=\"1.0\" encoding=\"UTF-8\"?> --><a>é</a></rss>"
        );
    }

    #[test]
    fn an_unreadably_long_declaration_is_dropped() {
        let body = format!(
            "<?xml version=\"{}1.0\" encoding=\"iso-8859-1\"?><rss/>",
            " ".repeat(600)
        );
        assert_eq!(utf8(&decode(body.as_bytes(), None, None)), "<rss/>");
        let body = "<?xml version=\"-->1.0\" encoding=\"iso-8859-1\"?><rss/>";
        assert_eq!(utf8(&decode(body.as_bytes(), None, None)), "<rss/>");
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\" encoding=\"big5\"?><rss/>";
        assert_eq!(utf8(&decode(body.as_bytes(), None, None)), "<rss/>");
        let body = "<?xml versi\"on/a\",\n\"b\": <?xml version=\"1.0\" encoding=\"big5\"?><rss/>";
        assert_eq!(utf8(&decode(body.as_bytes(), None, None)), "<rss/>");
    }

    #[test]
    fn header_charset_decodes_gbk_without_declaration() {
        let (gbk, _, _) = encoding_rs::GBK.encode("<rss><title>机器之心</title></rss>");
        let d = decode(&gbk, Some("text/xml; charset=gbk"), None);
        assert_eq!(d.source, EncodingSource::HttpHeader);
        assert_eq!(utf8(&d), "<rss><title>机器之心</title></rss>");
    }

    #[test]
    fn declaration_is_used_and_rewritten() {
        let (gbk, _, _) =
            encoding_rs::GBK.encode("<?xml version=\"1.0\" encoding=\"gb2312\"?><rss>量子位</rss>");
        let d = decode(&gbk, Some("application/xml"), None);
        assert_eq!(d.source, EncodingSource::XmlDeclaration);
        assert_eq!(
            utf8(&d),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss>量子位</rss>"
        );
    }

    #[test]
    fn header_wins_over_declaration() {
        let body = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><rss>中文</rss>";
        let d = decode(body.as_bytes(), Some("text/xml; charset=\"UTF-8\""), None);
        assert_eq!(d.source, EncodingSource::HttpHeader);
        assert_eq!(
            utf8(&d),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss>中文</rss>"
        );
    }

    #[test]
    fn bom_wins_and_is_removed() {
        let mut body = vec![0xFF, 0xFE];
        for unit in "<rss>ü</rss>".encode_utf16() {
            body.extend_from_slice(&unit.to_le_bytes());
        }
        let d = decode(&body, Some("text/xml; charset=iso-8859-1"), None);
        assert_eq!(d.source, EncodingSource::ByteOrderMark);
        assert_eq!(utf8(&d), "<rss>ü</rss>");
    }

    #[test]
    fn invalid_bytes_and_controls_are_recovered() {
        // Not UTF-8 and not labelled: the detector reads the byte as windows-1252 would.
        let d = decode(b"<rss>ok\xFF\x01fine</rss>", None, None);
        assert_eq!(utf8(&d), "<rss>ok\u{FF}fine</rss>");
        assert_eq!(d.source, EncodingSource::Detected { label: None });
    }

    #[test]
    fn utf32_with_and_without_a_mark() {
        let text = "<?xml version=\"1.0\" encoding=\"utf-32\"?><rss>ü中</rss>";
        let mut be = vec![0, 0, 0xFE, 0xFF];
        let mut le_no_bom = Vec::new();
        for c in text.chars() {
            be.extend_from_slice(&(c as u32).to_be_bytes());
            le_no_bom.extend_from_slice(&(c as u32).to_le_bytes());
        }
        let expected = text.replace("utf-32", "UTF-8");
        assert_eq!(utf8(&decode(&be, None, None)), expected);
        let d = decode(&le_no_bom, None, None);
        assert_eq!((d.encoding, utf8(&d)), ("UTF-32LE", expected));
    }

    #[test]
    fn valid_utf8_is_not_copied() {
        let d = decode(b"<rss>plain</rss>", None, None);
        assert!(matches!(d.utf8, Cow::Borrowed(_)));
    }
}
