//! The client side of XEP-0114 (Jabber Component Protocol): a program
//! that serves a domain (`bot.example.org`) through a server's component
//! port. [`ComponentConnector`] opens and authenticates the stream; run it
//! under a [`ConnectionManager`](crate::outbound::ConnectionManager) and
//! the component comes back by itself after the server restarts:
//!
//! ```ignore
//! let config = ComponentConfig::new("127.0.0.1:5347", "bot.example.org", "secret");
//! let connector = ComponentConnector::new(config, my_handler.recipient::<Incoming>());
//! let manager = ConnectionManager::new(connector, ManagerSettings::default()).start();
//! manager.do_send(Subscribe(my_watcher.recipient()));
//! ```
//!
//! Subscribers get a [`ComponentHandle`] with each connection: it sends
//! stanzas ([`ComponentHandle::send`]) and IQ requests whose answers it
//! awaits ([`ComponentHandle::request`]). A request in flight when the
//! connection drops fails with [`RequestError::Disconnected`]: nobody
//! waits for an answer that cannot come. Every other stanza the server
//! sends goes to the [`Incoming`] recipient, with the handle to answer on.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::{Message, Recipient};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use super::handshake_digest;
use crate::codec::{CodecLimits, Frame, XmppCodec};
use crate::jid::Jid;
use crate::ns;
use crate::outbound::{ConnectFuture, Connection, Connector};
use crate::stanza::{IqType, Kind, Stanza, StanzaParseError};
use crate::xml::Element;

/// How long the closing `</stream:stream>` may take to write.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Where and as whom a component connects.
#[derive(Clone, Debug)]
pub struct ComponentConfig {
    /// The server's component port, as `host:port`.
    pub server: String,
    /// The component's domain, as configured on the server.
    pub domain: String,
    /// The shared secret of the handshake.
    pub secret: String,
    /// How long [`ComponentHandle::request`] waits for an answer.
    pub request_timeout: Duration,
    /// Stanzas queued for writing before [`ComponentHandle::send`] says
    /// [`SendError::Full`].
    pub queue_capacity: usize,
    /// Limits on what the server may send.
    pub limits: CodecLimits,
}

impl ComponentConfig {
    /// A configuration with the defaults: 30 s request timeout, a queue of
    /// 1024 stanzas, the codec's default limits.
    pub fn new(server: impl Into<String>, domain: impl Into<String>, secret: impl Into<String>) -> Self {
        ComponentConfig {
            server: server.into(),
            domain: domain.into(),
            secret: secret.into(),
            request_timeout: Duration::from_secs(30),
            queue_capacity: 1024,
            limits: CodecLimits::default(),
        }
    }
}

/// A stanza from the server that is not the answer to one of this
/// component's requests.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Incoming {
    pub stanza: Stanza,
    /// The connection it came on, to answer on.
    pub handle: ComponentHandle,
}

/// Why a stanza was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is gone; a new handle comes with the next
    /// `Connected`.
    #[error("the component connection is gone")]
    Disconnected,
    /// The outbound queue is full: the server is not keeping up.
    #[error("the component's outbound queue is full")]
    Full,
}

/// Why a request has no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The connection ended (or was gone already) before the answer came.
    #[error("the component connection is gone")]
    Disconnected,
    /// No answer within the request timeout.
    #[error("no answer in time")]
    Timeout,
    /// The outbound queue is full.
    #[error("the component's outbound queue is full")]
    Full,
    /// Only an IQ get or set has an answer to wait for.
    #[error("not an IQ get or set")]
    NotARequest,
    /// A request with this id is waiting already.
    #[error("a request with this id is in flight")]
    DuplicateId,
}

impl From<SendError> for RequestError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Disconnected => RequestError::Disconnected,
            SendError::Full => RequestError::Full,
        }
    }
}

/// A request waiting for its answer.
struct Pending {
    /// Where it went: only an answer from there counts.
    to: Option<Jid>,
    /// Tells this request from a later one reusing the id.
    serial: u64,
    reply: oneshot::Sender<Stanza>,
}

