//! The task that owns a connection's socket: it reads and frames the
//! peer's bytes, hands frames to the c2s actor through a bounded channel
//! (reading pauses while the actor is behind: backpressure, not
//! buffering), writes the outbound queue in batches, and runs the TLS
//! handshake, first for Direct TLS or on STARTTLS.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use super::io::{Io, TlsSettings};
use super::limits::{ConnState, ConnectionLimits, Shaper};
use super::outbound::{Out, OutboundRx};
use crate::codec::{Frame, XmppCodec};
use crate::error::{StreamCondition, StreamError};

/// Most bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// Bytes read (and dropped) while waiting for the peer to close its side.
const LINGER_READ_BYTES: usize = 64 * 1024;
/// Read buffer to start with; it grows up to the stanza limit when needed.
const READ_CHUNK: usize = 4096;
/// Time a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type FrameResult = Result<Frame, StreamError>;

pub(crate) struct Transport {
    pub(crate) codec: XmppCodec,
    pub(crate) frames: mpsc::Sender<FrameResult>,
    pub(crate) out: OutboundRx,
    pub(crate) conn: Arc<ConnState>,
    pub(crate) limits: ConnectionLimits,
    pub(crate) tls: Option<TlsSettings>,
}

/// Runs the TLS handshake; on success records the channel bindings.
async fn handshake(io: Io, tls: &TlsSettings, conn: &ConnState) -> Option<Io> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, io.upgrade(tls.acceptor.clone())).await {
        Ok(Ok(io)) => {
            if let Ok(mut slot) = conn.tls.lock() {
                *slot = io.channel_bindings(&tls.server_end_point);
            }
            Some(io)
        }
        Ok(Err(e)) => {
            log::debug!("TLS handshake failed: {e}");
            None
        }
        Err(_) => None,
    }
}

pub(crate) async fn run(mut io: Io, t: Transport) {
    let Transport {
        mut codec,
        frames,
        mut out,
        conn,
        limits,
        tls,
    } = t;
    if let (Io::TlsPending(..), Some(settings)) = (&io, &tls) {
        match handshake(io, settings, &conn).await {
            Some(upgraded) => io = upgraded,
            None => return,
        }
    }
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wbuf: Vec<u8> = Vec::new();
    // `None` once the peer has nothing more to say (EOF, error, or close).
    let mut frames = Some(frames);
    let mut need_read = true;
    // True once the peer closed its side: no need to wait for its close.
    let mut peer_done = false;
    // After <starttls/>, nothing is read until the handshake.
    let mut awaiting_tls = false;
    let mut shaper = Shaper::new(tokio::time::Instant::now().into_std(), limits.preauth_burst);
    // Reading waits until then when the bucket has run dry.
    let mut resume: Option<tokio::time::Instant> = None;
    conn.touch();
    loop {
        let mut frames_done = false;
        let reading = frames.is_some() && !awaiting_tls;
        tokio::select! {
            biased;
            _ = out.shared.abort.notified() => {
                overflow(&mut io).await;
                return;
            }
            msg = out.rx.recv() => {
                let mut close = None;
                let mut start_tls = false;
                match msg {
                    None => return,
                    Some(Out::Close { linger }) => close = Some(linger),
                    Some(Out::StartTls) => start_tls = true,
                    Some(Out::Data(first)) => {
                        wbuf.extend_from_slice(&first);
                        while wbuf.len() < WRITE_BATCH {
                            match out.rx.try_recv() {
                                Ok(Out::Data(more)) => wbuf.extend_from_slice(&more),
                                Ok(Out::Close { linger }) => { close = Some(linger); break; }
                                Ok(Out::StartTls) => { start_tls = true; break; }
                                Err(_) => break,
                            }
                        }
                        let written = wbuf.len();
                        let ok = tokio::select! {
                            r = io.write_all(&wbuf) => r.is_ok(),
                            _ = out.shared.abort.notified() => { overflow(&mut io).await; return; }
                        };
                        wbuf.clear();
                        if wbuf.capacity() > WRITE_BATCH * 2 {
                            wbuf.shrink_to(WRITE_BATCH);
                        }
                        out.shared.queued.fetch_sub(written, Ordering::AcqRel);
                        if !ok {
                            return;
                        }
                    }
                }
                if start_tls {
                    let Some(settings) = &tls else { return };
                    if io.flush().await.is_err() || !rbuf.is_empty() {
                        // Nothing may follow <starttls/> before <proceed/>.
                        return;
                    }
                    match handshake(std::mem::replace(&mut io, Io::Closed), settings, &conn).await {
                        Some(upgraded) => io = upgraded,
                        None => return,
                    }
                    codec.reset();
                    awaiting_tls = false;
                    need_read = true;
                }
                if let Some(linger) = close {
                    let _ = io.flush().await;
                    let _ = io.shutdown().await;
                    if !peer_done && !linger.is_zero() {
                        // Only a little: a peer that keeps sending is not
                        // closing, and is not owed our reading.
                        let mut scratch = [0u8; 512];
                        let mut budget = LINGER_READ_BYTES;
                        let _ = tokio::time::timeout(linger, async {
                            while let Ok(n @ 1..) = io.read(&mut scratch).await {
                                budget = budget.saturating_sub(n);
                                if budget == 0 {
                                    break;
                                }
                            }
                        }).await;
                    }
                    return;
                }
            }
            permit = async { frames.as_ref().expect("guarded").reserve().await }, if reading && !need_read => {
                match permit {
                    // The actor is gone; the queue ends when its senders do.
                    Err(_) => frames_done = true,
                    Ok(permit) => match codec.decode(&mut rbuf) {
                        Ok(Some(frame)) => {
                            let closed = frame == Frame::StreamClose;
                            if let Frame::Stanza(el) = &frame {
                                awaiting_tls = el.is("starttls", crate::ns::TLS) && tls.is_some() && !io.is_tls();
                            }
                            permit.send(Ok(frame));
                            frames_done = closed;
                            peer_done = closed;
                        }
                        Ok(None) => {
                            need_read = true;
                            if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                                rbuf.reserve(READ_CHUNK);
                            }
                        }
                        Err(err) => {
                            permit.send(Err(err));
                            frames_done = true;
                        }
                    },
                }
            }
            _ = tokio::time::sleep_until(resume.unwrap_or_else(tokio::time::Instant::now)), if resume.is_some() => {
                resume = None;
            }
            n = io.read_buf(&mut rbuf), if reading && need_read && resume.is_none() => {
                match n {
                    Ok(0) | Err(_) => {
                        frames_done = true;
                        peer_done = true;
                    }
                    Ok(n) => {
                        need_read = false;
                        conn.touch();
                        let (rate, burst) = if conn.authenticated.load(Ordering::Relaxed) {
                            (limits.rate, limits.burst)
                        } else {
                            (limits.preauth_rate, limits.preauth_burst)
                        };
                        let now = tokio::time::Instant::now();
                        let until = tokio::time::Instant::from_std(shaper.take(n, now.into_std(), rate, burst));
                        if until > now {
                            resume = Some(until);
                        }
                    }
                }
            }
        }
        if frames_done {
            frames = None;
        }
    }
}

/// The peer stopped reading: tell it why if it will listen, and hang up.
async fn overflow<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    let err = StreamError::with_text(StreamCondition::PolicyViolation, "too much unread data");
    let mut bytes = Vec::new();
    err.to_element().write_to(&mut bytes, crate::ns::CLIENT);
    bytes.extend_from_slice(b"</stream:stream>");
    let _ = tokio::time::timeout(Duration::from_secs(1), io.write_all(&bytes)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}
