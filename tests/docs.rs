//! The documentation stays true to the tree: every code name ARCHITECTURE.md quotes exists in
//! the source, and every relative link in the Markdown documents points at a file that exists
//! (and, with a `#fragment`, at a heading that exists).
//!
//! Reads the repository's files at run time; needs nothing of the crate, no network and no
//! file outside the repository.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files under `dir` (recursively) whose name ends with `ext`; `target` and hidden
/// directories are left out.
fn files(dir: &Path, ext: &str, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                files(&path, ext, found);
            }
        } else if name.ends_with(ext) {
            found.push(path);
        }
    }
}

/// The text outside fenced code blocks, one entry per line (fenced lines become empty, so
/// line numbers stay right).
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                ""
            } else if fenced {
                ""
            } else {
                line
            }
        })
        .collect()
}

/// The spans a text quotes in backticks, each with the line it starts on (from 1). A span may
/// run over a line break, as in Markdown.
fn code_spans(text: &str) -> Vec<(usize, String)> {
    let mut spans = Vec::new();
    let mut rest = text;
    let mut line = 1;
    while let Some(start) = rest.find('`') {
        line += rest[..start].matches('\n').count();
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else { break };
        spans.push((line, after[..end].replace('\n', " ")));
        line += after[..end].matches('\n').count();
        rest = &after[end + 1..];
    }
    spans
}

fn is_ident(word: &str) -> bool {
    let mut chars = word.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What a quoted span names, if it looks like code.
#[derive(Debug, PartialEq)]
enum Name<'a> {
    /// A file or directory of the repository, relative to its root (`src/store/engine.rs`,
    /// `tests/e2e/`).
    Path(&'a str),
    /// An identifier, possibly qualified (`store::Store`, `Health`, `Store::ingest_guard()`),
    /// as its segments.
    Ident(Vec<&'a str>),
}

fn classify(span: &str) -> Option<Name<'_>> {
    let path_chars = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
    };
    let file_like = [".rs", ".md", ".toml", ".py", ".service", ".txt", ".jsonl"]
        .iter()
        .any(|ext| span.ends_with(ext));
    if path_chars(span)
        && !span.starts_with('/')
        && !span.starts_with('.')
        && (span.contains('/') || file_like)
    {
        return Some(Name::Path(span));
    }
    let bare = span.strip_suffix("()").unwrap_or(span);
    let segments: Vec<&str> = bare.split("::").collect();
    if segments.iter().all(|s| is_ident(s)) {
        return Some(Name::Ident(segments));
    }
    None
}

/// Whether `word` occurs in `text` as a whole identifier (not inside a longer one).
fn has_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The source files of the module a path's first segment names, if it names one: `src/x.rs`
/// and everything under `src/x/` (at any depth under `src/`), a crate under `crates/`, or a
/// module of the integration tests (`tests/e2e/x.rs`).
fn module_files<'a>(sources: &'a [(PathBuf, String)], module: &str) -> Vec<&'a str> {
    let file = format!("{module}.rs");
    sources
        .iter()
        .filter(|(path, _)| {
            let rel = path.strip_prefix(root()).unwrap();
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let last = parts.last().map(String::as_str);
            let dirs = &parts[..parts.len() - 1];
            match parts.first().map(String::as_str) {
                Some("src") => last == Some(file.as_str()) || dirs.iter().any(|d| d == module),
                Some("crates") => parts.get(1).is_some_and(|c| c == module),
                Some("tests") => last == Some(file.as_str()),
                _ => false,
            }
        })
        .map(|(_, text)| text.as_str())
        .collect()
}

#[test]
fn every_name_architecture_quotes_exists() {
    let doc = read(&root().join("ARCHITECTURE.md"));
    // Identifiers are looked for in the crate's and the workspace crates' sources; a name
    // qualified by a module (`daemon::recover_store`) must be in that module's files.
    let mut paths = Vec::new();
    files(&root().join("src"), ".rs", &mut paths);
    files(&root().join("crates"), ".rs", &mut paths);
    let searched = paths.len();
    files(&root().join("tests"), ".rs", &mut paths);
    // Not this file, whose examples would find themselves.
    paths.retain(|p| p.as_path() != root().join("tests/docs.rs"));
    let sources: Vec<(PathBuf, String)> =
        paths.into_iter().map(|p| (p.clone(), read(&p))).collect();
    assert!(searched > 20, "found the sources under src/ and crates/");

    let mut checked = 0;
    let mut missing = Vec::new();
    let prose = prose_lines(&doc).join("\n");
    for (number, span) in code_spans(&prose) {
        let span = span.as_str();
        match classify(span) {
            Some(Name::Path(path)) => {
                checked += 1;
                if !root().join(path).exists() {
                    missing.push(format!("line {number}: `{span}`: no such file"));
                }
            }
            Some(Name::Ident(segments)) => {
                checked += 1;
                let word = segments[segments.len() - 1];
                let scope = if segments.len() > 1 {
                    module_files(&sources, segments[0])
                } else {
                    Vec::new()
                };
                let (scope, where_) = if scope.is_empty() {
                    let all = sources[..searched]
                        .iter()
                        .map(|(_, t)| t.as_str())
                        .collect();
                    (all, "src/ or crates/".to_string())
                } else {
                    (scope, format!("module `{}`", segments[0]))
                };
                if !scope.iter().any(|text| has_word(text, word)) {
                    missing.push(format!(
                        "line {number}: `{span}`: `{word}` not found in {where_}"
                    ));
                }
                // The qualifiers exist too (`Trees` of `Trees::states`).
                for qualifier in &segments[..segments.len() - 1] {
                    if !sources.iter().any(|(_, text)| has_word(text, qualifier)) {
                        missing.push(format!("line {number}: `{span}`: `{qualifier}` not found"));
                    }
                }
            }
            None => {}
        }
    }
    assert!(
        checked > 50,
        "ARCHITECTURE.md quotes only {checked} code names"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what the tree does not have:\n{}",
        missing.join("\n")
    );
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown document's headings, with GitHub's `-1`, `-2` for repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let heading = heading.replace('`', "");
        let base = anchor(&heading);
        let mut name = base.clone();
        let mut n = 0;
        while found.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        found.insert(name);
    }
    found
}

