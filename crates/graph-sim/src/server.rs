//! The HTTP front door: one handler for the token endpoint and every Graph path that applies
//! faults, authenticates, dispatches, counts, and turns answers into HTTP responses.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::net::TcpListener;

use super::batch::{self, Transport};
use super::control;
use super::faults::{ConnInfo, FaultKind, SimListener, TruncatedBody};
use super::graph::{self, GraphReq, JSON_CONTENT_TYPE, ReqHeaders};
use super::odata::{ApiError, RequestIds};
use super::token::{self, AadError, TokenCheck, TokenConfig};
use super::{Shared, lock};

const MAX_BODY: usize = 16 << 20;

pub(crate) async fn serve(
    listener: TcpListener,
    sh: Arc<Shared>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .nest("/_sim", control::router())
        .fallback(front)
        .with_state(sh);
    let result = axum::serve(
        SimListener { inner: listener },
        app.into_make_service_with_connect_info::<ConnInfo>(),
    )
    .with_graceful_shutdown(stop)
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "graph-sim server stopped");
    }
}

/// An answer on its way out.
struct Out {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    content_type: &'static str,
    template: String,
    transport: Transport,
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `/{tenant}/oauth2/v2.0/token` → the tenant segment.
fn token_tenant(path: &str) -> Option<&str> {
    tenant_path(path, &["oauth2", "v2.0", "token"])
}

/// `/{tenant}/v2.0/.well-known/openid-configuration` → the tenant segment.
fn discovery_tenant(path: &str) -> Option<&str> {
    tenant_path(path, &["v2.0", ".well-known", "openid-configuration"])
}

fn tenant_path<'p>(path: &'p str, tail: &[&str]) -> Option<&'p str> {
    let mut segs = path.trim_start_matches('/').split('/');
    let tenant = segs.next()?;
    let rest: Vec<&str> = segs.collect();
    (rest == tail && !tenant.is_empty()).then_some(tenant)
}

/// Every answer leaves `--latency-ms` after its request arrived: the work of answering is
/// done within that time (as Graph's own is within its latency), not added to it.
async fn front(
    State(sh): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    req: Request,
) -> Response {
    let due = tokio::time::Instant::now() + sh.opts.latency;
    let resp = answer(sh, conn, req).await;
    tokio::time::sleep_until(due).await;
    resp
}

async fn answer(sh: Arc<Shared>, conn: ConnInfo, req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let uri = req.uri().clone();
    let path = uri.path().to_owned();
    let raw_query = uri.query().unwrap_or_default().to_owned();
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_owned());
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .unwrap_or_default();
    let fault = lock(&sh.faults).take(&path_and_query);
    let token_tenant = token_tenant(&path).map(str::to_owned);
    let discovery_tenant = discovery_tenant(&path).map(str::to_owned);
    let template_guess = || match (&token_tenant, &discovery_tenant) {
        (Some(_), _) => "/{tenant}/oauth2/v2.0/token".to_owned(),
        (_, Some(_)) => DISCOVERY_TEMPLATE.to_owned(),
        (None, None) => match path.strip_prefix("/v1.0") {
            Some(rest) => graph::route(rest).0,
            None => "/{unknown}".to_owned(),
        },
    };

    let mut transport = Transport::Normal;
    let mut null_props = false;
    let mut tamper = None;
    let mut forced: Option<(u16, Option<String>)> = None;
    match fault {
        Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::Reset) => {
            conn.reset();
            lock(&sh.stats).record(format!("{method} {} reset", template_guess()));
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return resp;
        }
        Some(FaultKind::TruncatedBody) => transport = Transport::Truncate,
        Some(FaultKind::InvalidJson) => transport = Transport::InvalidJson,
        Some(FaultKind::NullProperties) => null_props = true,
        Some(FaultKind::Tamper { find, replace }) => tamper = Some((find, replace)),
        Some(FaultKind::Status {
            status,
            retry_after,
        }) => forced = Some((status, retry_after)),
        None => {}
    }

    let client_request_id = header_str(&headers, "client-request-id");
    let mut out = if let Some(tenant) = &token_tenant {
        token_answer(
            &sh,
            &method,
            tenant,
            &headers,
            &body,
            forced,
            client_request_id.as_deref(),
        )
    } else if let Some(tenant) = &discovery_tenant {
        discovery_answer(&sh, &method, tenant, &headers, forced)
    } else if let Some(rest) = path
        .strip_prefix("/v1.0")
        .filter(|r| r.is_empty() || r.starts_with('/'))
    {
        let rh = ReqHeaders {
            eventual: header_str(&headers, "consistencylevel")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual")),
            prefer_minimal: header_str(&headers, "prefer")
                .is_some_and(|v| v.to_ascii_lowercase().contains("return=minimal")),
            client_request_id: client_request_id.clone(),
        };
        graph_answer(
            &sh, &method, rest, &raw_query, &rh, &headers, &body, forced, null_props,
        )
        .await
    } else {
        let ids = RequestIds::new(client_request_id.as_deref());
        let first = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let reply = graph::finish(
            Err(match forced {
                Some((s, r)) => ApiError::for_status(s, r.as_deref()),
                None => ApiError::new(400, "BadRequest", format!("Invalid version: {first}")),
            }),
            &ids,
            "/{unknown}".to_owned(),
        );
        from_reply(reply)
    };
    if out.transport == Transport::Normal {
        out.transport = transport;
    }
    if let Some((find, replace)) = tamper {
        out.body = out.body.replace(&find, &replace);
    }
    if out.transport == Transport::Reset {
        conn.reset();
        lock(&sh.stats).record(format!("{method} {} reset", out.template));
        return Response::new(Body::empty());
    }
    lock(&sh.stats).record(format!("{method} {} {}", out.template, out.status));
    respond(out)
}

