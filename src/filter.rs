//! Output-feed rules: which stored items an output feed selects.
//!
//! A [`FeedFilter`] is built from a feed's config and answers one question, [`FeedFilter::selects`],
//! for one item: is it from a selected source, does it match an `include` keyword or regex (when
//! any are given), and does it match no `exclude` keyword or regex. Keywords follow the
//! contract: NFKC and case folding, whole-word at Latin edges, anywhere for CJK. Regexes run on
//! the item's plain text as written: title, summary and content, or the title alone with
//! `match_in = "title"`. A reader's search ([`Query`]) matches its terms by the same
//! rules. This module does not read the store and does not render.

use std::collections::HashSet;

use regex::Regex;

use crate::config::{FeedConfig, MatchIn};
use crate::model::Item;
use crate::text::{html_to_text, is_word_char, matching_form};

/// A keyword in matching form, with whether each end must sit at a word boundary.
#[derive(Debug, Clone)]
struct Keyword {
    /// As written in the config.
    text: String,
    folded: String,
    bounded_start: bool,
    bounded_end: bool,
}

impl Keyword {
    fn new(text: &str) -> Keyword {
        let folded = matching_form(text);
        Keyword {
            text: text.to_owned(),
            bounded_start: folded.chars().next().is_some_and(is_word_char),
            bounded_end: folded.chars().next_back().is_some_and(is_word_char),
            folded,
        }
    }

    /// Whether the keyword occurs in `haystack` (already in matching form).
    fn occurs_in(&self, haystack: &str) -> bool {
        if self.folded.is_empty() {
            return false;
        }
        let mut from = 0;
        while let Some(at) = haystack[from..].find(&self.folded) {
            let start = from + at;
            let end = start + self.folded.len();
            let before_ok = !self.bounded_start
                || !haystack[..start]
                    .chars()
                    .next_back()
                    .is_some_and(is_word_char);
            let after_ok =
                !self.bounded_end || !haystack[end..].chars().next().is_some_and(is_word_char);
            if before_ok && after_ok {
                return true;
            }
            from = start + self.folded.chars().next().map_or(1, char::len_utf8);
        }
        false
    }
}

/// The compiled rules of one output feed.
#[derive(Debug, Clone)]
pub struct FeedFilter {
    pub feed: String,
    sources: HashSet<String>,
    include: Vec<Keyword>,
    exclude: Vec<Keyword>,
    include_regex: Vec<Regex>,
    exclude_regex: Vec<Regex>,
    /// The text the rules look at.
    match_in: MatchIn,
}

impl FeedFilter {
    pub fn new(config: &FeedConfig) -> FeedFilter {
        FeedFilter {
            feed: config.name.clone(),
            sources: config.sources.iter().cloned().collect(),
            include: config.include.iter().map(|k| Keyword::new(k)).collect(),
            exclude: config.exclude.iter().map(|k| Keyword::new(k)).collect(),
            include_regex: config.include_regex.clone(),
            exclude_regex: config.exclude_regex.clone(),
            match_in: config.match_in,
        }
    }

    /// Whether the feed draws from `source` at all.
    pub fn selects_source(&self, source: &str) -> bool {
        self.sources.contains(source)
    }

    /// Whether the feed shows `item`.
    pub fn selects(&self, item: &Item) -> bool {
        self.decide(item).kept()
    }

    /// Whether the feed shows `item`, and the rule that decided.
    pub fn decide(&self, item: &Item) -> Decision<'_> {
        if !self.selects_source(&item.source) {
            return Decision::Drop(Rule::Source);
        }
        if self.include.is_empty()
            && self.exclude.is_empty()
            && self.include_regex.is_empty()
            && self.exclude_regex.is_empty()
        {
            return Decision::Keep(Rule::NoRules);
        }
        match self.match_in {
            MatchIn::All => self.decide_text(&item_text(item)),
            MatchIn::Title => self.decide_text(&item.title),
        }
    }

    /// Whether plain `text` passes the keyword and regex rules.
    pub fn selects_text(&self, text: &str) -> bool {
        self.decide_text(text).kept()
    }

    /// The keyword and regex rules on plain `text`: an exclude match drops (the first one
    /// found decides); otherwise, with include rules, the first that matches keeps, and none
    /// matching drops.
    pub fn decide_text(&self, text: &str) -> Decision<'_> {
        let folded = matching_form(text);
        if let Some(k) = self.exclude.iter().find(|k| k.occurs_in(&folded)) {
            return Decision::Drop(Rule::Exclude(&k.text));
        }
        if let Some(r) = self.exclude_regex.iter().find(|r| r.is_match(text)) {
            return Decision::Drop(Rule::ExcludeRegex(r.as_str()));
        }
        if self.include.is_empty() && self.include_regex.is_empty() {
            return Decision::Keep(Rule::NoInclude);
        }
        if let Some(k) = self.include.iter().find(|k| k.occurs_in(&folded)) {
            return Decision::Keep(Rule::Include(&k.text));
        }
        if let Some(r) = self.include_regex.iter().find(|r| r.is_match(text)) {
            return Decision::Keep(Rule::IncludeRegex(r.as_str()));
        }
        Decision::Drop(Rule::NoIncludeMatched)
    }
}

/// Whether a feed keeps an item, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    Keep(Rule<'a>),
    Drop(Rule<'a>),
}

impl Decision<'_> {
    pub fn kept(&self) -> bool {
        matches!(self, Decision::Keep(_))
    }

    pub fn rule(&self) -> Rule<'_> {
        match self {
            Decision::Keep(r) | Decision::Drop(r) => *r,
        }
    }
}

