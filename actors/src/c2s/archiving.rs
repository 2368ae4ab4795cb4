//! A stream's messages on their way through the archive (XEP-0313), in
//! order. Each message's rows are handed to storage as it is read, so a
//! client's messages in flight share the writer's groups with everyone
//! else's (waiting for each before reading the next would make a group
//! at most one message per client). One task per stream routes them as
//! their commits complete, in the order they were read; a message not
//! archived (a chat state, say) queues behind them so as not to overtake.
//!
//! XEP-0198 counts a stanza handled once everything read before it is:
//! [`Archiving::handled`] is the count up to the oldest message still
//! waiting for its commit.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// Messages one stream may have waiting for the archive; the next one
/// waits (the stream reads nothing meanwhile).
pub(super) const MAX_IN_FLIGHT: usize = 64;

type Routing = Pin<Box<dyn Future<Output = ()>>>;

enum Item {
    Message(Routing),
    /// Answered once every message before it is routed.
    Barrier(oneshot::Sender<()>),
}

#[derive(Default)]
pub(super) struct Archiving {
    /// To the stream's task; made at its first message.
    task: Option<mpsc::UnboundedSender<Item>>,
    /// The stanza counts of messages sent on and not yet routed, oldest
    /// first (as far as `finished` has been taken into account).
    in_flight: VecDeque<u32>,
    /// Messages the task has routed, counted by it.
    finished: Arc<AtomicU32>,
    /// How many of those have been taken off `in_flight`.
    seen: u32,
}

impl Archiving {
    /// Sends `routing` (archive, then route) on its way; `seq` is its
    /// stanza count on the stream.
    pub(super) fn submit(&mut self, seq: u32, routing: Routing) {
        self.sync();
        self.in_flight.push_back(seq);
        let task = self.task.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            actix_rt::spawn(run(rx, self.finished.clone()));
            tx
        });
        // The task ends only when this sender is dropped.
        let _ = task.send(Item::Message(routing));
    }

    /// True when nothing is waiting.
    pub(super) fn idle(&mut self) -> bool {
        self.sync();
        self.in_flight.is_empty()
    }

    pub(super) fn full(&mut self) -> bool {
        self.sync();
        self.in_flight.len() >= MAX_IN_FLIGHT
    }

    /// The count of stanzas handled, of `received`: all of them but from
    /// the oldest message still waiting.
    pub(super) fn handled(&mut self, received: u32) -> u32 {
        self.sync();
        self.in_flight.front().map_or(received, |oldest| oldest.wrapping_sub(1))
    }

    /// Completes once every message submitted so far is routed; `None`
    /// when they are.
    pub(super) fn barrier(&mut self) -> Option<oneshot::Receiver<()>> {
        if self.idle() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let _ = self.task.as_ref()?.send(Item::Barrier(tx));
        Some(rx)
    }

    fn sync(&mut self) {
        let finished = self.finished.load(Ordering::Acquire);
        while self.seen != finished && self.in_flight.pop_front().is_some() {
            self.seen = self.seen.wrapping_add(1);
        }
    }
}

async fn run(mut items: mpsc::UnboundedReceiver<Item>, finished: Arc<AtomicU32>) {
    while let Some(item) = items.recv().await {
        match item {
            Item::Message(routing) => {
                routing.await;
                finished.fetch_add(1, Ordering::AcqRel);
            }
            Item::Barrier(reached) => {
                let _ = reached.send(());
            }
        }
    }
}
