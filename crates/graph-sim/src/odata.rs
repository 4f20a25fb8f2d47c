//! OData request vocabulary: query options (`$select`, `$top`, `$filter`, `$search`,
//! `$orderby`, `$count`), opaque skip tokens, and Graph's error bodies.
//!
//! Parsing only; it never touches the directory except through the property callbacks the
//! caller passes in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::render::{Val, push_json_str};

/// The query string of one request, option names lower-cased, values decoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String, String)>,
}

impl Query {
    pub(crate) fn parse(raw: &str) -> Query {
        let mut pairs = Vec::new();
        for piece in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = url::form_urlencoded::parse(piece.as_bytes())
                .next()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .unwrap_or_default();
            pairs.push((k.to_ascii_lowercase(), v, piece.to_owned()));
        }
        Query { pairs }
    }

    /// The first value of an option; `key` is lower-case, e.g. `"$select"`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The raw query without the given options, for building `@odata.nextLink`.
    pub(crate) fn raw_without(&self, keys: &[&str]) -> String {
        self.pairs
            .iter()
            .filter(|(k, _, _)| !keys.contains(&k.as_str()))
            .map(|(_, _, raw)| raw.as_str())
            .collect::<Vec<_>>()
            .join("&")
    }

    pub(crate) fn count_true(&self) -> bool {
        self.get("$count")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// A Graph error: status, machine code, message and extra response headers.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub headers: Vec<(String, String)>,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub(crate) fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "Request_BadRequest", message)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        ApiError::new(400, "Request_UnsupportedQuery", message)
    }

    pub(crate) fn not_found(id: &str) -> Self {
        ApiError::new(
            404,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    pub(crate) fn invalid_id(id: &str) -> Self {
        ApiError::bad_request(format!("Invalid object identifier '{id}'."))
    }

    pub(crate) fn segment(seg: &str) -> Self {
        ApiError::new(
            400,
            "BadRequest",
            format!("Resource not found for the segment '{seg}'."),
        )
    }

    pub(crate) fn method_not_allowed() -> Self {
        ApiError::new(
            405,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        )
    }

    pub(crate) fn forbidden() -> Self {
        ApiError::new(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    }

    /// The error every fault status and unexpected status maps to.
    pub(crate) fn for_status(status: u16, retry_after: Option<&str>) -> Self {
        let err = match status {
            400 => ApiError::bad_request("Bad request."),
            401 => ApiError::new(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure.",
            ),
            403 => ApiError::forbidden(),
            404 => ApiError::not_found("simulated"),
            410 => ApiError::new(
                410,
                "syncStateNotFound",
                "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
            ),
            429 => ApiError::new(429, "TooManyRequests", "Please retry again later."),
            500 => ApiError::new(500, "generalException", "An unexpected error occurred."),
            502 => ApiError::new(502, "badGateway", "Bad gateway."),
            503 => ApiError::new(
                503,
                "serviceNotAvailable",
                "The service is temporarily unavailable. Please retry after a delay.",
            ),
            504 => ApiError::new(504, "gatewayTimeout", "The gateway timed out."),
            509 => ApiError::new(509, "bandwidthLimitExceeded", "Bandwidth limit exceeded."),
            s => ApiError::new(s, "UnknownError", "Simulated failure."),
        };
        match retry_after {
            Some(r) => err.with_header("Retry-After", r),
            None => err,
        }
    }
}

/// The ids a response carries in `innerError` and in its headers.
#[derive(Debug, Clone)]
pub(crate) struct RequestIds {
    pub request_id: String,
    pub client_request_id: String,
}

impl RequestIds {
    pub(crate) fn new(client_request_id: Option<&str>) -> Self {
        let request_id = uuid::Uuid::new_v4().to_string();
        RequestIds {
            client_request_id: client_request_id.map_or_else(|| request_id.clone(), str::to_owned),
            request_id,
        }
    }
}

/// `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`;
/// a throttled answer also carries `innerError.code/message/status` as Microsoft's sample does.
pub(crate) fn error_body(err: &ApiError, ids: &RequestIds) -> String {
    let date = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
    let mut out = String::with_capacity(256);
    out.push_str("{\"error\":{\"code\":");
    push_json_str(&mut out, &err.code);
    out.push_str(",\"message\":");
    push_json_str(&mut out, &err.message);
    out.push_str(",\"innerError\":{");
    if err.status == 429 {
        out.push_str("\"code\":\"429\",\"message\":\"Please retry after\",\"status\":\"429\",");
    }
    out.push_str("\"date\":");
    push_json_str(&mut out, &date);
    out.push_str(",\"request-id\":");
    push_json_str(&mut out, &ids.request_id);
    out.push_str(",\"client-request-id\":");
    push_json_str(&mut out, &ids.client_request_id);
    out.push_str("}}}");
    out
}

// ---------------------------------------------------------------------------------------------
// Opaque tokens

pub(crate) fn encode_token<T: Serialize>(state: &T) -> String {
    let json = serde_json::to_vec(state).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

pub(crate) fn decode_token<T: DeserializeOwned>(token: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Position in a plain listing: after an object id (id order) or at an offset (sorted listings).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) enum ListCursor {
    #[serde(rename = "a")]
    After(uuid::Uuid),
    #[serde(rename = "o")]
    Offset(usize),
}

// ---------------------------------------------------------------------------------------------
// $select

/// Parses `$select` with a resolver from any spelling to the canonical property name.
/// Unknown names answer 400 like Graph ("Could not find a property named ...").
pub(crate) fn parse_select(
    raw: Option<&str>,
    type_name: &str,
    resolve: impl Fn(&str) -> Result<Option<&'static str>, ApiError>,
) -> Result<Option<Vec<&'static str>>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mut out: Vec<&'static str> = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match resolve(name)? {
            Some(p) => {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            None => {
                return Err(ApiError::bad_request(format!(
                    "Could not find a property named '{name}' on type '{type_name}'."
                )));
            }
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// `$top` for listings: 1..=999, otherwise 400.
pub(crate) fn parse_top(q: &Query) -> Result<Option<usize>, ApiError> {
    match q.get("$top") {
        None => Ok(None),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=999).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::bad_request(format!(
                "Invalid page size specified: '{v}'. Must be between 1 and 999 inclusive."
            ))),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// $filter

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Str(String),
    Bool(bool),
    Null,
    /// Unquoted numbers and dates, compared as text.
    Bare(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Cmp(&'static str, Op, Lit),
    StartsWith(&'static str, String),
    EndsWith(&'static str, String),
    In(&'static str, Vec<Lit>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, ApiError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            ',' => {
                chars.next();
                out.push(Tok::Comma);
            }
            '\'' => {
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            v.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => v.push(c),
                        None => {
                            return Err(ApiError::bad_request(
                                "Unterminated string literal in $filter.",
                            ));
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if matches!(c, ' ' | '\t' | '(' | ')' | ',' | '\'') {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

/// What a `$filter` may reference on one resource.
pub(crate) struct FilterSpec<'a> {
    /// Resource name in error messages: `User`, `Group`, `DirectoryObject`.
    pub resource: &'a str,
    pub props: &'a [&'static str],
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    spec: &'a FilterSpec<'a>,
}

fn syntax() -> ApiError {
    ApiError::bad_request("Invalid filter clause: syntax error.")
}

impl Parser<'_> {
    fn peek_word(&self) -> Option<String> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, t: Tok) -> Result<(), ApiError> {
        if self.next() == Some(t) {
            Ok(())
        } else {
            Err(syntax())
        }
    }

    fn or(&mut self) -> Result<Filter, ApiError> {
        let mut left = self.and()?;
        while self.peek_word().as_deref() == Some("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ApiError> {
        let mut left = self.unary()?;
        while self.peek_word().as_deref() == Some("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn prop(&self, name: &str) -> Result<&'static str, ApiError> {
        self.spec
            .props
            .iter()
            .copied()
            .find(|p| p.eq_ignore_ascii_case(name))
            .ok_or_else(|| unsupported_prop(name, self.spec.resource))
    }

    fn literal(&mut self) -> Result<Lit, ApiError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Word(w)) => Ok(match w.to_ascii_lowercase().as_str() {
                "true" => Lit::Bool(true),
                "false" => Lit::Bool(false),
                "null" => Lit::Null,
                _ => Lit::Bare(w),
            }),
            _ => Err(syntax()),
        }
    }

    fn unary(&mut self) -> Result<Filter, ApiError> {
        match self.next() {
            Some(Tok::Open) => {
                let f = self.or()?;
                self.expect(Tok::Close)?;
                Ok(f)
            }
            Some(Tok::Word(w)) => {
                let lw = w.to_ascii_lowercase();
                if lw == "not" {
                    return Ok(Filter::Not(Box::new(self.unary()?)));
                }
                if (lw == "startswith" || lw == "endswith")
                    && self.toks.get(self.pos) == Some(&Tok::Open)
                {
                    self.pos += 1;
                    let Some(Tok::Word(p)) = self.next() else {
                        return Err(syntax());
                    };
                    let prop = self.prop(&p)?;
                    self.expect(Tok::Comma)?;
                    let Some(Tok::Str(v)) = self.next() else {
                        return Err(syntax());
                    };
                    self.expect(Tok::Close)?;
                    return Ok(if lw == "startswith" {
                        Filter::StartsWith(prop, v)
                    } else {
                        Filter::EndsWith(prop, v)
                    });
                }
                let prop = self.prop(&w)?;
                let op = self.peek_word().ok_or_else(syntax)?;
                self.pos += 1;
                if op == "in" {
                    self.expect(Tok::Open)?;
                    let mut lits = vec![self.literal()?];
                    while self.toks.get(self.pos) == Some(&Tok::Comma) {
                        self.pos += 1;
                        lits.push(self.literal()?);
                    }
                    self.expect(Tok::Close)?;
                    return Ok(Filter::In(prop, lits));
                }
                let op = match op.as_str() {
                    "eq" => Op::Eq,
                    "ne" => Op::Ne,
                    "ge" => Op::Ge,
                    "le" => Op::Le,
                    "gt" => Op::Gt,
                    "lt" => Op::Lt,
                    _ => return Err(syntax()),
                };
                Ok(Filter::Cmp(prop, op, self.literal()?))
            }
            _ => Err(syntax()),
        }
    }
}

fn unsupported_prop(name: &str, resource: &str) -> ApiError {
    ApiError::unsupported(format!(
        "Unsupported or invalid query filter clause specified for property '{name}' of resource '{resource}'."
    ))
}

pub(crate) fn parse_filter(raw: &str, spec: &FilterSpec<'_>) -> Result<Filter, ApiError> {
    let mut p = Parser {
        toks: tokenize(raw)?,
        pos: 0,
        spec,
    };
    let f = p.or()?;
    if p.pos != p.toks.len() {
        return Err(syntax());
    }
    Ok(f)
}

impl Filter {
    /// The first operator that needs advanced query capabilities (ConsistencyLevel + $count).
    pub(crate) fn advanced_operator(&self) -> Option<&'static str> {
        match self {
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.advanced_operator().or_else(|| b.advanced_operator())
            }
            Filter::Not(_) => Some("not"),
            Filter::EndsWith(..) => Some("endsWith"),
            Filter::Cmp(_, Op::Ne, _) => Some("ne"),
            Filter::Cmp(_, _, Lit::Null) => Some("eq null"),
            Filter::Cmp(_, Op::Ge | Op::Le | Op::Gt | Op::Lt, _) => Some("range"),
            _ => None,
        }
    }

    /// Every property the filter references with the operator it uses.
    pub(crate) fn props(&self, out: &mut Vec<(&'static str, &'static str)>) {
        match self {
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.props(out);
                b.props(out);
            }
            Filter::Not(a) => a.props(out),
            Filter::Cmp(p, op, _) => out.push((p, if *op == Op::Eq { "eq" } else { "range" })),
            Filter::StartsWith(p, _) | Filter::EndsWith(p, _) => out.push((p, "startswith")),
            Filter::In(p, _) => out.push((p, "eq")),
        }
    }

    /// `id eq 'a' or id eq 'b' ...` → the ids; `None` for any other shape.
    pub(crate) fn id_list(&self) -> Option<Vec<String>> {
        match self {
            Filter::Or(a, b) => {
                let mut l = a.id_list()?;
                l.extend(b.id_list()?);
                Some(l)
            }
            Filter::Cmp("id", Op::Eq, Lit::Str(s)) => Some(vec![s.clone()]),
            Filter::In("id", lits) => lits
                .iter()
                .map(|l| match l {
                    Lit::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    pub(crate) fn eval<'v>(&self, get: &dyn Fn(&str) -> Option<Val<'v>>) -> bool {
        match self {
            Filter::And(a, b) => a.eval(get) && b.eval(get),
            Filter::Or(a, b) => a.eval(get) || b.eval(get),
            Filter::Not(a) => !a.eval(get),
            Filter::StartsWith(p, v) => {
                text(get(p)).is_some_and(|t| t.to_lowercase().starts_with(&v.to_lowercase()))
            }
            Filter::EndsWith(p, v) => {
                text(get(p)).is_some_and(|t| t.to_lowercase().ends_with(&v.to_lowercase()))
            }
            Filter::In(p, lits) => lits.iter().any(|l| compare(get(p), Op::Eq, l)),
            Filter::Cmp(p, op, lit) => compare(get(p), *op, lit),
        }
    }
}

fn text(v: Option<Val<'_>>) -> Option<String> {
    v.as_ref().and_then(|v| v.as_str()).map(str::to_owned)
}

fn compare(v: Option<Val<'_>>, op: Op, lit: &Lit) -> bool {
    let v = v.unwrap_or(Val::Null);
    let ord = match (&v, lit) {
        (Val::Null, Lit::Null) => Some(std::cmp::Ordering::Equal),
        (Val::Null, _) | (_, Lit::Null) => None,
        (Val::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Val::List(l), Lit::Str(s)) => l
            .iter()
            .any(|x| x.eq_ignore_ascii_case(s))
            .then_some(std::cmp::Ordering::Equal),
        (Val::Num(n), Lit::Bare(s)) => s.parse::<i64>().ok().map(|m| n.cmp(&m)),
        (_, Lit::Str(s) | Lit::Bare(s)) => {
            v.as_str().map(|t| t.to_lowercase().cmp(&s.to_lowercase()))
        }
        _ => None,
    };
    use std::cmp::Ordering::*;
    match (op, ord) {
        (Op::Eq, Some(Equal)) => true,
        (Op::Eq, _) => false,
        (Op::Ne, Some(Equal)) => false,
        (Op::Ne, _) => true,
        (Op::Ge, Some(o)) => o != Less,
        (Op::Le, Some(o)) => o != Greater,
        (Op::Gt, Some(o)) => o == Greater,
        (Op::Lt, Some(o)) => o == Less,
        (_, None) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// $search

/// `"displayName:Pr" OR "mail:x"`: clauses of property + term, tokenized prefix matching.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    clauses: Vec<(&'static str, String)>,
    any: bool,
}

pub(crate) fn parse_search(raw: &str, props: &[&'static str]) -> Result<Search, ApiError> {
    let mut clauses = Vec::new();
    let mut any = false;
    let mut rest = raw.trim();
    loop {
        let Some(body) = rest.strip_prefix('"') else {
            return Err(ApiError::unsupported(
                "Syntax error: $search clauses must be quoted, e.g. \"displayName:term\".",
            ));
        };
        let end = body
            .find('"')
            .ok_or_else(|| ApiError::unsupported("Syntax error: unterminated $search clause."))?;
        let clause = &body[..end];
        let (prop, term) = clause.split_once(':').ok_or_else(|| {
            ApiError::unsupported("Syntax error: a $search clause is \"property:term\".")
        })?;
        let prop = props
            .iter()
            .copied()
            .find(|p| p.eq_ignore_ascii_case(prop.trim()))
            .ok_or_else(|| {
                ApiError::unsupported(format!("Property '{prop}' is not searchable."))
            })?;
        clauses.push((prop, term.trim().to_lowercase()));
        rest = body[end + 1..].trim_start();
        if rest.is_empty() {
            break;
        }
        let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        match word.to_ascii_uppercase().as_str() {
            "OR" => any = true,
            "AND" => {}
            _ => return Err(ApiError::unsupported("Syntax error in $search.")),
        }
        rest = tail.trim_start();
    }
    Ok(Search { clauses, any })
}

impl Search {
    pub(crate) fn matches<'v>(&self, get: &dyn Fn(&str) -> Option<Val<'v>>) -> bool {
        let hit = |(prop, term): &(&'static str, String)| {
            let Some(value) = text(get(prop)) else {
                return false;
            };
            let value = value.to_lowercase();
            let tokens: Vec<&str> = value
                .split(|c: char| !c.is_alphanumeric())
                .filter(|t| !t.is_empty())
                .collect();
            term.split(|c: char| !c.is_alphanumeric())
                .filter(|t| !t.is_empty())
                .all(|w| tokens.iter().any(|t| t.starts_with(w)))
        };
        if self.any {
            self.clauses.iter().any(hit)
        } else {
            self.clauses.iter().all(hit)
        }
    }
}

/// `$orderby=prop [asc|desc]` restricted to the given properties.
pub(crate) fn parse_orderby(
    raw: &str,
    props: &[&'static str],
) -> Result<(&'static str, bool), ApiError> {
    let mut parts = raw.split_whitespace();
    let name = parts.next().unwrap_or_default();
    let desc = match parts.next().map(str::to_ascii_lowercase).as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(ApiError::bad_request("Invalid $orderby direction.")),
    };
    let prop = props
        .iter()
        .copied()
        .find(|p| p.eq_ignore_ascii_case(name))
        .ok_or_else(|| ApiError::unsupported(format!("Order by '{name}' is not supported.")))?;
    Ok((prop, desc))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SPEC: FilterSpec<'static> = FilterSpec {
        resource: "User",
        props: &["id", "displayName", "city", "accountEnabled"],
    };

    #[test]
    fn parses_or_of_ids() {
        let f = parse_filter("id eq 'a' or id eq 'b' or id eq 'c'", &SPEC).unwrap();
        assert_eq!(f.id_list().unwrap(), vec!["a", "b", "c"]);
    }

    #[test]
    fn startswith_with_space_and_null_compare() {
        let f = parse_filter("startswith(displayName, 'a') and city eq null", &SPEC).unwrap();
        assert_eq!(f.advanced_operator(), Some("eq null"));
        let get = |p: &str| match p {
            "displayName" => Some(Val::Str("Adele")),
            _ => Some(Val::Null),
        };
        assert!(f.eval(&get));
    }

    #[test]
    fn unknown_property_is_unsupported() {
        let e = parse_filter("createdDateTime ge 2021-11-01", &SPEC).unwrap_err();
        assert_eq!(e.code, "Request_UnsupportedQuery");
    }

    #[test]
    fn search_prefix_tokens() {
        let s = parse_search("\"displayName:Pr\"", &["displayName"]).unwrap();
        assert!(s.matches(&|_| Some(Val::Str("Joseph Price"))));
        assert!(!s.matches(&|_| Some(Val::Str("Adele Vance"))));
    }
}
