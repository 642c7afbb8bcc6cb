//! A connection's outbound queue: the channel fan-out pushes shared frames in, the
//! connection's writer drains them.
//!
//! Why not `tokio::sync::mpsc`: one publish to a channel with 10,000 subscribers
//! pushes into 10,000 queues on the publisher's thread under the channel lock, and
//! profiling showed the bounded mpsc's per-push work (semaphore, block list walk,
//! block allocation every 32 items, waker) as the largest single cost of the whole
//! fan-out. This queue is a short mutex around a `VecDeque` plus one waker, and it
//! wakes the writer only when the queue goes from empty to non-empty: a writer that
//! has not run yet since the last publish is not woken again. It also allocates
//! nothing until the first frame, which matters for 10,000 idle connections.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;

use crate::channel::SharedFrame;

/// Buffer capacity (frames) kept after a drain empties the queue; larger buffers
/// left by a burst are shrunk back to `SHRINK_TO`.
const SHRINK_ABOVE: usize = 1024;
const SHRINK_TO: usize = 16;

/// The queue was at its bound: the connection fell behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Nothing queued right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty;

/// A bounded multi-producer, single-consumer queue of shared frames.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<Arc<SharedFrame>>>,
    waker: AtomicWaker,
    cap: usize,
}

/// A queue holding at most `cap` frames (at least one), as a (sender, receiver)
/// pair of handles to the same queue.
pub fn channel(cap: usize) -> (Arc<Outbox>, Arc<Outbox>) {
    let o = Arc::new(Outbox {
        queue: Mutex::new(VecDeque::new()),
        waker: AtomicWaker::new(),
        cap: cap.max(1),
    });
    (o.clone(), o)
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<SharedFrame>>> {
        // Nothing panics while holding it; a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame` unless the queue is full; never waits.
    pub fn try_send(&self, frame: Arc<SharedFrame>) -> Result<(), Full> {
        let was_empty = {
            let mut q = self.lock();
            if q.len() >= self.cap {
                return Err(Full);
            }
            let was_empty = q.is_empty();
            q.push_back(frame);
            was_empty
        };
        // A non-empty queue means the writer has a wake-up pending or is running
        // and will see this frame before it waits again (see `recv`).
        if was_empty {
            self.waker.wake();
        }
        Ok(())
    }

    /// The oldest queued frame, if any.
    pub fn try_recv(&self) -> Result<Arc<SharedFrame>, Empty> {
        self.lock().pop_front().ok_or(Empty)
    }

    /// Moves up to `max` queued frames to `f`, oldest first, under one lock.
    pub fn drain(&self, max: usize, mut f: impl FnMut(Arc<SharedFrame>)) {
        let mut q = self.lock();
        let n = max.min(q.len());
        q.drain(..n).for_each(&mut f);
        // A burst may have grown the buffer a lot; do not keep that memory on an
        // otherwise idle connection.
        if q.is_empty() && q.capacity() > SHRINK_ABOVE {
            q.shrink_to(SHRINK_TO);
        }
    }

    /// Waits for the next frame. Single consumer: only the owning connection calls
    /// this. Never returns `None` (the `Option` mirrors channel receivers).
    pub fn recv(&self) -> impl Future<Output = Option<Arc<SharedFrame>>> + '_ {
        poll_fn(move |cx| {
            if let Ok(f) = self.try_recv() {
                return Poll::Ready(Some(f));
            }
            // Register before the second look, so a frame queued in between
            // either is seen now or wakes the registered waker.
            self.waker.register(cx.waker());
            match self.try_recv() {
                Ok(f) => Poll::Ready(Some(f)),
                Err(Empty) => Poll::Pending,
            }
        })
    }

    /// Frames currently queued.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Action, ProtocolMessage};

    fn frame(i: i64) -> Arc<SharedFrame> {
        SharedFrame::new(ProtocolMessage {
            action: Action::Message,
            msg_serial: Some(i),
            ..Default::default()
        })
    }

    #[test]
    fn bounded_and_in_order() {
        let (tx, rx) = channel(3);
        for i in 0..3 {
            tx.try_send(frame(i)).unwrap();
        }
        assert_eq!(tx.try_send(frame(3)), Err(Full));
        let mut got = Vec::new();
        rx.drain(2, |f| got.push(f.message.msg_serial));
        assert_eq!(got, vec![Some(0), Some(1)]);
        tx.try_send(frame(4)).unwrap();
        assert_eq!(rx.try_recv().unwrap().message.msg_serial, Some(2));
        assert_eq!(rx.try_recv().unwrap().message.msg_serial, Some(4));
        assert_eq!(rx.try_recv().err(), Some(Empty));
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let (tx, rx) = channel(10_000);
        for i in 0..5000 {
            tx.try_send(frame(i)).unwrap();
        }
        rx.drain(usize::MAX, drop);
        assert!(rx.is_empty());
        assert!(rx.lock().capacity() <= SHRINK_ABOVE);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_from_another_task() {
        let (tx, rx) = channel(8);
        let waiter = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(rx.recv().await.unwrap().message.msg_serial);
            }
            got
        });
        for i in 0..3 {
            tokio::task::yield_now().await;
            tx.try_send(frame(i)).unwrap();
        }
        assert_eq!(waiter.await.unwrap(), vec![Some(0), Some(1), Some(2)]);
    }
}
