//! TLS for the QUIC transports: the relay's certificate (PEM files, or a
//! self-signed one generated once, stored and reused), and the client's
//! trust (a pinned DER certificate, a CA file, or the system roots).
//! ring is the only crypto provider.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The ALPN protocol id of lanparty's QUIC transport.
pub const ALPN: &[u8] = b"lanparty/1";

/// Where the system's CA bundle is looked for (Debian/Ubuntu, Fedora/RHEL,
/// Alpine, openSUSE).
pub const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// A TLS set-up problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn err(message: impl Into<String>) -> TlsError {
    TlsError(message.into())
}

/// The crypto provider: ring, with AES-128-GCM preferred. Every frame is
/// sealed and opened twice on its way through a relay, and AES-128 (10
/// rounds) does that faster than ring's default first choice AES-256 (14
/// rounds) with the same AEAD; it is QUIC's mandatory suite (RFC 9001) and
/// its Initial packets' already. Only TLS 1.3 suites: QUIC has no other.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// A certificate chain and its private key.
pub struct Identity {
    /// The chain, end-entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Loads a PEM certificate chain and a PEM private key.
pub fn load_pem_identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| {
            err(format!(
                "cannot read certificate chain {}: {e}",
                cert.display()
            ))
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(format!(
                "{}: not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(err(format!(
            "{}: no CERTIFICATE block found",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        err(format!(
            "cannot read private key {}: {e} (expected a PEM PRIVATE KEY block)",
            key.display()
        ))
    })?;
    Ok(Identity { chain, key })
}

/// The files of a stored self-signed identity.
#[derive(Debug, Clone)]
pub struct SelfSignedFiles {
    /// The certificate, DER: the file players pin.
    pub cert_der: PathBuf,
    /// The private key, PKCS#8 DER, readable by the owner only.
    pub key_der: PathBuf,
}

impl SelfSignedFiles {
    /// `relay-cert.der` and `relay-key.der` in `dir`.
    pub fn in_dir(dir: &Path) -> SelfSignedFiles {
        SelfSignedFiles {
            cert_der: dir.join("relay-cert.der"),
            key_der: dir.join("relay-key.der"),
        }
    }
}

/// Generates a new self-signed certificate for `names` and writes it (key
/// with mode 0600). Refuses to overwrite existing files.
pub fn generate_self_signed(
    files: &SelfSignedFiles,
    names: &[String],
) -> Result<Identity, TlsError> {
    for path in [&files.cert_der, &files.key_der] {
        if path.exists() {
            return Err(err(format!(
                "{} already exists; remove it first to make a new certificate (players pinning the old one will have to update)",
                path.display()
            )));
        }
    }
    let identity = ephemeral_identity(names)?;
    if let Some(dir) = files.cert_der.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    }
    write_private(&files.key_der, identity.key.secret_der())?;
    std::fs::write(&files.cert_der, &identity.chain[0])
        .map_err(|e| err(format!("cannot write {}: {e}", files.cert_der.display())))?;
    Ok(identity)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(bytes)
        .map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

/// A self-signed identity that lives in memory only (tests, benchmarks).
pub fn ephemeral_identity(names: &[String]) -> Result<Identity, TlsError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| err(format!("cannot generate a certificate: {e}")))?;
    Ok(Identity {
        chain: vec![certified.cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        )),
    })
}

/// Loads the stored self-signed identity, generating it on first use.
/// Returns the identity and whether it was generated now.
pub fn load_or_generate_self_signed(
    files: &SelfSignedFiles,
    names: &[String],
) -> Result<(Identity, bool), TlsError> {
    match (files.cert_der.exists(), files.key_der.exists()) {
        (true, true) => {
            let cert = std::fs::read(&files.cert_der)
                .map_err(|e| err(format!("cannot read {}: {e}", files.cert_der.display())))?;
            let key = std::fs::read(&files.key_der)
                .map_err(|e| err(format!("cannot read {}: {e}", files.key_der.display())))?;
            Ok((
                Identity {
                    chain: vec![CertificateDer::from(cert)],
                    key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
                },
                false,
            ))
        }
        (false, false) => generate_self_signed(files, names).map(|id| (id, true)),
        _ => Err(err(format!(
            "only one of {} and {} exists; restore the other or remove both to generate a new certificate",
            files.cert_der.display(),
            files.key_der.display()
        ))),
    }
}

/// A quinn client config: TLS trusting `trust`, and `transport`.
pub fn quic_client_config(
    trust: &Trust,
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_config(trust)?)
        .map_err(|e| err(format!("TLS for QUIC: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A quinn server config: TLS with `identity`, and `transport`.
pub fn quic_server_config(
    identity: Identity,
    transport: quinn::TransportConfig,
) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_config(identity)?)
        .map_err(|e| err(format!("TLS for QUIC: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A rustls server config for the relay.
pub fn server_config(identity: Identity) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(format!("TLS set-up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| {
            err(format!(
                "the certificate and key do not form a usable identity: {e}"
            ))
        })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// How a client decides to trust the relay.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Exactly this end-entity certificate (DER), e.g. the relay's
    /// self-signed one. The signature is still checked against its key.
    Pinned(CertificateDer<'static>),
    /// Certificates issued by these CAs.
    Roots(Vec<CertificateDer<'static>>),
}

/// Reads a DER certificate to pin.
pub fn load_pinned(path: &Path) -> Result<Trust, TlsError> {
    let der = std::fs::read(path).map_err(|e| {
        err(format!(
            "cannot read pinned certificate {}: {e}",
            path.display()
        ))
    })?;
    if der.first() != Some(&0x30) {
        return Err(err(format!(
            "{} is not a DER certificate (a PEM file? use `ca:` for PEM, or convert with `openssl x509 -outform der`)",
            path.display()
        )));
    }
    Ok(Trust::Pinned(CertificateDer::from(der)))
}

/// Reads CA certificates from a PEM file.
pub fn load_ca_file(path: &Path) -> Result<Trust, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read CA file {}: {e}", path.display())))?
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(err(format!("{}: no CA certificates found", path.display())));
    }
    Ok(Trust::Roots(certs))
}

/// The system's CA bundle.
pub fn load_system_roots() -> Result<Trust, TlsError> {
    SYSTEM_CA_FILES
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| {
            err(format!(
                "no system CA bundle found (looked in {}); install ca-certificates or set `trust:`",
                SYSTEM_CA_FILES.join(", ")
            ))
        })
        .and_then(load_ca_file)
}

/// A rustls client config for the given trust.
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(format!("TLS set-up: {e}")))?;
    let mut config = match trust {
        Trust::Pinned(cert) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                cert: cert.clone(),
                provider,
            }))
            .with_no_client_auth(),
        Trust::Roots(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
            if added == 0 {
                return Err(err("none of the CA certificates could be used"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Accepts exactly one end-entity certificate, and still checks that the
/// peer holds its key (the handshake signature).
#[derive(Debug)]
struct PinnedVerifier {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the relay's certificate is not the pinned one".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        None
    }
}