struct Shared {
    /// The component's own address: the `from` of stanzas sent without one.
    domain: Jid,
    tx: mpsc::Sender<Bytes>,
    /// Requests by IQ id; `None` once the connection is gone, so that a
    /// request cannot slip in after the others were failed.
    pending: Mutex<Option<HashMap<String, Pending>>>,
    serial: AtomicU64,
    request_timeout: Duration,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Option<HashMap<String, Pending>>> {
        // Nothing panics while holding it, so a poisoned lock is sound.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection of a component: cheap to clone, usable from any thread.
/// It dies with its connection; the next connection brings a new one.
#[derive(Clone)]
pub struct ComponentHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ComponentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentHandle")
            .field("domain", &self.shared.domain)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl ComponentHandle {
    /// The component's domain.
    pub fn domain(&self) -> &Jid {
        &self.shared.domain
    }

    /// False once the connection has ended.
    pub fn is_connected(&self) -> bool {
        self.shared.pending().is_some() && !self.shared.tx.is_closed()
    }

    /// Queues a stanza. One without `from` is sent from the component's
    /// domain. An IQ request sent this way has its answer delivered as
    /// [`Incoming`]; use [`request`](Self::request) to await it instead.
    pub fn send(&self, stanza: &Stanza) -> Result<(), SendError> {
        if self.shared.pending().is_none() {
            return Err(SendError::Disconnected);
        }
        self.queue(self.wire(stanza))
    }

    /// Sends an IQ get or set and resolves with its answer (a result or an
    /// error stanza), or with [`RequestError::Disconnected`] if the
    /// connection ends first, or [`RequestError::Timeout`]. The request is
    /// queued at once, not when the future is first polled; dropping the
    /// future forgets the request. An IQ without an id is given one. The
    /// future needs a Tokio runtime with timers (an actix System is one).
    pub fn request(&self, iq: Stanza) -> impl Future<Output = Result<Stanza, RequestError>> + Send + 'static {
        let started = self.start_request(iq);
        let timeout = self.shared.request_timeout;
        async move {
            let (reply, _forget) = started?;
            match tokio::time::timeout(timeout, reply).await {
                Ok(Ok(answer)) => Ok(answer),
                // The sender was dropped with the connection.
                Ok(Err(_)) => Err(RequestError::Disconnected),
                Err(_) => Err(RequestError::Timeout),
            }
        }
    }

    fn start_request(&self, iq: Stanza) -> Result<(oneshot::Receiver<Stanza>, Forget), RequestError> {
        if !iq.is_iq_request() {
            return Err(RequestError::NotARequest);
        }
        let serial = self.shared.serial.fetch_add(1, Ordering::Relaxed);
        let iq = match iq.id() {
            Some(_) => iq,
            None => {
                let (kind, from, to) = (iq.kind, iq.from().cloned(), iq.to().cloned());
                let mut el = iq.into_element();
                el.set_attr("id", format!("shoal-component-{serial}"));
                Stanza::new(kind, from, to, el)
            }
        };
        let id = iq.id().unwrap_or_default().to_owned();
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.shared.pending();
            let Some(map) = pending.as_mut() else {
                return Err(RequestError::Disconnected);
            };
            if map.contains_key(&id) {
                return Err(RequestError::DuplicateId);
            }
            let to = iq.to().cloned();
            map.insert(id.clone(), Pending { to, serial, reply: tx });
        }
        let forget = Forget {
            shared: self.shared.clone(),
            id,
            serial,
        };
        // On failure `forget` is dropped here and takes the entry along.
        self.queue(self.wire(&iq))?;
        Ok((rx, forget))
    }

    fn wire(&self, stanza: &Stanza) -> Bytes {
        if stanza.from().is_some() {
            return stanza.to_bytes();
        }
        let mut stamped = stanza.clone();
        stamped.set_from(Some(self.shared.domain.clone()));
        stamped.to_bytes()
    }

    fn queue(&self, bytes: Bytes) -> Result<(), SendError> {
        self.shared.tx.try_send(bytes).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Disconnected,
        })
    }

    /// Hands an answer to its request; gives the stanza back if it answers
    /// none.
    fn answer(&self, stanza: Stanza) -> Option<Stanza> {
        if !matches!(stanza.kind, Kind::Iq(IqType::Result | IqType::Error)) {
            return Some(stanza);
        }
        let Some(id) = stanza.id() else {
            return Some(stanza);
        };
        let waiting = {
            let mut pending = self.shared.pending();
            let Some(map) = pending.as_mut() else {
                return Some(stanza);
            };
            // Ids are ours but not secret: the answer must come from where
            // the request went.
            let from_there = map
                .get(id)
                .is_some_and(|p| p.to.is_none() || p.to.as_ref() == stanza.from());
            if !from_there {
                return Some(stanza);
            }
            map.remove(id)
        };
        match waiting {
            Some(p) => {
                // The requester may have given up; nothing else wants it.
                let _ = p.reply.send(stanza);
                None
            }
            None => Some(stanza),
        }
    }

    /// Fails every request in flight (their senders are dropped) and
    /// refuses new ones.
    fn close(&self) {
        let failed = self.shared.pending().take();
        drop(failed);
    }
}