/// The targets of a line's inline links and images, `[text](target)`, outside code spans.
fn link_targets(line: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut in_code = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => in_code = !in_code,
            b']' if !in_code && bytes.get(i + 1) == Some(&b'(') => {
                if let Some(len) = line[i + 2..].find(')') {
                    let target = line[i + 2..i + 2 + len].trim();
                    // `[text](target "title")`
                    let target = target.split_whitespace().next().unwrap_or("");
                    targets.push(target.trim_matches(|c| c == '<' || c == '>'));
                    i += 2 + len;
                }
            }
            _ => {}
        }
        i += 1;
    }
    targets
}

/// `path` with `.` and `..` resolved by name, or None when it climbs out of the repository.
fn inside_repository(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<Component> = Vec::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(_) => parts.push(part),
            _ => return None,
        }
    }
    Some(parts.iter().collect())
}

#[test]
fn every_relative_link_in_the_documents_points_at_a_file() {
    let mut docs: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "CONTRIBUTING.md"]
        .iter()
        .map(|name| root().join(name))
        .collect();
    for optional in ["CHANGELOG.md", "BENCHMARKS.md"] {
        if root().join(optional).exists() {
            docs.push(root().join(optional));
        }
    }
    let mut in_docs = Vec::new();
    files(&root().join("docs"), ".md", &mut in_docs);
    in_docs.sort();
    assert!(in_docs.len() >= 5, "docs/ holds the user documentation");
    docs.extend(in_docs);

    let mut checked = 0;
    let mut broken = Vec::new();
    for doc in &docs {
        let text = read(doc);
        let rel_doc = doc.strip_prefix(root()).unwrap();
        for (number, line) in prose_lines(&text).into_iter().enumerate() {
            for target in link_targets(line) {
                let here = format!("{}:{}: ({target})", rel_doc.display(), number + 1);
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, fragment) = match target.split_once('#') {
                    Some((file, fragment)) => (file, Some(fragment)),
                    None => (target, None),
                };
                let resolved = if file.is_empty() {
                    Some(rel_doc.to_path_buf())
                } else if file.starts_with('/') {
                    None
                } else {
                    inside_repository(&rel_doc.parent().unwrap().join(file))
                };
                let Some(resolved) = resolved else {
                    broken.push(format!("{here}: leaves the repository"));
                    continue;
                };
                let path = root().join(&resolved);
                if !path.exists() {
                    broken.push(format!("{here}: no file {}", resolved.display()));
                    continue;
                }
                if let Some(fragment) = fragment {
                    if path.extension().is_some_and(|e| e == "md")
                        && !anchors(&read(&path)).contains(fragment)
                    {
                        broken.push(format!(
                            "{here}: no heading #{fragment} in {}",
                            resolved.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 10,
        "the documents link each other ({checked} links)"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_checks_read_names_and_links_as_meant() {
    assert_eq!(
        classify("src/store/engine.rs"),
        Some(Name::Path("src/store/engine.rs"))
    );
    assert_eq!(classify("tests/e2e/"), Some(Name::Path("tests/e2e/")));
    assert_eq!(
        classify("store::Store"),
        Some(Name::Ident(vec!["store", "Store"]))
    );
    assert_eq!(
        classify("Store::ingest_guard()"),
        Some(Name::Ident(vec!["Store", "ingest_guard"]))
    );
    assert_eq!(classify("Health"), Some(Name::Ident(vec!["Health"])));
    for not_code in [
        "/feeds/{name}.atom",
        "?q=",
        "dedup.window",
        "max-age",
        "Vec<Entry>",
        "a b",
    ] {
        assert_eq!(classify(not_code), None, "{not_code}");
    }
    assert_eq!(
        code_spans("a `x::y`\nb `two\nlines` `z`"),
        vec![(1, "x::y".into()), (2, "two lines".into()), (3, "z".into())]
    );
    assert!(has_word("fn flush_lazily(", "flush_lazily"));
    assert!(!has_word("fn flush_lazily_now(", "flush_lazily"));
    assert_eq!(
        link_targets("see [a](docs/a.md#x) and `[b](c)`, ![i](docs/i.png \"t\")"),
        vec!["docs/a.md#x", "docs/i.png"]
    );
    assert_eq!(anchor("Running as a service"), "running-as-a-service");
    assert_eq!(anchor("What is durable when?"), "what-is-durable-when");
    assert_eq!(anchor("Crash safety (SIGKILL)"), "crash-safety-sigkill");
    assert_eq!(
        inside_repository(Path::new("docs/../README.md")),
        Some(PathBuf::from("README.md"))
    );
    assert_eq!(inside_repository(Path::new("docs/../../shared")), None);
}
