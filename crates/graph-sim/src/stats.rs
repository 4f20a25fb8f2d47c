//! Request counters: per endpoint template and final status, as `/_sim/stats` reports them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Requests served. Keys look like `"GET /v1.0/groups/{id}/members 200"` (object ids and the
/// tenant templated out); a connection reset by a fault counts with status `reset`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// HTTP requests to the token endpoint and Graph (control API requests are not counted).
    pub total: u64,
    /// HTTP requests by endpoint and status; the values sum to `total`.
    pub by_endpoint: BTreeMap<String, u64>,
    /// Requests inside `$batch` bodies, keyed the same way (not part of `total`).
    pub batch_items: BTreeMap<String, u64>,
    /// Resource units charged (Graph requests and `$batch` items, throttled ones included).
    #[serde(default)]
    pub resource_units: u64,
    /// Answers 429 for a spent budget, by `x-ms-throttle-scope` kind (`Tenant_Application`).
    #[serde(default)]
    pub throttled: BTreeMap<String, u64>,
}

impl SimStats {
    pub(crate) fn record(&mut self, key: String) {
        self.total += 1;
        *self.by_endpoint.entry(key).or_insert(0) += 1;
    }

    pub(crate) fn record_batch_item(&mut self, key: String) {
        *self.batch_items.entry(key).or_insert(0) += 1;
    }

    /// Count for one exact key, e.g. `"GET /v1.0/users/delta 200"`.
    pub fn get(&self, key: &str) -> u64 {
        self.by_endpoint.get(key).copied().unwrap_or(0)
    }

    /// Sum over the keys containing `part`, e.g. `"/members"` or `" 429"`.
    pub fn matching(&self, part: &str) -> u64 {
        self.by_endpoint
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(_, v)| *v)
            .sum()
    }
}
