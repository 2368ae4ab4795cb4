//! The XML stream codec: frames an endless byte stream into the stream
//! header, one frame per top-level stanza, and the stream's close.
//!
//! quick-xml has no size limits and its async reader is not cancel-safe, so
//! framing is done here by a small state machine over tags, quotes, CDATA,
//! comments and processing instructions. Only a complete stanza is handed
//! to the parser. Memory per connection is bounded by the stanza limit, not
//! by the input: bytes between stanzas (keep-alive whitespace) are dropped
//! as soon as they are read. Structural bytes are all ASCII and never occur
//! inside a multi-byte UTF-8 sequence, so a split anywhere is harmless.
//!
//! Every end tag is checked against its start tag as soon as its `>` is
//! read (RFC 6120 §11.4): a mismatch that never brings the depth back to a
//! stanza boundary would otherwise leave the stream waiting for a limit.

use std::borrow::Cow;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{StreamCondition, StreamError};
use crate::ns;
use crate::xml::{parse_element, Element, NsBindings, ParseLimits};

/// What a peer's stream yields.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// `<stream:stream ...>`: the opening, or a restart (after TLS or SASL).
    StreamOpen(StreamHeader),
    /// A complete top-level element.
    Stanza(Element),
    /// `</stream:stream>`.
    StreamClose,
}

/// The attributes of a stream header, as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// Namespace of the stream element itself (must be the streams namespace).
    pub stream_ns: String,
    /// The default (content) namespace, e.g. `jabber:client`.
    pub default_ns: Option<String>,
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
}

/// Size limits of the codec; shape limits are in [`ParseLimits`].
#[derive(Clone, Copy, Debug)]
pub struct CodecLimits {
    /// Largest stanza, in bytes (RFC 6120 §13.12: at least 10,000).
    pub max_stanza_bytes: usize,
    /// Largest stream header or XML declaration, in bytes.
    pub max_header_bytes: usize,
    pub parse: ParseLimits,
}

impl Default for CodecLimits {
    fn default() -> Self {
        CodecLimits {
            max_stanza_bytes: 256 * 1024,
            max_header_bytes: 4096,
            parse: ParseLimits::default(),
        }
    }
}

/// How nearly every peer names the stream element; kept without allocating.
const STREAM_QNAME: &[u8] = b"stream:stream";

/// XML's white space (S): unlike `u8::is_ascii_whitespace`, no form feed.
fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Length of the name at the start of a tag's body (after `<` or `</`).
fn name_len(body: &[u8]) -> usize {
    body.iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'/' || *b == b'>')
        .unwrap_or(body.len())
}

fn malformed_end_tag() -> StreamError {
    StreamError::with_text(StreamCondition::NotWellFormed, "malformed end tag")
}

fn mismatched_end_tag() -> StreamError {
    StreamError::with_text(StreamCondition::NotWellFormed, "mismatched end tag")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// Character data; `buf[0..pos]` is either part of the current stanza or
    /// already discarded.
    Content,
    /// Inside `<...`, with the quote character we are in, if any.
    Tag { quote: u8 },
    /// Inside `<?...?>`.
    Pi,
    /// Inside `<![CDATA[...]]>`.
    CData,
}

/// The codec for one direction of one stream. Encoding is a plain copy:
/// stanzas are serialised once by whoever routes them.
pub struct XmppCodec {
    limits: CodecLimits,
    /// 0 before the stream header, 1 between stanzas, >1 inside a stanza.
    depth: usize,
    /// Next byte of the buffer to examine.
    pos: usize,
    /// Where the markup being scanned begins (valid outside `Content`).
    markup_start: usize,
    scan: Scan,
    bindings: NsBindings,
    closed: bool,
    /// A component's or a server's stream: its content namespace
    /// (`jabber:component:accept`, XEP-0114; `jabber:server`, RFC 6120
    /// §4.8.2) is read as `jabber:client`, so that its stanzas are ordinary
    /// ones. A one-byte enum, not the namespace: it sits in padding, and
    /// every connection holds a codec.
    content: Content,
    /// The open elements of the stanza in progress, outermost first, as
    /// (offset, length) of their names in the buffer: nothing before a
    /// stanza's start is discarded until the stanza is split off, so the
    /// names need no copies. Released whenever a stanza is framed, so an
    /// idle stream holds no capacity; `depth - 1` entries while in a stanza.
    open: Vec<(u32, u32)>,
    /// The stream element's name as its header wrote it: `</...>` at depth 1
    /// must repeat it to close the stream.
    stream_name: Cow<'static, [u8]>,
}

