//! XMPP over WebSocket (RFC 7395) as one more byte stream under the c2s
//! machinery. The HTTP server owns the WebSocket and exchanges whole text
//! frames with [`WebSocketIo`] over two small channels ([`WebSocketEnds`]);
//! `WebSocketIo` reads and writes like a socket, translating at its edges:
//!
//! - in: `<open/>` becomes the stream header and `<close/>` the stream's
//!   end (§3.3, §3.6), so the codec, SASL, limits, stream management and
//!   the c2s actor are those of TCP clients, unchanged;
//! - out: what the stream writes is cut into its top-level elements, one
//!   per frame (§3.3.3); the header becomes `<open/>`, the end `<close/>`,
//!   and each element declares the namespaces it relies on, since every
//!   frame is a document of its own.
//!
//! Reading waits while the stream has a frame it has not consumed, and
//! writing waits while the HTTP side has not taken the frames: both
//! directions keep the backpressure of a socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::ns;
use crate::xml::{escape_attr, parse_element, NsBindings, ParseLimits};

/// RFC 7395's namespace of `<open/>` and `<close/>`.
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// The WebSocket subprotocol (RFC 7395 §3.1).
pub const SUBPROTOCOL: &str = "xmpp";

/// Frames waiting on either side: enough to keep a busy stream moving,
/// few enough that a peer that stops reading stops us reading too.
const INBOUND_FRAMES: usize = 2;
const OUTBOUND_FRAMES: usize = 16;

/// The HTTP side of a WebSocket stream: frames from the peer go in
/// `inbound` (dropped: the peer closed), frames for it come out of
/// `outbound` (ended: the stream is closed; close the WebSocket).
pub struct WebSocketEnds {
    pub inbound: mpsc::Sender<Bytes>,
    pub outbound: mpsc::Receiver<Bytes>,
}

/// The stream side of a WebSocket: see the module's documentation.
pub struct WebSocketIo {
    inbound: mpsc::Receiver<Bytes>,
    /// Translated bytes of the last frame, not yet read.
    unread: Bytes,
    outbound: PollSender<Bytes>,
    /// Whole frames not yet taken by the channel.
    frames: std::collections::VecDeque<Bytes>,
    /// Written bytes not yet a whole element.
    partial: BytesMut,
    splitter: Splitter,
    /// Served over HTTPS: as good as a TLS stream for what it may offer.
    secure: bool,
}

/// A WebSocket stream's two halves.
pub fn pair(secure: bool) -> (WebSocketIo, WebSocketEnds) {
    let (in_tx, in_rx) = mpsc::channel(INBOUND_FRAMES);
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_FRAMES);
    let io = WebSocketIo {
        inbound: in_rx,
        unread: Bytes::new(),
        outbound: PollSender::new(out_tx),
        frames: Default::default(),
        partial: BytesMut::new(),
        splitter: Splitter::default(),
        secure,
    };
    (
        io,
        WebSocketEnds {
            inbound: in_tx,
            outbound: out_rx,
        },
    )
}

