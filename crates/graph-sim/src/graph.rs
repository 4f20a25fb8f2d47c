//! Graph v1.0 routing and the plain (non-delta, non-batch) endpoints: users, groups, members,
//! transitiveMembers, memberOf, getByIds, deletedItems, `$count`.
//!
//! Handlers are synchronous and hold the directory's read lock only while they build the
//! answer; nothing here sleeps or awaits.

use std::ops::Bound;

use uuid::Uuid;

use super::Shared;
use super::delta;
use super::model::ObjectKind;
use super::odata::{
    ApiError, Filter, FilterSpec, ListCursor, Query, RequestIds, Search, decode_token,
    encode_token, error_body, parse_filter, parse_orderby, parse_search, parse_select, parse_top,
};
use super::render::{
    Obj, ObjRef, Shape, UserPropKind, group_prop, member_prop, push_json_str, user_prop,
    write_group, write_object, write_user,
};
use super::tenant::Directory;

pub(crate) const CONTEXT_BASE: &str = "https://graph.microsoft.com/v1.0/$metadata#";
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// The request headers Graph handlers care about.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReqHeaders {
    /// `ConsistencyLevel: eventual` (advanced queries).
    pub eventual: bool,
    /// `Prefer: return=minimal` (delta).
    pub prefer_minimal: bool,
    pub client_request_id: Option<String>,
}

/// One Graph request, from HTTP or from inside a `$batch`.
pub(crate) struct GraphReq<'a> {
    pub method: &'a str,
    /// The path after `/v1.0`, starting with `/`, still percent-encoded.
    pub path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a ReqHeaders,
    pub body: &'a [u8],
    /// A `NullProperties` fault hit this request.
    pub null_props: bool,
}

/// A finished answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub json: bool,
    /// e.g. `/v1.0/groups/{id}/members` for the request counters.
    pub template: String,
}

