-- Migration 07 found the users who still want a name their record no longer carries by
-- indexing the names in every link's JSON source: that cost a full sync of 100,000 users
-- 1.2 s of index upkeep, for what is normally nobody. The planner now lists those users
-- (an admin renamed their record, Entra has not changed them since: SPEC 4.6) with the
-- names they want, trimmed and in lower case as the sync compares them, and the store keeps
-- the list per tenant like its open reports.
DROP INDEX sync_links_source_email;
DROP INDEX sync_links_source_username;
DROP INDEX sync_links_unusual_source;
CREATE TABLE unheld_names (
    tenant TEXT NOT NULL,
    object_id TEXT NOT NULL,
    wants_email TEXT,
    wants_username TEXT,
    PRIMARY KEY (tenant, object_id)
);
CREATE INDEX unheld_names_email ON unheld_names (tenant, wants_email)
    WHERE wants_email IS NOT NULL;
CREATE INDEX unheld_names_username ON unheld_names (tenant, wants_username)
    WHERE wants_username IS NOT NULL;
-- The list is filled by a plan of every user: every tenant's next run plans so.
UPDATE tenant_state SET edits_seen = NULL;
