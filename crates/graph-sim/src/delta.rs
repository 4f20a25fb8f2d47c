//! `/users/delta` and `/groups/delta`: initial rounds, incremental rounds from the change log,
//! opaque `$skiptoken`/`$deltatoken` state, token expiry.
//!
//! A round covers the change log between two positions. The initial round lists the current
//! state; an incremental round lists each object changed in its log range once, with its
//! current state (several changes merge). Tokens carry the round and the position inside it,
//! so pages are computed on demand and never held in memory per client.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::graph::{Answer, CONTEXT_BASE, DeltaOf, GraphReq, group_select, user_select};
use super::model::ObjectKind;
use super::odata::{ApiError, FilterSpec, Query, decode_token, encode_token, parse_filter};
use super::render::{
    ALL_BITS, GROUP_DEFAULT, GROUP_TRACKED, Obj, Shape, USER_DEFAULT, USER_MODELED, group_bit,
    user_bit, write_group, write_user,
};
use super::tenant::{Change, Directory};
use super::{Shared, lock};

const MAX_FILTER_IDS: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    /// Simulator instance.
    i: u64,
    /// Expiry epoch the token was minted in.
    e: u64,
    /// 0 = users, 1 = groups.
    k: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<Vec<Uuid>>,
    /// Log position the round's changes start after; `None` for an initial round.
    fr: Option<u64>,
    /// Log position the round ends at.
    to: u64,
    /// Position inside the round; `None` in a deltaLink.
    c: Option<Cur>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Cur {
    /// Initial round: continue after object `g`, or inside group `g` after member `m`.
    #[serde(rename = "i")]
    Initial { g: Option<Uuid>, m: Option<Uuid> },
    /// Incremental round: item `n` of the change list, from its member `m`.
    #[serde(rename = "o")]
    Offset { n: usize, m: usize },
}

/// What a round tracks and returns.
struct Spec {
    of: DeltaOf,
    select: Option<Vec<&'static str>>,
    members: bool,
    filter: Option<BTreeSet<Uuid>>,
}

impl Spec {
    fn tracked_bits(&self) -> u64 {
        match &self.select {
            None => ALL_BITS,
            Some(sel) => sel.iter().fold(0, |acc, n| {
                acc | match self.of {
                    DeltaOf::Users => user_bit(n),
                    DeltaOf::Groups => group_bit(n),
                }
            }),
        }
    }

    fn select_names(&self) -> Option<Vec<String>> {
        let mut names: Vec<String> = self
            .select
            .as_ref()?
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if self.members {
            names.push("members".to_owned());
        }
        Some(names)
    }
}

#[derive(Debug, Clone)]
struct GroupItem {
    id: Uuid,
    bits: u64,
    members: Vec<(Uuid, ObjectKind, bool)>,
}

#[derive(Debug, Clone)]
enum Items {
    Users(Vec<(Uuid, u64)>),
    Groups(Vec<GroupItem>),
}

type CacheKey = (u8, u64, u64, Option<Vec<Uuid>>, u64, bool);

/// Recently computed change lists, so paging through a big round doesn't rescan the log.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    entries: Vec<(CacheKey, Arc<Items>)>,
}

fn sync_state_not_found() -> ApiError {
    ApiError::new(
        400,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
}

fn kind_byte(of: DeltaOf) -> u8 {
    match of {
        DeltaOf::Users => 0,
        DeltaOf::Groups => 1,
    }
}

fn path_of(of: DeltaOf) -> &'static str {
    match of {
        DeltaOf::Users => "users",
        DeltaOf::Groups => "groups",
    }
}