fn from_reply(reply: graph::Reply) -> Out {
    Out {
        status: reply.status,
        content_type: if reply.json {
            JSON_CONTENT_TYPE
        } else {
            "text/plain;charset=utf-8"
        },
        headers: reply.headers,
        body: reply.body,
        template: reply.template,
        transport: Transport::Normal,
    }
}

fn respond(out: Out) -> Response {
    let full = out.body.into_bytes();
    let len = full.len();
    let (body, content_length) = match out.transport {
        Transport::Truncate => {
            let half = full.get(..len / 2).unwrap_or_default().to_vec();
            (TruncatedBody::body(half), len)
        }
        Transport::InvalidJson => {
            let mut half = full.get(..len / 2).unwrap_or_default().to_vec();
            half.extend_from_slice(b"\x00<!-- truncated");
            let n = half.len();
            (Body::from(half), n)
        }
        _ => (Body::from(full), len),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() =
        StatusCode::from_u16(out.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(out.content_type),
    );
    if out.transport == Transport::Truncate {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(content_length));
    }
    for (k, v) in out.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            h.insert(name, value);
        }
    }
    resp
}

/// What the identity platform checks requests against.
fn token_config(sh: &Shared) -> TokenConfig<'_> {
    TokenConfig {
        tenant: &sh.opts.tenant,
        tenant_guid: &sh.tenant_guid,
        client_id: &sh.opts.client_id,
        client_secret: &sh.opts.client_secret,
        lifetime: sh.opts.token_lifetime,
        certificates: &sh.certificates,
        seen_jti: &sh.seen_jti,
        base_url: &sh.base_url,
        public_base: &sh.base_url,
    }
}

const DISCOVERY_TEMPLATE: &str = "/{tenant}/v2.0/.well-known/openid-configuration";

/// The identity platform's OpenID Connect discovery document for the tenant (what MSAL reads
/// before its first token request, and where a client learns the tenant's GUID from a domain
/// name): no credentials needed; an unknown tenant is AADSTS90002, like the token endpoint.
/// The identity platform's address as the client sees it: the simulator's own, or, for a
/// request that came through a TLS-terminating forwarder (a `Host` other than the simulator's
/// address, as MSAL needs: it accepts only https authorities), `https://{Host}`. Discovery
/// documents and assertion audiences are in terms of it, as Entra's are of its public host.
fn public_base(sh: &Shared, headers: &HeaderMap) -> String {
    let own = sh.base_url.trim_start_matches("http://");
    match header_str(headers, "host") {
        Some(host) if host != own && !host.is_empty() => format!("https://{host}"),
        _ => sh.base_url.clone(),
    }
}

