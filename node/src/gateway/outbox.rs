//! A connection's outbound frames and its close switch, in one small struct.
//!
//! Why not tokio's bounded `mpsc` plus a `CancellationToken`: the channel allocates its shared
//! state (two cache-padded counters) and a first block of 32 slots up front, 800 B for every
//! connection even when nothing is ever queued, and the token another 112 B. A `VecDeque`
//! behind a mutex allocates only when frames are queued, and two `Notify`s wake the writer and
//! the waiters on a close. At 10,000 idle connections that is most of a kilobyte each.
//!
//! Rules, unchanged from the channel: `push` never waits (a full queue closes the connection
//! with 4008, so one slow client cannot hold memory or slow a fan-out); `push_wait` waits for
//! room (catch-up: backpressure instead of dropping); the first close code set wins.
//!
//! "Full" is a frame count *or* `MAX_QUEUED_BYTES` of frames: 1,024 frames of 400 KB messages
//! would otherwise be 400 MB behind one stalled connection (hardening finding 8).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use super::registry::CLOSE_TOO_SLOW;

/// A frame on a connection's queue: one pointer, so a fan-out wraps its frame once and every
/// recipient's queue shares it.
pub type QueuedFrame = Arc<Utf8Bytes>;

/// Bytes of frames one connection may have queued; a frame that would pass it closes the
/// connection with 4008 (`push`) or waits (`push_wait`). A single frame larger than this is
/// still taken into an empty queue (a frame is at most ~2.4 MB: a 1 MiB message, escaped).
pub const MAX_QUEUED_BYTES: usize = 8 << 20;

/// Queue capacity kept after a drain; a queue that grew past it during a burst gives the
/// memory back once the writer has emptied it.
const KEEP_CAPACITY: usize = 64;

/// Outbound queue and close state of one connection.
#[derive(Debug)]
pub struct Outbox {
    frames: Mutex<Queue>,
    capacity: usize,
    /// 0 while open, else the close code requested first.
    code: AtomicU16,
    /// Wakes the writer: frames were queued or a close was requested. One waiter, so a
    /// `notify_one` with nobody waiting is kept for the writer's next wait.
    writer: Notify,
    /// Wakes everyone else: room was made in a full queue, or a close was requested.
    changed: Notify,
}

/// The frames and their total length.
#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<QueuedFrame>,
    bytes: usize,
    /// A `push_wait` found no room and waits for the writer to make some.
    blocked: bool,
}

impl Queue {
    /// True if `len` more bytes, or one more frame, would pass the bounds.
    fn full_for(&self, len: usize, capacity: usize) -> bool {
        self.frames.len() >= capacity || (!self.frames.is_empty() && self.bytes + len > MAX_QUEUED_BYTES)
    }

    fn push(&mut self, frame: QueuedFrame) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }
}

/// Whether `push` queued the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// The queue was full: the connection is now closing with 4008.
    Full,
    /// The connection was already closing.
    Closed,
}

impl Outbox {
    /// An empty, open outbox holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        Outbox {
            frames: Mutex::new(Queue::default()),
            capacity: capacity.max(1),
            code: AtomicU16::new(0),
            writer: Notify::new(),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame without waiting; a full queue closes the connection with 4008.
    pub fn push(&self, frame: QueuedFrame) -> Pushed {
        if self.is_closed() {
            return Pushed::Closed;
        }
        {
            let mut q = self.lock();
            if q.full_for(frame.len(), self.capacity) {
                drop(q);
                self.close(CLOSE_TOO_SLOW);
                return Pushed::Full;
            }
            q.push(frame);
        }
        self.writer.notify_one();
        Pushed::Queued
    }

    /// Queues a frame, waiting for room; false if the connection closed first.
    pub async fn push_wait(&self, frame: QueuedFrame) -> bool {
        let mut frame = Some(frame);
        self.when(|| {
            if self.is_closed() {
                return Some(false);
            }
            let mut q = self.lock();
            if frame.as_ref().is_some_and(|f| q.full_for(f.len(), self.capacity)) {
                q.blocked = true;
                return None;
            }
            if let Some(f) = frame.take() {
                q.push(f);
            }
            drop(q);
            self.writer.notify_one();
            Some(true)
        })
        .await
    }

    /// Moves up to `max` queued frames into `out`; waits while there are none. Returns false
    /// (with `out` untouched) once a close was requested: the writer then sends the close frame.
    pub async fn next_frames(&self, out: &mut Vec<QueuedFrame>, max: usize) -> bool {
        loop {
            if self.is_closed() {
                return false;
            }
            if self.try_take(out, max) > 0 {
                return true;
            }
            self.writer.notified().await;
        }
    }

    /// Moves up to `max` queued frames into `out` without waiting; returns how many.
    pub fn try_take(&self, out: &mut Vec<QueuedFrame>, max: usize) -> usize {
        let mut q = self.lock();
        let was_full = q.frames.len() >= self.capacity || q.blocked;
        let n = q.frames.len().min(max);
        let before = out.len();
        out.extend(q.frames.drain(..n));
        q.bytes -= out[before..].iter().map(|f| f.len()).sum::<usize>();
        if q.frames.is_empty() && q.frames.capacity() > KEEP_CAPACITY {
            q.frames.shrink_to(KEEP_CAPACITY);
        }
        if n > 0 {
            q.blocked = false;
        }
        drop(q);
        if was_full && n > 0 {
            self.changed.notify_waiters();
        }
        n
    }

