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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// Flush (the `<proceed/>`), then run the TLS handshake (RFC 6120
    /// §5.4.3.3), with the certificate of this domain unless SNI names
    /// another hosted one.
    StartTls(Arc<crate::hosts::Host>),
    /// Bytes that are not a stanza (stream errors and close, XEP-0198's own
    /// elements): never counted or kept for resending.
    Nonza(Bytes),
    /// From now on write another session's queue: the stream resumed it
    /// (XEP-0198 §5). What that queue's last transport left unacknowledged
    /// is written first.
    Adopt(Arc<Shared>),
}

/// What the queue holds: routed data carries its sender for the counting.
enum Queued {
    Own(Out),
    Routed {
        data: Bytes,
        sender: u64,
    },
    /// XEP-0198's `<enabled/>`: counting starts with what follows it, as
    /// the client's does.
    Enable(Bytes, Box<Acks>),
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
    /// XEP-0198, once the client enabled it.
    sm: Option<Box<Acks>>,
    /// No transport writes this queue now; it keeps what comes for a
    /// resumption.
    detached: bool,
    /// The session ended: stanzas are refused (its leftovers were taken to
    /// be routed elsewhere), while the stream's own close still goes out.
    sealed: bool,
    /// A stanza was queued past the limits of a detached queue
    /// ([`SendError::Overfull`]): the session is ending, and refuses more.
    overfull: bool,
}

/// XEP-0198 on the server's side of a stream: stanzas written and not yet
/// acknowledged, kept (as the bytes written, shared, not copied) to be
/// resent on resumption or routed elsewhere when the session ends.
struct Acks {
    unacked: VecDeque<Bytes>,
    /// Stanzas taken for writing, modulo 2^32 (§4).
    sent: u32,
    /// The client's last `h`.
    acked: u32,
    /// `sent` when the server last asked for an acknowledgement.
    requested: u32,
    /// Unacknowledged stanzas allowed before the client is cut off.
    max_unacked: usize,
    /// Ask for an acknowledgement every this many stanzas.
    request_every: u32,
}

/// Why an acknowledgement was refused: it counts more than was sent.
#[derive(Debug, PartialEq, Eq)]
pub struct TooHigh {
    pub sent: u32,
}

impl Queue {
    /// Counts `data`, taken for writing, as sent and unacknowledged. False
    /// when the client has let too many go unacknowledged.
    fn count_sent(&mut self, data: &Bytes, unacked_bytes: &AtomicUsize) -> bool {
        let Some(acks) = self.sm.as_mut() else { return true };
        acks.sent = acks.sent.wrapping_add(1);
        acks.unacked.push_back(data.clone());
        unacked_bytes.fetch_add(data.len(), Ordering::AcqRel);
        acks.unacked.len() <= acks.max_unacked
    }

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
    /// Bytes written and kept until acknowledged (XEP-0198): they count
    /// against the limit too, so a client that stops acknowledging is cut
    /// off as one that stops reading is.
    unacked_bytes: AtomicUsize,
    /// Which transport writes this queue; a resumption attaches another,
    /// and the one before then sees the end.
    attached: AtomicU64,
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

    /// Counts `n` more bytes queued; the queue's new total.
    fn add_queued(&self, n: usize) -> usize {
        crate::metrics::queued_bytes(n as i64);
        self.queued.fetch_add(n, Ordering::AcqRel) + n
    }

