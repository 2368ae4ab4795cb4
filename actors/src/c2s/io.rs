//! A client connection's byte stream: plain TCP, TLS (RFC 6120 §5
//! STARTTLS, or XEP-0368 Direct TLS) with each hosted domain's own
//! certificate, and the channel-binding data a TLS connection gives
//! SCRAM-PLUS (RFC 5929, RFC 9266).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::session::Transport;

/// When clients may, or must, negotiate TLS on a plain listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartTls {
    Off,
    Optional,
    Required,
}

/// One hosted domain's certificate.
#[derive(Debug)]
pub struct HostCert {
    pub key: Arc<rustls::sign::CertifiedKey>,
    /// `tls-server-end-point` data: the certificate's hash (RFC 5929 §4.1).
    pub server_end_point: Vec<u8>,
}

/// The hosted domains' certificates, and which one a connection gets: the
/// one of the domain the client named by SNI, if hosted; else the one of
/// the domain its stream is for (STARTTLS comes after the stream header);
/// else the default domain's.
#[derive(Debug)]
pub struct Certificates {
    by_domain: HashMap<String, HostCert>,
    default: String,
}

impl Certificates {
    /// `None` when `default` has no certificate among `by_domain`.
    pub fn new(default: &str, by_domain: HashMap<String, HostCert>) -> Option<Certificates> {
        by_domain.contains_key(default).then(|| Certificates {
            by_domain,
            default: default.to_owned(),
        })
    }

    /// The certificate a connection gets; see [`Certificates`].
    pub fn pick(&self, sni: Option<&str>, stream_domain: Option<&str>) -> &HostCert {
        // rustls gives SNI lower-cased, as domains are stored.
        sni.and_then(|d| self.by_domain.get(d))
            .or_else(|| stream_domain.and_then(|d| self.by_domain.get(d)))
            .unwrap_or_else(|| &self.by_domain[&self.default])
    }
}

/// The certificates in force: each handshake reads them, a reload
/// replaces them whole ([`TlsSettings::set_certificates`]).
#[derive(Debug)]
struct InForce(RwLock<Arc<Certificates>>);

impl InForce {
    fn get(&self) -> Arc<Certificates> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Picks by SNI, falling back to one domain's certificate: a
/// configuration per hosted domain carries one, so that a STARTTLS
/// handshake can fall back to the domain its stream named.
#[derive(Debug)]
struct Resolver {
    certs: Arc<InForce>,
    fallback: String,
}

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let certs = self.certs.get();
        Some(
            certs
                .pick(hello.server_name(), Some(self.fallback.as_str()))
                .key
                .clone(),
        )
    }
}

/// New certificates that cannot replace those in force.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// The domains served are fixed at start.
    #[error("the certificates are for other domains ({0}) than those served")]
    OtherDomains(String),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// TLS as the server offers it.
#[derive(Clone)]
pub struct TlsSettings {
    pub starttls: StartTls,
    /// Shared with every acceptor's resolver.
    certs: Arc<InForce>,
    /// The default domain: its acceptor takes Direct TLS.
    default: String,
    /// One per hosted domain, falling back to its certificate (see
    /// [`Resolver`]).
    acceptors: Arc<HashMap<String, TlsAcceptor>>,
}

impl TlsSettings {
    /// `config` makes a rustls configuration around a certificate
    /// resolver: protocol versions, ALPN and the like are the host
    /// program's to choose. It is called once per hosted domain.
    pub fn new(
        starttls: StartTls,
        certs: Certificates,
        config: impl Fn(Arc<dyn rustls::server::ResolvesServerCert>) -> Result<rustls::ServerConfig, rustls::Error>,
    ) -> Result<TlsSettings, rustls::Error> {
        let default = certs.default.clone();
        let domains: Vec<String> = certs.by_domain.keys().cloned().collect();
        let certs = Arc::new(InForce(RwLock::new(Arc::new(certs))));
        let mut acceptors = HashMap::with_capacity(domains.len());
        for domain in domains {
            let resolver = Arc::new(Resolver {
                certs: certs.clone(),
                fallback: domain.clone(),
            });
            acceptors.insert(domain, TlsAcceptor::from(Arc::new(config(resolver)?)));
        }
        Ok(TlsSettings {
            starttls,
            certs,
            default,
            acceptors: Arc::new(acceptors),
        })
    }

    /// The acceptor for a stream to `domain`; `None` (Direct TLS: no
    /// header before the handshake) falls back to the default domain.
    pub fn acceptor(&self, domain: Option<&str>) -> TlsAcceptor {
        let fallback = domain
            .filter(|d| self.acceptors.contains_key(*d))
            .unwrap_or(self.default.as_str());
        self.acceptors[fallback].clone()
    }

    /// The certificates in force.
    pub fn certificates(&self) -> Arc<Certificates> {
        self.certs.get()
    }

    /// Serves `certs` from the next handshake on (a renewed certificate):
    /// connections already encrypted keep theirs. They must be for the
    /// domains served, the same default first.
    pub fn set_certificates(&self, certs: Certificates) -> Result<(), ReplaceError> {
        let same = certs.default == self.default
            && certs.by_domain.len() == self.acceptors.len()
            && certs.by_domain.keys().all(|d| self.acceptors.contains_key(d));
        if !same {
            let mut domains: Vec<&str> = certs.by_domain.keys().map(String::as_str).collect();
            domains.sort_unstable();
            return Err(ReplaceError::OtherDomains(domains.join(", ")));
        }
        *self.certs.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certs);
        Ok(())
    }
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("starttls", &self.starttls)
            .finish_non_exhaustive()
    }
}

