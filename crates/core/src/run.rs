//! What a run is — its mode, its outcome, its counts — and the choices that frame it before the
//! planner: whom a `--user` run means, and what to resolve when Entra brought nothing new.
//!
//! Pure decisions on plain data; the product's `sync` module does the reading and writing.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::directory::Snapshot;
use crate::id::{Email, ObjectId};
use crate::plan::{Action, Plan, StoreView};

/// How a run learnt the tenant's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// Every rule group read in full.
    Full,
    /// Delta rounds since the stored cursors.
    Incremental,
    /// One person resynced (`sync --user`, `POST /resync?user=`); cursors untouched.
    User,
    /// A reviewed plan applied (`apply FILE`); cursors untouched.
    Apply,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Success,
    /// Applied, but deactivations were held by the safety limits (SPEC 5.3).
    Held,
    Failed,
    /// Planned and printed, nothing written.
    DryRun,
}

macro_rules! text_enum {
    ($name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The stored text back; `None` for anything else.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(RunMode {
    Full = "full",
    Incremental = "incremental",
    User = "user",
    Apply = "apply"
});
text_enum!(RunStatus {
    Success = "success",
    Held = "held",
    Failed = "failed",
    DryRun = "dry_run"
});

/// What a run did, as `sync_runs`, the summary and the metrics count it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    pub created: i64,
    pub updated: i64,
    pub reactivated: i64,
    pub deactivated: i64,
    pub archived: i64,
    pub purged: i64,
    pub held: i64,
    pub reports: i64,
}

impl Plan {
    pub fn counts(&self) -> RunCounts {
        let n = |a: Action| self.count(a) as i64;
        RunCounts {
            created: n(Action::Create),
            updated: n(Action::Update) + n(Action::Merge),
            reactivated: n(Action::Reactivate),
            deactivated: n(Action::Deactivate),
            archived: n(Action::Archive),
            purged: n(Action::Purge),
            held: self.held.iter().filter(|c| c.action.removes()).count() as i64,
            reports: self.reports.len() as i64,
        }
    }
}

/// What a run resolves once Graph has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// A full read, or delta rounds that brought something: the new snapshot.
    Fresh,
    /// Entra brought nothing new, but something here asks for a new plan (the rules changed,
    /// deactivations are held and must be weighed again, a hold is being released, a purge is
    /// due): the stored mirror, resolved again.
    Mirror,
    /// Nothing changed in Entra or here: the run records itself and its cursors and touches no
    /// record.
    Unchanged,
}

/// What, besides Entra, can make a run plan again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// The rules differ from those the mirror was last resolved with.
    pub rules_changed: bool,
    /// Deactivations are held (state, not the memory of the last run: SPEC 5.3).
    pub held: bool,
    /// The run may apply held deactivations (`--allow-mass-deactivation`).
    pub releasing: bool,
    /// A record is due for the retention purge.
    pub purge_due: bool,
    /// A user out of scope has waited out the grace period (SPEC 2).
    pub grace_due: bool,
    /// Someone but the sync edited the store since the tenant's last plan of all its users
    /// (a renamed or deleted record can move other users' outcomes: SPEC 4.8, 4.13).
    pub edited: bool,
}

/// Chooses the [`Basis`] of a run: `fresh` when Graph handed over a new snapshot.
pub fn basis(fresh: bool, pending: Pending) -> Basis {
    if fresh {
        Basis::Fresh
    } else if pending.rules_changed
        || pending.held
        || pending.releasing
        || pending.purge_due
        || pending.grace_due
        || pending.edited
    {
        Basis::Mirror
    } else {
        Basis::Unchanged
    }
}

/// Whom `sync --user` names: an object id, or a UPN or mail (case-insensitive).
#[derive(Debug, Clone)]
pub struct UserQuery {
    id: Option<ObjectId>,
    name: Email,
}

impl UserQuery {
    pub fn new(text: &str) -> UserQuery {
        UserQuery {
            id: ObjectId::parse(text).ok(),
            name: Email::new(text),
        }
    }

