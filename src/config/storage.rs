//! `[storage] engine` and `url`: which storage engine holds the store, and for PostgreSQL the
//! database URL ([`DatabaseUrl`]), which `FEEDMUX_STORAGE_URL` may give instead of the file.
//!
//! A database URL may carry a password; [`DatabaseUrl`] shows it as `***` wherever it is
//! displayed or debug-printed, and hands out the real text only through
//! [`DatabaseUrl::connect_string`] and [`DatabaseUrl::connect_string_without_tls`], for
//! connecting.
//!
//! It may also carry libpq's TLS parameters, `sslmode` and `sslrootcert`, read here into
//! [`DatabaseTls`] (a value libpq does not know is an error of the config); the store builds
//! its TLS connector from them.

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
pub struct DatabaseUrl {
    /// The URL as written.
    text: String,
    /// Its `sslmode` and `sslrootcert`.
    tls: DatabaseTls,
}

/// libpq's `sslmode`: whether the connection to the database is encrypted, and what of the
/// server's certificate is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never encrypted.
    Disable,
    /// Encrypted when the server offers TLS, plain otherwise (libpq's default).
    #[default]
    Prefer,
    /// Always encrypted; the server's certificate is not verified (unless `sslrootcert` is
    /// given: then as [`SslMode::VerifyCa`]).
    Require,
    /// Always encrypted, and the server's certificate chains to a trusted CA.
    VerifyCa,
    /// As [`SslMode::VerifyCa`], and the certificate is for the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The values, as written in a URL.
    pub const NAMES: &'static str = "disable, prefer, require, verify-ca or verify-full";

    /// The mode `value` names (as libpq spells it).
    pub fn parse(value: &str) -> Result<SslMode, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(
                "sslmode \"allow\" (plain first, TLS only if the server insists) is not supported: use prefer, or disable"
                    .to_owned(),
            ),
            other => Err(format!(
                "invalid sslmode {other:?}: expected {}",
                SslMode::NAMES
            )),
        }
    }

    /// The mode as written in a URL.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the CA certificates that verify the database server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The system's trusted roots: no `sslrootcert`, or `sslrootcert=system`.
    System,
    /// The PEM file `sslrootcert` names.
    File(PathBuf),
}

/// The TLS parameters of a database URL, as libpq reads them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatabaseTls {
    /// `sslmode` (default `prefer`).
    pub mode: SslMode,
    /// `sslrootcert`: `None` when the URL names none.
    pub root_cert: Option<RootCerts>,
}

impl DatabaseTls {
    /// The `sslmode` and `sslrootcert` parameters of a URL's `query` (the last of each wins;
    /// values are percent-decoded). `sslrootcert=system` means the system's roots and, as in
    /// libpq, makes the default mode `verify-full` and a weaker one an error.
    pub fn from_query(query: &str) -> Result<DatabaseTls, String> {
        let (mut mode, mut root_cert) = (None, None);
        for (key, value) in query_pairs(query) {
            match key {
                "sslmode" => mode = Some(SslMode::parse(&percent_decode(value)?)?),
                "sslrootcert" => {
                    let value = percent_decode(value)?;
                    root_cert = match value.as_str() {
                        "" => None,
                        "system" => Some(RootCerts::System),
                        path => Some(RootCerts::File(PathBuf::from(path))),
                    };
                }
                _ => {}
            }
        }
        let mode = match (mode, &root_cert) {
            (None, Some(RootCerts::System)) => SslMode::VerifyFull,
            (Some(weak), Some(RootCerts::System)) if weak != SslMode::VerifyFull => {
                return Err(format!(
                    "sslmode {:?} may not be used with sslrootcert=system (use verify-full)",
                    weak.name()
                ))
            }
            (mode, _) => mode.unwrap_or_default(),
        };
        Ok(DatabaseTls { mode, root_cert })
    }

    /// Whether `sslrootcert`, when it names a file and the connection may use TLS, can be
    /// read: the error names the file. (Whether it holds certificates is the store's to find
    /// when it connects.) Unlike libpq, which skips verifying under `prefer` and `require`
    /// when the named file is missing, a missing file is an error in every mode but `disable`.
    pub fn check_root_file(&self) -> Result<(), String> {
        match (&self.root_cert, self.mode) {
            (_, SslMode::Disable) | (None | Some(RootCerts::System), _) => Ok(()),
            (Some(RootCerts::File(path)), _) => std::fs::File::open(path)
                .map(|_| ())
                .map_err(|e| format!("sslrootcert {}: cannot read it: {e}", path.display())),
        }
    }

    /// Whether the server's certificate is verified against CA certificates: `verify-ca`,
    /// `verify-full`, or an `sslrootcert` given with a weaker mode (as libpq does).
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            SslMode::Disable => false,
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Prefer | SslMode::Require => self.root_cert.is_some(),
        }
    }
}

/// The parameters of `query`: `key=value` pairs between `&`, before any `#`.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// `text` with each `%XX` turned into its byte (`+` stays, as in libpq).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in {text:?}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

impl DatabaseUrl {
    /// `text` (trimmed) when it is a `postgres://` or `postgresql://` URL with something after
    /// the scheme, whose `sslmode` and `sslrootcert` (if any) are ones libpq knows. The error
    /// names the URL without its password.
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        let text = text.trim();
        let rest = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"));
        match rest {
            Some(rest) if !rest.is_empty() => {
                let query = rest.split_once('?').map(|(_, q)| q).unwrap_or_default();
                let tls = DatabaseTls::from_query(query)
                    .map_err(|e| format!("database URL {:?}: {e}", hide_password(text)))?;
                Ok(DatabaseUrl {
                    text: text.to_owned(),
                    tls,
                })
            }
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
        &self.text
    }

    /// The URL without its `sslmode` and `sslrootcert` parameters (which [`DatabaseUrl::tls`]
    /// holds), password included: for a client that reads the TLS settings from elsewhere
    /// (the `postgres` crate knows neither `verify-*` nor `sslrootcert`). Never for showing.
    pub fn connect_string_without_tls(&self) -> String {
        let Some((base, query)) = self.text.split_once('?') else {
            return self.text.clone();
        };
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
                !pair.is_empty() && key != "sslmode" && key != "sslrootcert"
            })
            .collect();
        let mut text = base.to_owned();
        if !kept.is_empty() {
            text.push('?');
            text.push_str(&kept.join("&"));
        }
        if let Some(fragment) = fragment {
            text.push('#');
            text.push_str(fragment);
        }
        text
    }

    /// The URL's TLS settings: `sslmode` and `sslrootcert`.
    pub fn tls(&self) -> &DatabaseTls {
        &self.tls
    }

    /// Whether the URL itself holds a password (PGPASSWORD or `~/.pgpass` are better places).
    pub fn has_password(&self) -> bool {
        hide_password(&self.text) != self.text
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hide_password(&self.text))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", hide_password(&self.text))
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
                Ok(url) => {
                    if let Err(message) = url.tls().check_root_file() {
                        report.at(span, format!("{origin}: {message}"));
                    }
                    StorageEngine::Postgres { url }
                }
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
