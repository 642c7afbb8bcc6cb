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
//!
//! Pending output is bounded in bytes as well as frames ([`OutputLimits`], in the
//! spirit of Redis's `client-output-buffer-limit`): a frame counts from the push
//! until the writer has handed it to the socket ([`Outbox::release`]), so frames the
//! writer took but could not write yet still count. A push over the hard limit, or
//! over the soft limit for longer than allowed, *evicts* the connection: its queued
//! frames are dropped at once, every later push is refused, and the owning session
//! is told (see [`Outbox::evicted`]) so it can disconnect. The cost on the fan-out
//! path is one atomic add per push.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::channel::SharedFrame;

/// Buffer capacity (frames) kept after a drain empties the queue; larger buffers
/// left by a burst are shrunk back to `SHRINK_TO`.
const SHRINK_ABOVE: usize = 1024;
const SHRINK_TO: usize = 16;

/// The frame was not queued: the connection fell behind and is evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Nothing queued right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty;

/// Byte bounds on one connection's pending output; `0` disables a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputLimits {
    /// Pending bytes above this evict at once.
    pub hard_bytes: usize,
    /// Pending bytes may stay above this for at most `soft_for`.
    pub soft_bytes: usize,
    pub soft_for: Duration,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Arc<SharedFrame>>,
    /// When pending output last went above the soft limit (reset when a push sees
    /// it below again).
    over_soft_since: Option<Instant>,
}

/// A bounded multi-producer, single-consumer queue of shared frames.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Bytes queued plus bytes taken by the writer and not yet released.
    pending_bytes: AtomicUsize,
    /// Set once, under the queue lock, when the connection is evicted.
    evicted: AtomicBool,
    on_evict: Notify,
    waker: AtomicWaker,
    cap: usize,
    limits: OutputLimits,
}

/// A queue holding at most `cap` frames (at least one) and no byte limit, as a
/// (sender, receiver) pair of handles to the same queue.
pub fn channel(cap: usize) -> (Arc<Outbox>, Arc<Outbox>) {
    with_limits(cap, OutputLimits::default())
}

