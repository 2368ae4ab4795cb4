//! Parses one complete, already framed stanza into an [`Element`].
//!
//! The framer in [`crate::codec`] has bounded the input's size; this module
//! bounds its shape (depth, attributes) and enforces the XML subset of
//! RFC 6120 §11.1: no comments, processing instructions, DTDs or entity
//! references other than the five predefined ones and character references.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::Element;
use crate::error::{StreamCondition, StreamError};
use crate::ns;

/// Shape limits applied while parsing a stanza.
#[derive(Clone, Copy, Debug)]
pub struct ParseLimits {
    /// Deepest element nesting, the stanza element counting as 1.
    pub max_depth: usize,
    /// Most attributes on one element (namespace declarations included).
    pub max_attrs: usize,
    /// Longest element or attribute name, in bytes.
    pub max_name_bytes: usize,
}

impl ParseLimits {
    /// No limits: for XML this server wrote itself (stored payloads).
    pub const UNBOUNDED: ParseLimits = ParseLimits {
        max_depth: usize::MAX,
        max_attrs: usize::MAX,
        max_name_bytes: usize::MAX,
    };
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_depth: 32,
            max_attrs: 64,
            max_name_bytes: 256,
        }
    }
}

/// Namespace bindings in scope: the default namespace and the prefixes the
/// stream header declared, then those of each open element.
#[derive(Clone, Debug)]
pub struct NsBindings {
    /// (prefix, namespace); `None` is the default namespace. Later wins.
    /// The stream header's bindings are kept for the stream's life, so the
    /// usual ones borrow static strings instead of allocating.
    scope: Vec<(Option<Cow<'static, str>>, Cow<'static, str>)>,
}

/// A static copy of a well-known name, or an owned one.
fn interned(s: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 4] = [ns::CLIENT, ns::STREAM, "stream", "jabber:server"];
    match KNOWN.iter().find(|k| **k == s) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(s.to_owned()),
    }
}

impl NsBindings {
    /// The bindings a client stream's header normally declares.
    pub fn client() -> Self {
        NsBindings {
            scope: vec![
                (None, Cow::Borrowed(ns::CLIENT)),
                (Some(Cow::Borrowed("stream")), Cow::Borrowed(ns::STREAM)),
            ],
        }
    }

    pub fn empty() -> Self {
        NsBindings { scope: Vec::new() }
    }

    pub fn bind(&mut self, prefix: Option<&str>, ns: &str) {
        self.scope.push((prefix.map(interned), interned(ns)));
    }

    pub fn resolve(&self, prefix: Option<&str>) -> Option<&str> {
        if prefix == Some("xml") {
            return Some(ns::XML);
        }
        self.scope
            .iter()
            .rev()
            .find(|(p, _)| p.as_deref() == prefix)
            .map(|(_, n)| n.as_ref())
    }

    pub fn default_ns(&self) -> Option<&str> {
        self.resolve(None)
    }

    fn truncate(&mut self, len: usize) {
        self.scope.truncate(len);
    }

    fn len(&self) -> usize {
        self.scope.len()
    }

    /// Drops spare capacity: the stream's bindings live as long as it does.
    pub fn shrink_to_fit(&mut self) {
        self.scope.shrink_to_fit();
    }
}

fn not_well_formed(text: impl Into<std::borrow::Cow<'static, str>>) -> StreamError {
    StreamError::with_text(StreamCondition::NotWellFormed, text)
}

fn restricted() -> StreamError {
    StreamError::with_text(
        StreamCondition::RestrictedXml,
        "comments, processing instructions, DTDs and entity declarations are not allowed",
    )
}

/// True for the bytes XML 1.0 forbids outright (C0 controls but tab, LF, CR).
fn has_forbidden_control(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
}

/// An XML name (XML 1.0 §2.3), loosely: quick-xml accepts empty and odd
/// names, which would not survive serialisation. Non-ASCII is allowed.
fn check_name(qname: &str) -> Result<(), StreamError> {
    let part_ok = |p: &str| {
        let mut chars = p.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || !c.is_ascii());
        first_ok
            && p.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.') || !c.is_ascii())
    };
    let ok = match qname.split_once(':') {
        Some((prefix, local)) => part_ok(prefix) && part_ok(local),
        None => part_ok(qname),
    };
    if ok {
        Ok(())
    } else {
        Err(not_well_formed(format!("invalid name {qname:?}")))
    }
}