/// Which content namespace a stream's stanzas are read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    Client,
    Component,
    Server,
}

impl XmppCodec {
    pub fn new(limits: CodecLimits) -> Self {
        XmppCodec {
            limits,
            depth: 0,
            pos: 0,
            markup_start: 0,
            scan: Scan::Content,
            bindings: NsBindings::empty(),
            closed: false,
            content: Content::Client,
            open: Vec::new(),
            stream_name: Cow::Borrowed(&[]),
        }
    }

    /// A codec for a component's stream: when the header's default
    /// namespace is `jabber:component:accept`, stanzas are parsed as if it
    /// were `jabber:client`. The header itself is reported as sent.
    pub fn for_component(mut self) -> Self {
        self.content = Content::Component;
        self
    }

    /// A codec for a server-to-server stream: `jabber:server` is read as
    /// `jabber:client`, as [`XmppCodec::for_component`] does for components.
    /// Prefixes the header binds (`db:`) stay bound.
    pub fn for_server(mut self) -> Self {
        self.content = Content::Server;
        self
    }

    /// Forgets all parser state, as RFC 6120 requires after STARTTLS and SASL
    /// success: the next thing expected is a new stream header.
    pub fn reset(&mut self) {
        *self = XmppCodec {
            content: self.content,
            ..XmppCodec::new(self.limits)
        };
    }

    /// Changes the limits from the next byte on (a component's own, once
    /// it has shaken hands).
    pub(crate) fn set_limits(&mut self, limits: CodecLimits) {
        self.limits = limits;
    }

    fn in_stanza(&self) -> bool {
        self.depth > 1
    }

    fn limit_for_current(&self) -> usize {
        if self.in_stanza() || self.depth == 1 && matches!(self.scan, Scan::Tag { .. }) {
            self.limits.max_stanza_bytes
        } else {
            self.limits.max_header_bytes
        }
    }

    fn check_size(&self) -> Result<(), StreamError> {
        if self.pos > self.limit_for_current() {
            let what = if self.in_stanza() { "stanza" } else { "header" };
            return Err(StreamError::with_text(
                StreamCondition::PolicyViolation,
                format!("{what} exceeds {} bytes", self.limit_for_current()),
            ));
        }
        Ok(())
    }

    /// Drops everything before `upto` when no stanza is in progress (the
    /// offsets in `open` would be wrong otherwise).
    fn discard(&mut self, buf: &mut BytesMut, upto: usize) {
        buf.advance(upto);
        self.pos -= upto;
        self.markup_start -= upto.min(self.markup_start);
    }

