//! The bound on one tenant's requests in flight (`sync.max_concurrency`), and who goes next
//! when requests wait for a slot: the request ranked highest, then the one waiting longest.
//!
//! A full read has more chains of member pages than slots when a tenant has many rule groups.
//! Handed out in arrival order, every chain waits its turn once per page, and the longest one
//! (which the read lasts as long as) is slowed by the short ones. Ranked by the members a
//! group has left ([`Chain`]), the slot goes to the chain that would finish last; requests
//! that are not member pages (cursors, `$batch`es) go first.
//!
//! Owns the waiting line only: it must not send requests or know what they are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// Where a request stands in the line for a slot.
#[derive(Clone, Default)]
pub enum Rank {
    /// Ahead of every member page: a request the read waits on as a whole.
    #[default]
    First,
    /// A page of this group's members: the more the group has left, the sooner.
    Members(Arc<Chain>),
}

impl Rank {
    fn value(&self) -> u64 {
        match self {
            Rank::First => u64::MAX,
            Rank::Members(chain) => chain.left(),
        }
    }
}

/// How far one group's member read has come: the members read, and how many there are when
/// Graph said so (a hint: a count that arrives late, or never, only changes the order).
#[derive(Debug, Default)]
pub struct Chain {
    /// Members in all plus one; 0 while unknown.
    total: AtomicU64,
    read: AtomicU64,
}

impl Chain {
    pub fn set_total(&self, members: u64) {
        self.total
            .store(members.saturating_add(1), Ordering::Relaxed);
    }

    pub fn add_read(&self, members: u64) {
        self.read.fetch_add(members, Ordering::Relaxed);
    }

    /// Members left to read. A group of unknown size ranks above every known one (a nested
    /// group found late has the least time left to finish in); among them, the one read least
    /// goes first, so without counts the slots go round as they did in arrival order. A group
    /// read past its count (the count lagged) is of unknown size again.
    fn left(&self) -> u64 {
        let read = self.read.load(Ordering::Relaxed);
        match self.total.load(Ordering::Relaxed) {
            total if total > 0 && read < total - 1 => total - 1 - read,
            _ => (u64::MAX / 2).saturating_sub(read),
        }
    }
}

/// At most `slots` holders of a [`Slot`] at once.
pub struct Gate {
    slots: usize,
    state: Mutex<State>,
}

struct State {
    free: usize,
    next: u64,
    /// Never non-empty while a slot is free: a freed slot goes straight to a waiter.
    waiting: Vec<Waiter>,
}

struct Waiter {
    seq: u64,
    rank: Rank,
    granted: oneshot::Sender<()>,
}

impl Gate {
    pub fn new(slots: usize) -> Gate {
        Gate {
            slots: slots.max(1),
            state: Mutex::new(State {
                free: slots.max(1),
                next: 0,
                waiting: Vec::new(),
            }),
        }
    }

    /// How many may hold a slot at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot, once one is free and no waiter ranks above `rank`. Dropping the future while it
    /// waits gives up its place (or passes on a slot it was just handed).
    pub async fn acquire(&self, rank: Rank) -> Slot<'_> {
        loop {
            let (seq, receiver) = {
                let mut state = self.state();
                if state.free > 0 {
                    state.free -= 1;
                    return Slot { gate: self };
                }
                let (granted, receiver) = oneshot::channel();
                state.next += 1;
                let seq = state.next;
                state.waiting.push(Waiter {
                    seq,
                    rank: rank.clone(),
                    granted,
                });
                (seq, receiver)
            };
            let mut waiting = Waiting {
                gate: self,
                seq,
                receiver,
                done: false,
            };
            let granted = (&mut waiting.receiver).await.is_ok();
            waiting.done = true;
            if granted {
                return Slot { gate: self };
            }
        }
    }

    /// A slot comes back: to the best-ranked waiter, or to the free ones.
    fn release(&self) {
        let mut state = self.state();
        loop {
            let best = state
                .waiting
                .iter()
                .enumerate()
                .max_by_key(|(_, w)| (w.rank.value(), std::cmp::Reverse(w.seq)))
                .map(|(i, _)| i);
            let Some(i) = best else {
                state.free += 1;
                return;
            };
            let waiter = state.waiting.swap_remove(i);
            // A waiter that gave up has closed its receiver: try the next one.
            if waiter.granted.send(()).is_ok() {
                return;
            }
        }
    }

    /// Whether a waiter ranks above `rank`: a chain then gives up the slot it keeps.
    pub fn outranked(&self, rank: &Rank) -> bool {
        let rank = rank.value();
        self.state().waiting.iter().any(|w| w.rank.value() > rank)
    }

    fn forget(&self, seq: u64) {
        self.state().waiting.retain(|w| w.seq != seq);
    }
}

/// One request's place in flight; the slot is freed on drop.
pub struct Slot<'g> {
    gate: &'g Gate,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// A waiter's side of the line, so a cancelled wait neither keeps its place nor loses a slot.