/// Removes a request's entry when its future is done or dropped.
struct Forget {
    shared: Arc<Shared>,
    id: String,
    serial: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        let mut pending = self.shared.pending();
        if let Some(map) = pending.as_mut() {
            if map.get(&self.id).is_some_and(|p| p.serial == self.serial) {
                map.remove(&self.id);
            }
        }
    }
}

/// Opens component connections: a [`Connector`] for the
/// [`ConnectionManager`](crate::outbound::ConnectionManager).
pub struct ComponentConnector {
    config: Arc<ComponentConfig>,
    incoming: Recipient<Incoming>,
}

impl ComponentConnector {
    /// Stanzas that answer no request go to `incoming`.
    pub fn new(config: ComponentConfig, incoming: Recipient<Incoming>) -> Self {
        ComponentConnector {
            config: Arc::new(config),
            incoming,
        }
    }
}

impl Connector for ComponentConnector {
    type Handle = ComponentHandle;

    fn connect(&self) -> ConnectFuture<ComponentHandle> {
        Box::pin(open(self.config.clone(), self.incoming.clone()))
    }

    fn target(&self) -> String {
        format!("component {} at {}", self.config.domain, self.config.server)
    }
}

fn failed(text: impl Into<String>) -> io::Error {
    io::Error::other(text.into())
}

/// `<stream:error>` as a readable line.
fn describe_stream_error(el: &Element) -> String {
    let condition = el
        .children()
        .find(|c| c.ns() == ns::STREAMS_ERRORS && c.name() != "text")
        .map_or("undefined-condition", Element::name);
    match el.get_child("text", ns::STREAMS_ERRORS) {
        Some(text) => format!("stream error <{condition}/>: {}", text.text()),
        None => format!("stream error <{condition}/>"),
    }
}

type Reader = FramedRead<OwnedReadHalf, XmppCodec>;

async fn next_frame(reader: &mut Reader) -> io::Result<Frame> {
    match reader.next().await {
        Some(Ok(frame)) => Ok(frame),
        Some(Err(e)) => Err(failed(format!("bad stream from the server: {e}"))),
        None => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

/// Connects, opens the stream and shakes hands; then starts the writer and
/// returns the reader as the connection's `closed` future.
async fn open(config: Arc<ComponentConfig>, incoming: Recipient<Incoming>) -> io::Result<Connection<ComponentHandle>> {
    let domain =
        Jid::parse(&config.domain).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("domain: {e}")))?;
    let tcp = TcpStream::connect(config.server.as_str()).await?;
    // Stanzas are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    let (read, mut write) = tcp.into_split();
    let mut reader = FramedRead::new(read, XmppCodec::new(config.limits).for_component());

    let header = format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}' to='{}'>",
        ns::COMPONENT_ACCEPT,
        ns::STREAM,
        quick_xml::escape::escape(domain.as_str())
    );
    write.write_all(header.as_bytes()).await?;
    let id = match next_frame(&mut reader).await? {
        Frame::StreamOpen(h) if h.default_ns.as_deref() == Some(ns::COMPONENT_ACCEPT) => h.id,
        Frame::StreamOpen(h) => return Err(failed(format!("not a component stream: {:?}", h.default_ns))),
        other => return Err(failed(format!("expected a stream header, got {other:?}"))),
    };
    let id = id.ok_or_else(|| failed("the stream header has no id"))?;
    let handshake = format!("<handshake>{}</handshake>", handshake_digest(&id, &config.secret));
    write.write_all(handshake.as_bytes()).await?;
    match next_frame(&mut reader).await? {
        Frame::Stanza(el) if el.name() == "handshake" && (el.ns() == ns::CLIENT || el.ns() == ns::COMPONENT_ACCEPT) => {
        }
        Frame::Stanza(el) if el.is("error", ns::STREAM) => return Err(failed(describe_stream_error(&el))),
        Frame::StreamClose => return Err(failed("the server closed the stream")),
        other => return Err(failed(format!("expected <handshake/>, got {other:?}"))),
    }

    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let handle = ComponentHandle {
        shared: Arc::new(Shared {
            domain,
            tx,
            pending: Mutex::new(Some(HashMap::new())),
            serial: AtomicU64::new(0),
            request_timeout: config.request_timeout,
        }),
    };
    let (stop, stopped) = oneshot::channel();
    let writer = actix_rt::spawn(write_loop(write, rx, stopped));
    // Made here, not in the reader: a `closed` future dropped before it
    // was ever polled must still fail the requests and stop the writer.
    let closing = Closing {
        handle: handle.clone(),
        _stop: stop,
    };
    let closed = read_loop(reader, closing, incoming, writer, config.domain.clone());
    Ok(Connection {
        handle,
        closed: Box::pin(closed),
    })
}