    /// Counts `n` bytes written, or taken back.
    pub(crate) fn sub_queued(&self, n: usize) {
        crate::metrics::queued_bytes(-(n as i64));
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // What was never written leaves the total with its queue.
        crate::metrics::queued_bytes(-(*self.queued.get_mut() as i64));
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
    /// Queued all the same, past the share: the session waits to be
    /// resumed (XEP-0198) and nobody reads its queue, so refusing would
    /// only bounce what its owner will want. It must end now, its queue
    /// going to offline storage in order.
    Overfull,
}

/// The sending side; cheap to clone. The receiver sees the end of the
/// queue once every clone is dropped.
pub struct Outbound {
    shared: Arc<Shared>,
}

/// The transport's side.
pub(crate) struct OutboundRx {
    pub(crate) shared: Arc<Shared>,
    /// Which attachment this is (see [`Shared::attached`]).
    generation: u64,
}

static ATTACHMENTS: AtomicU64 = AtomicU64::new(1);

/// The reading end of a queue whose session is not a socket: an
/// embedder's in-process session (a bot, a bridge), or a benchmark. What
/// the server would have written to the socket comes out here, stanza by
/// stanza.
pub struct OutboundReader(OutboundRx);

impl Outbound {
    pub(crate) fn new(limit: usize) -> (Outbound, OutboundRx) {
        let generation = ATTACHMENTS.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            unacked_bytes: AtomicUsize::new(0),
            attached: AtomicU64::new(generation),
            limit: AtomicUsize::new(limit),
            overflowed: AtomicBool::new(false),
            queue: Mutex::default(),
            transport: AtomicWaker::new(),
            senders: AtomicUsize::new(1),
        });
        (Outbound { shared: shared.clone() }, OutboundRx { shared, generation })
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
            if queue.receiver_gone || (queue.sealed && matches!(item, Out::Data(_))) {
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
        let queued = self.shared.add_queued(len);
        if queued + self.shared.unacked_bytes.load(Ordering::Acquire) > self.shared.limit.load(Ordering::Relaxed) {
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
            if queue.receiver_gone || queue.sealed {
                return Err(SendError::Closed);
            }
            let queued = self.shared.queued.load(Ordering::Acquire) + self.shared.unacked_bytes.load(Ordering::Acquire);
            let soft = limit * ROUTED_PERCENT / 100;
            let mut busy = queued + len > limit || (queued > 0 && queued + len > soft);
            let share = limit / SHARES;
            if !busy && (!queue.senders.is_empty() || queued + len > share) {
                if queue.senders.is_empty() {
                    queue.count_senders();
                }
                match queue.senders.iter_mut().find(|(k, _)| *k == sender) {
                    Some((_, bytes)) if *bytes + len > share => busy = true,
                    Some((_, bytes)) => *bytes += len,
                    None => queue.senders.push((sender, len)),
                }
            }
            if busy {
                if !queue.detached {
                    return Err(SendError::Busy);
                }
                if queue.overfull {
                    // One past the limits is enough to end the session;
                    // more go elsewhere now.
                    return Err(SendError::Closed);
                }
                queue.overfull = true;
                // Kept for the session's end (`seal`), which comes next.
                self.shared.add_queued(len);
                queue.items.push_back(Queued::Own(Out::Data(data)));
                return Err(SendError::Overfull);
            }
            self.shared.add_queued(len);
            queue.items.push_back(Queued::Routed { data, sender });
        }
        self.shared.transport.wake();
        Ok(())
    }

    /// Queues bytes that are not a stanza: XEP-0198 never counts them.
    pub(crate) fn send_nonza(&self, data: Bytes) {
        self.shared.add_queued(data.len());
        let _ = self.push(Out::Nonza(data));
    }

    /// Queues `<enabled/>` (XEP-0198): every stanza written after it is
    /// counted and kept until acknowledged.
    pub(crate) fn enable_acks(&self, enabled: Bytes, max_unacked: usize, request_every: u32) {
        let acks = Box::new(Acks {
            unacked: VecDeque::new(),
            sent: 0,
            acked: 0,
            requested: 0,
            max_unacked,
            request_every: request_every.max(1),
        });
        self.shared.add_queued(enabled.len());
        {
            let mut queue = self.shared.queue();
            if queue.receiver_gone {
                return;
            }
            queue.items.push_back(Queued::Enable(enabled, acks));
        }
        self.shared.transport.wake();
    }

    /// The client acknowledged `h` stanzas (§4): those are forgotten.
    pub(crate) fn ack(&self, h: u32) -> Result<(), TooHigh> {
        let mut queue = self.shared.queue();
        let Some(acks) = queue.sm.as_mut() else { return Ok(()) };
        let newly = h.wrapping_sub(acks.acked) as usize;
        if newly > acks.unacked.len() {
            return Err(TooHigh { sent: acks.sent });
        }
        let freed: usize = acks.unacked.drain(..newly).map(|b| b.len()).sum();
        acks.acked = h;
        self.shared.unacked_bytes.fetch_sub(freed, Ordering::AcqRel);
        if acks.unacked.is_empty() && acks.unacked.capacity() > 0 {
            acks.unacked = VecDeque::new();
        }
        Ok(())
    }