fn parse_spec(of: DeltaOf, select: Option<&str>, filter: Option<&str>) -> Result<Spec, ApiError> {
    let (select, members) = match of {
        DeltaOf::Users => (user_select(select)?, false),
        DeltaOf::Groups => match select {
            None => (None, true),
            Some(raw) => {
                let members = raw
                    .split(',')
                    .any(|s| s.trim().eq_ignore_ascii_case("members"));
                let rest: Vec<&str> = raw
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.eq_ignore_ascii_case("members"))
                    .collect();
                let sel = if rest.is_empty() {
                    Some(vec!["id"])
                } else {
                    group_select(Some(&rest.join(",")))?
                };
                (sel, members)
            }
        },
    };
    let filter = match filter {
        None => None,
        Some(raw) => {
            let f = parse_filter(
                raw,
                &FilterSpec {
                    resource: match of {
                        DeltaOf::Users => "User",
                        DeltaOf::Groups => "Group",
                    },
                    props: &["id"],
                },
            )?;
            let ids = f.id_list().ok_or_else(|| {
                ApiError::unsupported("The only supported $filter on delta is id eq '...' (or'ed).")
            })?;
            if ids.len() > MAX_FILTER_IDS {
                return Err(ApiError::bad_request(format!(
                    "Too many object ids in the filter: {} given, the maximum is {MAX_FILTER_IDS}.",
                    ids.len()
                )));
            }
            let mut set = BTreeSet::new();
            for id in ids {
                let uid = Uuid::parse_str(&id)
                    .ok()
                    .filter(|_| id.len() == 36)
                    .ok_or_else(|| ApiError::invalid_id(&id))?;
                set.insert(uid);
            }
            Some(set)
        }
    };
    Ok(Spec {
        of,
        select,
        members,
        filter,
    })
}

fn spec_from_token(of: DeltaOf, t: &Token) -> Result<Spec, ApiError> {
    let select = t.s.as_ref().map(|s| s.join(","));
    let mut spec = parse_spec(of, select.as_deref(), None)?;
    spec.filter = t.f.as_ref().map(|f| f.iter().copied().collect());
    Ok(spec)
}

fn current_epoch(dir: &Directory) -> u64 {
    dir.expiry.map_or(0, |e| e.epoch)
}

