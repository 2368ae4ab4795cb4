//! A minimal async XMPP client for load: raw stanzas, PLAIN or SCRAM with
//! cached salted passwords, source addresses spread over 127.0.0.x.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures_util::StreamExt;
use shoal_actors::codec::{CodecLimits, Frame, XmppCodec};
use shoal_actors::ns;
use shoal_actors::sasl::{ScramClient, ScramHash};
use shoal_actors::xml::Element;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
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
}

pub struct Conn {
    rx: FramedRead<OwnedReadHalf, XmppCodec>,
    tx: OwnedWriteHalf,
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
        let (r, w) = stream.into_split();
        Ok(Conn {
            rx: FramedRead::new(r, XmppCodec::new(CodecLimits::default())),
            tx: w,
        })
    }

    pub async fn next(&mut self, what: &'static str) -> Result<Frame, LoadError> {
        match tokio::time::timeout(REPLY_TIMEOUT, self.rx.next()).await {
            Ok(Some(Ok(f))) => Ok(f),
            Ok(Some(Err(e))) => Err(LoadError::Unexpected(e.to_string())),
            Ok(None) => Err(LoadError::Closed(what)),
            Err(_) => Err(LoadError::Timeout(what)),
        }
    }

    /// The next stanza (skipping nothing).
    pub async fn stanza(&mut self, what: &'static str) -> Result<Element, LoadError> {
        match self.next(what).await? {
            Frame::Stanza(el) => Ok(el),
            other => Err(LoadError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn send(&mut self, s: &str) -> Result<(), LoadError> {
        Ok(self.tx.write_all(s.as_bytes()).await?)
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
        self.send("<presence/>").await?;
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
    /// Best effort: the connection is dropped either way.
    pub async fn close(mut self) -> Result<(), LoadError> {
        self.send("</stream:stream>").await?;
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
}
