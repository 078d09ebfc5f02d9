-- The JSON that plank.capture() sends with NOTIFY for each operation and for
-- many column types; nothing for rolled-back work.  psql prints each
-- notification it receives; the process ID and the transaction ID vary from
-- run to run, so the notifications go to a file and are shown masked.
SET timezone = 'UTC';
SET client_min_messages = warning;

CREATE TABLE kinds (
    id    int PRIMARY KEY,
    t     text,
    n     numeric,
    i     bigint,
    f     float8,
    b     boolean,
    ts    timestamptz,
    d     date,
    j     json,
    jb    jsonb,
    arr   int[],
    tarr  text[],
    u     uuid,
    by    bytea
);
SELECT plank.track('kinds');
CREATE TABLE nokey (a int, b text);
SELECT plank.track('nokey');
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Odd ""Name""" (id int PRIMARY KEY);
SELECT plank.track('"My Schema"."Odd ""Name"""');
CREATE TABLE parted (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
SELECT plank.track('parted');

-- the channel is random per server start: LISTEN to it by name (not echoed)
\set ECHO none
SELECT format('LISTEN %I', plank.change_channel()) \gexec
\set ECHO all
\o test/results/capture_notifications.out

-- INSERT with every kind of value; quotes, backslashes and unicode in text
INSERT INTO kinds VALUES (1, E'it''s "quoted" \\ back\\slash, tab\t, h\u00e9llo \u2603 \U0001F418',
    123.4500, 9007199254740993, 1.5, true, '2026-01-02 03:04:05.678+00', '2026-01-02',
    '{"a": [1, 2]}', '{"b": null}', '{1,NULL,3}', '{"a b","c\"d"}',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff');
-- NULLs
INSERT INTO kinds (id) VALUES (2);
-- UPDATE: new row, old key
UPDATE kinds SET t = 'changed', n = -0.5 WHERE id = 2;
-- DELETE: old key only
DELETE FROM kinds WHERE id = 1;

-- a rolled-back transaction sends nothing
BEGIN;
INSERT INTO kinds (id) VALUES (3);
ROLLBACK;
-- a rolled-back savepoint sends nothing; the rest of the transaction is sent
BEGIN;
INSERT INTO kinds (id) VALUES (4);
SAVEPOINT s1;
INSERT INTO kinds (id) VALUES (5);
ROLLBACK TO SAVEPOINT s1;
COMMIT;
-- identical changes in one transaction are all sent, numbered by n
BEGIN;
UPDATE kinds SET t = 'x' WHERE id = 2;
UPDATE kinds SET t = 'x' WHERE id = 2;
COMMIT;

-- REPLICA IDENTITY FULL: old holds the whole row
ALTER TABLE kinds REPLICA IDENTITY FULL;
UPDATE kinds SET t = 'y' WHERE id = 4;
ALTER TABLE kinds REPLICA IDENTITY DEFAULT;
-- a table without a key: old holds the whole row
INSERT INTO nokey VALUES (1, 'x');
DELETE FROM nokey;

-- rows too large for NOTIFY: the key and "truncated", and no error
INSERT INTO kinds (id, t) VALUES (6, repeat('x', 9000));
UPDATE kinds SET t = repeat('y', 9000) WHERE id = 6;
DELETE FROM kinds WHERE id = 6;
INSERT INTO nokey VALUES (2, repeat('z', 9000));

-- TRUNCATE
TRUNCATE kinds;

-- quoted identifiers are escaped in the payload
INSERT INTO "My Schema"."Odd ""Name""" VALUES (1);
-- a partition's change names the tracked partitioned table
INSERT INTO parted VALUES (1, 'eu');

-- tracked columns: only those (and the key); excluded columns: all but those
SELECT plank.track('kinds', columns => '{t}');
INSERT INTO kinds (id, t, n) VALUES (8, 'only t', 1);
SELECT plank.track('kinds', exclude_columns => '{t, j, jb, arr, tarr, u, by, ts, d}');
INSERT INTO kinds (id, t, n, i, f, b) VALUES (9, 'hidden', 2, 3, 4.5, false);
-- tracked operations: only deletes
SELECT plank.track('kinds', operations => '{DELETE}');
UPDATE kinds SET t = 'not sent' WHERE id = 9;
DELETE FROM kinds WHERE id = 9;

-- statements: the changes of a multi-row statement in one notification (an
-- array), in the order made; a statement that changes no row sends nothing
SELECT plank.track('kinds', columns => '{t}');
INSERT INTO kinds (id, t) SELECT g, 'row ' || g FROM generate_series(20, 23) g;
UPDATE kinds SET t = t || '!' WHERE id BETWEEN 20 AND 22;
UPDATE kinds SET t = 'none' WHERE id < 0;
DELETE FROM kinds WHERE id > 21;
-- a statement larger than a notification: outside plank.database (no worker
-- reads plank.overflow) it is packed into notifications under 8000 bytes
INSERT INTO kinds (id, t) SELECT g, repeat('p', 100) FROM generate_series(100, 299) g;
-- a large row among small ones: truncated in place (stored where a worker reads it)
INSERT INTO kinds (id, t) VALUES (300, 's'), (301, repeat('L', 9000)), (302, 's');
-- the old and new rows of an UPDATE in a transaction with other statements
BEGIN;
UPDATE kinds SET t = 'u' WHERE id IN (20, 21);
INSERT INTO kinds (id) VALUES (303);
COMMIT;
DELETE FROM kinds WHERE id >= 100;

-- partitioned: statements naming the table or a partition name the table;
-- a row moving to another partition is an UPDATE
INSERT INTO parted VALUES (2, 'eu'), (3, 'eu');
CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us');
SELECT plank.track('parted');
INSERT INTO parted_eu VALUES (4, 'eu');
UPDATE parted SET region = 'us' WHERE id IN (2, 3);
UPDATE parted_us SET id = id + 10;
-- a row moved out of its partition and suppressed by a BEFORE INSERT trigger
-- of the other one has no new image: the statement is sent as deletes and inserts
CREATE FUNCTION skip_id_4() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN IF NEW.id = 4 THEN RETURN NULL; END IF; RETURN NEW; END $$;
CREATE TRIGGER skip_id_4 BEFORE INSERT ON parted_us FOR EACH ROW EXECUTE FUNCTION skip_id_4();
UPDATE parted SET region = 'us' WHERE region = 'eu';
DELETE FROM parted;
-- a TRUNCATE naming a partition names the tracked table and the partition;
-- one naming the table is one TRUNCATE without a partition
TRUNCATE parted_us;
TRUNCATE parted_eu, parted_us;
TRUNCATE parted;

-- a session under session_replication_role = replica (a load that bypasses
-- triggers on purpose) sends nothing: the triggers enabled for replica send
-- only in logical replication workers (test/e2e/test_replication.py)
SET session_replication_role = replica;
INSERT INTO kinds (id) VALUES (6);
TRUNCATE parted;
RESET session_replication_role;

-- after untrack, nothing is sent
SELECT plank.untrack('kinds');
INSERT INTO kinds (id) VALUES (7);

\o
\! sed -E 's/PID [0-9]+/PID N/; s/"xid":[0-9]+/"xid":N/g; s/"plank_[0-9a-f]{16}"/"plank_N"/' test/results/capture_notifications.out

UNLISTEN *;
-- the rows are all still there: capture never changes the writer's data
SELECT id, t IS NULL AS t_null FROM kinds ORDER BY id;
