//! The pacer: keeps one tenant's Graph requests under its resource-unit budget once Graph has
//! shown where that budget is, so that a 429 becomes rare rather than the way to find out; and
//! one shared by every tenant of an app registration under Graph's per-app budget across
//! tenants ([`Pacer::app`]: a 20-second window, learnt from `Application`-scoped 429s and from
//! shares reported while the tenant is not the app's main spender).
//!
//! Graph does not say the budget up front; it says how much of it is in use once that passes
//! 80 % (`x-ms-throttle-limit-percentage`), and answers 429 beyond it. The pacer counts what
//! each request cost (`x-ms-resource-unit`) over Graph's 10-second window; from a share it
//! estimates the budget (RU spent in the window ÷ share) and from then on lets requests go at
//! [`TARGET`] of it, a token bucket each request reserves its expected cost from (the cost
//! Graph last charged for that kind of request). A 429 halves the estimate; a quiet window
//! lets it grow back by a tenth. Before any signal nothing is paced. It decides nothing about
//! records and sends nothing itself.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::clock::Instant;

/// Graph's window for the per-app-and-tenant budget.
const WINDOW: Duration = Duration::from_secs(10);
/// The share of the estimated budget the pacer lets requests use.
pub const TARGET: f64 = 0.75;
/// Graph's largest per-app-and-tenant budget (RU per 10 s): no estimate grows past it.
const LARGEST_BUDGET: f64 = 8_000.0;

#[derive(Debug)]
pub struct Pacer {
    state: Mutex<State>,
    /// Graph's window for the budget this pacer keeps under.
    window: Duration,
    /// The largest budget Graph has of this kind: no estimate grows past it.
    largest: f64,
    /// Whether a 429 before any estimate sets one (the RU spent in the window): for the
    /// per-app budget, which no single tenant's share reveals.
    learn_from_429: bool,
}

impl Default for Pacer {
    /// The per-app-and-tenant pacer.
    fn default() -> Pacer {
        Pacer {
            state: Mutex::default(),
            window: WINDOW,
            largest: LARGEST_BUDGET,
            learn_from_429: false,
        }
    }
}

/// Graph's per-app budget across tenants: 150,000 RU per 20 s.
const APP_WINDOW: Duration = Duration::from_secs(20);
const APP_BUDGET: f64 = 150_000.0;
/// The smallest per-app budget the app's pacer assumes after a 429 (RU per 20 s).
const APP_FLOOR: f64 = 1_000.0;

#[derive(Debug, Default)]
struct State {
    /// RU charged in the last window, by when.
    spent: VecDeque<(Instant, u32)>,
    /// The budget per window as estimated from Graph's signals; `None` before any.
    budget: Option<f64>,
    /// The token bucket paced at `TARGET × budget` per window.
    tokens: f64,
    refilled: Option<Instant>,
    last_signal: Option<Instant>,
    last_throttle: Option<Instant>,
    /// What each kind of request cost last time.
    costs: HashMap<String, u32>,
}

impl State {
    fn spent_in_window(&mut self, now: Instant, window: Duration) -> f64 {
        while self
            .spent
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
        {
            self.spent.pop_front();
        }
        self.spent.iter().map(|(_, u)| f64::from(*u)).sum()
    }

    fn refill(&mut self, now: Instant, window: Duration, largest: f64) {
        let Some(budget) = self.budget else { return };
        let rate = TARGET * budget / window.as_secs_f64();
        let elapsed = self
            .refilled
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        self.tokens = (self.tokens + elapsed * rate).min(TARGET * budget);
        self.refilled = Some(now);
        // A quiet window in which the client spent near its target: the budget may be larger
        // than feared. (An idle client learns nothing, and never past Graph's largest.)
        let quiet = self
            .last_signal
            .is_some_and(|at| now.saturating_duration_since(at) > window);
        if quiet && self.spent_in_window(now, window) >= 0.5 * TARGET * budget {
            self.budget = Some((budget * 1.1).min(largest));
            self.last_signal = Some(now);
        }
    }

