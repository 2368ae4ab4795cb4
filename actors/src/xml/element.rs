use std::fmt;

use std::borrow::Cow;

use quick_xml::escape::{escape, partial_escape};

/// An attribute value as written: besides the five XML characters, tab,
/// CR and LF become references, since a parser turns them into spaces
/// (attribute-value normalisation, XML 1.0 §3.3.3).
pub(crate) fn escape_attr(v: &str) -> Cow<'_, str> {
    // Most values (ids, JIDs, namespaces) need nothing: one scan says so.
    if !v
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'\'' | b'"' | b'\t' | b'\n' | b'\r'))
    {
        return Cow::Borrowed(v);
    }
    let escaped = escape(v);
    if !escaped.contains(['\t', '\n', '\r']) {
        return escaped;
    }
    Cow::Owned(
        escaped
            .replace('\t', "&#x9;")
            .replace('\n', "&#xA;")
            .replace('\r', "&#xD;"),
    )
}

/// Text as written: CR becomes a reference, since a parser turns CR and
/// CR LF into LF (end-of-line handling, XML 1.0 §2.11).
pub(crate) fn escape_text(t: &str) -> Cow<'_, str> {
    if !t.bytes().any(|b| matches!(b, b'&' | b'<' | b'>' | b'\r')) {
        return Cow::Borrowed(t);
    }
    let escaped = partial_escape(t);
    if !escaped.contains('\r') {
        return escaped;
    }
    Cow::Owned(escaped.replace('\r', "&#xD;"))
}

/// An element with its namespace resolved. Attribute names are kept as
/// written (`xml:lang` included); namespace declarations are not attributes:
/// the serialiser writes `xmlns` wherever an element's namespace differs
/// from its parent's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// True when this element is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn attr_count(&self) -> usize {
        self.attrs.len()
    }

    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.attrs.push((name.to_owned(), value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let i = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(i).1)
    }

    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    pub fn with_child(mut self, child: Element) -> Self {
        self.push_child(child);
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.push_text(text);
        self
    }

    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends text, merging with a preceding text node.
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        match self.children.last_mut() {
            Some(Node::Text(prev)) => prev.push_str(&text),
            _ => self.children.push(Node::Text(text)),
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// The child elements, in order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn children_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|c| c.is(name, ns))
    }

    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.get_child(name, ns).is_some()
    }

    pub fn remove_children(&mut self, mut pred: impl FnMut(&Element) -> bool) {
        self.children.retain(|n| !matches!(n, Node::Element(e) if pred(e)));
    }

    /// The concatenated text directly inside this element.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for node in &self.children {
            if let Node::Text(t) = node {
                out.push_str(t);
            }
        }
        out
    }

    /// Serialises this element as it appears inside a parent whose default
    /// namespace is `parent_ns` (for stanzas: `jabber:client`).
    pub fn write_to(&self, out: &mut Vec<u8>, parent_ns: &str) {
        // Stream-level elements (<stream:features/>, <stream:error/>) use the
        // prefix the stream header declares; some clients match on it.
        let prefixed = self.ns == crate::ns::STREAM;
        out.push(b'<');
        if prefixed {
            out.extend_from_slice(b"stream:");
        }
        out.extend_from_slice(self.name.as_bytes());
        if !prefixed && self.ns != parent_ns {
            out.extend_from_slice(b" xmlns='");
            out.extend_from_slice(escape_attr(&self.ns).as_bytes());
            out.push(b'\'');
        }
        for (k, v) in &self.attrs {
            out.push(b' ');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"='");
            out.extend_from_slice(escape_attr(v).as_bytes());
            out.push(b'\'');
        }
        if self.children.is_empty() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        let inner_ns = if prefixed { parent_ns } else { &self.ns };
        for node in &self.children {
            match node {
                Node::Element(e) => e.write_to(out, inner_ns),
                Node::Text(t) => out.extend_from_slice(escape_text(t).as_bytes()),
            }
        }
        out.extend_from_slice(b"</");
        if prefixed {
            out.extend_from_slice(b"stream:");
        }
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'>');
    }

    /// The serialised element within `parent_ns`, as a string.
    pub fn to_xml_in(&self, parent_ns: &str) -> String {
        let mut out = Vec::with_capacity(128);
        self.write_to(&mut out, parent_ns);
        // The serialiser only ever writes UTF-8.
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Standalone serialisation: the element declares its own namespace.
impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_xml_in(""))
    }
}
