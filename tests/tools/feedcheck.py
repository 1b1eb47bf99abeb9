#!/usr/bin/env python3
"""Checks feedmux's output documents the way an independent validator would.

Written for feedmux's end-to-end tests (tests/e2e/validity.rs, tests/e2e/readers.rs), which run
it on the bytes the real pipeline produced. Standard library only, plus `jsonschema` for JSON
Feed and `feedparser` for the reader check (both from PyPI; .ci/run installs them).

  feedcheck.py atom FILE          RFC 4287 rules a RELAX NG schema cannot state (the schema
                                  itself is checked by xmllint in the test)
  feedcheck.py rss FILE           RSS 2.0 rules of the RSS Advisory Board profile
  feedcheck.py json FILE SCHEMA   JSON Feed 1.1: the JSON Schema, then rules it cannot state
  feedcheck.py feedparser FILE    parses with feedparser; prints {"bozo", "version", "entries"}

The checks print one problem a line and exit 1 when there is any, 0 when there is none.
"""
import json
import re
import sys
import xml.etree.ElementTree as ET
from datetime import datetime
from urllib.parse import urlparse

ATOM = "{http://www.w3.org/2005/Atom}"

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
# RFC 822 as RFC 1123 updates it (four-digit years), with the zones RSS 2.0 allows.
RFC822 = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"(\d{4}) (\d{2}):(\d{2}):(\d{2}) (GMT|UT|Z|[+-]\d{4})$"
)
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]

problems = []


def problem(msg):
    problems.append(msg)


def absolute(url):
    p = urlparse((url or "").strip())
    return bool(p.scheme) and (bool(p.netloc) or p.scheme in ("urn", "tag", "mailto"))


def check_rfc3339(value, where):
    if not RFC3339.match(value or ""):
        problem(f"{where}: {value!r} is not an RFC 3339 date-time with an offset")
        return
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        problem(f"{where}: {value!r} is not a real date ({e})")


def check_rfc822(value, where):
    m = RFC822.match(value or "")
    if not m:
        problem(f"{where}: {value!r} is not an RFC 822 date like 'Wed, 01 May 2024 12:00:00 +0000'")
        return
    day, dd, mon, yyyy, hh, mi, ss, _ = m.groups()
    try:
        d = datetime(int(yyyy), MONTHS.index(mon) + 1, int(dd), int(hh), int(mi), int(ss))
    except ValueError as e:
        problem(f"{where}: {value!r} is not a real date ({e})")
        return
    if DAYS[d.weekday()] != day:
        problem(f"{where}: {value!r} has the wrong day of the week")


def no_children(el, where):
    kids = list(el)
    if kids:
        problem(f"{where}: holds markup <{kids[0].tag}> where only text may be")


def check_atom(path):
    root = ET.parse(path).getroot()
    if root.tag != ATOM + "feed":
        problem(f"root is {root.tag}, not atom:feed")
        return
    feed_author = root.find(ATOM + "author") is not None
    if not any(l.get("rel") == "self" for l in root.findall(ATOM + "link")):
        problem("feed has no link rel=self")
    seen = set()
    for n, el in enumerate([root] + root.findall(ATOM + "entry")):
        what = "feed" if n == 0 else f"entry {n}"
        ident = el.find(ATOM + "id")
        if ident is None or not absolute(ident.text):
            problem(f"{what}: id {getattr(ident, 'text', None)!r} is not an absolute IRI")
        elif n > 0:
            if ident.text in seen:
                problem(f"{what}: id {ident.text} repeats")
            seen.add(ident.text)
        for tag in ("updated", "published"):
            for d in el.findall(ATOM + tag):
                check_rfc3339(d.text, f"{what} {tag}")
        for tag in ("title", "subtitle", "summary", "content"):
            for t in el.findall(ATOM + tag):
                if t.get("type", "text") in ("text", "html"):
                    no_children(t, f"{what} {tag}")
        alternates = set()
        for link in el.findall(ATOM + "link"):
            if not absolute(link.get("href")):
                problem(f"{what}: link href {link.get('href')!r} is not absolute")
            if link.get("rel", "alternate") == "alternate":
                key = (link.get("type"), link.get("hreflang"))
                if key in alternates:
                    problem(f"{what}: two alternate links of type {key[0]}")
                alternates.add(key)
        if n > 0:
            if not feed_author and el.find(ATOM + "author") is None:
                problem(f"{what}: no author, and the feed has none (RFC 4287 4.1.1)")
            if el.find(ATOM + "content") is None and not alternates:
                problem(f"{what}: neither content nor an alternate link (RFC 4287 4.1.2)")


