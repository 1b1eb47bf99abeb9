//! config's tests: defaults filled, values parsed, and each mistake named with its place in
//! the file.

use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse(Path::new("t.toml"), text) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(
        Path::new("config/x.toml"),
        "[[source]]\nname = \"a\"\nurl = \"https://example.com/feed\"\n",
    )
    .unwrap();
    assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.server.base_url, "http://127.0.0.1:8080");
    assert_eq!(c.sources[0].schedule.text, DEFAULT_SCHEDULE);
    assert_eq!(c.storage.path, PathBuf::from(DEFAULT_STORE_PATH));
}

#[test]
fn websub_hub_is_optional_strict_and_located() {
    let source = "[[source]]\nname = \"a\"\nurl = \"https://example.com/feed\"\n";
    let c = parse(Path::new("t.toml"), source).unwrap();
    assert!(c.websub.is_none());
    let c = parse(
        Path::new("t.toml"),
        &format!("[websub]\nhub = \"https://hub.example/\"\n{source}"),
    )
    .unwrap();
    assert_eq!(c.websub.unwrap().hub.as_str(), "https://hub.example/");
    let e = errors(&format!("[websub]\nhub = \"ftp://hub.example/\"\n{source}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:2:7: invalid websub hub"), "{e:?}");
    let e = errors(&format!(
        "[websub]\nhub = \"https://h/\"\nlease = 3\n{source}"
    ));
    assert!(e.len() == 1 && e[0].contains("lease"), "{e:?}");
    let e = errors(&format!("[websub]\n{source}"));
    assert!(e.len() == 1 && e[0].contains("hub"), "{e:?}");
}

#[test]
fn a_dedup_model_that_cannot_be_loaded_is_a_located_config_error() {
    let source = "[[source]]\nname = \"a\"\nurl = \"https://example.com/feed\"\n";
    let c = parse(Path::new("t.toml"), source).unwrap();
    assert!(c.dedup.model.is_none());
    assert_eq!(
        c.dedup.meaning_threshold,
        crate::dedup::DEFAULT_MEANING_THRESHOLD
    );
    let e = errors(&format!("[dedup]\nmodel = \"no-such-model.bin\"\n{source}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:2:9: dedup.model no-such-model.bin: cannot read the model file"),
        "{e:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("page.html"), "<html>404</html>").unwrap();
    let e = match parse(
        &dir.path().join("t.toml"),
        &format!("[dedup]\nmodel = \"page.html\"\n{source}"),
    ) {
        Ok(_) => panic!("an HTML page is no model"),
        Err(e) => e.0[0].to_string(),
    };
    assert!(e.contains("not an E5S1 model file"), "{e}");
    let e = errors(&format!("[dedup]\nmeaning_threshold = 1.5\n{source}"));
    assert!(e.len() == 1 && e[0].contains("meaning_threshold"), "{e:?}");
}

#[test]
fn dedup_index_age_defaults_to_30_days_and_reaches_at_least_the_window() {
    let source = "[[source]]\nname = \"a\"\nurl = \"https://example.com/feed\"\n";
    let c = parse(Path::new("t.toml"), source).unwrap();
    assert_eq!(c.dedup.index_age, Duration::from_secs(30 * 86_400));
    let c = parse(
        Path::new("t.toml"),
        &format!("[dedup]\nindex_age = \"1y\"\n{source}"),
    )
    .unwrap();
    assert!(c.dedup.index_age > Duration::from_secs(365 * 86_400));
    let e = errors(&format!("[dedup]\nindex_age = \"2d\"\n{source}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "t.toml:2:13: dedup.index_age (2days) must be at least dedup.window (3days)"
        ),
        "{e:?}"
    );
    let e = errors(&format!("[dedup]\nwindow = \"40d\"\n{source}"));
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:2:10: dedup.index_age (30days)"),
        "{e:?}"
    );
}

#[test]
fn unknown_key_is_located() {
    let e = errors("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("t.toml:3:1: "), "{e:?}");
    assert!(e[0].contains("listen_port"), "{e:?}");
}

#[test]
fn bad_cron_regex_and_reference_are_all_reported() {
    let text = "[[source]]\nname = \"a\"\nurl = \"https://example.com/\"\nschedule = \"every minute\"\n\n[[feed]]\nname = \"f\"\nsources = [\"a\", \"nope\"]\ninclude_regex = [\"(unclosed\"]\n";
    let e = errors(text);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:4:12: invalid cron schedule"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("t.toml:8:17: feed \"f\" names unknown source \"nope\""),
        "{e:?}"
    );
    assert!(e[2].starts_with("t.toml:9:18: invalid regex"), "{e:?}");
}

