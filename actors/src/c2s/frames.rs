//! Frames from the transport task to the c2s actor, at most `CAPACITY`
//! waiting: when the actor falls behind, the transport stops reading the
//! socket (backpressure, not buffering).
//!
//! A tokio channel would do, but it allocates about 800 bytes per
//! connection up front and keeps them; this queue holds nothing while
//! empty, which is nearly always for an idle connection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use futures_util::Stream;

use super::transport::BoxedFrame;

/// Frames decoded ahead of the actor.
const CAPACITY: usize = 8;

#[derive(Default)]
struct State {
    frames: VecDeque<BoxedFrame>,
    sender_gone: bool,
    receiver_gone: bool,
}

#[derive(Default)]
struct Pipe {
    state: Mutex<State>,
    /// The actor, waiting for a frame.
    receiver: AtomicWaker,
    /// The transport, waiting for room.
    room: AtomicWaker,
}

impl Pipe {
    fn state(&self) -> MutexGuard<'_, State> {
        super::lock(&self.state)
    }
}

pub(crate) struct FrameSender(Arc<Pipe>);

pub(crate) struct FrameReceiver(Arc<Pipe>);

/// The actor is gone.
#[derive(Debug)]
pub(crate) struct Closed;

pub(crate) fn pipe() -> (FrameSender, FrameReceiver) {
    let pipe = Arc::new(Pipe::default());
    (FrameSender(pipe.clone()), FrameReceiver(pipe))
}

impl FrameSender {
    /// Waits until a frame may be sent. Cancel-safe; there is one sender,
    /// so the room found stays until `send`.
    pub(crate) async fn reserve(&self) -> Result<(), Closed> {
        std::future::poll_fn(|cx| {
            self.0.room.register(cx.waker());
            let state = self.0.state();
            if state.receiver_gone {
                Poll::Ready(Err(Closed))
            } else if state.frames.len() < CAPACITY {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    pub(crate) fn send(&self, frame: BoxedFrame) {
        {
            let mut state = self.0.state();
            if state.receiver_gone {
                return;
            }
            state.frames.push_back(frame);
        }
        self.0.receiver.wake();
    }
}

impl Drop for FrameSender {
    fn drop(&mut self) {
        self.0.state().sender_gone = true;
        self.0.receiver.wake();
    }
}

impl Stream for FrameReceiver {
    type Item = BoxedFrame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BoxedFrame>> {
        self.0.receiver.register(cx.waker());
        let mut state = self.0.state();
        match state.frames.pop_front() {
            Some(frame) => {
                if state.frames.len() == CAPACITY - 1 {
                    self.0.room.wake();
                }
                if state.frames.is_empty() {
                    state.frames = VecDeque::new();
                }
                Poll::Ready(Some(frame))
            }
            None if state.sender_gone => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

impl Drop for FrameReceiver {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.receiver_gone = true;
        state.frames = VecDeque::new();
        self.0.room.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Frame;
    use futures_util::StreamExt;

    fn frame() -> BoxedFrame {
        Box::new(Ok(Frame::StreamClose))
    }

    #[tokio::test]
    async fn a_full_pipe_makes_the_sender_wait_until_a_frame_is_taken() {
        let (tx, mut rx) = pipe();
        for _ in 0..CAPACITY {
            tx.reserve().await.unwrap();
            tx.send(frame());
        }
        let waiting = tokio::spawn(async move {
            tx.reserve().await.unwrap();
            tx.send(frame());
            tx
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert!(rx.next().await.is_some());
        let tx = waiting.await.unwrap();
        for _ in 0..CAPACITY {
            assert!(rx.next().await.is_some());
        }
        drop(tx);
        assert!(rx.next().await.is_none());
    }

    #[tokio::test]
    async fn the_sender_learns_that_the_actor_is_gone() {
        let (tx, rx) = pipe();
        drop(rx);
        assert!(tx.reserve().await.is_err());
    }
}
