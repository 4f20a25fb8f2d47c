//! users/delta and groups/delta: initial rounds, each change seen exactly once by the next
//! round, `$select` tracking, `$filter` by id, `$deltatoken=latest`, token expiry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};

use crate::support::{Env, ids};
use graph_sim::{NewUser, Sim, SimOptions, UserPatch};
use serde_json::Value;

fn opts(delta_page_size: usize) -> SimOptions {
    SimOptions {
        users: 60,
        groups: 5,
        seed: 3,
        delta_page_size,
        ..SimOptions::default()
    }
}

fn by_id(items: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut m: HashMap<String, Vec<Value>> = HashMap::new();
    for v in items {
        m.entry(v["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(v.clone());
    }
    m
}

fn removed_reason(v: &Value) -> Option<&str> {
    v["@removed"]["reason"].as_str()
}

const USERS: &str = "/users/delta?$select=displayName,mail,accountEnabled,jobTitle";

#[tokio::test]
async fn initial_users_round_lists_everyone_once_then_nothing() {
    for page in [2, 7, 200] {
        let env = Env::start(opts(page)).await;
        let (items, pages, delta) = env.delta_round(USERS).await;
        let m = by_id(&items);
        assert!(
            m.values().all(|v| v.len() == 1),
            "page size {page}: an object twice"
        );
        let live: BTreeSet<String> = env.ctl().users().into_iter().map(|u| u.id).collect();
        let soft: BTreeSet<String> = env
            .ctl()
            .deleted_users()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert!(
            !soft.is_empty(),
            "the generated tenant has soft-deleted users"
        );
        for id in &live {
            assert!(m[id][0].get("@removed").is_none());
        }
        for id in &soft {
            assert_eq!(removed_reason(&m[id][0]), Some("changed"));
        }
        assert_eq!(m.len(), live.len() + soft.len());
        assert_eq!(pages.len(), (live.len() + soft.len()).div_ceil(page));
        assert!(delta.contains("$deltatoken="));
        let (items, pages, _) = env.delta_round(&delta).await;
        assert!(items.is_empty());
        assert_eq!(pages.len(), 1);
    }
}

#[tokio::test]
async fn each_user_change_is_seen_exactly_once_by_the_next_round() {
    let env = Env::start(opts(3)).await;
    let (_, _, delta) = env.delta_round(USERS).await;
    let users = env.ctl().users();
    let ctl = env.ctl();
    let added = ctl.add_user(NewUser {
        user_principal_name: "nora.nilsen@contoso.onmicrosoft.com".into(),
        display_name: "Nora Nilsen".into(),
        mail: Some("Nora.Nilsen@contoso.com".into()),
        ..NewUser::default()
    });
    let changed = &users[0].id;
    ctl.update_user(
        changed,
        UserPatch {
            job_title: Some(Some("Head of Déjà Vu".into())),
            ..UserPatch::default()
        },
    )
    .unwrap();
    // Two changes of one object merge into its latest state.
    ctl.update_user(
        changed,
        UserPatch {
            display_name: Some(Some("Renamed Twice".into())),
            ..UserPatch::default()
        },
    )
    .unwrap();
    let disabled = &users[1].id;
    ctl.disable_user(disabled).unwrap();
    let soft = &users[2].id;
    ctl.delete_user(soft).unwrap();
    let hard = &users[3].id;
    ctl.hard_delete_user(hard).unwrap();
    let restored = ctl
        .deleted_users()
        .into_iter()
        .find(|u| u.id != *soft)
        .unwrap()
        .id;
    ctl.restore_user(&restored).unwrap();

    let (items, pages, delta) = env.delta_round(&delta).await;
    assert!(pages.len() > 1, "small pages split the round");
    let m = by_id(&items);
    assert!(m.values().all(|v| v.len() == 1), "{m:#?}");
    assert_eq!(m.len(), 6);
    assert_eq!(m[&added.id][0]["displayName"], "Nora Nilsen");
    assert_eq!(m[changed][0]["displayName"], "Renamed Twice");
    assert_eq!(m[changed][0]["jobTitle"], "Head of Déjà Vu");
    assert_eq!(m[disabled][0]["accountEnabled"], false);
    assert_eq!(removed_reason(&m[soft][0]), Some("changed"));
    assert_eq!(removed_reason(&m[hard][0]), Some("deleted"));
    assert!(
        m[&restored][0].get("@removed").is_none(),
        "a restored user comes back as new"
    );
    assert!(
        m[&restored][0]["accountEnabled"].is_boolean(),
        "with all selected properties"
    );

    let (items, _, _) = env.delta_round(&delta).await;
    assert!(items.is_empty(), "nothing is replayed: {items:#?}");
}

#[tokio::test]
async fn users_select_limits_what_is_tracked_and_returned() {
    let env = Env::small().await;
    let (_, _, delta) = env.delta_round("/users/delta?$select=displayName").await;
    let u = env.ctl().users()[5].id.clone();
    env.ctl()
        .update_user(
            &u,
            UserPatch {
                department: Some(Some("Invisible".into())),
                ..UserPatch::default()
            },
        )
        .unwrap();
    let (items, _, delta) = env.delta_round(&delta).await;
    assert!(
        items.is_empty(),
        "a change of an unselected property does not show"
    );
    env.ctl()
        .update_user(
            &u,
            UserPatch {
                display_name: Some(Some("Visible Änderung".into())),
                ..UserPatch::default()
            },
        )
        .unwrap();
    let (items, _, _) = env.delta_round(&delta).await;
    assert_eq!(items.len(), 1);
    let keys: BTreeSet<&str> = items[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["id", "displayName"]));
    assert_eq!(items[0]["displayName"], "Visible Änderung");
}

#[tokio::test]
async fn prefer_minimal_returns_only_changed_properties() {
    let env = Env::small().await;
    let (_, _, delta) = env.delta_round(USERS).await;
    let u = env.ctl().users()[0].id.clone();
    env.ctl()
        .update_user(
            &u,
            UserPatch {
                mail: Some(None),
                ..UserPatch::default()
            },
        )
        .unwrap();
    let r = env.get_with(&delta, &[("Prefer", "return=minimal")]).await;
    let item = &r.body["value"][0];
    let keys: BTreeSet<&str> = item
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["id", "mail"]));
    assert!(
        item["mail"].is_null(),
        "a property set to null is sent as null"
    );
}