#[test]
fn duplicate_names_and_bad_urls() {
    let text = "[[source]]\nname = \"a\"\nurl = \"ftp://x/\"\n[[source]]\nname = \"a\"\nurl = \"https://e.com/\"\n";
    let e = errors(text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].contains("unsupported URL scheme"), "{e:?}");
    assert!(
        e[1].starts_with("t.toml:5:8: duplicate source name"),
        "{e:?}"
    );
}

#[test]
fn relative_file_url_resolves_against_config_dir() {
    let url = parse_source_url("file:samples/a.xml", Path::new("/etc/feedmux")).unwrap();
    assert_eq!(url.as_str(), "file:///etc/feedmux/samples/a.xml");
}

#[test]
fn tags_select_sources() {
    let text = "[[source]]\nname = \"a\"\nurl = \"https://a.com/\"\ntags = [\"zh\"]\n[[source]]\nname = \"b\"\nurl = \"https://b.com/\"\ntags = [\"en\"]\n[[feed]]\nname = \"zh\"\ntags = [\"zh\"]\n";
    let c = parse(Path::new("t.toml"), text).unwrap();
    assert_eq!(c.feeds[0].sources, vec!["a".to_owned()]);
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("10MiB"), Some(10 << 20));
    assert_eq!(parse_size("512 KiB"), Some(512 << 10));
    assert_eq!(parse_size("1000"), Some(1000));
    assert_eq!(parse_size("ten"), None);
}

#[test]
fn the_store_cache_size_is_a_size_with_a_default() {
    let source = "[[source]]\nname = \"a\"\nurl = \"https://a.com/\"\n";
    let c = parse(Path::new("t.toml"), source).unwrap();
    assert_eq!(c.storage.cache_bytes, crate::store::DEFAULT_CACHE_BYTES);
    let text = format!("[storage]\ncache_size = \"8MiB\"\n{source}");
    let c = parse(Path::new("t.toml"), &text).unwrap();
    assert_eq!(c.storage.cache_bytes, 8 << 20);
    let e = errors(&format!("[storage]\ncache_size = \"lots\"\n{source}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:2:14: invalid size \"lots\""),
        "{e:?}"
    );
}

#[test]
fn a_feeds_balance_keys_are_read_and_bad_values_name_the_key_and_feed() {
    let source = "[[source]]\nname = \"a\"\nurl = \"https://a.com/\"\n";
    let text = format!(
        "{source}[[feed]]\nname = \"f\"\nmax_per_source = 20\nmax_age = \"7d\"\nmatch_in = \"title\"\n[[feed]]\nname = \"g\"\n"
    );
    let c = parse(Path::new("t.toml"), &text).unwrap();
    let (f, g) = (&c.feeds[0], &c.feeds[1]);
    assert_eq!(f.max_per_source, Some(20));
    assert_eq!(f.max_age, Some(Duration::from_secs(7 * 24 * 3600)));
    assert_eq!(f.match_in, MatchIn::Title);
    assert_eq!(
        (g.max_per_source, g.max_age, g.match_in),
        (None, None, MatchIn::All)
    );
    assert_ne!(f.selection_fingerprint(), g.selection_fingerprint());

    let e = errors(&format!(
        "{source}[[feed]]\nname = \"arxiv\"\nmax_per_source = 0\nmax_age = \"a week\"\nmatch_in = \"body\"\n"
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:6:18: feed \"arxiv\": max_per_source must be at least 1"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("t.toml:7:11: feed \"arxiv\": invalid max_age \"a week\""),
        "{e:?}"
    );
    assert!(
        e[2].starts_with("t.toml:8:12: feed \"arxiv\": match_in must be \"title\" or \"all\""),
        "{e:?}"
    );
}

fn storage_of(text: &str, storage_url: Option<&str>) -> Result<StorageEngine, Vec<String>> {
    let env = Environment {
        storage_url: storage_url.map(str::to_owned),
    };
    match parse_with(Path::new("t.toml"), text, &env) {
        Ok(c) => Ok(c.storage.engine),
        Err(e) => Err(e.0.iter().map(ToString::to_string).collect()),
    }
}

#[test]
fn the_storage_engine_is_sled_unless_postgres_is_asked_for() {
    assert_eq!(storage_of("", None), Ok(StorageEngine::Sled));
    assert_eq!(
        storage_of("[storage]\nengine = \"sled\"\n", None),
        Ok(StorageEngine::Sled)
    );
    let url = |engine: Result<StorageEngine, Vec<String>>| match engine {
        Ok(StorageEngine::Postgres { url }) => url.connect_string().to_owned(),
        other => panic!("not postgres: {other:?}"),
    };
    let written = "[storage]\nengine = \"postgres\"\nurl = \"postgres://feedmux@db:5432/feeds\"\n";
    assert_eq!(
        url(storage_of(written, None)),
        "postgres://feedmux@db:5432/feeds"
    );
    // A url alone, in the file or the environment, names PostgreSQL.
    let url_only = "[storage]\nurl = \"postgresql://feedmux@db/feeds\"\n";
    assert_eq!(
        url(storage_of(url_only, None)),
        "postgresql://feedmux@db/feeds"
    );
    assert_eq!(
        url(storage_of("", Some("postgres://u@env/db"))),
        "postgres://u@env/db"
    );
    // The environment's url replaces the file's.
    assert_eq!(
        url(storage_of(written, Some("postgres://u@env/db"))),
        "postgres://u@env/db"
    );
    // engine = "sled" written in the file stays sled whatever the environment says.
    assert_eq!(
        storage_of(
            "[storage]\nengine = \"sled\"\n",
            Some("postgres://u@env/db")
        ),
        Ok(StorageEngine::Sled)
    );
}

#[test]
fn storage_engine_mistakes_are_located_errors() {
    let e = storage_of("[storage]\nengine = \"postgres\"\n", None).unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:2:10: engine = \"postgres\" needs a database"),
        "{e:?}"
    );
    let e = storage_of(
        "[storage]\nengine = \"postgres\"\nurl = \"mysql://u@db/feeds\"\n",
        None,
    )
    .unwrap_err();
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:3:7: [storage] url: database URL"),
        "{e:?}"
    );
    assert!(
        e[0].contains("not a postgres:// or postgresql:// URL"),
        "{e:?}"
    );
    let e = storage_of("[storage]\nengine = \"mongo\"\n", None).unwrap_err();
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:2:10: invalid storage engine \"mongo\""),
        "{e:?}"
    );
    let e = storage_of(
        "[storage]\nengine = \"sled\"\nurl = \"postgres://u@db/f\"\n",
        None,
    )
    .unwrap_err();
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:3:7: [storage] url is for engine"),
        "{e:?}"
    );
    let e = storage_of("", Some("http://u@db/f")).unwrap_err();
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:1:1: FEEDMUX_STORAGE_URL: database URL"),
        "{e:?}"
    );
}