/// [`channel`] with byte limits.
pub fn with_limits(cap: usize, limits: OutputLimits) -> (Arc<Outbox>, Arc<Outbox>) {
    let o = Arc::new(Outbox {
        queue: Mutex::new(Queue::default()),
        pending_bytes: AtomicUsize::new(0),
        evicted: AtomicBool::new(false),
        on_evict: Notify::new(),
        waker: AtomicWaker::new(),
        cap: cap.max(1),
        limits,
    });
    (o.clone(), o)
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame` unless that would take the connection past a limit, in which
    /// case the connection is evicted; never waits.
    pub fn try_send(&self, frame: Arc<SharedFrame>) -> Result<(), Full> {
        let size = frame.weight();
        let (was_empty, dropped) = {
            let mut q = self.lock();
            if self.evicted.load(Ordering::Relaxed) {
                return Err(Full);
            }
            let pending = self.pending_bytes.fetch_add(size, Ordering::Relaxed) + size;
            if q.frames.len() >= self.cap || self.over_limit(&mut q, pending) {
                self.pending_bytes.fetch_sub(size, Ordering::Relaxed);
                let dropped = self.evict(&mut q);
                (false, Some(dropped))
            } else {
                let was_empty = q.frames.is_empty();
                q.frames.push_back(frame);
                (was_empty, None)
            }
        };
        if let Some(dropped) = dropped {
            // Freed outside the queue lock; the session learns of it through
            // `evicted` (and the writer, if it waits in `recv`, through the waker).
            drop(dropped);
            self.on_evict.notify_waiters();
            self.waker.wake();
            return Err(Full);
        }
        // A non-empty queue means the writer has a wake-up pending or is running
        // and will see this frame before it waits again (see `recv`).
        if was_empty {
            self.waker.wake();
        }
        Ok(())
    }

    /// Whether `pending` bytes break the hard limit, or the soft one for too long.
    fn over_limit(&self, q: &mut Queue, pending: usize) -> bool {
        let l = self.limits;
        if l.hard_bytes > 0 && pending > l.hard_bytes {
            return true;
        }
        if l.soft_bytes == 0 || pending <= l.soft_bytes {
            q.over_soft_since = None;
            return false;
        }
        // Only a connection already over its soft limit pays for reading the clock.
        let now = Instant::now();
        let since = *q.over_soft_since.get_or_insert(now);
        now.duration_since(since) >= l.soft_for
    }

    /// Marks the connection evicted and hands back its queued frames to free.
    fn evict(&self, q: &mut Queue) -> VecDeque<Arc<SharedFrame>> {
        self.evicted.store(true, Ordering::Relaxed);
        let dropped = std::mem::take(&mut q.frames);
        let queued: usize = dropped.iter().map(|f| f.weight()).sum();
        self.pending_bytes.fetch_sub(queued, Ordering::Relaxed);
        dropped
    }

    /// Evicts the connection (as an over-limit push would) and frees its queue.
    pub fn close(&self) {
        let dropped = {
            let mut q = self.lock();
            self.evict(&mut q)
        };
        drop(dropped);
        self.on_evict.notify_waiters();
    }

    /// Whether the connection was evicted.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Resolves once the connection is evicted (at once if it already is). Any
    /// number of these may wait at the same time.
    pub async fn evicted(&self) {
        loop {
            let notified = self.on_evict.notified();
            tokio::pin!(notified);
            // Registered before the check, so an eviction in between still wakes it.
            notified.as_mut().enable();
            if self.is_evicted() {
                return;
            }
            notified.await;
        }
    }

    /// The writer has handed a frame taken from this queue to the transport: it no
    /// longer counts as pending.
    pub fn release(&self, frame: &SharedFrame) {
        self.pending_bytes
            .fetch_sub(frame.weight(), Ordering::Relaxed);
    }

    /// Bytes queued or taken by the writer and not yet released.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes.load(Ordering::Relaxed)
    }

    /// The oldest queued frame, if any.
    pub fn try_recv(&self) -> Result<Arc<SharedFrame>, Empty> {
        self.lock().frames.pop_front().ok_or(Empty)
    }

    /// Moves up to `max` queued frames to `f`, oldest first, under one lock.
    pub fn drain(&self, max: usize, mut f: impl FnMut(Arc<SharedFrame>)) {
        let mut q = self.lock();
        let n = max.min(q.frames.len());
        q.frames.drain(..n).for_each(&mut f);
        // A burst may have grown the buffer a lot; do not keep that memory on an
        // otherwise idle connection.
        if q.frames.is_empty() && q.frames.capacity() > SHRINK_ABOVE {
            q.frames.shrink_to(SHRINK_TO);
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
        self.lock().frames.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().frames.is_empty()
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
        let mut got = Vec::new();
        rx.drain(2, |f| got.push(f.message.msg_serial));
        assert_eq!(got, vec![Some(0), Some(1)]);
        tx.try_send(frame(4)).unwrap();
        assert_eq!(rx.try_recv().unwrap().message.msg_serial, Some(2));
        assert_eq!(rx.try_recv().unwrap().message.msg_serial, Some(4));
        assert_eq!(rx.try_recv().err(), Some(Empty));
    }

    #[test]
    fn a_full_queue_evicts_and_frees() {
        let (tx, rx) = channel(3);
        for i in 0..3 {
            tx.try_send(frame(i)).unwrap();
        }
        assert_eq!(tx.try_send(frame(3)), Err(Full));
        assert!(rx.is_evicted());
        assert!(rx.is_empty(), "queued frames are dropped on eviction");
        assert_eq!(rx.pending_bytes(), 0);
        assert_eq!(tx.try_send(frame(4)), Err(Full), "evicted for good");
    }

    fn sized(bytes: usize) -> Arc<SharedFrame> {
        SharedFrame::new(ProtocolMessage {
            action: Action::Message,
            messages: Some(vec![crate::protocol::Message {
                data: Some(crate::protocol::MessageData::String("x".repeat(bytes))),
                ..Default::default()
            }]),
            ..Default::default()
        })
    }

    #[test]
    fn pending_bytes_count_until_the_writer_releases() {
        let (tx, rx) = channel(100);
        let a = sized(1000);
        let b = sized(3000);
        let (wa, wb) = (a.weight(), b.weight());
        assert!(wa >= 1000 && wb >= 3000, "weight covers the payload");
        tx.try_send(a).unwrap();
        tx.try_send(b).unwrap();
        assert_eq!(rx.pending_bytes(), wa + wb);
        // Taken by the writer but not yet written: still pending.
        let taken = rx.try_recv().unwrap();
        assert_eq!(rx.pending_bytes(), wa + wb);
        rx.release(&taken);
        assert_eq!(rx.pending_bytes(), wb);
        rx.drain(usize::MAX, |f| rx.release(&f));
        assert_eq!(rx.pending_bytes(), 0);
    }

    #[test]
    fn passing_the_hard_limit_evicts() {
        let one = sized(1000).weight();
        let limits = OutputLimits {
            hard_bytes: one * 3,
            ..Default::default()
        };
        let (tx, rx) = with_limits(1000, limits);
        for _ in 0..3 {
            tx.try_send(sized(1000)).unwrap();
        }
        assert!(!rx.is_evicted());
        assert_eq!(tx.try_send(sized(1000)), Err(Full));
        assert!(rx.is_evicted());
        assert_eq!((rx.len(), rx.pending_bytes()), (0, 0));
    }

    #[test]
    fn the_soft_limit_allows_a_burst_for_a_while_only() {
        let one = sized(1000).weight();
        let lenient = OutputLimits {
            soft_bytes: one,
            soft_for: Duration::from_secs(3600),
            ..Default::default()
        };
        let (tx, rx) = with_limits(1000, lenient);
        for _ in 0..10 {
            tx.try_send(sized(1000)).unwrap();
        }
        assert!(!rx.is_evicted(), "over the soft limit, but not for long");
        let strict = OutputLimits {
            soft_bytes: one,
            soft_for: Duration::ZERO,
            ..Default::default()
        };
        let (tx, rx) = with_limits(1000, strict);
        tx.try_send(sized(1000)).unwrap();
        assert_eq!(tx.try_send(sized(1000)), Err(Full));
        assert!(rx.is_evicted());
    }

    #[tokio::test]
    async fn eviction_wakes_every_waiter() {
        let (tx, rx) = with_limits(
            10,
            OutputLimits {
                hard_bytes: 1,
                ..Default::default()
            },
        );
        let waiter = {
            let rx = rx.clone();
            tokio::spawn(async move { rx.evicted().await })
        };
        tokio::task::yield_now().await;
        assert_eq!(tx.try_send(frame(0)), Err(Full));
        waiter.await.unwrap();
        rx.evicted().await;
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let (tx, rx) = channel(10_000);
        for i in 0..5000 {
            tx.try_send(frame(i)).unwrap();
        }
        rx.drain(usize::MAX, drop);
        assert!(rx.is_empty());
        assert!(rx.lock().frames.capacity() <= SHRINK_ABOVE);
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
