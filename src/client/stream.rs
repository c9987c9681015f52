//! WebSocket push streams of subscriptions and queues.
//!
//! The broker sends nothing until the client grants credit: after
//! [`MessageStream::credit`] with `n`, it pushes at most `n` more messages.
//! Subscription messages are acked by offset, which commits the offset after
//! each one; queue deliveries are acked or nacked by id. When the socket
//! closes, the broker takes back the pushed messages that were not acked:
//! queue leases are released, and a subscription rewinds to its oldest
//! unacked message.

use std::collections::VecDeque;

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::client::error::error_chain;
use crate::client::types::{Acked, Message, Nacked, PartitionOffset};
use crate::client::{api_error, endpoint, BrokerFailure, Client, ClientError};

/// An open push stream. Messages that arrive while an ack waits for its
/// reply are kept and returned by later [`MessageStream::next_message`]
/// calls, in order.
pub struct MessageStream {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The stream URL, for errors.
    url: String,
    /// Messages read while waiting for an ack reply.
    buffered: VecDeque<Message>,
}

/// A frame from the broker.
enum ServerFrame {
    Message(Box<Message>),
    /// An `acked` or `nacked` reply, as sent.
    Settled {
        kind: String,
        body: Value,
    },
    Error {
        code: String,
        message: String,
    },
}

/// A frame to the broker.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientFrame<'a> {
    Credit {
        n: u64,
    },
    Ack {
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        ids: &'a [String],
        #[serde(skip_serializing_if = "<[PartitionOffset]>::is_empty")]
        offsets: &'a [PartitionOffset],
    },
    Nack {
        ids: &'a [String],
        requeue: bool,
    },
}

impl Client {
    /// Opens the push stream of a subscription: `GET
    /// /v1/topics/{topic}/subscriptions/{subscription}/stream`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] when the broker refuses the upgrade, e.g.
    /// `not_found` for an unknown subscription.
    pub async fn subscribe(
        &self,
        topic: &str,
        subscription: &str,
    ) -> Result<MessageStream, ClientError> {
        self.open_stream(&[
            "v1",
            "topics",
            topic,
            "subscriptions",
            subscription,
            "stream",
        ])
        .await
    }

    /// Opens the push stream of a queue: `GET /v1/queues/{queue}/stream`.
    pub async fn stream_queue(&self, queue: &str) -> Result<MessageStream, ClientError> {
        self.open_stream(&["v1", "queues", queue, "stream"]).await
    }

    /// Connects to the first broker that completes the WebSocket handshake.
    /// Opening a stream changes nothing on the broker, so, as for a GET, any
    /// failure before the upgrade moves on to the next broker.
    async fn open_stream(&self, segments: &[&str]) -> Result<MessageStream, ClientError> {
        let count = self.brokers.urls.len();
        let start = self
            .brokers
            .current
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut failures = Vec::new();
        for attempt in 0..count {
            let index = (start + attempt) % count;
            let base = &self.brokers.urls[index];
            let url = websocket_url(&endpoint(base, segments));

            let mut request =
                url.as_str()
                    .into_client_request()
                    .map_err(|err| ClientError::InvalidUrl {
                        url: url.to_string(),
                        reason: err.to_string(),
                    })?;
            if let Some(value) = self.authorization()? {
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            let connector = self
                .websocket_tls
                .as_ref()
                .map(|config| Connector::Rustls(config.clone()));

            match tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector)
                .await
            {
                Ok((socket, _response)) => {
                    self.brokers
                        .current
                        .store(index, std::sync::atomic::Ordering::Relaxed);
                    return Ok(MessageStream {
                        socket,
                        url: url.to_string(),
                        buffered: VecDeque::new(),
                    });
                }
                Err(WsError::Http(response)) => {
                    let body = response.body().as_deref().unwrap_or_default();
                    return Err(api_error(response.status(), body));
                }
                Err(err) => failures.push(BrokerFailure {
                    broker: base.to_string(),
                    error: error_chain(&err),
                }),
            }
        }
        Err(ClientError::Unreachable { failures })
    }
}

