//! TLS to the database: the one [`Connector`] that opens every connection of the engine (the
//! pool's workers, the ingest lock's, the listener of other instances' changes), built by
//! [`Connector::new`] from the URL's `sslmode` and `sslrootcert` as libpq reads them
//! ([`DatabaseTls`]), with rustls and its ring provider (no OpenSSL).
//!
//! What is verified of the server's certificate: nothing under `prefer` and `require` (the
//! handshake's signatures still are: the connection is encrypted to whoever holds the key of
//! the certificate shown), unless `sslrootcert` names CA certificates, when they verify the
//! chain as under `verify-ca`; the chain under `verify-ca`; the chain and the host name under
//! `verify-full`. The CA certificates are those of `sslrootcert`, else the system's
//! (`rustls-native-certs`: the same store OpenSSL, and so libpq's `sslrootcert=system`, uses).
//! As in libpq, a connection over a Unix socket is never encrypted.

use std::path::Path;
use std::sync::Arc;

use postgres::config::{Host, SslMode as ClientSslMode};
use postgres::{Client, Config};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{DatabaseTls, RootCerts, SslMode};

/// The database's connection settings with the TLS its URL asks for: every connection the
/// engine opens is opened by [`Connector::connect`].
#[derive(Clone)]
pub(super) struct Connector {
    /// The settings (host, user, ...; `sslmode` as the client knows it). Callers may set
    /// their timeouts and application name.
    pub(super) config: Config,
    tls: MakeRustlsConnect,
}

impl Connector {
    /// The connector for `config` (parsed from the URL without its TLS parameters) with the
    /// TLS of `tls`. Fails when the CA certificates that must verify the server cannot be had:
    /// `sslrootcert` unreadable or holding none, or none given and the system has none.
    pub(super) fn new(mut config: Config, tls: &DatabaseTls) -> Result<Connector, String> {
        let mode = client_mode(tls.mode, &config);
        config.ssl_mode(mode);
        let client_config = if mode == ClientSslMode::Disable {
            // Never used for a handshake: no certificates are read.
            client_config(None, false)?
        } else {
            let roots = if tls.verifies_chain() {
                Some(Arc::new(roots(tls)?))
            } else {
                None
            };
            client_config(roots, tls.mode == SslMode::VerifyFull)?
        };
        Ok(Connector {
            config,
            tls: MakeRustlsConnect::new(client_config),
        })
    }

    /// Opens a connection (blocking).
    pub(super) fn connect(&self) -> Result<Client, postgres::Error> {
        self.config.connect(self.tls.clone())
    }
}

/// What the `postgres` client is told of `mode`: it knows whether to ask for TLS and whether
/// to insist, and the certificate checks are [`Verifier`]'s. Only Unix sockets to connect
/// to: never TLS, as in libpq (the server refuses it there).
fn client_mode(mode: SslMode, config: &Config) -> ClientSslMode {
    let hosts = config.get_hosts();
    let only_sockets = !hosts.is_empty() && hosts.iter().all(|h| matches!(h, Host::Unix(_)));
    match mode {
        SslMode::Disable => ClientSslMode::Disable,
        _ if only_sockets => ClientSslMode::Disable,
        SslMode::Prefer => ClientSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => ClientSslMode::Require,
    }
}

/// rustls's settings with the ring provider and a [`Verifier`] of `roots` (`None`: accepts
/// any certificate), checking the host name when `check_name`.
fn client_config(
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Verifier {
        roots,
        check_name,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// The CA certificates that verify the server: `sslrootcert`'s, else the system's.
fn roots(tls: &DatabaseTls) -> Result<RootCertStore, String> {
    match &tls.root_cert {
        Some(RootCerts::File(path)) => roots_in_file(path),
        Some(RootCerts::System) | None => system_roots(tls.mode),
    }
}

/// The certificates of the PEM file at `path` (its other sections, keys say, are skipped).
fn roots_in_file(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let text =
        std::fs::read(path).map_err(|e| format!("sslrootcert {shown}: cannot read it: {e}"))?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| format!("sslrootcert {shown}: not a PEM file: {e}"))?;
        store
            .add(cert)
            .map_err(|e| format!("sslrootcert {shown}: a certificate rustls refuses: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!(
            "sslrootcert {shown} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(store)
}

/// The system's trusted CA certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set, as for
/// OpenSSL); an error naming `mode` when there are none.
fn system_roots(mode: SslMode) -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "sslmode={} verifies the server's certificate, but no sslrootcert names the CA certificates and the system has none{why}: set sslrootcert=/path/to/ca.pem, or install the system's CA certificates (Debian: ca-certificates)",
            mode.name()
        ));
    }
    Ok(store)
}

/// Verifies the server's certificate as the `sslmode` asks: its chain to `roots` (none:
/// anything goes), and its name when `check_name`. The handshake's signatures are always
/// verified, with the provider's algorithms: an unverified certificate still proves that the
/// server holds its key.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.check_name {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(query: &str) -> DatabaseTls {
        DatabaseTls::from_query(query).unwrap()
    }

    fn config(url: &str) -> Config {
        url.parse().unwrap()
    }

    #[test]
    fn the_client_insists_on_tls_from_require_on_and_never_over_a_socket() {
        let tcp = config("postgres://u@db.example/feeds");
        for (query, expected) in [
            ("", ClientSslMode::Prefer),
            ("sslmode=disable", ClientSslMode::Disable),
            ("sslmode=prefer", ClientSslMode::Prefer),
            ("sslmode=require", ClientSslMode::Require),
            ("sslmode=verify-ca", ClientSslMode::Require),
            ("sslmode=verify-full", ClientSslMode::Require),
        ] {
            assert_eq!(client_mode(tls(query).mode, &tcp), expected, "{query}");
        }
        let socket = config("postgres://u@%2Frun%2Fpostgresql/feeds");
        assert_eq!(
            client_mode(SslMode::VerifyFull, &socket),
            ClientSslMode::Disable
        );
    }

    #[test]
    fn a_missing_or_empty_root_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        let e = roots_in_file(&missing).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "sslrootcert {}: cannot read it",
                missing.display()
            )),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = roots_in_file(&empty).unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
        // Unverified modes read no file: a missing one is no error there.
        let query = format!("sslmode=disable&sslrootcert={}", missing.display());
        assert!(Connector::new(config("postgres://u@db/f"), &tls(&query)).is_ok());
        let query = format!("sslmode=verify-ca&sslrootcert={}", missing.display());
        let e = Connector::new(config("postgres://u@db/f"), &tls(&query))
            .err()
            .unwrap();
        assert!(e.contains("cannot read it"), "{e}");
        // require without sslrootcert verifies nothing and needs no roots.
        assert!(Connector::new(config("postgres://u@db/f"), &tls("sslmode=require")).is_ok());
    }
}