    /// Stanzas written and not acknowledged.
    pub(crate) fn unacked(&self) -> usize {
        self.shared.queue().sm.as_ref().map_or(0, |a| a.unacked.len())
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Acquire)
    }

    /// Lets the transport go while keeping the queue for a resumption:
    /// the transport sees the end (once its write in progress is done),
    /// and what is queued meanwhile waits.
    pub(crate) fn detach(&self) {
        self.shared
            .attached
            .store(ATTACHMENTS.fetch_add(1, Ordering::Relaxed), Ordering::Release);
        self.shared.queue().detached = true;
        self.shared.transport.wake();
    }

    /// The session is over: no stanza is queued from now on, and the ones
    /// that were (unacknowledged first, then those not yet written) are
    /// handed back, in order, to be routed elsewhere (XEP-0198 §5).
    /// Empty unless acknowledgements were on.
    pub(crate) fn seal(&self) -> Vec<Bytes> {
        let mut queue = self.shared.queue();
        queue.sealed = true;
        let Some(acks) = queue.sm.take() else { return Vec::new() };
        let mut left: Vec<Bytes> = acks.unacked.into_iter().collect();
        self.shared.unacked_bytes.store(0, Ordering::Release);
        self.drain_data(&mut queue, &mut left);
        left
    }

    /// The stanzas queued and not yet written, taken back, in order (a
    /// server link that ended: they go on the next one, or back to their
    /// senders). What is queued later is still taken.
    pub(crate) fn take_unsent(&self) -> Vec<Bytes> {
        let mut left = Vec::new();
        self.drain_data(&mut self.shared.queue(), &mut left);
        left
    }

    /// Moves the queued stanzas into `left`, keeping the rest (closes,
    /// nonzas).
    fn drain_data(&self, queue: &mut Queue, left: &mut Vec<Bytes>) {
        let mut kept = VecDeque::new();
        for item in std::mem::take(&mut queue.items) {
            match item {
                Queued::Own(Out::Data(data)) | Queued::Routed { data, .. } => {
                    self.shared.sub_queued(data.len());
                    left.push(data);
                }
                other => kept.push_back(other),
            }
        }
        queue.items = kept;
        queue.senders = Vec::new();
    }

    /// Makes the transport of this (new) stream write `resumed`'s queue
    /// from now on, once what is queued here has been written.
    pub(crate) fn adopt(&self, resumed: &Outbound) {
        let _ = self.push(Out::Adopt(resumed.shared.clone()));
    }

    /// Closes the connection once what is queued has been written.
    pub fn close(&self, linger: Duration) {
        let _ = self.push(Out::Close { linger });
    }

    /// Changes the limit for what is queued from now on.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.shared.limit.store(limit, Ordering::Relaxed);
    }

    /// Upgrades to TLS once what is queued has been written, for the
    /// stream to `host`.
    pub(crate) fn start_tls(&self, host: Arc<crate::hosts::Host>) {
        let _ = self.push(Out::StartTls(host));
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
        if self.superseded() {
            return Poll::Ready(Next::End);
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

    /// Another transport writes this queue now.
    fn superseded(&self) -> bool {
        self.shared.attached.load(Ordering::Acquire) != self.generation
    }

    pub(crate) fn try_recv(&self) -> Option<Out> {
        let mut queue = self.shared.queue();
        if self.superseded() {
            return None;
        }
        let data = match queue.items.pop_front()? {
            Queued::Own(Out::Data(data)) => data,
            Queued::Own(out) => return Some(out),
            Queued::Enable(enabled, acks) => {
                queue.sm = Some(acks);
                return Some(Out::Nonza(enabled));
            }
            Queued::Routed { data, sender } => {
                if !queue.senders.is_empty() {
                    queue.taken(sender, data.len());
                }
                data
            }
        };
        if !queue.count_sent(&data, &self.shared.unacked_bytes) && !self.shared.overflowed.swap(true, Ordering::AcqRel)
        {
            self.shared.transport.wake();
        }
        Some(Out::Data(data))
    }

    /// True when the server should ask for an acknowledgement now (after
    /// every `request_every` stanzas sent); counts it as asked.
    pub(crate) fn ack_request_due(&self) -> bool {
        let mut queue = self.shared.queue();
        let Some(acks) = queue.sm.as_mut() else { return false };
        let due = acks.sent.wrapping_sub(acks.requested) >= acks.request_every && !acks.unacked.is_empty();
        if due {
            acks.requested = acks.sent;
        }
        due
    }

    /// Writes `shared` (a resumed session's queue) from now on: what its
    /// client did not acknowledge goes first, counted again as it is
    /// written (§5: the server resends from the client's `h`).
    pub(crate) fn attach(shared: Arc<Shared>) -> OutboundRx {
        let generation = ATTACHMENTS.fetch_add(1, Ordering::Relaxed);
        {
            let mut queue = shared.queue();
            shared.attached.store(generation, Ordering::Release);
            queue.detached = false;
            if let Some(acks) = queue.sm.as_mut() {
                let resend = std::mem::take(&mut acks.unacked);
                acks.sent = acks.acked;
                acks.requested = acks.acked;
                let bytes: usize = resend.iter().map(|b| b.len()).sum();
                shared.unacked_bytes.fetch_sub(bytes, Ordering::AcqRel);
                shared.add_queued(bytes);
                for data in resend.into_iter().rev() {
                    queue.items.push_front(Queued::Own(Out::Data(data)));
                }
            }
        }
        shared.transport.wake();
        OutboundRx { shared, generation }
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
                Next::Item(Out::Data(bytes) | Out::Nonza(bytes)) => {
                    self.0.shared.sub_queued(bytes.len());
                    return Some(bytes);
                }
                Next::Item(Out::StartTls(_) | Out::Adopt(_)) => continue,
                Next::Item(Out::Close { .. }) | Next::Overflow | Next::End => return None,
            }
        }
    }

    /// The next stanza's bytes if one is queued.
    pub fn try_recv(&self) -> Option<Bytes> {
        loop {
            match self.0.try_recv()? {
                Out::Data(bytes) | Out::Nonza(bytes) => {
                    self.0.shared.sub_queued(bytes.len());
                    return Some(bytes);
                }
                Out::StartTls(_) | Out::Adopt(_) => continue,
                Out::Close { .. } => return None,
            }
        }
    }
}