def check_rss(path):
    root = ET.parse(path).getroot()
    if root.tag != "rss" or root.get("version") != "2.0":
        problem(f"root is <{root.tag} version={root.get('version')!r}>, not <rss version=\"2.0\">")
    channels = root.findall("channel")
    if len(channels) != 1:
        problem(f"{len(channels)} channel elements, not one")
        return
    ch = channels[0]
    for tag in ("title", "link", "description"):
        el = ch.find(tag)
        if el is None:
            problem(f"channel: required <{tag}> missing")
        else:
            no_children(el, f"channel {tag}")
    link = ch.find("link")
    if link is not None and not absolute(link.text):
        problem(f"channel link {link.text!r} is not absolute")
    for tag in ("pubDate", "lastBuildDate"):
        for el in ch.findall(tag):
            check_rfc822(el.text, f"channel {tag}")
    ttl = ch.find("ttl")
    if ttl is not None and not (ttl.text or "").isdigit():
        problem(f"ttl {ttl.text!r} is not a whole number")
    known = {"title", "link", "description", "author", "category", "comments", "enclosure",
             "guid", "pubDate", "source"}
    guids = set()
    for n, item in enumerate(ch.findall("item"), 1):
        what = f"item {n}"
        if item.find("title") is None and item.find("description") is None:
            problem(f"{what}: needs a title or a description")
        for child in item:
            if not child.tag.startswith("{"):
                if child.tag not in known:
                    problem(f"{what}: <{child.tag}> is not an RSS 2.0 item element")
                no_children(child, f"{what} {child.tag}")
        if len(item.findall("enclosure")) > 1:
            problem(f"{what}: more than one enclosure (most readers take only one)")
        for el in item.findall("pubDate"):
            check_rfc822(el.text, f"{what} pubDate")
        for el in item.findall("link"):
            if not absolute(el.text):
                problem(f"{what}: link {el.text!r} is not absolute")
        for g in item.findall("guid"):
            perma = g.get("isPermaLink", "true")
            if perma not in ("true", "false"):
                problem(f"{what}: guid isPermaLink={perma!r}")
            if perma == "true" and not absolute(g.text):
                problem(f"{what}: guid {g.text!r} is a permalink but not a URL")
            if g.text in guids:
                problem(f"{what}: guid {g.text} repeats")
            guids.add(g.text)
        for enc in item.findall("enclosure"):
            for a in ("url", "length", "type"):
                if enc.get(a) is None:
                    problem(f"{what}: enclosure without {a}")
            if not (enc.get("length") or "").isdigit():
                problem(f"{what}: enclosure length {enc.get('length')!r} is not a number")
            if not absolute(enc.get("url")):
                problem(f"{what}: enclosure url {enc.get('url')!r} is not absolute")
        for src in item.findall("source"):
            if not absolute(src.get("url")):
                problem(f"{what}: source without an absolute url")
        for author in item.findall("author"):
            if "@" not in (author.text or ""):
                problem(f"{what}: <author> must be an email address (use dc:creator for names)")


def check_json(path, schema_path):
    import jsonschema

    with open(path, "rb") as f:
        raw = f.read()
    doc = json.loads(raw.decode("utf-8"))
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in error.path) or "(root)"
        problem(f"schema: {where}: {error.message[:300]}")
    if doc.get("version") != "https://jsonfeed.org/version/1.1":
        problem(f"version {doc.get('version')!r} is not 1.1")
    for key in ("home_page_url", "feed_url", "next_url"):
        if key in doc and not absolute(doc[key]):
            problem(f"{key} {doc[key]!r} is not absolute")
    ids = set()
    for n, item in enumerate(doc.get("items", []), 1):
        if item.get("id") in ids:
            problem(f"item {n}: id repeats")
        ids.add(item.get("id"))
        if "author" in item:
            problem(f"item {n}: 'author' is JSON Feed 1.0; 1.1 uses 'authors'")
        for key in ("date_published", "date_modified"):
            if key in item:
                check_rfc3339(item[key], f"item {n} {key}")
        for key in ("url", "external_url", "image"):
            if key in item and not absolute(item[key]):
                problem(f"item {n}: {key} {item[key]!r} is not absolute")
        for a in item.get("attachments", []):
            if not absolute(a.get("url")):
                problem(f"item {n}: attachment url {a.get('url')!r} is not absolute")


def read_with_feedparser(path):
    import feedparser

    d = feedparser.parse(path)
    out = {
        "bozo": bool(d.bozo),
        "bozo_exception": repr(d.get("bozo_exception")) if d.bozo else None,
        "version": d.version,
        "entries": [{"title": e.get("title"), "link": e.get("link")} for e in d.entries],
    }
    print(json.dumps(out, ensure_ascii=False))


def main(argv):
    if len(argv) >= 2 and argv[0] == "feedparser":
        read_with_feedparser(argv[1])
        return 0
    if len(argv) == 2 and argv[0] == "atom":
        check_atom(argv[1])
    elif len(argv) == 2 and argv[0] == "rss":
        check_rss(argv[1])
    elif len(argv) == 3 and argv[0] == "json":
        check_json(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
