//! The JSON Feed 1.1 document of a feed's entries, with feedmux's `_feedmux` extension.

use super::*;

/// A source in JSON Feed's `_feedmux` extension: its title, and its feed URL when shown.
pub(super) fn source_json(info: &SourceInfo) -> serde_json::Value {
    let mut source = json!({ "title": info.title });
    if let Some(feed_url) = &info.feed_url {
        source["feed_url"] = json!(feed_url);
    }
    source
}

pub(super) fn json_feed(
    config: &Config,
    feed: &FeedConfig,
    entries: &[OutputEntry],
    links: &Links,
) -> Vec<u8> {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let item = &e.item;
            let mut value = json!({
                "id": entry_id(item.id),
                "title": item.title,
                "date_published": rfc3339(item.published),
                "_feedmux": {
                    "source": source_json(&e.source),
                    "also_reported_by": e.also.iter().map(|(info, url)| {
                        let mut also = source_json(info);
                        also["url"] = json!(url);
                        also
                    }).collect::<Vec<_>>(),
                },
            });
            let obj = value.as_object_mut().expect("json! of an object is an object");
            if let Some(url) = &item.url {
                obj.insert("url".into(), json!(url));
            }
            obj.insert(
                "content_html".into(),
                json!(body_html(e).unwrap_or_default()),
            );
            if let Some(s) = summary_text(e) {
                obj.insert("summary".into(), json!(s));
            }
            if let Some(u) = entry_updated(item) {
                obj.insert("date_modified".into(), json!(rfc3339(u)));
            }
            let mut authors: Vec<serde_json::Value> =
                item.authors.iter().map(|a| json!({ "name": a })).collect();
            if authors.is_empty() {
                let mut author = json!({ "name": e.source.title });
                if let Some(site) = &e.source.site_url {
                    author["url"] = json!(site);
                }
                authors.push(author);
            }
            obj.insert("authors".into(), json!(authors));
            if !item.categories.is_empty() {
                obj.insert("tags".into(), json!(item.categories));
            }
            if !item.enclosures.is_empty() {
                let attachments: Vec<_> = item
                    .enclosures
                    .iter()
                    .map(|enc| {
                        let mut a = json!({
                            "url": enc.url,
                            "mime_type": enc.mime_type.as_deref().unwrap_or("application/octet-stream"),
                        });
                        if let Some(l) = enc.length {
                            a["size_in_bytes"] = json!(l);
                        }
                        a
                    })
                    .collect();
                obj.insert("attachments".into(), json!(attachments));
            }
            value
        })
        .collect();
    let mut doc = json!({
        "version": "https://jsonfeed.org/version/1.1",
        "title": feed.title,
        "home_page_url": format!("{}/", config.server.base_url),
        "feed_url": links.self_url,
        "items": items,
    });
    if let Some(next) = &links.next {
        doc["next_url"] = json!(next);
    }
    if let Some(hub) = &links.hub {
        doc["hubs"] = json!([{ "type": "WebSub", "url": hub }]);
    }
    if let Some(d) = &feed.description {
        doc["description"] = json!(d);
    }
    // The same characters leave as in the XML formats, so every format says the same.
    xml_safe_json(&mut doc);
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}
