//! Properties of the codec, the XML tree and JIDs, over generated input.

use std::ops::Range;

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::Index;
use shoal_actors::codec::{CodecLimits, Frame, XmppCodec};
use shoal_actors::jid::Jid;
use shoal_actors::ns;
use shoal_actors::xml::{parse_element, Element, NsBindings, ParseLimits};
use tokio_util::codec::Decoder;

const TRANSCRIPT: &[u8] = include_bytes!("../../fixtures/transcripts/client-session.xml");

const OPEN: &str =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

fn transcript() -> &'static str {
    std::str::from_utf8(TRANSCRIPT).expect("the transcript is UTF-8")
}

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

/// Stanzas for a client stream; a top-level `<stream>` would be a restart.
fn stanzas() -> impl Strategy<Value = Vec<Element>> {
    proptest::collection::vec(
        element(2).prop_filter("a stream restart", |el| el.name() != "stream"),
        0..6,
    )
}

fn stream_of(stanzas: &[Element]) -> String {
    let mut xml = OPEN.to_owned();
    for el in stanzas {
        xml.push_str(&el.to_xml_in(ns::CLIENT));
        xml.push('\n');
    }
    xml.push_str("</stream:stream>");
    xml
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TagKind {
    Start,
    Empty,
    End,
}

/// A tag of a well-formed stream, `xml[start..end]` from `<` to `>`.
#[derive(Clone, Debug)]
struct Tag {
    start: usize,
    end: usize,
    kind: TagKind,
    name: String,
    /// How many elements are open after this tag, and the innermost.
    open_after: usize,
    top_after: Option<String>,
}

/// The tags of a well-formed stream (CDATA and declarations skipped). As
/// in the codec, a stream header where no stanza is open starts afresh.
fn tags(xml: &str) -> Vec<Tag> {
    let bytes = xml.as_bytes();
    let mut out = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(found) = xml[i..].find('<') {
        let start = i + found;
        let rest = &xml[start..];
        if rest.starts_with("<![CDATA[") {
            i = start + rest.find("]]>").expect("a closed CDATA section") + 3;
            continue;
        }
        if rest.starts_with("<?") {
            i = start + rest.find("?>").expect("a closed declaration") + 2;
            continue;
        }
        let mut quote = None;
        let mut end = start + 1;
        loop {
            match (quote, bytes[end]) {
                (Some(q), b) if b == q => quote = None,
                (Some(_), _) => {}
                (None, b @ (b'\'' | b'"')) => quote = Some(b),
                (None, b'>') => break,
                (None, _) => {}
            }
            end += 1;
        }
        let inner = &xml[start + 1..end];
        let (kind, body) = match (inner.strip_prefix('/'), inner.strip_suffix('/')) {
            (Some(body), _) => (TagKind::End, body),
            (None, Some(body)) => (TagKind::Empty, body),
            (None, None) => (TagKind::Start, inner),
        };
        let name = body
            .split(|c: char| c.is_ascii_whitespace())
            .next()
            .unwrap_or("")
            .to_owned();
        match kind {
            TagKind::Start if open.len() <= 1 && name.rsplit(':').next() == Some("stream") => {
                open.clear();
                open.push(name.clone());
            }
            TagKind::Start => open.push(name.clone()),
            TagKind::End => {
                open.pop();
            }
            TagKind::Empty => {}
        }
        out.push(Tag {
            start,
            end: end + 1,
            kind,
            name,
            open_after: open.len(),
            top_after: open.last().cloned(),
        });
        i = end + 1;
    }
    out
}

/// A change to the tag structure of a well-formed stream. Each is made
/// only where quick-xml and the codec provably judge alike: the bytes
/// before it are unchanged (and accepted by both), and the first end tag
/// that breaks the structure is compared by both against the same open
/// element, whether that is a stanza's or the stream's.
#[derive(Clone, Debug)]
enum Mutation {
    None,
    /// An end tag gets another name.
    Rename(Index, String),
    /// The end tag of an element inside a stanza goes, where its parent's
    /// name differs: the parent's end tag then mismatches.
    Delete(Index),
    /// Two end tags change places: the first mismatches unless the names
    /// are equal (then nothing changed).
    Swap(Index, Index),
    /// A stray end tag, named unlike the innermost open element, after a
    /// tag inside the stream (between stanzas included).
    Insert(Index, String),
    /// White space before an end tag's `>`: still well-formed.
    Pad(Index, String),
    /// An end tag with more than a name, or none.
    Corrupt(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let name = "[a-z_][a-z0-9._:-]{0,6}";
    prop_oneof![
        Just(Mutation::None),
        (any::<Index>(), name).prop_map(|(i, n)| Mutation::Rename(i, n)),
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (any::<Index>(), name).prop_map(|(i, n)| Mutation::Insert(i, n)),
        (any::<Index>(), "[ \t\r\n]{1,3}").prop_map(|(i, s)| Mutation::Pad(i, s)),
        (any::<Index>(), 0u8..4).prop_map(|(i, k)| Mutation::Corrupt(i, k)),
    ]
}

fn pick<'a>(tags: &[&'a Tag], i: &Index) -> Option<&'a Tag> {
    (!tags.is_empty()).then(|| tags[i.index(tags.len())])
}

