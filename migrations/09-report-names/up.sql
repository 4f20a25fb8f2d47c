-- The names an open report is about: the email and username its user wants (trimmed, lower
-- case, as the sync compares them), which another user may hold or want too. A run planned
-- from a change looks at a reported user again when the change touches one of those names;
-- a report without them (written before this migration, or about something else) is looked
-- at by every such run.
ALTER TABLE open_reports ADD COLUMN wants_email TEXT;
ALTER TABLE open_reports ADD COLUMN wants_username TEXT;
CREATE INDEX open_reports_wants_email ON open_reports (tenant, wants_email)
    WHERE wants_email IS NOT NULL;
CREATE INDEX open_reports_wants_username ON open_reports (tenant, wants_username)
    WHERE wants_username IS NOT NULL;
