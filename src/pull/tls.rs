//! The TLS configuration of one HTTP(S) source, built from its remote's
//! `tls-*` settings with an explicit crypto provider (ring).
//!
//! reqwest can build this itself, but only from the process-wide rustls
//! provider (`CryptoProvider::install_default`), which a library must not
//! set: it would decide for every other user of rustls in the process, and
//! it can only be set once. So each client gets its own `ClientConfig`,
//! made here the way reqwest makes its own: the platform's roots (through
//! rustls-platform-verifier) unless `tls-ca-path` names the only trusted
//! roots, an optional client certificate, HTTP/2 offered through ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::store::RemoteTls;

/// PEM files named by `tls-*` settings are read up to this size.
const PEM_LIMIT: usize = 1 << 20;

/// The client configuration for a remote's `tls-*` settings; the error is
/// a message naming the setting at fault.
pub(crate) fn client_config(tls: &RemoteTls) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let builder = if tls.permissive {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else if let Some(ca) = &tls.ca_path {
        let pem = read_pem(ca, "tls-ca-path")?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("tls-ca-path {}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("tls-ca-path {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "tls-ca-path {}: no PEM certificate in it",
                ca.display()
            ));
        }
        builder.with_root_certificates(roots)
    } else {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| format!("cannot load the system's trusted certificates: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    };
    let mut config = match (&tls.client_cert_path, &tls.client_key_path) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let both = || {
                format!(
                    "tls-client-cert-path {} with tls-client-key-path {}",
                    cert.display(),
                    key.display()
                )
            };
            let chain = CertificateDer::pem_slice_iter(&read_pem(cert, "tls-client-cert-path")?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", both()))?;
            if chain.is_empty() {
                return Err(format!(
                    "tls-client-cert-path {}: no PEM certificate in it",
                    cert.display()
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(&read_pem(key, "tls-client-key-path")?)
                .map_err(|e| format!("{}: {e}", both()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}: {e}", both()))?
        }
        _ => {
            return Err("tls-client-cert-path and tls-client-key-path must be set together".into());
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Reads a PEM file named by the setting `option`.
fn read_pem(path: &Path, option: &str) -> Result<Vec<u8>, String> {
    match crate::store::remotes::read_sign_key_file(path, PEM_LIMIT) {
        Ok(Some(data)) if data.len() <= PEM_LIMIT => Ok(data),
        Ok(Some(_)) => Err(format!("{option} {}: larger than 1 MiB", path.display())),
        Ok(None) => Err(format!("{option} {}: no such file", path.display())),
        Err(e) => Err(format!("{option}: {e}")),
    }
}

/// `tls-permissive=true`: any server certificate is accepted (its
/// handshake signatures are still checked, so the peer holds the key of
/// the certificate it shows).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
