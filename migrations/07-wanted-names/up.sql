-- A user whose record an admin renamed still wants the names Entra gives them (SPEC 4.6 keeps
-- the admin's edit while Entra does not change them), and a run that plans only the users its
-- changes touch must find such a user when another comes to want the same name (4.8, 4.11).
-- Their link's source holds exactly those names: what the sync last wrote for them.
-- Like migration 06, the NOCASE indexes fold ASCII only; the names the sync would compare
-- differently (not plain printable ASCII, or with spaces around them) are listed by a partial
-- index, normally empty, and such a run reads them all. A source that is not JSON (never
-- written by the sync) is in none of them.
CREATE INDEX sync_links_source_email
    ON sync_links (directory, json_extract(source, '$.email') COLLATE NOCASE)
    WHERE json_valid(source);
CREATE INDEX sync_links_source_username
    ON sync_links (directory, json_extract(source, '$.username') COLLATE NOCASE)
    WHERE json_valid(source);
CREATE INDEX sync_links_unusual_source ON sync_links (directory)
    WHERE json_valid(source) AND (
        json_extract(source, '$.email') <> trim(json_extract(source, '$.email'))
        OR json_extract(source, '$.email') GLOB '*[^ -~]*'
        OR json_extract(source, '$.username') <> trim(json_extract(source, '$.username'))
        OR json_extract(source, '$.username') GLOB '*[^ -~]*');
