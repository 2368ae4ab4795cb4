//! A connection's outbound queue, bounded in bytes. Anyone may queue
//! serialised stanzas (the c2s actor itself, or the router delivering from
//! another session) without waiting.
//!
//! What the user caused (replies to its own requests, its roster pushes,
//! server pings) goes in with [`Outbound::send`]: a peer that stops
//! reading fills the queue, and the first send past the limit closes the
//! connection with `<policy-violation/>` instead of growing memory.
//!
//! What others route to the user goes in with [`Outbound::send_routed`],
//! which never closes the connection: it refuses (`Busy`) once the queue
//! is past [`ROUTED_PERCENT`] of the limit, or once that sender has its
//! share ([`SHARES`]) queued. Otherwise anyone could disconnect anyone by
//! flooding them over a slow link; this way the flooder's excess comes
//! back to it, and a third party's stanzas still fit. Bytes per sender are
//! counted only while the queue holds more than one share: below that no
//! sender can be over its share, so an ordinary queue never allocates for
//! the counting.
//!
//! The queue is a plain deque under a lock rather than a tokio channel:
//! a channel allocates about 1.8 KB per connection before anything is
//! sent and keeps it, while this one holds nothing once drained, which is
//! most of an idle connection's life.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;

/// Routed traffic may fill this percentage of the queue: the rest is
/// headroom for the user's own traffic.
pub(crate) const ROUTED_PERCENT: usize = 75;
/// One sender may have `limit / SHARES` bytes queued for a session, or one
/// stanza of any size when it has nothing queued (so that a maximal stanza
/// always fits an idle queue).
pub(crate) const SHARES: usize = 8;

pub(crate) enum Out {
    Data(Bytes),
    /// Flush, close our side, and give the peer `linger` to close theirs.
    Close {
        linger: Duration,
    },
    /// Flush (the `<proceed/>`), then run the TLS handshake (RFC 6120 §5.4.3.3).
    StartTls,
}

/// What the queue holds: routed data carries its sender for the counting.
enum Queued {
    Own(Out),
    Routed { data: Bytes, sender: u64 },
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Queued>,
    /// The transport is gone: nothing more will be written.
    receiver_gone: bool,
    /// Bytes queued per routed sender, exact whenever it is not empty.
    /// Empty (and not allocated) until the queue holds more than one
    /// share; emptied again once the last routed item is taken.
    senders: Vec<(u64, usize)>,
}

impl Queue {
    /// Starts counting per sender, from what is queued.
    fn count_senders(&mut self) {
        for item in &self.items {
            if let Queued::Routed { data, sender } = item {
                match self.senders.iter_mut().find(|(k, _)| k == sender) {
                    Some((_, bytes)) => *bytes += data.len(),
                    None => self.senders.push((*sender, data.len())),
                }
            }
        }
    }

    /// A routed item was taken for writing. Counted off here rather than
    /// once written: the bytes still count against the whole queue until
    /// then, which bounds what a sender can have in flight to its share
    /// plus one write batch.
    fn taken(&mut self, sender: u64, len: usize) {
        if let Some(i) = self.senders.iter().position(|(k, _)| *k == sender) {
            let bytes = &mut self.senders[i].1;
            *bytes = bytes.saturating_sub(len);
            if *bytes == 0 {
                self.senders.swap_remove(i);
            }
        }
    }
}

/// What the transport takes from the queue next.
pub(crate) enum Next {
    /// The queue went over its limit: the peer is not reading. Seen even
    /// in the middle of a write, to abort it.
    Overflow,
    Item(Out),
    /// Every sender is gone and nothing is left.
    End,
}

pub(crate) struct Shared {
    pub(crate) queued: AtomicUsize,
    /// Atomic only so that a component's can be set once it has said which
    /// component it is ([`Outbound::set_limit`]).
    limit: AtomicUsize,
    overflowed: AtomicBool,
    queue: Mutex<Queue>,
    /// The transport, woken when something is queued, on overflow, and
    /// when the last sender is gone. One waker, not a Notify per event:
    /// every connection's task holds what it waits on.
    transport: AtomicWaker,
    senders: AtomicUsize,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        super::lock(&self.queue)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The connection is gone.
    Closed,
    /// The queue is over its limit: the connection is being closed.
    Overflow,
    /// Routed traffic refused for now: the queue is past its share for
    /// routed traffic, or this sender has its share queued. Nothing was
    /// queued, and the connection stays.
    Busy,
}

