//! The slots unpinned queries run in, handed out fairly between callers. Each caller (a user, or the server)
//! waits in its own line; a freed slot goes to the waiting caller whose last query started longest ago (one that
//! has none running first), so one caller's backlog delays another's query by at most the rest of one query.
//! A caller may have only a few queries waiting; a waiting query whose request is dropped leaves its line.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::error::{Error, ErrorKind};

/// How many queries one caller may have waiting for a slot; one more is refused with 429 (code 9). The SDK
/// sends a handful at once on a page load; a caller that keeps more waiting only queues work behind itself.
pub const MAX_WAITING_PER_CALLER: usize = 8;

/// The query slots and the callers waiting for one.
pub struct QuerySlots {
    lines: Mutex<Lines>,
}

struct Lines {
    /// Slots nobody holds. A freed slot goes straight to a waiting query, so some are free only when none waits.
    free: usize,
    /// Callers with a query running or waiting.
    callers: HashMap<String, Line>,
    /// Counts the queries started, and names the waiting ones.
    sequence: u64,
}

#[derive(Default)]
struct Line {
    running: usize,
    /// When (in `sequence`) the caller's last query started; 0 for a caller with none since it was last idle.
    last_start: u64,
    /// Its waiting queries, oldest first, each with its name and how it is told the slot is its own.
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Lines {
    /// Starts a query of `caller` in a slot it already holds.
    fn start(&mut self, caller: &str) {
        self.sequence += 1;
        let line = self.callers.entry(caller.to_string()).or_default();
        line.running += 1;
        line.last_start = self.sequence;
    }

    /// Forgets `caller` once it has nothing running or waiting.
    fn forget_if_idle(&mut self, caller: &str) {
        if self
            .callers
            .get(caller)
            .is_some_and(|line| line.running == 0 && line.waiting.is_empty())
        {
            self.callers.remove(caller);
        }
    }

    /// Hands a slot that `caller` no longer holds (if any) to the next waiting query, or frees it.
    fn hand_over(&mut self) {
        loop {
            let next = self
                .callers
                .iter()
                .filter_map(|(caller, line)| {
                    let (ticket, _) = line.waiting.front()?;
                    Some(((line.last_start, *ticket), caller))
                })
                .min_by_key(|(key, _)| *key)
                .map(|(_, caller)| caller.clone());
            let Some(caller) = next else {
                self.free += 1;
                return;
            };
            let Some((_, wake)) = self
                .callers
                .get_mut(&caller)
                .and_then(|line| line.waiting.pop_front())
            else {
                continue;
            };
            self.start(&caller);
            if wake.send(()).is_ok() {
                return;
            }
            // Its request was dropped between leaving the line and now: try the next.
            if let Some(line) = self.callers.get_mut(&caller) {
                line.running -= 1;
            }
            self.forget_if_idle(&caller);
        }
    }
}

/// A held query slot; dropping it hands the slot on.
pub struct Slot {
    slots: Arc<QuerySlots>,
    caller: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(&self.caller);
    }
}

/// A query waiting in its caller's line; dropped before its turn (its request was dropped), it leaves the line.
struct Waiting {
    slots: Arc<QuerySlots>,
    caller: String,
    ticket: u64,
    done: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut lines = self.slots.lines();
        let line = lines.callers.get_mut(&self.caller);
        let waited = line.and_then(|line| {
            let at = line.waiting.iter().position(|(t, _)| *t == self.ticket)?;
            line.waiting.remove(at)
        });
        if waited.is_some() {
            lines.forget_if_idle(&self.caller);
        } else {
            // The slot was handed over as the request was dropped: pass it on.
            drop(lines);
            self.slots.release(&self.caller);
        }
    }
}

impl QuerySlots {
    pub fn new(slots: usize) -> Arc<QuerySlots> {
        Arc::new(QuerySlots {
            lines: Mutex::new(Lines {
                free: slots,
                callers: HashMap::new(),
                sequence: 0,
            }),
        })
    }

