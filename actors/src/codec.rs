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
        }
    }

    /// Forgets all parser state, as RFC 6120 requires after STARTTLS and SASL
    /// success: the next thing expected is a new stream header.
    pub fn reset(&mut self) {
        *self = XmppCodec::new(self.limits);
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

    /// Drops everything before `upto` when no stanza is in progress.
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
        bindings.shrink_to_fit();
        self.bindings = bindings;
        Ok(header)
    }

    /// Handles a complete start tag `buf[start..=end]`.
    fn start_tag(&mut self, buf: &mut BytesMut, end: usize) -> Result<Option<Frame>, StreamError> {
        let start = self.markup_start;
        let empty = end > start + 1 && buf[end - 1] == b'/';
        let name_end = buf[start + 1..end]
            .iter()
            .position(|b| b.is_ascii_whitespace() || *b == b'/' || *b == b'>')
            .map_or(end, |i| start + 1 + i);
        let qname = &buf[start + 1..name_end];
        let local = qname.rsplit(|b| *b == b':').next().unwrap_or(qname);
        let opens_stream = self.depth <= 1 && local == b"stream" && !empty;
        if opens_stream {
            let header = self.header(&buf[start..=end])?;
            if header.stream_ns != ns::STREAM {
                return Err(StreamError::new(StreamCondition::InvalidNamespace));
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
                }
                self.pos = end + 1;
                Ok(None)
            }
        }
    }

    fn stanza(&mut self, buf: &mut BytesMut, len: usize) -> Result<Frame, StreamError> {
        let bytes: Bytes = buf.split_to(len).freeze();
        self.pos = 0;
        self.markup_start = 0;
        let el = parse_element(&bytes, &self.bindings, &self.limits.parse)?;
        Ok(Frame::Stanza(el))
    }

    fn end_tag(&mut self, buf: &mut BytesMut, end: usize) -> Result<Option<Frame>, StreamError> {
        self.pos = end + 1;
        match self.depth {
            0 => Err(StreamError::with_text(
                StreamCondition::NotWellFormed,
                "unexpected end tag",
            )),
            1 => {
                self.depth = 0;
                self.closed = true;
                self.discard(buf, end + 1);
                Ok(Some(Frame::StreamClose))
            }
            2 => {
                self.depth = 1;
                self.stanza(buf, end + 1).map(Some)
            }
            _ => {
                self.depth -= 1;
                Ok(None)
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
                    let frame = if buf[self.markup_start + 1] == b'/' {
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
}
