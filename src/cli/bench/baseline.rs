//! The `--baseline` target: an in-process HTTP server on the broker's stack
//! (warp filters served by hyper through hyper-util, `TCP_NODELAY` on every
//! connection) whose one handler reads the body and answers a fixed
//! `{"offsets":[]}`. Measured with the same load, it gives the cost of HTTP
//! and JSON framing alone, without any broker work.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use warp::http::{header, HeaderValue};
use warp::reply::Response;
use warp::Filter;

/// The broker's default maximum request body, in bytes, so that the
/// baseline rejects the same oversized batches.
const MAX_REQUEST_BYTES: u64 = 16 << 20;

/// A running baseline server; dropping it stops accepting connections.
pub struct BaselineServer {
    /// The address it listens on, on the loopback interface.
    pub address: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl BaselineServer {
    /// Starts the server on a free loopback port.
    pub async fn start() -> std::io::Result<BaselineServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let routes = warp::post()
            .and(warp::body::content_length_limit(MAX_REQUEST_BYTES))
            .and(warp::body::bytes())
            .map(|_body: Bytes| {
                let mut response = Response::new(r#"{"offsets":[]}"#.into());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            });
        let service = warp::service(routes);
        let builder = ConnectionBuilder::new(TokioExecutor::new());

        let accept_task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _peer)) => stream,
                    Err(err) => {
                        tracing::warn!(error = %err, "baseline server: accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(service);
                let builder = builder.clone();
                tokio::spawn(async move {
                    if let Err(err) = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(error = %err, "baseline connection ended with an error");
                    }
                });
            }
        });
        Ok(BaselineServer {
            address,
            accept_task,
        })
    }

    /// Returns the base URL of the server.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for BaselineServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}
