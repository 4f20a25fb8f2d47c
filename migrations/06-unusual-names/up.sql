-- An incremental run plans only the users its changes touch, and finds the records holding a
-- name they want through the NOCASE indexes, which fold ASCII letters only. The sync itself
-- compares names trimmed and in Unicode lower case: a record whose name is not plain
-- printable ASCII without surrounding spaces could match where the index does not look.
-- These partial indexes list those records (normally none), and such a run reads them all.
CREATE INDEX employees_unusual_names ON employees (id)
    WHERE email <> trim(email) OR username <> trim(username)
       OR email GLOB '*[^ -~]*' OR username GLOB '*[^ -~]*';
CREATE INDEX contacts_unusual_email ON contacts (id)
    WHERE email <> trim(email) OR email GLOB '*[^ -~]*';
