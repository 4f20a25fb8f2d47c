-- Edits made to what the planner reads by anyone but the sync (an admin, the PSA itself),
-- counted. A record renamed, deactivated or deleted, a membership or a link removed, can move
-- other users' outcomes (a freed name, SPEC 4.8), and a full run at the same moment would see
-- it (4.13): a tenant whose last whole plan saw fewer edits than there are now plans the whole
-- tenant again, even when Entra changed nothing. Tickets are not counted: they matter to
-- purges only, which are watched apart (`tenant_state.purge_watch`).
CREATE TABLE store_edits (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL
);
INSERT INTO store_edits (id, count) VALUES (1, 0);

-- One row while the sync writes, inside its write transaction (SQLite's one writer, unseen
-- by others until it commits, and deleted before it does): the sync's own writes are not
-- edits.
CREATE TABLE sync_writing (since TEXT NOT NULL);

-- Per tenant: the count its last plan of the whole tenant saw (NULL: plan it whole).
ALTER TABLE tenant_state ADD COLUMN edits_seen INTEGER;

CREATE TRIGGER employees_inserted AFTER INSERT ON employees
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER employees_updated AFTER UPDATE OF id, username, email, first_name, last_name, job_title, phone, department, security_role,
        active, is_root, deactivated_at ON employees
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER employees_deleted AFTER DELETE ON employees
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER contacts_inserted AFTER INSERT ON contacts
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER contacts_updated AFTER UPDATE OF id, account, email, first_name, last_name, job_title, phone, phone_type, portal_access,
        active, deactivated_at ON contacts
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER contacts_deleted AFTER DELETE ON contacts
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER groups_inserted AFTER INSERT ON groups
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER groups_updated AFTER UPDATE ON groups
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER groups_deleted AFTER DELETE ON groups
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER group_members_inserted AFTER INSERT ON group_members
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER group_members_updated AFTER UPDATE ON group_members
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER group_members_deleted AFTER DELETE ON group_members
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER sync_links_inserted AFTER INSERT ON sync_links
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER sync_links_updated AFTER UPDATE ON sync_links
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER sync_links_deleted AFTER DELETE ON sync_links
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