    /// Every Entra user it names in `snapshot`, and every synced user it names among
    /// `directory`'s records: everyone a `--user` run resyncs.
    pub fn matches(
        &self,
        snapshot: &Snapshot,
        view: &StoreView,
        directory: &str,
    ) -> BTreeSet<ObjectId> {
        let mut out = self.in_entra(snapshot);
        out.extend(self.in_store(view, directory));
        out
    }

    /// The Entra users it names in `snapshot`.
    pub fn in_entra(&self, snapshot: &Snapshot) -> BTreeSet<ObjectId> {
        if let Some(id) = self.id {
            return snapshot
                .users
                .contains_key(&id)
                .then_some(id)
                .into_iter()
                .collect();
        }
        let names = |s: Option<&String>| s.is_some_and(|s| Email::new(s) == self.name);
        snapshot
            .users
            .values()
            .filter(|u| names(u.user_principal_name.as_ref()) || names(u.mail.as_ref()))
            .map(|u| u.id)
            .collect()
    }

    /// The user it names among `directory`'s synced records, by object id, the record's email
    /// or the UPN it was last synced from: someone who left every group, or was deleted, is
    /// only known to the store.
    pub fn in_store(&self, view: &StoreView, directory: &str) -> BTreeSet<ObjectId> {
        view.links
            .iter()
            .filter(|l| l.directory == directory)
            .filter(|l| {
                self.id == Some(l.object_id)
                    || l.upn.as_deref().is_some_and(|u| Email::new(u) == self.name)
                    || view
                        .records
                        .get(&(l.kind, l.record_id))
                        .and_then(|r| r.values.email_key())
                        .is_some_and(|e| e == self.name)
            })
            .map(|l| l.object_id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::EntraUser;
    use crate::id::named;

    #[test]
    fn modes_and_statuses_read_back_what_they_store() {
        for m in [
            RunMode::Full,
            RunMode::Incremental,
            RunMode::User,
            RunMode::Apply,
        ] {
            assert_eq!(RunMode::parse(m.as_str()), Some(m));
        }
        for s in [
            RunStatus::Success,
            RunStatus::Held,
            RunStatus::Failed,
            RunStatus::DryRun,
        ] {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RunStatus::parse("HELD"), None);
    }

    #[test]
    fn an_idle_round_plans_again_only_when_something_here_asks_for_it() {
        assert_eq!(basis(true, Pending::default()), Basis::Fresh);
        assert_eq!(basis(false, Pending::default()), Basis::Unchanged);
        for pending in [
            Pending {
                rules_changed: true,
                ..Pending::default()
            },
            Pending {
                held: true,
                ..Pending::default()
            },
            Pending {
                releasing: true,
                ..Pending::default()
            },
            Pending {
                purge_due: true,
                ..Pending::default()
            },
            Pending {
                grace_due: true,
                ..Pending::default()
            },
            Pending {
                edited: true,
                ..Pending::default()
            },
        ] {
            assert_eq!(basis(false, pending), Basis::Mirror, "{pending:?}");
        }
    }

    #[test]
    fn a_user_is_found_by_id_upn_or_mail_in_any_case() {
        let mut snapshot = Snapshot::default();
        let ada = EntraUser {
            user_principal_name: Some("ada@contoso.onmicrosoft.com".into()),
            mail: Some("Ada.Lovelace@Contoso.com".into()),
            ..EntraUser::new(named("ada"))
        };
        snapshot.users.insert(ada.id, ada);
        for query in [
            named("ada").to_string(),
            "ADA@contoso.onmicrosoft.com".into(),
            " ada.lovelace@contoso.com".into(),
        ] {
            assert_eq!(
                UserQuery::new(&query).in_entra(&snapshot),
                BTreeSet::from([named("ada")]),
                "{query}"
            );
        }
        assert!(
            UserQuery::new("bob@contoso.com")
                .in_entra(&snapshot)
                .is_empty()
        );
        assert!(
            UserQuery::new(&named("bob").to_string())
                .in_entra(&snapshot)
                .is_empty()
        );
    }
}
