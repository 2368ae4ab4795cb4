//! The task that owns a connection's socket: it reads and frames the
//! peer's bytes, hands frames to the c2s actor through a bounded channel
//! (reading pauses while the actor is behind: backpressure, not
//! buffering), writes the outbound queue in batches, and runs the TLS
//! handshake, first for Direct TLS or on STARTTLS. The same task serves
//! client and component streams: what it needs of its server is in
//! [`StreamSettings`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

use super::frames::FrameSender;
use super::io::{Io, TlsSettings};
use super::limits::{ConnState, ConnectionLimits, Shaper};
use super::outbound::{Next, Out, OutboundRx};
use super::C2sContext;
use crate::codec::{CodecLimits, Frame, XmppCodec};
use crate::error::{StreamCondition, StreamError};

/// Most bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// Bytes read (and dropped) while waiting for the peer to close its side.
const LINGER_READ_BYTES: usize = 64 * 1024;
/// First read after the buffer was drained: an idle connection holds no
/// more than this. Reads that fill it double it, up to `READ_CHUNK_MAX`;
/// stanzas larger than that still grow the buffer up to the stanza limit.
const READ_CHUNK_MIN: usize = 256;
const READ_CHUNK_MAX: usize = 16 * 1024;
/// Time a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type FrameResult = Result<Frame, StreamError>;

/// What goes to the actor. Boxed: the channel's slots are allocated in
/// blocks of 32 per connection, and a frame is about 180 bytes.
pub(crate) type BoxedFrame = Box<FrameResult>;

/// What a transport task reads of its server: read rates and write
/// timeout, TLS. Read through a shared `Arc` at each use: copies would sit
/// in every connection's task. A type parameter, not a trait object, so
/// that a client connection's task is what it was (a thin pointer, calls
/// resolved at compile time).
pub(crate) trait StreamSettings: Send + Sync + 'static {
    fn limits(&self) -> &ConnectionLimits;
    fn tls(&self) -> Option<&TlsSettings>;
    /// Codec limits for the peer once it has authenticated, when they are
    /// not those it started with (a component's own, known only once it
    /// has said which component it is).
    fn authenticated_codec(&self) -> Option<CodecLimits> {
        None
    }
    /// For a stream we opened (to another server): the TLS client to run
    /// on `<proceed/>`, and the name to ask for. Then [`StreamSettings::tls`]
    /// is not used.
    fn tls_client(&self) -> Option<(&tokio_rustls::TlsConnector, &rustls::pki_types::ServerName<'static>)> {
        None
    }
}

impl StreamSettings for C2sContext {
    fn limits(&self) -> &ConnectionLimits {
        C2sContext::limits(self)
    }

    fn tls(&self) -> Option<&TlsSettings> {
        self.config.tls.as_ref()
    }
}

/// What the actor of a connection whose transport task has started holds:
/// the queue it writes, the frames it reads, and the state both share.
pub(crate) struct Started {
    pub(crate) out: super::outbound::Outbound,
    pub(crate) frames: super::frames::FrameReceiver,
    pub(crate) conn: Arc<ConnState>,
}

/// Starts the transport task of an admitted connection on the current
/// arbiter, tracked by `tasks` (client, component, server streams alike):
/// reading with `codec`, writing a queue of `max_outbound` bytes.
pub(crate) fn start<S: StreamSettings>(
    io: Io,
    codec: XmppCodec,
    settings: Arc<S>,
    admitted: super::limits::Admitted,
    max_outbound: usize,
    tasks: &tokio_util::task::TaskTracker,
) -> Started {
    let (out, out_rx) = super::outbound::Outbound::new(max_outbound);
    // A few frames of slack; past that, reading the socket waits for the actor.
    let (frames_tx, frames) = super::frames::pipe();
    let conn = Arc::new(ConnState::new(admitted, io.transport()));
    let transport = Transport {
        codec,
        frames: Some(frames_tx),
        out: out_rx,
        conn: conn.clone(),
        cx: settings,
    };
    actix_rt::spawn(tasks.track_future(run(io, transport)));
    Started { out, frames, conn }
}