const GROUPS: &str = "/groups/delta?$select=displayName,members";

fn member_changes(items: &[Value], group: &str) -> Vec<(String, bool)> {
    items
        .iter()
        .filter(|v| v["id"] == group)
        .flat_map(|v| v["members@delta"].as_array().cloned().unwrap_or_default())
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m.get("@removed").is_none(),
            )
        })
        .collect()
}

#[tokio::test]
async fn initial_groups_round_lists_every_direct_member_once() {
    for page in [2, 5, 200] {
        let env = Env::start(opts(page)).await;
        let (items, _, _) = env.delta_round(GROUPS).await;
        for g in env.ctl().groups() {
            let got: Vec<String> = member_changes(&items, &g.id)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let set: BTreeSet<String> = got.iter().cloned().collect();
            assert_eq!(set.len(), got.len(), "page {page}: duplicate member");
            assert_eq!(
                set,
                g.members.iter().cloned().collect::<BTreeSet<_>>(),
                "page {page}"
            );
        }
    }
}

#[tokio::test]
async fn each_membership_change_is_seen_exactly_once_by_the_next_round() {
    let env = Env::start(opts(4)).await;
    let (_, _, delta) = env.delta_round(GROUPS).await;
    let ctl = env.ctl();
    let groups = ctl.security_groups();
    let g = groups[1].clone();
    let users = ctl.users();
    let outsider = users
        .iter()
        .find(|u| !g.members.contains(&u.id))
        .unwrap()
        .id
        .clone();
    let member_users: Vec<String> = g
        .members
        .iter()
        .filter(|m| ctl.user(m).is_some_and(|u| u.deleted_date_time.is_none()))
        .cloned()
        .collect();
    let (removed, soft, disabled, hard) = (
        member_users[0].clone(),
        member_users[1].clone(),
        member_users[2].clone(),
        member_users[3].clone(),
    );
    ctl.add_member(&g.id, &outsider).unwrap();
    ctl.remove_member(&g.id, &removed).unwrap();
    ctl.delete_user(&soft).unwrap();
    ctl.disable_user(&disabled).unwrap();
    ctl.hard_delete_user(&hard).unwrap();
    // Added and removed again inside the round: no net change, not reported.
    let flicker = users
        .iter()
        .rev()
        .find(|u| !g.members.contains(&u.id) && u.id != outsider)
        .unwrap();
    ctl.add_member(&g.id, &flicker.id).unwrap();
    ctl.remove_member(&g.id, &flicker.id).unwrap();

    let (items, _, delta) = env.delta_round(&delta).await;
    let changes = member_changes(&items, &g.id);
    let mut expected = vec![
        (outsider.clone(), true),
        (removed.clone(), false),
        (hard.clone(), false),
    ];
    expected.sort();
    let mut got = changes.clone();
    got.sort();
    assert_eq!(
        got, expected,
        "soft delete and disable keep the membership in group delta"
    );
    // The hard-deleted user also leaves every other group it was in, once each.
    for other in groups
        .iter()
        .filter(|x| x.id != g.id && x.members.contains(&hard))
    {
        assert_eq!(
            member_changes(&items, &other.id),
            vec![(hard.clone(), false)]
        );
    }
    // Groups without changes don't appear.
    let touched: BTreeSet<&str> = items.iter().map(|v| v["id"].as_str().unwrap()).collect();
    for x in &groups {
        let hit = x.id == g.id || x.members.contains(&hard);
        assert_eq!(touched.contains(x.id.as_str()), hit, "{}", x.display_name);
    }
    let (items, _, _) = env.delta_round(&delta).await;
    assert!(items.is_empty());
}