impl WebSocketIo {
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Hands the frames made so far to the channel; Ready once all are.
    fn poll_frames(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(frame) = self.frames.front() {
            if std::task::ready!(self.outbound.poll_reserve(cx)).is_err() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let frame = frame.clone();
            self.frames.pop_front();
            if self.outbound.send_item(frame).is_err() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for WebSocketIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unread.is_empty() {
            match std::task::ready!(this.inbound.poll_recv(cx)) {
                Some(frame) => this.unread = inbound(&frame),
                // The peer closed the WebSocket: end of stream.
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WebSocketIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was cut before goes first: frames stay in order, and at
        // most one write's worth waits here.
        std::task::ready!(this.poll_frames(cx))?;
        this.partial.extend_from_slice(buf);
        let frames = &mut this.frames;
        this.splitter
            .split(&mut this.partial, |element| frames.push_back(outbound(element)));
        // Taken: the frames go out on the next write or flush.
        let _ = this.poll_frames(cx)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_frames(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_frames(cx))?;
        // The HTTP side sees the channel end and closes the WebSocket.
        this.outbound.close();
        Poll::Ready(Ok(()))
    }
}

/// A frame from the peer as the codec reads it: `<open/>` as the stream
/// header, `<close/>` as its end, anything else as it came. An `<open/>`
/// that does not parse, or is in another namespace, is passed as it came:
/// the codec answers it with the stream error a bad header gets.
fn inbound(frame: &[u8]) -> Bytes {
    let trimmed = frame.trim_ascii();
    // A stanza (most frames) is passed on after two byte comparisons.
    let framing = |tag: &[u8], name: &str| {
        if !trimmed.starts_with(tag) {
            return None;
        }
        // One element with a few attributes: tight limits.
        let limits = ParseLimits {
            max_depth: 1,
            max_attrs: 16,
            max_name_bytes: 64,
        };
        parse_element(trimmed, &NsBindings::empty(), &limits)
            .ok()
            .filter(|el| el.is(name, FRAMING) && el.nodes().is_empty())
    };
    if let Some(open) = framing(b"<open", "open") {
        let mut header = format!("<stream:stream xmlns='{}' xmlns:stream='{}'", ns::CLIENT, ns::STREAM);
        for (name, value) in open.attrs().filter(|(n, _)| !n.starts_with("xmlns")) {
            header.push_str(&format!(" {name}='{}'", escape_attr(value)));
        }
        header.push('>');
        return Bytes::from(header);
    }
    if framing(b"<close", "close").is_some() {
        return Bytes::from_static(b"</stream:stream>");
    }
    Bytes::copy_from_slice(frame)
}

/// One top-level element the stream wrote, as its own frame.
fn outbound(element: &[u8]) -> Bytes {
    const STREAM_END: &[u8] = b"</stream:stream>";
    if element.starts_with(b"<stream:stream") {
        // The header: its attributes on an <open/>, namespaces aside.
        let mut open = format!("<open xmlns='{FRAMING}'").into_bytes();
        for (name, value) in start_tag_attributes(element) {
            if !name.starts_with(b"xmlns") {
                open.push(b' ');
                open.extend_from_slice(name);
                open.extend_from_slice(b"='");
                open.extend_from_slice(value);
                open.push(b'\'');
            }
        }
        open.extend_from_slice(b"/>");
        return Bytes::from(open);
    }
    if element == STREAM_END {
        return Bytes::from(format!("<close xmlns='{FRAMING}'/>"));
    }
    // Features and errors use the stream's prefix; stanzas its default
    // namespace. Either is declared on the element itself, unless it has
    // its own.
    let (name_end, declaration) = if element.starts_with(b"<stream:") {
        (name_end(element), format!(" xmlns:stream='{}'", ns::STREAM))
    } else if start_tag_attributes(element).any(|(name, _)| name == b"xmlns") {
        return Bytes::copy_from_slice(element);
    } else {
        (name_end(element), format!(" xmlns='{}'", ns::CLIENT))
    };
    let mut frame = Vec::with_capacity(element.len() + declaration.len());
    frame.extend_from_slice(&element[..name_end]);
    frame.extend_from_slice(declaration.as_bytes());
    frame.extend_from_slice(&element[name_end..]);
    Bytes::from(frame)
}

/// Where the element's name ends, in an element as we write them.
fn name_end(element: &[u8]) -> usize {
    element
        .iter()
        .position(|b| matches!(b, b' ' | b'>' | b'/' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(element.len())
}

/// The attributes of an element's start tag, as we write them (quoted
/// values, no markup before the tag's end).
fn start_tag_attributes(element: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = &element[name_end(element)..];
    std::iter::from_fn(move || {
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        rest = &rest[start..];
        if matches!(rest.first(), Some(b'>' | b'/')) {
            return None;
        }
        let eq = rest.iter().position(|&b| b == b'=')?;
        let name = rest[..eq].trim_ascii();
        let quote = *rest.get(eq + 1)?;
        let value_start = eq + 2;
        let len = rest.get(value_start..)?.iter().position(|&b| b == quote)?;
        let value = &rest[value_start..value_start + len];
        rest = &rest[value_start + len + 1..];
        Some((name, value))
    })
}

/// Cuts the bytes the stream writes into top-level elements. They are our
/// own serialisation: well formed, no comments or CDATA, `>` only inside
/// quotes or at a tag's end. The stream's header and end are elements of
/// their own here; the XML declaration and whitespace between elements
/// (keepalives) are dropped: RFC 7395 frames carry elements only.
#[derive(Default)]
struct Splitter {
    /// Bytes of `partial` already scanned.
    pos: usize,
    /// Open elements at `pos`.
    depth: usize,
    /// Inside a tag: which kind, and the quote we are in, if any.
    tag: Option<Tag>,
    quote: Option<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tag {
    Start,
    End,
    /// `<?...?>`: the XML declaration.
    Declaration,
}

impl Splitter {
    /// Emits each whole top-level element of `partial` and removes it (and
    /// what came before it); keeps an unfinished one.
    fn split(&mut self, partial: &mut BytesMut, mut emit: impl FnMut(&[u8])) {
        let mut start = 0;
        while self.pos < partial.len() {
            let b = partial[self.pos];
            self.pos += 1;
            match (self.tag, self.quote) {
                (Some(_), Some(q)) => {
                    if b == q {
                        self.quote = None;
                    }
                }
                (Some(tag), None) => match b {
                    b'\'' | b'"' => self.quote = Some(b),
                    b'>' => {
                        self.tag = None;
                        let whole = &partial[start..self.pos];
                        let top = match tag {
                            Tag::Declaration => {
                                start = self.pos;
                                continue;
                            }
                            // The header and end of the stream stand alone.
                            _ if whole.starts_with(b"<stream:stream") || whole.starts_with(b"</stream:stream") => true,
                            Tag::End => {
                                self.depth = self.depth.saturating_sub(1);
                                self.depth == 0
                            }
                            Tag::Start if partial[self.pos - 2] == b'/' => self.depth == 0,
                            Tag::Start => {
                                self.depth += 1;
                                false
                            }
                        };
                        if top {
                            emit(whole);
                            start = self.pos;
                        }
                    }
                    _ => {}
                },
                (None, _) => {
                    if b == b'<' {
                        if self.depth == 0 {
                            // Whitespace before a top-level element is dropped.
                            start = self.pos - 1;
                        }
                        self.tag = Some(match partial.get(self.pos) {
                            Some(b'/') => Tag::End,
                            Some(b'?') => Tag::Declaration,
                            _ => Tag::Start,
                        });
                    } else if self.depth == 0 {
                        start = self.pos;
                    }
                }
            }
        }
        let _ = partial.split_to(start);
        self.pos -= start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(written: &[&str]) -> Vec<String> {
        let mut splitter = Splitter::default();
        let mut partial = BytesMut::new();
        let mut out = Vec::new();
        for w in written {
            partial.extend_from_slice(w.as_bytes());
            splitter.split(&mut partial, |el| {
                out.push(String::from_utf8(outbound(el).to_vec()).unwrap())
            });
        }
        out
    }

    #[test]
    fn the_header_becomes_open_and_the_end_close() {
        let out = frames(&[
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='localhost' version='1.0' xml:lang='en'>",
            "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
            "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
        ]);
        assert_eq!(
            out,
            [
                "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='abc' from='localhost' version='1.0' xml:lang='en'/>",
                "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
                "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
                "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
            ]
        );
    }

    #[test]
    fn stanzas_are_cut_one_per_frame_and_declare_their_namespace() {
        let out = frames(&[
            "<message to='a@b' type='chat'><body>x &gt; y</body></message><presence/> ",
            "<iq id='1' type='result'><query xmlns='jabber:iq:roster'><item jid='c@d' name=\"it's > 2\"/></query>",
            "</iq><r xmlns='urn:xmpp:sm:3'/>",
        ]);
        assert_eq!(
            out,
            [
                "<message xmlns='jabber:client' to='a@b' type='chat'><body>x &gt; y</body></message>",
                "<presence xmlns='jabber:client'/>",
                "<iq xmlns='jabber:client' id='1' type='result'><query xmlns='jabber:iq:roster'><item jid='c@d' name=\"it's > 2\"/></query></iq>",
                "<r xmlns='urn:xmpp:sm:3'/>",
            ]
        );
    }

    #[test]
    fn open_and_close_frames_become_the_stream_header_and_end() {
        let open = inbound(br#"<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>"#);
        assert_eq!(
            open,
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
        );
        assert_eq!(
            inbound(br#" <close xmlns="urn:ietf:params:xml:ns:xmpp-framing" />"#),
            "</stream:stream>"
        );
        // Another namespace is not the framing's: passed on for the codec to refuse.
        let wrong = br#"<open xmlns="jabber:client" to="localhost"/>"#;
        assert_eq!(inbound(wrong), &wrong[..]);
        let stanza = br#"<message xmlns="jabber:client" to="a@b"><body>hi</body></message>"#;
        assert_eq!(inbound(stanza), &stanza[..]);
    }
}
