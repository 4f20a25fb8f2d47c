-- What the sync last saw in Entra, per tenant, so an incremental run can apply delta changes
-- to it and resolve the whole tenant again. Written in the same transaction as the records
-- and the delta cursors that produced it.
CREATE TABLE entra_users (
    tenant TEXT NOT NULL,
    object_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant, object_id)
) WITHOUT ROWID;

CREATE TABLE entra_groups (
    tenant TEXT NOT NULL,
    object_id TEXT NOT NULL,
    display_name TEXT,
    created TEXT,
    PRIMARY KEY (tenant, object_id)
) WITHOUT ROWID;

CREATE TABLE entra_members (
    tenant TEXT NOT NULL,
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    member_type TEXT NOT NULL,
    PRIMARY KEY (tenant, group_id, member_id)
) WITHOUT ROWID;

-- Delta cursors: the deltaLink of each round, saved only after the round was fully consumed.
-- `scope` fingerprints what the cursors track (groups, $select); `rules` the mapping config.
CREATE TABLE delta_cursors (
    tenant TEXT NOT NULL,
    resource TEXT NOT NULL,
    link TEXT NOT NULL,
    scope TEXT NOT NULL,
    rules TEXT NOT NULL,
    saved_at TEXT NOT NULL,
    PRIMARY KEY (tenant, resource)
) WITHOUT ROWID;