fn discovery_answer(
    sh: &Shared,
    method: &str,
    tenant: &str,
    headers: &HeaderMap,
    forced: Option<(u16, Option<String>)>,
) -> Out {
    let correlation = uuid::Uuid::new_v4().to_string();
    let result = if let Some((status, _)) = forced {
        Err(AadError::for_status(status))
    } else if !method.eq_ignore_ascii_case("GET") {
        Err(AadError::for_status(400))
    } else {
        let cfg = token_config(sh);
        token::discovery(&cfg, &public_base(sh, headers), tenant)
    };
    let (status, body) = match result {
        Ok(body) => (200, body),
        Err(e) => (e.status, e.body(&correlation)),
    };
    Out {
        status,
        headers: vec![(
            "Cache-Control".to_owned(),
            "max-age=86400, private".to_owned(),
        )],
        body,
        content_type: "application/json; charset=utf-8",
        template: DISCOVERY_TEMPLATE.to_owned(),
        transport: Transport::Normal,
    }
}

fn token_answer(
    sh: &Shared,
    method: &str,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
    forced: Option<(u16, Option<String>)>,
    client_request_id: Option<&str>,
) -> Out {
    let correlation =
        client_request_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let mut extra = vec![
        ("Cache-Control".to_owned(), "no-store, no-cache".to_owned()),
        ("Pragma".to_owned(), "no-cache".to_owned()),
        (
            "x-ms-request-id".to_owned(),
            uuid::Uuid::new_v4().to_string(),
        ),
        ("client-request-id".to_owned(), correlation.clone()),
    ];
    let result = if let Some((status, retry_after)) = forced {
        if let Some(r) = retry_after {
            extra.push(("Retry-After".to_owned(), r));
        }
        Err(AadError::for_status(status))
    } else if !method.eq_ignore_ascii_case("POST") {
        Err(AadError::for_status(400))
    } else {
        let public = public_base(sh, headers);
        let cfg = TokenConfig {
            public_base: &public,
            ..token_config(sh)
        };
        token::grant(&cfg, tenant, headers, body)
    };
    let (status, body) = match result {
        Ok(access_token) => {
            lock(&sh.tokens).issue(access_token.clone(), sh.opts.token_lifetime);
            (
                200,
                token::success_body(&access_token, sh.opts.token_lifetime),
            )
        }
        Err(e) => {
            tracing::debug!(code = e.code, "graph-sim token request refused");
            (e.status, e.body(&correlation))
        }
    };
    Out {
        status,
        headers: extra,
        body,
        content_type: "application/json; charset=utf-8",
        template: "/{tenant}/oauth2/v2.0/token".to_owned(),
        transport: Transport::Normal,
    }
}

fn authenticate(sh: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let value = header_str(headers, "authorization").unwrap_or_default();
    let token = match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => "",
    };
    let err = |msg: &str| {
        ApiError::new(401, "InvalidAuthenticationToken", msg).with_header(
            "WWW-Authenticate",
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
        )
    };
    if token.is_empty() {
        return Err(err("Access token is empty."));
    }
    match lock(&sh.tokens).check(token) {
        TokenCheck::Valid => Ok(()),
        TokenCheck::Expired => Err(err("Lifetime validation failed, the token is expired.")),
        TokenCheck::Unknown => Err(err("Access token validation failure. Invalid audience.")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn graph_answer(
    sh: &Arc<Shared>,
    method: &str,
    rest: &str,
    raw_query: &str,
    rh: &ReqHeaders,
    headers: &HeaderMap,
    body: &[u8],
    forced: Option<(u16, Option<String>)>,
    null_props: bool,
) -> Out {
    let ids = RequestIds::new(rh.client_request_id.as_deref());
    let (template, route) = graph::route(rest);
    if let Some((status, retry_after)) = forced {
        return from_reply(graph::finish(
            Err(ApiError::for_status(status, retry_after.as_deref())),
            &ids,
            template,
        ));
    }
    if let Err(e) = authenticate(sh, headers) {
        return from_reply(graph::finish(Err(e), &ids, template));
    }
    if route == graph::Route::Batch {
        if !method.eq_ignore_ascii_case("POST") {
            return from_reply(graph::finish(
                Err(ApiError::method_not_allowed()),
                &ids,
                template,
            ));
        }
        let (result, transport) = batch::run(sh, body).await;
        let mut out = from_reply(graph::finish(result, &ids, template));
        out.transport = transport;
        return out;
    }
    let charged = match sh.charge(crate::ru::cost(&route, raw_query)) {
        Ok(headers) => headers,
        Err(throttled) => return from_reply(graph::finish(Err(throttled), &ids, template)),
    };
    let mut reply = graph::handle(
        sh,
        &GraphReq {
            method,
            path: rest,
            raw_query,
            headers: rh,
            body,
            null_props,
        },
    );
    reply.headers.extend(charged);
    from_reply(reply)
}