    fn set_budget(&mut self, budget: f64, now: Instant) {
        let budget = budget.max(1.0);
        self.budget = Some(budget);
        self.tokens = self.tokens.min(TARGET * budget);
        self.refilled.get_or_insert(now);
        self.last_signal = Some(now);
    }
}

/// Requests of the same kind cost the same: the path with its ids left out.
pub fn kind(url: &str) -> String {
    let path = url.split('?').next().unwrap_or("");
    let path = path.split_once("/v1.0").map_or(path, |(_, p)| p);
    path.split('/')
        .map(|s| {
            if entra_sync_core::ObjectId::parse(s).is_ok() {
                "{id}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl Pacer {
    /// The pacer of an app registration's budget across all its tenants, shared by their
    /// clients.
    pub fn app() -> Pacer {
        Pacer {
            state: Mutex::default(),
            window: APP_WINDOW,
            largest: APP_BUDGET,
            learn_from_429: true,
        }
    }

    /// RU charged in this pacer's window, per second.
    pub fn rate(&self, now: Instant) -> f64 {
        self.state().spent_in_window(now, self.window) / self.window.as_secs_f64()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long a request of `kind` (`requests` of them, for a `$batch`) must wait before it
    /// goes; its expected cost is reserved.
    pub fn reserve(&self, kind: &str, requests: u32, now: Instant) -> Duration {
        let mut s = self.state();
        let Some(budget) = s.budget else {
            return Duration::ZERO;
        };
        s.refill(now, self.window, self.largest);
        let cost = f64::from(
            s.costs
                .get(kind)
                .copied()
                .unwrap_or(1)
                .saturating_mul(requests.max(1)),
        );
        s.tokens -= cost;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            // Each reservation waits its own place in the queue: waiters are staggered.
            let rate = TARGET * budget / self.window.as_secs_f64();
            Duration::try_from_secs_f64(-s.tokens / rate)
                .unwrap_or(Duration::MAX)
                .min(Duration::from_secs(60))
        }
    }

    /// Graph charged `units` for a request of `kind` and, above 80 % of the budget, said how
    /// much of it is in use.
    pub fn charged(&self, kind: &str, units: u32, share: Option<f64>, now: Instant) {
        let mut s = self.state();
        s.costs.insert(kind.to_string(), units.max(1));
        s.spent.push_back((now, units));
        let spent = s.spent_in_window(now, self.window);
        if let Some(share) = share.filter(|p| *p > 0.0 && p.is_finite()) {
            let estimate = spent / share;
            let budget = s.budget.map_or(estimate, |b| b.min(estimate));
            s.set_budget(budget, now);
        }
    }

    /// Graph answered 429: an estimated budget was too much, and is halved. The 429s of one
    /// burst of concurrent requests count once; a 429 before any estimate says nothing of
    /// its size (its `Retry-After` is what the client honours).
    pub fn throttled(&self, now: Instant) {
        let mut s = self.state();
        let Some(budget) = s.budget else {
            if self.learn_from_429 {
                // Spent in the window and throttled: about the budget — unless others spent
                // it (another process of the app): never below a floor that keeps the fleet
                // moving while the estimate grows back.
                let spent = s.spent_in_window(now, self.window);
                s.last_throttle = Some(now);
                s.set_budget(spent.max(APP_FLOOR), now);
            }
            return;
        };
        if s.last_throttle
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        s.last_throttle = Some(now);
        s.set_budget(budget * 0.5, now);
    }

    /// The budget the pacer works with now (RU per 10 s), if Graph has shown one.
    pub fn budget(&self) -> Option<f64> {
        self.state().budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_leave_ids_and_queries_out() {
        assert_eq!(
            kind(
                "https://graph.microsoft.com/v1.0/groups/0d5c1b8e-1c2a-4c4e-9d1a-3f0b7c6e5a41/members?$top=999"
            ),
            "/groups/{id}/members"
        );
        assert_eq!(
            kind("http://127.0.0.1:9/v1.0/users/delta?$deltatoken=x"),
            "/users/delta"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_paced_until_graph_shows_the_budget_then_requests_go_at_the_target() {
        let pacer = Pacer::default();
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                pacer.reserve("/groups/{id}/members", 1, now),
                Duration::ZERO
            );
            pacer.charged("/groups/{id}/members", 2, None, now);
        }
        assert_eq!(pacer.budget(), None, "no signal, no pacing");
        // 200 RU spent in the window and Graph says 0.9 of the budget is in use: about 222.
        pacer.charged("/groups/{id}/members", 2, Some(0.9), now);
        let budget = pacer.budget().unwrap_or_default();
        assert!((220.0..225.0).contains(&budget), "{budget}");
        // The bucket starts empty: the next request waits for its 2 RU at 0.75 × 222 / 10 s.
        let wait = pacer.reserve("/groups/{id}/members", 1, now);
        assert!(
            wait > Duration::ZERO && wait < Duration::from_millis(200),
            "{wait:?}"
        );
        // A 429 halves the estimate; the other 429s of the same burst do not.
        tokio::time::advance(Duration::from_secs(2)).await;
        let now = Instant::now();
        pacer.throttled(now);
        pacer.throttled(now);
        let halved = pacer.budget().unwrap_or_default();
        assert!((110.0..113.0).contains(&halved), "{halved}");
        // A quiet window in which it spent near its target lets it grow back by a tenth; an
        // idle one does not.
        tokio::time::advance(Duration::from_secs(11)).await;
        let _ = pacer.reserve("/users/delta", 1, Instant::now());
        assert_eq!(pacer.budget(), Some(halved), "idle: nothing learned");
        let now = Instant::now();
        for _ in 0..60 {
            pacer.charged("/users/delta", 1, None, now);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let _ = pacer.reserve("/users/delta", 1, Instant::now());
        let grown = pacer.budget().unwrap_or_default();
        assert!(grown > halved * 1.09, "{grown} after {halved}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_app_pacer_takes_its_first_429_as_the_budget_and_paces_below_it() {
        let app = Pacer::app();
        let tenant = Pacer::default();
        let now = Instant::now();
        for _ in 0..300 {
            app.charged("/groups/{id}/members", 2, None, now);
        }
        tenant.throttled(now);
        assert_eq!(
            tenant.budget(),
            None,
            "a tenant's first 429 says nothing of its size"
        );
        app.throttled(now);
        assert_eq!(
            app.budget(),
            Some(1_000.0),
            "600 RU spent in its 20 s window, but never below the floor"
        );
        // Paced at 0.75 × 1,000 RU per 20 s = 37.5 RU/s: a 2-RU request waits about 53 ms.
        let wait = app.reserve("/groups/{id}/members", 1, now);
        assert!(
            wait > Duration::from_millis(45) && wait < Duration::from_millis(60),
            "{wait:?}"
        );
        assert!((app.rate(now) - 30.0).abs() < 0.01, "600 RU over 20 s");
        // Spent far more than the floor: that is the estimate.
        let busy = Pacer::app();
        for _ in 0..3_000 {
            busy.charged("/groups/{id}/members", 2, None, now);
        }
        busy.throttled(now);
        assert_eq!(busy.budget(), Some(6_000.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_client_spends_its_target_share_of_the_budget_in_a_window() {
        let pacer = Pacer::default();
        let start = Instant::now();
        for _ in 0..900 {
            pacer.charged("/users/delta", 1, None, start);
        }
        pacer.charged("/users/delta", 1, Some(0.9), start);
        let budget = pacer.budget().unwrap_or_default();
        // 1-RU requests for one window, as fast as the pacer lets them go.
        let mut sent = 0.0;
        let mut clock = start;
        loop {
            let wait = pacer.reserve("/users/delta", 1, clock);
            if clock.saturating_duration_since(start) + wait > WINDOW {
                break;
            }
            clock += wait;
            pacer.charged("/users/delta", 1, None, clock);
            sent += 1.0;
        }
        assert!(
            sent <= TARGET * budget + 1.0 && sent >= TARGET * budget * 0.9,
            "{sent} RU in a window against a budget of {budget}"
        );
    }
}
