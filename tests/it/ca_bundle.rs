//! `AWS_CA_BUNDLE` and `ca_bundle` (TLS-inspecting proxies, private CAs): the real binary ships to
//! kinesalite behind an HTTPS front whose certificate a throwaway CA signed. With the CA's bundle
//! (from the variable, or from the profile in the shared config file) every line arrives; without
//! it the endpoint's certificate is not trusted and the error says what to set; a bundle that
//! cannot be used stops the start with the file named.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

/// An HTTPS listener on 127.0.0.1 forwarding every connection to `target` (plain HTTP). Returns
/// its port and the CA certificate (PEM) that signed its certificate.
async fn https_front(target: u16) -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "kinesis-agent test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    server.is_ca = IsCa::ExplicitNoCa;
    server.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = server.signed_by(&key, &ca).unwrap();
    let chain = vec![cert.der().clone(), ca.der().clone()];
    let key = rustls_key(key.serialize_der());
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake: nothing to do.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = TcpStream::connect(("127.0.0.1", target)).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, ca.pem())
}

fn rustls_key(der: Vec<u8>) -> tokio_rustls::rustls::pki_types::PrivateKeyDer<'static> {
    tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(der.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_bundle_is_trusted_and_a_missing_one_is_named() {
    let peer = Peer::start(PeerKind::Kinesalite);
    let client = kinesis_client(&peer.endpoint());
    let stream = unique_name("tls");
    bounded(30, "create stream", create_stream(&client, &stream, 1)).await;
    let (port, ca_pem) = https_front(peer.port()).await;
    let ws = Workspace::new();
    let bundle = ws.root.join("corporate-ca.pem");
    std::fs::write(&bundle, &ca_pem).unwrap();
    let file = ws.file("app.log");
    ws.write_config(json!({
        "kinesis.endpoint": format!("https://127.0.0.1:{port}"),
        "kinesis.region": TEST_REGION,
        "flows": [{ "filePattern": ws.pattern("app.log"), "kinesisStream": stream, "initialPosition": "START_OF_FILE" }],
    }));
    let run_as = |once: bool, env: Vec<(&str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut p = AgentProcess::spawn_in(&ws.home, ws.args(once, &[]), &env);
        let status = p.wait_exit(Duration::from_secs(60));
        (status.code(), p.log())
    };
    let run = |env| run_as(true, env);

    // Without the bundle: the certificate is not trusted, a fatal error: --once gives up at once
    // (exit 1) and says what to set.
    write_lines(&file, 0..100, "T");
    let (code, log) = run(vec![]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("CertificateNotTrusted") && log.contains("set AWS_CA_BUNDLE"), "{log}");

    // AWS_CA_BUNDLE: every line arrives, and the log says which file is trusted.
    let (code, log) = run(vec![("AWS_CA_BUNDLE", bundle.display().to_string())]);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains(&format!("HTTPS trusts only the 1 certificate(s) of {}", bundle.display())), "{log}");
    let got = read_all(&client, &stream).await;
    assert_exactly_once(expected_lines(0..100, "T"), &data_of(&got));

    // `ca_bundle` in the selected profile of the shared config file (with `~/`).
    std::fs::copy(&bundle, ws.home.join("ca.pem")).unwrap();
    let aws_config = ws.root.join("aws-config");
    std::fs::write(&aws_config, "[default]\nregion = us-east-1\n\n[profile corp]\nca_bundle = ~/ca.pem\n").unwrap();
    append_bytes(&file, expected_lines(100..200, "T").map(|l| l + "\n").collect::<String>().as_bytes());
    let (code, log) =
        run(vec![("AWS_CONFIG_FILE", aws_config.display().to_string()), ("AWS_PROFILE", "corp".to_string())]);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("ca_bundle of profile corp"), "{log}");
    let got = read_all(&client, &stream).await;
    assert_exactly_once(expected_lines(0..200, "T"), &data_of(&got));

    // A bundle that cannot be used stops the daemon's start (a configuration error, 78), naming
    // the file.
    let wrong = ws.root.join("not-a-bundle.pem");
    std::fs::write(&wrong, "hello\n").unwrap();
    let (code, log) = run_as(false, vec![("AWS_CA_BUNDLE", wrong.display().to_string())]);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("not-a-bundle.pem (from AWS_CA_BUNDLE)") && log.contains("BEGIN CERTIFICATE"), "{log}");
}