#[test]
fn a_database_password_is_never_shown() {
    let secret = "hunter2-secret";
    for written in [
        format!("postgres://feedmux:{secret}@db:5432/feeds"),
        format!("postgres://feedmux:{secret}@db:5432/feeds?sslmode=require"),
        format!("postgresql://feedmux@db/feeds?sslmode=require&password={secret}"),
        format!("postgres://feedmux:pa/{secret}@h1:5432,h2:5433/feeds"),
    ] {
        let url = DatabaseUrl::parse(&written).unwrap();
        assert_eq!(url.connect_string(), written);
        assert!(url.has_password(), "{written}");
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }
    let url = DatabaseUrl::parse("postgres://feedmux:s3@db:5432/feeds?sslmode=require").unwrap();
    assert_eq!(
        url.to_string(),
        "postgres://feedmux:***@db:5432/feeds?sslmode=require"
    );
    let plain = DatabaseUrl::parse("postgres://feedmux@db/feeds").unwrap();
    assert!(!plain.has_password());
    assert_eq!(plain.to_string(), "postgres://feedmux@db/feeds");
    // Not even a refused URL's error shows it.
    let e = storage_of("", Some(&format!("mysql://u:{secret}@db/f"))).unwrap_err();
    assert!(!e[0].contains(secret), "{e:?}");
    let e = storage_of(
        &format!("[storage]\nurl = \"mysql://u:{secret}@db/f\"\n"),
        None,
    )
    .unwrap_err();
    assert!(!e[0].contains(secret), "{e:?}");
}

#[test]
fn sslmode_and_sslrootcert_are_read_as_libpq_reads_them() {
    use std::path::PathBuf;
    let tls = |url: &str| DatabaseUrl::parse(url).unwrap().tls().clone();
    assert_eq!(
        tls("postgres://u@db/f"),
        DatabaseTls {
            mode: SslMode::Prefer,
            root_cert: None
        }
    );
    for (name, mode) in [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ] {
        let read = tls(&format!("postgres://u@db/f?sslmode={name}"));
        assert_eq!(read.mode, mode);
        assert_eq!(mode.name(), name);
        assert_eq!(read.verifies_chain(), name.starts_with("verify"), "{name}");
    }
    let read = tls("postgresql://u@db/f?application_name=x&sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem&sslmode=require");
    assert_eq!(read.mode, SslMode::Require);
    assert_eq!(
        read.root_cert,
        Some(RootCerts::File(PathBuf::from("/etc/ca dir/ca.pem")))
    );
    // A root file given with require verifies the chain, as in libpq.
    assert!(read.verifies_chain());
    // sslrootcert=system: the system's roots, and verify-full unless a mode is written.
    let read = tls("postgres://u@db/f?sslrootcert=system");
    assert_eq!(read.mode, SslMode::VerifyFull);
    assert_eq!(read.root_cert, Some(RootCerts::System));
    // The last of a parameter wins.
    assert_eq!(
        tls("postgres://u@db/f?sslmode=disable&sslmode=verify-ca").mode,
        SslMode::VerifyCa
    );
}