/// Writes queued stanzas until told to stop (or the connection fails),
/// then closes the stream unless it stopped in the middle of a stanza.
async fn write_loop(write: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>, stopped: oneshot::Receiver<()>) {
    let mut write = BufWriter::new(write);
    let mut whole = true;
    let writing = async {
        while let Some(bytes) = rx.recv().await {
            whole = false;
            write.write_all(&bytes).await?;
            whole = true;
            // Flush only when nothing else is queued: one write for a burst.
            if rx.is_empty() {
                write.flush().await?;
            }
        }
        Ok::<(), io::Error>(())
    };
    let failed = tokio::select! {
        result = writing => result.is_err(),
        // Dropped or sent to: either way, stop.
        _ = stopped => false,
    };
    if whole && !failed {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            write.write_all(b"</stream:stream>").await?;
            write.flush().await?;
            write.shutdown().await
        })
        .await;
    }
}

/// Fails the requests in flight and stops the writer however the reader
/// ends, dropped included.
struct Closing {
    handle: ComponentHandle,
    _stop: oneshot::Sender<()>,
}

impl Drop for Closing {
    fn drop(&mut self) {
        self.handle.close();
    }
}

/// Reads until the connection ends: the `closed` future of a connection.
async fn read_loop(
    mut reader: Reader,
    closing: Closing,
    incoming: Recipient<Incoming>,
    mut writer: actix_rt::task::JoinHandle<()>,
    domain: String,
) {
    let handle = &closing.handle;
    loop {
        let frame = tokio::select! {
            frame = reader.next() => frame,
            _ = &mut writer => {
                log::warn!("component {domain}: writing to the server failed");
                return;
            }
        };
        match frame {
            Some(Ok(Frame::Stanza(el))) if el.is("error", ns::STREAM) => {
                log::warn!("component {domain}: {}", describe_stream_error(&el));
                return;
            }
            Some(Ok(Frame::Stanza(el))) => dispatch(el, handle, &incoming, &domain),
            Some(Ok(Frame::StreamClose)) => {
                log::info!("component {domain}: the server closed the stream");
                return;
            }
            Some(Ok(Frame::StreamOpen(_))) => {
                log::warn!("component {domain}: unexpected stream restart");
                return;
            }
            Some(Err(e)) => {
                log::warn!("component {domain}: bad stream from the server: {e}");
                return;
            }
            None => {
                log::info!("component {domain}: the server hung up");
                return;
            }
        }
    }
}

