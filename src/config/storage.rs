//! `[storage] engine` and `url`: which storage engine holds the store, and for PostgreSQL the
//! database URL ([`DatabaseUrl`]), which `FEEDMUX_STORAGE_URL` may give instead of the file.
//!
//! A database URL may carry a password; [`DatabaseUrl`] shows it as `***` wherever it is
//! displayed or debug-printed, and hands out the real text only through
//! [`DatabaseUrl::connect_string`], for connecting.

use super::*;

/// The environment variable that gives `[storage] url` (and, when the file names no engine,
/// selects `engine = "postgres"`).
pub const STORAGE_URL_VAR: &str = "FEEDMUX_STORAGE_URL";

/// What replaces a password in a shown database URL.
const HIDDEN_PASSWORD: &str = "***";

/// Which storage engine holds the store (`[storage] engine`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageEngine {
    /// The embedded store in `[storage] path` (the default).
    Sled,
    /// A PostgreSQL database, which several instances can share.
    Postgres { url: DatabaseUrl },
}

impl StorageEngine {
    /// The engine's name as written in the config: `"sled"` or `"postgres"`.
    pub fn name(&self) -> &'static str {
        match self {
            StorageEngine::Sled => "sled",
            StorageEngine::Postgres { .. } => "postgres",
        }
    }
}

/// A `postgres://` or `postgresql://` URL. Its `Display` and `Debug` show it with any password
/// (in the user part, or a `password=` parameter) replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// `text` (trimmed) when it is a `postgres://` or `postgresql://` URL with something after
    /// the scheme. The error names the URL without its password.
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        let text = text.trim();
        let rest = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"));
        match rest {
            Some(rest) if !rest.is_empty() => Ok(DatabaseUrl(text.to_owned())),
            Some(_) => Err(format!(
                "database URL {text:?} names no host or database: expected postgres://user@host:port/database"
            )),
            None => Err(format!(
                "database URL {:?} is not a postgres:// or postgresql:// URL",
                hide_password(text)
            )),
        }
    }

    /// The URL as written, password included: for connecting only, never for showing.
    pub fn connect_string(&self) -> &str {
        &self.0
    }

    /// Whether the URL itself holds a password (PGPASSWORD or `~/.pgpass` are better places).
    pub fn has_password(&self) -> bool {
        hide_password(&self.0) != self.0
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hide_password(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", hide_password(&self.0))
    }
}

/// `url` with the password of its user part and the value of any `password` parameter
/// replaced by `***`. Works on the text, so URLs the `url` crate would refuse (several hosts:
/// `postgres://u:pw@h1,h2/db`) are hidden too.
fn hide_password(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // The user part ends at the last `@` before the query: a password may hold a `/`.
    let query_start = rest.find('?').unwrap_or(rest.len());
    let (authority, tail) = match rest[..query_start].rfind('@') {
        Some(at) => {
            let (userinfo, host) = rest.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _password)) => (format!("{user}:{HIDDEN_PASSWORD}"), host),
                None => (userinfo.to_owned(), host),
            }
        }
        None => (String::new(), rest),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => format!("{path}?{}", hide_password_parameter(query)),
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

/// A query string with the value of every `password` parameter replaced by `***`.
fn hide_password_parameter(query: &str) -> String {
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let hidden: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                format!("{key}={HIDDEN_PASSWORD}")
            }
            _ => pair.to_owned(),
        })
        .collect();
    let mut text = hidden.join("&");
    if let Some(fragment) = fragment {
        text.push('#');
        text.push_str(fragment);
    }
    text
}

/// What the environment adds to the file: `FEEDMUX_STORAGE_URL`. [`load`] and [`parse`] read
/// the process's; [`parse_with`] takes one, for tests.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `FEEDMUX_STORAGE_URL` when set and not empty.
    pub storage_url: Option<String>,
}

impl Environment {
    /// The process's environment.
    pub fn of_process() -> Environment {
        Environment {
            storage_url: std::env::var(STORAGE_URL_VAR)
                .ok()
                .filter(|url| !url.trim().is_empty()),
        }
    }
}

/// `[storage] engine` and `url`, with the environment's URL: the engine the store uses.
/// The environment's URL replaces the file's, and selects PostgreSQL when the file names no
/// engine; so does a URL in the file. An error about the environment's URL is placed at
/// `engine` (or at the file's start, when the file names none).
pub(super) fn validate_engine(
    engine: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    env: &Environment,
    report: &mut Reporter<'_>,
) -> StorageEngine {
    let engine_span = engine.as_ref().map(|e| e.span()).unwrap_or(0..0);
    let from_env = env
        .storage_url
        .as_ref()
        .map(|text| (text.as_str(), engine_span.clone(), STORAGE_URL_VAR));
    let from_file = url
        .as_ref()
        .map(|text| (text.get_ref().as_str(), text.span(), "[storage] url"));
    let chosen_url = from_env.or(from_file);
    let name = match &engine {
        Some(name) => name.get_ref().trim(),
        None if chosen_url.is_some() => "postgres",
        None => "sled",
    };
    match name {
        "sled" => {
            if let Some(url) = &url {
                report.at(
                    url.span(),
                    "[storage] url is for engine = \"postgres\": set that, or remove url"
                        .to_owned(),
                );
            }
            StorageEngine::Sled
        }
        "postgres" => match chosen_url {
            Some((text, span, origin)) => match DatabaseUrl::parse(text) {
                Ok(url) => StorageEngine::Postgres { url },
                Err(message) => {
                    report.at(span, format!("{origin}: {message}"));
                    StorageEngine::Sled
                }
            },
            None => {
                report.at(
                    engine_span,
                    format!("engine = \"postgres\" needs a database: set [storage] url = \"postgres://user@host:port/database\" or {STORAGE_URL_VAR}"),
                );
                StorageEngine::Sled
            }
        },
        other => {
            report.at(
                engine_span,
                format!("invalid storage engine {other:?}: expected \"sled\" or \"postgres\""),
            );
            StorageEngine::Sled
        }
    }
}
