//! Deterministic generation of the initial tenant from `(users, groups, seed)`.
//!
//! Everything here derives from a ChaCha RNG seeded with the seed: ids, names, dates,
//! memberships. No wall clock is read, so two simulators with the same options hold the same
//! directory.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use super::model::{ObjectKind, SimUser};
use super::tenant::{Contact, Device, Directory, GroupRec};

/// (display form, ASCII form used in UPNs and mail addresses)
const GIVEN: &[(&str, &str)] = &[
    ("Adele", "adele"),
    ("Zoë", "zoe"),
    ("José", "jose"),
    ("Łukasz", "lukasz"),
    ("Søren", "soren"),
    ("François", "francois"),
    ("Björn", "bjorn"),
    ("Ngọc Anh", "ngocanh"),
    ("Siobhán", "siobhan"),
    ("Ana-María", "anamaria"),
    ("Dmitrij", "dmitrij"),
    ("Αλέξανδρος", "alexandros"),
    ("Мария", "maria"),
    ("美咲", "misaki"),
    ("伟", "wei"),
    ("محمد", "mohammed"),
    ("Chloé", "chloe"),
    ("Jürgen", "jurgen"),
    ("Mikael", "mikael"),
    ("Priya", "priya"),
    ("Oluwaseun", "oluwaseun"),
    ("Renée", "renee"),
    ("Ines", "ines"),
    ("Kwame", "kwame"),
    ("Håkon", "hakon"),
    ("Émile", "emile"),
    ("Małgorzata", "malgorzata"),
    ("Tomás", "tomas"),
    ("Yusuf", "yusuf"),
    ("Lena", "lena"),
    ("Patti", "patti"),
    ("Diego", "diego"),
];

const SURNAMES: &[(&str, &str)] = &[
    ("Vance", "vance"),
    ("Müller", "muller"),
    ("García Núñez", "garcianunez"),
    ("O'Brien", "obrien"),
    ("Kowalczyk", "kowalczyk"),
    ("Ødegård", "odegard"),
    ("Lefèvre", "lefevre"),
    ("Nguyễn", "nguyen"),
    ("Ó Súilleabháin", "osuilleabhain"),
    ("Smirnov", "smirnov"),
    ("Παπαδόπουλος", "papadopoulos"),
    ("Иванова", "ivanova"),
    ("佐藤", "sato"),
    ("王", "wang"),
    ("الهاشمي", "alhashemi"),
    ("Dubois", "dubois"),
    ("Schäfer", "schafer"),
    ("Virtanen", "virtanen"),
    ("Iyer", "iyer"),
    ("Adeyemi", "adeyemi"),
    ("da Silva", "dasilva"),
    ("Fernandez", "fernandez"),
    ("Mensah", "mensah"),
    ("Ærø", "aero"),
    ("Żurawski", "zurawski"),
    ("van der Berg", "vanderberg"),
    ("Holloway", "holloway"),
    ("Sicilian", "sicilian"),
];

const JOB_TITLES: &[&str] = &[
    "Retail Manager",
    "Service Desk Analyst",
    "Field Technician",
    "Accountant",
    "Marketing Specialist",
    "Software Engineer",
    "Sales Representative",
    "HR Business Partner",
    "Chief Financial Officer",
    "Project Coordinator",
    "Network Engineer",
    "Office Manager",
];

const DEPARTMENTS: &[&str] = &[
    "Sales",
    "Finance",
    "Engineering",
    "Human Resources",
    "Support",
    "Operations",
    "Marketing",
    "Legal",
];

const OFFICES: &[&str] = &[
    "18/2111",
    "Oslo HQ",
    "München 3.OG",
    "Remote",
    "131/1104",
    "Kraków",
];

const CITIES: &[(&str, &str)] = &[
    ("Redmond", "US"),
    ("München", "DE"),
    ("Kraków", "PL"),
    ("São Paulo", "BR"),
    ("Tokyo", "JP"),
    ("Oslo", "NO"),
    ("Lagos", "NG"),
];

const GUEST_DOMAINS: &[&str] = &[
    "fabrikam.com",
    "gmail.com",
    "northwind.example",
    "outlook.com",
];

const GROUP_NAMES: &[&str] = &[
    "SG-Helpdesk-Technicians",
    "SG-Client-Portal-Contacts",
    "SG-Finance",
    "SG-Field-Service",
    "SG-Management",
    "SG-Partners-Extern",
    "SG-Sales-Nord",
    "SG-Engineering",
    "SG-Dispatch",
    "SG-Auditors",
];

pub(crate) struct Generated {
    pub dir: Directory,
}

fn new_id(rng: &mut ChaCha8Rng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid()
}

fn date(base: DateTime<Utc>, rng: &mut ChaCha8Rng, span_days: i64) -> DateTime<Utc> {
    base + Duration::seconds(rng.gen_range(0..span_days * 86_400))
}

