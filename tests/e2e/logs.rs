//! Log lines as people, log shippers and systemd's journal read them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{binary, tempdir};

/// Polls the sample lab feed once with `args` and `env`; returns what went to stderr.
fn poll_stderr(args: &[&str], env: impl Fn(&Path) -> Vec<(String, String)>) -> String {
    let dir = tempdir();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples");
    let config = dir.path().join("feedmux.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = \"store\"\n[[source]]\nname = \"lab\"\nurl = \"file://{}/lab-blog.atom\"\n",
            samples.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let status = Command::new(binary())
        .args(["poll", "--config"])
        .arg(&config)
        .args(args)
        .envs(env(&log))
        .env_remove("RUST_LOG")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(&log).unwrap()
}

fn no_journal(_: &Path) -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn text_logs_carry_a_timestamp_and_the_poll_fields() {
    let text = poll_stderr(&[], |_| vec![("JOURNAL_STREAM".into(), "1:2".into())]);
    let line = text
        .lines()
        .find(|l| l.contains("polled"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with(&chrono::Utc::now().format("%Y-").to_string()),
        "timestamped: {line}"
    );
    assert!(line.contains("INFO") && line.contains("source=lab") && line.contains("items_new=6"));
    assert!(
        !line.starts_with('<'),
        "a JOURNAL_STREAM that is not stderr is ignored"
    );
}

#[test]
fn json_logs_are_one_object_a_line() {
    let text = poll_stderr(&["--log-format", "json"], no_journal);
    let mut polled = None;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["message"] == "polled" {
            polled = Some(v);
        }
    }
    let v = polled.unwrap_or_else(|| panic!("no poll line in {text}"));
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["items_new"], 6);
    assert_eq!(v["span"]["source"], "lab");
}

#[test]
fn under_the_journal_lines_have_a_priority_and_no_timestamp() {
    let text = poll_stderr(&[], |log| {
        let meta = std::fs::metadata(log).unwrap();
        vec![(
            "JOURNAL_STREAM".into(),
            format!("{}:{}", meta.dev(), meta.ino()),
        )]
    });
    let line = text
        .lines()
        .find(|l| l.contains("polled"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("<6>"), "{line}");
    assert!(
        !line.contains(&chrono::Utc::now().format("%Y-%m-%d").to_string()),
        "{line}"
    );
    assert!(!line.contains('\u{1b}'), "no colours: {line}");
    assert!(line.contains("items_new=6"), "{line}");
}
