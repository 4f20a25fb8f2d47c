//! Resource units: what each request costs as Microsoft Graph's identity-and-access limits
//! charge it (GRAPH-NOTES §6), and the per-app-and-tenant budget Graph enforces with 429s.
//!
//! Base costs: `GET users` 2, `groups/{id}/members` 3, `groups/{id}/transitiveMembers` 5,
//! `directoryObjects/getByIds` 5, `users/{id}/memberOf` 2 (as `me/memberOf`), anything else 1;
//! `$select` −1 (`getByIds` with `$select`: 2), `$expand` +1, `$top` under 20 −1, never
//! below 1. The budget is a token bucket
//! of 3,500 / 5,000 / 8,000 RU per 10 s for a tenant of under 50 / up to 500 / more users,
//! scaled by `SimOptions::ru_budget_scale`; a request over it is answered 429 with
//! `Retry-After` and `x-ms-throttle-scope`, and still charged (Graph keeps logging usage while
//! it throttles). The per-app budget across tenants (150,000 RU per 20 s, scaled alike) is a
//! bucket shared by the simulators of one app's tenants ([`crate::AppBudget`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::graph::Route;

/// The RU a request costs.
pub(crate) fn cost(route: &Route, raw_query: &str) -> u32 {
    let base: i64 = match route {
        Route::Users => 2,
        Route::Members {
            transitive: false, ..
        } => 3,
        Route::Members {
            transitive: true, ..
        } => 5,
        Route::GetByIds => 5,
        Route::UserMemberOf(_) | Route::UserTransitiveMemberOf(_) => 2,
        _ => 1,
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(raw_query.as_bytes())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    let has = |name: &str| params.iter().any(|(k, _)| k == name);
    // "Using $select for directoryObjects/getByIds results in 2 ResourceUnits."
    if matches!(route, Route::GetByIds) && has("$select") {
        return 2;
    }
    let mut cost = base;
    if has("$select") {
        cost -= 1;
    }
    if has("$expand") {
        cost += 1;
    }
    let small_top = params
        .iter()
        .find(|(k, _)| k == "$top")
        .and_then(|(_, v)| v.parse::<u32>().ok())
        .is_some_and(|top| top < 20);
    if small_top {
        cost -= 1;
    }
    cost.max(1) as u32
}

/// The per-app-and-tenant quota for a tenant of `users` users, per 10 s.
pub(crate) fn tenant_quota(users: usize) -> f64 {
    match users {
        0..50 => 3_500.0,
        50..=500 => 5_000.0,
        _ => 8_000.0,
    }
}

/// Graph's per-app budget across all tenants: 150,000 RU per 20 s (GRAPH-NOTES §6).
pub(crate) const APP_QUOTA: f64 = 150_000.0;
pub(crate) const APP_WINDOW: Duration = Duration::from_secs(20);

/// What the budget said to one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Served; the share of the limit in use afterwards (Graph tells it above 0.8).
    Served(f64),
    /// Over the budget: wait this long.
    Throttled(Duration),
}

/// A token bucket of `limit` RU refilled over `window`.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: f64,
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl Budget {
    pub(crate) fn new(limit: f64, window: Duration) -> Budget {
        Budget {
            limit,
            per_sec: limit / window.as_secs_f64(),
            tokens: limit,
            at: Instant::now(),
        }
    }

    /// Charges `cost` RU now.
    pub(crate) fn charge(&mut self, cost: u32) -> Verdict {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.limit);
        self.at = now;
        let cost = f64::from(cost);
        let admitted = self.tokens >= cost;
        // Charged either way, down to one window's debt at most.
        self.tokens = (self.tokens - cost).max(-self.limit);
        if admitted {
            Verdict::Served(((self.limit - self.tokens) / self.limit).clamp(0.0, 2.0))
        } else {
            let wait = (cost - self.tokens.min(cost)) / self.per_sec;
            Verdict::Throttled(Duration::from_secs_f64(wait.max(1.0).ceil()))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn members() -> Route {
        Route::Members {
            group: "g".into(),
            transitive: false,
            cast: None,
            count: false,
        }
    }

    #[test]
    fn costs_follow_graphs_table_and_modifiers() {
        assert_eq!(cost(&members(), ""), 3);
        assert_eq!(cost(&members(), "$select=id,mail&$top=999"), 2);
        assert_eq!(cost(&members(), "$select=id&$top=5"), 1);
        assert_eq!(cost(&Route::Users, "$select=id"), 1);
        assert_eq!(cost(&Route::Users, ""), 2);
        assert_eq!(cost(&Route::UserMemberOf("u".into()), "$select=id"), 1);
        assert_eq!(
            cost(&Route::Group("g".into()), "$select=id"),
            1,
            "never below 1"
        );
        assert_eq!(cost(&Route::GetByIds, "$expand=x"), 6);
        assert_eq!(
            cost(&Route::GetByIds, "$select=id"),
            2,
            "as Graph documents it"
        );
        assert_eq!(tenant_quota(20), 3_500.0);
        assert_eq!(tenant_quota(50), 5_000.0);
        assert_eq!(tenant_quota(100_000), 8_000.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_throttles_then_refills_with_time() {
        let mut b = Budget::new(10.0, Duration::from_secs(10));
        for _ in 0..5 {
            assert!(matches!(b.charge(2), Verdict::Served(_)));
        }
        let Verdict::Throttled(wait) = b.charge(2) else {
            panic!("over the budget")
        };
        assert!(wait >= Duration::from_secs(1), "{wait:?}");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(b.charge(2), Verdict::Served(_)), "refilled");
    }
}