#[tokio::test]
async fn a_large_groups_member_changes_split_across_pages_and_merge_by_id() {
    let env = Env::start(SimOptions {
        users: 400,
        groups: 3,
        delta_page_size: 10,
        ..SimOptions::default()
    })
    .await;
    let (_, _, delta) = env
        .delta_round("/groups/delta?$select=members&$deltatoken=latest")
        .await;
    let g = env.ctl().create_group("SG-Big", chrono::Utc::now());
    let users: Vec<String> = env
        .ctl()
        .users()
        .into_iter()
        .take(95)
        .map(|u| u.id)
        .collect();
    for u in &users {
        env.ctl().add_member(&g.id, u).unwrap();
    }
    let (items, pages, _) = env.delta_round(&delta).await;
    assert!(pages.len() >= 10);
    assert!(items.iter().filter(|v| v["id"] == g.id.as_str()).count() >= 10);
    let got: BTreeSet<String> = member_changes(&items, &g.id)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, users.into_iter().collect());
}

#[tokio::test]
async fn filter_limits_groups_delta_to_named_groups() {
    let env = Env::small().await;
    let gs = env.ctl().security_groups();
    let url = format!(
        "/groups/delta?$filter=id eq '{}' or id eq '{}'&$select=displayName,members",
        gs[0].id, gs[2].id
    );
    let (items, _, delta) = env.delta_round(&url).await;
    let seen: BTreeSet<String> = ids(&items).into_iter().collect();
    assert_eq!(seen, BTreeSet::from([gs[0].id.clone(), gs[2].id.clone()]));
    let u = env
        .ctl()
        .users()
        .into_iter()
        .find(|u| !gs[1].members.contains(&u.id))
        .unwrap();
    env.ctl().add_member(&gs[1].id, &u.id).unwrap();
    let (items, _, _) = env.delta_round(&delta).await;
    assert!(items.is_empty(), "the filter stays in the token");
}

#[tokio::test]
async fn delta_rejects_more_than_50_ids_top_and_malformed_ids() {
    let env = Env::small().await;
    let many: Vec<String> = (0..51u128)
        .map(|i| format!("id eq '{}'", uuid::Uuid::from_u128(i + 1)))
        .collect();
    let r = env
        .get(&format!("/groups/delta?$filter={}", many.join(" or ")))
        .await;
    assert_eq!(r.status, 400);
    let r = env.get("/users/delta?$top=10").await;
    assert_eq!(r.status, 400);
    let r = env.get("/groups/delta?$filter=id eq 'nope'").await;
    assert_eq!(r.status, 400);
    let fifty: Vec<String> = (0..50u128)
        .map(|i| format!("id eq '{}'", uuid::Uuid::from_u128(i + 1)))
        .collect();
    let r = env
        .get(&format!("/groups/delta?$filter={}", fifty.join(" or ")))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn deltatoken_latest_starts_from_now() {
    let env = Env::small().await;
    let r = env.get("/users/delta?$deltatoken=latest").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["value"], serde_json::json!([]));
    let delta = r.body["@odata.deltaLink"].as_str().unwrap().to_owned();
    let u = env.ctl().users()[9].id.clone();
    env.ctl().disable_user(&u).unwrap();
    let (items, _, _) = env.delta_round(&delta).await;
    assert_eq!(ids(&items), vec![u]);
}