fn check_token(sh: &Shared, dir: &Directory, of: DeltaOf, raw: &str) -> Result<Token, ApiError> {
    let t: Token = decode_token(raw)
        .ok_or_else(|| ApiError::bad_request("The delta or skip token is malformed."))?;
    if t.i != sh.instance || t.k != kind_byte(of) || t.to > dir.seq() {
        return Err(sync_state_not_found());
    }
    if let Some(exp) = dir.expiry
        && t.e < exp.epoch
    {
        if exp.status == 410 {
            let mut location = format!("{}/v1.0/{}/delta?", sh.base_url, path_of(of));
            if let Some(s) = &t.s {
                location.push_str(&format!("$select={}&", s.join(",")));
            }
            if let Some(f) = &t.f {
                let expr = f
                    .iter()
                    .map(|id| format!("id eq '{id}'"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                let enc: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
                location.push_str(&format!("$filter={enc}&"));
            }
            location.push_str("$deltatoken=");
            let mut e = sync_state_not_found();
            e.status = 410;
            return Err(e.with_header("Location", location));
        }
        let mut e = sync_state_not_found();
        e.status = exp.status;
        return Err(e);
    }
    Ok(t)
}

/// Answers one delta request.
pub(crate) fn answer(
    sh: &Shared,
    dir: &Directory,
    of: DeltaOf,
    q: &Query,
    req: &GraphReq<'_>,
) -> Result<Answer, ApiError> {
    if q.has("$top") {
        return Err(ApiError::bad_request(
            "The query parameter '$top' is not supported with delta queries.",
        ));
    }
    if q.has("$orderby") {
        return Err(ApiError::unsupported(
            "The query parameter '$orderby' is not supported with delta queries.",
        ));
    }
    if q.has("$search") {
        return Err(ApiError::unsupported(
            "The query parameter '$search' is not supported with delta queries.",
        ));
    }
    let skip = q.get("$skiptoken").filter(|t| !t.is_empty());
    let dtok = q.get("$deltatoken").filter(|t| !t.is_empty());
    let (spec, token) = match (skip, dtok) {
        (Some(raw), _) => {
            if q.has("$select") || q.has("$filter") {
                return Err(ApiError::bad_request(
                    "Delta queries with both $select (or $filter) and $skiptoken aren't supported; follow the nextLink as is.",
                ));
            }
            let t = check_token(sh, dir, of, raw)?;
            if t.c.is_none() {
                return Err(ApiError::bad_request(
                    "The delta or skip token is malformed.",
                ));
            }
            (spec_from_token(of, &t)?, t)
        }
        (None, Some(raw)) if raw.eq_ignore_ascii_case("latest") => {
            let spec = parse_spec(of, q.get("$select"), q.get("$filter"))?;
            let t = Token {
                i: sh.instance,
                e: current_epoch(dir),
                k: kind_byte(of),
                s: spec.select_names(),
                f: spec.filter.as_ref().map(|f| f.iter().copied().collect()),
                fr: Some(dir.seq()),
                to: dir.seq(),
                c: None,
            };
            let mut out = String::new();
            let mut obj = Obj::begin(&mut out);
            obj.str("@odata.context", &format!("{CONTEXT_BASE}{}", path_of(of)));
            obj.str("@odata.deltaLink", &link(sh, of, "$deltatoken", &t));
            obj.raw("value", "[]");
            obj.end();
            return Ok(Answer::json(out));
        }
        (None, Some(raw)) => {
            let mut t = check_token(sh, dir, of, raw)?;
            let mut spec = spec_from_token(of, &t)?;
            // A deltaLink may change what is tracked by adding $select.
            if q.has("$select") {
                let filter = spec.filter.take();
                spec = parse_spec(of, q.get("$select"), None)?;
                spec.filter = filter;
                t.s = spec.select_names();
            }
            let from = t.fr.unwrap_or(t.to);
            t.fr = Some(from);
            t.to = dir.seq();
            t.c = Some(Cur::Offset { n: 0, m: 0 });
            (spec, t)
        }
        (None, None) => {
            let spec = parse_spec(of, q.get("$select"), q.get("$filter"))?;
            let t = Token {
                i: sh.instance,
                e: current_epoch(dir),
                k: kind_byte(of),
                s: spec.select_names(),
                f: spec.filter.as_ref().map(|f| f.iter().copied().collect()),
                fr: None,
                to: dir.seq(),
                c: Some(Cur::Initial { g: None, m: None }),
            };
            (spec, t)
        }
    };
    let first_initial_page = matches!(token.c, Some(Cur::Initial { g: None, m: None }));
    let minimal = req.headers.prefer_minimal && token.fr.is_some();
    let shape = Shape {
        select: spec.select.as_deref(),
        odata_type: false,
        null_props: req.null_props,
        group_odata_id: None,
    };
    let budget = sh.opts.delta_page_size.max(2);
    let mut items = String::with_capacity(budget * 300);
    let next = match (&token.c, token.fr) {
        (Some(Cur::Initial { g, m }), _) => {
            initial_page(dir, &spec, &shape, *g, *m, budget, &mut items)
        }
        (Some(Cur::Offset { n, m }), Some(from)) => {
            let list = changes(sh, dir, &spec, from, token.to);
            incremental_page(
                dir, &spec, &shape, &list, *n, *m, budget, minimal, &mut items,
            )
        }
        _ => {
            return Err(ApiError::bad_request(
                "The delta or skip token is malformed.",
            ));
        }
    };
    let mut out = String::with_capacity(items.len() + 512);
    let mut obj = Obj::begin(&mut out);
    let mut ctx = format!("{CONTEXT_BASE}{}", path_of(of));
    if first_initial_page && let Some(sel) = &spec.select {
        ctx.push('(');
        ctx.push_str(&sel.join(","));
        ctx.push(')');
    }
    obj.str("@odata.context", &ctx);
    match next {
        Some(cur) => {
            let t = Token {
                c: Some(cur),
                e: current_epoch(dir),
                ..token.clone()
            };
            obj.str("@odata.nextLink", &link(sh, of, "$skiptoken", &t));
        }
        None => {
            let t = Token {
                fr: Some(token.to),
                c: None,
                e: current_epoch(dir),
                ..token.clone()
            };
            obj.str("@odata.deltaLink", &link(sh, of, "$deltatoken", &t));
        }
    }
    let value = obj.key("value");
    value.push('[');
    value.push_str(&items);
    value.push(']');
    obj.end();
    let mut ans = Answer::json(out);
    if minimal {
        ans.headers
            .push(("Preference-Applied".to_owned(), "return=minimal".to_owned()));
    }
    Ok(ans)
}

fn link(sh: &Shared, of: DeltaOf, param: &str, t: &Token) -> String {
    format!(
        "{}/v1.0/{}/delta?{param}={}",
        sh.base_url,
        path_of(of),
        encode_token(t)
    )
}

fn sep(items: &mut String) {
    if !items.is_empty() {
        items.push(',');
    }
}

fn removed(items: &mut String, id: &Uuid, reason: &str) {
    sep(items);
    items.push_str("{\"id\":\"");
    items.push_str(&id.to_string());
    items.push_str("\",\"@removed\":{\"reason\":\"");
    items.push_str(reason);
    items.push_str("\"}}");
}

/// Writes `,"members@delta":[...]` (into an open object) for `members`; returns how many.
fn write_member_entries(
    obj_text: &mut String,
    members: impl Iterator<Item = (Uuid, ObjectKind, bool)>,
    room: usize,
) -> (usize, Option<Uuid>) {
    let mut n = 0;
    let mut last = None;
    let mut body = String::new();
    for (id, kind, added) in members.take(room) {
        if n > 0 {
            body.push(',');
        }
        let mut o = Obj::begin(&mut body);
        o.str("@odata.type", kind.odata_type());
        o.str("id", &id.to_string());
        if !added {
            o.raw("@removed", "{\"reason\":\"deleted\"}");
        }
        o.end();
        n += 1;
        last = Some(id);
    }
    if n > 0 {
        obj_text.pop(); // the closing brace of the group object
        obj_text.push_str(",\"members@delta\":[");
        obj_text.push_str(&body);
        obj_text.push_str("]}");
    }
    (n, last)
}

fn initial_page(
    dir: &Directory,
    spec: &Spec,
    shape: &Shape<'_>,
    g: Option<Uuid>,
    m: Option<Uuid>,
    budget: usize,
    items: &mut String,
) -> Option<Cur> {
    let allowed = |id: &Uuid| spec.filter.as_ref().is_none_or(|f| f.contains(id));
    match spec.of {
        DeltaOf::Users => {
            let lower = g.map_or(Bound::Unbounded, Bound::Excluded);
            let mut n = 0;
            let mut last = None;
            for (id, u) in dir.users.range((lower, Bound::Unbounded)) {
                if !allowed(id) {
                    continue;
                }
                if n == budget {
                    return last.map(|l| Cur::Initial {
                        g: Some(l),
                        m: None,
                    });
                }
                if u.deleted_date_time.is_some() {
                    removed(items, id, "changed");
                } else {
                    sep(items);
                    write_user(items, u, shape);
                }
                n += 1;
                last = Some(*id);
            }
            None
        }
        DeltaOf::Groups => {
            let lower = match (g, m) {
                (Some(g), Some(_)) => Bound::Included(g),
                (Some(g), None) => Bound::Excluded(g),
                (None, _) => Bound::Unbounded,
            };
            let mut units = 0;
            let mut last_group = None;
            for (id, rec) in dir.groups.range((lower, Bound::Unbounded)) {
                if rec.deleted.is_some() || !allowed(id) {
                    continue;
                }
                if units + 1 >= budget && units > 0 {
                    return last_group.map(|l| Cur::Initial {
                        g: Some(l),
                        m: None,
                    });
                }
                sep(items);
                let start = items.len();
                write_group(items, rec, shape);
                units += 1;
                if spec.members {
                    let after = if Some(*id) == g { m } else { None };
                    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
                    let mut it = rec
                        .members
                        .range((lower, Bound::Unbounded))
                        .map(|(i, k)| (*i, *k, true));
                    let room = budget - units;
                    let mut text = items.split_off(start);
                    let (n, last) = write_member_entries(&mut text, &mut it, room);
                    items.push_str(&text);
                    units += n;
                    if n == room && it.next().is_some() {
                        return Some(Cur::Initial {
                            g: Some(*id),
                            m: last,
                        });
                    }
                }
                last_group = Some(*id);
            }
            None
        }
    }
}

/// The objects changed in `(from, to]`, each once, in order of first change.
fn changes(sh: &Shared, dir: &Directory, spec: &Spec, from: u64, to: u64) -> Arc<Items> {
    let key: CacheKey = (
        kind_byte(spec.of),
        from,
        to,
        spec.filter.as_ref().map(|f| f.iter().copied().collect()),
        spec.tracked_bits(),
        spec.members,
    );
    {
        let cache = lock(&sh.delta_cache);
        if let Some((_, items)) = cache.entries.iter().find(|(k, _)| *k == key) {
            return items.clone();
        }
    }
    let log = dir.log.get(from as usize..to as usize).unwrap_or_default();
    let allowed = |id: &Uuid| spec.filter.as_ref().is_none_or(|f| f.contains(id));
    let tracked = spec.tracked_bits();
    let items = match spec.of {
        DeltaOf::Users => {
            let mut order: Vec<Uuid> = Vec::new();
            let mut acc: HashMap<Uuid, (u64, bool)> = HashMap::new();
            for ch in log {
                let (id, bits, rem) = match ch {
                    Change::User { id, props } => (*id, *props, false),
                    Change::UserRemoved { id, .. } => (*id, 0, true),
                    _ => continue,
                };
                if !allowed(&id) {
                    continue;
                }
                let e = acc.entry(id).or_insert_with(|| {
                    order.push(id);
                    (0, false)
                });
                e.0 |= bits;
                e.1 |= rem;
            }
            Items::Users(
                order
                    .into_iter()
                    .filter_map(|id| {
                        let (bits, rem) = acc.get(&id).copied().unwrap_or_default();
                        (rem || bits & tracked != 0).then_some((id, bits))
                    })
                    .collect(),
            )
        }
        DeltaOf::Groups => {
            struct Acc {
                bits: u64,
                removed: bool,
                order: Vec<Uuid>,
                members: HashMap<Uuid, (bool, bool, ObjectKind)>,
            }
            let mut order: Vec<Uuid> = Vec::new();
            let mut acc: HashMap<Uuid, Acc> = HashMap::new();
            for ch in log {
                let gid = match ch {
                    Change::Group { id, .. } | Change::GroupRemoved { id } => *id,
                    Change::Member { group, .. } => *group,
                    _ => continue,
                };
                if !allowed(&gid) {
                    continue;
                }
                let e = acc.entry(gid).or_insert_with(|| {
                    order.push(gid);
                    Acc {
                        bits: 0,
                        removed: false,
                        order: Vec::new(),
                        members: HashMap::new(),
                    }
                });
                match ch {
                    Change::Group { props, .. } => e.bits |= props,
                    Change::GroupRemoved { .. } => e.removed = true,
                    Change::Member {
                        member,
                        kind,
                        added,
                        ..
                    } => match e.members.get_mut(member) {
                        Some(m) => m.1 = *added,
                        None => {
                            e.order.push(*member);
                            e.members.insert(*member, (*added, *added, *kind));
                        }
                    },
                    _ => {}
                }
            }
            Items::Groups(
                order
                    .into_iter()
                    .filter_map(|gid| {
                        let a = acc.remove(&gid)?;
                        let members: Vec<(Uuid, ObjectKind, bool)> = if spec.members {
                            a.order
                                .iter()
                                .filter_map(|m| {
                                    let (first, last, kind) = a.members.get(m).copied()?;
                                    (first == last).then_some((*m, kind, last))
                                })
                                .collect()
                        } else {
                            Vec::new()
                        };
                        (a.removed || a.bits & tracked != 0 || !members.is_empty()).then_some(
                            GroupItem {
                                id: gid,
                                bits: if a.removed { ALL_BITS } else { a.bits },
                                members,
                            },
                        )
                    })
                    .collect(),
            )
        }
    };
    let items = Arc::new(items);
    let mut cache = lock(&sh.delta_cache);
    if cache.entries.len() >= 8 {
        cache.entries.remove(0);
    }
    cache.entries.push((key, items.clone()));
    items
}

/// The names to write for a changed object under `Prefer: return=minimal`.
fn minimal_names(spec: &Spec, bits: u64) -> Vec<&'static str> {
    type Catalog = (
        &'static [&'static str],
        &'static [&'static str],
        fn(&str) -> u64,
    );
    let (catalog, defaults, bit): Catalog = match spec.of {
        DeltaOf::Users => (USER_MODELED, USER_DEFAULT, user_bit),
        DeltaOf::Groups => (GROUP_TRACKED, GROUP_DEFAULT, group_bit),
    };
    let wanted: &[&'static str] = spec.select.as_deref().unwrap_or(defaults);
    catalog
        .iter()
        .copied()
        .filter(|n| *n != "id" && wanted.contains(n) && bits & bit(n) != 0)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn incremental_page(
    dir: &Directory,
    spec: &Spec,
    shape: &Shape<'_>,
    list: &Items,
    n0: usize,
    m0: usize,
    budget: usize,
    minimal: bool,
    items: &mut String,
) -> Option<Cur> {
    let mut units = 0;
    match list {
        Items::Users(list) => {
            for (idx, (id, bits)) in list.iter().enumerate().skip(n0) {
                if units == budget {
                    return Some(Cur::Offset { n: idx, m: 0 });
                }
                units += 1;
                match dir.users.get(id) {
                    None => removed(items, id, "deleted"),
                    Some(u) if u.deleted_date_time.is_some() => removed(items, id, "changed"),
                    Some(u) => {
                        sep(items);
                        if minimal && *bits != ALL_BITS {
                            let names = minimal_names(spec, *bits);
                            write_user(
                                items,
                                u,
                                &Shape {
                                    select: Some(&names),
                                    ..*shape
                                },
                            );
                        } else {
                            write_user(items, u, shape);
                        }
                    }
                }
            }
            None
        }
        Items::Groups(list) => {
            for (idx, item) in list.iter().enumerate().skip(n0) {
                if units + 1 >= budget && units > 0 {
                    return Some(Cur::Offset { n: idx, m: 0 });
                }
                units += 1;
                let Some(rec) = dir.live_group(&item.id) else {
                    removed(items, &item.id, "deleted");
                    continue;
                };
                sep(items);
                let start = items.len();
                if minimal && item.bits != ALL_BITS {
                    let names = minimal_names(spec, item.bits);
                    let mut names_with_id = vec!["id"];
                    names_with_id.extend(names);
                    write_group(
                        items,
                        rec,
                        &Shape {
                            select: Some(&names_with_id),
                            ..*shape
                        },
                    );
                } else {
                    write_group(items, rec, shape);
                }
                let from = if idx == n0 { m0 } else { 0 };
                if from < item.members.len() {
                    let room = budget - units;
                    let mut text = items.split_off(start);
                    let (n, _) =
                        write_member_entries(&mut text, item.members[from..].iter().copied(), room);
                    items.push_str(&text);
                    units += n;
                    if from + n < item.members.len() {
                        return Some(Cur::Offset {
                            n: idx,
                            m: from + n,
                        });
                    }
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_round_trips_and_is_opaque_text() {
        let t = Token {
            i: 7,
            e: 0,
            k: 1,
            s: Some(vec!["displayName".into(), "members".into()]),
            f: None,
            fr: Some(3),
            to: 9,
            c: Some(Cur::Offset { n: 2, m: 5 }),
        };
        let s = encode_token(&t);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        let back: Token = decode_token(&s).unwrap();
        assert_eq!(back.to, 9);
        assert!(matches!(back.c, Some(Cur::Offset { n: 2, m: 5 })));
    }

    #[test]
    fn group_select_without_members_does_not_track_members() {
        let spec = parse_spec(DeltaOf::Groups, Some("displayName,description"), None).unwrap();
        assert!(!spec.members);
        let spec = parse_spec(DeltaOf::Groups, Some("displayName,members"), None).unwrap();
        assert!(spec.members);
        assert_eq!(spec.select.unwrap(), vec!["displayName"]);
    }

    #[test]
    fn more_than_fifty_filter_ids_is_rejected() {
        let ids: Vec<String> = (0..51)
            .map(|i| format!("id eq '{}'", Uuid::from_u128(i as u128)))
            .collect();
        let e = parse_spec(DeltaOf::Groups, None, Some(&ids.join(" or ")))
            .err()
            .unwrap();
        assert_eq!(e.status, 400);
    }
}
