//! Bounded queues between pipeline stages. A full queue either blocks the producer (recorded
//! input: every frame matters) or drops its oldest item (live input: latency over completeness),
//! so memory never grows with a slow stage.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

/// What a push does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Wait for room.
    Block,
    /// Evict the oldest item (counted in [`Queue::dropped`]).
    DropOldest,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    dropped: u64,
}

/// A bounded multi-producer multi-consumer queue.
pub struct Queue<T> {
    cap: usize,
    policy: Policy,
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
}

/// The queue was closed: the other side is gone.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

impl<T> Queue<T> {
    /// A queue holding at most `cap` (≥ 1) items.
    pub fn new(cap: usize, policy: Policy) -> Self {
        Self {
            cap: cap.max(1),
            policy,
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
                dropped: 0,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
        }
    }

    /// The state; a lock poisoned by a panicking thread is still used (the state is a plain
    /// deque and two flags, consistent between statements), so that closing a queue while a
    /// stage unwinds never panics again.
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an item; returns the evicted one under [`Policy::DropOldest`], or `Err(Closed)` when
    /// the consumer closed the queue.
    pub fn push(&self, item: T) -> Result<Option<T>, Closed> {
        let mut s = self.lock();
        let mut evicted = None;
        loop {
            if s.closed {
                return Err(Closed);
            }
            if s.items.len() < self.cap {
                break;
            }
            match self.policy {
                Policy::DropOldest => {
                    evicted = s.items.pop_front();
                    s.dropped += 1;
                    break;
                }
                Policy::Block => s = self.not_full.wait(s).unwrap_or_else(|e| e.into_inner()),
            }
        }
        s.items.push_back(item);
        drop(s);
        self.not_empty.notify_one();
        Ok(evicted)
    }

    /// The oldest item; waits while empty; `None` once closed and drained.
    pub fn pop(&self) -> Option<T> {
        let mut s = self.lock();
        loop {
            if let Some(item) = s.items.pop_front() {
                drop(s);
                self.not_full.notify_one();
                return Some(item);
            }
            if s.closed {
                return None;
            }
            s = self.not_empty.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// No more pushes: consumers drain what is left, producers get `Err(Closed)`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    /// Closes and discards what is queued (a consumer giving up).
    pub fn abandon(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.items.clear();
        drop(s);
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    /// Items evicted so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts() {
        let q = Queue::new(2, Policy::DropOldest);
        for i in 0..5 {
            q.push(i).unwrap();
        }
        assert_eq!(q.dropped(), 3);
        q.close();
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(3), Some(4), None));
        assert_eq!(q.push(9), Err(Closed));
    }

    #[test]
    fn block_waits_for_the_consumer_and_loses_nothing() {
        let q = Arc::new(Queue::new(1, Policy::Block));
        let p = q.clone();
        let producer = std::thread::spawn(move || {
            for i in 0..100 {
                p.push(i).unwrap();
            }
            p.close();
        });
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(q.len(), 1, "the producer blocks at capacity");
        let got: Vec<i32> = std::iter::from_fn(|| q.pop()).collect();
        producer.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn abandon_unblocks_a_waiting_producer() {
        let q = Arc::new(Queue::new(1, Policy::Block));
        q.push(0).unwrap();
        let p = q.clone();
        let producer = std::thread::spawn(move || p.push(1));
        std::thread::sleep(Duration::from_millis(20));
        q.abandon();
        assert_eq!(producer.join().unwrap(), Err(Closed));
    }
}
