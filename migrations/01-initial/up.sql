-- Public PSA tables (SPEC section 3). Other PSA components read and edit these: keep names and
-- column types stable; add columns only in later migrations.
CREATE TABLE employees (
    id INTEGER PRIMARY KEY,
    username TEXT,
    email TEXT,
    first_name TEXT,
    last_name TEXT,
    job_title TEXT,
    phone TEXT,
    department TEXT,
    security_role TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    is_root INTEGER NOT NULL DEFAULT 0,
    created_at TEXT,
    updated_at TEXT,
    deactivated_at TEXT
);
-- Usernames are unique across all employees, active or not (SPEC 4.8). NOCASE folds ASCII only;
-- the planner compares with full Unicode folding before it ever reaches this backstop.
CREATE UNIQUE INDEX employees_username ON employees (username COLLATE NOCASE);
CREATE INDEX employees_email ON employees (email COLLATE NOCASE);

CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    account TEXT,
    email TEXT,
    first_name TEXT,
    last_name TEXT,
    job_title TEXT,
    phone TEXT,
    phone_type TEXT,
    portal_access INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT,
    updated_at TEXT,
    deactivated_at TEXT
);
CREATE INDEX contacts_email ON contacts (email COLLATE NOCASE);

CREATE TABLE tickets (
    id INTEGER PRIMARY KEY,
    subject TEXT,
    contact_id INTEGER REFERENCES contacts (id),
    employee_id INTEGER REFERENCES employees (id)
);

CREATE TABLE groups (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    object_id TEXT NOT NULL,
    display_name TEXT,
    read_only INTEGER NOT NULL DEFAULT 1,
    UNIQUE (tenant, object_id)
);

CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    member_kind TEXT NOT NULL CHECK (member_kind IN ('employee', 'contact')),
    member_id INTEGER NOT NULL,
    PRIMARY KEY (group_id, member_kind, member_id)
) WITHOUT ROWID;

-- Bookkeeping of the sync itself (free to change in later migrations).

-- Which record an Entra user became, per kind, and the source values it was last written from.
-- A user can be linked to one employee and one contact (the archived one after a kind change).
CREATE TABLE sync_links (
    tenant TEXT NOT NULL,
    object_id TEXT NOT NULL,
    record_kind TEXT NOT NULL CHECK (record_kind IN ('employee', 'contact')),
    record_id INTEGER NOT NULL,
    source TEXT NOT NULL,
    synced_at TEXT NOT NULL,
    PRIMARY KEY (tenant, object_id, record_kind),
    UNIQUE (record_kind, record_id)
);

CREATE TABLE sync_runs (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    mode TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    created INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    reactivated INTEGER NOT NULL DEFAULT 0,
    deactivated INTEGER NOT NULL DEFAULT 0,
    archived INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,
    reports INTEGER NOT NULL DEFAULT 0,
    graph_requests INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX sync_runs_tenant ON sync_runs (tenant, id);

CREATE TABLE change_log (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES sync_runs (id),
    at TEXT NOT NULL,
    tenant TEXT,
    object_id TEXT,
    record_kind TEXT NOT NULL,
    record_id INTEGER,
    action TEXT NOT NULL,
    changes TEXT NOT NULL
);
CREATE INDEX change_log_run ON change_log (run_id);
CREATE INDEX change_log_record ON change_log (record_kind, record_id);

CREATE TABLE sync_reports (
    run_id INTEGER NOT NULL REFERENCES sync_runs (id),
    tenant TEXT NOT NULL,
    object_id TEXT,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX sync_reports_run ON sync_reports (run_id);
