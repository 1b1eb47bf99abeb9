//! Every encoding test case of feedparser's suite decodes to readable text.

use feedmux::parse::charset::{decode, EncodingSource};

use crate::fixture;

/// The `Header: Content-type: ...` line of a feedparser encoding test, if any.
fn served_content_type(body: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&body[..body.len().min(600)]).into_owned();
    head.lines().find_map(|l| {
        let header = l.trim().strip_prefix("Header:")?.trim();
        Some(header.trim_start_matches("Content-type:").trim().to_owned())
    })
}

#[test]
fn every_feedparser_encoding_case_decodes_to_readable_text() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoding");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".xml") {
            continue;
        }
        let body = fixture(&format!("encoding/{name}"));
        let decoded = decode(&body, served_content_type(&body).as_deref(), None);
        let text = String::from_utf8(decoded.utf8.to_vec()).expect("decoding yields UTF-8");
        assert!(
            text.contains("<rss") || text.contains("<feed"),
            "{name} ({}): {text:.200}",
            decoded.encoding
        );
        if !name.starts_with("bozo_") {
            assert!(
                !text.contains('\u{FFFD}'),
                "{name} ({}) lost characters",
                decoded.encoding
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 38);
}

#[test]
fn the_encodings_chosen_follow_rfc_7303_and_the_real_world_aliases() {
    let cases = [
        ("euc-kr.xml", "EUC-KR", Some("년")),
        ("big5.xml", "Big5", None),
        ("http_application_atom_xml_gb2312_charset.xml", "GBK", None),
        (
            "http_application_atom_xml_gb2312_charset_overrides_encoding.xml",
            "GBK",
            None,
        ),
        ("no_content_type_encoding.xml", "windows-1252", None),
        ("http_i18n.xml", "UTF-8", Some("Iñtërnâtiônàlizætiøn")),
        ("utf-16le-autodetect.xml", "UTF-16LE", None),
        ("utf-16be-bom.xml", "UTF-16BE", None),
        ("utf16.xml", "UTF-16BE", None),
        ("utf-32le.xml", "UTF-32LE", None),
        ("utf-32be-bom.xml", "UTF-32BE", None),
        ("utf_32.xml", "UTF-32BE", None),
        ("utf-8-bom.xml", "UTF-8", None),
    ];
    for (name, encoding, contains) in cases {
        let body = fixture(&format!("encoding/{name}"));
        let decoded = decode(&body, served_content_type(&body).as_deref(), None);
        assert_eq!(decoded.encoding, encoding, "{name}");
        if let Some(expected) = contains {
            assert!(
                String::from_utf8_lossy(&decoded.utf8).contains(expected),
                "{name}"
            );
        }
    }
    let body = fixture("encoding/http_application_atom_xml_gb2312_charset_overrides_encoding.xml");
    let decoded = decode(&body, served_content_type(&body).as_deref(), None);
    assert_eq!(
        decoded.source,
        EncodingSource::HttpHeader,
        "the HTTP charset beats the declaration"
    );
}

#[test]
fn mislabelled_chinese_japanese_korean_and_western_text_is_read_as_meant() {
    // Bytes outside the labelled charset, inside its common superset.
    let cases: [(&str, &encoding_rs::Encoding, &str); 4] = [
        ("gb2312", encoding_rs::GB18030, "𠀀镕"), // GB18030 four-byte and GBK-only characters
        ("shift_jis", encoding_rs::SHIFT_JIS, "①㈱髙"), // CP932 extensions
        ("euc-kr", encoding_rs::EUC_KR, "똠햏"),  // CP949 (UHC) syllables
        ("iso-8859-1", encoding_rs::WINDOWS_1252, "“quotes” – €"),
    ];
    for (label, actual, text) in cases {
        let doc = format!("<?xml version=\"1.0\" encoding=\"{label}\"?><rss version=\"2.0\"><channel><title>{text}</title></channel></rss>");
        let (bytes, _, unmappable) = actual.encode(&doc);
        assert!(!unmappable, "{label}");
        let decoded = decode(&bytes, None, None);
        let out = String::from_utf8(decoded.utf8.to_vec()).unwrap();
        assert!(out.contains(text), "{label}: {out}");
    }
}
