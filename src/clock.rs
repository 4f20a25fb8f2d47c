//! The one place product code reads the time: wall-clock time through [`Clock`] (timestamps in
//! the store, retention, `Retry-After` dates, status), monotonic time through
//! [`tokio::time::Instant`] (token renewal, back-off, health), which tests pause and advance.
//!
//! Reading the clock anywhere else is refused by clippy (`disallowed-methods` in clippy.toml),
//! so a test that sets the time sets it for everything.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, SecondsFormat, Utc};

pub use tokio::time::Instant;

/// Wall-clock time, UTC.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> DateTime<Utc>;

    /// [`Clock::now`] as RFC 3339 with second precision, the store's timestamp format:
    /// `2026-11-23T17:04:05Z`.
    fn now_rfc3339(&self) -> String {
        rfc3339(self.now())
    }
}

/// `t` in the store's timestamp format.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one reading of the wall clock
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is moved: for tests of what depends on dates (retention,
/// grace periods) without waiting for them.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock(Mutex::new(at))
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_prints_store_timestamps() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 17, 4, 5).unwrap());
        assert_eq!(clock.now_rfc3339(), "2026-11-23T17:04:05Z");
        clock.advance(chrono::Duration::days(1));
        assert_eq!(clock.now_rfc3339(), "2026-11-24T17:04:05Z");
    }
}
