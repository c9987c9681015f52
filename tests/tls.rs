//! TLS on the REST listener, and the refusal to serve plain HTTP on a
//! non-loopback address.

mod common;

use std::process::Command;

use common::BrokerProcess;

#[tokio::test]
async fn serves_https_with_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    // openssl comes with Debian's base system; it only makes the test files.
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed to make a test certificate");
    assert!(
        status.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );

    let data = dir.path().join("data");
    let broker = BrokerProcess::start(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(broker.url.starts_with("https://"), "{}", broker.url);
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/healthz", broker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Plain HTTP to the TLS port gets no answer.
    let plain = broker.url.replacen("https", "http", 1);
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());
}

#[test]
fn plain_http_on_public_address_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure"), "stderr: {stderr}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was written before refusing"
    );
}