/// The channel bindings of one TLS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelBindings {
    /// `tls-exporter` (RFC 9266), only defined for TLS 1.3.
    pub exporter: Option<Vec<u8>>,
    pub server_end_point: Vec<u8>,
    /// The certificate chain the peer presented, leaf first (a server's,
    /// on server-to-server streams; clients rarely send one).
    pub peer_certificates: Option<Vec<CertificateDer<'static>>>,
}

impl ChannelBindings {
    /// The data for a binding type, if this connection has it.
    pub fn get(&self, kind: &str) -> Option<&[u8]> {
        match kind {
            "tls-exporter" => self.exporter.as_deref(),
            "tls-server-end-point" => Some(&self.server_end_point),
            _ => None,
        }
    }

    /// The types on offer, best first (XEP-0440).
    pub fn types(&self) -> Vec<&'static str> {
        let mut t = Vec::new();
        if self.exporter.is_some() {
            t.push("tls-exporter");
        }
        t.push("tls-server-end-point");
        t
    }
}

/// The stream under a connection.
pub enum Io {
    Tcp(TcpStream),
    /// Direct TLS: the handshake comes first.
    TlsPending(TcpStream, TlsAcceptor),
    Tls(Box<TlsStream<TcpStream>>),
    /// A stream we opened (to another server): we are the TLS client.
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// RFC 7395: the HTTP server's WebSocket, framed at its edges.
    WebSocket(Box<super::websocket::WebSocketIo>),
    /// Gone (after a failed upgrade).
    Closed,
}

impl Io {
    /// Runs the server side of a TLS handshake over a plain stream.
    pub(crate) async fn upgrade(self, acceptor: TlsAcceptor) -> io::Result<Io> {
        match self {
            Io::Tcp(tcp) | Io::TlsPending(tcp, _) => Ok(Io::Tls(Box::new(acceptor.accept(tcp).await?))),
            _ => Err(io::Error::other("not a plain stream")),
        }
    }

    /// Runs the client side of a TLS handshake over a plain stream.
    pub(crate) async fn upgrade_client(self, connector: TlsConnector, name: ServerName<'static>) -> io::Result<Io> {
        match self {
            Io::Tcp(tcp) => Ok(Io::TlsClient(Box::new(connector.connect(name, tcp).await?))),
            _ => Err(io::Error::other("not a plain stream")),
        }
    }

    /// Reads what is there into `buf`, growing it by `chunk` if it is full.
    /// Over plain TCP nothing is allocated until the socket is readable, so
    /// that an idle connection holds no read buffer. Cancel-safe.
    pub(crate) async fn read_some(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        match self {
            // poll_read_ready rather than readable(): its future would add
            // 150 bytes to every connection's task.
            Io::Tcp(tcp) => {
                std::future::poll_fn(|cx| loop {
                    if let Err(e) = std::task::ready!(tcp.poll_read_ready(cx)) {
                        return Poll::Ready(Err(e));
                    }
                    if buf.capacity() == buf.len() {
                        buf.reserve(chunk);
                    }
                    match tcp.try_read_buf(buf) {
                        // Not ready after all; the readiness is cleared.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if buf.is_empty() {
                                *buf = BytesMut::new();
                            }
                        }
                        done => return Poll::Ready(done),
                    }
                })
                .await
            }
            other => {
                if buf.capacity() == buf.len() {
                    buf.reserve(chunk);
                }
                // Polled in place: a read_buf() future would grow every
                // connection's task, and boxing it allocates per read.
                std::future::poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *other), cx, buf)).await
            }
        }
    }

    /// What carries the stream, as far as a session is concerned.
    pub(crate) fn transport(&self) -> Transport {
        match self {
            Io::WebSocket(ws) if ws.is_secure() => Transport::WebSocketTls,
            Io::WebSocket(_) => Transport::WebSocket,
            Io::TlsPending(..) | Io::Tls(_) | Io::TlsClient(_) => Transport::Tls,
            Io::Tcp(_) | Io::Closed => Transport::Tcp,
        }
    }

    /// The channel bindings, once TLS is up. As the server of a stream to
    /// `stream_domain`, `tls-server-end-point` hashes the certificate that
    /// was served, picked as the handshake picked it; as a client (a link
    /// to another server), there is none.
    pub(crate) fn channel_bindings(
        &self,
        tls: Option<&TlsSettings>,
        stream_domain: Option<&str>,
    ) -> Option<ChannelBindings> {
        match self {
            Io::Tls(stream) => {
                let conn = stream.get_ref().1;
                // Picked again from those in force: a reload between the
                // handshake and here (a moment) would give the new
                // certificate's hash, and that login's -PLUS would fail.
                let served = tls.map(|t| {
                    let certs = t.certificates();
                    certs.pick(conn.server_name(), stream_domain).server_end_point.clone()
                });
                Some(bindings_of(conn, served.unwrap_or_default()))
            }
            Io::TlsClient(stream) => Some(bindings_of(stream.get_ref().1, Vec::new())),
            _ => None,
        }
    }
}

/// The channel bindings of a TLS connection, either side.
fn bindings_of<D>(conn: &rustls::ConnectionCommon<D>, server_end_point: Vec<u8>) -> ChannelBindings {
    let exporter = (conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3))
        .then(|| {
            conn.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                .ok()
        })
        .flatten();
    ChannelBindings {
        exporter,
        server_end_point,
        peer_certificates: conn
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect()),
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) | Io::TlsPending(s, _) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::WebSocket(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) | Io::TlsPending(s, _) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::WebSocket(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) | Io::TlsPending(s, _) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::WebSocket(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) | Io::TlsPending(s, _) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::WebSocket(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Closed => Poll::Ready(Ok(())),
        }
    }
}
