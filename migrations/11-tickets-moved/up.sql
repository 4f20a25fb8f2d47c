-- A ticket keeps its record from the retention purge (SPEC 4.14): one deleted or moved to
-- another record can make a record due at once, which a full run would purge. Counted like
-- the edits of migration 08 (the sync never writes tickets); a new ticket only ever keeps a
-- record, which every purge checks when it happens.
CREATE TRIGGER tickets_deleted AFTER DELETE ON tickets
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
CREATE TRIGGER tickets_moved AFTER UPDATE OF contact_id, employee_id ON tickets
    WHEN NOT EXISTS (SELECT 1 FROM sync_writing)
    BEGIN UPDATE store_edits SET count = count + 1; END;
