//! A client connection's byte stream: plain TCP, TLS (RFC 6120 §5
//! STARTTLS, or XEP-0368 Direct TLS), and the channel-binding data a TLS
//! connection gives SCRAM-PLUS (RFC 5929, RFC 9266).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// When clients may, or must, negotiate TLS on a plain listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartTls {
    Off,
    Optional,
    Required,
}

/// TLS as the server offers it.
#[derive(Clone)]
pub struct TlsSettings {
    pub acceptor: TlsAcceptor,
    pub starttls: StartTls,
    /// `tls-server-end-point` data: the hash of our certificate (RFC 5929
    /// §4.1), the same for every connection.
    pub server_end_point: Vec<u8>,
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
    /// Gone (after a failed upgrade).
    Closed,
}

impl Io {
    /// Runs the server side of a TLS handshake over a plain stream.
    pub(crate) async fn upgrade(self, acceptor: TlsAcceptor) -> io::Result<Io> {
        match self {
            Io::Tcp(tcp) | Io::TlsPending(tcp, _) => Ok(Io::Tls(Box::new(acceptor.accept(tcp).await?))),
            Io::Tls(_) | Io::TlsClient(_) | Io::Closed => Err(io::Error::other("not a plain stream")),
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

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Io::Tls(_) | Io::TlsClient(_))
    }

    /// The channel bindings, once TLS is up.
    pub(crate) fn channel_bindings(&self, server_end_point: &[u8]) -> Option<ChannelBindings> {
        match self {
            Io::Tls(tls) => Some(bindings_of(tls.get_ref().1, server_end_point)),
            Io::TlsClient(tls) => Some(bindings_of(tls.get_ref().1, server_end_point)),
            _ => None,
        }
    }
}

/// The channel bindings of a TLS connection, either side.
fn bindings_of<D>(conn: &rustls::ConnectionCommon<D>, server_end_point: &[u8]) -> ChannelBindings {
    let exporter = (conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3))
        .then(|| {
            conn.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                .ok()
        })
        .flatten();
    ChannelBindings {
        exporter,
        server_end_point: server_end_point.to_vec(),
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
            Io::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) | Io::TlsPending(s, _) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) | Io::TlsPending(s, _) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Closed => Poll::Ready(Ok(())),
        }
    }
}
