//! Member listings: paging with `$top` and `@odata.nextLink`, the user cast, transitive
//! members, soft-deleted users, malformed and unknown ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashSet};

use crate::support::{Env, ids};
use chrono::{TimeZone, Utc};
use graph_sim::{NewUser, SimOptions};

fn opts(users: usize) -> SimOptions {
    SimOptions {
        users,
        groups: 4,
        seed: 7,
        ..SimOptions::default()
    }
}

/// Direct members a listing must show: everything but soft-deleted users.
fn visible_members(env: &Env, group: &str) -> BTreeSet<String> {
    let live: HashSet<String> = env.ctl().users().into_iter().map(|u| u.id).collect();
    let deleted: HashSet<String> = env
        .ctl()
        .deleted_users()
        .into_iter()
        .map(|u| u.id)
        .collect();
    env.ctl()
        .group(group)
        .unwrap()
        .members
        .into_iter()
        .filter(|m| live.contains(m) || !deleted.contains(m))
        .collect()
}

fn assert_no_duplicates(list: &[String]) {
    let set: HashSet<&String> = list.iter().collect();
    assert_eq!(set.len(), list.len(), "a member appears on two pages");
}

#[tokio::test]
async fn pages_of_1_2_and_999_lose_and_duplicate_no_member() {
    let env = Env::start(opts(300)).await;
    for g in env.ctl().security_groups() {
        let expected = visible_members(&env, &g.id);
        for top in [1usize, 2, 999] {
            let pages = env
                .pages(&format!("/groups/{}/members?$select=id&$top={top}", g.id))
                .await;
            let got: Vec<String> = pages
                .iter()
                .flat_map(|p| ids(p["value"].as_array().unwrap()))
                .collect();
            assert_no_duplicates(&got);
            assert_eq!(
                got.iter().cloned().collect::<BTreeSet<_>>(),
                expected,
                "top={top}"
            );
            assert_eq!(
                pages.len(),
                expected.len().div_ceil(top).max(1),
                "top={top}"
            );
            for p in &pages[..pages.len() - 1] {
                assert_eq!(p["value"].as_array().unwrap().len(), top);
            }
        }
    }
}

#[tokio::test]
async fn default_page_is_100_and_the_server_page_size_caps_top() {
    let env = Env::start(opts(600)).await;
    let g = env.ctl().security_groups()[0].clone();
    assert!(g.members.len() > 100);
    let r = env.get(&format!("/groups/{}/members", g.id)).await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 100);

    let env = Env::start(SimOptions {
        page_size: 7,
        ..opts(100)
    })
    .await;
    let g = env.ctl().security_groups()[0].clone();
    let pages = env
        .pages(&format!("/groups/{}/members?$top=999", g.id))
        .await;
    assert!(pages.len() > 1);
    assert_eq!(pages[0]["value"].as_array().unwrap().len(), 7);
    let got: Vec<String> = pages
        .iter()
        .flat_map(|p| ids(p["value"].as_array().unwrap()))
        .collect();
    assert_no_duplicates(&got);
    assert_eq!(got.len(), visible_members(&env, &g.id).len());
}

#[tokio::test]
async fn next_link_is_absolute_on_the_sim_and_keeps_the_original_query() {
    let env = Env::start(opts(100)).await;
    let g = env.ctl().security_groups()[0].clone();
    let r = env
        .get(&format!("/groups/{}/members?$select=id,mail&$top=2", g.id))
        .await;
    let next = r.body["@odata.nextLink"].as_str().unwrap();
    let prefix = format!("{}/v1.0/groups/{}/members?", env.sim.base_url(), g.id);
    assert!(next.starts_with(&prefix), "{next}");
    assert!(
        next.contains("$select=id,mail") && next.contains("$top=2") && next.contains("$skiptoken=")
    );
    let r2 = env.get(next).await;
    assert_eq!(r2.status, 200);
    let item = &r2.body["value"][0];
    assert!(
        item.get("mail").is_some() && item.get("displayName").is_none(),
        "select carried over"
    );
    let last = env
        .pages(&format!("/groups/{}/members?$top=999", g.id))
        .await;
    assert!(
        last[0].get("@odata.nextLink").is_none(),
        "the last page has no nextLink"
    );
}

