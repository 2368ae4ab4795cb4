//! The XML tree that complete stanzas are parsed into, and its serialiser.
//! XML text exists only here and in the codec; everything above works on
//! [`Element`]s and typed stanzas.

mod element;
mod parser;

pub use element::{Element, Node};
// For what is written as literal text (XEP-0220's `db:` elements).
pub(crate) use element::{escape_attr, escape_text};
pub use parser::{open_element, parse_element, NsBindings, ParseLimits, TreeBuilder};

/// An element written as a client would send it: the unit tests' input.
#[cfg(test)]
pub(crate) fn client_element(xml: &str) -> Element {
    parse_element(xml.as_bytes(), &NsBindings::client(), &ParseLimits::default()).unwrap()
}
