//! The database password, found the way libpq finds it when the URL holds none:
//! `PGPASSWORD`, else the password file (`PGPASSFILE`, else `~/.pgpass`), whose lines are
//! `hostname:port:database:username:password` with `*` matching anything and `\:` / `\\`
//! escaping; the first matching line wins and `#` lines are comments. Like libpq, a password
//! file that group or others may access is ignored, with a warning naming the file (never
//! what it holds).
//!
//! [`password_for`] reads the process's environment; [`find_password`] is the same lookup on
//! values it is given, and [`password_in_file`] the matching of one file's text.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The password for `user` on `database` at `host:port`, as libpq would find it.
pub(crate) fn password_for(host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let env = PasswordEnv {
        password: std::env::var("PGPASSWORD").ok(),
        passfile: std::env::var_os("PGPASSFILE"),
        home: std::env::var_os("HOME"),
    };
    find_password(&env, &Wanted::new(host, port, database, user))
}

/// The environment variables the lookup reads.
#[derive(Debug, Default)]
struct PasswordEnv {
    /// `PGPASSWORD`.
    password: Option<String>,
    /// `PGPASSFILE`.
    passfile: Option<OsString>,
    /// `HOME`.
    home: Option<OsString>,
}

/// The connection a password is looked for.
#[derive(Debug)]
struct Wanted<'a> {
    host: &'a str,
    port: String,
    database: &'a str,
    user: &'a str,
}

impl<'a> Wanted<'a> {
    /// A connection to a Unix socket (a host that is a directory, or none) is `localhost` in
    /// the password file, as in libpq.
    fn new(host: &'a str, port: u16, database: &'a str, user: &'a str) -> Wanted<'a> {
        let host = if host.is_empty() || host.starts_with('/') {
            "localhost"
        } else {
            host
        };
        Wanted {
            host,
            port: port.to_string(),
            database,
            user,
        }
    }
}

/// `PGPASSWORD` when set and not empty, else the password file's first matching line.
fn find_password(env: &PasswordEnv, wanted: &Wanted<'_>) -> Option<String> {
    if let Some(password) = env.password.as_ref().filter(|p| !p.is_empty()) {
        return Some(password.clone());
    }
    let path = password_file(env)?;
    let text = read_private(&path)?;
    password_in_file(&text, wanted)
}

/// The password file: `PGPASSFILE`, else `$HOME/.pgpass`.
fn password_file(env: &PasswordEnv) -> Option<PathBuf> {
    match env.passfile.as_ref().filter(|p| !p.is_empty()) {
        Some(file) => Some(PathBuf::from(file)),
        None => {
            let home = env.home.as_ref().filter(|h| !h.is_empty())?;
            Some(Path::new(home).join(".pgpass"))
        }
    }
}

/// The text of the password file at `path`, unless it is missing, not a file, or open to
/// group or others (then ignored with a warning, as libpq does).
fn read_private(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "password file ignored: group or others may read it (chmod 0600 it)"
        );
        return None;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the password file");
            None
        }
    }
}

/// The password of the first line of a password file's `text` that matches `wanted`.
fn password_in_file(text: &str, wanted: &Wanted<'_>) -> Option<String> {
    text.lines()
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(fields)
        .find(|line| line.matches(wanted))
        .map(|line| line.password)
}

/// One line of a password file: four fields to match, and the password.
#[derive(Debug)]
struct Line {
    /// Host, port, database, user: `None` for `*`.
    keys: [Option<String>; 4],
    password: String,
}

impl Line {
    fn matches(&self, wanted: &Wanted<'_>) -> bool {
        let values = [
            wanted.host,
            wanted.port.as_str(),
            wanted.database,
            wanted.user,
        ];
        self.keys
            .iter()
            .zip(values)
            .all(|(key, value)| key.as_deref().is_none_or(|key| key == value))
    }
}

/// The fields of one line, split at unescaped `:` and unescaped (`\x` is `x`); `None` when
/// the line has fewer than five. The password is the rest of the line after the fourth `:`.
fn fields(line: &str) -> Option<Line> {
    let mut keys: [Option<String>; 4] = Default::default();
    let mut chars = line.chars();
    for key in &mut keys {
        let (field, raw, ended) = field(&mut chars);
        if ended {
            return None;
        }
        *key = (raw != "*").then_some(field);
    }
    let password: String = unescape(chars.as_str());
    Some(Line { keys, password })
}