#[tokio::test]
async fn top_outside_1_to_999_is_a_bad_request() {
    let env = Env::small().await;
    let g = env.ctl().security_groups()[0].id.clone();
    for top in ["1000", "0", "abc"] {
        let r = env.get(&format!("/groups/{g}/members?$top={top}")).await;
        assert_eq!(r.status, 400, "$top={top}");
        assert_eq!(r.body["error"]["code"], "Request_BadRequest");
    }
}

#[tokio::test]
async fn members_include_other_object_types_and_the_user_cast_only_users() {
    let env = Env::small().await;
    let g = env.ctl().security_groups()[0].clone();
    let all = env.all(&format!("/groups/{}/members", g.id)).await;
    let types: HashSet<&str> = all
        .iter()
        .map(|v| v["@odata.type"].as_str().unwrap())
        .collect();
    for t in [
        "#microsoft.graph.user",
        "#microsoft.graph.group",
        "#microsoft.graph.device",
        "#microsoft.graph.orgContact",
    ] {
        assert!(types.contains(t), "{t} missing from {types:?}");
    }
    let users = env
        .all(&format!(
            "/groups/{}/members/microsoft.graph.user?$top=3",
            g.id
        ))
        .await;
    assert!(
        users
            .iter()
            .all(|v| v["@odata.type"] == "#microsoft.graph.user")
    );
    let expected = all
        .iter()
        .filter(|v| v["@odata.type"] == "#microsoft.graph.user")
        .count();
    assert_eq!(users.len(), expected);
    // The namespace's alias (`Alias="graph"` in Graph's CSDL), as the Python SDK sends it.
    let aliased = env
        .all(&format!("/groups/{}/members/graph.user?$top=3", g.id))
        .await;
    assert_eq!(aliased, users);
    let r = env
        .get(&format!(
            "/groups/{}/members/microsoft.graph.servicePrincipal",
            g.id
        ))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "Request_UnsupportedQuery");
}

#[tokio::test]
async fn transitive_members_flatten_nested_groups_dedupe_and_survive_cycles() {
    let env = Env::start(opts(200)).await;
    let groups = env.ctl().security_groups();
    let (parent, child) = (groups[0].clone(), groups[groups.len() - 1].clone());
    assert!(
        parent.members.contains(&child.id),
        "the generated tenant nests a group"
    );
    // A cycle: the parent also becomes a member of its child.
    env.ctl().add_member(&child.id, &parent.id).unwrap();
    let got = ids(&env
        .all(&format!("/groups/{}/transitiveMembers?$top=5", parent.id))
        .await);
    assert_no_duplicates(&got);
    let mut expected: BTreeSet<String> = visible_members(&env, &parent.id);
    expected.extend(visible_members(&env, &child.id));
    expected.remove(&parent.id);
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected);
    let users = env
        .all(&format!(
            "/groups/{}/transitiveMembers/microsoft.graph.user?$top=999",
            parent.id
        ))
        .await;
    assert!(
        users
            .iter()
            .all(|v| v["@odata.type"] == "#microsoft.graph.user")
    );
}

#[tokio::test]
async fn soft_deleted_users_leave_listings_and_come_back_when_restored() {
    let env = Env::small().await;
    let g = env.ctl().security_groups()[0].clone();
    let victim = g
        .members
        .iter()
        .find(|m| {
            env.ctl()
                .user(m)
                .is_some_and(|u| u.deleted_date_time.is_none())
        })
        .unwrap()
        .clone();
    env.ctl().delete_user(&victim).unwrap();
    let listed = ids(&env.all(&format!("/groups/{}/members", g.id)).await);
    assert!(!listed.contains(&victim));
    assert_eq!(env.get(&format!("/users/{victim}")).await.status, 404);
    let deleted = ids(&env
        .all("/directory/deletedItems/microsoft.graph.user")
        .await);
    assert!(deleted.contains(&victim));
    env.ctl().restore_user(&victim).unwrap();
    let listed = ids(&env.all(&format!("/groups/{}/members", g.id)).await);
    assert!(
        listed.contains(&victim),
        "restored users keep their memberships"
    );
    assert_eq!(env.get(&format!("/users/{victim}")).await.status, 200);
}