#[test]
fn an_unknown_sslmode_is_an_error_naming_the_value() {
    let e = DatabaseUrl::parse("postgres://u:pw@db/f?sslmode=verify_full").unwrap_err();
    assert!(
        e.contains("invalid sslmode \"verify_full\": expected disable, prefer, require, verify-ca or verify-full"),
        "{e}"
    );
    assert!(!e.contains("pw@"), "{e}");
    let e = DatabaseUrl::parse("postgres://u@db/f?sslmode=allow").unwrap_err();
    assert!(e.contains("sslmode \"allow\""), "{e}");
    let e = DatabaseUrl::parse("postgres://u@db/f?sslmode=require&sslrootcert=system").unwrap_err();
    assert!(e.contains("sslrootcert=system (use verify-full)"), "{e}");
    let e = DatabaseUrl::parse("postgres://u@db/f?sslrootcert=%zz").unwrap_err();
    assert!(e.contains("invalid percent-encoding"), "{e}");
    // In the config, at the URL, or at engine for the environment's.
    let e = storage_of(
        "[storage]\nengine = \"postgres\"\nurl = \"postgres://u@db/f?sslmode=on\"\n",
        None,
    )
    .unwrap_err();
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:3:7: [storage] url: database URL"),
        "{e:?}"
    );
    assert!(e[0].contains("invalid sslmode \"on\""), "{e:?}");
    let e = storage_of("", Some("postgres://u@db/f?sslmode=ON")).unwrap_err();
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:1:1: FEEDMUX_STORAGE_URL: database URL"),
        "{e:?}"
    );
}

#[test]
fn the_client_gets_the_url_without_the_tls_parameters() {
    let url = DatabaseUrl::parse(
        "postgres://u:s3@db/f?sslmode=verify-full&connect_timeout=3&sslrootcert=/ca.pem",
    )
    .unwrap();
    assert_eq!(
        url.connect_string_without_tls(),
        "postgres://u:s3@db/f?connect_timeout=3"
    );
    let url = DatabaseUrl::parse("postgres://u@db/f?sslmode=require").unwrap();
    assert_eq!(url.connect_string_without_tls(), "postgres://u@db/f");
    let url = DatabaseUrl::parse("postgres://u@db/f").unwrap();
    assert_eq!(url.connect_string_without_tls(), "postgres://u@db/f");
    // Shown as written, password hidden.
    let url =
        DatabaseUrl::parse("postgres://u:s3@db/f?sslmode=verify-ca&sslrootcert=/ca.pem").unwrap();
    assert_eq!(
        url.to_string(),
        "postgres://u:***@db/f?sslmode=verify-ca&sslrootcert=/ca.pem"
    );
}

#[test]
fn an_unreadable_sslrootcert_is_a_located_error_unless_tls_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.pem");
    for mode in ["verify-full", "verify-ca", "require", "prefer"] {
        let text = format!(
            "[storage]\nengine = \"postgres\"\nurl = \"postgres://u@db/f?sslmode={mode}&sslrootcert={}\"\n",
            missing.display()
        );
        let e = storage_of(&text, None).unwrap_err();
        assert!(
            e.len() == 1
                && e[0].starts_with(&format!(
                    "t.toml:3:7: [storage] url: sslrootcert {}: cannot read it",
                    missing.display()
                )),
            "{mode}: {e:?}"
        );
    }
    let disabled = format!(
        "[storage]\nurl = \"postgres://u@db/f?sslmode=disable&sslrootcert={}\"\n",
        missing.display()
    );
    assert!(storage_of(&disabled, None).is_ok());
    let present = dir.path().join("ca.pem");
    std::fs::write(&present, "").unwrap();
    let text = format!(
        "[storage]\nurl = \"postgres://u@db/f?sslmode=verify-full&sslrootcert={}\"\n",
        present.display()
    );
    assert!(storage_of(&text, None).is_ok());
}