/// The mail domain of a tenant: `contoso.onmicrosoft.com` → `contoso.com`.
pub(crate) fn mail_domain(tenant: &str) -> String {
    match tenant.strip_suffix(".onmicrosoft.com") {
        Some(prefix) => format!("{prefix}.com"),
        None => tenant.to_owned(),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

pub(crate) fn generate(users: usize, groups: usize, seed: u64, tenant: &str) -> Generated {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mail_dom = mail_domain(tenant);
    let epoch = Utc
        .with_ymd_and_hms(2019, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let mut dir = Directory::default();
    let mut used_local: HashMap<String, u32> = HashMap::with_capacity(users);
    let soft_deleted = if users >= 10 { (users / 50).max(1) } else { 0 };

    // Ids first, then each user from its own RNG, created in id order: listings walk users in
    // id order, and allocating them in that order keeps a page's users close in memory.
    let total = users + soft_deleted;
    let ids: Vec<Uuid> = (0..total).map(|_| new_id(&mut rng)).collect();
    let user_ids: Vec<Uuid> = ids.iter().take(users).copied().collect();
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by_key(|&i| ids[i]);
    for &i in &order {
        let id = ids[i];
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (given, given_a) = GIVEN[rng.gen_range(0..GIVEN.len())];
        let (sur, sur_a) = SURNAMES[rng.gen_range(0..SURNAMES.len())];
        let base_local = format!("{given_a}.{sur_a}");
        let n = used_local.entry(base_local.clone()).or_insert(0);
        *n += 1;
        let count = *n;
        let local = if count == 1 {
            base_local
        } else {
            format!("{base_local}{count}")
        };
        let roll: f64 = rng.r#gen();
        // Mail follows the UPN (`Ada.Lovelace2@…` for `ada.lovelace2@…`), except for a few
        // namesakes who were given the first one's address: the duplicates real tenants have.
        let mail_suffix = if count == 1 || (0.12..0.125).contains(&roll) {
            String::new()
        } else {
            count.to_string()
        };
        // i == 1 and i == 2 are always a guest and a disabled user so small tenants have both.
        let guest = i == 1 || (i > 3 && roll < 0.05);
        let disabled = i == 2 || (!guest && i > 3 && roll < 0.09);
        let no_mail = i == 3 || (!guest && i > 3 && (0.09..0.12).contains(&roll));
        let created = date(epoch, &mut rng, 6 * 365);
        let (city, country) = CITIES[rng.gen_range(0..CITIES.len())];
        let mut user = SimUser {
            id: id.to_string(),
            user_principal_name: format!("{local}@{tenant}"),
            mail: Some(format!(
                "{}.{}{mail_suffix}@{mail_dom}",
                capitalize(given_a),
                capitalize(sur_a)
            )),
            given_name: Some(given.to_owned()),
            surname: Some(sur.to_owned()),
            display_name: Some(format!("{given} {sur}")),
            job_title: rng
                .gen_bool(0.9)
                .then(|| JOB_TITLES[rng.gen_range(0..JOB_TITLES.len())].to_owned()),
            department: rng
                .gen_bool(0.85)
                .then(|| DEPARTMENTS[rng.gen_range(0..DEPARTMENTS.len())].to_owned()),
            business_phones: if rng.gen_bool(0.8) {
                vec![format!("+1 425 555 {:04}", rng.gen_range(0..10_000))]
            } else {
                Vec::new()
            },
            mobile_phone: rng
                .gen_bool(0.5)
                .then(|| format!("+47 9{:07}", rng.gen_range(0..10_000_000))),
            office_location: rng
                .gen_bool(0.6)
                .then(|| OFFICES[rng.gen_range(0..OFFICES.len())].to_owned()),
            preferred_language: rng.gen_bool(0.3).then(|| "en-US".to_owned()),
            city: Some(city.to_owned()),
            country: Some(country.to_owned()),
            company_name: Some(capitalize(tenant.split('.').next().unwrap_or(tenant))),
            employee_id: rng
                .gen_bool(0.7)
                .then(|| format!("E{:06}", rng.gen_range(0..1_000_000))),
            usage_location: Some(country.to_owned()),
            account_enabled: !disabled,
            user_type: "Member".to_owned(),
            created_date_time: created,
            other_mails: Vec::new(),
            mail_nickname: local.replace('.', ""),
            creation_type: None,
            external_user_state: None,
            deleted_date_time: None,
        };
        if guest {
            let dom = GUEST_DOMAINS[rng.gen_range(0..GUEST_DOMAINS.len())];
            let external = format!("{local}@{dom}");
            user.user_principal_name = format!("{local}_{dom}#EXT#@{tenant}");
            user.mail_nickname = format!("{local}_{dom}#EXT#");
            user.other_mails = vec![external.clone()];
            // Some invited guests never got their mail attribute set.
            user.mail = (!rng.gen_bool(0.2)).then_some(external);
            user.user_type = "Guest".to_owned();
            user.creation_type = Some("Invitation".to_owned());
            user.external_user_state = Some(
                if rng.gen_bool(0.8) {
                    "Accepted"
                } else {
                    "PendingAcceptance"
                }
                .to_owned(),
            );
            user.company_name = None;
            user.employee_id = None;
            user.city = None;
            user.country = None;
        }
        if no_mail {
            user.mail = None;
        }
        if i >= users {
            user.deleted_date_time = Some(created + Duration::days(200));
        }
        dir.users.insert(id, user);
    }

    // Security groups: distinct creation dates, overlapping memberships.
    let mut group_ids = Vec::with_capacity(groups);
    for g in 0..groups {
        let id = new_id(&mut rng);
        let name = match GROUP_NAMES.get(g) {
            Some(n) => (*n).to_owned(),
            None => format!("SG-Team-{:02}", g + 1),
        };
        let created =
            epoch + Duration::days(30 * g as i64 + 1) + Duration::seconds(rng.gen_range(0..86_400));
        let mut rec = GroupRec::security(id, name.clone(), created);
        rec.description = Some(format!("Security group {name}"));
        dir.groups.insert(id, rec);
        group_ids.push(id);
    }
    if groups > 0 && !user_ids.is_empty() {
        // Each group takes a share of users; share sizes differ per group so that groups
        // overlap in varied ways. Users with index % 11 == 10 stay out of every group.
        let shares: Vec<f64> = (0..groups)
            .map(|g| 0.12 + 0.3 * ((g * 7 % 5) as f64 / 4.0))
            .collect();
        let mut members: Vec<Vec<Uuid>> = vec![Vec::new(); groups];
        for (i, uid) in user_ids.iter().enumerate() {
            if i % 11 == 10 {
                continue;
            }
            let primary = i % groups;
            members[primary].push(*uid);
            for (g, share) in shares.iter().enumerate() {
                if g != primary && rng.gen_bool(*share / 2.0) {
                    members[g].push(*uid);
                }
            }
        }
        for (g, ids) in members.into_iter().enumerate() {
            if let Some(rec) = dir.groups.get_mut(&group_ids[g]) {
                for id in ids {
                    rec.members.insert(id, ObjectKind::User);
                }
            }
        }
    }
    // The last security group is nested inside the first.
    if groups >= 2 {
        let child = group_ids[groups - 1];
        if let Some(parent) = dir.groups.get_mut(&group_ids[0]) {
            parent.members.insert(child, ObjectKind::Group);
        }
    }
    // A device and an organizational contact in the first group: /members is not users-only.
    if let Some(first) = group_ids.first().copied() {
        let dev = new_id(&mut rng);
        dir.devices.insert(
            dev,
            Device {
                id: dev,
                device_id: new_id(&mut rng),
                display_name: "KIOSK-LOBBY-01".to_owned(),
                operating_system: "Windows".to_owned(),
                operating_system_version: "10.0.22631.4602".to_owned(),
                account_enabled: true,
                created: date(epoch, &mut rng, 365),
            },
        );
        let con = new_id(&mut rng);
        dir.contacts.insert(
            con,
            Contact {
                id: con,
                display_name: "Ingrid Ågesen (Northwind)".to_owned(),
                given_name: Some("Ingrid".to_owned()),
                surname: Some("Ågesen".to_owned()),
                mail: Some("ingrid.agesen@northwind.example".to_owned()),
                company_name: Some("Northwind Traders".to_owned()),
                job_title: Some("Account Manager".to_owned()),
            },
        );
        if let Some(rec) = dir.groups.get_mut(&first) {
            rec.members.insert(dev, ObjectKind::Device);
            rec.members.insert(con, ObjectKind::OrgContact);
        }
    }
    // A Microsoft 365 group (not a security group) and a soft-deleted one, as real tenants have.
    let company = capitalize(tenant.split('.').next().unwrap_or(tenant));
    let all = new_id(&mut rng);
    let mut rec = GroupRec::unified(
        all,
        "All Company".to_owned(),
        &mail_dom,
        epoch + Duration::days(3),
    );
    rec.description = Some("This is the default group for everyone in the network".to_owned());
    for uid in user_ids.iter().step_by(3) {
        rec.members.insert(*uid, ObjectKind::User);
    }
    dir.groups.insert(all, rec);
    let gone = new_id(&mut rng);
    let mut rec = GroupRec::unified(
        gone,
        format!("{company} Project Falcon"),
        &mail_dom,
        epoch + Duration::days(40),
    );
    rec.deleted = Some(epoch + Duration::days(400));
    dir.groups.insert(gone, rec);

    dir.rng_state = rng.r#gen();
    Generated { dir }
}

/// Deterministic id source for objects created after start.
pub(crate) fn runtime_id(state: &mut u64) -> Uuid {
    let mut rng = ChaCha8Rng::seed_from_u64(*state);
    *state = rng.r#gen();
    new_id(&mut rng)
}

/// The fixed point in time from which runtime-created objects take their `createdDateTime`.
pub(crate) fn runtime_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}
