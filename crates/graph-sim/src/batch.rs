//! JSON batching (`POST /v1.0/$batch`): up to 20 relative requests answered in one body.
//!
//! Each item is routed like a direct request and meets faults on its own (a throttled item is a
//! 429 inside a 200 batch). Transport faults (reset, truncation, invalid JSON) hitting an item
//! spoil the whole batch response, since they act on the connection.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::faults::FaultKind;
use super::graph::{self, Answer, GraphReq, ReqHeaders};
use super::odata::{ApiError, RequestIds};
use super::{Shared, lock};

const MAX_REQUESTS: usize = 20;

/// What a transport fault in an item does to the outer response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Normal,
    Reset,
    Truncate,
    InvalidJson,
}

#[derive(Debug, Deserialize)]
struct BatchBody {
    requests: Vec<Item>,
}

#[derive(Debug, Deserialize)]
struct Item {
    id: Value,
    method: String,
    url: String,
    #[serde(default)]
    headers: Map<String, Value>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default, rename = "dependsOn")]
    depends_on: Vec<String>,
}

fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn header(headers: &Map<String, Value>, name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str().map(str::to_owned))
}

fn item_response(id: &str, reply: &graph::Reply) -> Value {
    let mut headers = Map::new();
    for (k, v) in &reply.headers {
        if k == "request-id" || k == "client-request-id" {
            continue;
        }
        headers.insert(k.clone(), Value::String(v.clone()));
    }
    headers.insert(
        "Content-Type".to_owned(),
        Value::String(if reply.json {
            graph::JSON_CONTENT_TYPE.to_owned()
        } else {
            "text/plain".to_owned()
        }),
    );
    let body = if reply.json {
        serde_json::from_str(&reply.body).unwrap_or(Value::String(reply.body.clone()))
    } else {
        Value::String(reply.body.clone())
    };
    json!({"id": id, "status": reply.status, "headers": headers, "body": body})
}

/// Runs a batch. The outer request was already authenticated.
pub(crate) async fn run(sh: &Arc<Shared>, body: &[u8]) -> (Result<Answer, ApiError>, Transport) {
    let parsed: BatchBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return (
                Err(ApiError::bad_request(format!(
                    "Invalid batch payload format: {e}"
                ))),
                Transport::Normal,
            );
        }
    };
    if parsed.requests.is_empty() {
        return (
            Err(ApiError::bad_request("The batch contains no requests.")),
            Transport::Normal,
        );
    }
    if parsed.requests.len() > MAX_REQUESTS {
        return (
            Err(ApiError::bad_request(format!(
                "The number of requests in the batch ({}) exceeds the limit of {MAX_REQUESTS}.",
                parsed.requests.len()
            ))),
            Transport::Normal,
        );
    }
    let mut seen = HashSet::new();
    for item in &parsed.requests {
        if !seen.insert(id_text(&item.id)) {
            return (
                Err(ApiError::bad_request(format!(
                    "Request id '{}' is used more than once; ids must be unique in a batch.",
                    id_text(&item.id)
                ))),
                Transport::Normal,
            );
        }
    }
    let mut transport = Transport::Normal;
    let mut statuses: Vec<(String, u16)> = Vec::new();
    let mut responses = Vec::with_capacity(parsed.requests.len());
    for item in &parsed.requests {
        let id = id_text(&item.id);
        let client_request_id = header(&item.headers, "client-request-id");
        let ids = RequestIds::new(client_request_id.as_deref());
        let rel = item.url.trim();
        let failed_dep = item.depends_on.iter().find(|d| {
            statuses
                .iter()
                .find(|(i, _)| i == *d)
                .is_none_or(|(_, s)| !(200..300).contains(s))
        });
        if rel.starts_with("http://") || rel.starts_with("https://") {
            let reply = graph::finish(
                Err(ApiError::bad_request(
                    "Batch request URLs must be relative, e.g. /users/{id}.",
                )),
                &ids,
                "/v1.0/{absolute-url}".to_owned(),
            );
            statuses.push((id.clone(), reply.status));
            responses.push(item_response(&id, &reply));
            continue;
        }
        let rel = rel.trim_start_matches('/');
        let rel = rel.strip_prefix("v1.0/").unwrap_or(rel);
        let (path, query) = rel.split_once('?').unwrap_or((rel, ""));
        let path = format!("/{path}");
        let (template, route) = graph::route(&path);
        if let Some(dep) = failed_dep {
            let reply = graph::finish(
                Err(ApiError::new(
                    424,
                    "FailedDependency",
                    format!("The request depends on '{dep}', which failed or does not precede it."),
                )),
                &ids,
                template,
            );
            statuses.push((id.clone(), reply.status));
            responses.push(item_response(&id, &reply));
            continue;
        }
        let fault = lock(&sh.faults).take(&format!("/v1.0/{rel}"));
        let mut null_props = false;
        let mut tamper = None;
        let reply = match fault {
            Some(FaultKind::Status {
                status,
                retry_after,
            }) => Some(graph::finish(
                Err(ApiError::for_status(status, retry_after.as_deref())),
                &ids,
                template.clone(),
            )),
            Some(FaultKind::Delay(d)) => {
                tokio::time::sleep(d).await;
                None
            }
            Some(FaultKind::Reset) => {
                if transport == Transport::Normal {
                    transport = Transport::Reset;
                }
                None
            }
            Some(FaultKind::TruncatedBody) => {
                if transport == Transport::Normal {
                    transport = Transport::Truncate;
                }
                None
            }
            Some(FaultKind::InvalidJson) => {
                if transport == Transport::Normal {
                    transport = Transport::InvalidJson;
                }
                None
            }
            Some(FaultKind::NullProperties) => {
                null_props = true;
                None
            }
            Some(FaultKind::Tamper { find, replace }) => {
                tamper = Some((find, replace));
                None
            }
            None => None,
        };
        let mut reply = match reply {
            Some(r) => r,
            // Each item is charged on its own, and throttled on its own (the batch answers 200).
            None => match sh.charge(crate::ru::cost(&route, query)) {
                Err(throttled) => graph::finish(Err(throttled), &ids, template.clone()),
                Ok(charged) => {
                    let headers = ReqHeaders {
                        eventual: header(&item.headers, "ConsistencyLevel")
                            .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual")),
                        prefer_minimal: header(&item.headers, "Prefer")
                            .is_some_and(|v| v.to_ascii_lowercase().contains("return=minimal")),
                        client_request_id,
                    };
                    let body = item
                        .body
                        .as_ref()
                        .map(|b| serde_json::to_vec(b).unwrap_or_default())
                        .unwrap_or_default();
                    let mut reply = graph::handle(
                        sh,
                        &GraphReq {
                            method: &item.method,
                            path: &path,
                            raw_query: query,
                            headers: &headers,
                            body: &body,
                            null_props,
                        },
                    );
                    reply.headers.extend(charged);
                    reply
                }
            },
        };
        if let Some((find, replace)) = tamper {
            reply.body = reply.body.replace(&find, &replace);
        }
        lock(&sh.stats).record_batch_item(format!(
            "{} {} {}",
            item.method.to_ascii_uppercase(),
            reply.template,
            reply.status
        ));
        statuses.push((id.clone(), reply.status));
        responses.push(item_response(&id, &reply));
    }
    let body = json!({ "responses": responses }).to_string();
    (Ok(Answer::json(body)), transport)
}