#[tokio::test]
async fn members_changing_between_pages_never_duplicate_a_stable_member() {
    let env = Env::start(opts(200)).await;
    let g = env.ctl().security_groups()[0].clone();
    let r = env
        .get(&format!("/groups/{}/members?$select=id&$top=3", g.id))
        .await;
    let mut seen = ids(r.body["value"].as_array().unwrap());
    let not_yet: Vec<String> = g
        .members
        .iter()
        .filter(|m| !seen.contains(m))
        .cloned()
        .collect();
    env.ctl()
        .remove_member(&g.id, &not_yet[not_yet.len() / 2])
        .unwrap();
    let newcomer = env.ctl().add_user(NewUser {
        user_principal_name: "new.comer@contoso.onmicrosoft.com".into(),
        display_name: "New Comer".into(),
        ..NewUser::default()
    });
    env.ctl().add_member(&g.id, &newcomer.id).unwrap();
    let mut next = r.body["@odata.nextLink"].as_str().map(str::to_owned);
    while let Some(url) = next {
        let r = env.get(&url).await;
        seen.extend(ids(r.body["value"].as_array().unwrap()));
        next = r.body["@odata.nextLink"].as_str().map(str::to_owned);
    }
    assert_no_duplicates(&seen);
    for m in &not_yet {
        if *m != not_yet[not_yet.len() / 2]
            && env
                .ctl()
                .user(m)
                .is_none_or(|u| u.deleted_date_time.is_none())
        {
            assert!(seen.contains(m), "stable member {m} lost");
        }
    }
}

#[tokio::test]
async fn malformed_group_id_is_400_and_unknown_id_is_404() {
    let env = Env::small().await;
    let r = env.get("/groups/not-a-guid/members").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "Request_BadRequest");
    let r = env.get("/groups/not-a-guid").await;
    assert_eq!(r.status, 400);
    let unknown = "6b2a3c1d-0000-4000-8000-000000000000";
    for path in [
        format!("/groups/{unknown}"),
        format!("/groups/{unknown}/members"),
        format!("/groups/{unknown}/transitiveMembers"),
        format!("/users/{unknown}"),
    ] {
        let r = env.get(&path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.body["error"]["code"], "Request_ResourceNotFound");
        assert!(r.body["error"]["innerError"]["request-id"].is_string());
        assert!(r.body["error"]["innerError"]["date"].is_string());
    }
}

#[tokio::test]
async fn error_bodies_echo_the_client_request_id() {
    let env = Env::small().await;
    let r = env
        .get_with(
            "/groups/6b2a3c1d-0000-4000-8000-000000000000",
            &[("client-request-id", "11112222-3333-4444-5555-666677778888")],
        )
        .await;
    assert_eq!(
        r.body["error"]["innerError"]["client-request-id"],
        "11112222-3333-4444-5555-666677778888"
    );
    assert_eq!(
        r.header("client-request-id").as_deref(),
        Some("11112222-3333-4444-5555-666677778888")
    );
}

#[tokio::test]
async fn responses_carry_resource_unit_costs() {
    let env = Env::small().await;
    let g = env.ctl().security_groups()[0].id.clone();
    let cost = |r: &crate::support::Resp| {
        r.header("x-ms-resource-unit")
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(cost(&env.get(&format!("/groups/{g}/members")).await), 3);
    assert_eq!(
        cost(
            &env.get(&format!("/groups/{g}/members?$select=id&$top=999"))
                .await
        ),
        2
    );
    assert_eq!(
        cost(&env.get(&format!("/groups/{g}/transitiveMembers")).await),
        5
    );
    assert_eq!(cost(&env.get(&format!("/groups/{g}")).await), 1);
}

#[tokio::test]
async fn groups_created_at_runtime_are_served() {
    let env = Env::small().await;
    let created = Utc.with_ymd_and_hms(2024, 5, 1, 8, 0, 0).unwrap();
    let g = env.ctl().create_group("SG-Neu", created);
    let u = env.ctl().users()[0].clone();
    env.ctl().add_member(&g.id, &u.id).unwrap();
    let r = env.get(&format!("/groups/{}", g.id)).await;
    assert_eq!(r.body["createdDateTime"], "2024-05-01T08:00:00Z");
    assert_eq!(r.body["securityEnabled"], true);
    assert_eq!(
        ids(&env.all(&format!("/groups/{}/members", g.id)).await),
        vec![u.id]
    );
}
