//! `/xmpp-websocket`: a WebSocket (subprotocol `xmpp`, RFC 7395) becomes a
//! client stream like any other. This side checks the request (the
//! subprotocol, the page's `Origin`), then carries frames between the
//! WebSocket and the stream's [`WebSocketIo`](shoal_actors::c2s::websocket::WebSocketIo):
//! everything else (SASL, limits, resumption, the slow-reader cut-off) is
//! the c2s machinery's.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use bytestring::ByteString;
use shoal_actors::c2s::io::Io;
use shoal_actors::c2s::websocket::{self, WebSocketEnds, SUBPROTOCOL};

use super::Web;

pub const PATH: &str = "/xmpp-websocket";

/// Bytes a frame may have beyond the largest stanza: the codec, not the
/// WebSocket, refuses a stanza too large, with the stream error a TCP
/// client gets; past this the frame is not even read.
const FRAME_SLACK: usize = 4096;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(PATH, web::get().to(open));
}

async fn open(req: HttpRequest, body: web::Payload, web: web::Data<Web>) -> actix_web::Result<HttpResponse> {
    let asked = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !asked {
        // §3.1: the server must not accept a WebSocket without `xmpp`.
        return Ok(HttpResponse::BadRequest().body("the WebSocket subprotocol \"xmpp\" is required (RFC 7395)\n"));
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        if !origin_allowed(&req, origin, &web.config.allowed_origins) {
            log::info!(
                "{}: WebSocket refused: origin {origin:?} is not in [http] allowed_origins",
                req.peer_addr().map_or_else(|| "?".into(), |a| a.to_string())
            );
            return Ok(HttpResponse::Forbidden().body("this page's origin may not open XMPP streams here\n"));
        }
    }
    let Some(peer) = req.peer_addr() else {
        return Ok(HttpResponse::BadRequest().finish());
    };
    let (mut response, session, frames) = actix_ws::handle(&req, body)?;
    response
        .headers_mut()
        .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    let secure = req.app_config().secure();
    let (io, ends) = websocket::pair(secure);
    let max_frame = web.c2s.config.codec.max_stanza_bytes + FRAME_SLACK;
    let write_timeout = web.c2s.limits().write_timeout;
    shoal_actors::c2s::accept(web.c2s.clone(), Io::WebSocket(Box::new(io)), peer);
    actix_rt::spawn(carry(session, frames.max_frame_size(max_frame), ends, write_timeout));
    Ok(response)
}

/// Same origin, or one configured (`*`: any).
fn origin_allowed(req: &HttpRequest, origin: &HeaderValue, allowed: &[String]) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    // The page was served by this listener: its origin names the host the
    // browser asked for.
    let info = req.connection_info();
    let scheme = if info.scheme() == "https" { "https" } else { "http" };
    origin.eq_ignore_ascii_case(&format!("{scheme}://{}", info.host()))
}

/// Carries frames both ways until either side ends: the peer's closing
/// ends the stream's reading; the stream's end closes the WebSocket.
/// Reading from the peer waits while the stream has not taken the last
/// frame (backpressure), and answers pings. A frame the peer does not
/// take within `write_timeout` (it stopped reading) ends it all: the
/// stream's own write timeout has cut the session off by then, and the
/// HTTP connection must not outlive it.
async fn carry(mut session: Session, mut frames: MessageStream, ends: WebSocketEnds, write_timeout: Duration) {
    let WebSocketEnds { inbound, mut outbound } = ends;
    let mut inbound = Some(inbound);
    loop {
        tokio::select! {
            frame = outbound.recv() => match frame {
                Some(frame) => {
                    // Our own serialisation: always UTF-8.
                    let Ok(text) = ByteString::try_from(frame) else { break };
                    match tokio::time::timeout(write_timeout, session.text(text)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            log::debug!("WebSocket peer not reading: connection dropped");
                            break;
                        }
                    }
                }
                None => {
                    let _ = session.close(Some(CloseCode::Normal.into())).await;
                    return;
                }
            },
            received = async {
                // Owned: the borrow would outlive this branch.
                let permit = inbound.clone()?.reserve_owned().await.ok()?;
                Some((permit, frames.recv().await))
            }, if inbound.is_some() => {
                let Some((permit, received)) = received else {
                    inbound = None;
                    continue;
                };
                match received {
                    Some(Ok(Message::Text(text))) => {
                        permit.send(text.into_bytes());
                    }
                    Some(Ok(Message::Ping(data))) => {
                        if session.pong(&data).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Pong(_) | Message::Nop)) => {}
                    Some(Ok(Message::Binary(_) | Message::Continuation(_))) => {
                        // §3.2: XMPP goes in text frames only.
                        let reason = CloseReason { code: CloseCode::Unsupported, description: Some("text frames only".into()) };
                        let _ = session.close(Some(reason)).await;
                        return;
                    }
                    Some(Err(actix_ws::ProtocolError::Overflow)) => {
                        let reason = CloseReason { code: CloseCode::Size, description: Some("frame too large".into()) };
                        let _ = session.close(Some(reason)).await;
                        return;
                    }
                    // Closed, or broken: the stream reads its end; what it
                    // still writes goes out until it closes.
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => inbound = None,
                }
            }
        }
    }
}