/// Splits `prefix:local`.
fn split_qname(qname: &str) -> (Option<&str>, &str) {
    match qname.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, qname),
    }
}

/// Reads a start tag's attributes, declaring namespaces into `bindings`, and
/// returns the element with its name resolved.
pub fn open_element(
    start: &BytesStart<'_>,
    bindings: &mut NsBindings,
    limits: &ParseLimits,
) -> Result<Element, StreamError> {
    let qname = start.name().into_inner();
    check_name(qname)?;
    if qname.len() > limits.max_name_bytes {
        return Err(StreamError::with_text(
            StreamCondition::PolicyViolation,
            "name too long",
        ));
    }
    let mut attrs = Vec::new();
    for (count, attr) in start.attributes().with_checks(true).enumerate() {
        if count >= limits.max_attrs {
            return Err(StreamError::with_text(
                StreamCondition::PolicyViolation,
                "too many attributes",
            ));
        }
        let attr = attr.map_err(|e| not_well_formed(format!("bad attribute: {e}")))?;
        let key = attr.key.into_inner();
        check_name(key)?;
        if key.len() > limits.max_name_bytes {
            return Err(StreamError::with_text(
                StreamCondition::PolicyViolation,
                "name too long",
            ));
        }
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|_| not_well_formed("undefined entity in attribute value"))?;
        // A character reference may name what XML forbids outright.
        if has_forbidden_control(value.as_bytes()) {
            return Err(not_well_formed("control character in attribute value"));
        }
        match split_qname(key) {
            (None, "xmlns") => bindings.bind(None, &value),
            (Some("xmlns"), prefix) => {
                if value.is_empty() {
                    return Err(not_well_formed("empty namespace for a prefix"));
                }
                bindings.bind(Some(prefix), &value);
            }
            _ => attrs.push((key.to_owned(), value.into_owned())),
        }
    }
    for (key, _) in &attrs {
        if let (Some(prefix), _) = split_qname(key) {
            if bindings.resolve(Some(prefix)).is_none() {
                return Err(StreamError::with_text(
                    StreamCondition::BadNamespacePrefix,
                    format!("unbound prefix {prefix:?}"),
                ));
            }
        }
    }
    let (prefix, local) = split_qname(qname);
    let ns = bindings.resolve(prefix).ok_or_else(|| {
        StreamError::with_text(
            StreamCondition::BadNamespacePrefix,
            format!("unbound prefix {:?}", prefix.unwrap_or("")),
        )
    })?;
    let mut el = Element::new(local, ns);
    let mut declare = Vec::new();
    for (k, v) in attrs {
        if let (Some(prefix), _) = split_qname(&k) {
            if prefix != "xml" && !declare.iter().any(|(p, _)| *p == prefix) {
                // Checked above: every prefix is bound.
                let ns = bindings.resolve(Some(prefix)).unwrap_or_default().to_owned();
                declare.push((prefix.to_owned(), ns));
            }
        }
        el.set_attr(&k, v);
    }
    // A prefixed attribute takes its declaration with it, wherever that
    // stood (an ancestor, the stream header): the element is serialised
    // on its own, for another stream.
    for (prefix, ns) in declare {
        el.set_attr(&format!("xmlns:{prefix}"), ns);
    }
    Ok(el)
}

/// Parses a complete element. `bindings` are those in scope where the
/// element stands (for a stanza: what the stream header declared).
pub fn parse_element(bytes: &[u8], bindings: &NsBindings, limits: &ParseLimits) -> Result<Element, StreamError> {
    let text = std::str::from_utf8(bytes).map_err(|_| StreamError::new(StreamCondition::UnsupportedEncoding))?;
    if has_forbidden_control(bytes) {
        return Err(not_well_formed("control character"));
    }
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    let mut builder = TreeBuilder::new(bindings.clone(), *limits);
    loop {
        let event = reader.read_event().map_err(|e| not_well_formed(e.to_string()))?;
        if let Some(el) = builder.feed(event)? {
            return Ok(el);
        }
    }
}

