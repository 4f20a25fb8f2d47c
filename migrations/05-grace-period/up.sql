-- Users a run saw out of scope whose records have not left service yet: waiting out the
-- grace period (safety.deactivate_after_minutes), or fallen due and held by the safety limits.
-- `since` is when a run first saw them out of scope; `due` when their records leave service
-- (with the grace period of that run). A user who comes back is forgotten (SPEC 2).
CREATE TABLE pending_deactivations (
    tenant TEXT NOT NULL,
    object_id TEXT NOT NULL,
    user TEXT NOT NULL,
    since TEXT NOT NULL,
    due TEXT NOT NULL,
    PRIMARY KEY (tenant, object_id)
) WITHOUT ROWID;
