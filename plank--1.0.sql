/* plank--1.0.sql: change capture for Plank.
 *
 * Creates, in schema plank (made by CREATE EXTENSION from plank.control):
 *   plank.capture()          the C trigger function that NOTIFYs plank.change_channel()
 *   plank.track(regclass)    attach the capture triggers to a table
 *   plank.untrack(regclass)  remove them
 *   plank.tracked_tables     the tables that are tracked
 *   plank.overflow           payloads too large for NOTIFY, until the worker reads them
 *   plank.channel_grants     who may subscribe to NOTIFY channels (grant_channel, revoke_channel)
 *   plank.publish_grants     who may publish to NOTIFY channels over WebSocket (grant_publish, revoke_publish)
 * The payload format is documented in docs/PROTOCOL.md ("Change payload").
 */

\echo Use "CREATE EXTENSION plank" to load this file. \quit

CREATE FUNCTION plank.capture()
RETURNS trigger
AS 'MODULE_PATHNAME', 'plank_capture'
LANGUAGE C;

COMMENT ON FUNCTION plank.capture() IS
'Trigger function attached by plank.track: AFTER INSERT, UPDATE or DELETE FOR EACH STATEMENT with the '
'statement''s transition tables (REFERENCING NEW TABLE for INSERT, OLD TABLE and NEW TABLE for UPDATE, '
'OLD TABLE for DELETE; one event per trigger), AFTER TRUNCATE FOR EACH STATEMENT, or (older form) '
'AFTER INSERT/UPDATE/DELETE FOR EACH ROW. Trigger arguments: none (every column), or ''columns'', '
'c1, c2... (those and the identity key), or ''exclude'', c1, c2... (all but those). Describes each '
'changed row as a JSON object and sends the changes of a statement, in order, on the channel of '
'plank.change_channel(): one change, an array of changes under NOTIFY''s 8000-byte limit, or a '
'reference to an array of up to about 1 MB stored in plank.overflow (docs/PROTOCOL.md, "Change '
'payload"). A statement that changes no row sends nothing. Raises 39P01 (trigger_protocol_violated) '
'when fired in any other way, or FOR EACH STATEMENT without the transition tables it needs.';