/// The sending side; cheap to clone. The receiver sees the end of the
/// queue once every clone is dropped.
pub struct Outbound {
    shared: Arc<Shared>,
}

/// The transport's side.
pub(crate) struct OutboundRx {
    pub(crate) shared: Arc<Shared>,
}

/// The reading end of a queue whose session is not a socket: an
/// embedder's in-process session (a bot, a bridge), or a benchmark. What
/// the server would have written to the socket comes out here, stanza by
/// stanza.
pub struct OutboundReader(OutboundRx);

impl Outbound {
    pub(crate) fn new(limit: usize) -> (Outbound, OutboundRx) {
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            overflowed: AtomicBool::new(false),
            queue: Mutex::default(),
            transport: AtomicWaker::new(),
            senders: AtomicUsize::new(1),
        });
        (Outbound { shared: shared.clone() }, OutboundRx { shared })
    }

    /// A queue bounded at `limit` bytes, read by the caller instead of a
    /// connection: pass the `Outbound` to [`crate::session::Session::new`].
    pub fn detached(limit: usize) -> (Outbound, OutboundReader) {
        let (tx, rx) = Outbound::new(limit);
        (tx, OutboundReader(rx))
    }

    fn push(&self, item: Out) -> Result<(), SendError> {
        {
            let mut queue = self.shared.queue();
            if queue.receiver_gone {
                return Err(SendError::Closed);
            }
            queue.items.push_back(Queued::Own(item));
        }
        self.shared.transport.wake();
        Ok(())
    }

    pub fn send(&self, data: Bytes) -> Result<(), SendError> {
        if self.shared.overflowed.load(Ordering::Relaxed) {
            return Err(SendError::Overflow);
        }
        let len = data.len();
        let queued = self.shared.queued.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.shared.limit.load(Ordering::Relaxed) {
            if !self.shared.overflowed.swap(true, Ordering::AcqRel) {
                self.shared.transport.wake();
            }
            return Err(SendError::Overflow);
        }
        self.push(Out::Data(data))
    }

    /// Queues a stanza that `sender` (a hash of the sending entity) routed
    /// here, or refuses it with [`SendError::Busy`] (see the module docs).
    /// Never overflows: a flood of others' traffic does not close the
    /// connection.
    pub fn send_routed(&self, sender: u64, data: Bytes) -> Result<(), SendError> {
        if self.shared.overflowed.load(Ordering::Relaxed) {
            return Err(SendError::Overflow);
        }
        let len = data.len();
        let limit = self.shared.limit.load(Ordering::Relaxed);
        {
            // Checked and counted under the lock, so that concurrent routed
            // sends cannot both take the last room. Own sends do not take
            // the lock to count: they may still overflow what routed
            // traffic left, as they always could.
            let mut queue = self.shared.queue();
            if queue.receiver_gone {
                return Err(SendError::Closed);
            }
            let queued = self.shared.queued.load(Ordering::Acquire);
            let soft = limit * ROUTED_PERCENT / 100;
            if queued + len > limit || (queued > 0 && queued + len > soft) {
                return Err(SendError::Busy);
            }
            let share = limit / SHARES;
            if !queue.senders.is_empty() || queued + len > share {
                if queue.senders.is_empty() {
                    queue.count_senders();
                }
                match queue.senders.iter_mut().find(|(k, _)| *k == sender) {
                    Some((_, bytes)) if *bytes + len > share => return Err(SendError::Busy),
                    Some((_, bytes)) => *bytes += len,
                    None => queue.senders.push((sender, len)),
                }
            }
            self.shared.queued.fetch_add(len, Ordering::AcqRel);
            queue.items.push_back(Queued::Routed { data, sender });
        }
        self.shared.transport.wake();
        Ok(())
    }

    /// Closes the connection once what is queued has been written.
    pub fn close(&self, linger: Duration) {
        let _ = self.push(Out::Close { linger });
    }

    /// Changes the limit for what is queued from now on.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.shared.limit.store(limit, Ordering::Relaxed);
    }

    /// Upgrades to TLS once what is queued has been written.
    pub(crate) fn start_tls(&self) {
        let _ = self.push(Out::StartTls);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

impl Clone for Outbound {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Outbound {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.transport.wake();
        }
    }
}

