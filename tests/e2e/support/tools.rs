//! External programs the output tests run: xmllint, Python (feedcheck.py with jsonschema and
//! feedparser), newsboat, Chromium. Each is installed by `.ci/run`; a missing one fails the
//! test with the command that installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository file `rel`.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The full path of `program` on PATH, or a failure saying how to install it.
pub fn require(program: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{program} is not installed; `.ci/run` installs it ({install})");
}

/// Runs a command to completion, failing the test if it cannot start.
pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// python3 with the modules feedcheck.py needs.
pub fn python() -> PathBuf {
    let python = require("python3", "Debian python3");
    let out = run(Command::new(&python).args(["-c", "import jsonschema, feedparser"]));
    assert!(
        out.status.success(),
        "python3 lacks jsonschema or feedparser; `.ci/run` installs them (pip install jsonschema feedparser): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    python
}

/// Runs tests/tools/feedcheck.py with `args`; returns (success, stdout + stderr).
pub fn feedcheck(args: &[&str]) -> (bool, String) {
    let out = run(Command::new(python())
        .arg(repo_path("tests/tools/feedcheck.py"))
        .args(args));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Validates an Atom document against RFC 4287's RELAX NG schema with xmllint.
pub fn xmllint_atom(file: &Path) -> (bool, String) {
    let xmllint = require("xmllint", "Debian libxml2-utils");
    let out = run(Command::new(xmllint)
        .args(["--noout", "--relaxng"])
        .arg(repo_path("tests/fixtures/schemas/atom.rng"))
        .arg(file));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether FEEDMUX_SKIP_BROWSER=1 asks to skip the Chromium tests (said on stderr).
pub fn browser_skipped() -> bool {
    let skip = std::env::var_os("FEEDMUX_SKIP_BROWSER").is_some_and(|v| v == "1");
    if skip {
        eprintln!("FEEDMUX_SKIP_BROWSER=1: not running Chromium");
    }
    skip
}

/// The DOM headless Chromium (Debian `chromium`) builds from `url`, with the flags this
/// machine's closed network needs and a fresh profile.
pub async fn chromium_dom(url: &str) -> String {
    let chromium = require("chromium", "Debian chromium");
    let profile = crate::tempdir();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium took over 90 s")
    .unwrap_or_else(|e| panic!("cannot run chromium: {e}"));
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
