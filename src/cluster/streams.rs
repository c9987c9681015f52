//! WebSocket streams across brokers. The broker the client reached keeps
//! the client's WebSocket and relays its frames over one gRPC stream to
//! the leader. The leader opens the same stream route on its own REST
//! listener, so it authenticates and serves the stream exactly as for a
//! direct client, and relays the frames back.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tonic::{Status, Streaming};
use tracing::debug;

use crate::cluster::proto::stream_frame::Frame;
use crate::cluster::proto::{
    Header, HttpRequest, HttpResponse, StreamAccepted, StreamClose, StreamFrame,
};
use crate::cluster::rpc::HOPS_HEADER;

/// Frames buffered per direction.
const FRAME_BUFFER: usize = 64;

/// The stream of frames sent back to the calling broker.
pub type FrameSender = mpsc::Sender<Result<StreamFrame, Status>>;

/// Leader side: opens `request` as a WebSocket on this broker's own REST
/// listener at `rest`, reports `accepted` or `rejected` on `outgoing`, and
/// relays frames both ways until either side closes.
pub async fn serve_forwarded_stream(
    rest: SocketAddr,
    request: HttpRequest,
    mut incoming: Streaming<StreamFrame>,
    outgoing: FrameSender,
) {
    let url = format!("ws://{rest}{}", request.path_and_query);
    let mut ws_request = match url.into_client_request() {
        Ok(ws_request) => ws_request,
        Err(err) => {
            let _ = outgoing
                .send(Ok(rejected(400, &format!("invalid stream request: {err}"))))
                .await;
            return;
        }
    };
    for header in &request.headers {
        if let (Ok(name), Ok(value)) = (
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(header.name.as_bytes()),
            tokio_tungstenite::tungstenite::http::HeaderValue::from_bytes(&header.value),
        ) {
            if name == "authorization" || name.as_str().starts_with("x-ferry-") {
                ws_request.headers_mut().insert(name, value);
            }
        }
    }
    if let Ok(hops) = request.hops.to_string().parse() {
        ws_request.headers_mut().insert(HOPS_HEADER, hops);
    }
    let socket = match tokio_tungstenite::connect_async(ws_request).await {
        Ok((socket, _)) => socket,
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16() as u32;
            let body = response.body().clone().unwrap_or_default();
            let _ = outgoing
                .send(Ok(StreamFrame {
                    frame: Some(Frame::Rejected(HttpResponse {
                        status,
                        headers: vec![Header {
                            name: "content-type".into(),
                            value: bytes::Bytes::from_static(b"application/json"),
                        }],
                        body: body.into(),
                    })),
                }))
                .await;
            return;
        }
        Err(err) => {
            let _ = outgoing
                .send(Ok(rejected(
                    500,
                    &format!("failed to open the stream on the leader: {err}"),
                )))
                .await;
            return;
        }
    };
    if outgoing
        .send(Ok(StreamFrame {
            frame: Some(Frame::Accepted(StreamAccepted {})),
        }))
        .await
        .is_err()
    {
        return;
    }
    let (mut ws_tx, mut ws_rx) = socket.split();
    let to_leader_stream = async {
        while let Some(Ok(frame)) = incoming.next().await {
            let message = match frame.frame {
                Some(Frame::Text(text)) => WsMessage::text(text),
                Some(Frame::Close(close)) => {
                    let _ = ws_tx
                        .send(WsMessage::Close(Some(close_frame(&close))))
                        .await;
                    return;
                }
                _ => continue,
            };
            if ws_tx.send(message).await.is_err() {
                return;
            }
        }
        let _ = ws_tx.close().await;
    };
    let to_caller = async {
        while let Some(message) = ws_rx.next().await {
            let frame = match message {
                Ok(WsMessage::Text(text)) => Frame::Text(text.to_string()),
                Ok(WsMessage::Close(close)) => {
                    let close = close.map_or(
                        StreamClose {
                            code: 1000,
                            reason: String::new(),
                        },
                        |frame| StreamClose {
                            code: u16::from(frame.code) as u32,
                            reason: frame.reason.to_string(),
                        },
                    );
                    let _ = outgoing
                        .send(Ok(StreamFrame {
                            frame: Some(Frame::Close(close)),
                        }))
                        .await;
                    return;
                }
                Ok(_) => continue,
                Err(err) => {
                    debug!(error = %err, "forwarded stream ended");
                    return;
                }
            };
            if outgoing
                .send(Ok(StreamFrame { frame: Some(frame) }))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    tokio::select! {
        () = to_leader_stream => {}
        () = to_caller => {}
    }
}

/// Creates a channel for the frames of one forwarded stream: the sender for
/// this side's frames and the stream to hand to gRPC.
pub fn frame_channel() -> (mpsc::Sender<StreamFrame>, ReceiverStream<StreamFrame>) {
    let (sender, receiver) = mpsc::channel(FRAME_BUFFER);
    (sender, ReceiverStream::new(receiver))
}

/// Creates a channel for the frames a leader sends back.
pub fn response_channel() -> (FrameSender, ReceiverStream<Result<StreamFrame, Status>>) {
    let (sender, receiver) = mpsc::channel(FRAME_BUFFER);
    (sender, ReceiverStream::new(receiver))
}

fn rejected(status: u32, message: &str) -> StreamFrame {
    let code = if status == 400 {
        "invalid_argument"
    } else {
        "internal"
    };
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    StreamFrame {
        frame: Some(Frame::Rejected(HttpResponse {
            status,
            headers: Vec::new(),
            body: body.to_string().into_bytes().into(),
        })),
    }
}

fn close_frame(close: &StreamClose) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(close.code as u16),
        reason: close.reason.clone().into(),
    }
}
