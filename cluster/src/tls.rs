//! # TLS: a node's certificates, loaded from PEM files and reloaded on demand
//!
//! A node with `[tls]` settings speaks TLS (rustls, `ring` provider, TLS 1.2 and 1.3) on two of its ports:
//!
//! - the **admin API**: the node presents its certificate; clients (the CLI with `--ca-cert`, a follower
//!   proxying a membership change to the leader) verify it against the cluster CA. The API asks no client
//!   certificate: callers are authenticated by their bearer token, which now travels encrypted.
//! - the **peer network**, mutually: every node presents its certificate *and* requires one from the other
//!   side, signed by the cluster CA ([`NodeTls::peer_server_config`]). A client without one is refused during
//!   the handshake, before a single byte of HTTP is read; the cluster secret is then checked as well (see
//!   `docs/security.md` for why it stays: a second factor, and what names a cluster).
//!
//! One certificate serves both ports and both directions: `tandem cert node` makes one with the server and
//! client extended key usages, for the DNS names and IP addresses the other members and the operators dial.
//!
//! ## Reloading
//!
//! Certificates expire and CAs are rotated, so [`NodeTls::reload`] (called on `SIGHUP`) re-reads the three
//! files and swaps what every TLS configuration uses. The rustls configurations are built once and never
//! replaced: they hold a [`Current`], whose certificate resolver and verifiers read the latest [`Material`]
//! at each handshake. New connections use the new files; connections already open keep the session they
//! negotiated until they close (a pooled peer connection that carries heartbeats never idles out). A reload whose
//! files do not load (half-copied, a key that does not match its certificate, a certificate the CA did not
//! sign) changes nothing: the node keeps serving with what it had, and the error is returned to be logged.
//!
//! To rotate the CA without downtime, `ca` may hold several certificates (old and new CA in one bundle):
//! certificates signed by either are accepted while the nodes move over, one reload at a time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a TLS handshake may take on the peer endpoint before the connection is dropped (the admin API
/// bounds it by its `header_read_timeout`).
pub const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a node's TLS files are (`[tls]` in the config file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate(s), PEM: what a peer's certificate must be signed by (several during a
    /// CA rotation).
    pub ca: PathBuf,
    /// This node's certificate, PEM (then any intermediate certificates).
    pub cert: PathBuf,
    /// This node's private key, PEM (PKCS#8, PKCS#1 or SEC1). Keep it mode 600.
    pub key: PathBuf,
}

/// Why TLS files could not be loaded. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    /// The file parses but is not usable: bad PEM, a key that does not match the certificate, a certificate
    /// the CA did not sign.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl TlsError {
    fn invalid(path: &Path, message: impl fmt::Display) -> Self {
        TlsError::Invalid { path: path.to_owned(), message: message.to_string() }
    }
}

/// The one crypto provider of Tandem: rustls's `ring` (no C++ toolchain, no OpenSSL).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::invalid(path, format!("not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certificates)
}

/// Reads the private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_owned() },
        other => TlsError::invalid(path, format!("not a valid PEM private key: {other}")),
    })
}