    fn lines(&self) -> MutexGuard<'_, Lines> {
        // Every change to the lines is completed before anything that could panic: a poisoned lock is consistent.
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a query of `caller`, once it is its turn; 429 (code 9) when the caller already has
    /// [`MAX_WAITING_PER_CALLER`] queries waiting.
    pub async fn acquire(self: &Arc<Self>, caller: &str) -> Result<Slot, Error> {
        let (ticket, turn) = {
            let mut lines = self.lines();
            if lines.free > 0 {
                lines.free -= 1;
                lines.start(caller);
                return Ok(self.slot(caller));
            }
            lines.sequence += 1;
            let ticket = lines.sequence;
            let line = lines.callers.entry(caller.to_string()).or_default();
            if line.waiting.len() >= MAX_WAITING_PER_CALLER {
                return Err(Error::new(
                    ErrorKind::RateLimited,
                    format!(
                        "too many queries waiting: at most {MAX_WAITING_PER_CALLER} of one caller wait for a \
                         query slot at once; retry when one has been answered"
                    ),
                ));
            }
            let (wake, turn) = oneshot::channel();
            line.waiting.push_back((ticket, wake));
            (ticket, turn)
        };
        let mut waiting = Waiting {
            slots: Arc::clone(self),
            caller: caller.to_string(),
            ticket,
            done: false,
        };
        // The sender is only dropped when it is handed a slot or by `Waiting` itself.
        let _ = turn.await;
        waiting.done = true;
        Ok(self.slot(caller))
    }

    fn slot(self: &Arc<Self>, caller: &str) -> Slot {
        Slot {
            slots: Arc::clone(self),
            caller: caller.to_string(),
        }
    }

    fn release(&self, caller: &str) {
        let mut lines = self.lines();
        if let Some(line) = lines.callers.get_mut(caller) {
            line.running = line.running.saturating_sub(1);
        }
        lines.forget_if_idle(caller);
        lines.hand_over();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `f` once: whether it is ready.
    fn ready<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn a_freed_slot_goes_to_the_caller_served_least_recently() {
        let slots = QuerySlots::new(1);
        let first = ready(&mut Box::pin(slots.acquire("ann"))).unwrap().unwrap();
        let mut ann: Vec<_> = (0..3).map(|_| Box::pin(slots.acquire("ann"))).collect();
        for f in &mut ann {
            assert!(ready(f).is_none());
        }
        let mut bob = Box::pin(slots.acquire("bob"));
        assert!(ready(&mut bob).is_none());
        drop(first);
        // Bob came last but Ann has been served: Bob goes first.
        assert!(ready(&mut ann[0]).is_none());
        let bob_slot = ready(&mut bob).unwrap().unwrap();
        drop(bob_slot);
        let ann_slot = ready(&mut ann[0]).unwrap().unwrap();
        drop(ann_slot);
        assert!(ready(&mut ann[1]).unwrap().is_ok());
    }

    #[test]
    fn a_caller_waits_a_few_queries_at_most_and_a_dropped_wait_leaves_the_line() {
        let slots = QuerySlots::new(1);
        let held = ready(&mut Box::pin(slots.acquire("ann"))).unwrap().unwrap();
        let mut waiting: Vec<_> = (0..MAX_WAITING_PER_CALLER)
            .map(|_| Box::pin(slots.acquire("ann")))
            .collect();
        for f in &mut waiting {
            assert!(ready(f).is_none());
        }
        let refused = ready(&mut Box::pin(slots.acquire("ann"))).unwrap();
        assert_eq!(refused.err().unwrap().code(), 9);
        // Another caller still gets in line.
        let mut bob = Box::pin(slots.acquire("bob"));
        assert!(ready(&mut bob).is_none());
        waiting.clear();
        drop(held);
        assert!(ready(&mut bob).unwrap().is_ok());
    }
}