/// The next field of `chars` up to an unescaped `:` (consumed): its unescaped text, its text
/// as written, and whether the line ended before a `:`.
fn field(chars: &mut std::str::Chars<'_>) -> (String, String, bool) {
    let mut text = String::new();
    let mut raw = String::new();
    while let Some(c) = chars.next() {
        match c {
            ':' => return (text, raw, false),
            '\\' => {
                raw.push(c);
                if let Some(next) = chars.next() {
                    raw.push(next);
                    text.push(next);
                }
            }
            other => {
                raw.push(other);
                text.push(other);
            }
        }
    }
    (text, raw, true)
}

/// `text` with each `\x` turned into `x`.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn wanted() -> Wanted<'static> {
        Wanted::new("db.example", 5432, "feeds", "feedmux")
    }

    fn in_file(text: &str) -> Option<String> {
        password_in_file(text, &wanted())
    }

    /// A password file holding `text` with `mode`, and the environment naming it.
    fn passfile(text: &str, mode: u32) -> (tempfile::TempDir, PasswordEnv) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let env = PasswordEnv {
            passfile: Some(path.into_os_string()),
            ..PasswordEnv::default()
        };
        (dir, env)
    }

    #[test]
    fn the_first_matching_line_gives_the_password() {
        let text = "other.example:5432:feeds:feedmux:not-this\n\
                    db.example:5432:feeds:feedmux:s3cret\n\
                    db.example:5432:feeds:feedmux:too-late\n";
        assert_eq!(in_file(text).as_deref(), Some("s3cret"));
    }

    #[test]
    fn a_star_matches_any_value_and_each_field_must_match() {
        assert_eq!(in_file("*:*:*:*:any").as_deref(), Some("any"));
        assert_eq!(
            in_file("db.example:*:feeds:*:some").as_deref(),
            Some("some")
        );
        assert_eq!(in_file("db.example:5433:feeds:feedmux:x"), None);
        assert_eq!(in_file("db.example:5432:other:feedmux:x"), None);
        assert_eq!(in_file("db.example:5432:feeds:someone:x"), None);
    }

    #[test]
    fn comments_blank_and_short_lines_are_skipped() {
        let text = "# db.example:5432:feeds:feedmux:commented\n\n\
                    db.example:5432:feeds\n\
                    *:*:*:*:real\r\n";
        assert_eq!(in_file(text).as_deref(), Some("real"));
    }

    #[test]
    fn backslash_escapes_a_colon_or_a_backslash() {
        let wanted = Wanted::new("db:example", 5432, "fe\\eds", "feedmux");
        let text = "db\\:example:5432:fe\\\\eds:feedmux:pa\\:ss\\\\word:tail";
        assert_eq!(
            password_in_file(text, &wanted).as_deref(),
            Some("pa:ss\\word:tail")
        );
        // An escaped star is a star, not a wildcard.
        assert_eq!(in_file("\\*:*:*:*:x"), None);
    }

    #[test]
    fn a_unix_socket_connection_is_localhost() {
        let wanted = Wanted::new("/run/postgresql", 5432, "feeds", "feedmux");
        assert_eq!(
            password_in_file("localhost:5432:feeds:feedmux:local", &wanted).as_deref(),
            Some("local")
        );
    }

    #[test]
    fn pgpassword_comes_before_the_file_unless_empty() {
        let (_dir, mut env) = passfile("*:*:*:*:from-file\n", 0o600);
        assert_eq!(find_password(&env, &wanted()).as_deref(), Some("from-file"));
        env.password = Some("from-env".to_owned());
        assert_eq!(find_password(&env, &wanted()).as_deref(), Some("from-env"));
        env.password = Some(String::new());
        assert_eq!(find_password(&env, &wanted()).as_deref(), Some("from-file"));
    }

    #[test]
    fn a_password_file_others_may_read_is_ignored() {
        let (_dir, env) = passfile("*:*:*:*:exposed\n", 0o644);
        assert_eq!(find_password(&env, &wanted()), None);
        let (_dir, env) = passfile("*:*:*:*:exposed\n", 0o640);
        assert_eq!(find_password(&env, &wanted()), None);
    }

    #[test]
    fn without_pgpassfile_the_file_is_pgpass_in_home() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(".pgpass");
        std::fs::write(&path, "db.example:5432:feeds:feedmux:at-home\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env = PasswordEnv {
            home: Some(home.path().as_os_str().to_owned()),
            ..PasswordEnv::default()
        };
        assert_eq!(find_password(&env, &wanted()).as_deref(), Some("at-home"));
        let nowhere = PasswordEnv::default();
        assert_eq!(find_password(&nowhere, &wanted()), None);
        let missing = PasswordEnv {
            passfile: Some(home.path().join("absent").into_os_string()),
            ..PasswordEnv::default()
        };
        assert_eq!(find_password(&missing, &wanted()), None);
    }
}
