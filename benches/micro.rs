//! Micro-benchmarks of the hot paths (criterion): framing and parsing a
//! realistic client stream, JID parsing, stanza serialisation, and the
//! per-recipient cost of presence fan-out.
//!
//!     cargo bench --bench micro        (make bench runs it with the others)

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shoal_actors::codec::{CodecLimits, Frame, XmppCodec};
use shoal_actors::jid::Jid;
use shoal_actors::ns;
use shoal_actors::presence::addressed;
use shoal_actors::stanza::Stanza;
use shoal_actors::xml::{parse_element, NsBindings, ParseLimits};
use tokio_util::codec::Decoder;

const OPEN: &str = "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' \
                    xmlns:stream='http://etherx.jabber.org/streams'>";
const MESSAGE: &str = "<message to='juliet@localhost/balcony' type='chat' id='m1'><body>Arise, fair sun, \
                       and kill the envious moon</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>";
const PRESENCE: &str = "<presence><show>away</show><status>at the window</status><priority>5</priority>\
                        <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://gajim.org' \
                        ver='QgayPKawpkPSDYmwT/WM94uAlu0='/><x xmlns='vcard-temp:x:update'>\
                        <photo>01b87fcd030b72895ff8e88db57ec525450f000d</photo></x></presence>";
const PUSH: &str = "<iq type='set' id='push1'><query xmlns='jabber:iq:roster' ver='42'><item jid='nurse@localhost' \
                    subscription='both' name='Nurse'><group>Capulets</group></item></query></iq>";

/// A stream of 1,000 stanzas: mostly messages, some presence and pushes.
fn stream() -> Vec<u8> {
    let mut s = String::from(OPEN);
    for i in 0..1000 {
        s.push_str(match i % 10 {
            0..=5 => MESSAGE,
            6..=8 => PRESENCE,
            _ => PUSH,
        });
        s.push('\n');
    }
    s.into_bytes()
}

fn codec(c: &mut Criterion) {
    let input = stream();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("frame+parse 1000 stanzas (bytes)", |b| {
        b.iter_batched(
            || BytesMut::from(&input[..]),
            |mut buf| {
                let mut codec = XmppCodec::new(CodecLimits::default());
                let mut n = 0;
                while let Ok(Some(frame)) = codec.decode(&mut buf) {
                    if matches!(frame, Frame::Stanza(_)) {
                        n += 1;
                    }
                }
                assert_eq!(n, 1000);
            },
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1000));
    group.bench_function("frame+parse 1000 stanzas (stanzas)", |b| {
        b.iter_batched(
            || BytesMut::from(&input[..]),
            |mut buf| {
                let mut codec = XmppCodec::new(CodecLimits::default());
                while let Ok(Some(_)) = codec.decode(&mut buf) {}
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn jid(c: &mut Criterion) {
    let mut group = c.benchmark_group("jid");
    group.bench_function("ascii full", |b| {
        b.iter(|| Jid::parse("Juliet@Capulet.example/balcony").unwrap())
    });
    group.bench_function("unicode full", |b| {
        b.iter(|| Jid::parse("Élève@exämple.com/Ünicode").unwrap())
    });
    group.finish();
}

fn serialise(c: &mut Criterion) {
    let el = parse_element(MESSAGE.as_bytes(), &NsBindings::client(), &ParseLimits::default()).unwrap();
    let stanza = Stanza::from_element(el).unwrap();
    c.bench_function("serialise a message", |b| b.iter(|| stanza.to_bytes()));
}

fn fanout(c: &mut Criterion) {
    // What a PresenceActor does per follower: splice `to` into the bytes
    // serialised once, against serialising the element per follower.
    let el = parse_element(PRESENCE.as_bytes(), &NsBindings::client(), &ParseLimits::default()).unwrap();
    let mut template = Vec::new();
    el.write_to(&mut template, ns::CLIENT);
    let followers: Vec<String> = (0..1000).map(|i| format!("follower{i}@localhost")).collect();
    let mut group = c.benchmark_group("presence to 1000 followers");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("splice to into the template", |b| {
        b.iter(|| followers.iter().map(|f| addressed(&template, f).len()).sum::<usize>())
    });
    group.bench_function("serialise per follower", |b| {
        b.iter(|| {
            followers
                .iter()
                .map(|f| {
                    let mut e = el.clone();
                    e.set_attr("to", f.as_str());
                    let mut out = Vec::new();
                    e.write_to(&mut out, ns::CLIENT);
                    out.len()
                })
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, codec, jid, serialise, fanout);
criterion_main!(benches);
