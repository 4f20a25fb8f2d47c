//! Shared helpers for the graph-sim integration tests: a started simulator with a token, and
//! small HTTP helpers that follow nextLinks and delta rounds.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use graph_sim::{Sim, SimControl, SimOptions};
use reqwest::header::HeaderMap;
use serde_json::Value;

pub const SCOPE: &str = "https://graph.microsoft.com/.default";

pub struct Env {
    pub sim: Sim,
    pub http: reqwest::Client,
    pub token: String,
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn token_request(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    form: &[(&str, &str)],
) -> Resp {
    let r = http
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    into_resp(r).await
}

pub async fn into_resp(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        text,
    }
}

impl Env {
    pub async fn start(opts: SimOptions) -> Env {
        let sim = Sim::start(opts.clone()).await.unwrap();
        let http = client();
        let r = token_request(
            &http,
            &sim.base_url(),
            &opts.tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &opts.client_id),
                ("client_secret", &opts.client_secret),
                ("scope", SCOPE),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let token = r.body["access_token"].as_str().unwrap().to_owned();
        Env { sim, http, token }
    }

    pub async fn small() -> Env {
        Env::start(SimOptions::default()).await
    }

    pub fn ctl(&self) -> SimControl {
        self.sim.control()
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}/v1.0{path}", self.sim.base_url())
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.get_with(path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut rb = self.http.get(self.url(path)).bearer_auth(&self.token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        into_resp(rb.send().await.unwrap()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        into_resp(r).await
    }

    /// Follows nextLinks; returns every page body.
    pub async fn pages(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = Some(self.url(path));
        while let Some(url) = next {
            let r = self.get(&url).await;
            assert_eq!(r.status, 200, "{url}: {}", r.text);
            next = r.body["@odata.nextLink"].as_str().map(str::to_owned);
            out.push(r.body);
            assert!(out.len() < 100_000, "runaway paging");
        }
        out
    }

    /// All `value` items over every page.
    pub async fn all(&self, path: &str) -> Vec<Value> {
        self.pages(path)
            .await
            .into_iter()
            .flat_map(|p| p["value"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// One full delta round from `url`: (items of every page, pages, deltaLink).
    pub async fn delta_round(&self, url: &str) -> (Vec<Value>, Vec<Value>, String) {
        let mut items = Vec::new();
        let mut pages = Vec::new();
        let mut next = self.url(url);
        loop {
            let r = self.get(&next).await;
            assert_eq!(r.status, 200, "{next}: {}", r.text);
            items.extend(r.body["value"].as_array().cloned().unwrap_or_default());
            let body = r.body;
            let n = body["@odata.nextLink"].as_str().map(str::to_owned);
            let d = body["@odata.deltaLink"].as_str().map(str::to_owned);
            pages.push(body);
            assert!(pages.len() < 100_000, "runaway delta");
            match (n, d) {
                (Some(n), None) => next = n,
                (None, Some(d)) => return (items, pages, d),
                other => {
                    panic!("a delta page must carry exactly one of nextLink/deltaLink: {other:?}")
                }
            }
        }
    }
}

pub fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}