impl MessageStream {
    /// Grants the broker `n` more messages.
    pub async fn credit(&mut self, n: u64) -> Result<(), ClientError> {
        self.send(&ClientFrame::Credit { n }).await
    }

    /// Returns the next pushed message, or `None` once the broker closed the
    /// stream.
    ///
    /// Cancel-safe: dropping the future before it completes loses no
    /// message, so it can be used in `tokio::select!`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Stream`] when the broker sends an error frame.
    pub async fn next_message(&mut self) -> Result<Option<Message>, ClientError> {
        if let Some(message) = self.buffered.pop_front() {
            return Ok(Some(message));
        }
        loop {
            match self.read_frame().await? {
                None => return Ok(None),
                Some(ServerFrame::Message(message)) => return Ok(Some(*message)),
                // The reply of an ack whose caller stopped waiting for it.
                Some(ServerFrame::Settled { .. }) => continue,
                Some(ServerFrame::Error { code, message }) => {
                    return Err(ClientError::Stream { code, message })
                }
            }
        }
    }

    /// Acks queue deliveries by id and waits for the broker's reply.
    pub async fn ack_ids(&mut self, ids: &[String]) -> Result<Acked, ClientError> {
        self.send(&ClientFrame::Ack { ids, offsets: &[] }).await?;
        let body = self.wait_for_reply("acked").await?;
        self.parse_reply(body)
    }

    /// Nacks queue deliveries by id and waits for the broker's reply; with
    /// `requeue` the messages are ready for delivery again at once.
    pub async fn nack_ids(&mut self, ids: &[String], requeue: bool) -> Result<Nacked, ClientError> {
        self.send(&ClientFrame::Nack { ids, requeue }).await?;
        let body = self.wait_for_reply("nacked").await?;
        self.parse_reply(body)
    }

    /// Acks subscription messages by partition and offset and waits for the
    /// broker's reply. The broker commits `offset + 1` for each entry, and
    /// this returns those committed offsets.
    pub async fn ack_offsets(
        &mut self,
        offsets: &[PartitionOffset],
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        self.send(&ClientFrame::Ack { ids: &[], offsets }).await?;
        let mut body = self.wait_for_reply("acked").await?;
        let committed = body.get_mut("offsets").map(Value::take);
        self.parse_reply(committed.unwrap_or(Value::Array(Vec::new())))
    }

    /// Closes the stream. The broker takes back unacked messages, as the
    /// module documentation describes.
    pub async fn close(mut self) -> Result<(), ClientError> {
        match self.socket.close(None).await {
            Ok(()) | Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => Ok(()),
            Err(err) => Err(self.error(err)),
        }
    }

    async fn send(&mut self, frame: &ClientFrame<'_>) -> Result<(), ClientError> {
        let text = serde_json::to_string(frame).expect("client frames always serialize");
        self.socket
            .send(WsMessage::text(text))
            .await
            .map_err(|err| self.error(err))
    }

    /// Reads frames until the reply of kind `kind`, keeping messages that
    /// arrive before it.
    async fn wait_for_reply(&mut self, kind: &str) -> Result<Value, ClientError> {
        loop {
            match self.read_frame().await? {
                None => return Err(self.error(WsError::ConnectionClosed)),
                Some(ServerFrame::Message(message)) => self.buffered.push_back(*message),
                Some(ServerFrame::Settled {
                    kind: reply_kind,
                    body,
                }) if reply_kind == kind => return Ok(body),
                Some(ServerFrame::Settled { kind: other, .. }) => {
                    return Err(ClientError::UnexpectedFrame(format!(
                        "a `{other}` reply arrived while waiting for `{kind}`"
                    )))
                }
                Some(ServerFrame::Error { code, message }) => {
                    return Err(ClientError::Stream { code, message })
                }
            }
        }
    }