    /// Requests the close with `code`; the first code set wins.
    pub fn close(&self, code: u16) {
        let _ = self.code.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.writer.notify_one();
        self.changed.notify_waiters();
    }

    /// Resolves once a close was requested.
    pub async fn closed(&self) {
        self.when(|| self.is_closed().then_some(())).await
    }

    /// Runs `check` until it answers, waiting for `changed` between tries. The wait is
    /// registered before each check, so a change between the check and the wait is not missed.
    async fn when<T>(&self, mut check: impl FnMut() -> Option<T>) -> T {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(answer) = check() {
                return answer;
            }
            changed.await;
        }
    }

    /// True once a close was requested.
    pub fn is_closed(&self) -> bool {
        self.code.load(Ordering::SeqCst) != 0
    }

    /// The close code requested (1000 if none).
    pub fn code(&self) -> u16 {
        match self.code.load(Ordering::SeqCst) {
            0 => 1000,
            c => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn frame(s: &'static str) -> QueuedFrame {
        Arc::new(Utf8Bytes::from_static(s))
    }

    #[tokio::test]
    async fn frames_come_out_in_order_in_batches_of_at_most_max() {
        let o = Outbox::new(8);
        for s in ["a", "b", "c"] {
            assert_eq!(o.push(frame(s)), Pushed::Queued);
        }
        let mut out = Vec::new();
        assert!(o.next_frames(&mut out, 2).await);
        assert!(o.next_frames(&mut out, 2).await);
        let got: Vec<&str> = out.iter().map(|f| f.as_str()).collect();
        assert_eq!(got, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_full_queue_closes_with_4008_and_wakes_the_writer() {
        let o = Outbox::new(2);
        assert_eq!(o.push(frame("a")), Pushed::Queued);
        assert_eq!(o.push(frame("b")), Pushed::Queued);
        assert_eq!(o.push(frame("c")), Pushed::Full);
        assert_eq!(o.code(), CLOSE_TOO_SLOW);
        assert_eq!(o.push(frame("d")), Pushed::Closed);
        let mut out = Vec::new();
        assert!(
            !o.next_frames(&mut out, 8).await,
            "a closing outbox hands out no more frames"
        );
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_frame_queued_while_it_waits() {
        let o = Arc::new(Outbox::new(4));
        let writer = {
            let o = o.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                o.next_frames(&mut out, 4).await.then_some(out.len())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        o.push(frame("x"));
        let got = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(1));
    }

    #[tokio::test]
    async fn push_wait_waits_for_room_and_gives_up_on_close() {
        let o = Arc::new(Outbox::new(1));
        o.push(frame("a"));
        push_wait_gets_in_once_the_writer_drains(&o, "no room yet").await;

        let blocked = {
            let o = o.clone();
            tokio::spawn(async move { o.push_wait(frame("c")).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        o.close(1001);
        let queued = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .unwrap()
            .unwrap();
        assert!(!queued);
        assert_eq!(o.code(), 1001);
        tokio::time::timeout(Duration::from_secs(5), o.closed()).await.unwrap();
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_as_well_as_frames() {
        let big = || Arc::new(Utf8Bytes::from("x".repeat(MAX_QUEUED_BYTES / 4)));
        let o = Outbox::new(1024);
        for _ in 0..4 {
            assert_eq!(o.push(big()), Pushed::Queued);
        }
        assert_eq!(
            o.push(frame("one byte more")),
            Pushed::Full,
            "8 MiB queued: the next frame closes"
        );
        assert_eq!(o.code(), CLOSE_TOO_SLOW);
        // A frame larger than the bound still goes through an empty queue.
        let o = Outbox::new(1024);
        assert_eq!(
            o.push(Arc::new(Utf8Bytes::from("y".repeat(MAX_QUEUED_BYTES + 1)))),
            Pushed::Queued
        );
        let mut out = Vec::new();
        assert_eq!(o.try_take(&mut out, 8), 1);
        assert_eq!(o.push(big()), Pushed::Queued, "taking frames gives their bytes back");
    }

    #[tokio::test]
    async fn push_wait_waits_for_bytes_to_drain() {
        let o = Arc::new(Outbox::new(1024));
        o.push(Arc::new(Utf8Bytes::from("x".repeat(MAX_QUEUED_BYTES))));
        push_wait_gets_in_once_the_writer_drains(&o, "no room in bytes yet").await;
    }

    /// A `push_wait` on the full `o` waits (`why`) until the writer takes frames, then gets in.
    async fn push_wait_gets_in_once_the_writer_drains(o: &Arc<Outbox>, why: &str) {
        let waiting = {
            let o = o.clone();
            tokio::spawn(async move { o.push_wait(frame("b")).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "{why}");
        let mut out = Vec::new();
        assert!(o.next_frames(&mut out, 8).await);
        let queued = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(queued, "room made by the writer lets it in");
    }

    #[test]
    fn the_first_close_code_wins() {
        let o = Outbox::new(1);
        assert_eq!(o.code(), 1000);
        o.close(4001);
        o.close(1001);
        assert_eq!(o.code(), 4001);
        assert!(o.is_closed());
    }
}