fn splice(xml: &str, at: Range<usize>, with: &str) -> String {
    format!("{}{with}{}", &xml[..at.start], &xml[at.end..])
}

/// `xml` with `m` applied, and whether the result is still well-formed.
fn mutate(xml: &str, m: &Mutation) -> (String, bool) {
    let tags = tags(xml);
    let ends: Vec<&Tag> = tags.iter().filter(|t| t.kind == TagKind::End).collect();
    let unchanged = (xml.to_owned(), true);
    match m {
        Mutation::None => unchanged,
        Mutation::Rename(i, new) => {
            let Some(t) = pick(&ends, i) else { return unchanged };
            let new = if *new == t.name { format!("{new}x") } else { new.clone() };
            (splice(xml, t.start..t.end, &format!("</{new}>")), false)
        }
        Mutation::Delete(i) => {
            let inner: Vec<&Tag> = ends
                .iter()
                .copied()
                .filter(|t| t.open_after >= 2 && t.top_after.as_deref() != Some(t.name.as_str()))
                .collect();
            let Some(t) = pick(&inner, i) else { return unchanged };
            (splice(xml, t.start..t.end, ""), false)
        }
        Mutation::Swap(a, b) => {
            if ends.len() < 2 {
                return unchanged;
            }
            let a = a.index(ends.len());
            let b = b.index(ends.len() - 1);
            let b = if b >= a { b + 1 } else { b };
            let (p, q) = (ends[a.min(b)], ends[a.max(b)]);
            let swapped = format!(
                "{}{}{}{}{}",
                &xml[..p.start],
                &xml[q.start..q.end],
                &xml[p.end..q.start],
                &xml[p.start..p.end],
                &xml[q.end..]
            );
            (swapped, p.name == q.name)
        }
        Mutation::Insert(i, new) => {
            let inside: Vec<&Tag> = tags.iter().filter(|t| t.open_after >= 1).collect();
            let Some(t) = pick(&inside, i) else { return unchanged };
            let new = if t.top_after.as_deref() == Some(new.as_str()) {
                format!("{new}x")
            } else {
                new.clone()
            };
            (splice(xml, t.end..t.end, &format!("</{new}>")), false)
        }
        Mutation::Pad(i, space) => {
            let Some(t) = pick(&ends, i) else { return unchanged };
            (splice(xml, t.end - 1..t.end - 1, space), true)
        }
        Mutation::Corrupt(i, how) => {
            let Some(t) = pick(&ends, i) else { return unchanged };
            let name = &t.name;
            let bad = match how {
                0 => format!("</{name} a='1'>"),
                1 => format!("</{name}/>"),
                2 => format!("</ {name}>"),
                _ => "</>".to_owned(),
            };
            (splice(xml, t.start..t.end, &bad), false)
        }
    }
}

