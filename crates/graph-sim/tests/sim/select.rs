//! `$select` and default property sets of users, groups and members.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use crate::support::Env;
use graph_sim::UserPatch;
use serde_json::Value;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

const DEFAULT_USER: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];

#[tokio::test]
async fn without_select_users_carry_graphs_default_set_only() {
    let env = Env::small().await;
    let g = env.ctl().security_groups()[0].id.clone();
    let members = env
        .all(&format!("/groups/{g}/members/microsoft.graph.user"))
        .await;
    let mut expected = set(DEFAULT_USER);
    expected.insert("@odata.type".into());
    for m in &members {
        assert_eq!(keys(m), expected);
    }
    let u = env.ctl().users()[0].clone();
    let r = env.get(&format!("/users/{}", u.id)).await;
    let mut expected = set(DEFAULT_USER);
    expected.insert("@odata.context".into());
    assert_eq!(keys(&r.body), expected);
}

#[tokio::test]
async fn select_returns_only_the_selected_properties_plus_id_and_type() {
    let env = Env::small().await;
    let g = env.ctl().security_groups()[0].id.clone();
    let members = env
        .all(&format!(
            "/groups/{g}/members/microsoft.graph.user?$select=mail,accountEnabled,userType,department,createdDateTime,otherMails"
        ))
        .await;
    let expected = set(&[
        "@odata.type",
        "id",
        "mail",
        "accountEnabled",
        "userType",
        "department",
        "createdDateTime",
        "otherMails",
    ]);
    assert!(!members.is_empty());
    for m in &members {
        assert_eq!(keys(m), expected);
        assert!(m["accountEnabled"].is_boolean());
        assert!(m["otherMails"].is_array());
    }
    let r = env.get(&format!("/groups/{g}/members?$select=id")).await;
    for m in r.body["value"].as_array().unwrap() {
        assert_eq!(keys(m), set(&["@odata.type", "id"]));
    }
}

#[tokio::test]
async fn selected_but_unset_properties_are_null_and_empty_phones_an_empty_list() {
    let env = Env::small().await;
    let u = env.ctl().users()[0].id.clone();
    env.ctl()
        .update_user(
            &u,
            UserPatch {
                mail: Some(None),
                job_title: Some(None),
                business_phones: Some(vec![]),
                ..UserPatch::default()
            },
        )
        .unwrap();
    let r = env
        .get(&format!(
            "/users/{u}?$select=mail,jobTitle,businessPhones,employeeId,faxNumber"
        ))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body["mail"].is_null() && r.body["jobTitle"].is_null());
    assert_eq!(r.body["businessPhones"], serde_json::json!([]));
    assert!(
        r.body.get("faxNumber").is_some(),
        "real but unmodelled properties are null"
    );
    assert_eq!(
        r.body["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users(mail,jobTitle,businessPhones,employeeId,faxNumber)/$entity"
    );
}

#[tokio::test]
async fn property_names_are_case_insensitive_and_unknown_ones_are_rejected() {
    let env = Env::small().await;
    let u = env.ctl().users()[0].id.clone();
    let r = env
        .get(&format!("/users/{u}?$select=ACCOUNTENABLED,DisplayName"))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body["accountEnabled"].is_boolean() && r.body["displayName"].is_string());
    let r = env
        .get(&format!("/users/{u}?$select=displayName,shoeSize"))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "Request_BadRequest");
    let r = env.get(&format!("/users/{u}?$select=skills")).await;
    assert_eq!(r.status, 501);
    let g = env.ctl().security_groups()[0].id.clone();
    let r = env
        .get(&format!(
            "/groups/{g}?$select=displayName,securityEnabled,createdDateTime"
        ))
        .await;
    assert_eq!(
        keys(&r.body),
        set(&[
            "@odata.context",
            "id",
            "displayName",
            "securityEnabled",
            "createdDateTime"
        ])
    );
}

#[tokio::test]
async fn guests_are_found_by_percent_encoded_upn() {
    let env = Env::small().await;
    let guest = env
        .ctl()
        .users()
        .into_iter()
        .find(|u| u.is_external())
        .unwrap();
    let encoded = guest.user_principal_name.replace('#', "%23");
    let r = env
        .get(&format!("/users/{encoded}?$select=id,userType"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["id"], guest.id.as_str());
    assert_eq!(r.body["userType"], "Guest");
    let r = env
        .get(&format!("/users/{}", guest.user_principal_name))
        .await;
    assert_eq!(r.status, 404, "an unencoded # cuts the UPN");
}

#[tokio::test]
async fn member_listings_with_select_keep_non_user_members_shapes() {
    let env = Env::small().await;
    let g = env.ctl().security_groups()[0].id.clone();
    let all = env
        .all(&format!("/groups/{g}/members?$select=id,displayName,mail"))
        .await;
    let device = all
        .iter()
        .find(|v| v["@odata.type"] == "#microsoft.graph.device")
        .unwrap();
    assert_eq!(keys(device), set(&["@odata.type", "id", "displayName"]));
    let group = all
        .iter()
        .find(|v| v["@odata.type"] == "#microsoft.graph.group")
        .unwrap();
    assert_eq!(
        keys(group),
        set(&["@odata.type", "id", "displayName", "mail"])
    );
}