/// Builds one element from quick-xml events, checked as [`parse_element`]
/// (which runs on it) checks a stanza. For readers of longer documents
/// that take them apart themselves, element by element (a XEP-0227 file,
/// one account at a time): they feed the events of one element, from its
/// start tag to its end tag, and get the element back at the end.
pub struct TreeBuilder {
    bindings: NsBindings,
    limits: ParseLimits,
    /// Each open element with the binding depth to restore when it closes.
    stack: Vec<(Element, usize)>,
}

impl TreeBuilder {
    /// `bindings` are those in scope where the element stands.
    pub fn new(bindings: NsBindings, limits: ParseLimits) -> TreeBuilder {
        TreeBuilder {
            bindings,
            limits,
            stack: Vec::new(),
        }
    }

    /// Takes one event; the element, once its end tag has come. Text
    /// before the start tag is ignored.
    pub fn feed(&mut self, event: Event<'_>) -> Result<Option<Element>, StreamError> {
        match event {
            Event::Start(start) => {
                self.check_depth()?;
                let mark = self.bindings.len();
                let el = open_element(&start, &mut self.bindings, &self.limits)?;
                self.stack.push((el, mark));
                Ok(None)
            }
            Event::Empty(start) => {
                self.check_depth()?;
                let mark = self.bindings.len();
                let el = open_element(&start, &mut self.bindings, &self.limits)?;
                self.bindings.truncate(mark);
                Ok(self.close(el))
            }
            Event::End(_) => {
                let (el, mark) = self.stack.pop().ok_or_else(|| not_well_formed("unexpected end tag"))?;
                self.bindings.truncate(mark);
                Ok(self.close(el))
            }
            Event::Text(t) => {
                // Checked here too for readers of other input than a
                // stanza, which parse_element has checked whole.
                if has_forbidden_control(t.as_bytes()) {
                    return Err(not_well_formed("control character"));
                }
                if let Some((el, _)) = self.stack.last_mut() {
                    el.push_text(t.xml10_content());
                }
                Ok(None)
            }
            Event::CData(c) => {
                if has_forbidden_control(c.as_bytes()) {
                    return Err(not_well_formed("control character"));
                }
                if let Some((el, _)) = self.stack.last_mut() {
                    el.push_text(c.as_ref());
                }
                Ok(None)
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch,
                    Ok(None) => match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => return Err(not_well_formed(format!("undefined entity &{other};"))),
                    },
                    Err(_) => return Err(not_well_formed("bad character reference")),
                };
                if (ch as u32) < 0x20 && !matches!(ch, '\t' | '\n' | '\r') {
                    return Err(not_well_formed("character reference to a control character"));
                }
                if let Some((el, _)) = self.stack.last_mut() {
                    let mut buf = [0u8; 4];
                    el.push_text(&*ch.encode_utf8(&mut buf));
                }
                Ok(None)
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => Err(restricted()),
            Event::Eof => Err(not_well_formed("incomplete element")),
        }
    }

    fn check_depth(&self) -> Result<(), StreamError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(StreamError::with_text(
                StreamCondition::PolicyViolation,
                "elements nested too deeply",
            ));
        }
        Ok(())
    }

    /// A complete element goes into its parent; the outermost is done.
    fn close(&mut self, el: Element) -> Option<Element> {
        match self.stack.last_mut() {
            Some((parent, _)) => {
                parent.push_child(el);
                None
            }
            None => Some(el),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Element, StreamError> {
        parse_element(s.as_bytes(), &NsBindings::client(), &ParseLimits::default())
    }

    #[test]
    fn resolves_default_and_declared_namespaces() {
        let el = parse("<iq type='get' id='1'><query xmlns='jabber:iq:roster'><item/></query></iq>").unwrap();
        assert!(el.is("iq", ns::CLIENT));
        let q = el.get_child("query", ns::ROSTER).unwrap();
        assert!(q.get_child("item", ns::ROSTER).is_some());
        let f = parse("<stream:features/>").unwrap();
        assert!(f.is("features", ns::STREAM));
        let p = parse("<message><x:body xmlns:x='urn:x'>hi</x:body></message>").unwrap();
        assert_eq!(p.get_child("body", "urn:x").unwrap().text(), "hi");
    }

    #[test]
    fn entities_and_cdata() {
        let el = parse("<message><body>&lt;a&gt; &amp; &#x263A;&#65;<![CDATA[<raw>]]></body></message>").unwrap();
        assert_eq!(el.get_child("body", ns::CLIENT).unwrap().text(), "<a> & \u{263a}A<raw>");
    }

    #[test]
    fn rejects_what_rfc6120_restricts() {
        let c = |s: &str| parse(s).unwrap_err().condition;
        assert_eq!(c("<message><!-- hi --></message>"), StreamCondition::RestrictedXml);
        assert_eq!(c("<message><?pi x?></message>"), StreamCondition::RestrictedXml);
        assert_eq!(c("<message>&lol;</message>"), StreamCondition::NotWellFormed);
        assert_eq!(c("<message a='&lol;'/>"), StreamCondition::NotWellFormed);
        assert_eq!(c("<message><a></b></message>"), StreamCondition::NotWellFormed);
        assert_eq!(c("<message a='1' a='2'/>"), StreamCondition::NotWellFormed);
        assert_eq!(c("<message>\u{1}</message>"), StreamCondition::NotWellFormed);
        assert_eq!(c("<message>&#1;</message>"), StreamCondition::NotWellFormed);
        assert_eq!(c("<y:message/>"), StreamCondition::BadNamespacePrefix);
        // Found by fuzzing: names quick-xml lets through.
        for bad in [
            "<\n/>",
            "<m><\n\n/></m>",
            "<m 1a='x'/>",
            "<m><x:/></m>",
            "<:m/>",
            "<m a:='1'/>",
            "<m a='&#x1F;'/>",
        ] {
            assert_eq!(c(bad), StreamCondition::NotWellFormed, "{bad:?}");
        }
        assert_eq!(
            parse_element(b"<m>\xff</m>", &NsBindings::client(), &ParseLimits::default())
                .unwrap_err()
                .condition,
            StreamCondition::UnsupportedEncoding
        );
    }

    #[test]
    fn enforces_shape_limits() {
        let limits = ParseLimits {
            max_depth: 3,
            max_attrs: 2,
            max_name_bytes: 8,
        };
        let p = |s: &str| parse_element(s.as_bytes(), &NsBindings::client(), &limits);
        assert!(p("<a><b><c/></b></a>").is_ok());
        assert_eq!(
            p("<a><b><c><d/></c></b></a>").unwrap_err().condition,
            StreamCondition::PolicyViolation
        );
        assert_eq!(
            p("<a x='1' y='2' z='3'/>").unwrap_err().condition,
            StreamCondition::PolicyViolation
        );
        assert_eq!(
            p("<abcdefghij/>").unwrap_err().condition,
            StreamCondition::PolicyViolation
        );
    }

    /// Found by fuzzing: a prefixed attribute must not lose its binding
    /// when the stanza is serialised for another stream.
    #[test]
    fn prefixed_attributes_keep_their_declaration() {
        let el = parse("<message><x:y xmlns:x='urn:x' x:a='1'/></message>").unwrap();
        assert_eq!(
            el.to_xml_in(ns::CLIENT),
            "<message><y xmlns='urn:x' x:a='1' xmlns:x='urn:x'/></message>"
        );
        let mut bindings = NsBindings::client();
        bindings.bind(Some("db"), "jabber:server:dialback");
        let from_header = parse_element(b"<message db:k='v'/>", &bindings, &ParseLimits::default()).unwrap();
        let out = from_header.to_xml_in(ns::CLIENT);
        assert_eq!(out, "<message db:k='v' xmlns:db='jabber:server:dialback'/>");
        assert_eq!(parse(&out).unwrap(), from_header);
    }

    #[test]
    fn serialise_then_parse_is_stable() {
        let src = "<message to='a@b' type='chat'><body>x &lt; y &amp; 'q'</body><x xmlns='urn:x' k='&apos;&quot;&lt;'/></message>";
        let el = parse(src).unwrap();
        let out = el.to_xml_in(ns::CLIENT);
        assert_eq!(parse(&out).unwrap(), el);
    }
}
