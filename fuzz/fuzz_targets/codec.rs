//! The stream codec on arbitrary bytes, after a valid stream header, fed in
//! uneven chunks: it must never panic and never buffer past its limits.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal_actors::codec::{CodecLimits, XmppCodec};
use tokio_util::codec::Decoder;

const OPEN: &[u8] =
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

fuzz_target!(|data: &[u8]| {
    let limits = CodecLimits {
        max_stanza_bytes: 4096,
        max_header_bytes: 1024,
        ..CodecLimits::default()
    };
    // The first byte picks the chunk size; the header is there or not.
    let (chunk, body) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c % 64) + 1, rest),
        None => return,
    };
    let mut input = if chunk % 2 == 0 { OPEN.to_vec() } else { Vec::new() };
    input.extend_from_slice(body);
    let mut codec = XmppCodec::new(limits);
    let mut buf = BytesMut::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= 4096 + chunk, "buffered {}", buf.len());
    }
});
