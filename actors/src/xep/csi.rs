//! XEP-0352 Client State Indication. A client that says it is
//! `<inactive/>` (a phone in a pocket) is not woken for presence: the
//! presence its contacts send meanwhile waits, only the latest per sender
//! kept, and goes out in one batch when the client is `<active/>` again
//! or when something that matters arrives (a message, a request, a
//! subscription), ahead of it, so that nothing is seen out of order.
//! What waits is bounded: past [`MAX_HELD`] senders or [`MAX_HELD_BYTES`]
//! it all goes out.

use bytes::Bytes;

use crate::jid::Jid;

pub const NS: &str = "urn:xmpp:csi:0";

/// Senders whose presence may wait for one inactive session.
pub const MAX_HELD: usize = 1000;
/// Bytes of presence that may wait for one inactive session.
pub const MAX_HELD_BYTES: usize = 256 * 1024;

/// Presence waiting for an inactive client, in the order first held, each
/// with its sender's key for the queue's fairness (see `Origin`).
#[derive(Default)]
pub struct Held {
    items: Vec<(Jid, u64, Bytes)>,
    bytes: usize,
}

impl Held {
    /// Keeps `presence` from `from`, replacing what that sender had
    /// waiting. False once the batch is full: then it must go out.
    pub fn hold(&mut self, from: &Jid, key: u64, presence: Bytes) -> bool {
        self.bytes += presence.len();
        match self.items.iter_mut().find(|(f, _, _)| f == from) {
            Some((_, _, waiting)) => self.bytes -= std::mem::replace(waiting, presence).len(),
            None => self.items.push((from.clone(), key, presence)),
        }
        self.items.len() < MAX_HELD && self.bytes < MAX_HELD_BYTES
    }

    /// What waited, with each sender's key, in order.
    pub fn take(&mut self) -> Vec<(u64, Bytes)> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
            .into_iter()
            .map(|(_, k, b)| (k, b))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_per_sender_waits_in_first_held_order() {
        let (a, b) = (Jid::parse("a@x/1").unwrap(), Jid::parse("b@x/1").unwrap());
        let mut held = Held::default();
        assert!(held.hold(&a, 1, Bytes::from_static(b"a1")));
        assert!(held.hold(&b, 2, Bytes::from_static(b"b1")));
        assert!(held.hold(&a, 1, Bytes::from_static(b"a2")));
        assert_eq!(held.bytes, 4);
        assert_eq!(
            held.take(),
            vec![(1, Bytes::from_static(b"a2")), (2, Bytes::from_static(b"b1"))]
        );
        assert!(held.is_empty());
        assert!(
            !held.hold(&a, 1, Bytes::from(vec![b'x'; MAX_HELD_BYTES])),
            "full by bytes"
        );
    }
}
