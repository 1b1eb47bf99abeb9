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