    fn header(&mut self, tag: &[u8]) -> Result<StreamHeader, StreamError> {
        // Parse `<stream:stream ...>` as if it were empty, to read attributes.
        let mut owned = tag.to_vec();
        if owned.len() >= 2 {
            owned.truncate(owned.len() - 1);
            owned.extend_from_slice(b"/>");
        }
        let text = std::str::from_utf8(&owned).map_err(|_| StreamError::new(StreamCondition::UnsupportedEncoding))?;
        let mut reader = quick_xml::Reader::from_str(text);
        let start = match reader.read_event() {
            Ok(quick_xml::events::Event::Empty(start)) => start,
            _ => {
                return Err(StreamError::with_text(
                    StreamCondition::NotWellFormed,
                    "bad stream header",
                ))
            }
        };
        let mut bindings = NsBindings::empty();
        let el = crate::xml::open_element(&start, &mut bindings, &self.limits.parse)?;
        let header = StreamHeader {
            stream_ns: el.ns().to_owned(),
            default_ns: bindings.default_ns().map(str::to_owned),
            to: el.attr("to").map(str::to_owned),
            from: el.attr("from").map(str::to_owned),
            id: el.attr("id").map(str::to_owned),
            version: el.attr("version").map(str::to_owned),
            lang: el.attr("xml:lang").map(str::to_owned),
        };
        let alias = match self.content {
            Content::Client => None,
            Content::Component => Some(ns::COMPONENT_ACCEPT),
            Content::Server => Some(ns::SERVER),
        };
        if alias.is_some() && header.default_ns.as_deref() == alias {
            // Later bindings win: stanzas inherit jabber:client.
            bindings.bind(None, ns::CLIENT);
        }
        bindings.shrink_to_fit();
        self.bindings = bindings;
        Ok(header)
    }

    /// Handles a complete start tag `buf[start..=end]`.
    fn start_tag(&mut self, buf: &mut BytesMut, end: usize) -> Result<Option<Frame>, StreamError> {
        let start = self.markup_start;
        let empty = end > start + 1 && buf[end - 1] == b'/';
        let name_end = start + 1 + name_len(&buf[start + 1..end]);
        let qname = &buf[start + 1..name_end];
        let local = qname.rsplit(|b| *b == b':').next().unwrap_or(qname);
        let opens_stream = self.depth <= 1 && local == b"stream" && !empty;
        if opens_stream {
            let header = self.header(&buf[start..=end])?;
            if header.stream_ns != ns::STREAM {
                return Err(StreamError::new(StreamCondition::InvalidNamespace));
            }
            if *self.stream_name != *qname {
                self.stream_name = if qname == STREAM_QNAME {
                    Cow::Borrowed(STREAM_QNAME)
                } else {
                    Cow::Owned(qname.to_vec())
                };
            }
            self.depth = 1;
            self.pos = end + 1;
            self.discard(buf, end + 1);
            return Ok(Some(Frame::StreamOpen(header)));
        }
        match self.depth {
            0 => Err(StreamError::with_text(
                StreamCondition::NotWellFormed,
                "expected a stream header",
            )),
            1 if empty => {
                self.pos = end + 1;
                self.stanza(buf, end + 1).map(Some)
            }
            _ => {
                if !empty {
                    self.depth += 1;
                    if self.depth > self.limits.parse.max_depth + 1 {
                        return Err(StreamError::with_text(
                            StreamCondition::PolicyViolation,
                            "elements nested too deeply",
                        ));
                    }
                    self.push_open(start + 1, name_end - (start + 1))?;
                }
                self.pos = end + 1;
                Ok(None)
            }
        }
    }

    /// Remembers an open element's name, `buf[offset..offset + len]`.
    fn push_open(&mut self, offset: usize, len: usize) -> Result<(), StreamError> {
        match (u32::try_from(offset), u32::try_from(len)) {
            (Ok(offset), Ok(len)) => {
                self.open.push((offset, len));
                Ok(())
            }
            // Only reachable with a stanza limit above 4 GiB.
            _ => Err(StreamError::with_text(
                StreamCondition::PolicyViolation,
                "stanza too large",
            )),
        }
    }

    fn stanza(&mut self, buf: &mut BytesMut, len: usize) -> Result<Frame, StreamError> {
        // The names point into the bytes split off here; dropping the stack
        // (not just clearing it) keeps an idle stream's memory at nothing.
        self.open = Vec::new();
        let bytes: Bytes = buf.split_to(len).freeze();
        self.pos = 0;
        self.markup_start = 0;
        let el = parse_element(&bytes, &self.bindings, &self.limits.parse)?;
        Ok(Frame::Stanza(el))
    }

