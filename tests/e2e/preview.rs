//! `feedmux preview`: which stored items a feed keeps and drops under the rules in the
//! config file, and which rule decided; from the store, or from a running daemon.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::cli::KillOnDrop;
use crate::{binary, tempdir};

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(dir.join("feedmux.toml"))
        .current_dir(dir)
        .output()
        .unwrap()
}

fn write_config(dir: &Path, port: u16, rules: &str) {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples");
    std::fs::write(
        dir.join("feedmux.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = \"store\"\n\
             [[source]]\nname = \"technews\"\nurl = \"file://{}/technews.rss\"\nschedule = \"0 0 0 1 1 *\"\n\
             [[feed]]\nname = \"ai\"\n{rules}",
            samples.display()
        ),
    )
    .unwrap();
}

/// Whether `GET /readyz` on `port` answers 200.
fn readyz(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut response = String::new();
    let sent = stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_ok()
        && stream.read_to_string(&mut response).is_ok();
    sent && (response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"))
}

/// The line of `output` about the item titled `title`.
fn line<'a>(output: &'a str, title: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.ends_with(title))
        .unwrap_or_else(|| panic!("no line for {title:?} in\n{output}"))
}

#[test]
fn preview_tells_what_a_feed_keeps_and_drops_and_which_rule_decided() {
    let dir = tempdir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_config(
        dir.path(),
        port,
        "include = [\"AI\", \"LLM\"]\nexclude_regex = [\"^Sponsored:\"]\n",
    );
    assert!(run(dir.path(), &["poll"]).status.success());

    let out = run(dir.path(), &["preview", "--feed", "ai"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let voltaic = line(
        &text,
        "Voltaic raises $400 million to build AI inference chips",
    );
    assert!(
        voltaic.starts_with("KEEP") && voltaic.contains("include \"AI\""),
        "{voltaic}"
    );
    let lumen = line(
        &text,
        "Lumen Labs releases Lumen-4, an open-weight multimodal LLM",
    );
    assert!(
        lumen.starts_with("KEEP") && lumen.contains("include \"LLM\""),
        "{lumen}"
    );
    let ad = line(
        &text,
        "Sponsored: Run your AI workloads for half the price with Stratos Reserved GPUs",
    );
    assert!(
        ad.starts_with("DROP") && ad.contains("exclude_regex \"^Sponsored:\""),
        "{ad}"
    );
    let bike = line(
        &text,
        "Kestrel City e-bike review: the best commuter bike under $1,500",
    );
    assert!(
        bike.starts_with("DROP") && bike.contains("no include matched"),
        "{bike}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("KEEP") || l.starts_with("DROP"))
            .count(),
        8
    );
    assert!(
        text.contains("ai keeps 4 and drops 4 of the 8 newest stored items"),
        "{text}"
    );

    // With the daemon running (it holds the store), preview reads the items from it and
    // judges them by the rules now in the file, before any reload.
    let _daemon = KillOnDrop(
        Command::new(binary())
            .args(["run", "--config"])
            .arg(dir.path().join("feedmux.toml"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Bounded wait until it is ready: the store is then open in the daemon.
    let mut ready = false;
    for _ in 0..100 {
        if readyz(port) {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready, "the daemon did not become ready");
    write_config(dir.path(), port, "include = [\"bike\"]\n");
    let out = run(dir.path(), &["preview", "--feed", "ai", "--limit", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let bike = line(
        &text,
        "Kestrel City e-bike review: the best commuter bike under $1,500",
    );
    assert!(
        bike.starts_with("KEEP") && bike.contains("include \"bike\""),
        "{bike}"
    );
    assert!(
        text.contains("ai keeps 1 and drops 2 of the 3 newest"),
        "{text}"
    );

    let unknown = run(dir.path(), &["preview", "--feed", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
}

/// The feed's limits come after its rules: of the items the rules keep, `max_per_source`
/// keeps each source's newest N and `max_age` drops the old ones, each line saying so.
#[test]
fn preview_applies_max_per_source_and_max_age_after_the_rules() {
    let dir = tempdir();
    let judged = |rules: &str| -> String {
        write_config(dir.path(), 1, rules);
        let out = run(dir.path(), &["preview", "--feed", "ai"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    write_config(dir.path(), 1, "");
    assert!(run(dir.path(), &["poll"]).status.success());
    let rules = "include = [\"AI\", \"LLM\"]\nexclude_regex = [\"^Sponsored:\"]\n";

    let capped = judged(&format!("{rules}max_per_source = 2\n"));
    let lines: Vec<&str> = capped
        .lines()
        .filter(|l| l.starts_with("KEEP") || l.starts_with("DROP"))
        .collect();
    let kept: Vec<&&str> = lines.iter().filter(|l| l.starts_with("KEEP")).collect();
    let capped_out: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("DROP") && l.contains("max_per_source 2"))
        .collect();
    assert_eq!((kept.len(), capped_out.len()), (2, 2), "{capped}");
    // Newest first: the two kept come before the two the cap leaves out.
    let position = |line: &&&str| lines.iter().position(|l| l == *line).unwrap();
    assert!(
        position(kept.last().unwrap()) < position(&capped_out[0]),
        "{capped}"
    );
    assert!(
        capped.contains("ai keeps 2 and drops 6 of the 8 newest stored items"),
        "{capped}"
    );

    // Every sample item is older than a day (they are from November 2026).
    let aged = judged(&format!("{rules}max_age = \"1d\"\n"));
    assert_eq!(
        aged.lines()
            .filter(|l| l.starts_with("DROP") && l.contains("max_age 1day"))
            .count(),
        4,
        "{aged}"
    );
    assert!(!aged.lines().any(|l| l.starts_with("KEEP")), "{aged}");
}
