//! The load driver's WebSocket clients (RFC 7395): the stream's bytes are
//! framed by the same [`WebSocketIo`] the server uses (it translates both
//! ways alike: `<open/>` to a header and back, one element per frame), and
//! a task carries the frames to and from a tokio-tungstenite connection.

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use shoal_actors::c2s::websocket::{self, WebSocketEnds, WebSocketIo, SUBPROTOCOL};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Opens the WebSocket at `path` on a connected socket.
pub async fn connect(tcp: TcpStream, addr: SocketAddr, path: &str) -> std::io::Result<WebSocketIo> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .map_err(std::io::Error::other)?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static(SUBPROTOCOL));
    let (ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .map_err(std::io::Error::other)?;
    let (io, ends) = websocket::pair(false);
    tokio::spawn(carry(ws, ends));
    Ok(io)
}

async fn carry(ws: WebSocketStream<TcpStream>, ends: WebSocketEnds) {
    let (mut sink, mut stream) = ws.split();
    let WebSocketEnds { inbound, mut outbound } = ends;
    loop {
        tokio::select! {
            frame = outbound.recv() => match frame {
                Some(frame) => {
                    let Ok(text) = String::from_utf8(frame.to_vec()) else { break };
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            },
            received = stream.next() => match received {
                Some(Ok(Message::Text(text))) => {
                    if inbound.send(Bytes::copy_from_slice(text.as_bytes())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // Closed, broken, or binary: the stream sees its end.
                _ => break,
            }
        }
    }
}