struct Waiting<'g> {
    gate: &'g Gate,
    seq: u64,
    receiver: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Closed first, so no slot can be handed over after the check below.
        self.receiver.close();
        if self.receiver.try_recv().is_ok() {
            self.gate.release();
        } else {
            self.gate.forget(self.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn chain(total: Option<u64>, read: u64) -> Arc<Chain> {
        let chain = Chain::default();
        if let Some(total) = total {
            chain.set_total(total);
        }
        chain.add_read(read);
        Arc::new(chain)
    }

    /// The order in which waiters ranked `ranks` (queued in that order) get the one slot.
    async fn order(ranks: Vec<Rank>) -> Vec<usize> {
        let gate = Arc::new(Gate::new(1));
        let held = gate.acquire(Rank::First).await;
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, rank) in ranks.into_iter().enumerate() {
            let gate = Arc::clone(&gate);
            let done = done.clone();
            tasks.spawn(async move {
                let _slot = gate.acquire(rank).await;
                let _ = done.send(i);
                tokio::time::sleep(Duration::from_millis(1)).await;
            });
            // Queued one after the other.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(held);
        drop(done);
        let mut out = Vec::new();
        while let Some(i) = finished.recv().await {
            out.push(i);
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_group_with_most_members_left_then_to_the_oldest_waiter() {
        let ranks = vec![
            Rank::Members(chain(Some(5_000), 4_000)), // 1,000 left
            Rank::Members(chain(Some(30_000), 999)),  // 29,001 left
            Rank::Members(chain(Some(1_000), 0)),     // 1,000 left, queued later
            Rank::First,
            Rank::Members(chain(None, 999)), // unknown size
        ];
        assert_eq!(order(ranks).await, vec![3, 4, 1, 0, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_ranks_the_line_is_first_come_first_served() {
        assert_eq!(order(vec![Rank::First; 4]).await, vec![0, 1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_count_that_arrives_while_pages_wait_reorders_them() {
        let small = chain(None, 0);
        let large = chain(None, 0);
        let gate = Arc::new(Gate::new(1));
        let held = gate.acquire(Rank::First).await;
        let first = tokio::spawn({
            let gate = Arc::clone(&gate);
            let small = Rank::Members(Arc::clone(&small));
            async move { drop(gate.acquire(small).await) }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut second = tokio::spawn({
            let gate = Arc::clone(&gate);
            let large = Rank::Members(Arc::clone(&large));
            async move {
                let _slot = gate.acquire(large).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        small.set_total(10);
        large.set_total(10_000);
        drop(held);
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The large group holds the slot; the small one still waits.
        assert!(!first.is_finished());
        (&mut second).await.ok();
        first.await.ok();
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_neither_keeps_its_place_nor_loses_the_slot() {
        let gate = Arc::new(Gate::new(1));
        let held = gate.acquire(Rank::First).await;
        let quitter = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { drop(gate.acquire(Rank::First).await) }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        quitter.abort();
        let _ = quitter.await;
        drop(held);
        // The one slot is free again, whoever asks.
        let again = tokio::time::timeout(Duration::from_secs(1), gate.acquire(Rank::First)).await;
        assert!(again.is_ok());
        assert!(gate.state().waiting.is_empty());
    }

    #[test]
    fn a_group_read_past_its_count_is_of_unknown_size_again() {
        assert_eq!(chain(Some(2_000), 999).left(), 1_001);
        assert!(chain(Some(999), 999).left() > chain(Some(30_000), 0).left());
        assert!(chain(Some(0), 0).left() > chain(Some(30_000), 0).left());
    }

    #[test]
    fn a_waiter_handed_a_slot_and_then_cancelled_passes_it_on() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let gate = Arc::new(Gate::new(1));
            let held = gate.acquire(Rank::First).await;
            let (got, mut gets) = tokio::sync::mpsc::unbounded_channel();
            let waiter = |name: &'static str| {
                let (gate, got) = (Arc::clone(&gate), got.clone());
                tokio::spawn(async move {
                    let _slot = gate.acquire(Rank::First).await;
                    let _ = got.send(name);
                    std::future::pending::<()>().await;
                })
            };
            let a = waiter("a");
            let b = waiter("b");
            tokio::task::yield_now().await;
            // The slot is handed to `a`, which is aborted before it runs again.
            drop(held);
            a.abort();
            let _ = a.await;
            assert_eq!(gets.recv().await, Some("b"));
            b.abort();
        });
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_holders_than_slots() {
        let gate = Arc::new(Gate::new(3));
        let holding = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40u64 {
            let (gate, holding, most) =
                (Arc::clone(&gate), Arc::clone(&holding), Arc::clone(&most));
            tasks.spawn(async move {
                let rank = if i % 3 == 0 {
                    Rank::First
                } else {
                    Rank::Members(chain(Some(i * 100), 0))
                };
                let _slot = gate.acquire(rank).await;
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1 + i % 5)).await;
                holding.fetch_sub(1, Ordering::SeqCst);
            });
        }
        while tasks.join_next().await.is_some() {}
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert_eq!(gate.state().free, 3);
    }
}
