//! A connection's outbound queue, bounded in bytes. Anyone may queue
//! serialised stanzas (the c2s actor itself, or the router delivering from
//! another session) without waiting; a peer that stops reading fills the
//! queue, and the first send past the limit closes the connection with
//! `<policy-violation/>` instead of growing memory.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

pub(crate) enum Out {
    Data(Bytes),
    /// Flush, close our side, and give the peer `linger` to close theirs.
    Close {
        linger: Duration,
    },
    /// Flush (the `<proceed/>`), then run the TLS handshake (RFC 6120 §5.4.3.3).
    StartTls,
}

pub(crate) struct Shared {
    pub(crate) queued: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    /// Woken once on overflow, to abort a write the peer is not reading.
    pub(crate) abort: Notify,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The connection is gone.
    Closed,
    /// The queue is over its limit: the connection is being closed.
    Overflow,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::UnboundedSender<Out>,
    shared: Arc<Shared>,
}

pub(crate) struct OutboundRx {
    pub(crate) rx: mpsc::UnboundedReceiver<Out>,
    pub(crate) shared: Arc<Shared>,
}

impl Outbound {
    pub(crate) fn new(limit: usize) -> (Outbound, OutboundRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            limit,
            overflowed: AtomicBool::new(false),
            abort: Notify::new(),
        });
        (
            Outbound {
                tx,
                shared: shared.clone(),
            },
            OutboundRx { rx, shared },
        )
    }

    pub fn send(&self, data: Bytes) -> Result<(), SendError> {
        if self.shared.overflowed.load(Ordering::Relaxed) {
            return Err(SendError::Overflow);
        }
        let len = data.len();
        let queued = self.shared.queued.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.shared.limit {
            if !self.shared.overflowed.swap(true, Ordering::AcqRel) {
                self.shared.abort.notify_one();
            }
            return Err(SendError::Overflow);
        }
        self.tx.send(Out::Data(data)).map_err(|_| SendError::Closed)
    }

    /// Closes the connection once what is queued has been written.
    pub fn close(&self, linger: Duration) {
        let _ = self.tx.send(Out::Close { linger });
    }

    /// Upgrades to TLS once what is queued has been written.
    pub(crate) fn start_tls(&self) {
        let _ = self.tx.send(Out::StartTls);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}
