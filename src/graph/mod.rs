//! Microsoft Graph v1.0 client for one tenant (reqwest + rustls): bearer tokens from
//! [`crate::auth`], retries with backoff and jitter, `Retry-After` honoured exactly, a bounded
//! number of requests in flight, `@odata.nextLink` followed verbatim, `$batch`.
//!
//! Owns HTTP and Graph's error semantics ([`GraphError`] names the caller's reaction). It must
//! not decide anything about records; [`fetch`] builds directory snapshots on top of it.

pub mod delta;
pub mod fetch;
pub mod gate;
pub mod pace;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::auth::{AuthError, TokenSource, error_chain};
use crate::clock::Clock;
use crate::config::{SyncConfig, TenantConfig};
use wire::{Page, parse_error, parse_page_of};

#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    #[error("{what}: not found in Entra (404 {code}); check the object id in the config")]
    NotFound { what: String, code: String },
    #[error(
        "{what}: access denied (403 {code}); grant the app the Application permissions GroupMember.Read.All and User.Read.All with admin consent"
    )]
    Forbidden { what: String, code: String },
    #[error("{what}: the delta cursor has expired ({code})")]
    CursorExpired { what: String, code: String },
    #[error("{what}: Graph answered {status} {code}: {message}")]
    Status {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{what}: gave up after {attempts} attempts; last: {last}")]
    Exhausted {
        what: String,
        attempts: u32,
        last: String,
    },
    #[error("{what}: {reason}")]
    BadResponse { what: String, reason: String },
    #[error(
        "{what}: Graph refused a fresh access token (401 {code}); check the app's API permissions"
    )]
    Unauthorized { what: String, code: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl GraphError {
    /// Graph answered an object id that is not a GUID: refused before it can reach a URL or
    /// the store (SPEC 5.8).
    pub fn not_a_guid(what: &str, e: entra_sync_core::NotAGuid) -> GraphError {
        GraphError::BadResponse {
            what: what.to_string(),
            reason: format!("{e}; Graph object ids are GUIDs, so the answer is refused"),
        }
    }

    /// The error for a failed answer that is not retried, from its status and Graph's error
    /// `code` and `message`.
    fn for_status(what: String, status: u16, code: String, message: &str) -> GraphError {
        match status {
            404 => GraphError::NotFound { what, code },
            403 => GraphError::Forbidden { what, code },
            _ => GraphError::Status {
                what,
                status,
                code,
                message: message.chars().take(300).collect(),
            },
        }
    }

    /// The error for a `$batch` item Graph answered with a non-success `status` and `body`.
    pub fn from_answer(what: impl Into<String>, status: u16, body: &Value) -> GraphError {
        let text = |pointer| body.pointer(pointer).and_then(Value::as_str).unwrap_or("");
        GraphError::for_status(
            what.into(),
            status,
            text("/error/code").to_string(),
            text("/error/message"),
        )
    }
}

/// Statuses Graph answers for a passing condition (throttling, an unavailable or failing
/// backend), on a request or a `$batch` item: retried after `Retry-After` or a backoff.
fn is_transient(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Counters a run reports and `/metrics` exposes.
#[derive(Debug, Default)]
pub struct GraphStats {
    pub requests: AtomicU64,
    pub throttle_waits: AtomicU64,
    pub throttle_wait_ms: AtomicU64,
    /// Resource units Graph said it charged (`x-ms-resource-unit`), `$batch` items included.
    pub resource_units: AtomicU64,
}

impl GraphStats {
    fn count(&self, tenant: &str, status: u16) {
        metrics::counter!("entra_sync_graph_requests_total", "tenant" => tenant.to_string(), "status" => status.to_string())
            .increment(1);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn resource_units(&self) -> u64 {
        self.resource_units.load(Ordering::Relaxed)
    }

    /// Counts what `x-ms-resource-unit` says a request or `$batch` item cost.
    fn charged(&self, tenant: &str, units: u32) {
        self.resource_units
            .fetch_add(u64::from(units), Ordering::Relaxed);
        metrics::counter!("entra_sync_graph_resource_units_total", "tenant" => tenant.to_string())
            .increment(u64::from(units));
    }
}

enum Body {
    None,
    Json(Value),
}

/// The HTTP client every tenant's requests go through (Graph and the token endpoint), one per
/// request timeout: its connection pool, TLS configuration and root certificates are shared
/// (reqwest's advice), so a fleet of a thousand tenants holds one of each rather than two per
/// tenant (about 190 KB each), and tenants on the same cloud share connections. It never
/// follows a redirect: a redirect would skip `check_link` (and could carry a POST to the admin
/// port), and neither Graph nor the token endpoint redirects what entra-sync asks.
pub(crate) fn shared_http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    static CLIENTS: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<Duration, reqwest::Client>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut clients = CLIENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(client) = clients.get(&timeout) {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("entra-sync/", env!("CARGO_PKG_VERSION")))
        .build()?;
    clients.insert(timeout, client.clone());
    Ok(client)
}

pub struct GraphClient {
    tenant: String,
    graph_root: String,
    /// `graph_root` parsed: links must have its scheme, host and port (SPEC 5.8).
    origin: url::Url,
    http: reqwest::Client,
    tokens: TokenSource,
    max_attempts: u32,
    /// A longer `Retry-After` is not waited for: that try counts as failed.
    max_retry_wait: Duration,
    retry_base: Duration,
    /// At most `max_concurrency` requests in flight; the longest member reads go first.
    in_flight: gate::Gate,
    /// Keeps requests under the tenant's resource-unit budget once Graph has shown it.
    pacer: pace::Pacer,
    /// The same for the app's budget across tenants, shared by the clients of its tenants.
    app_pacer: Arc<pace::Pacer>,
    pub stats: Arc<GraphStats>,
    /// For `Retry-After` given as a date.
    clock: Arc<dyn Clock>,
}

impl GraphClient {
    pub fn new(
        tenant: &TenantConfig,
        sync: &SyncConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<GraphClient, GraphError> {
        let http =
            shared_http_client(Duration::from_secs(sync.request_timeout_seconds)).map_err(|e| {
                GraphError::BadResponse {
                    what: format!("tenant \"{}\"", tenant.name),
                    reason: format!("cannot build HTTP client: {e}"),
                }
            })?;
        let origin = url::Url::parse(&tenant.graph_url).map_err(|e| GraphError::BadResponse {
            what: format!("tenant \"{}\"", tenant.name),
            reason: format!("graph_url {} is not a URL ({e})", tenant.graph_url),
        })?;
        Ok(GraphClient {
            tenant: tenant.name.clone(),
            graph_root: tenant.graph_url.clone(),
            origin,
            http,
            tokens: TokenSource::new(tenant)?,
            max_attempts: sync.max_attempts,
            max_retry_wait: Duration::from_secs(sync.max_retry_wait_seconds),
            retry_base: Duration::from_millis(sync.retry_base_ms),
            in_flight: gate::Gate::new(sync.max_concurrency),
            pacer: pace::Pacer::default(),
            app_pacer: Arc::new(pace::Pacer::app()),
            stats: Arc::new(GraphStats::default()),
            clock,
        })
    }

    /// Shares `pacer` for the app's budget across tenants with the other clients of the app.
    pub fn with_app_pacer(mut self, pacer: Arc<pace::Pacer>) -> GraphClient {
        self.app_pacer = pacer;
        self
    }

    /// Requests this client has in flight at most.
    pub fn max_concurrency(&self) -> usize {
        self.in_flight.slots()
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// `https://graph.microsoft.com/v1.0` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v1.0{path}", self.graph_root)
    }

    /// The directory (tenant GUID) the tenant signs in to.
    pub async fn directory(&self) -> Result<String, GraphError> {
        Ok(self.tokens.directory().await?)
    }

    /// A token now: `check` tests sign-in with it, and a first run signs in beside reading
    /// the directory.
    pub async fn sign_in(&self) -> Result<(), GraphError> {
        self.tokens.token().await?;
        Ok(())
    }

    pub async fn get_page<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<Page<T>, GraphError> {
        let body = self
            .send(url, Body::None, what, &gate::Rank::First, None)
            .await?;
        self.parse_page(what, body)
    }

    /// [`GraphClient::get_page`] for one of a chain of pages: it waits for a slot in flight as
    /// `rank` says, unless `slot` holds one, and a good answer leaves its slot in `slot` for
    /// the chain's next page. A kept slot is given up before any wait, and to a waiter that
    /// ranks above the chain.
    pub async fn get_chained_page<'c, T: serde::de::DeserializeOwned>(
        &'c self,
        url: &str,
        what: &str,
        rank: &gate::Rank,
        slot: &mut Option<gate::Slot<'c>>,
    ) -> Result<Page<T>, GraphError> {
        let body = self.send(url, Body::None, what, rank, Some(slot)).await?;
        self.parse_page(what, body)
    }

    /// A page's body parsed, its links checked.
    fn parse_page<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        body: bytes::Bytes,
    ) -> Result<Page<T>, GraphError> {
        let page = parse_page_of(&body).map_err(|reason| GraphError::BadResponse {
            what: what.to_string(),
            reason,
        })?;
        // Checked when received, not only when followed: a deltaLink is stored for later.
        for link in page.next_link.iter().chain(&page.delta_link) {
            self.refuse_foreign(link, what)?;
        }
        Ok(page)
    }

    /// Fails unless `link` may carry the bearer token ([`check_link`]).
    fn refuse_foreign(&self, link: &str, what: &str) -> Result<(), GraphError> {
        check_link(&self.origin, link).map_err(|reason| GraphError::BadResponse {
            what: what.to_string(),
            reason: format!(
                "{reason}; refused, the access token goes only to graph_url {} (a stored cursor is replaced by `entra-sync sync --full`)",
                self.graph_root
            ),
        })
    }

    /// `POST /$batch` of GETs (at most 20 per call, more are split). Returns each item's
    /// status and body by position; throttled items are retried after their `Retry-After`.
    pub async fn batch_get(
        &self,
        paths: &[String],
        what: &str,
    ) -> Result<Vec<(u16, Value)>, GraphError> {
        self.batch_get_with(paths, &[], what).await
    }

    /// [`GraphClient::batch_get`] with `headers` on every item (Graph reads a `$batch` item's
    /// `ConsistencyLevel` from the item, not from the outer request).
    pub async fn batch_get_with(
        &self,
        paths: &[String],
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<Vec<(u16, Value)>, GraphError> {
        let item_headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
            .collect();
        let mut results: Vec<Option<(u16, Value)>> = vec![None; paths.len()];
        for chunk_start in (0..paths.len()).step_by(20) {
            let mut pending: Vec<usize> =
                (chunk_start..(chunk_start + 20).min(paths.len())).collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                attempt += 1;
                let requests: Vec<Value> = pending
                    .iter()
                    .map(|i| {
                        let mut item =
                            json!({"id": i.to_string(), "method": "GET", "url": paths[*i]});
                        if !item_headers.is_empty() {
                            item["headers"] = Value::Object(item_headers.clone());
                        }
                        item
                    })
                    .collect();
                let body = self
                    .send(
                        &self.url("/$batch"),
                        Body::Json(json!({ "requests": requests })),
                        what,
                        &gate::Rank::First,
                        None,
                    )
                    .await?;
                let parsed: Value =
                    serde_json::from_slice(&body).map_err(|e| GraphError::BadResponse {
                        what: what.to_string(),
                        reason: format!("the $batch answer is not valid JSON ({e})"),
                    })?;
                let responses = parsed
                    .get("responses")
                    .and_then(Value::as_array)
                    .ok_or_else(|| GraphError::BadResponse {
                        what: what.to_string(),
                        reason: "the $batch answer has no responses".into(),
                    })?;
                let mut wait = Duration::ZERO;
                let mut retry = Vec::new();
                for r in responses {
                    let Some(i) = r
                        .get("id")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<usize>().ok())
                        .filter(|i| pending.contains(i))
                    else {
                        continue;
                    };
                    let status = r.get("status").and_then(Value::as_u64).unwrap_or(0) as u16;
                    let header = |name: &str| {
                        r.get("headers")
                            .and_then(Value::as_object)?
                            .iter()
                            .find_map(|(k, v)| k.eq_ignore_ascii_case(name).then_some(v))
                            .and_then(Value::as_str)
                    };
                    self.note_charge(
                        &pace::kind(&paths[i]),
                        status,
                        header("x-ms-resource-unit"),
                        header("x-ms-throttle-limit-percentage"),
                        header("x-ms-throttle-scope"),
                    );
                    if is_transient(status) {
                        let after = header("retry-after")
                            .and_then(|v| parse_retry_after(v, self.clock.now()));
                        wait = wait.max(after.unwrap_or_else(|| self.backoff(attempt)));
                        retry.push(i);
                        continue;
                    }
                    results[i] = Some((status, r.get("body").cloned().unwrap_or(Value::Null)));
                }
                // Items the answer did not mention are retried too.
                let unanswered: Vec<usize> = pending
                    .iter()
                    .copied()
                    .filter(|i| results[*i].is_none() && !retry.contains(i))
                    .collect();
                retry.extend(unanswered);
                if retry.is_empty() {
                    break;
                }
                if attempt >= self.max_attempts {
                    return Err(GraphError::Exhausted {
                        what: what.to_string(),
                        attempts: attempt,
                        last: format!("{} $batch items still throttled or failing", retry.len()),
                    });
                }
                self.wait_throttled(wait, what).await?;
                pending = retry;
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or((0, Value::Null)))
            .collect())
    }

    /// What Graph said a request (or `$batch` item) of `kind` cost, and how much of the
    /// budget is in use; a 429 tells the pacer of its scope (the app's across tenants, or
    /// this tenant's) that the budget is spent. Graph does not say which budget a share is of:
    /// the app's pacer takes it while this tenant spends less than half of what the app does
    /// (per second of each window), when the app's budget is the likelier one to be filling
    /// up; the tenant's pacer otherwise.
    fn note_charge(
        &self,
        kind: &str,
        status: u16,
        units: Option<&str>,
        share: Option<&str>,
        scope: Option<&str>,
    ) {
        let now = crate::clock::Instant::now();
        let units = units.and_then(|u| u.trim().parse::<u32>().ok());
        if let Some(units) = units {
            self.stats.charged(&self.tenant, units);
        }
        if status == 429 {
            if scope.is_some_and(|s| s.starts_with("Application/")) {
                self.app_pacer.throttled(now);
            } else {
                self.pacer.throttled(now);
            }
        } else if let Some(units) = units {
            let share = share.and_then(|p| p.trim().parse::<f64>().ok());
            let app_filling = 2.0 * self.pacer.rate(now) < self.app_pacer.rate(now);
            let (tenant_share, app_share) = if app_filling {
                (None, share)
            } else {
                (share, None)
            };
            self.pacer.charged(kind, units, tenant_share, now);
            self.app_pacer.charged(kind, units, app_share, now);
        }
    }

    /// Waits as long as the pacers ask before a request of `kind` (`items` of them).
    /// A chain of pages waiting here first gives up the slot it keeps (`keep`): a slot is not
    /// held idle through a wait.
    async fn pace(&self, kind: &str, items: u32, keep: Option<&mut Option<gate::Slot<'_>>>) {
        let now = crate::clock::Instant::now();
        let wait = self
            .pacer
            .reserve(kind, items, now)
            .max(self.app_pacer.reserve(kind, items, now));
        if !wait.is_zero() {
            if let Some(keep) = keep {
                *keep = None;
            }
            metrics::counter!("entra_sync_pacing_wait_milliseconds_total", "tenant" => self.tenant.clone())
                .increment(wait.as_millis() as u64);
            tokio::time::sleep(wait).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(Duration::from_secs(30));
        // Full jitter between half and all of the step.
        let factor = rand::thread_rng().gen_range(0.5..=1.0);
        capped.mul_f64(factor)
    }

    async fn wait_throttled(&self, wait: Duration, what: &str) -> Result<(), GraphError> {
        if wait > self.max_retry_wait {
            return Err(GraphError::Exhausted {
                what: what.to_string(),
                attempts: 1,
                last: format!(
                    "Graph asked to wait {} s, longer than sync.max_retry_wait_seconds ({})",
                    wait.as_secs(),
                    self.max_retry_wait.as_secs()
                ),
            });
        }
        self.stats.throttle_waits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("entra_sync_throttle_waits_total", "tenant" => self.tenant.clone())
            .increment(1);
        metrics::counter!("entra_sync_throttle_wait_seconds_total", "tenant" => self.tenant.clone())
            .increment(wait.as_secs().max(1));
        self.stats
            .throttle_wait_ms
            .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
        tracing::info!(tenant = %self.tenant, wait_ms = wait.as_millis() as u64, "{what}: throttled by Graph, waiting as asked");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// One request with retries; returns the body of a 2xx answer.
    /// `keep`: the slot a chain of requests holds, used instead of waiting for one, and given
    /// the slot back after a good answer.
    async fn send<'c>(
        &'c self,
        url: &str,
        body: Body,
        what: &str,
        rank: &gate::Rank,
        mut keep: Option<&mut Option<gate::Slot<'c>>>,
    ) -> Result<bytes::Bytes, GraphError> {
        // A link to another host must never receive our bearer token.
        self.refuse_foreign(url, what)?;
        let kind = pace::kind(url);
        let items = match &body {
            Body::Json(v) => v
                .get("requests")
                .and_then(Value::as_array)
                .map_or(1, |r| r.len() as u32),
            Body::None => 1,
        };
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            // A kept slot goes to a request that now ranks above the chain.
            if let Some(keep) = keep.as_mut()
                && keep.is_some()
                && self.in_flight.outranked(rank)
            {
                **keep = None;
            }
            self.pace(&kind, items, keep.as_deref_mut()).await;
            let token = match self.tokens.token().await {
                Ok(t) => t,
                Err(e) if e.is_transient() && attempt < self.max_attempts => {
                    tracing::warn!(tenant = %self.tenant, "{e}; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let request = match &body {
                Body::None => self.http.get(url),
                Body::Json(v) => self.http.post(url).json(v),
            }
            .bearer_auth(token.expose())
            .header("client-request-id", uuid::Uuid::new_v4().to_string())
            .header("x-ms-throttle-priority", "Low");
            let outcome = {
                let slot = match keep.as_mut().and_then(|k| k.take()) {
                    Some(slot) => slot,
                    None => self.in_flight.acquire(rank.clone()).await,
                };
                let outcome = match request.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let retry_after = resp
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| parse_retry_after(v, self.clock.now()));
                        let header =
                            |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
                        self.note_charge(
                            &kind,
                            status.as_u16(),
                            header("x-ms-resource-unit"),
                            header("x-ms-throttle-limit-percentage"),
                            header("x-ms-throttle-scope"),
                        );
                        match resp.bytes().await {
                            Ok(bytes) => Ok((status, retry_after, bytes)),
                            Err(e) => Err(format!("the answer was cut off: {}", error_chain(&e))),
                        }
                    }
                    Err(e) => Err(error_chain(&e)),
                };
                // A good answer gives the chain its slot back; anything else frees it before
                // waiting to retry.
                match (&outcome, keep.as_mut()) {
                    (Ok((status, ..)), Some(keep)) if status.is_success() => **keep = Some(slot),
                    _ => drop(slot),
                }
                outcome
            };
            let (status, retry_after, bytes) = match outcome {
                Ok(parts) => parts,
                Err(reason) => {
                    self.stats.count(&self.tenant, 0);
                    if attempt >= self.max_attempts {
                        return Err(GraphError::Exhausted {
                            what: what.to_string(),
                            attempts: attempt,
                            last: reason,
                        });
                    }
                    tracing::debug!(tenant = %self.tenant, attempt, "{what}: {reason}; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
            };
            self.stats.count(&self.tenant, status.as_u16());
            if status.is_success() {
                return Ok(bytes);
            }
            let err = parse_error(&bytes).unwrap_or_default();
            let code = if err.code.is_empty() {
                status.canonical_reason().unwrap_or("").to_string()
            } else {
                err.code.clone()
            };
            let expired_cursor = [Some(&err.code), err.inner_code.as_ref()]
                .into_iter()
                .flatten()
                .any(|c| {
                    c.eq_ignore_ascii_case("syncStateNotFound")
                        || c.eq_ignore_ascii_case("resyncRequired")
                });
            match status {
                StatusCode::UNAUTHORIZED if !refreshed => {
                    // The token expired or was revoked early: get a new one, once.
                    refreshed = true;
                    attempt -= 1;
                    self.tokens.invalidate().await;
                    continue;
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(GraphError::Unauthorized {
                        what: what.to_string(),
                        code,
                    });
                }
                StatusCode::GONE => {
                    return Err(GraphError::CursorExpired {
                        what: what.to_string(),
                        code,
                    });
                }
                _ if expired_cursor => {
                    return Err(GraphError::CursorExpired {
                        what: what.to_string(),
                        code,
                    });
                }
                _ if is_transient(status.as_u16()) => {
                    if attempt >= self.max_attempts {
                        return Err(GraphError::Exhausted {
                            what: what.to_string(),
                            attempts: attempt,
                            last: format!("{} {code}", status.as_u16()),
                        });
                    }
                    match retry_after {
                        Some(wait) => self.wait_throttled(wait, what).await?,
                        None => tokio::time::sleep(self.backoff(attempt)).await,
                    }
                }
                _ => {
                    return Err(GraphError::for_status(
                        what.to_string(),
                        status.as_u16(),
                        code,
                        &err.message,
                    ));
                }
            }
        }
    }
}

/// Whether `link` (a `nextLink`, a `deltaLink`, a stored cursor or a URL built from
/// `graph_url`) may carry the bearer token: parsed, it must have the scheme, host and port of
/// `origin`, no user info, and lie under its path. A prefix test is not enough:
/// `https://graph.microsoft.com.evil.example/` and `https://graph.microsoft.com@evil.example/`
/// both start with `https://graph.microsoft.com`.
pub fn check_link(origin: &url::Url, link: &str) -> Result<(), String> {
    // Shown without its query (a delta token is long and says nothing to a reader).
    let shown: String = link
        .split('?')
        .next()
        .unwrap_or("")
        .chars()
        .take(160)
        .collect();
    let parsed = url::Url::parse(link).map_err(|e| format!("link {shown:?} is not a URL ({e})"))?;
    let same = parsed.scheme() == origin.scheme()
        && parsed.host() == origin.host()
        && parsed.port_or_known_default() == origin.port_or_known_default()
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed
            .path()
            .starts_with(origin.path().trim_end_matches('/'));
    if same {
        Ok(())
    } else {
        Err(format!(
            "link {shown:?} is outside graph_url (scheme, host or port differ)"
        ))
    }
}

/// `Retry-After` as seconds (fractional allowed, as Graph has sent `2.128`) or an HTTP date,
/// which is that long after `now`. A value too large for a `Duration` (`1e300`) is the longest
/// one: more than any run waits.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = date.with_timezone(&chrono::Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn links_must_have_the_scheme_host_and_port_of_graph_url() {
        let origin = url::Url::parse("https://graph.microsoft.com").unwrap();
        let ok = [
            "https://graph.microsoft.com/v1.0/groups/x/members?$top=999",
            "https://GRAPH.microsoft.com:443/v1.0/users/delta?$deltatoken=abc",
        ];
        for link in ok {
            assert_eq!(check_link(&origin, link), Ok(()), "{link}");
        }
        let refused = [
            "https://graph.microsoft.com.evil.example/v1.0/users",
            "https://graph.microsoft.com@evil.example/v1.0/users",
            "https://user:pw@graph.microsoft.com/v1.0/users",
            "http://graph.microsoft.com/v1.0/users",
            "https://graph.microsoft.com:8443/v1.0/users",
            "https://evil.example/https://graph.microsoft.com/v1.0",
            "//graph.microsoft.com/v1.0/users",
            "/v1.0/users",
            "",
        ];
        for link in refused {
            assert!(check_link(&origin, link).is_err(), "{link} must be refused");
        }
        let local = url::Url::parse("http://127.0.0.1:8080").unwrap();
        assert!(check_link(&local, "http://127.0.0.1:8080/v1.0/users").is_ok());
        assert!(check_link(&local, "http://127.0.0.1:80801/v1.0/users").is_err());
        assert!(check_link(&local, "http://127.0.0.1:8080@127.0.0.1:9/v1.0/users").is_err());
        assert!(check_link(&local, "http://localhost:8080/v1.0/users").is_err());
    }

    #[test]
    fn retry_after_accepts_fractions_integers_and_dates() {
        use chrono::TimeZone;
        let now = chrono::Utc
            .with_ymd_and_hms(2015, 10, 21, 7, 27, 30)
            .single()
            .unwrap_or_default();
        assert_eq!(parse_retry_after("10", now), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_retry_after("2.128", now),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("1e300", now),
            Some(Duration::MAX),
            "too large for a Duration: no panic, longer than any run waits"
        );
        assert_eq!(parse_retry_after("inf", now), Some(Duration::MAX));
        assert_eq!(parse_retry_after("NaN", now), None);
        let later = now + chrono::Duration::hours(1);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", later),
            Some(Duration::ZERO),
            "a date gone by means no wait"
        );
    }
}
