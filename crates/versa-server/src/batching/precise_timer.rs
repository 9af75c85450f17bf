//! Waiting until an instant with a precision of tens of microseconds.
//! tokio's timer wheel has millisecond ticks and rounds every deadline up
//! to the next one, so a 200 µs batch timeout would wait about a
//! millisecond. The bulk of a long wait stays on tokio's timer; the last
//! stretch goes to one shared thread that sleeps on a condition variable
//! (a futex with a nanosecond timeout) and wakes each waiter when its
//! instant has come.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Waits longer than this partly on tokio's timer, which wakes up to a
/// tick late: the rest is left to the precise thread.
const COARSE_SLACK: Duration = Duration::from_millis(2);

struct Waiter {
    at: Instant,
    id: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.id) == (other.at, other.id)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.id).cmp(&(other.at, other.id))
    }
}

#[derive(Default)]
struct Queue {
    waiters: BinaryHeap<Reverse<Waiter>>,
    next_id: u64,
}

#[derive(Default)]
struct Timer {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Timer {
    /// The one timer thread of the process, started on first use.
    fn shared() -> &'static Arc<Timer> {
        static TIMER: OnceLock<Arc<Timer>> = OnceLock::new();
        TIMER.get_or_init(|| {
            let timer = Arc::new(Timer::default());
            let worker = Arc::clone(&timer);
            std::thread::Builder::new()
                .name("versa-precise-timer".into())
                .spawn(move || worker.run())
                .map(|_| ())
                // Without the thread, waiters fall back to tokio's timer.
                .unwrap_or_else(|e| tracing::warn!(error = %e, "precise timer thread"));
            timer
        })
    }

    fn register(&self, at: Instant) -> oneshot::Receiver<()> {
        let (wake, woken) = oneshot::channel();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let id = queue.next_id;
        queue.next_id = queue.next_id.wrapping_add(1);
        let earliest = queue.waiters.peek().is_none_or(|Reverse(w)| at < w.at);
        queue.waiters.push(Reverse(Waiter { at, id, wake }));
        drop(queue);
        if earliest {
            self.changed.notify_one();
        }
        woken
    }

    fn run(&self) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            while queue.waiters.peek().is_some_and(|Reverse(w)| w.at <= now) {
                if let Some(Reverse(w)) = queue.waiters.pop() {
                    // A waiter that went away (its batch filled) is dropped.
                    let _ = w.wake.send(());
                }
            }
            queue = match queue.waiters.peek().map(|Reverse(w)| w.at - now) {
                None => self.changed.wait(queue).unwrap_or_else(PoisonError::into_inner),
                Some(wait) => {
                    self.changed.wait_timeout(queue, wait).unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
    }
}

/// Waits until `at`, waking within tens of microseconds of it (tokio's
/// `sleep_until` wakes up to a millisecond late). Dropping the future
/// gives the wait up.
pub(super) async fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at <= now {
        return;
    }
    if at - now > COARSE_SLACK {
        tokio::time::sleep_until((at - COARSE_SLACK).into()).await;
    }
    if Instant::now() >= at {
        return;
    }
    if Timer::shared().register(at).await.is_err() {
        // The thread could not start: the coarse timer will do.
        tokio::time::sleep_until(at.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn short_waits_end_within_tens_of_microseconds_not_a_timer_tick() {
        // Each wait starts where the previous one ended; on tokio's timer
        // that is a tick, so every one of these waits would end 300 to
        // 950 µs late (the deadline rounded up to the next millisecond).
        let mut lateness = Vec::new();
        for micros in [50u64, 200, 400, 700, 2_500] {
            for _ in 0..20 {
                let at = Instant::now() + Duration::from_micros(micros);
                sleep_until(at).await;
                let woke = Instant::now();
                assert!(woke >= at, "woke early");
                lateness.push(woke - at);
            }
        }
        lateness.sort();
        // The lower quartile: a loaded machine may delay some wake-ups.
        let quartile = lateness[lateness.len() / 4];
        assert!(quartile < Duration::from_micros(200), "lateness {lateness:?}");
    }

    #[tokio::test]
    async fn waits_wake_in_deadline_order_whatever_the_order_they_came_in() {
        let base = Instant::now() + Duration::from_millis(3);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for offset in [900u64, 100, 500, 300, 700] {
            let tx = tx.clone();
            tokio::spawn(async move {
                sleep_until(base + Duration::from_micros(offset)).await;
                let _ = tx.send(offset);
            });
        }
        drop(tx);
        let mut order = Vec::new();
        while let Some(o) = rx.recv().await {
            order.push(o);
        }
        assert_eq!(order, [100, 300, 500, 700, 900]);
    }

    #[tokio::test]
    async fn an_instant_already_past_returns_at_once() {
        let before = Instant::now();
        sleep_until(before - Duration::from_millis(1)).await;
        sleep_until(before).await;
        assert!(before.elapsed() < Duration::from_millis(1));
    }
}