    /// Handles a complete end tag `buf[markup_start..=end]`.
    fn end_tag(&mut self, buf: &mut BytesMut, end: usize) -> Result<Option<Frame>, StreamError> {
        self.pos = end + 1;
        // `</`, the name, optional white space and `>`: nothing else.
        let body = &buf[self.markup_start + 2..end];
        let (name, rest) = body.split_at(name_len(body));
        if name.is_empty() || !rest.iter().all(|b| is_xml_space(*b)) {
            return Err(malformed_end_tag());
        }
        match self.depth {
            0 => Err(StreamError::with_text(
                StreamCondition::NotWellFormed,
                "unexpected end tag",
            )),
            1 => {
                // A stray `</foo>` between stanzas is not a stream close.
                if *name != *self.stream_name {
                    return Err(mismatched_end_tag());
                }
                self.depth = 0;
                self.closed = true;
                self.discard(buf, end + 1);
                Ok(Some(Frame::StreamClose))
            }
            _ => {
                let open = self
                    .open
                    .pop()
                    .and_then(|(offset, len)| buf.get(offset as usize..)?.get(..len as usize));
                if open != Some(name) {
                    return Err(mismatched_end_tag());
                }
                self.depth -= 1;
                if self.depth == 1 {
                    self.stanza(buf, end + 1).map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Decides what kind of markup starts at `markup_start`, or `None` when
    /// more bytes are needed.
    fn classify(&mut self, buf: &BytesMut) -> Result<Option<Scan>, StreamError> {
        let s = &buf[self.markup_start..];
        let Some(&second) = s.get(1) else {
            return Ok(None);
        };
        let restricted = || {
            StreamError::with_text(
                StreamCondition::RestrictedXml,
                "comments, processing instructions and DTDs are not allowed",
            )
        };
        Ok(Some(match second {
            b'?' => {
                // Only the XML declaration, and only between stanzas.
                if s.len() < 6 {
                    return Ok(None);
                }
                if self.in_stanza() || !(s.starts_with(b"<?xml") && s[5].is_ascii_whitespace()) {
                    return Err(restricted());
                }
                Scan::Pi
            }
            b'!' => {
                const CDATA: &[u8] = b"<![CDATA[";
                let n = s.len().min(CDATA.len());
                if s[..n] != CDATA[..n] {
                    return Err(restricted());
                }
                if n < CDATA.len() {
                    return Ok(None);
                }
                if !self.in_stanza() {
                    return Err(StreamError::with_text(
                        StreamCondition::NotWellFormed,
                        "CDATA outside a stanza",
                    ));
                }
                self.pos = self.markup_start + CDATA.len();
                Scan::CData
            }
            _ => {
                self.pos = self.markup_start + 1;
                Scan::Tag { quote: 0 }
            }
        }))
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, StreamError> {
        loop {
            match self.scan {
                Scan::Content => {
                    let rest = &buf[self.pos..];
                    let found = memchr::memchr(b'<', rest);
                    let text = &rest[..found.unwrap_or(rest.len())];
                    if !self.in_stanza() && !text.iter().all(u8::is_ascii_whitespace) {
                        return Err(StreamError::with_text(
                            StreamCondition::BadFormat,
                            "text outside a stanza",
                        ));
                    }
                    match found {
                        None => {
                            self.pos = buf.len();
                            if !self.in_stanza() {
                                // Keep-alive whitespace: nothing to keep.
                                let upto = self.pos;
                                self.discard(buf, upto);
                            }
                            self.check_size()?;
                            return Ok(None);
                        }
                        Some(i) => {
                            self.pos += i;
                            if !self.in_stanza() {
                                let upto = self.pos;
                                self.discard(buf, upto);
                            }
                            self.markup_start = self.pos;
                            match self.classify(buf)? {
                                Some(scan) => self.scan = scan,
                                None => {
                                    // Re-classify from the '<' once more bytes arrive.
                                    self.pos = self.markup_start;
                                    self.check_size()?;
                                    return Ok(None);
                                }
                            }
                        }
                    }
                }
                Scan::Tag { mut quote } => {
                    let s = &buf[..];
                    // An end tag holds a name and white space only: a quote
                    // there is an error now, not a value to wait out.
                    let closing = s.get(self.markup_start + 1) == Some(&b'/');
                    let mut i = self.pos;
                    let mut end = None;
                    while i < s.len() {
                        let b = s[i];
                        if quote != 0 {
                            if b == quote {
                                quote = 0;
                            } else if b == b'<' {
                                return Err(StreamError::with_text(
                                    StreamCondition::NotWellFormed,
                                    "'<' in attribute value",
                                ));
                            }
                        } else if b == b'"' || b == b'\'' {
                            if closing {
                                return Err(malformed_end_tag());
                            }
                            quote = b;
                        } else if b == b'>' {
                            end = Some(i);
                            break;
                        } else if b == b'<' {
                            return Err(StreamError::with_text(
                                StreamCondition::NotWellFormed,
                                "'<' inside a tag",
                            ));
                        }
                        i += 1;
                    }
                    let Some(end) = end else {
                        self.pos = s.len();
                        self.scan = Scan::Tag { quote };
                        self.check_size()?;
                        return Ok(None);
                    };
                    self.scan = Scan::Content;
                    self.pos = end + 1;
                    self.check_size()?;
                    let frame = if closing {
                        self.end_tag(buf, end)?
                    } else {
                        self.start_tag(buf, end)?
                    };
                    if frame.is_some() {
                        return Ok(frame);
                    }
                    self.check_size()?;
                }
                Scan::Pi | Scan::CData => {
                    let terminator: &[u8] = if self.scan == Scan::Pi { b"?>" } else { b"]]>" };
                    let from = self.pos.saturating_sub(terminator.len() - 1).max(self.markup_start + 2);
                    match memchr::memmem::find(&buf[from..], terminator) {
                        None => {
                            self.pos = buf.len();
                            self.check_size()?;
                            return Ok(None);
                        }
                        Some(i) => {
                            self.pos = from + i + terminator.len();
                            if self.scan == Scan::Pi {
                                // The XML declaration carries nothing we use.
                                let upto = self.pos;
                                self.discard(buf, upto);
                            }
                            self.scan = Scan::Content;
                            self.check_size()?;
                        }
                    }
                }
            }
        }
    }
}

impl Decoder for XmppCodec {
    type Item = Frame;
    type Error = StreamError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, StreamError> {
        if self.closed {
            // Nothing may follow the stream's close; ignore it.
            buf.clear();
            return Ok(None);
        }
        self.step(buf)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, StreamError> {
        let frame = self.decode(buf)?;
        Ok(frame)
    }
}

impl Encoder<Bytes> for XmppCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

impl From<std::io::Error> for StreamError {
    fn from(err: std::io::Error) -> Self {
        StreamError::with_text(StreamCondition::UndefinedCondition, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const TRANSCRIPT: &[u8] = include_bytes!("../../fixtures/transcripts/client-session.xml");

    fn feed(input: &[u8], chunks: impl IntoIterator<Item = usize>) -> Result<Vec<Frame>, StreamError> {
        let mut codec = XmppCodec::new(CodecLimits::default());
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut rest = input;
        for n in chunks {
            let n = n.min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(f) = codec.decode(&mut buf)? {
                frames.push(f);
            }
            if rest.is_empty() {
                break;
            }
        }
        assert!(rest.is_empty(), "input left over");
        Ok(frames)
    }

    fn whole(input: &[u8]) -> Result<Vec<Frame>, StreamError> {
        feed(input, [input.len()])
    }

    fn first_error(input: &str) -> StreamCondition {
        whole(input.as_bytes()).unwrap_err().condition
    }

    #[test]
    fn transcript_frames() {
        let frames = whole(TRANSCRIPT).unwrap();
        let kinds: Vec<String> = frames
            .iter()
            .map(|f| match f {
                Frame::StreamOpen(h) => format!("open {}", h.to.as_deref().unwrap_or("")),
                Frame::Stanza(el) => el.name().to_owned(),
                Frame::StreamClose => "close".to_owned(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "open localhost",
                "auth",
                "open localhost",
                "iq",
                "presence",
                "message",
                "iq",
                "message",
                "iq",
                "close"
            ]
        );
        let Frame::Stanza(msg) = &frames[5] else { panic!() };
        assert_eq!(
            msg.get_child("body", ns::CLIENT).unwrap().text(),
            "Art thou not Romeo, & a Montague? <3 \u{1F339}"
        );
        let Frame::Stanza(raw) = &frames[7] else { panic!() };
        assert_eq!(raw.get_child("body", ns::CLIENT).unwrap().text(), "<b>raw</b> ]");
        let Frame::Stanza(iq) = &frames[8] else { panic!() };
        assert_eq!(iq.attr("id"), Some("x>y"));
        let Frame::StreamOpen(h) = &frames[0] else { panic!() };
        assert_eq!(h.stream_ns, ns::STREAM);
        assert_eq!(h.default_ns.as_deref(), Some(ns::CLIENT));
        assert_eq!(h.version.as_deref(), Some("1.0"));
    }

    #[test]
    fn any_split_gives_the_same_frames() {
        let expected = whole(TRANSCRIPT).unwrap();
        assert_eq!(feed(TRANSCRIPT, std::iter::repeat(1)).unwrap(), expected);
        let mut rng = rand::rngs::StdRng::seed_from_u64(6120);
        for _ in 0..200 {
            let chunks: Vec<usize> = (0..TRANSCRIPT.len()).map(|_| rng.random_range(1..40)).collect();
            assert_eq!(feed(TRANSCRIPT, chunks).unwrap(), expected);
        }
    }

    const OPEN: &str =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

    #[test]
    fn restricted_xml() {
        for bad in [
            "<!-- c -->",
            "<?pi x?>",
            "<!DOCTYPE x>",
            "<!ENTITY x 'y'>",
            "<message><!--x--></message>",
        ] {
            assert_eq!(
                first_error(&format!("{OPEN}{bad}")),
                StreamCondition::RestrictedXml,
                "{bad}"
            );
        }
        // Before the stream header too.
        assert_eq!(
            first_error("<!DOCTYPE lol [<!ENTITY lol 'lol'>]>"),
            StreamCondition::RestrictedXml
        );
        let laughs = format!("{OPEN}<message><body>&lol9;</body></message>");
        assert_eq!(first_error(&laughs), StreamCondition::NotWellFormed);
    }

    #[test]
    fn malformed_input() {
        assert_eq!(
            first_error(&format!("{OPEN}<message><body></x></message>")),
            StreamCondition::NotWellFormed
        );
        assert_eq!(
            first_error(&format!("{OPEN}<message a='<'/>")),
            StreamCondition::NotWellFormed
        );
        assert_eq!(first_error(&format!("{OPEN}text")), StreamCondition::BadFormat);
        assert_eq!(first_error("<message/>"), StreamCondition::NotWellFormed);
        assert_eq!(
            first_error("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>"),
            StreamCondition::InvalidNamespace
        );
    }

    #[test]
    fn size_and_depth_limits() {
        let limits = CodecLimits {
            max_stanza_bytes: 1000,
            ..CodecLimits::default()
        };
        let mut codec = XmppCodec::new(limits);
        let mut buf = BytesMut::from(format!("{OPEN}<message><body>").as_bytes());
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Frame::StreamOpen(_)))));
        // Fed in pieces, the buffer never grows far past the limit.
        let mut err = None;
        for _ in 0..100 {
            buf.extend_from_slice(&[b'a'; 100]);
            if let Err(e) = codec.decode(&mut buf) {
                err = Some(e);
                break;
            }
            assert!(buf.len() <= 1100);
        }
        assert_eq!(err.unwrap().condition, StreamCondition::PolicyViolation);
        let deep = format!("{OPEN}{}", "<a>".repeat(100));
        assert_eq!(first_error(&deep), StreamCondition::PolicyViolation);
        let huge_header = format!("<stream:stream a='{}'>", "x".repeat(10_000));
        assert_eq!(first_error(&huge_header), StreamCondition::PolicyViolation);
    }

    #[test]
    fn keepalives_are_dropped_not_buffered() {
        let mut codec = XmppCodec::new(CodecLimits::default());
        let mut buf = BytesMut::from(OPEN.as_bytes());
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Frame::StreamOpen(_)))));
        for _ in 0..1000 {
            buf.extend_from_slice(b" \n\t ");
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty());
        }
        buf.extend_from_slice(b"<presence/>");
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Frame::Stanza(_)))));
    }

    /// Feeds `input` one byte at a time: the index of the byte on whose
    /// arrival the codec failed, and the error.
    fn fails_at(input: &str) -> Option<(usize, StreamError)> {
        let mut codec = XmppCodec::new(CodecLimits::default());
        let mut buf = BytesMut::new();
        for (i, b) in input.bytes().enumerate() {
            buf.extend_from_slice(&[b]);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => return Some((i, e)),
                }
            }
        }
        None
    }

    /// `input` is rejected as not well-formed, with `text`, as soon as its
    /// last byte arrives: fed whole, and fed one byte at a time.
    fn rejected_at_last_byte(input: &str, text: &str) {
        let at_once = whole(input.as_bytes()).unwrap_err();
        assert_eq!(at_once.condition, StreamCondition::NotWellFormed, "{input}");
        assert_eq!(at_once.text.as_deref(), Some(text), "{input}");
        let Some((at, err)) = fails_at(input) else {
            panic!("accepted byte by byte: {input}");
        };
        assert_eq!(at, input.len() - 1, "{input}");
        assert_eq!(err, at_once, "{input}");
    }

    #[test]
    fn mismatched_end_tags_fail_at_once() {
        // The example: before this, the stream just waited for more.
        let example = format!("{OPEN}<iq type='get' id='bad1'><query xmlns='jabber:iq:version'></iq>");
        let mut codec = XmppCodec::new(CodecLimits::default());
        let mut buf = BytesMut::from(example.as_bytes());
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Frame::StreamOpen(_)))));
        assert_eq!(
            codec.decode(&mut buf).unwrap_err().condition,
            StreamCondition::NotWellFormed
        );
        rejected_at_last_byte(&example, "mismatched end tag");
        for bad in [
            // The stanza's own end tag (depth 2).
            "<message></iq>",
            "<message><body/></messag>",
            "<message></message >\n<iq></IQ>",
            // A child's (depth 3) and a grandchild's (depth 4).
            "<message><body></message>",
            "<message><body>hi</bodyx>",
            "<iq type='set'><query xmlns='jabber:iq:roster'><item></query>",
            "<iq><query><item jid='a@b'><group>g</item>",
            // Prefixes are part of the name.
            "<message><x:a xmlns:x='urn:x'></a>",
            "<message><a:b xmlns:a='urn:x'></b:b>",
        ] {
            rejected_at_last_byte(&format!("{OPEN}{bad}"), "mismatched end tag");
        }
    }

    #[test]
    fn matching_end_tags_still_frame() {
        let input = format!(
            "{OPEN}<a><a><a/></a></a><x:m xmlns:x='urn:x'><x:b>t</x:b ></x:m\t\r\n><iq><q><i><j/></i></q></iq>"
        );
        let frames = whole(input.as_bytes()).unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(feed(input.as_bytes(), std::iter::repeat(1)).unwrap(), frames);
        let Frame::Stanza(m) = &frames[2] else { panic!() };
        assert_eq!(m.get_child("b", "urn:x").unwrap().text(), "t");
    }

    #[test]
    fn the_stream_close_must_repeat_the_header_name() {
        let frames = whole(format!("{OPEN}<presence/></stream:stream \n>").as_bytes()).unwrap();
        assert_eq!(frames.last(), Some(&Frame::StreamClose));
        // A stray end tag between stanzas is not a close.
        for bad in [
            "</foo>",
            "<presence/></message>",
            "</stream>",
            "</stream:streams>",
            "</x:stream>",
        ] {
            rejected_at_last_byte(&format!("{OPEN}{bad}"), "mismatched end tag");
        }
        // Another prefix: the close must use it too.
        let other = "<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams' version='1.0'>";
        rejected_at_last_byte(&format!("{other}</stream:stream>"), "mismatched end tag");
        let frames = whole(format!("{other}<presence/></s:stream>").as_bytes()).unwrap();
        assert_eq!(frames.last(), Some(&Frame::StreamClose));
        // And a restart may change it.
        let frames = whole(format!("{OPEN}{other}</s:stream>").as_bytes()).unwrap();
        assert_eq!(frames.last(), Some(&Frame::StreamClose));
        rejected_at_last_byte(&format!("{other}{OPEN}</s:stream>"), "mismatched end tag");
        // Before any header, an end tag is unexpected whatever its name.
        assert_eq!(first_error("</stream:stream>"), StreamCondition::NotWellFormed);
    }

    #[test]
    fn end_tags_hold_a_name_and_white_space_only() {
        for bad in [
            "<message></message a>",
            "<message></message/>",
            "<message></ message>",
            "<message></>",
            "<message></message\u{c}>",
            "</stream:stream x>",
            "</ stream:stream>",
        ] {
            rejected_at_last_byte(&format!("{OPEN}{bad}"), "malformed end tag");
        }
        // A quote cannot start a value here, so it fails where it stands.
        let quoted = format!("{OPEN}<message></message a='>'>");
        let (at, err) = fails_at(&quoted).unwrap();
        assert_eq!(at, quoted.rfind("a='").unwrap() + 2);
        assert_eq!(err.text.as_deref(), Some("malformed end tag"));
        assert_eq!(whole(quoted.as_bytes()).unwrap_err(), err);
    }

    #[test]
    fn a_component_stream_reads_as_a_client_stream() {
        let open = "<stream:stream xmlns='jabber:component:accept' \
            xmlns:stream='http://etherx.jabber.org/streams' to='bot.localhost'>";
        let input = format!("{open}<message to='a@localhost'><body>x</body></message>");
        let mut codec = XmppCodec::new(CodecLimits::default()).for_component();
        let mut buf = BytesMut::from(input.as_bytes());
        let Ok(Some(Frame::StreamOpen(h))) = codec.decode(&mut buf) else {
            panic!()
        };
        assert_eq!(h.default_ns.as_deref(), Some(ns::COMPONENT_ACCEPT));
        let Ok(Some(Frame::Stanza(m))) = codec.decode(&mut buf) else {
            panic!()
        };
        assert!(m.is("message", ns::CLIENT));
        assert_eq!(m.get_child("body", ns::CLIENT).unwrap().text(), "x");
        // Without the flag, the namespace stays what it is.
        let frames = whole(input.as_bytes()).unwrap();
        let Frame::Stanza(m) = &frames[1] else { panic!() };
        assert!(m.is("message", ns::COMPONENT_ACCEPT));
    }

    #[test]
    fn open_names_are_released_between_stanzas() {
        let mut codec = XmppCodec::new(CodecLimits::default());
        let mut buf = BytesMut::from(format!("{OPEN}<message><body><b>x").as_bytes());
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Frame::StreamOpen(_)))));
        assert!(matches!(codec.stream_name, Cow::Borrowed(_)));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(codec.open.len(), codec.depth - 1);
        assert_eq!(codec.open.len(), 3);
        buf.extend_from_slice(b"</b></body></message>");
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Frame::Stanza(_)))));
        assert_eq!(codec.open.capacity(), 0);
        codec.reset();
        assert!(codec.stream_name.is_empty());
    }
}