fn dispatch(el: Element, handle: &ComponentHandle, incoming: &Recipient<Incoming>, domain: &str) {
    match Stanza::from_element(el) {
        Ok(stanza) => {
            if let Some(stanza) = handle.answer(stanza) {
                // do_send: a stanza is not dropped for a full mailbox.
                incoming.do_send(Incoming {
                    stanza,
                    handle: handle.clone(),
                });
            }
        }
        Err(StanzaParseError::Stanza(err, el)) => {
            log::debug!("component {domain}: dropped a bad stanza ({err}): {el}");
        }
        Err(StanzaParseError::Stream(err)) => {
            log::warn!("component {domain}: dropped an element that is no stanza ({err})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{ConnectionEvent, ConnectionManager, ManagerSettings, Subscribe};
    use actix::{Actor, Context, Handler};
    use tokio::net::TcpListener;

    const WAIT: Duration = Duration::from_secs(10);

    /// Answers every IQ get with an empty result; passes every stanza on.
    struct Bot(mpsc::UnboundedSender<Stanza>);

    impl Actor for Bot {
        type Context = Context<Self>;
    }

    impl Handler<Incoming> for Bot {
        type Result = ();
        fn handle(&mut self, msg: Incoming, _ctx: &mut Context<Self>) {
            if msg.stanza.is_iq_request() {
                let _ = msg.handle.send(&msg.stanza.iq_result(None));
            }
            let _ = self.0.send(msg.stanza);
        }
    }

    struct Watcher(mpsc::UnboundedSender<ConnectionEvent<ComponentHandle>>);

    impl Actor for Watcher {
        type Context = Context<Self>;
    }

    impl Handler<ConnectionEvent<ComponentHandle>> for Watcher {
        type Result = ();
        fn handle(&mut self, msg: ConnectionEvent<ComponentHandle>, _ctx: &mut Context<Self>) {
            let _ = self.0.send(msg);
        }
    }

    /// The server side of one connection, scripted by the test.
    struct Peer {
        reader: FramedRead<OwnedReadHalf, XmppCodec>,
        write: OwnedWriteHalf,
    }

    impl Peer {
        /// Accepts a connection and answers the stream header.
        async fn accept(listener: &TcpListener) -> Peer {
            let (tcp, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
            let (read, write) = tcp.into_split();
            let mut peer = Peer {
                reader: FramedRead::new(read, XmppCodec::new(CodecLimits::default()).for_component()),
                write,
            };
            let Frame::StreamOpen(h) = peer.frame().await else {
                panic!("no header")
            };
            assert_eq!(h.default_ns.as_deref(), Some(ns::COMPONENT_ACCEPT));
            assert_eq!(h.to.as_deref(), Some("bot.localhost"));
            peer.send(
                "<stream:stream xmlns='jabber:component:accept' \
                 xmlns:stream='http://etherx.jabber.org/streams' from='bot.localhost' id='abc123'>",
            )
            .await;
            peer
        }

        /// Accepts a connection and lets it in if the secret is right.
        async fn accept_component(listener: &TcpListener) -> Peer {
            let mut peer = Peer::accept(listener).await;
            let Frame::Stanza(hs) = peer.frame().await else {
                panic!("no handshake")
            };
            assert!(hs.is("handshake", ns::CLIENT), "{hs}");
            assert_eq!(hs.text(), handshake_digest("abc123", "s3cret"));
            peer.send("<handshake/>").await;
            peer
        }

        async fn frame(&mut self) -> Frame {
            tokio::time::timeout(WAIT, self.reader.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
        }

        async fn stanza(&mut self) -> Element {
            match self.frame().await {
                Frame::Stanza(el) => el,
                other => panic!("expected a stanza, got {other:?}"),
            }
        }

        async fn send(&mut self, xml: &str) {
            self.write.write_all(xml.as_bytes()).await.unwrap();
        }
    }

    async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
        tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap()
    }

    fn iq_get(to: &str) -> Stanza {
        let el = Element::new("iq", ns::CLIENT).with_child(Element::new("ping", ns::PING));
        Stanza::new(Kind::Iq(IqType::Get), None, Some(Jid::parse(to).unwrap()), el)
    }

    struct Rig {
        listener: TcpListener,
        stanzas: mpsc::UnboundedReceiver<Stanza>,
        events: mpsc::UnboundedReceiver<ConnectionEvent<ComponentHandle>>,
    }

    async fn rig(secret: &str) -> Rig {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap().to_string();
        let (tx, stanzas) = mpsc::unbounded_channel();
        let bot = Bot(tx).start();
        let connector = ComponentConnector::new(ComponentConfig::new(server, "bot.localhost", secret), bot.recipient());
        let settings = ManagerSettings {
            reconnect_after: Duration::from_millis(10),
            jitter: 0.0,
            ..ManagerSettings::default()
        };
        let manager = ConnectionManager::new(connector, settings).start();
        let (tx, events) = mpsc::unbounded_channel();
        manager.do_send(Subscribe(Watcher(tx).start().recipient()));
        Rig {
            listener,
            stanzas,
            events,
        }
    }

    async fn connected(events: &mut mpsc::UnboundedReceiver<ConnectionEvent<ComponentHandle>>) -> ComponentHandle {
        match next(events).await {
            ConnectionEvent::Connected(h) => h,
            other => panic!("expected Connected, got {other:?}"),
        }
    }

    #[actix_rt::test]
    async fn serves_answers_requests_and_fails_them_on_disconnection() {
        let mut r = rig("s3cret").await;
        let mut peer = Peer::accept_component(&r.listener).await;
        let handle = connected(&mut r.events).await;
        assert!(handle.is_connected());

        // The server delivers a request; the bot's answer goes back.
        peer.send("<iq type='get' id='q1' from='a@localhost/r' to='bot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        let got = next(&mut r.stanzas).await;
        assert_eq!(got.id(), Some("q1"));
        let answer = peer.stanza().await;
        assert_eq!(
            answer.to_xml_in(ns::CLIENT),
            "<iq id='q1' type='result' from='bot.localhost' to='a@localhost/r'/>"
        );

        // A request of the component's own is answered.
        let pending = handle.request(iq_get("a@localhost/r"));
        let sent = peer.stanza().await;
        assert_eq!(sent.attr("from"), Some("bot.localhost"));
        let id = sent.attr("id").unwrap().to_owned();
        // An answer from elsewhere with the same id is not the answer.
        peer.send(&format!(
            "<iq type='result' id='{id}' from='b@localhost/r' to='bot.localhost'/>"
        ))
        .await;
        assert_eq!(next(&mut r.stanzas).await.from().unwrap().as_str(), "b@localhost/r");
        peer.send(&format!(
            "<iq type='result' id='{id}' from='a@localhost/r' to='bot.localhost'/>"
        ))
        .await;
        let answer = pending.await.unwrap();
        assert_eq!(answer.kind, Kind::Iq(IqType::Result));

        // One in flight when the server goes away fails, and is not lost.
        let in_flight = handle.request(iq_get("a@localhost/r"));
        peer.stanza().await;
        drop(peer);
        assert_eq!(in_flight.await, Err(RequestError::Disconnected));
        assert!(matches!(next(&mut r.events).await, ConnectionEvent::Disconnected));
        assert!(!handle.is_connected());
        assert_eq!(handle.send(&iq_get("a@localhost")), Err(SendError::Disconnected));
        assert_eq!(
            handle.request(iq_get("a@localhost")).await,
            Err(RequestError::Disconnected)
        );

        // And it comes back.
        let mut peer = Peer::accept_component(&r.listener).await;
        let handle = connected(&mut r.events).await;
        handle.send(&iq_get("a@localhost")).unwrap();
        assert_eq!(peer.stanza().await.attr("to"), Some("a@localhost"));
    }

    #[actix_rt::test]
    async fn a_refused_handshake_fails_the_attempt() {
        let mut r = rig("wrong").await;
        let mut peer = Peer::accept(&r.listener).await;
        let Frame::Stanza(hs) = peer.frame().await else {
            panic!("no handshake")
        };
        assert_ne!(hs.text(), handshake_digest("abc123", "s3cret"));
        peer.send(
            "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>\
             </stream:stream>",
        )
        .await;
        // The manager reports the failure and tries again; it never
        // reported a connection.
        let _again = Peer::accept(&r.listener).await;
        match next(&mut r.events).await {
            ConnectionEvent::AttemptFailed(e) => assert!(e.to_string().contains("not-authorized"), "{e}"),
            other => panic!("expected AttemptFailed, got {other:?}"),
        }
        assert!(r.events.try_recv().is_err());
    }

    #[actix_rt::test]
    async fn requests_time_out_and_refuse_non_requests() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = ComponentConfig::new(listener.local_addr().unwrap().to_string(), "bot.localhost", "s3cret");
        config.request_timeout = Duration::from_millis(20);
        let (tx, _stanzas) = mpsc::unbounded_channel();
        let connector = ComponentConnector::new(config, Bot(tx).start().recipient());
        let (opened, peer) = tokio::join!(connector.connect(), Peer::accept_component(&listener));
        let Connection { handle, closed } = opened.unwrap();
        let _closed = closed;
        let _peer = peer;
        assert_eq!(handle.request(iq_get("a@localhost")).await, Err(RequestError::Timeout));
        let result = iq_get("a@localhost").iq_result(None);
        assert_eq!(handle.request(result).await, Err(RequestError::NotARequest));
        let mut first = iq_get("a@localhost").into_element();
        first.set_attr("id", "same");
        let first = Stanza::new(Kind::Iq(IqType::Get), None, Jid::parse("a@localhost").ok(), first);
        let waiting = handle.request(first.clone());
        assert_eq!(handle.request(first).await, Err(RequestError::DuplicateId));
        assert_eq!(waiting.await, Err(RequestError::Timeout));
    }
}