/// The rule behind a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule<'a> {
    /// The feed does not draw from the item's source.
    Source,
    /// The feed has no keyword or regex rules.
    NoRules,
    /// No exclude matched and the feed has no include rules.
    NoInclude,
    Include(&'a str),
    IncludeRegex(&'a str),
    Exclude(&'a str),
    ExcludeRegex(&'a str),
    /// The feed has include rules and none matched.
    NoIncludeMatched,
}

impl std::fmt::Display for Rule<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Source => f.write_str("source not selected by the feed"),
            Rule::NoRules => f.write_str("no keyword rules"),
            Rule::NoInclude => f.write_str("no exclude matched"),
            Rule::Include(k) => write!(f, "include {k:?}"),
            Rule::IncludeRegex(r) => write!(f, "include_regex {r:?}"),
            Rule::Exclude(k) => write!(f, "exclude {k:?}"),
            Rule::ExcludeRegex(r) => write!(f, "exclude_regex {r:?}"),
            Rule::NoIncludeMatched => f.write_str("no include matched"),
        }
    }
}

/// A reader's search (`?q=`): words, or `"quoted phrases"`, that must all occur in an item's
/// title, summary or content, each matched as an `include` keyword is.
#[derive(Debug, Clone)]
pub struct Query {
    terms: Vec<Keyword>,
}

impl Query {
    /// The search `q` asks for; `None` when it holds no term.
    pub fn parse(q: &str) -> Option<Query> {
        let mut terms = Vec::new();
        for (i, part) in q.split('"').enumerate() {
            if i % 2 == 1 {
                // Inside quotes: one phrase.
                let phrase = part.split_whitespace().collect::<Vec<_>>().join(" ");
                if !phrase.is_empty() {
                    terms.push(Keyword::new(&phrase));
                }
            } else {
                terms.extend(part.split_whitespace().map(Keyword::new));
            }
        }
        terms.retain(|k| !k.folded.is_empty());
        (!terms.is_empty()).then_some(Query { terms })
    }

    /// Whether every term occurs in `item`'s title, summary or content.
    pub fn matches(&self, item: &Item) -> bool {
        self.matches_text(&item_text(item))
    }

    /// Whether every term occurs in plain `text`.
    pub fn matches_text(&self, text: &str) -> bool {
        let folded = matching_form(text);
        self.terms.iter().all(|k| k.occurs_in(&folded))
    }
}

/// The text filters look at: title, summary and content, as plain text.
fn item_text(item: &Item) -> String {
    let mut text = item.title.clone();
    for html in [&item.summary_html, &item.content_html]
        .into_iter()
        .flatten()
    {
        text.push('\n');
        text.push_str(&html_to_text(html));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> FeedFilter {
        FeedFilter::new(&FeedConfig {
            name: "f".into(),
            title: "f".into(),
            description: None,
            sources: vec!["s".into()],
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            include_regex: vec![],
            exclude_regex: vec![],
            limit: 10,
            group_stories: true,
            max_per_source: None,
            max_age: None,
            match_in: Default::default(),
        })
    }

    #[test]
    fn latin_keywords_match_whole_words_only() {
        let f = filter(&["AI"], &[]);
        for yes in [
            "AI chips",
            "New AI芯片 launched",
            "AI-powered search",
            "the ai.",
            "ＡＩ news",
            "发布AI芯片",
        ] {
            assert!(f.selects_text(yes), "{yes}");
        }
        for no in ["he said so", "OpenAI ships", "AIR fryer", "maid"] {
            assert!(!f.selects_text(no), "{no}");
        }
    }

    #[test]
    fn cjk_keywords_match_anywhere() {
        let f = filter(&["大模型"], &["广告"]);
        assert!(f.selects_text("国产大模型发布"));
        assert!(!f.selects_text("大模型广告"));
        assert!(!f.selects_text("小模型"));
    }

    #[test]
    fn multiword_and_case() {
        let f = filter(&["machine learning"], &["Sponsored"]);
        assert!(f.selects_text("Advances in Machine Learning"));
        assert!(!f.selects_text("SPONSORED: machine learning course"));
    }

    #[test]
    fn decisions_name_the_rule_as_written() {
        let f = filter(&["AI", "大模型"], &["Sponsored"]);
        assert_eq!(
            f.decide_text("ＡＩ news"),
            Decision::Keep(Rule::Include("AI"))
        );
        assert_eq!(
            f.decide_text("sponsored: AI course"),
            Decision::Drop(Rule::Exclude("Sponsored"))
        );
        assert_eq!(
            f.decide_text("phone review"),
            Decision::Drop(Rule::NoIncludeMatched)
        );
        assert_eq!(
            filter(&[], &["ad"]).decide_text("news"),
            Decision::Keep(Rule::NoInclude)
        );
        assert_eq!(Rule::Include("AI").to_string(), "include \"AI\"");
    }

    #[test]
    fn no_rules_keep_everything() {
        let f = filter(&[], &[]);
        assert!(f.selects_text("anything at all"));
        assert!(f.selects_text(""));
    }

    #[test]
    fn a_query_needs_every_term_matched_as_a_keyword() {
        let q = Query::parse("ai 芯片").unwrap();
        assert!(q.matches_text("ＡＩ芯片 launch"));
        assert!(!q.matches_text("OpenAI 芯片"), "AI is a whole word");
        assert!(!q.matches_text("AI chips"), "every term must occur");
        let phrase = Query::parse("\"AI chips\" new").unwrap();
        assert!(phrase.matches_text("New AI chips"));
        assert!(!phrase.matches_text("New chips for AI"));
        assert!(Query::parse("  \"\" ").is_none());
    }
}