/// quick-xml's verdict on the exact bytes, its end-name checks on: where
/// it stood (just past the offending markup) when it failed, if it did.
fn reference_failure(xml: &str) -> Option<u64> {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => return None,
            Ok(_) => {}
            Err(_) => return Some(reader.buffer_position()),
        }
    }
}

/// The codec's verdict: if it failed, how many bytes it had been fed
/// before the chunk on which it did.
fn framer_failure(input: &[u8], chunks: &[usize]) -> Option<usize> {
    let mut codec = XmppCodec::new(CodecLimits::default());
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    while fed < input.len() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return Some(fed),
            }
        }
        fed += n;
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: Some(Box::new(
        proptest::test_runner::FileFailurePersistence::Direct("../fixtures/proptest-regressions/properties.txt"))),
        ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_gives_the_same_frames(chunks in proptest::collection::vec(1usize..300, 1..50)) {
        let whole = frames(TRANSCRIPT, &[TRANSCRIPT.len()]).unwrap();
        prop_assert_eq!(&frames(TRANSCRIPT, &chunks).unwrap(), &whole);
        // White space inside end tags changes nothing, however it is split.
        let padded = transcript()
            .replace("</body>", "</body \r\n>")
            .replace("</iq>", "</iq\t>")
            .replace("</stream:stream>", "</stream:stream >");
        prop_assert_eq!(&frames(padded.as_bytes(), &chunks).unwrap(), &whole);
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: Some(Box::new(
        proptest::test_runner::FileFailurePersistence::Direct("../fixtures/proptest-regressions/properties.txt"))),
        ..ProptestConfig::default() })]

    /// RFC 6120 §11.4: the codec rejects a broken tag structure exactly when
    /// a full parser does, and at once: by the chunk holding the `>` of the
    /// end tag that quick-xml fails on, however the bytes are split.
    #[test]
    fn the_codec_judges_end_tags_as_a_full_parser_does(
        generated in proptest::option::of(stanzas()),
        m in mutation(),
        chunks in proptest::collection::vec(1usize..24, 1..24),
    ) {
        let source = match &generated {
            Some(stanzas) => stream_of(stanzas),
            None => transcript().to_owned(),
        };
        let (xml, well_formed) = mutate(&source, &m);
        let reference = reference_failure(&xml);
        prop_assert_eq!(reference.is_none(), well_formed, "quick-xml on {}", xml);
        let framer = framer_failure(xml.as_bytes(), &chunks);
        prop_assert_eq!(framer.is_none(), reference.is_none(), "codec on {}", xml);
        if let (Some(fed), Some(at)) = (framer, reference) {
            prop_assert!((fed as u64) < at, "failed after {} bytes, quick-xml at {}: {}", fed, at, xml);
        }
    }

    /// Generated streams frame into the stanzas they were written from,
    /// however they are split.
    #[test]
    fn generated_streams_frame_the_same_under_any_chunking(
        written in stanzas(),
        chunks in proptest::collection::vec(1usize..64, 1..32),
    ) {
        let xml = stream_of(&written);
        let whole = frames(xml.as_bytes(), &[xml.len()]).map_err(|e| TestCaseError::fail(format!("{e}: {xml}")))?;
        let split = frames(xml.as_bytes(), &chunks).map_err(|e| TestCaseError::fail(format!("{e}: {xml}")))?;
        prop_assert_eq!(&split, &whole);
        let framed: Vec<&Element> = whole
            .iter()
            .filter_map(|f| match f {
                Frame::Stanza(el) => Some(el),
                _ => None,
            })
            .collect();
        prop_assert_eq!(framed, written.iter().collect::<Vec<_>>());
        prop_assert_eq!(whole.last(), Some(&Frame::StreamClose));
    }
}