/// Reads a CA file into a root store (every certificate of the file is a trust anchor).
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots
            .add(certificate)
            .map_err(|e| TlsError::invalid(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// A client configuration that trusts the CA certificate(s) in `ca` and presents no certificate: what the
/// CLI uses (`--ca-cert`) to reach an admin API over HTTPS.
pub fn client_config_trusting(ca: &Path) -> Result<ClientConfig, TlsError> {
    Ok(client_config_with_roots(read_roots(ca)?))
}

/// A client configuration that trusts the certificates of `roots` and presents none (empty `roots`: HTTPS
/// fails with "unknown issuer", which is what a CLI given no `--ca-cert` gets).
pub fn client_config_with_roots(roots: RootCertStore) -> ClientConfig {
    client_builder(&provider()).with_root_certificates(roots).with_no_client_auth()
}

// The ring provider supports TLS 1.2 and 1.3 with safe cipher suites, so choosing the default versions cannot
// fail: these are the only two `expect`s of the module, on constants, never on input.
fn client_builder(
    provider: &Arc<CryptoProvider>,
) -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
}

fn server_builder(
    provider: &Arc<CryptoProvider>,
) -> rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier> {
    ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
}

/// What one load of the files gave: the node's certificate and key, and the verifiers of the CA.
struct Material {
    key: Arc<CertifiedKey>,
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

impl Material {
    fn load(files: &TlsFiles, provider: &Arc<CryptoProvider>) -> Result<Material, TlsError> {
        let roots = Arc::new(read_roots(&files.ca)?);
        let chain = read_certificates(&files.cert)?;
        let private_key = read_key(&files.key)?;
        let key = CertifiedKey::from_der(chain, private_key, provider).map_err(|e| {
            TlsError::invalid(
                &files.key,
                format!("does not go with the certificate {}: {e}", files.cert.display()),
            )
        })?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::invalid(&files.ca, e))?;
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::invalid(&files.ca, e))?;
        // The node's own certificate must pass the checks its peers will make of it.
        let (end_entity, intermediates) =
            key.cert.split_first().ok_or_else(|| TlsError::NoCertificate { path: files.cert.clone() })?;
        client_verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()).map_err(|e| {
            TlsError::invalid(
                &files.cert,
                format!("is not a valid client certificate of the CA in {}: {e}", files.ca.display()),
            )
        })?;
        Ok(Material { key: Arc::new(key), server_verifier, client_verifier })
    }
}

/// A node's TLS material, reloadable: see the module docs. Cheap to clone (clones share the material).
#[derive(Clone)]
pub struct NodeTls {
    files: Arc<TlsFiles>,
    provider: Arc<CryptoProvider>,
    current: Current,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Loads the files: the key must match the certificate, and the certificate must be signed by the CA.
    pub fn load(files: TlsFiles) -> Result<NodeTls, TlsError> {
        let provider = provider();
        let material = Material::load(&files, &provider)?;
        let current = Current(Arc::new(RwLock::new(Arc::new(material))));
        Ok(NodeTls { files: Arc::new(files), provider, current })
    }

    /// The files this material comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads the files; on success every configuration made by this value uses them for new handshakes,
    /// on failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let material = Material::load(&self.files, &self.provider)?;
        let mut current = self.current.0.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Arc::new(material);
        Ok(())
    }

    /// The certificate this node presents now (DER), first of its chain.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current.get().key.cert[0].clone()
    }

    /// The admin API's server configuration: the node's certificate, no client certificate asked.
    pub fn api_server_config(&self) -> Arc<ServerConfig> {
        let mut config = server_builder(&self.provider)
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.current.clone()));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// The peer endpoint's server configuration: the node's certificate, and a client certificate signed by
    /// the cluster CA required (mutual TLS).
    pub fn peer_server_config(&self) -> Arc<ServerConfig> {
        let mut config = server_builder(&self.provider)
            .with_client_cert_verifier(Arc::new(self.current.clone()))
            .with_cert_resolver(Arc::new(self.current.clone()));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// The client configuration of a node: it verifies the server against the cluster CA and presents its
    /// own certificate when asked (the peer network; the follower's proxy to the leader's API).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let config = client_builder(&self.provider)
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(self.current.clone()))
            .with_client_cert_resolver(Arc::new(self.current.clone()));
        Arc::new(config)
    }
}

/// Completes a server-side handshake on `stream` within `timeout`; the error says why it failed.
pub async fn accept<S>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: S,
    timeout: Duration,
) -> Result<tokio_rustls::server::TlsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(format!("TLS handshake failed: {error}")),
        Err(_) => Err(format!("no TLS handshake within {timeout:?}")),
    }
}

/// The latest [`Material`], behind the traits rustls asks at each handshake.
#[derive(Clone)]
struct Current(Arc<RwLock<Arc<Material>>>);

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Current")
    }
}

impl Current {
    fn get(&self) -> Arc<Material> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().key.clone())
    }
}

impl ResolvesClientCert for Current {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ServerCertVerifier for Current {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.get().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().server_verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().server_verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.get().server_verifier.supported_verify_schemes()
    }
}

impl ClientCertVerifier for Current {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would have to outlive a reload; they are optional, and a node has one certificate anyway.
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.get().client_verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().client_verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().client_verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.get().client_verifier.supported_verify_schemes()
    }
}
