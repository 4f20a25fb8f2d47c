//! `entra-sync check`: tests every connection the config implies — a token per tenant, every
//! rule's group, one page of its members with the mapped fields — and says OK or FAIL with the
//! reason for each. Reads only; never touches the store.

use std::sync::Arc;

use entra_sync_core::ObjectId;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::graph::wire::{Member, USER_SELECT};
use crate::graph::{GraphClient, fetch};
use entra_sync_core::directory::MemberType;

#[derive(Debug, Clone)]
pub struct CheckLine {
    pub ok: bool,
    pub subject: String,
    pub detail: String,
}

impl CheckLine {
    fn ok(subject: String, detail: String) -> CheckLine {
        CheckLine {
            ok: true,
            subject,
            detail,
        }
    }

    fn fail(subject: String, detail: impl ToString) -> CheckLine {
        CheckLine {
            ok: false,
            subject,
            detail: detail.to_string(),
        }
    }
}

pub async fn run(config: &Config) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    for tenant in &config.tenants {
        let subject = format!("tenant \"{}\" sign-in", tenant.name);
        let client = match GraphClient::new(tenant, &config.sync, Arc::new(SystemClock)) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                lines.push(CheckLine::fail(subject, e));
                continue;
            }
        };
        match client.sign_in().await {
            Ok(()) => lines.push(CheckLine::ok(
                subject,
                format!("token from {}", tenant.authority),
            )),
            Err(e) => {
                lines.push(CheckLine::fail(subject, e));
                continue;
            }
        }
        let groups: Vec<ObjectId> = config.rules_of(&tenant.name).map(|r| r.group_id).collect();
        // Display names, read for all groups at once; when that fails, group by group, so
        // each line says which group is at fault and the readable ones still say OK.
        let infos = fetch::group_infos(&client, &groups)
            .await
            .unwrap_or_default();
        for group in &groups {
            let subject = format!("tenant \"{}\" group {group}", tenant.name);
            let info = match infos.get(group) {
                Some(info) => Some(info.clone()),
                None => match fetch::group_infos(&client, std::slice::from_ref(group)).await {
                    Ok(mut one) => one.remove(group),
                    Err(e) => {
                        lines.push(CheckLine::fail(subject, e));
                        continue;
                    }
                },
            };
            let name = info
                .and_then(|g| g.display_name)
                .map(|n| format!("\"{n}\" "))
                .unwrap_or_default();
            let url = client.url(&format!(
                "/groups/{group}/members?$select={USER_SELECT}&$top=5"
            ));
            match client
                .get_page::<Member>(&url, &format!("members of group {group}"))
                .await
            {
                Ok(page) => {
                    let users: Vec<_> = page
                        .value
                        .into_iter()
                        .filter(|m| m.kind() == MemberType::User)
                        .filter_map(|m| m.into_user().ok().flatten())
                        .collect();
                    if fetch::lacks_user_read_all(&users) {
                        lines.push(CheckLine::fail(subject, format!(
                                "{name}members come back without properties; grant User.Read.All (Application) with admin consent"
                            )));
                    } else {
                        lines.push(CheckLine::ok(subject, format!("{name}readable")));
                    }
                }
                Err(e) => lines.push(CheckLine::fail(subject, e)),
            }
        }
    }
    lines
}