#[tokio::test]
async fn changes_during_an_initial_round_are_replayed_in_the_next() {
    let env = Env::start(opts(5)).await;
    let r = env.get(USERS).await;
    let mut next = r.body["@odata.nextLink"].as_str().unwrap().to_owned();
    let late = env.ctl().users().last().unwrap().id.clone();
    env.ctl().disable_user(&late).unwrap();
    let delta = loop {
        let r = env.get(&next).await;
        match r.body["@odata.nextLink"].as_str() {
            Some(n) => next = n.to_owned(),
            None => break r.body["@odata.deltaLink"].as_str().unwrap().to_owned(),
        }
    };
    let (items, _, _) = env.delta_round(&delta).await;
    assert_eq!(ids(&items), vec![late]);
}

#[tokio::test]
async fn expired_delta_tokens_answer_400_sync_state_not_found_by_default() {
    let env = Env::start(opts(5)).await;
    let r = env.get(USERS).await;
    let next = r.body["@odata.nextLink"].as_str().unwrap().to_owned();
    let (_, _, delta) = env.delta_round(USERS).await;
    env.ctl().expire_delta_tokens();
    for link in [&next, &delta] {
        let r = env.get(link).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.body["error"]["code"], "syncStateNotFound");
    }
    // A fresh initial round works again and gives a working deltaLink.
    let (_, _, delta) = env.delta_round(USERS).await;
    assert_eq!(env.get(&delta).await.status, 200);
}

#[tokio::test]
async fn expired_delta_tokens_can_answer_410_gone_with_a_location() {
    let env = Env::small().await;
    let (_, _, delta) = env.delta_round(GROUPS).await;
    env.ctl().expire_delta_tokens_with(410);
    let r = env.get(&delta).await;
    assert_eq!(r.status, 410);
    assert_eq!(r.body["error"]["code"], "syncStateNotFound");
    let location = r.header("Location").unwrap();
    assert!(location.starts_with(&format!("{}/v1.0/groups/delta?", env.sim.base_url())));
    let (items, _, _) = env.delta_round(&location).await;
    assert!(!items.is_empty(), "the Location restarts a full round");
}

#[tokio::test]
async fn a_delta_token_of_another_simulator_is_not_found() {
    let env = Env::small().await;
    let (_, _, delta) = env.delta_round(USERS).await;
    let other = Sim::start(SimOptions::default()).await.unwrap();
    let token = delta.split("$deltatoken=").nth(1).unwrap();
    let foreign = format!("{}/v1.0/users/delta?$deltatoken={token}", other.base_url());
    let env2 = Env {
        token: {
            let r = crate::support::token_request(
                &env.http,
                &other.base_url(),
                "contoso.onmicrosoft.com",
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &SimOptions::default().client_id),
                    ("client_secret", &SimOptions::default().client_secret),
                    ("scope", crate::support::SCOPE),
                ],
            )
            .await;
            r.body["access_token"].as_str().unwrap().to_owned()
        },
        http: env.http.clone(),
        sim: other,
    };
    let r = env2.get(&foreign).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "syncStateNotFound");
    let r = env
        .get(&format!(
            "{}/v1.0/users/delta?$deltatoken=garbage!!",
            env.sim.base_url()
        ))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn group_property_changes_are_tracked_only_when_selected() {
    let env = Env::small().await;
    let g = env.ctl().security_groups()[0].id.clone();
    let (_, _, members_only) = env.delta_round("/groups/delta?$select=members").await;
    let (_, _, names) = env.delta_round("/groups/delta?$select=displayName").await;
    env.ctl()
        .update_group(
            &g,
            graph_sim::GroupPatch {
                display_name: Some("SG-Umbenannt".into()),
                description: None,
            },
        )
        .unwrap();
    let (items, _, _) = env.delta_round(&members_only).await;
    assert!(items.is_empty());
    let (items, _, _) = env.delta_round(&names).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["displayName"], "SG-Umbenannt");
    assert!(items[0].get("members@delta").is_none());
}

#[tokio::test]
async fn a_deleted_group_is_reported_removed_and_leaves_its_parents() {
    let env = Env::small().await;
    let gs = env.ctl().security_groups();
    let (parent, child) = (gs[0].id.clone(), gs[gs.len() - 1].id.clone());
    let (_, _, delta) = env.delta_round(GROUPS).await;
    env.ctl().delete_group(&child).unwrap();
    let (items, _, _) = env.delta_round(&delta).await;
    let m = by_id(&items);
    assert_eq!(removed_reason(&m[&child][0]), Some("deleted"));
    assert_eq!(
        member_changes(&items, &parent),
        vec![(child.clone(), false)]
    );
    assert_eq!(env.get(&format!("/groups/{child}")).await.status, 404);
}
