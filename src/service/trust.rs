//! Which certificate authorities HTTPS connections trust, as the AWS CLI decides: the file named by
//! `AWS_CA_BUNDLE`, else by `ca_bundle` in the selected profile of the shared config file
//! (`~/.aws/config`, `AWS_CONFIG_FILE`, `AWS_PROFILE`), replaces the system's store; without
//! either, the system's store is used. Users behind TLS-inspecting proxies need it. The bundle is
//! read and checked once at start, so a wrong path or a file without certificates is a
//! configuration error naming the file, not a TLS failure at every request.

use std::path::{Path, PathBuf};

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A CA bundle to trust instead of the system's store.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub path: PathBuf,
    /// `AWS_CA_BUNDLE`, or `ca_bundle of profile default in ~/.aws/config`.
    pub from: String,
    pub pem: Vec<u8>,
    pub certificates: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{path} (from {from}): {problem}; it should hold the PEM certificates of the authorities to trust")]
pub struct CaBundleError {
    pub path: PathBuf,
    pub from: String,
    pub problem: String,
}

/// The bundle configured for this process, read and checked; `None`: the system's store.
pub async fn configured() -> Result<Option<CaBundle>, CaBundleError> {
    if let Some(path) = std::env::var_os("AWS_CA_BUNDLE").filter(|p| !p.is_empty()) {
        return read(Path::new(&path), "AWS_CA_BUNDLE".into()).map(Some);
    }
    let fs = aws_types::os_shim_internal::Fs::real();
    let env = aws_types::os_shim_internal::Env::real();
    let files = aws_runtime::env_config::file::EnvConfigFiles::default();
    // A shared config file that cannot be read or parsed is the SDK's to report.
    let Ok(profiles) = aws_config::profile::load(&fs, &env, &files, None).await else { return Ok(None) };
    let Some(path) = profiles.get("ca_bundle").filter(|p| !p.trim().is_empty()) else { return Ok(None) };
    let from = format!("ca_bundle of profile {} in the shared config file", profiles.selected_profile());
    read(&expand_home(path.trim()), from).map(Some)
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Reads `path` and checks that it holds at least one PEM certificate, each of them parsable.
pub fn read(path: &Path, from: String) -> Result<CaBundle, CaBundleError> {
    let error = |problem: String| CaBundleError { path: path.to_path_buf(), from: from.clone(), problem };
    let pem = std::fs::read(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let mut certificates = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| error(format!("certificate {} is not valid PEM: {e}", certificates + 1)))?;
        webpki_check(&cert).map_err(|e| error(format!("certificate {} cannot be used: {e}", certificates + 1)))?;
        certificates += 1;
    }
    if certificates == 0 {
        return Err(error("it holds no `-----BEGIN CERTIFICATE-----` block".into()));
    }
    Ok(CaBundle { path: path.to_path_buf(), from, pem, certificates })
}

/// The check the TLS library makes when the certificate is added as a trust anchor (it panics
/// there on a certificate it cannot use).
fn webpki_check(cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone())
}

/// The HTTPS client of every AWS call when a bundle is configured: the SDK's default client (rustls
/// with aws-lc, proxies from the environment), trusting only the bundle.
pub fn https_client(bundle: &CaBundle) -> SharedHttpClient {
    let trust = TrustStore::empty().with_pem_certificate(bundle.pem.clone());
    let tls =
        TlsContext::builder().with_trust_store(trust).build().expect("a trust store without native roots is valid");
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut b =
            ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc)).tls_context(tls.clone());
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        b.set_proxy_config(Some(ProxyConfig::from_env()));
        b.build()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bundles_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = read(&missing, "AWS_CA_BUNDLE".into()).unwrap_err();
        assert!(e.to_string().contains("missing.pem (from AWS_CA_BUNDLE): cannot read it"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = read(&empty, "AWS_CA_BUNDLE".into()).unwrap_err();
        assert!(e.to_string().contains("holds no `-----BEGIN CERTIFICATE-----` block"), "{e}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nMIIB!!!\n-----END CERTIFICATE-----\n").unwrap();
        let e = read(&broken, "AWS_CA_BUNDLE".into()).unwrap_err();
        assert!(e.to_string().contains("certificate 1"), "{e}");
    }
}
