//! A minimal async XMPP client for load: raw stanzas, PLAIN or SCRAM with
//! cached salted passwords, source addresses spread over 127.0.0.x, and
//! stream management (XEP-0198) when asked for.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures_util::StreamExt;
use shoal_actors::codec::{CodecLimits, Frame, XmppCodec};
use shoal_actors::ns;
use shoal_actors::sasl::{ScramClient, ScramHash};
use shoal_actors::xml::Element;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_util::codec::FramedRead;

/// How long any single expected reply may take before the run is failed.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a closing stream waits for the server's close.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("connection closed while waiting for {0}")]
    Closed(&'static str),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// Where and how to log in.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub domain: String,
    pub password: String,
    /// Source addresses 127.0.0.1 ..= 127.0.0.N, to pass the ephemeral
    /// port limit of one address.
    pub sources: u8,
    pub scram: bool,
    /// Over a WebSocket (RFC 7395) at this path of `addr`, instead of TCP.
    pub websocket: Option<String>,
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Stream management's namespace (XEP-0198).
pub const SM: &str = "urn:xmpp:sm:3";

pub struct Conn {
    rx: FramedRead<Reader, XmppCodec>,
    tx: Writer,
    /// Bytes a write has not taken yet: a cancelled write loses nothing,
    /// the next one goes on from here.
    pending: Vec<u8>,
    /// Stream management, once enabled.
    sm: Option<Sm>,
}

/// A client's side of stream management (XEP-0198), from `<enabled/>` on.
/// No resumption: a client that asks for none.
#[derive(Debug, Default)]
struct Sm {
    /// Stanzas received, mod 2^32: the `h` of our `<a/>`.
    received: u32,
    /// The `h` of the server's last `<a/>`.
    acked: u32,
    /// Stanzas sent and not yet acknowledged, oldest first, as a client
    /// keeps them to send again.
    unacked: VecDeque<String>,
}

impl Sm {
    /// Counts a stanza from the server, or takes its request or
    /// acknowledgement: the answer to write, if any.
    fn handle(&mut self, el: &Element) -> Result<Option<String>, LoadError> {
        if el.ns() != SM {
            if matches!(el.name(), "message" | "presence" | "iq") {
                self.received = self.received.wrapping_add(1);
            }
            return Ok(None);
        }
        match el.name() {
            "r" => Ok(Some(self.ack())),
            "a" => {
                let h: u32 = el
                    .attr("h")
                    .and_then(|h| h.parse().ok())
                    .ok_or_else(|| LoadError::Unexpected(el.to_string()))?;
                let newly = h.wrapping_sub(self.acked) as usize;
                if newly > self.unacked.len() {
                    return Err(LoadError::Unexpected(format!(
                        "<a h='{h}'/> acknowledges {newly} stanzas, but {} were unacknowledged",
                        self.unacked.len()
                    )));
                }
                self.unacked.drain(..newly);
                self.acked = h;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn ack(&self) -> String {
        format!("<a xmlns='{SM}' h='{}'/>", self.received)
    }
}

/// A request or an acknowledgement: stream management's own traffic,
/// which [`Conn::next`] answers and [`Conn::stanza`] passes over.
fn is_ack_traffic(el: &Element) -> bool {
    el.ns() == SM && matches!(el.name(), "r" | "a")
}

fn open(domain: &str) -> String {
    format!(
        "<stream:stream to='{domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

/// The SCRAM variant to use: SHA-256 if the server offers it, else SHA-1.
pub fn scram_offered(features: &Element) -> (ScramHash, &'static str) {
    let offered = |name: &str| {
        features
            .get_child("mechanisms", ns::SASL)
            .is_some_and(|m| m.children().any(|c| c.text() == name))
    };
    if offered("SCRAM-SHA-256") || !offered("SCRAM-SHA-1") {
        (ScramHash::Sha256, "SCRAM-SHA-256")
    } else {
        (ScramHash::Sha1, "SCRAM-SHA-1")
    }
}

/// The mechanism `--scram` logins use against this server.
pub async fn scram_mechanism(target: &Target) -> Result<&'static str, LoadError> {
    let mut c = Conn::connect(target, 0).await?;
    let features = c.open_stream(&target.domain).await?;
    let _ = c.send("</stream:stream>").await;
    Ok(scram_offered(&features).1)
}

impl Conn {
    /// Connects from source address number `n`.
    pub async fn connect(target: &Target, n: usize) -> Result<Conn, LoadError> {
        let socket = TcpSocket::new_v4()?;
        if target.addr.ip().is_loopback() && target.sources > 1 {
            let last = 1 + (n % usize::from(target.sources)) as u8;
            socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0))?;
        }
        let stream = socket.connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let (r, w): (Reader, Writer) = match &target.websocket {
            None => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
            Some(path) => {
                let (r, w) = tokio::io::split(super::websocket::connect(stream, target.addr, path).await?);
                (Box::new(r), Box::new(w))
            }
        };
        Ok(Conn {
            rx: FramedRead::new(r, XmppCodec::new(CodecLimits::default())),
            tx: w,
            pending: Vec::new(),
            sm: None,
        })
    }

    /// The next frame. With stream management on, stanzas are counted and
    /// the server's `<r/>` answered before it is returned. Cancel-safe (it
    /// may be one branch of a `select!`).
    pub async fn next(&mut self, what: &'static str) -> Result<Frame, LoadError> {
        // An answer whose write was cancelled goes out first.
        self.flush().await?;
        let frame = match tokio::time::timeout(REPLY_TIMEOUT, self.rx.next()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => return Err(LoadError::Unexpected(e.to_string())),
            Ok(None) => return Err(LoadError::Closed(what)),
            Err(_) => return Err(LoadError::Timeout(what)),
        };
        let answer = match (&mut self.sm, &frame) {
            (Some(sm), Frame::Stanza(el)) => sm.handle(el)?,
            _ => None,
        };
        if let Some(answer) = answer {
            self.pending.extend_from_slice(answer.as_bytes());
            self.flush().await?;
        }
        Ok(frame)
    }

    /// The next stanza (skipping nothing but stream management's requests
    /// and acknowledgements).
    pub async fn stanza(&mut self, what: &'static str) -> Result<Element, LoadError> {
        loop {
            match self.next(what).await? {
                Frame::Stanza(el) if self.sm.is_some() && is_ack_traffic(&el) => {}
                Frame::Stanza(el) => return Ok(el),
                other => return Err(LoadError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    /// Writes `s` (after anything pending). Cancel-safe: what is not yet
    /// written stays pending.
    pub async fn send(&mut self, s: &str) -> Result<(), LoadError> {
        if self.pending.is_empty() {
            // The usual case: straight from the caller's string.
            let n = self.tx.write(s.as_bytes()).await?;
            if n == s.len() {
                return Ok(());
            }
            self.pending.extend_from_slice(&s.as_bytes()[n..]);
        } else {
            self.pending.extend_from_slice(s.as_bytes());
        }
        self.flush().await
    }

    /// Writes what is pending; each write takes its bytes off at once, so
    /// a cancelled flush loses nothing.
    async fn flush(&mut self) -> Result<(), LoadError> {
        while !self.pending.is_empty() {
            let n = self.tx.write(&self.pending).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            self.pending.drain(..n);
        }
        Ok(())
    }

    /// Sends one stanza. With stream management on, it is counted and kept
    /// until the server acknowledges it.
    pub async fn send_stanza(&mut self, stanza: String) -> Result<(), LoadError> {
        self.send(&stanza).await?;
        if let Some(sm) = &mut self.sm {
            sm.unacked.push_back(stanza);
        }
        Ok(())
    }

    /// Enables stream management (XEP-0198, without resumption), after
    /// binding: from then on `next` counts the stanzas received and answers
    /// the server's `<r/>`, and `send_stanza` keeps each stanza until the
    /// server's `<a/>` covers it. (Stanzas written with `send` are not
    /// counted: with stream management on, use `send_stanza`.)
    pub async fn enable_sm(&mut self) -> Result<(), LoadError> {
        self.send(&format!("<enable xmlns='{SM}'/>")).await?;
        let reply = self.stanza("stream management enabled").await?;
        if !reply.is("enabled", SM) {
            return Err(LoadError::Unexpected(reply.to_string()));
        }
        self.sm = Some(Sm::default());
        Ok(())
    }

    /// Asks the server how many of our stanzas it has handled; its `<a/>`
    /// comes through `next`.
    pub async fn request_ack(&mut self) -> Result<(), LoadError> {
        self.send(&format!("<r xmlns='{SM}'/>")).await
    }

    /// Acknowledges every stanza received so far, unasked (nothing without
    /// stream management).
    pub async fn send_ack(&mut self) -> Result<(), LoadError> {
        match self.sm.as_ref().map(Sm::ack) {
            Some(ack) => self.send(&ack).await,
            None => Ok(()),
        }
    }

    pub fn sm_enabled(&self) -> bool {
        self.sm.is_some()
    }

    /// Stanzas sent and not yet acknowledged (0 without stream management).
    pub fn unacked(&self) -> usize {
        self.sm.as_ref().map_or(0, |sm| sm.unacked.len())
    }

    async fn open_stream(&mut self, domain: &str) -> Result<Element, LoadError> {
        self.send(&open(domain)).await?;
        match self.next("stream header").await? {
            Frame::StreamOpen(_) => {}
            other => return Err(LoadError::Unexpected(format!("{other:?}"))),
        }
        self.stanza("stream features").await
    }

    /// Sends initial presence and waits for the server's echo of it to the
    /// user's own resource: from then on the session is available.
    pub async fn available(&mut self) -> Result<(), LoadError> {
        self.send_stanza("<presence/>".to_owned()).await?;
        loop {
            if let Frame::Stanza(el) = self.next("presence echo").await? {
                if el.name() == "presence" {
                    return Ok(());
                }
            }
        }
    }

    /// Closes the stream and waits, for at most `CLOSE_TIMEOUT`, for the
    /// server to close its side: by then the server has ended the session.
    /// Best effort: the connection is dropped either way. With stream
    /// management, what was received is acknowledged first, so that the
    /// server has nothing to send again or keep offline.
    pub async fn close(mut self) -> Result<(), LoadError> {
        let last_ack = self.sm.as_ref().map(Sm::ack).unwrap_or_default();
        self.send(&format!("{last_ack}</stream:stream>")).await?;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            // Whatever was in flight (presence, pushes) is skipped; a reset
            // after our close is a close too.
            while let Some(Ok(frame)) = self.rx.next().await {
                if frame == Frame::StreamClose {
                    break;
                }
            }
        })
        .await;
        Ok(())
    }

    /// XEP-0077 registration on a fresh stream; an existing account is fine.
    pub async fn register(target: &Target, n: usize, user: &str) -> Result<(), LoadError> {
        let mut c = Conn::connect(target, n).await?;
        c.open_stream(&target.domain).await?;
        c.send(&format!(
            "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username>\
             <password>{}</password></query></iq>",
            target.password
        ))
        .await?;
        let reply = c.stanza("registration result").await?;
        let conflict = reply
            .get_child("error", ns::CLIENT)
            .is_some_and(|e| e.has_child("conflict", ns::STANZAS_ERRORS));
        if reply.attr("type") != Some("result") && !conflict {
            return Err(LoadError::Unexpected(reply.to_string()));
        }
        let _ = c.send("</stream:stream>").await;
        Ok(())
    }

    /// Authenticates, binds `resource`, and (if `available`) sends initial
    /// presence. `salted` caches the SCRAM salted password across logins.
    pub async fn login(
        target: &Target,
        n: usize,
        user: &str,
        resource: &str,
        salted: Option<Vec<u8>>,
    ) -> Result<(Conn, Option<Vec<u8>>), LoadError> {
        let mut c = Conn::connect(target, n).await?;
        let features = c.open_stream(&target.domain).await?;
        let mut cache = None;
        if target.scram {
            // SCRAM-SHA-256 where offered; ejabberd keeps one hash's keys
            // per account (SHA-1 by default) and offers only that one.
            let (hash, mechanism) = scram_offered(&features);
            let mut scram = ScramClient::new(hash, user, &target.password);
            if let Some(s) = salted {
                scram = scram.with_salted_password(s);
            }
            c.send(&format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{}</auth>",
                B64.encode(scram.client_first())
            ))
            .await?;
            let challenge = c.stanza("SASL challenge").await?;
            let server_first = String::from_utf8_lossy(&B64.decode(challenge.text()).unwrap_or_default()).into_owned();
            let (client_final, s) = scram
                .client_final(&server_first)
                .map_err(|e| LoadError::Unexpected(e.to_string()))?;
            cache = Some(s);
            c.send(&format!(
                "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                B64.encode(client_final)
            ))
            .await?;
        } else {
            let auth = B64.encode(format!("\0{user}\0{}", target.password));
            c.send(&format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
            ))
            .await?;
        }
        let outcome = c.stanza("SASL outcome").await?;
        if outcome.name() != "success" {
            return Err(LoadError::Unexpected(outcome.to_string()));
        }
        c.open_stream(&target.domain).await?;
        c.send(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await?;
        let bound = c.stanza("bind result").await?;
        if bound.attr("type") != Some("result") {
            return Err(LoadError::Unexpected(bound.to_string()));
        }
        Ok((c, cache))
    }

    /// Logs in (nothing cached), enables stream management if `sm`, and
    /// sends initial presence: a client ready to chat.
    pub async fn online(target: &Target, n: usize, user: &str, resource: &str, sm: bool) -> Result<Conn, LoadError> {
        let (mut c, _) = Conn::login(target, n, user, resource, None).await?;
        if sm {
            c.enable_sm().await?;
        }
        c.available().await?;
        Ok(c)
    }
}

/// Closes every connection at once, each waiting for the server's close.
pub async fn close_all(conns: Vec<Conn>) -> Result<(), LoadError> {
    let closing: Vec<_> = conns.into_iter().map(|c| tokio::spawn(c.close())).collect();
    for c in closing {
        c.await.map_err(|e| LoadError::Unexpected(e.to_string()))??;
    }
    Ok(())
}
