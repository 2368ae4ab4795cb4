//! Properties of the codec, the XML tree and JIDs, over generated input.

use bytes::BytesMut;
use proptest::prelude::*;
use shoal_actors::codec::{CodecLimits, Frame, XmppCodec};
use shoal_actors::jid::Jid;
use shoal_actors::ns;
use shoal_actors::xml::{parse_element, Element, NsBindings, ParseLimits};
use tokio_util::codec::Decoder;

const TRANSCRIPT: &[u8] = include_bytes!("../../fixtures/transcripts/client-session.xml");

fn frames(input: &[u8], chunks: &[usize]) -> Result<Vec<Frame>, String> {
    let mut codec = XmppCodec::new(CodecLimits::default());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(f) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
            out.push(f);
        }
    }
    Ok(out)
}

/// Text without the characters XML 1.0 forbids.
fn xml_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\u{FFFE}\\u{FFFF}]{0,40}").unwrap()
}

fn element(depth: u32) -> BoxedStrategy<Element> {
    let name = "[a-z][a-z0-9-]{0,8}";
    let ns = prop_oneof![
        Just(ns::CLIENT.to_owned()),
        Just("urn:x".to_owned()),
        Just("urn:y:&<'\"".to_owned())
    ];
    let attrs = proptest::collection::btree_map("[a-z]{1,6}", xml_text(), 0..4);
    let leaf = (name, ns, attrs, xml_text()).prop_map(|(name, ns, attrs, text)| {
        let mut el = Element::new(name, ns);
        for (k, v) in attrs {
            el.set_attr(&k, v);
        }
        el.with_text(text)
    });
    if depth == 0 {
        return leaf.boxed();
    }
    (leaf, proptest::collection::vec(element(depth - 1), 0..3))
        .prop_map(|(mut el, children)| {
            for c in children {
                el.push_child(c);
            }
            el
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: Some(Box::new(
        proptest::test_runner::FileFailurePersistence::Direct("../fixtures/proptest-regressions/properties.txt"))),
        ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_gives_the_same_frames(chunks in proptest::collection::vec(1usize..300, 1..50)) {
        let whole = frames(TRANSCRIPT, &[TRANSCRIPT.len()]).unwrap();
        prop_assert_eq!(frames(TRANSCRIPT, &chunks).unwrap(), whole);
    }

    #[test]
    fn serialise_then_parse_is_stable(el in element(3)) {
        let xml = el.to_xml_in(ns::CLIENT);
        let parsed = parse_element(xml.as_bytes(), &NsBindings::client(), &ParseLimits::default())
            .map_err(|e| TestCaseError::fail(format!("{e}: {xml}")))?;
        // Text is merged and whitespace kept, so the trees are equal.
        prop_assert_eq!(&parsed, &el);
        prop_assert_eq!(parsed.to_xml_in(ns::CLIENT), xml);
    }

    #[test]
    fn jid_normalisation_is_idempotent(s in "\\PC{0,40}") {
        if let Ok(jid) = Jid::parse(&s) {
            let again = Jid::parse(jid.as_str()).expect("a normalised JID parses");
            prop_assert_eq!(again, jid);
        }
    }

    #[test]
    fn the_codec_never_panics_and_never_holds_more_than_the_limit(input in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let limits = CodecLimits { max_stanza_bytes: 1024, max_header_bytes: 512, ..CodecLimits::default() };
        let mut codec = XmppCodec::new(limits);
        let mut buf = BytesMut::new();
        let mut prefix = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>".to_vec();
        prefix.extend_from_slice(&input);
        for chunk in prefix.chunks(37) {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(_) => return Ok(()),
                }
            }
            prop_assert!(buf.len() <= 1024 + 37, "buffered {} bytes", buf.len());
        }
    }
}
