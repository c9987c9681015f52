//! The REST server: accepts connections (plain or TLS), serves the routes
//! on each, and drains them on shutdown.

use std::future::Future;
use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::api;
use crate::broker::Broker;
use crate::cluster::mirror_source::ClusterSource;
use crate::cluster::rpc::{self, RpcState};
use crate::cluster::secret::ClusterSecret;
use crate::cluster::state::BrokerInfo;
use crate::cluster::Cluster;
use crate::config::{ClusterConfig, Config, TlsFiles};
use crate::mirror::{self, BrokerSource, MirrorLock, MirrorStatus};

/// How long a client may take to send a request's headers, also the idle
/// time allowed between requests on a kept-alive connection.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long shutdown waits for open requests and streams to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS certificate or key could not be loaded.
    #[error("failed to load TLS files: {0}")]
    Tls(String),
    /// The broker could not open its data directory.
    #[error("failed to open the broker")]
    Broker(#[from] crate::broker::BrokerError),
    /// The listener failed.
    #[error("listener error")]
    Io(#[from] std::io::Error),
    /// The broker could not join its cluster.
    #[error("failed to join the cluster: {0}")]
    Cluster(String),
}

/// A broker with its REST listener, ready to serve.
pub struct Server {
    config: Config,
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: Option<TlsAcceptor>,
    cluster: Option<ClusterParts>,
    mirror: Option<Arc<MirrorStatus>>,
}

/// The cluster side of a running broker.
struct ClusterParts {
    cluster: Arc<Cluster>,
    rpc: Arc<RpcState>,
    /// The cluster's name as the owner of a mirror database.
    owner: String,
}

impl Server {
    /// Loads the TLS files and opens the broker (recovering its logs).
    ///
    /// The listen address in the configuration is replaced by the
    /// listener's real address, which matters when the configured port
    /// was 0.
    pub async fn open(mut config: Config, listener: TcpListener) -> Result<Server, ServerError> {
        config.listen = listener.local_addr()?;
        let tls = match &config.tls {
            Some(files) => Some(tls_acceptor(files)?),
            None => None,
        };
        let broker = Broker::open(config.clone()).await?;
        let cluster = match &config.cluster {
            Some(settings) => Some(join_cluster(&config, settings, &broker).await?),
            None => None,
        };
        let mirror = match config.mysql_url.clone() {
            None => None,
            Some(url) => Some(match &cluster {
                None => mirror::start(
                    BrokerSource::new(&broker),
                    url,
                    MirrorLock::Alone,
                    mirror::broker_owner(&config.data_dir)?,
                ),
                Some(parts) => mirror::start(
                    ClusterSource::new(&parts.cluster),
                    url,
                    MirrorLock::Cluster {
                        view: parts.cluster.coordinator.subscribe(),
                        me: parts.cluster.broker_id(),
                    },
                    parts.owner.clone(),
                ),
            }),
        };
        Ok(Server {
            config,
            listener,
            broker,
            tls,
            cluster,
            mirror,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.config.listen
    }

    /// Serves REST until `shutdown` completes, then drains connections
    /// and closes the logs.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            config,
            listener,
            broker,
            tls,
            cluster,
            mirror,
        } = self;
        serve(config, listener, broker, tls, cluster, mirror, shutdown).await
    }
}

/// Starts the gRPC server and joins the cluster.
async fn join_cluster(
    config: &Config,
    settings: &ClusterConfig,
    broker: &Arc<Broker>,
) -> Result<ClusterParts, ServerError> {
    let secret = ClusterSecret::load(&settings.secret_file)
        .map_err(|err| ServerError::Cluster(err.to_string()))?;
    crate::cluster::zk::verify_secret(settings, &secret.verifier)
        .await
        .map_err(|err| ServerError::Cluster(err.to_string()))?;
    let rpc = Arc::new(RpcState::default());
    let (grpc_address, serve_grpc) = rpc::bind(settings.grpc_listen, &secret, Arc::clone(&rpc))
        .await
        .map_err(|err| {
            ServerError::Cluster(format!(
                "failed to listen on {}: {err}",
                settings.grpc_listen
            ))
        })?;
    tokio::spawn(serve_grpc);
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let me = BrokerInfo {
        id: settings.broker_id,
        grpc: settings
            .advertise
            .clone()
            .unwrap_or_else(|| grpc_address.to_string()),
        rest: format!("{scheme}://{}", config.listen),
    };
    let cluster = Cluster::start(Arc::clone(broker), settings.clone(), &secret, me);
    let _ = rpc.cluster.set(Arc::clone(&cluster));
    Ok(ClusterParts {
        cluster,
        rpc,
        owner: mirror::cluster_owner(&secret.verifier),
    })
}

async fn serve(
    config: Config,
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: Option<TlsAcceptor>,
    cluster: Option<ClusterParts>,
    mirror: Option<Arc<MirrorStatus>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let routes = api::routes(
        Arc::clone(&broker),
        cluster.as_ref().map(|parts| Arc::clone(&parts.cluster)),
        mirror,
    );
    if let Some(parts) = &cluster {
        let _ = parts.rpc.http.set(api::loopback::handler(routes.clone()));
    }
    let service = warp::service(routes);
    let graceful = GracefulShutdown::new();
    let mut builder = ConnectionBuilder::new(TokioExecutor::new());
    // Without a timer hyper enforces no header timeout, and a client that
    // never finishes its headers would hold a connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    info!(
        listen = %config.listen,
        tls = tls.is_some(),
        data_dir = %config.data_dir.display(),
        fsync = ?config.fsync,
        segment_bytes = config.segment_bytes,
        max_message_bytes = config.max_message_bytes,
        max_request_bytes = config.max_request_bytes,
        token_ttl_secs = config.token_ttl.as_secs(),
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
    broker.begin_shutdown();
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