impl OutboundRx {
    /// Overflow first, then the next item, then the end. Cancel-safe: an
    /// item is taken only when it is returned.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        // Registered before looking, so that nothing queued after the look
        // goes unnoticed.
        self.shared.transport.register(cx.waker());
        if self.shared.overflowed.load(Ordering::Acquire) {
            return Poll::Ready(Next::Overflow);
        }
        if let Some(item) = self.try_recv() {
            return Poll::Ready(Next::Item(item));
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            // A send may have raced the last drop.
            return Poll::Ready(self.try_recv().map_or(Next::End, Next::Item));
        }
        Poll::Pending
    }

    pub(crate) async fn next(&self) -> Next {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Completes on overflow: raced against a write the peer may never read.
    pub(crate) async fn overflowed(&self) {
        std::future::poll_fn(|cx| {
            self.shared.transport.register(cx.waker());
            if self.shared.overflowed.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    pub(crate) fn try_recv(&self) -> Option<Out> {
        let mut queue = self.shared.queue();
        match queue.items.pop_front()? {
            Queued::Own(out) => Some(out),
            Queued::Routed { data, sender } => {
                if !queue.senders.is_empty() {
                    queue.taken(sender, data.len());
                }
                Some(Out::Data(data))
            }
        }
    }

    /// Gives the queue's memory back once it is empty.
    pub(crate) fn release(&self) {
        let mut queue = self.shared.queue();
        if queue.items.is_empty() {
            if queue.items.capacity() > 0 {
                queue.items = VecDeque::new();
            }
            if queue.senders.capacity() > 0 {
                queue.senders = Vec::new();
            }
        }
    }
}

impl OutboundReader {
    /// The next stanza's bytes; `None` once the session is closed (or its
    /// queue overflowed) and nothing is left.
    pub async fn recv(&self) -> Option<Bytes> {
        loop {
            match self.0.next().await {
                Next::Item(Out::Data(bytes)) => {
                    self.0.shared.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
                    return Some(bytes);
                }
                Next::Item(Out::StartTls) => continue,
                Next::Item(Out::Close { .. }) | Next::Overflow | Next::End => return None,
            }
        }
    }

    /// The next stanza's bytes if one is queued.
    pub fn try_recv(&self) -> Option<Bytes> {
        loop {
            match self.0.try_recv()? {
                Out::Data(bytes) => {
                    self.0.shared.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
                    return Some(bytes);
                }
                Out::StartTls => continue,
                Out::Close { .. } => return None,
            }
        }
    }
}

impl Drop for OutboundRx {
    fn drop(&mut self) {
        let mut queue = self.shared.queue();
        queue.receiver_gone = true;
        queue.items = VecDeque::new();
        queue.senders = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(next: Next) -> Option<Bytes> {
        match next {
            Next::Item(Out::Data(b)) => Some(b),
            _ => None,
        }
    }

    #[tokio::test]
    async fn items_come_out_in_order_and_the_end_is_seen() {
        let (tx, rx) = Outbound::new(1024);
        let other = tx.clone();
        tx.send(Bytes::from_static(b"a")).unwrap();
        other.send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(data(rx.next().await).as_deref(), Some(&b"a"[..]));
        drop(tx);
        assert_eq!(data(rx.next().await).as_deref(), Some(&b"b"[..]));
        drop(other);
        assert!(matches!(rx.next().await, Next::End));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let (tx, rx) = Outbound::new(1024);
        let waiting = tokio::spawn(async move { data(rx.next().await) });
        tokio::task::yield_now().await;
        tx.send(Bytes::from_static(b"x")).unwrap();
        assert_eq!(waiting.await.unwrap().as_deref(), Some(&b"x"[..]));
    }

    #[tokio::test]
    async fn overflow_and_closed_are_reported() {
        let (tx, rx) = Outbound::new(4);
        tx.send(Bytes::from_static(b"1")).unwrap();
        assert_eq!(tx.send(Bytes::from_static(b"2345")), Err(SendError::Overflow));
        // Overflow comes before what is queued, and interrupts a write.
        assert!(matches!(rx.next().await, Next::Overflow));
        rx.overflowed().await;
        let (tx2, rx2) = Outbound::new(1024);
        drop(rx2);
        assert_eq!(tx2.send(Bytes::from_static(b"1")), Err(SendError::Closed));
        drop(rx);
    }

    #[tokio::test]
    async fn a_detached_queue_is_read_by_its_owner() {
        let (tx, reader) = Outbound::detached(1024);
        tx.send(Bytes::from_static(b"<message/>")).unwrap();
        assert_eq!(reader.try_recv().as_deref(), Some(&b"<message/>"[..]));
        assert_eq!(tx.queued(), 0);
        tx.close(Duration::ZERO);
        assert!(reader.recv().await.is_none());
    }

    fn take(rx: &OutboundRx) -> usize {
        match rx.try_recv() {
            Some(Out::Data(b)) => {
                rx.shared.queued.fetch_sub(b.len(), Ordering::AcqRel);
                b.len()
            }
            _ => 0,
        }
    }

    #[test]
    fn a_sender_past_its_share_is_refused_and_others_still_fit() {
        // Shares of 100 bytes; routed traffic up to 600.
        let (tx, rx) = Outbound::new(800);
        let chunk = Bytes::from(vec![b'x'; 40]);
        assert_eq!(tx.send_routed(1, chunk.clone()), Ok(()));
        assert_eq!(tx.send_routed(1, chunk.clone()), Ok(()));
        // Now counted per sender: the first two fit, the third does not.
        assert_eq!(tx.send_routed(1, chunk.clone()), Err(SendError::Busy));
        assert_eq!(tx.send_routed(2, chunk.clone()), Ok(()));
        assert!(!rx.shared.overflowed.load(Ordering::Relaxed));
        // Writing frees the sender's share.
        assert_eq!(take(&rx), 40);
        assert_eq!(tx.send_routed(1, chunk.clone()), Ok(()));
        // A sender with nothing queued may send one large stanza.
        assert_eq!(tx.send_routed(3, Bytes::from(vec![b'x'; 300])), Ok(()));
        assert_eq!(tx.send_routed(3, chunk.clone()), Err(SendError::Busy));
        while take(&rx) > 0 {}
        rx.release();
        assert_eq!(rx.shared.queue().senders.capacity(), 0);
    }

    #[test]
    fn routed_traffic_leaves_room_for_own_traffic_and_never_overflows() {
        let (tx, rx) = Outbound::new(800);
        for sender in 0..6 {
            assert_eq!(tx.send_routed(sender, Bytes::from(vec![b'x'; 100])), Ok(()));
        }
        // 600 of 800 routed: the next one is refused whoever sends it.
        assert_eq!(tx.send_routed(99, Bytes::from(vec![b'x'; 10])), Err(SendError::Busy));
        assert!(!rx.shared.overflowed.load(Ordering::Relaxed));
        // Own traffic still fits, up to the limit, and past it overflows.
        assert_eq!(tx.send(Bytes::from(vec![b'x'; 200])), Ok(()));
        assert_eq!(tx.send(Bytes::from(vec![b'x'; 1])), Err(SendError::Overflow));
        assert_eq!(tx.send_routed(99, Bytes::from(vec![b'x'; 1])), Err(SendError::Overflow));
    }

    #[test]
    fn an_ordinary_queue_does_not_count_senders() {
        let (tx, rx) = Outbound::new(1 << 20);
        for sender in 0..100 {
            tx.send_routed(sender, Bytes::from_static(b"<message/>")).unwrap();
        }
        assert_eq!(rx.shared.queue().senders.capacity(), 0);
        while take(&rx) > 0 {}
    }

    #[test]
    fn a_drained_queue_holds_no_memory() {
        let (tx, rx) = Outbound::new(1 << 20);
        for _ in 0..100 {
            tx.send(Bytes::from_static(b"x")).unwrap();
        }
        while rx.try_recv().is_some() {}
        rx.release();
        assert_eq!(rx.shared.queue().items.capacity(), 0);
    }
}