CREATE TABLE plank.overflow (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON plank.overflow FROM PUBLIC;

COMMENT ON TABLE plank.overflow IS
'Change payloads too large for NOTIFY (8000 bytes): single large rows, and the changes of a large '
'statement in arrays of about 1 MB; stored by plank.capture() in the writer''s '
'transaction and deleted by the worker once it has read them. Empty at rest; written and read '
'only by Plank (as the table owner).';

CREATE TABLE plank.channel_grants (
    channel  text NOT NULL,
    grantee  name NOT NULL,
    PRIMARY KEY (channel, grantee)
);
REVOKE ALL ON plank.channel_grants FROM PUBLIC;
GRANT SELECT ON plank.channel_grants TO PUBLIC;

COMMENT ON TABLE plank.channel_grants IS
'Who may subscribe to plain NOTIFY channels over WebSocket: a client whose role is a member of '
'grantee (or any client, for grantee ''public'') may subscribe to channels matching the LIKE '
'pattern channel. Superusers may subscribe to any channel. Managed with plank.grant_channel and '
'plank.revoke_channel.';

CREATE FUNCTION plank.grant_channel(channel text, grantee name)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO plank.channel_grants (channel, grantee) VALUES (channel, grantee)
    ON CONFLICT DO NOTHING;
$$;
REVOKE ALL ON FUNCTION plank.grant_channel(text, name) FROM PUBLIC;

COMMENT ON FUNCTION plank.grant_channel(text, name) IS
'Lets members of a role (or ''public'': everyone) subscribe over WebSocket to the NOTIFY channels '
'matching a LIKE pattern (''chat'', ''room_%''). Idempotent. Executable by the extension owner and '
'superusers only.';

CREATE FUNCTION plank.revoke_channel(channel text, grantee name)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM plank.channel_grants g WHERE g.channel OPERATOR(pg_catalog.=) $1 AND g.grantee OPERATOR(pg_catalog.=) $2;
$$;
REVOKE ALL ON FUNCTION plank.revoke_channel(text, name) FROM PUBLIC;

COMMENT ON FUNCTION plank.revoke_channel(text, name) IS
'Removes a grant made by plank.grant_channel; existing subscriptions stay until they end. '
'Executable by the extension owner and superusers only.';

CREATE TABLE plank.publish_grants (
    channel  text NOT NULL,
    grantee  name NOT NULL,
    PRIMARY KEY (channel, grantee)
);
REVOKE ALL ON plank.publish_grants FROM PUBLIC;
GRANT SELECT ON plank.publish_grants TO PUBLIC;

COMMENT ON TABLE plank.publish_grants IS
'Who may publish over WebSocket ({"type":"publish"}) to NOTIFY channels: a client whose role is '
'a member of grantee (or any client, for grantee ''public'') may publish to channels matching '
'the LIKE pattern channel. Superusers may publish to any channel. Publishing does not grant '
'subscribing (plank.channel_grants). Managed with plank.grant_publish and plank.revoke_publish.';

CREATE FUNCTION plank.grant_publish(channel text, grantee name)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO plank.publish_grants (channel, grantee) VALUES (channel, grantee)
    ON CONFLICT DO NOTHING;
$$;
REVOKE ALL ON FUNCTION plank.grant_publish(text, name) FROM PUBLIC;

COMMENT ON FUNCTION plank.grant_publish(text, name) IS
'Lets WebSocket clients whose role is a member of grantee (or ''public'': every client) publish '
'to the NOTIFY channels matching a LIKE pattern (''chat'', ''room_%''); each publication reaches '
'that channel''s WebSocket subscribers with the sender''s role and token sub attached by the '
'server (docs/PROTOCOL.md "publish"). Idempotent. Raises 23502 for a NULL argument. '
'Executable by the extension owner and superusers only.';

CREATE FUNCTION plank.revoke_publish(channel text, grantee name)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM plank.publish_grants g WHERE g.channel OPERATOR(pg_catalog.=) $1 AND g.grantee OPERATOR(pg_catalog.=) $2;
$$;
REVOKE ALL ON FUNCTION plank.revoke_publish(text, name) FROM PUBLIC;

COMMENT ON FUNCTION plank.revoke_publish(text, name) IS
'Removes a grant made by plank.grant_publish (the same pattern and grantee); the next publish '
'request is checked against the grants as they are then. Raises nothing. Executable by the '
'extension owner and superusers only.';

CREATE FUNCTION plank._drop_triggers(rel regclass)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $$
DECLARE
    trg record;
    found boolean := false;
BEGIN
    FOR trg IN SELECT t.tgname, t.tgrelid::pg_catalog.regclass AS tgrel
                 FROM pg_catalog.pg_trigger t
                WHERE NOT t.tgisinternal AND t.tgparentid OPERATOR(pg_catalog.=) 0::pg_catalog.oid
                  AND ((t.tgrelid OPERATOR(pg_catalog.=) rel AND t.tgname OPERATOR(pg_catalog.=) ANY (ARRAY['plank_capture_row', 'plank_capture_insert',
                                                         'plank_capture_update', 'plank_capture_delete',
                                                         'plank_capture_truncate', 'plank_replica_insert',
                                                         'plank_replica_update', 'plank_replica_delete',
                                                         'plank_replica_truncate']::pg_catalog.name[]))
                       OR (t.tgrelid OPERATOR(pg_catalog.=) ANY (SELECT p.relid FROM pg_catalog.pg_partition_tree(rel) p)
                           AND t.tgname OPERATOR(pg_catalog.=) ANY (ARRAY['plank_partition_insert', 'plank_partition_update',
                                            'plank_partition_delete', 'plank_partition_truncate']::pg_catalog.name[])))
                ORDER BY (t.tgrelid OPERATOR(pg_catalog.=) rel) DESC LOOP
        found := found OR trg.tgrel OPERATOR(pg_catalog.=) rel;
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', trg.tgname, trg.tgrel);
    END LOOP;
    RETURN found;
END;
$$;

COMMENT ON FUNCTION plank._drop_triggers(regclass) IS
'Internal to plank.track and plank.untrack: drops the capture triggers of a table (plank_capture_row, '
'plank_capture_insert/update/delete/truncate, plank_replica_insert/update/delete/truncate) and those plank.track put on its partitions '
'(plank_partition_insert/update/delete/truncate). Returns whether the table itself had any. Runs as the '
'caller (DROP TRIGGER needs ownership). Raises what DROP TRIGGER raises.';

CREATE FUNCTION plank.track(rel regclass,
                            columns text[] DEFAULT NULL,
                            exclude_columns text[] DEFAULT NULL,
                            operations text[] DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $$
DECLARE
    kind pg_catalog."char";
    persistence pg_catalog."char";
    nsp pg_catalog.name;
    ops pg_catalog.text[];
    row_events pg_catalog.text[];
    bad pg_catalog.text;
    args pg_catalog.text := '';
    col pg_catalog.text;
    op pg_catalog.text;
    part pg_catalog.regclass;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    SELECT c.relkind, c.relpersistence, n.nspname
      INTO kind, persistence, nsp
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.oid OPERATOR(pg_catalog.=) rel;

    IF kind OPERATOR(pg_catalog.<>) ALL (ARRAY['r', 'p']::pg_catalog."char"[]) THEN
        RAISE EXCEPTION '"%" is not a table', rel
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Only ordinary and partitioned tables can be tracked.';
    END IF;
    IF persistence OPERATOR(pg_catalog.=) 't' THEN
        RAISE EXCEPTION 'cannot track temporary table "%"', rel
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Changes to a temporary table are visible only to the session that made them.';
    END IF;
    IF nsp OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog', 'information_schema', 'plank']::pg_catalog.name[]) OR nsp OPERATOR(pg_catalog.~~) 'pg\_toast%' THEN
        RAISE EXCEPTION 'cannot track table "%" in system schema "%"', rel, nsp
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    IF columns IS NOT NULL AND exclude_columns IS NOT NULL THEN
        RAISE EXCEPTION 'columns and exclude_columns cannot both be given'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT u.c INTO bad
      FROM pg_catalog.unnest(coalesce(columns, exclude_columns)) AS u(c)
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid OPERATOR(pg_catalog.=) rel AND a.attname OPERATOR(pg_catalog.=) u.c
                          AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'column "%" of table "%" does not exist', bad, rel
            USING ERRCODE = 'undefined_column';
    END IF;

    ops := coalesce(operations, ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']);
    SELECT o INTO bad FROM pg_catalog.unnest(ops) AS o
     WHERE o IS NULL OR pg_catalog.upper(o) OPERATOR(pg_catalog.<>) ALL (ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) LIMIT 1;
    IF FOUND OR pg_catalog.cardinality(ops) OPERATOR(pg_catalog.=) 0 THEN
        RAISE EXCEPTION 'invalid operation "%"', coalesce(bad, '')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Operations are INSERT, UPDATE, DELETE and TRUNCATE.';
    END IF;
    SELECT pg_catalog.array_agg(DISTINCT pg_catalog.upper(o)) INTO ops FROM pg_catalog.unnest(ops) AS o;
    row_events := ARRAY(SELECT o FROM pg_catalog.unnest(ops) AS o WHERE o OPERATOR(pg_catalog.<>) 'TRUNCATE'
                         ORDER BY pg_catalog.array_position(ARRAY['INSERT','UPDATE','DELETE'], o));

    IF columns IS NOT NULL OR exclude_columns IS NOT NULL THEN
        args := pg_catalog.quote_literal(CASE WHEN columns IS NOT NULL THEN 'columns' ELSE 'exclude' END);
        FOREACH col IN ARRAY coalesce(columns, exclude_columns) LOOP
            args := args OPERATOR(pg_catalog.||) ', ' OPERATOR(pg_catalog.||) pg_catalog.quote_literal(col);
        END LOOP;
    END IF;

    -- tracking again replaces the triggers (and their options)
    PERFORM plank._drop_triggers(rel);
    -- one statement trigger per operation: PostgreSQL allows transition
    -- tables only on single-event triggers
    FOREACH op IN ARRAY row_events LOOP
        EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION plank.capture(%s)',
                       'plank_capture_' OPERATOR(pg_catalog.||) pg_catalog.lower(op), op, rel,
                       CASE WHEN op OPERATOR(pg_catalog.=) 'INSERT' THEN 'NEW TABLE AS plank_new'
                            WHEN op OPERATOR(pg_catalog.=) 'UPDATE' THEN 'OLD TABLE AS plank_old NEW TABLE AS plank_new'
                            ELSE 'OLD TABLE AS plank_old' END,
                       args);
        -- statement triggers of a partitioned table fire only for statements
        -- naming it: its partitions get their own, for statements that name
        -- them (partitions added later: track the table again)
        FOR part IN SELECT t.relid FROM pg_catalog.pg_partition_tree(rel) t
                      JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.relid
                     WHERE t.relid OPERATOR(pg_catalog.<>) rel AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p']::pg_catalog."char"[]) LOOP
            EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s '
                           'FOR EACH STATEMENT EXECUTE FUNCTION plank.capture(%s)',
                           'plank_partition_' OPERATOR(pg_catalog.||) pg_catalog.lower(op), op, part,
                           CASE WHEN op OPERATOR(pg_catalog.=) 'INSERT' THEN 'NEW TABLE AS plank_new'
                                WHEN op OPERATOR(pg_catalog.=) 'UPDATE' THEN 'OLD TABLE AS plank_old NEW TABLE AS plank_new'
                                ELSE 'OLD TABLE AS plank_old' END,
                           args);
        END LOOP;
    END LOOP;
    IF 'TRUNCATE' OPERATOR(pg_catalog.=) ANY (ops) THEN
        EXECUTE pg_catalog.format('CREATE TRIGGER plank_capture_truncate AFTER TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION plank.capture()', rel);
        -- TRUNCATE triggers are not cloned to partitions: a TRUNCATE naming a
        -- partition is sent with the partition named
        FOR part IN SELECT t.relid FROM pg_catalog.pg_partition_tree(rel) t
                      JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.relid
                     WHERE t.relid OPERATOR(pg_catalog.<>) rel AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p']::pg_catalog."char"[]) LOOP
            EXECUTE pg_catalog.format('CREATE TRIGGER plank_partition_truncate AFTER TRUNCATE ON %s '
                           'FOR EACH STATEMENT EXECUTE FUNCTION plank.capture()', part);
        END LOOP;
    END IF;

    -- changes applied by logical replication (docs/SCALING.md): the apply
    -- worker fires row triggers only, and only those enabled for replica
    FOREACH op IN ARRAY row_events LOOP
        EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER %s ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION plank.capture(%s)',
                       'plank_replica_' OPERATOR(pg_catalog.||) pg_catalog.lower(op), op, rel, args);
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE REPLICA TRIGGER %I', rel,
                       'plank_replica_' OPERATOR(pg_catalog.||) pg_catalog.lower(op));
    END LOOP;
    IF 'TRUNCATE' OPERATOR(pg_catalog.=) ANY (ops) THEN
        EXECUTE pg_catalog.format('CREATE TRIGGER plank_replica_truncate AFTER TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION plank.capture()', rel);
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE REPLICA TRIGGER plank_replica_truncate', rel);
    END IF;

    RETURN pg_catalog.format('tracking %s: %s; columns: %s', rel,
                  pg_catalog.array_to_string(ARRAY(SELECT o FROM pg_catalog.unnest(ops) AS o
                                         ORDER BY pg_catalog.array_position(ARRAY['INSERT','UPDATE','DELETE','TRUNCATE'], o)), ', '),
                  CASE WHEN columns IS NOT NULL THEN pg_catalog.array_to_string(columns, ', ') OPERATOR(pg_catalog.||) ' (and the key)'
                       WHEN exclude_columns IS NOT NULL THEN 'all but ' OPERATOR(pg_catalog.||) pg_catalog.array_to_string(exclude_columns, ', ')
                       ELSE 'all' END);