pub(crate) struct Transport<S: StreamSettings> {
    pub(crate) codec: XmppCodec,
    /// `None` once the peer has nothing more to say (EOF, error, close).
    pub(crate) frames: Option<FrameSender>,
    pub(crate) out: OutboundRx,
    pub(crate) conn: Arc<ConnState>,
    pub(crate) cx: Arc<S>,
}

/// Runs the TLS handshake of a stream to `domain` (`None` for Direct
/// TLS, before any stream header); on success records the channel
/// bindings.
async fn handshake(io: Io, tls: &TlsSettings, conn: &ConnState, domain: Option<&str>) -> Option<Io> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, io.upgrade(tls.acceptor(domain))).await {
        Ok(Ok(io)) => {
            if let Ok(mut slot) = conn.tls.lock() {
                *slot = io.channel_bindings(Some(tls), domain).map(Box::new);
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

/// Runs our side of a TLS handshake as the client (to another server).
async fn client_handshake(
    io: Io,
    connector: &tokio_rustls::TlsConnector,
    name: &rustls::pki_types::ServerName<'static>,
    conn: &ConnState,
) -> Option<Io> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, io.upgrade_client(connector.clone(), name.clone())).await {
        Ok(Ok(io)) => {
            if let Ok(mut slot) = conn.tls.lock() {
                *slot = io.channel_bindings(None, None).map(Box::new);
            }
            Some(io)
        }
        Ok(Err(e)) => {
            log::info!("TLS handshake with {name:?} failed: {e}");
            None
        }
        Err(_) => None,
    }
}

// Not an async fn: an async fn's future keeps its arguments twice (as
// arguments and as moved-in locals); an async block captures them once.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run<S: StreamSettings>(mut io: Io, mut t: Transport<S>) -> impl std::future::Future<Output = ()> {
    async move {
        // By reference: moving the fields out would store them twice in this
        // future, which every connection holds for its whole life.
        let Transport {
            codec,
            frames,
            out,
            conn,
            cx,
        } = &mut t;
        if let (Io::TlsPending(..), Some(settings)) = (&io, cx.tls()) {
            // Boxed, as every rarely taken path here: the task's future is
            // allocated per connection, and sized by its largest state.
            match Box::pin(handshake(io, settings, conn, None)).await {
                Some(upgraded) => io = upgraded,
                None => return,
            }
        }
        let mut rbuf = BytesMut::new();
        let mut chunk = READ_CHUNK_MIN;
        let mut wbuf: Vec<u8> = Vec::new();
        let mut need_read = true;
        // True once the peer closed its side: no need to wait for its close.
        let mut peer_done = false;
        // After <starttls/>, nothing is read until the handshake.
        let mut awaiting_tls = false;
        let mut shaper = Shaper::new(tokio::time::Instant::now().into_std(), cx.limits().preauth_burst);
        // Reading waits for this when the bucket has run dry (boxed: rare).
        let mut resume: Option<Pin<Box<tokio::time::Sleep>>> = None;
        conn.touch();
        loop {
            let mut frames_done = false;
            let reading = frames.is_some() && !awaiting_tls;
            tokio::select! {
                biased;
                next = out.next() => {
                    let mut close = None;
                    // The hosted domain of the stream that asked for TLS.
                    let mut start_tls = None;
                    let mut adopt = None;
                    match next {
                        Next::Overflow => {
                            Box::pin(overflow(&mut io)).await;
                            return;
                        }
                        Next::End => return,
                        Next::Item(Out::Close { linger }) => close = Some(linger),
                        Next::Item(Out::StartTls(host)) => start_tls = Some(host),
                        Next::Item(Out::Adopt(shared)) => adopt = Some(shared),
                        Next::Item(Out::Data(first) | Out::Nonza(first)) => {
                            wbuf.extend_from_slice(&first);
                            while wbuf.len() < WRITE_BATCH {
                                match out.try_recv() {
                                    Some(Out::Data(more) | Out::Nonza(more)) => wbuf.extend_from_slice(&more),
                                    Some(Out::Close { linger }) => { close = Some(linger); break; }
                                    Some(Out::StartTls(host)) => { start_tls = Some(host); break; }
                                    Some(Out::Adopt(shared)) => { adopt = Some(shared); break; }
                                    None => break,
                                }
                            }
                            // Counted in the queue: the request below is not.
                            let written = wbuf.len();
                            if out.ack_request_due() {
                                wbuf.extend_from_slice(crate::xep::sm::REQUEST);
                            }
                            let ok = tokio::select! {
                                ok = within(cx.limits().write_timeout, write_all(&mut io, &wbuf)) => ok,
                                _ = out.overflowed() => { Box::pin(overflow(&mut io)).await; return; }
                            };
                            // Nothing is kept for a connection that is quiet.
                            wbuf = Vec::new();
                            out.release();
                            out.shared.sub_queued(written);
                            if !ok {
                                return;
                            }
                        }
                    }
                    if let Some(shared) = adopt {
                        // A resumption: this stream carries the resumed session now.
                        *out = OutboundRx::attach(shared);
                    }
                    if let Some(host) = start_tls {
                        let write_timeout = cx.limits().write_timeout;
                        let flushed = within(write_timeout, |cx| Pin::new(&mut io).poll_flush(cx)).await;
                        if !flushed || !rbuf.is_empty() {
                            // Nothing may follow <starttls/> before <proceed/>.
                            return;
                        }
                        let plain = std::mem::replace(&mut io, Io::Closed);
                        let upgraded = match (cx.tls_client(), cx.tls()) {
                            (Some((connector, name)), _) => Box::pin(client_handshake(plain, connector, name, conn)).await,
                            (None, Some(settings)) => {
                                Box::pin(handshake(plain, settings, conn, Some(host.domain.as_str()))).await
                            }
                            (None, None) => None,
                        };
                        match upgraded {
                            Some(upgraded) => io = upgraded,
                            None => return,
                        }
                        codec.reset();
                        awaiting_tls = false;
                        need_read = true;
                    }
                    if let Some(linger) = close {
                        Box::pin(close_gracefully(&mut io, linger, peer_done, cx.limits().write_timeout)).await;
                        return;
                    }
                }
                permit = async {
                    match frames.as_ref() {
                        Some(frames) => frames.reserve().await,
                        None => std::future::pending().await,
                    }
                }, if reading && !need_read => {
                    match permit {
                        // The actor is gone; the queue ends when its senders do.
                        Err(_) => frames_done = true,
                        Ok(()) => match codec.decode(&mut rbuf) {
                            Ok(Some(frame)) => {
                                let closed = frame == Frame::StreamClose;
                                if let Frame::Stanza(el) = &frame {
                                    // The client side waits after <starttls/>, ours
                                    // (to another server) after <proceed/>.
                                    let name = if cx.tls_client().is_some() { "proceed" } else { "starttls" };
                                    awaiting_tls = el.is(name, crate::ns::TLS)
                                        && (cx.tls().is_some() || cx.tls_client().is_some())
                                        && matches!(io, Io::Tcp(_));
                                }
                                if let Some(tx) = frames.as_ref() {
                                    tx.send(Box::new(Ok(frame)));
                                }
                                frames_done = closed;
                                peer_done = closed;
                            }
                            Ok(None) => {
                                need_read = true;
                                if rbuf.is_empty() {
                                    // Drained: release it; the next read starts small.
                                    rbuf = BytesMut::new();
                                }
                            }
                            Err(err) => {
                                if let Some(tx) = frames.as_ref() {
                                    tx.send(Box::new(Err(err)));
                                }
                                frames_done = true;
                            }
                        },
                    }
                }
                _ = async { if let Some(sleep) = resume.as_mut() { sleep.await } }, if resume.is_some() => {
                    resume = None;
                }
                n = io.read_some(&mut rbuf, chunk), if reading && need_read && resume.is_none() => {
                    match n {
                        Ok(0) | Err(_) => {
                            frames_done = true;
                            peer_done = true;
                        }
                        Ok(n) => {
                            need_read = false;
                            conn.touch();
                            // A read that filled the space asks for more next time.
                            chunk = if n >= chunk { (chunk * 2).min(READ_CHUNK_MAX) } else { READ_CHUNK_MIN };
                            let limits = cx.limits();
                            let authenticated = conn.authenticated.load(Ordering::Relaxed);
                            if authenticated {
                                if let Some(codec_limits) = cx.authenticated_codec() {
                                    codec.set_limits(codec_limits);
                                }
                            }
                            let (rate, burst) = if authenticated {
                                (limits.rate, limits.burst)
                            } else {
                                (limits.preauth_rate, limits.preauth_burst)
                            };
                            let now = tokio::time::Instant::now();
                            let until = tokio::time::Instant::from_std(shaper.take(n, now.into_std(), rate, burst));
                            if until > now {
                                resume = Some(Box::pin(tokio::time::sleep_until(until)));
                            }
                        }
                    }
                }
            }
            if frames_done {
                *frames = None;
            }
        }
    }
}