    fn parse_reply<T: serde::de::DeserializeOwned>(&self, body: Value) -> Result<T, ClientError> {
        serde_json::from_value(body).map_err(|source| ClientError::Decode {
            url: self.url.clone(),
            source,
        })
    }

    /// Reads and parses the next text frame. Returns `None` once the stream
    /// is closed.
    async fn read_frame(&mut self) -> Result<Option<ServerFrame>, ClientError> {
        loop {
            let message = match self.socket.next().await {
                None => return Ok(None),
                Some(Ok(message)) => message,
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Ok(None),
                Some(Err(err)) => return Err(self.error(err)),
            };
            let text = match message {
                WsMessage::Text(text) => text,
                WsMessage::Close(_) => return Ok(None),
                // The WebSocket layer responds to pings, and the broker
                // sends no binary frames.
                _ => continue,
            };
            return parse_frame(text.as_str()).map(Some);
        }
    }

    fn error(&self, source: WsError) -> ClientError {
        ClientError::WebSocket {
            url: self.url.clone(),
            source: Box::new(source),
        }
    }
}

/// Parses a frame by its `type` member.
fn parse_frame(text: &str) -> Result<ServerFrame, ClientError> {
    let unexpected = || ClientError::UnexpectedFrame(text.chars().take(200).collect());
    let mut value: Value = serde_json::from_str(text).map_err(|_| unexpected())?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(unexpected)?
        .to_string();
    match kind.as_str() {
        "message" => {
            let message: Message = serde_json::from_value(value).map_err(|_| unexpected())?;
            Ok(ServerFrame::Message(Box::new(message)))
        }
        "acked" | "nacked" => Ok(ServerFrame::Settled { kind, body: value }),
        "error" => {
            let error = value.get_mut("error").map(Value::take).unwrap_or_default();
            let field = |name: &str| {
                error
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_string()
            };
            Ok(ServerFrame::Error {
                code: field("code"),
                message: field("message"),
            })
        }
        _ => Err(unexpected()),
    }
}

/// Converts an `http` or `https` URL to its `ws` or `wss` form.
fn websocket_url(url: &Url) -> Url {
    let mut url = url.clone();
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .expect("http and https URLs can switch to ws and wss");
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_by_type() {
        let message = parse_frame(
            r#"{"type":"message","id":"0-1","delivery_count":1,"partition":0,"offset":3,"timestamp":1,"producer":"al","headers":{},"value":"x"}"#,
        )
        .unwrap();
        match message {
            ServerFrame::Message(message) => {
                assert_eq!(message.offset, 3);
                assert_eq!(message.id.as_deref(), Some("0-1"));
            }
            _ => panic!("expected a message frame"),
        }

        let error =
            parse_frame(r#"{"type":"error","error":{"code":"invalid_argument","message":"bad"}}"#)
                .unwrap();
        assert!(matches!(error, ServerFrame::Error { code, .. } if code == "invalid_argument"));

        assert!(parse_frame(r#"{"type":"surprise"}"#).is_err());
    }

    #[test]
    fn ack_frames_leave_out_empty_lists() {
        let ids = ["0-1".to_string()];
        let frame = ClientFrame::Ack {
            ids: &ids,
            offsets: &[],
        };
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"type":"ack","ids":["0-1"]}"#
        );
        let credit = ClientFrame::Credit { n: 10 };
        assert_eq!(
            serde_json::to_string(&credit).unwrap(),
            r#"{"type":"credit","n":10}"#
        );
    }

    #[test]
    fn websocket_url_follows_scheme() {
        let plain = websocket_url(&Url::parse("http://h:1/v1/queues/q/stream").unwrap());
        assert_eq!(plain.as_str(), "ws://h:1/v1/queues/q/stream");
        let tls = websocket_url(&Url::parse("https://h/x").unwrap());
        assert_eq!(tls.scheme(), "wss");
    }
}