/// A successful handler result before the common headers are added.
pub(crate) struct Answer {
    pub status: u16,
    pub body: String,
    pub json: bool,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub(crate) fn json(body: String) -> Self {
        Answer {
            status: 200,
            body,
            json: true,
            headers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeltaOf {
    Users,
    Groups,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Users,
    UsersCount,
    User(String),
    UserMemberOf(String),
    UserTransitiveMemberOf(String),
    UserOther(String),
    Groups,
    GroupsCount,
    Group(String),
    Members {
        group: String,
        transitive: bool,
        cast: Option<ObjectKind>,
        count: bool,
    },
    MembersRef,
    Delta(DeltaOf),
    GetByIds,
    DeletedItems(Option<ObjectKind>),
    Batch,
    Me,
    BadCast(String),
    Unknown(String),
}

fn decode_seg(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A type-cast segment: `microsoft.graph.user`, or with the namespace's alias `graph.user`
/// (Graph's CSDL declares `Alias="graph"`; the Python SDK's request builders use it).
fn cast_kind(seg: &str) -> Option<Option<ObjectKind>> {
    let lower = seg.to_ascii_lowercase();
    let name = lower
        .strip_prefix("microsoft.graph.")
        .or_else(|| lower.strip_prefix("graph."))?;
    Some(match name {
        "user" => Some(ObjectKind::User),
        "group" => Some(ObjectKind::Group),
        "device" => Some(ObjectKind::Device),
        "orgcontact" => Some(ObjectKind::OrgContact),
        _ => None,
    })
}

fn cast_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::User => "microsoft.graph.user",
        ObjectKind::Group => "microsoft.graph.group",
        ObjectKind::Device => "microsoft.graph.device",
        ObjectKind::OrgContact => "microsoft.graph.orgContact",
    }
}

/// Maps a path (after `/v1.0`) to a route and its counter template.
pub(crate) fn route(path: &str) -> (String, Route) {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode_seg)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let t = |x: &str| format!("/v1.0{x}");
    match s.as_slice() {
        [u] if eq(u, "users") => (t("/users"), Route::Users),
        [u, c] if eq(u, "users") && *c == "$count" => (t("/users/$count"), Route::UsersCount),
        [u, d] if eq(u, "users") && (eq(d, "delta") || eq(d, "delta()")) => {
            (t("/users/delta"), Route::Delta(DeltaOf::Users))
        }
        [u, key] if eq(u, "users") => (t("/users/{id}"), Route::User((*key).to_owned())),
        [u, key, m] if eq(u, "users") && eq(m, "memberOf") => (
            t("/users/{id}/memberOf"),
            Route::UserMemberOf((*key).to_owned()),
        ),
        [u, key, m] if eq(u, "users") && eq(m, "transitiveMemberOf") => (
            t("/users/{id}/transitiveMemberOf"),
            Route::UserTransitiveMemberOf((*key).to_owned()),
        ),
        [u, _key, rest @ ..] if eq(u, "users") => (
            t(&format!("/users/{{id}}/{}", rest.join("/"))),
            Route::UserOther(rest.join("/")),
        ),
        [g] if eq(g, "groups") => (t("/groups"), Route::Groups),
        [g, c] if eq(g, "groups") && *c == "$count" => (t("/groups/$count"), Route::GroupsCount),
        [g, d] if eq(g, "groups") && (eq(d, "delta") || eq(d, "delta()")) => {
            (t("/groups/delta"), Route::Delta(DeltaOf::Groups))
        }
        [g, id] if eq(g, "groups") => (t("/groups/{id}"), Route::Group((*id).to_owned())),
        [g, id, m, rest @ ..]
            if eq(g, "groups") && (eq(m, "members") || eq(m, "transitiveMembers")) =>
        {
            let transitive = eq(m, "transitiveMembers");
            let base = if transitive {
                "transitiveMembers"
            } else {
                "members"
            };
            let mut cast = None;
            let mut count = false;
            let mut rest = rest;
            if let [c, tail @ ..] = rest
                && let Some(k) = cast_kind(c)
            {
                match k {
                    Some(k) => cast = Some(k),
                    None => {
                        return (
                            t(&format!("/groups/{{id}}/{base}/{c}")),
                            Route::BadCast((*c).to_owned()),
                        );
                    }
                }
                rest = tail;
            }
            match rest {
                [] => {}
                [c] if *c == "$count" => count = true,
                [r] if *r == "$ref" && !transitive => {
                    return (t("/groups/{id}/members/$ref"), Route::MembersRef);
                }
                [other, ..] => {
                    return (
                        t(&format!("/groups/{{id}}/{base}/{other}")),
                        Route::Unknown((*other).to_owned()),
                    );
                }
            }
            let mut tpl = format!("/groups/{{id}}/{base}");
            if let Some(k) = cast {
                tpl.push('/');
                tpl.push_str(cast_name(k));
            }
            if count {
                tpl.push_str("/$count");
            }
            (
                t(&tpl),
                Route::Members {
                    group: (*id).to_owned(),
                    transitive,
                    cast,
                    count,
                },
            )
        }
        [g, _id, rest @ ..] if eq(g, "groups") => (
            t(&format!("/groups/{{id}}/{}", rest.join("/"))),
            Route::Unknown(rest.first().copied().unwrap_or_default().to_owned()),
        ),
        [d, g] if eq(d, "directoryObjects") && eq(g, "getByIds") => {
            (t("/directoryObjects/getByIds"), Route::GetByIds)
        }
        [d, del] if eq(d, "directory") && eq(del, "deletedItems") => {
            (t("/directory/deletedItems"), Route::DeletedItems(None))
        }
        [d, del, c] if eq(d, "directory") && eq(del, "deletedItems") => match cast_kind(c) {
            Some(Some(k @ (ObjectKind::User | ObjectKind::Group))) => (
                t(&format!("/directory/deletedItems/{}", cast_name(k))),
                Route::DeletedItems(Some(k)),
            ),
            _ => (
                t("/directory/deletedItems/{type}"),
                Route::BadCast((*c).to_owned()),
            ),
        },
        [b] if *b == "$batch" => (t("/$batch"), Route::Batch),
        [m, ..] if eq(m, "me") => (t("/me"), Route::Me),
        [first, ..] => (t(&format!("/{first}")), Route::Unknown((*first).to_owned())),
        [] => (t("/"), Route::Unknown(String::new())),
    }
}

/// Turns a handler result into a reply with Graph's common headers.
pub(crate) fn finish(
    result: Result<Answer, ApiError>,
    ids: &RequestIds,
    template: String,
) -> Reply {
    let mut headers = vec![
        ("request-id".to_owned(), ids.request_id.clone()),
        (
            "client-request-id".to_owned(),
            ids.client_request_id.clone(),
        ),
        ("Cache-Control".to_owned(), "no-cache".to_owned()),
    ];
    match result {
        // `x-ms-resource-unit` comes from what the request was charged (`Shared::charge`).
        Ok(a) => {
            if a.json {
                headers.push(("OData-Version".to_owned(), "4.0".to_owned()));
            }
            headers.extend(a.headers);
            Reply {
                status: a.status,
                headers,
                body: a.body,
                json: a.json,
                template,
            }
        }
        Err(e) => {
            headers.extend(e.headers.iter().cloned());
            Reply {
                status: e.status,
                body: error_body(&e, ids),
                headers,
                json: true,
                template,
            }
        }
    }
}

/// Answers one Graph request (not `$batch`, which is asynchronous, see `batch.rs`).
pub(crate) fn handle(sh: &Shared, req: &GraphReq<'_>) -> Reply {
    let ids = RequestIds::new(req.headers.client_request_id.as_deref());
    let (template, route) = route(req.path);
    let result = answer(sh, req, &route);
    finish(result, &ids, template)
}

fn answer(sh: &Shared, req: &GraphReq<'_>, route: &Route) -> Result<Answer, ApiError> {
    let q = Query::parse(req.raw_query);
    if q.has("$expand") {
        return Err(ApiError::bad_request(
            "$expand is not supported by graph-sim.",
        ));
    }
    for opt in ["$skip", "$levels", "$apply", "$compute", "$index"] {
        if q.has(opt) {
            return Err(ApiError::bad_request(format!(
                "Query option '{opt}' is not supported."
            )));
        }
    }
    let method = req.method.to_ascii_uppercase();
    let get_only = |m: &str| -> Result<(), ApiError> {
        match m {
            "GET" => Ok(()),
            // The simulated app only holds read permissions.
            "POST" | "PATCH" | "PUT" | "DELETE" => Err(ApiError::forbidden()),
            _ => Err(ApiError::method_not_allowed()),
        }
    };
    match route {
        Route::Me => Err(ApiError::new(
            400,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        )),
        Route::Unknown(seg) => Err(ApiError::segment(seg)),
        Route::BadCast(seg) => Err(ApiError::unsupported(format!(
            "The type cast '{seg}' is not supported for this collection."
        ))),
        Route::Batch => Err(ApiError::bad_request(
            "A $batch request cannot contain another $batch.",
        )),
        Route::UserOther(_) => {
            if method == "GET" {
                Err(ApiError::segment(
                    req.path.rsplit('/').next().unwrap_or_default(),
                ))
            } else {
                Err(ApiError::method_not_allowed())
            }
        }
        Route::MembersRef => Err(if method == "GET" {
            ApiError::method_not_allowed()
        } else {
            ApiError::forbidden()
        }),
        Route::Delta(of) => {
            get_only(&method)?;
            let dir = sh.read();
            delta::answer(sh, &dir, *of, &q, req)
        }
        Route::GetByIds => {
            if method != "POST" {
                return Err(ApiError::method_not_allowed());
            }
            let dir = sh.read();
            get_by_ids(&dir, &q, req)
        }
        Route::User(key) => {
            get_only(&method)?;
            let dir = sh.read();
            get_user(&dir, key, &q, req)
        }
        Route::Group(id) => {
            get_only(&method)?;
            let dir = sh.read();
            get_group(&dir, id, &q)
        }
        Route::UsersCount | Route::GroupsCount => {
            get_only(&method)?;
            let kind = if *route == Route::UsersCount {
                ListKind::Users
            } else {
                ListKind::Groups
            };
            let dir = sh.read();
            count_only(sh, &dir, &kind, &q, req)
        }
        Route::Members {
            group,
            transitive,
            cast,
            count,
        } => {
            get_only(&method)?;
            let dir = sh.read();
            let gid = Uuid::parse_str(group)
                .ok()
                .filter(|_| group.len() == 36)
                .ok_or_else(|| ApiError::invalid_id(group))?;
            if dir.live_group(&gid).is_none() {
                return Err(ApiError::not_found(group));
            }
            let kind = ListKind::Members {
                group: gid,
                transitive: *transitive,
                cast: *cast,
            };
            if *count {
                count_only(sh, &dir, &kind, &q, req)
            } else {
                list(sh, &dir, &kind, &q, req)
            }
        }
        Route::Users | Route::Groups => {
            if method == "POST" {
                return Err(ApiError::forbidden());
            }
            get_only(&method)?;
            let kind = if *route == Route::Users {
                ListKind::Users
            } else {
                ListKind::Groups
            };
            let dir = sh.read();
            list(sh, &dir, &kind, &q, req)
        }
        Route::UserMemberOf(key) => {
            get_only(&method)?;
            let dir = sh.read();
            let user = dir.find_user(key).ok_or_else(|| ApiError::not_found(key))?;
            let uid = Uuid::parse_str(&user.id).map_err(|_| ApiError::not_found(key))?;
            list(sh, &dir, &ListKind::MemberOf(uid), &q, req)
        }
        Route::UserTransitiveMemberOf(key) => {
            get_only(&method)?;
            let dir = sh.read();
            let user = dir.find_user(key).ok_or_else(|| ApiError::not_found(key))?;
            let uid = Uuid::parse_str(&user.id).map_err(|_| ApiError::not_found(key))?;
            list(sh, &dir, &ListKind::TransitiveMemberOf(uid), &q, req)
        }
        Route::DeletedItems(kind) => {
            get_only(&method)?;
            let Some(kind) = kind else {
                return Err(ApiError::bad_request(
                    "The OData cast type is a required part of the URI: use /directory/deletedItems/microsoft.graph.user or microsoft.graph.group.",
                ));
            };
            let dir = sh.read();
            let lk = if *kind == ObjectKind::User {
                ListKind::DeletedUsers
            } else {
                ListKind::DeletedGroups
            };
            list(sh, &dir, &lk, &q, req)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Single objects

/// Resolves a user `$select`; names stored outside the main store answer 501.
pub(crate) fn user_select(raw: Option<&str>) -> Result<Option<Vec<&'static str>>, ApiError> {
    parse_select(raw, "microsoft.graph.user", |n| match user_prop(n) {
        Some(UserPropKind::Known(p)) => Ok(Some(p)),
        Some(UserPropKind::NotImplemented) => Err(ApiError::new(
            501,
            "NotImplemented",
            "This operation target is not yet supported.",
        )),
        None => Ok(None),
    })
}

pub(crate) fn group_select(raw: Option<&str>) -> Result<Option<Vec<&'static str>>, ApiError> {
    parse_select(raw, "microsoft.graph.group", |n| Ok(group_prop(n)))
}

fn context(set: &str, select: Option<&[&'static str]>, entity: bool) -> String {
    let mut c = format!("{CONTEXT_BASE}{set}");
    if let Some(sel) = select {
        c.push('(');
        c.push_str(&sel.join(","));
        c.push(')');
    }
    if entity {
        c.push_str("/$entity");
    }
    c
}

/// `{"@odata.context":...,` + the rest of an already written object.
fn with_context(ctx: &str, object: &str) -> String {
    let mut out = String::with_capacity(object.len() + ctx.len() + 24);
    out.push_str("{\"@odata.context\":");
    push_json_str(&mut out, ctx);
    if object.len() > 2 {
        out.push(',');
    }
    out.push_str(object.get(1..).unwrap_or("}"));
    out
}

fn get_user(dir: &Directory, key: &str, q: &Query, req: &GraphReq<'_>) -> Result<Answer, ApiError> {
    let select = user_select(q.get("$select"))?;
    let user = dir.find_user(key).ok_or_else(|| ApiError::not_found(key))?;
    let mut obj = String::with_capacity(512);
    write_user(
        &mut obj,
        user,
        &Shape {
            select: select.as_deref(),
            null_props: req.null_props,
            ..Shape::default()
        },
    );
    let ctx = context("users", select.as_deref(), true);
    Ok(Answer::json(with_context(&ctx, &obj)))
}

fn get_group(dir: &Directory, id: &str, q: &Query) -> Result<Answer, ApiError> {
    let gid = Uuid::parse_str(id)
        .ok()
        .filter(|_| id.len() == 36)
        .ok_or_else(|| ApiError::invalid_id(id))?;
    let select = group_select(q.get("$select"))?;
    let g = dir
        .live_group(&gid)
        .ok_or_else(|| ApiError::not_found(id))?;
    let mut obj = String::with_capacity(1024);
    write_group(
        &mut obj,
        g,
        &Shape {
            select: select.as_deref(),
            ..Shape::default()
        },
    );
    let ctx = context("groups", select.as_deref(), true);
    Ok(Answer::json(with_context(&ctx, &obj)))
}

fn get_by_ids(dir: &Directory, q: &Query, req: &GraphReq<'_>) -> Result<Answer, ApiError> {
    #[derive(serde::Deserialize)]
    struct Body {
        ids: Vec<String>,
        #[serde(default)]
        types: Vec<String>,
    }
    let body: Body = serde_json::from_slice(req.body)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))?;
    if body.ids.len() > 1000 {
        return Err(ApiError::bad_request("Too many ids: the limit is 1000."));
    }
    let select = parse_select(q.get("$select"), "microsoft.graph.directoryObject", |n| {
        Ok(member_prop(n))
    })?;
    let wanted = |k: ObjectKind| {
        body.types.is_empty()
            || body.types.iter().any(|t| {
                let t = t.trim_start_matches("microsoft.graph.");
                cast_name(k)
                    .trim_start_matches("microsoft.graph.")
                    .eq_ignore_ascii_case(t)
            })
    };
    let shape = Shape {
        select: select.as_deref(),
        odata_type: true,
        null_props: req.null_props,
        group_odata_id: None,
    };
    let mut out = String::with_capacity(256 + body.ids.len() * 512);
    out.push_str("{\"@odata.context\":");
    push_json_str(&mut out, &context("directoryObjects", None, false));
    out.push_str(",\"value\":[");
    let mut first = true;
    for id in &body.ids {
        let uid = Uuid::parse_str(id)
            .ok()
            .filter(|_| id.len() == 36)
            .ok_or_else(|| ApiError::invalid_id(id))?;
        let Some(kind) = dir.kind_of(&uid) else {
            continue;
        };
        if !wanted(kind) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        if kind == ObjectKind::User && select.is_none() {
            if let Some(u) = dir.live_user(&uid) {
                write_user_full(&mut out, u, req.null_props);
            }
        } else {
            write_object(&mut out, dir, &uid, kind, &shape);
        }
    }
    out.push_str("]}");
    Ok(Answer::json(out))
}

/// getByIds returns users with more than the default set (incl. `accountEnabled`).
fn write_user_full(out: &mut String, u: &super::model::SimUser, null_props: bool) {
    const FULL: &[&str] = &[
        "accountEnabled",
        "businessPhones",
        "displayName",
        "givenName",
        "jobTitle",
        "mail",
        "mobilePhone",
        "officeLocation",
        "preferredLanguage",
        "surname",
        "userPrincipalName",
        "userType",
    ];
    write_user(
        out,
        u,
        &Shape {
            select: Some(FULL),
            odata_type: true,
            null_props,
            group_odata_id: None,
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Listings

#[derive(Debug, Clone)]
pub(crate) enum ListKind {
    Users,
    Groups,
    Members {
        group: Uuid,
        transitive: bool,
        cast: Option<ObjectKind>,
    },
    MemberOf(Uuid),
    TransitiveMemberOf(Uuid),
    DeletedUsers,
    DeletedGroups,
}

const USER_FILTER: &[&str] = &[
    "id",
    "userPrincipalName",
    "mail",
    "displayName",
    "givenName",
    "surname",
    "jobTitle",
    "department",
    "accountEnabled",
    "userType",
    "city",
    "country",
    "companyName",
    "employeeId",
    "mobilePhone",
    "officeLocation",
    "createdDateTime",
    "usageLocation",
    "creationType",
    "externalUserState",
    "mailNickname",
    "preferredLanguage",
    "otherMails",
    "proxyAddresses",
];

const GROUP_FILTER: &[&str] = &[
    "id",
    "displayName",
    "mail",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "description",
    "visibility",
    "groupTypes",
];

const MEMBER_FILTER: &[&str] = &[
    "id",
    "userPrincipalName",
    "mail",
    "displayName",
    "givenName",
    "surname",
    "jobTitle",
    "department",
    "accountEnabled",
    "userType",
    "city",
    "country",
    "companyName",
    "employeeId",
    "mailNickname",
    "createdDateTime",
    "securityEnabled",
    "mailEnabled",
    "description",
];

const SEARCH_PROPS: &[&str] = &[
    "displayName",
    "mail",
    "userPrincipalName",
    "givenName",
    "surname",
    "description",
    "mailNickname",
    "jobTitle",
    "department",
];

const ORDER_PROPS: &[&str] = &[
    "displayName",
    "userPrincipalName",
    "mail",
    "createdDateTime",
    "deletedDateTime",
];

struct ListPlan {
    set: &'static str,
    select: Option<Vec<&'static str>>,
    filter: Option<Filter>,
    search: Option<Search>,
    orderby: Option<(&'static str, bool)>,
    count: bool,
    page: usize,
    cast: Option<ObjectKind>,
    odata_type: bool,
}

fn plan(sh: &Shared, kind: &ListKind, q: &Query, req: &GraphReq<'_>) -> Result<ListPlan, ApiError> {
    let eventual = req.headers.eventual;
    let (cast, transitive) = match kind {
        ListKind::Members {
            cast, transitive, ..
        } => (*cast, *transitive),
        _ => (None, false),
    };
    let user_like =
        matches!(kind, ListKind::Users | ListKind::DeletedUsers) || cast == Some(ObjectKind::User);
    let group_like = matches!(kind, ListKind::Groups | ListKind::DeletedGroups)
        || cast == Some(ObjectKind::Group);
    let select = if user_like {
        user_select(q.get("$select"))?
    } else if group_like {
        group_select(q.get("$select"))?
    } else {
        parse_select(q.get("$select"), "microsoft.graph.directoryObject", |n| {
            if let Some(UserPropKind::NotImplemented) = user_prop(n) {
                return Err(ApiError::new(
                    501,
                    "NotImplemented",
                    "This operation target is not yet supported.",
                ));
            }
            Ok(member_prop(n))
        })?
    };
    let (set, resource) = match (kind, cast) {
        (ListKind::Users | ListKind::DeletedUsers, _) | (_, Some(ObjectKind::User)) => {
            ("users", "User")
        }
        (ListKind::Groups | ListKind::DeletedGroups, _) | (_, Some(ObjectKind::Group)) => {
            ("groups", "Group")
        }
        (_, Some(ObjectKind::Device)) => ("devices", "Device"),
        (_, Some(ObjectKind::OrgContact)) => ("contacts", "OrgContact"),
        _ => ("directoryObjects", "DirectoryObject"),
    };
    let is_member_listing = matches!(
        kind,
        ListKind::Members { .. } | ListKind::MemberOf(_) | ListKind::TransitiveMemberOf(_)
    );
    let advanced_hint = |op: &str| {
        ApiError::unsupported(format!(
            "Operator '{op}' is not supported because the required parameters might be missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header. Refer to https://aka.ms/graph-docs/advanced-queries for more information"
        ))
    };
    let search = match q.get("$search") {
        None => None,
        Some(raw) => {
            if !eventual {
                return Err(ApiError::unsupported(
                    "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
                ));
            }
            Some(parse_search(raw, SEARCH_PROPS)?)
        }
    };
    let filter = match q.get("$filter") {
        None => None,
        Some(raw) => {
            let props = if user_like {
                USER_FILTER
            } else if group_like {
                GROUP_FILTER
            } else {
                MEMBER_FILTER
            };
            let f = parse_filter(raw, &FilterSpec { resource, props })?;
            if let Some(op) = f.advanced_operator()
                && !(eventual && q.count_true())
            {
                return Err(advanced_hint(op));
            }
            // Not indexed for any filter on these resources, as Graph answers for groups.
            let mut used = Vec::new();
            f.props(&mut used);
            if group_like && let Some((p, _)) = used.iter().find(|(p, _)| *p == "createdDateTime") {
                return Err(ApiError::unsupported(format!(
                    "Unsupported or invalid query filter clause specified for property '{p}' of resource '{resource}'."
                )));
            }
            Some(f)
        }
    };
    let orderby = match q.get("$orderby") {
        None => None,
        Some(raw) => {
            if is_member_listing && !(eventual && q.count_true()) {
                return Err(advanced_hint("orderby"));
            }
            Some(parse_orderby(raw, ORDER_PROPS)?)
        }
    };
    if transitive && cast.is_some() && !eventual && (filter.is_some() || search.is_some()) {
        return Err(advanced_hint("cast"));
    }
    let top = parse_top(q)?;
    let page = top.unwrap_or(100).min(sh.opts.page_size).max(1);
    // Its resource units are charged before it is served (`crate::ru::cost`).
    Ok(ListPlan {
        set,
        select,
        filter,
        search,
        orderby,
        count: eventual && q.count_true(),
        page,
        cast,
        odata_type: is_member_listing,
    })
}

/// The objects of a listing in id order, after `after`, visible ones only.
fn source<'d>(
    sh: &Shared,
    dir: &'d Directory,
    kind: &ListKind,
    after: Option<Uuid>,
) -> Box<dyn Iterator<Item = (Uuid, ObjRef<'d>)> + 'd> {
    let lower = match after {
        Some(a) => Bound::Excluded(a),
        None => Bound::Unbounded,
    };
    let range = (lower, Bound::Unbounded);
    match kind {
        ListKind::Users => Box::new(
            dir.users
                .range(range)
                .filter(|(_, u)| u.deleted_date_time.is_none())
                .map(|(id, u)| (*id, ObjRef::User(u))),
        ),
        ListKind::DeletedUsers => Box::new(
            dir.users
                .range(range)
                .filter(|(_, u)| u.deleted_date_time.is_some())
                .map(|(id, u)| (*id, ObjRef::User(u))),
        ),
        ListKind::Groups => Box::new(
            dir.groups
                .range(range)
                .filter(|(_, g)| g.deleted.is_none())
                .map(|(id, g)| (*id, ObjRef::Group(g))),
        ),
        ListKind::DeletedGroups => Box::new(
            dir.groups
                .range(range)
                .filter(|(_, g)| g.deleted.is_some())
                .map(|(id, g)| (*id, ObjRef::Group(g))),
        ),
        ListKind::Members {
            group,
            transitive: false,
            ..
        } => match dir.live_group(group) {
            Some(g) => Box::new(g.members.range(range).filter_map(|(id, k)| {
                ObjRef::lookup(dir, id, *k)
                    .filter(ObjRef::live)
                    .map(|o| (*id, o))
            })),
            None => Box::new(std::iter::empty()),
        },
        ListKind::Members {
            group,
            transitive: true,
            ..
        } => {
            let list = sh.transitive(dir, group);
            let start = after.map_or(0, |a| list.partition_point(|(id, _)| *id <= a));
            Box::new((start..list.len()).filter_map(move |i| {
                let (id, k) = list.get(i).copied()?;
                ObjRef::lookup(dir, &id, k)
                    .filter(ObjRef::live)
                    .map(|o| (id, o))
            }))
        }
        ListKind::MemberOf(user) | ListKind::TransitiveMemberOf(user) => {
            let groups = if matches!(kind, ListKind::MemberOf(_)) {
                dir.member_of(user)
            } else {
                dir.transitive_member_of(user)
            };
            Box::new(
                groups
                    .into_iter()
                    .filter(move |g| after.is_none_or(|a| *g > a))
                    .filter_map(|g| dir.groups.get(&g).map(|rec| (g, ObjRef::Group(rec)))),
            )
        }
    }
}

fn matches(p: &ListPlan, obj: &ObjRef<'_>) -> bool {
    if p.cast.is_some_and(|c| c != obj.kind()) {
        return false;
    }
    if p.filter.is_none() && p.search.is_none() {
        return true;
    }
    let get = |name: &str| obj.value(name);
    p.filter.as_ref().is_none_or(|f| f.eval(&get))
        && p.search.as_ref().is_none_or(|s| s.matches(&get))
}

fn list(
    sh: &Shared,
    dir: &Directory,
    kind: &ListKind,
    q: &Query,
    req: &GraphReq<'_>,
) -> Result<Answer, ApiError> {
    let p = plan(sh, kind, q, req)?;
    let cursor = match q.get("$skiptoken") {
        None | Some("") => None,
        Some(tok) => Some(decode_token::<ListCursor>(tok).ok_or_else(|| {
            ApiError::bad_request("The $skiptoken is not valid for this request.")
        })?),
    };
    let shape = Shape {
        select: p.select.as_deref(),
        odata_type: p.odata_type,
        null_props: req.null_props,
        group_odata_id: (p.cast == Some(ObjectKind::Group)).then_some(sh.tenant_guid.as_str()),
    };
    let mut items = String::with_capacity(p.page * 400);
    let mut written = 0usize;
    let mut next: Option<ListCursor> = None;
    if let Some((prop, desc)) = p.orderby {
        let mut all: Vec<(Uuid, ObjRef<'_>, String)> = source(sh, dir, kind, None)
            .filter(|(_, o)| matches(&p, o))
            .map(|(id, o)| {
                let key = o
                    .value(prop)
                    .and_then(|v| v.as_str().map(str::to_lowercase))
                    .unwrap_or_default();
                (id, o, key)
            })
            .collect();
        all.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
        if desc {
            all.reverse();
        }
        let offset = match cursor {
            Some(ListCursor::Offset(o)) => o,
            Some(ListCursor::After(_)) => {
                return Err(ApiError::bad_request(
                    "The $skiptoken is not valid for this request.",
                ));
            }
            None => 0,
        };
        for (_, o, _) in all.iter().skip(offset).take(p.page) {
            if written > 0 {
                items.push(',');
            }
            o.write(&mut items, &shape);
            written += 1;
        }
        if offset + written < all.len() {
            next = Some(ListCursor::Offset(offset + written));
        }
    } else {
        let after = match cursor {
            Some(ListCursor::After(a)) => Some(a),
            Some(ListCursor::Offset(_)) => {
                return Err(ApiError::bad_request(
                    "The $skiptoken is not valid for this request.",
                ));
            }
            None => None,
        };
        let mut last: Option<Uuid> = None;
        for (id, o) in source(sh, dir, kind, after) {
            if !matches(&p, &o) {
                continue;
            }
            if written == p.page {
                next = last.map(ListCursor::After);
                break;
            }
            if written > 0 {
                items.push(',');
            }
            o.write(&mut items, &shape);
            written += 1;
            last = Some(id);
        }
    }
    let count = (p.count && cursor.is_none()).then(|| {
        source(sh, dir, kind, None)
            .filter(|(_, o)| matches(&p, o))
            .count()
    });
    let mut out = String::with_capacity(items.len() + 512);
    let mut obj = Obj::begin(&mut out);
    obj.str(
        "@odata.context",
        &context(p.set, p.select.as_deref(), false),
    );
    if let Some(c) = count {
        obj.raw("@odata.count", &c.to_string());
    }
    if let Some(n) = next {
        let rest = q.raw_without(&["$skiptoken"]);
        let sep = if rest.is_empty() { "" } else { "&" };
        let link = format!(
            "{}/v1.0{}?{rest}{sep}$skiptoken={}",
            sh.base_url,
            req.path,
            encode_token(&n)
        );
        obj.str("@odata.nextLink", &link);
    }
    let value = obj.key("value");
    value.push('[');
    value.push_str(&items);
    value.push(']');
    obj.end();
    Ok(Answer::json(out))
}

fn count_only(
    sh: &Shared,
    dir: &Directory,
    kind: &ListKind,
    q: &Query,
    req: &GraphReq<'_>,
) -> Result<Answer, ApiError> {
    if !req.headers.eventual {
        return Err(ApiError::bad_request("$count is not currently supported."));
    }
    let p = plan(sh, kind, q, req)?;
    let n = source(sh, dir, kind, None)
        .filter(|(_, o)| matches(&p, o))
        .count();
    Ok(Answer {
        status: 200,
        body: n.to_string(),
        json: false,
        headers: Vec::new(),
    })
}