END;
$$;

COMMENT ON FUNCTION plank.track(regclass, text[], text[], text[]) IS
'Starts sending the changes of a table to Plank subscribers. For each chosen operation among INSERT, '
'UPDATE and DELETE it creates a statement trigger with transition tables, plank_capture_insert '
'(AFTER INSERT, REFERENCING NEW TABLE), plank_capture_update (AFTER UPDATE, REFERENCING OLD TABLE and '
'NEW TABLE), plank_capture_delete (AFTER DELETE, REFERENCING OLD TABLE), all FOR EACH STATEMENT, so '
'that a statement changing many rows costs a few notifications; on a partitioned table the same '
'triggers, named plank_partition_<op>, go on every partition, for statements naming a partition '
'(track again after adding partitions). Unless left out, plank_capture_truncate (AFTER TRUNCATE, FOR '
'EACH STATEMENT), and plank_partition_truncate on every partition (a TRUNCATE naming a partition is '
'sent under the tracked table with the partition named). For the changes a logical replication '
'subscription applies (docs/SCALING.md), where statement triggers never fire, it also creates '
'plank_replica_<op> FOR EACH ROW (plank_replica_truncate FOR EACH STATEMENT) and enables them for '
'replica only (ALTER TABLE ... ENABLE REPLICA TRIGGER): they send changes applied by the '
'subscription''s workers, not the rows copied by its initial synchronisation. Arguments: rel, the table; columns (text[]) sends only those columns (and the '
'identity key); exclude_columns (text[]) all but those; operations (text[], case-insensitive) '
'chooses among INSERT, UPDATE, DELETE, TRUNCATE (default all). Tracking a tracked table replaces its '
'triggers and options. Returns what it did, as text. Errors: 22004 null table, 42809 not an '
'ordinary or partitioned table, 0A000 temporary table, 42501 system schema, 42703 unknown column, '
'22023 bad options; needs ownership of the table (CREATE TRIGGER).';