impl Drop for OutboundRx {
    fn drop(&mut self) {
        let mut queue = self.shared.queue();
        if self.superseded() || queue.detached {
            return;
        }
        if queue.sm.is_some() && !queue.sealed {
            // Kept for a resumption, or for the session's end to route
            // what was never written elsewhere (`seal`): the session decides.
            queue.detached = true;
            return;
        }
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
                rx.shared.sub_queued(b.len());
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

    fn written(rx: &OutboundRx) -> Vec<Bytes> {
        std::iter::from_fn(|| match rx.try_recv()? {
            Out::Data(b) | Out::Nonza(b) => {
                rx.shared.sub_queued(b.len());
                Some(b)
            }
            _ => None,
        })
        .collect()
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn counting_starts_after_enabled_and_acks_free_what_they_count() {
        let (tx, rx) = Outbound::new(1 << 20);
        tx.send(b("before")).unwrap();
        tx.enable_acks(b("<enabled/>"), 100, 2);
        tx.send(b("s1")).unwrap();
        tx.send_nonza(b("<a/>"));
        tx.send_routed(7, b("s2")).unwrap();
        assert_eq!(
            written(&rx),
            vec![b("before"), b("<enabled/>"), b("s1"), b("<a/>"), b("s2")]
        );
        assert_eq!(tx.unacked(), 2);
        assert!(rx.ack_request_due());
        assert!(!rx.ack_request_due(), "asked once per batch");
        assert_eq!(tx.ack(3), Err(TooHigh { sent: 2 }));
        assert_eq!(tx.ack(1), Ok(()));
        assert_eq!(tx.unacked(), 1);
        assert_eq!(rx.shared.unacked_bytes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn h_wraps_at_two_to_the_thirty_second() {
        let (tx, rx) = Outbound::new(1 << 20);
        tx.enable_acks(b("<enabled/>"), 100, 100);
        written(&rx);
        rx.shared.queue().sm.as_mut().unwrap().sent = u32::MAX;
        rx.shared.queue().sm.as_mut().unwrap().acked = u32::MAX;
        tx.send(b("s")).unwrap();
        tx.send(b("t")).unwrap();
        written(&rx);
        assert_eq!(tx.ack(0), Ok(()));
        assert_eq!(tx.unacked(), 1);
        assert_eq!(tx.ack(1), Ok(()));
        assert_eq!(tx.unacked(), 0);
    }

    #[test]
    fn a_new_transport_resends_the_unacknowledged_first_and_the_old_one_ends() {
        let (tx, old) = Outbound::new(1 << 20);
        tx.enable_acks(b("<enabled/>"), 100, 100);
        tx.send(b("s1")).unwrap();
        tx.send(b("s2")).unwrap();
        assert_eq!(written(&old).len(), 3);
        tx.send(b("s3")).unwrap();
        tx.ack(1).unwrap();
        // Dropped connection: the queue is kept, and keeps filling.
        drop(old);
        tx.send(b("s4")).unwrap();
        let rx = OutboundRx::attach(tx.shared.clone());
        assert_eq!(written(&rx), vec![b("s2"), b("s3"), b("s4")]);
        // The client counts from its h: 1 + 3.
        assert_eq!(tx.ack(4), Ok(()));
        // A second resumption supersedes this transport.
        let newer = OutboundRx::attach(tx.shared.clone());
        tx.send(b("s5")).unwrap();
        assert!(rx.try_recv().is_none());
        assert_eq!(written(&newer), vec![b("s5")]);
    }

    #[test]
    fn sealing_hands_back_every_stanza_not_acknowledged_and_refuses_more() {
        let (tx, rx) = Outbound::new(1 << 20);
        tx.enable_acks(b("<enabled/>"), 100, 100);
        tx.send(b("s1")).unwrap();
        written(&rx);
        tx.send(b("s2")).unwrap();
        tx.send_nonza(b("</stream:stream>"));
        assert_eq!(tx.seal(), vec![b("s1"), b("s2")]);
        assert_eq!(tx.send(b("s3")), Err(SendError::Closed));
        assert_eq!(written(&rx), vec![b("</stream:stream>")]);
    }

    #[test]
    fn a_dead_transport_leaves_what_it_never_wrote_for_the_session_to_route() {
        let (tx, rx) = Outbound::new(1 << 20);
        tx.enable_acks(b("<enabled/>"), 100, 100);
        tx.send(b("s1")).unwrap();
        written(&rx);
        tx.send(b("s2")).unwrap();
        // The write failed: the transport ends with s2 still queued.
        drop(rx);
        assert_eq!(tx.seal(), vec![b("s1"), b("s2")]);
    }

    #[test]
    fn a_detached_queue_takes_one_stanza_past_its_limits_then_refuses() {
        let (tx, rx) = Outbound::new(800);
        tx.enable_acks(b("<enabled/>"), 100, 100);
        written(&rx);
        drop(rx);
        let big = Bytes::from(vec![b'x'; 700]);
        assert_eq!(tx.send_routed(1, big.clone()), Ok(()));
        assert_eq!(tx.send_routed(1, big.clone()), Err(SendError::Overfull));
        assert_eq!(tx.send_routed(1, big), Err(SendError::Closed));
        assert_eq!(tx.seal().len(), 2);
    }

    #[test]
    fn too_many_unacknowledged_stanzas_overflow() {
        let (tx, rx) = Outbound::new(1 << 20);
        tx.enable_acks(b("<enabled/>"), 2, 100);
        for s in ["a", "b", "c"] {
            tx.send(b(s)).unwrap();
        }
        written(&rx);
        assert!(tx.overflowed());
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
