//! Building the rustls server configuration from the PEM files, and rebuilding it when they
//! change.
//!
//! The files are polled ([`crate::file_change`]: a file replaced by rename, as Kubernetes does
//! with Secret volumes, counts as changed). When any changed, the whole configuration is rebuilt from all of them; a rebuild that fails (a
//! half-written file, a key that does not match the certificate, ...) is logged and the
//! previous configuration keeps serving until the files change again.

use std::{
    path::Path,
    sync::{Arc, PoisonError, atomic::Ordering},
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use tokio_util::sync::CancellationToken;

use super::{LoadedTls, TlsConfig, TlsError};
use crate::file_change::Poller;

/// Builds the server configuration from the files named in `files`, and the client
/// certificate verifier in it (mTLS), which [`super::ServerTls::still_trusts`] applies to the
/// certificates of established connections.
///
/// # Errors
/// A [`TlsError`] naming the setting whose file is unreadable or unusable.
pub fn load(files: &TlsConfig) -> Result<(ServerConfig, Option<Arc<dyn ClientCertVerifier>>), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("tls_cert", format!("no usable TLS protocol version: {e}")))?;
    let builder = match &files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("tls_client_ca", path)? {
                roots.add(cert).map_err(|e| {
                    TlsError::new("tls_client_ca", format!("{}: unusable CA certificate: {e}", path.display()))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::new("tls_client_ca", format!("{}: {e}", path.display())))?;
            (builder.with_client_cert_verifier(verifier.clone()), Some(verifier))
        }
        None => (builder.with_no_client_auth(), None),
    };
    let (builder, verifier) = builder;
    let chain = certificates("tls_cert", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        TlsError::new("tls_key", format!("{}: no usable PEM private key: {}", files.key.display(), pem_error(&e)))
    })?;
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InvalidCertificate(e) => {
            TlsError::new("tls_cert", format!("{}: unusable certificate: {e}", files.cert.display()))
        }
        rustls::Error::InconsistentKeys(_) => TlsError::new(
            "tls_key",
            format!("{} is not the key of the certificate in {}", files.key.display(), files.cert.display()),
        ),
        other => TlsError::new("tls_key", format!("{}: unusable private key: {other}", files.key.display())),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, verifier))
}

/// The certificates in the PEM file `path` (at least one).
fn certificates(setting: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::new(setting, format!("{}: {}", path.display(), pem_error(&e))))?;
    if certs.is_empty() {
        return Err(TlsError::new(setting, format!("{}: no PEM CERTIFICATE in the file", path.display())));
    }
    Ok(certs)
}

fn pem_error(err: &rustls::pki_types::pem::Error) -> String {
    match err {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no matching PEM section".into(),
        other => other.to_string(),
    }
}

/// Polls the files until `shutdown`, swapping in a new configuration after each change.
/// Watching starts when this is called, not when the future is first polled.
pub(super) fn watch(shared: Arc<LoadedTls>, shutdown: CancellationToken) -> impl Future<Output = ()> {
    let files = &shared.files;
    let paths = [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()];
    let poller = Poller::new(paths.into_iter().flatten().cloned().collect());
    follow(shared, poller, shutdown)
}

async fn follow(shared: Arc<LoadedTls>, mut poller: Poller, shutdown: CancellationToken) {
    while poller.changed(&shutdown).await {
        let files = shared.files.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&files)).await;
        match loaded {
            Ok(Ok((config, verifier))) => {
                *shared.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new((Arc::new(config), verifier));
                shared.reloads.fetch_add(1, Ordering::Relaxed);
                // Streams of connections whose certificate the new client CA no longer trusts
                // end (see `ServerTls::still_trusts`).
                shared.generation.send_modify(|generation| *generation += 1);
                tracing::info!("TLS certificate files changed; new connections use the new configuration");
            }
            Ok(Err(err)) => {
                shared.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "TLS certificate files changed but cannot be used; keeping the previous configuration");
            }
            Err(err) => {
                shared.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %err, "TLS reload task failed; keeping the previous configuration");
            }
        }
    }
}
