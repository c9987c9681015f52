//! The REST server: accepts connections (plain or TLS), serves the routes
//! on each, and drains them on shutdown.

use std::future::Future;
use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::api;
use crate::broker::Broker;
use crate::config::{Config, TlsFiles};

/// How long shutdown waits for open requests and streams to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS certificate or key could not be loaded.
    #[error("failed to load TLS files: {0}")]
    Tls(String),
    /// The broker could not open its data directory.
    #[error("failed to open the broker: {0}")]
    Broker(#[from] crate::broker::BrokerError),
    /// The listener failed.
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the broker and serves REST on `listener` until `shutdown`
/// completes, then drains connections and closes the logs.
///
/// The listen address in `config` is replaced by the listener's real
/// address, which matters when the configured port was 0.
pub async fn run(
    mut config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    config.listen = listener.local_addr()?;
    let tls = match &config.tls {
        Some(files) => Some(tls_acceptor(files)?),
        None => None,
    };
    let broker = Broker::open(config.clone()).await?;
    let service = warp::service(api::routes(Arc::clone(&broker)));
    let graceful = GracefulShutdown::new();
    let builder = ConnectionBuilder::new(TokioExecutor::new());
    info!(
        listen = %config.listen,
        tls = tls.is_some(),
        data_dir = %config.data_dir.display(),
        "ferry listening"
    );

    tokio::pin!(shutdown);
    let mut accept_backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    accept_backoff = Duration::from_millis(10);
                    accepted
                }
                Err(err) => {
                    // Usually out of file descriptors: wait for some to free up.
                    warn!(error = %err, backoff_ms = accept_backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(accept_backoff).await;
                    accept_backoff = (accept_backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        match &tls {
            None => {
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        debug!(%peer, error = %err, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match acceptor.accept(stream).await {
                        Ok(stream) => stream,
                        Err(err) => {
                            debug!(%peer, error = %err, "TLS handshake failed");
                            return;
                        }
                    };
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    if let Err(err) = watcher.watch(connection).await {
                        debug!(%peer, error = %err, "connection ended with an error");
                    }
                });
            }
        }
    }

    info!("shutting down: draining connections");
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "connections still open after the grace period"
        );
    }
    broker.close();
    info!("ferry stopped");
    Ok(())
}

fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ServerError> {
    let read = |path: &std::path::Path| {
        std::fs::File::open(path)
            .map(BufReader::new)
            .map_err(|err| ServerError::Tls(format!("{}: {err}", path.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| ServerError::Tls(format!("{}: {err}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{}: no PEM certificate found",
            files.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut read(&files.key)?)
        .map_err(|err| ServerError::Tls(format!("{}: {err}", files.key.display())))?
        .ok_or_else(|| {
            ServerError::Tls(format!("{}: no PEM private key found", files.key.display()))
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| ServerError::Tls(err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| ServerError::Tls(err.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