CREATE FUNCTION plank.untrack(rel regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT plank._drop_triggers(rel) THEN
        RAISE NOTICE 'table "%" is not tracked, skipping', rel;
    END IF;
END;
$$;

COMMENT ON FUNCTION plank.untrack(regclass) IS
'Stops sending the changes of a table: drops the triggers made by plank.track (those of the table '
'and the plank_partition_* triggers of its partitions). Idempotent: an untracked table gets a '
'NOTICE. Errors: 22004 null table; needs ownership of the table and its partitions (DROP TRIGGER).';

CREATE VIEW plank.tracked_tables AS
SELECT c.oid::regclass AS table_name,
       n.nspname AS schema_name,
       c.relname AS relname,
       bool_and(t.tgenabled <> 'D') AS enabled,
       ARRAY(SELECT op FROM (VALUES (4, 'INSERT', 1), (16, 'UPDATE', 2), (8, 'DELETE', 3), (32, 'TRUNCATE', 4))
                             AS v(bit, op, ord)
              WHERE bit_or(t.tgtype::int) & v.bit <> 0 ORDER BY v.ord) AS operations,
       max(CASE WHEN a.args[1] = 'columns' THEN a.args[2:] END) AS columns,
       max(CASE WHEN a.args[1] = 'exclude' THEN a.args[2:] END) AS exclude_columns
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN LATERAL (SELECT CASE WHEN t.tgnargs > 0
                                  THEN (pg_catalog.string_to_array(pg_catalog.encode(t.tgargs, 'escape'), '\000'))[1:t.tgnargs]
                             END AS args) a
 WHERE t.tgname IN ('plank_capture_row', 'plank_capture_insert', 'plank_capture_update',
                    'plank_capture_delete', 'plank_capture_truncate')
   AND t.tgfoid = 'plank.capture()'::pg_catalog.regprocedure
   AND t.tgparentid = 0   -- partitions inherit the parent's triggers; list the parent only
 GROUP BY c.oid, n.nspname, c.relname;

COMMENT ON VIEW plank.tracked_tables IS
'Tables whose changes Plank sends (made by plank.track): one row per table, with whether its capture '
'triggers are enabled, the operations sent, and the columns chosen (columns, or exclude_columns; '
'both NULL: every column).';

GRANT USAGE ON SCHEMA plank TO PUBLIC;
GRANT SELECT ON plank.tracked_tables TO PUBLIC;

-- Monitoring and control (docs in README.md, "Monitoring").  Readable by
-- superusers and members of pg_monitor; plank.disconnect and plank.publish by
-- superusers, or roles granted EXECUTE.

CREATE FUNCTION plank.stats(
    OUT worker_pid integer,
    OUT epoch text,
    OUT started timestamptz,
    OUT last_seq bigint,
    OUT connections integer,
    OUT subscriptions integer,
    OUT connections_total bigint,
    OUT notifications_received bigint,
    OUT messages_sent bigint,
    OUT bytes_sent bigint,
    OUT clients_dropped_slow bigint,
    OUT resyncs bigint,
    OUT protocol_errors bigint,
    OUT auth_failures bigint,
    OUT replay_ring_events bigint,
    OUT replay_ring_bytes bigint,
    OUT notify_queue_usage double precision,
    OUT replication_state text,
    OUT tables_syncing integer,
    OUT origin_lsn pg_lsn,
    OUT origin_commit_time timestamptz,
    OUT replication_lag_seconds double precision)
RETURNS record
AS 'MODULE_PATHNAME', 'plank_stats_sql'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION plank.stats() IS
'The worker''s counters since it started (epoch), read from shared memory: notifications received, '
'messages and bytes sent, clients closed for being slow (1013), resync_required sent, requests '
'answered with an error, refused tokens, replay ring size, and pg_notification_queue_usage(). '
'worker_pid, epoch and started are NULL while no worker runs. Logical replication (docs/SCALING.md): '
'replication_state is none (no subscription in this database), syncing (a table''s initial '
'synchronisation is not finished), down (a subscription is disabled or its apply worker is not '
'running) or streaming; tables_syncing counts the tables not yet ready; origin_lsn and '
'origin_commit_time are the primary''s commit end LSN and commit time of the last replicated '
'transaction whose changes were sent, replication_lag_seconds its apply time here minus that commit '
'time (NULL until one was sent since the server started). Raises nothing.';

CREATE VIEW plank.stats AS SELECT * FROM plank.stats();
COMMENT ON VIEW plank.stats IS 'One row: the Plank worker''s state and counters (see plank.stats()).';

CREATE FUNCTION plank.connections(
    OUT id bigint,
    OUT client_addr text,
    OUT role text,
    OUT sub text,
    OUT claims jsonb,
    OUT connected_at timestamptz,
    OUT subscriptions integer,
    OUT messages_sent bigint,
    OUT bytes_sent bigint,
    OUT queue_depth integer,
    OUT queue_bytes bigint,
    OUT last_activity timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'plank_connections_sql'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION plank.connections() IS
'One row per connected WebSocket client: its id (for plank.disconnect), address, role (NULL until '
'authenticated), the "sub" claim of its token (NULL without a token or sub; its first 127 bytes), '
'the claims of its token (jsonb; NULL unless the caller is a superuser, without a token, or '
'beyond 511 bytes), subscriptions, messages and bytes sent, outgoing queue (messages, bytes) and '
'the last time it sent a message. Lists at most min(plank.max_connections + '
'plank.max_unauthenticated at server start, 10000) clients. Raises nothing.';

CREATE VIEW plank.connections AS SELECT * FROM plank.connections();
COMMENT ON VIEW plank.connections IS 'Connected WebSocket clients (see plank.connections()).';

CREATE FUNCTION plank.subscriptions(
    OUT connection_id bigint,
    OUT id text,
    OUT kind text,
    OUT target text,
    OUT ops text,
    OUT filter text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'plank_subscriptions_sql'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION plank.subscriptions() IS
'One row per subscription: the connection, the client''s subscription id, kind (table or channel), '
'target (schema.table or channel), operations (tables), and the filter as text (first 127 bytes). '
'Lists at most as many subscriptions as plank.connections lists clients. Raises nothing.';

CREATE VIEW plank.subscriptions AS SELECT * FROM plank.subscriptions();
COMMENT ON VIEW plank.subscriptions IS 'Live subscriptions of WebSocket clients (see plank.subscriptions()).';

CREATE FUNCTION plank.disconnect(id bigint, ban interval DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'plank_disconnect_sql'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION plank.disconnect(bigint, interval) IS
'Closes the WebSocket client with this id (plank.connections.id) with close code 4003, after '
'which the bundled client does not reconnect. With a ban (a positive interval; a month counts '
'30 days), new connections of the same identity are closed with 4004 until the ban ends (or the '
'server restarts), by every worker of the database: the identity is the token''s sub, else the '
'role its token names, else (no token) the client''s address. Returns false when no such client '
'is listed, NULL for a NULL id. Raises 55000 when no worker runs, 22023 for a ban that is not '
'positive, 53400 when too many requests are pending or 128 bans are in force.';

CREATE FUNCTION plank.publish(channel text, payload jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF channel IS NULL OR payload IS NULL THEN
        RAISE EXCEPTION 'channel and payload must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF channel OPERATOR(pg_catalog.~~) 'plank%' THEN
        RAISE EXCEPTION 'channel "%" is reserved: names starting with "plank" are Plank''s own', channel
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Publish on another channel.';
    END IF;
    PERFORM pg_catalog.pg_notify(channel, payload::pg_catalog.text);
END;
$$;

COMMENT ON FUNCTION plank.publish(text, jsonb) IS
'Sends a JSON payload to the subscribers of a NOTIFY channel, at commit (pg_notify). The payload '
'must stay under NOTIFY''s 8000 bytes. Raises 22004 for NULL arguments, 22023 for a channel whose name starts with "plank".';

CREATE FUNCTION plank.change_channel()
RETURNS text
AS 'MODULE_PATHNAME', 'plank_change_channel_sql'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION plank.change_channel() IS
'The NOTIFY channel on which plank.capture() sends table changes to the worker: "plank_" and 64 '
'random bits, drawn at server start, so that no session can forge changes with pg_notify(). '
'For superusers who LISTEN to the raw change payloads (tests, benchmarks). Raises nothing.';

REVOKE ALL ON FUNCTION plank.change_channel() FROM PUBLIC;

REVOKE ALL ON FUNCTION plank.stats(), plank.connections(), plank.subscriptions(),
    plank.disconnect(bigint, interval), plank.publish(text, jsonb) FROM PUBLIC;
REVOKE ALL ON plank.stats, plank.connections, plank.subscriptions FROM PUBLIC;
GRANT EXECUTE ON FUNCTION plank.stats(), plank.connections(), plank.subscriptions() TO pg_monitor;
GRANT SELECT ON plank.stats, plank.connections, plank.subscriptions TO pg_monitor;
