-- plank.track / plank.untrack / plank.tracked_tables, and refusal of bad arguments.
-- (The extension is created by pg_regress --load-extension=plank.)
SET client_min_messages = notice;

SELECT * FROM plank.tracked_tables;

CREATE TABLE t1 (id int PRIMARY KEY, v text);
SELECT plank.track('t1');
SELECT table_name, schema_name, relname, enabled FROM plank.tracked_tables;
SELECT tgname FROM pg_trigger WHERE tgrelid = 't1'::regclass ORDER BY tgname;

-- statement triggers with transition tables, one per operation; and for
-- logical replication, row triggers (a statement trigger for TRUNCATE)
SELECT tgname, tgtype, tgoldtable, tgnewtable FROM pg_trigger WHERE tgrelid = 't1'::regclass ORDER BY tgname;

-- tracking again keeps eight triggers
SELECT plank.track('t1');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 't1'::regclass;

-- options: columns, exclude_columns, operations; tracking again replaces them
SELECT plank.track('t1', columns => '{v}', operations => '{insert, DELETE}');
SELECT table_name, operations, columns, exclude_columns FROM plank.tracked_tables;
SELECT tgname FROM pg_trigger WHERE tgrelid = 't1'::regclass ORDER BY tgname;
SELECT plank.track('t1', exclude_columns => '{v}', operations => '{TRUNCATE}');
SELECT table_name, operations, columns, exclude_columns FROM plank.tracked_tables;
SELECT plank.track('t1');
SELECT table_name, operations, columns, exclude_columns FROM plank.tracked_tables;
-- bad options
SELECT plank.track('t1', columns => '{v}', exclude_columns => '{id}');
SELECT plank.track('t1', columns => '{nope}');
SELECT plank.track('t1', operations => '{SELECT}');
SELECT plank.track('t1', operations => '{}');

-- a disabled trigger shows in the view
ALTER TABLE t1 DISABLE TRIGGER plank_capture_update;
SELECT table_name, enabled FROM plank.tracked_tables;
ALTER TABLE t1 ENABLE TRIGGER plank_capture_update;

SELECT plank.untrack('t1');
SELECT * FROM plank.tracked_tables;
SELECT count(*) FROM pg_trigger WHERE tgrelid = 't1'::regclass;
-- untracking twice is a no-op with a notice
SELECT plank.untrack('t1');

-- partitioned tables: the parent is listed, not its partitions
CREATE TABLE parted (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us', 'ca') PARTITION BY LIST (region);
CREATE TABLE parted_ca PARTITION OF parted_us FOR VALUES IN ('ca');
SELECT plank.track('parted', operations => '{INSERT, UPDATE}');
SELECT table_name FROM plank.tracked_tables;
-- its partitions, at every level, get statement triggers of their own
SELECT tgrelid::regclass, tgname FROM pg_trigger
 WHERE tgrelid IN (SELECT relid FROM pg_partition_tree('parted')) ORDER BY 1, 2;
-- the row triggers for logical replication fire for replica only (R), on
-- the partitions too (their clones), and on partitions attached later
CREATE TABLE parted_mx PARTITION OF parted FOR VALUES IN ('mx');
SELECT tgrelid::regclass, tgname, tgenabled FROM pg_trigger
 WHERE tgrelid IN (SELECT relid FROM pg_partition_tree('parted')) AND tgname LIKE 'plank_replica%' ORDER BY 1, 2;
SELECT plank.untrack('parted');
SELECT count(*) FROM pg_trigger WHERE tgrelid IN (SELECT relid FROM pg_partition_tree('parted'));

-- bad arguments
SELECT plank.track(NULL);
SELECT plank.untrack(NULL);
SELECT plank.track('no_such_table');
CREATE VIEW v1 AS SELECT 1 AS x;
SELECT plank.track('v1');
CREATE SEQUENCE s1;
SELECT plank.track('s1');
CREATE TEMP TABLE tmp1 (id int);
SELECT plank.track('tmp1');
SELECT plank.track('pg_catalog.pg_class');
SELECT plank.track('plank.tracked_tables');

-- plank.capture() only works as an AFTER trigger
SELECT plank.capture();
CREATE TABLE t2 (id int);
CREATE TRIGGER wrong BEFORE INSERT ON t2 FOR EACH ROW EXECUTE FUNCTION plank.capture();
INSERT INTO t2 VALUES (1);
DROP TRIGGER wrong ON t2;
-- a statement trigger needs the transition tables
CREATE TRIGGER wrong AFTER INSERT ON t2 FOR EACH STATEMENT EXECUTE FUNCTION plank.capture();
INSERT INTO t2 VALUES (1);
DROP TRIGGER wrong ON t2;
CREATE TRIGGER wrong AFTER UPDATE ON t2 REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION plank.capture();
UPDATE t2 SET id = 2;

-- the extension cannot be moved: its objects live in schema plank
ALTER EXTENSION plank SET SCHEMA public;

DROP TABLE t1, t2, parted;
DROP VIEW v1;
DROP SEQUENCE s1;
