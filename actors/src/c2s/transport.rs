//! The task that owns a connection's socket: it reads and frames the
//! peer's bytes, hands frames to the c2s actor through a bounded channel
//! (reading pauses while the actor is behind: backpressure, not
//! buffering), and writes the outbound queue in batches.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

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

pub(crate) type FrameResult = Result<Frame, StreamError>;

pub(crate) async fn run<S>(
    mut io: S,
    mut codec: XmppCodec,
    frames: mpsc::Sender<FrameResult>,
    mut out: OutboundRx,
    conn: Arc<ConnState>,
    limits: ConnectionLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wbuf: Vec<u8> = Vec::new();
    // `None` once the peer has nothing more to say (EOF, error, or close).
    let mut frames = Some(frames);
    let mut need_read = true;
    let mut shaper = Shaper::new(tokio::time::Instant::now().into_std(), limits.preauth_burst);
    // Reading waits until then when the bucket has run dry.
    let mut resume: Option<tokio::time::Instant> = None;
    conn.touch();
    // True once the peer closed its side: no need to wait for its close.
    let mut peer_done = false;
    loop {
        let mut frames_done = false;
        tokio::select! {
            biased;
            _ = out.shared.abort.notified() => {
                overflow(&mut io).await;
                return;
            }
            msg = out.rx.recv() => {
                let mut close = None;
                match msg {
                    None => return,
                    Some(Out::Close { linger }) => close = Some(linger),
                    Some(Out::Data(first)) => {
                        wbuf.extend_from_slice(&first);
                        while wbuf.len() < WRITE_BATCH {
                            match out.rx.try_recv() {
                                Ok(Out::Data(more)) => wbuf.extend_from_slice(&more),
                                Ok(Out::Close { linger }) => { close = Some(linger); break; }
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
                        out.shared.queued.fetch_sub(written, std::sync::atomic::Ordering::AcqRel);
                        if !ok {
                            return;
                        }
                    }
                }
                if let Some(linger) = close {
                    let _ = io.flush().await;
                    let _ = io.shutdown().await;
                    // Give the peer a moment to send its own close, then go.
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
            permit = async { frames.as_ref().expect("guarded").reserve().await }, if frames.is_some() && !need_read => {
                match permit {
                    // The actor is gone; the queue ends when its senders do.
                    Err(_) => frames_done = true,
                    Ok(permit) => match codec.decode(&mut rbuf) {
                        Ok(Some(frame)) => {
                            let closed = frame == Frame::StreamClose;
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
            n = io.read_buf(&mut rbuf), if frames.is_some() && need_read && resume.is_none() => {
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
async fn overflow<S: AsyncWrite + Unpin>(io: &mut S) {
    let err = StreamError::with_text(StreamCondition::PolicyViolation, "too much unread data");
    let mut bytes = Vec::new();
    err.to_element().write_to(&mut bytes, crate::ns::CLIENT);
    bytes.extend_from_slice(b"</stream:stream>");
    let _ = tokio::time::timeout(Duration::from_secs(1), io.write_all(&bytes)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}