/// Drives a write, flush or shutdown (`op`, a poll function) for `limit`
/// at most; true if it succeeded in time. A peer that stops reading fills
/// the socket's buffers, and would otherwise hold the socket (and its
/// admission slot) for as long as it likes; on false the caller ends the
/// task, which closes it. Most writes complete at once: the timer is only
/// made once the socket is full, and boxed, as every rarely taken path
/// here. A poll function, not a future: a wrapper around tokio's
/// `write_all` kept that future twice in this task's.
fn within<'a>(
    limit: Duration,
    mut op: impl FnMut(&mut Context<'_>) -> Poll<std::io::Result<()>> + 'a,
) -> impl Future<Output = bool> + 'a {
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(move |cx| match op(cx) {
        Poll::Ready(result) => Poll::Ready(result.is_ok()),
        Poll::Pending => {
            let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
            timer.as_mut().poll(cx).map(|()| false)
        }
    })
}

/// `write_all`, as a poll function for [`within`].
fn write_all<'a>(io: &'a mut Io, buf: &'a [u8]) -> impl FnMut(&mut Context<'_>) -> Poll<std::io::Result<()>> + 'a {
    let mut written = 0;
    move |cx| {
        while written < buf.len() {
            match std::task::ready!(Pin::new(&mut *io).poll_write(cx, &buf[written..])) {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Flushes, closes our side, and gives the peer `linger` to close its own,
/// reading only a little meanwhile: a peer that keeps sending is not
/// closing, and is not owed our reading. Each write waits `write_timeout`
/// at most.
async fn close_gracefully(io: &mut Io, linger: Duration, peer_done: bool, write_timeout: Duration) {
    let flushed = within(write_timeout, |cx| Pin::new(&mut *io).poll_flush(cx)).await;
    if !flushed || !within(write_timeout, |cx| Pin::new(&mut *io).poll_shutdown(cx)).await {
        // Not written in time, or broken: there is no close to wait for.
        return;
    }
    if peer_done || linger.is_zero() {
        return;
    }
    let mut scratch = [0u8; 512];
    let mut budget = LINGER_READ_BYTES;
    let _ = tokio::time::timeout(linger, async {
        while let Ok(n @ 1..) = io.read(&mut scratch).await {
            budget = budget.saturating_sub(n);
            if budget == 0 {
                break;
            }
        }
    })
    .await;
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
