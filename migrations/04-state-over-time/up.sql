-- State that outlives a run (SPEC 4.12, 4.13, 5.3), and links that belong to the directory.

-- Which directory (tenant GUID) each configured tenant name stands for. Links are keyed by
-- the directory, so renaming a tenant entry keeps every link; the tables keyed by the name
-- follow a rename when the sync sees it here.
CREATE TABLE tenant_directories (
    name TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    directory TEXT NOT NULL
);

-- Links keyed by directory, with the UPN a record was last synced from (`sync --user` finds
-- leavers by it) and what the sync last did with the record: 'synced' (written from Entra),
-- 'left' (deactivated because its user left scope), 'left_inactive' (access revoked because its
-- user left scope, from a record an admin had deactivated, which their return leaves
-- deactivated), 'archived' (kind change), or 'archived_inactive' (kind change of a record an
-- admin had deactivated, which undoing the archive leaves deactivated). A record an admin deactivated keeps 'synced': a local
-- deactivation is a local edit (SPEC 4.6).
-- Older links carry the tenant's config name as their directory until that tenant's next run
-- upgrades them, and the UPN the mirror has of their user; an inactive record counts as
-- deactivated by the sync, as it did before.
CREATE TABLE sync_links_new (
    directory TEXT NOT NULL,
    object_id TEXT NOT NULL,
    record_kind TEXT NOT NULL CHECK (record_kind IN ('employee', 'contact')),
    record_id INTEGER NOT NULL,
    source TEXT NOT NULL,
    synced_at TEXT NOT NULL,
    upn TEXT,
    state TEXT NOT NULL DEFAULT 'synced'
        CHECK (state IN ('synced', 'left', 'left_inactive', 'archived', 'archived_inactive')),
    PRIMARY KEY (directory, object_id, record_kind),
    UNIQUE (record_kind, record_id)
);
INSERT INTO sync_links_new (directory, object_id, record_kind, record_id, source, synced_at, upn, state)
SELECT l.tenant, l.object_id, l.record_kind, l.record_id, l.source, l.synced_at,
       (SELECT json_extract(u.data, '$.user_principal_name') FROM entra_users u
        WHERE u.tenant = l.tenant AND u.object_id = l.object_id),
       CASE
           WHEN COALESCE(e.email, c.email) LIKE '%\_Archived' ESCAPE '\' THEN 'archived'
           WHEN COALESCE(e.active, c.active, 1) = 0 THEN 'left'
           ELSE 'synced'
       END
FROM sync_links l
LEFT JOIN employees e ON l.record_kind = 'employee' AND e.id = l.record_id
LEFT JOIN contacts c ON l.record_kind = 'contact' AND c.id = l.record_id;
DROP TABLE sync_links;
ALTER TABLE sync_links_new RENAME TO sync_links;

-- Each tenant's open reports: what is wrong now, shown by every run, `status` and `/status`,
-- closed when its cause is gone (SPEC 4.12).
CREATE TABLE open_reports (
    tenant TEXT NOT NULL,
    object_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    user TEXT NOT NULL,
    message TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (tenant, object_id, kind)
);

-- Each tenant's held deactivations and archives: pending until applied with
-- --allow-mass-deactivation or their users come back (SPEC 5.3).
CREATE TABLE held_changes (
    tenant TEXT NOT NULL,
    object_id TEXT NOT NULL,
    record_kind TEXT NOT NULL,
    record_id INTEGER,
    action TEXT NOT NULL,
    user TEXT NOT NULL,
    reason TEXT NOT NULL,
    since TEXT NOT NULL
);
CREATE INDEX held_changes_tenant ON held_changes (tenant);

-- Per tenant: when the oldest record that will fall due for the retention purge was
-- deactivated ('' = plan again on the next run), so a run with nothing new from Entra plans
-- only when a purge is due.
CREATE TABLE tenant_state (
    tenant TEXT PRIMARY KEY,
    purge_watch TEXT
);

-- Users whose last membership in a tracked group the mirror lost, and since when. A user
-- soft-deleted when a full read ran is missing from its listings although still a member, and
-- their restore changes no membership that groups delta would report: an incremental run reads
-- the groups of a changed user found here (Entra keeps deleted users 30 days).
CREATE TABLE entra_departed (
    tenant TEXT NOT NULL,
    object_id TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (tenant, object_id)
) WITHOUT ROWID;
