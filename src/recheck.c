/*-------------------------------------------------------------------------
 *
 * recheck.c
 *		Privilege changes on live subscriptions.  What a subscription may
 *		receive is decided at subscribe time (protocol.c); this file applies
 *		later changes of the catalogs to the subscriptions that exist: REVOKE
 *		and GRANT on a table, its columns or its schema, ENABLE / DISABLE /
 *		FORCE ROW LEVEL SECURITY, new and dropped policies, ALTER ROLE
 *		(BYPASSRLS), role memberships, dropped tables and dropped roles; and
 *		renamed tables, whose subscriptions follow them (subscriptions are
 *		indexed by name, as changes name their table).
 *
 * PostgreSQL announces catalog changes to every backend through shared
 * invalidation messages; GRANT/REVOKE on a table or its columns, CREATE /
 * DROP / ALTER POLICY and ALTER TABLE ... ROW LEVEL SECURITY each send a
 * relcache invalidation for the table, ALTER ROLE / DROP ROLE / GRANT role a
 * syscache invalidation of pg_authid / pg_auth_members, GRANT / REVOKE on a
 * schema one of pg_namespace.  The worker registers callbacks for these once
 * at start; they only note what changed (they run inside invalidation
 * processing, where catalog access and errors are not allowed).
 *
 * A backend reads the messages only when it calls AcceptInvalidationMessages,
 * which every transaction start does.  The worker starts transactions to
 * read notifications (worker 0) and to handle subscribe requests; so that a
 * change is noticed when neither happens, a timer starts and commits an
 * empty transaction every RECHECK_INTERVAL_MS while at least one table
 * subscription exists (none: no timer, no wake-ups).  After any of these the
 * main loop calls plank_recheck_run(), which recomputes for each affected
 * subscription what subscribe computed, from the catalogs only (no user code
 * runs), once per (table, role) pair.  Worker 0 rechecks right after reading
 * a batch of notifications and before dispatching it, and the other workers
 * of plank.workers before each batch they take from worker 0's queue, so a
 * change written after the privilege change is never sent under the old
 * privileges.  The table is locked without waiting; when someone else holds
 * it in ACCESS EXCLUSIVE mode, its subscriptions are rechecked at the next
 * tick (no writer can commit a change of it meanwhile either).
 *
 * What the client sees (docs/PROTOCOL.md, docs/SECURITY.md "Privilege changes
 * on live subscriptions"): a subscription whose role lost SELECT ends with
 * {"type":"error","sub":<id>,"code":"permission_denied",...}; column and
 * row-level security changes apply to later changes; a connection whose role
 * was dropped gets an unknown_role error and close code 4005; a subscription
 * whose table was renamed or moved to another schema (ALTER TABLE ... RENAME,
 * SET SCHEMA, ALTER SCHEMA ... RENAME) moves to the new name and its client
 * gets {"type":"table_renamed","sub":<id>,"schema":...,"table":...}.
 *
 * Sources followed: PostgreSQL src/include/utils/inval.h and
 * src/backend/utils/cache/inval.c (what sends which invalidation, and the
 * rules for callbacks), docs "Privileges" and "Row Security Policies".
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rls.h"
#include "utils/syscache.h"

#include "runtime.h"
#include "event.h"
#include "check.h"
#include "conn.h"
#include "delivery.h"
#include "worker.h"

/* how often an idle worker with table subscriptions reads invalidations */
#define RECHECK_INTERVAL_MS 500

/* Private-use close code (RFC 6455 7.4.2), documented in docs/PROTOCOL.md */
#define PLANK_CLOSE_ROLE_DROPPED 4005

/* tables with changed catalog entries; more than this: recheck everything */
#define MAX_PENDING_RELS 32

/* set by the invalidation callbacks */
static bool recheck_all = false;
static bool roles_changed = false;
static Oid	pending_rels[MAX_PENDING_RELS];
static int	npending_rels = 0;

/* a pass that failed is retried at the next tick, not on every loop pass */
static bool retry_at_tick = false;

static lws_sorted_usec_list_t recheck_sul;
static bool timer_armed = false;
static bool tick_due = false;

static MemoryContext recheck_cxt = NULL;

static void
note_rel(Oid relid)
{
	int			i;

	if (recheck_all)
		return;
	for (i = 0; i < npending_rels; i++)
		if (pending_rels[i] == relid)
			return;
	if (npending_rels == MAX_PENDING_RELS)
		recheck_all = true;
	else
		pending_rels[npending_rels++] = relid;
}

/* Relcache invalidation of relid (InvalidOid: of every relation). */
static void
relcache_changed(Datum arg, Oid relid)
{
	if (OidIsValid(relid))
		note_rel(relid);
	else
		recheck_all = true;
}

/* pg_authid or pg_auth_members changed: a role or a membership. */
static void
roles_changed_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	recheck_all = true;
	roles_changed = true;
}

/* pg_namespace changed: perhaps a schema's USAGE. */
static void
namespace_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	recheck_all = true;
}

/*
 * plank_recheck_init
 *		Register the invalidation callbacks (once, at worker start; there is
 *		no way to unregister them).
 */
void
plank_recheck_init(void)
{
	CacheRegisterRelcacheCallback(relcache_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, roles_changed_cb, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, roles_changed_cb, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, namespace_changed, (Datum) 0);
	recheck_cxt = AllocSetContextCreate(TopMemoryContext, "plank recheck",
										ALLOCSET_SMALL_SIZES);
}

/* What a role may now read of a table: computed once per pair and pass. */
typedef enum Verdict
{
	VERDICT_RETRY,				/* the table is locked: look again later */
	VERDICT_TABLE_GONE,
	VERDICT_DENIED_SCHEMA,
	VERDICT_DENIED,
	VERDICT_READABLE
} Verdict;

typedef struct AccessKey
{
	Oid			relid;
	Oid			roleid;
} AccessKey;

typedef struct Access
{
	AccessKey	key;
	Verdict		verdict;
	char	   *table;			/* the qualified name, for messages */
	char	   *nspname;		/* the names it has now */
	char	   *relname;
	List	   *columns;		/* NIL: every column */
	char	   *colkey;			/* the columns as one string, as subscribe makes it */
	bool		rls;
	List	   *keycols;
	/* what the pass did to the pair's subscriptions, logged once per pair */
	int			nended;
	const char *why_ended;
	int			ncolumns_changed;
	int			nrls_changed;
	int			nrenamed;
} Access;

/*
 * Compute what roleid may read of relid, in recheck_cxt, inside a
 * transaction.  The table is locked with ACCESS SHARE without waiting: a
 * table locked by someone else (ALTER TABLE in a long transaction) is
 * looked at again at the next tick, so the worker never waits for a lock.
 */
static void
compute_access(Access *a)
{
	Oid			relid = a->key.relid;
	Oid			roleid = a->key.roleid;
	MemoryContext old;

	a->nended = a->ncolumns_changed = a->nrls_changed = a->nrenamed = 0;
	a->why_ended = NULL;
	a->columns = NIL;
	a->colkey = NULL;
	a->rls = false;
	a->keycols = NIL;
	a->table = a->nspname = a->relname = NULL;
	if (!ConditionalLockRelationOid(relid, AccessShareLock))
	{
		a->verdict = VERDICT_RETRY;
		return;
	}
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
	{
		a->verdict = VERDICT_TABLE_GONE;
		return;
	}
	old = MemoryContextSwitchTo(recheck_cxt);
	a->nspname = get_namespace_name(get_rel_namespace(relid));
	a->relname = get_rel_name(relid);
	a->table = psprintf("%s.%s", quote_identifier(a->nspname), quote_identifier(a->relname));
	switch (plank_table_readable(relid, roleid, recheck_cxt, &a->columns))
	{
		case PLANK_READ_NO_SCHEMA:
			a->verdict = VERDICT_DENIED_SCHEMA;
			break;
		case PLANK_READ_NONE:
			a->verdict = VERDICT_DENIED;
			break;
		case PLANK_READ_COLUMNS:
		case PLANK_READ_ALL:
			a->verdict = VERDICT_READABLE;
			break;
	}
	if (a->verdict == VERDICT_READABLE)
	{
		if (a->columns != NIL)
		{
			StringInfoData key;
			ListCell   *lc;

			initStringInfo(&key);
			foreach(lc, a->columns)
				appendStringInfo(&key, "%s,", (const char *) lfirst(lc));
			a->colkey = key.data;
		}
		a->rls = check_enable_rls(relid, roleid, true) == RLS_ENABLED;
		if (a->rls)
			a->keycols = plank_visibility_key_columns(relid);
	}
	MemoryContextSwitchTo(old);
}

/*
 * End a subscription whose role may no longer read its table: tell the
 * client with an error naming the subscription, then unlink it.  Its queued
 * messages go with it (they point at it).
 */
static void
end_sub(PlankSub *sub, Access *a, const char *code, const char *message)
{
	PlankConn  *conn = sub->conn;
	StringInfoData buf;

	a->nended++;
	a->why_ended = message;
	plank_conn_drop_sub_messages(conn, sub);
	initStringInfo(&buf);
	appendStringInfoString(&buf, "\"type\":\"error\",\"sub\":");
	escape_json(&buf, sub->id);
	appendStringInfo(&buf, ",\"code\":\"%s\",\"message\":", code);
	escape_json(&buf, message);
	appendStringInfoChar(&buf, '}');
	plank_conn_send_text(conn, buf.data, buf.len);
	pfree(buf.data);
	plank_protocol_sub_remove(sub);
}

static void
free_names(char **names, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		pfree(names[i]);
	if (names)
		pfree(names);
}

/* Copy a list of names into an array in a connection's memory. */
static char **
copy_names(MemoryContext cxt, List *names, int *n)
{
	char	  **out;
	ListCell   *lc;
	int			i = 0;

	*n = list_length(names);
	if (*n == 0)
		return NULL;
	out = MemoryContextAlloc(cxt, *n * sizeof(char *));
	foreach(lc, names)
		out[i++] = MemoryContextStrdup(cxt, (const char *) lfirst(lc));
	return out;
}

static bool
name_in(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
		if (strcmp((const char *) lfirst(lc), name) == 0)
			return true;
	return false;
}

/*
 * Bring one subscription in line with what its role may now read.  Returns
 * false when the table was locked and the subscription must be looked at
 * again later.
 */
static bool
apply_access(PlankSub *sub, Access *a)
{
	PlankConn  *conn = sub->conn;
	int			i;

	switch (a->verdict)
	{
		case VERDICT_RETRY:
			return false;
		case VERDICT_TABLE_GONE:
			end_sub(sub, a, "unknown_table", "the table of the subscription was dropped");
			return true;
		case VERDICT_DENIED_SCHEMA:
			end_sub(sub, a, "permission_denied",
					psprintf("permission denied for the schema of table %s", a->table));
			return true;
		case VERDICT_DENIED:
			end_sub(sub, a, "permission_denied",
					psprintf("permission denied for table %s", a->table));
			return true;
		case VERDICT_READABLE:
			break;
	}

	/* renamed (the table, its schema, or moved to another schema) */
	if (plank_subs_rename_table(sub, a->nspname, a->relname))
	{
		StringInfoData buf;
		PlankFrame *frame;

		a->nrenamed++;
		initStringInfo(&buf);
		appendStringInfoString(&buf, "\"type\":\"table_renamed\",\"schema\":");
		escape_json(&buf, a->nspname);
		appendStringInfoString(&buf, ",\"table\":");
		escape_json(&buf, a->relname);
		appendStringInfoChar(&buf, '}');
		frame = plank_frame_make(buf.data, buf.len);
		plank_conn_send(conn, frame, sub);
		plank_frame_unref(frame);
		pfree(buf.data);
	}

	/* a filter on a column the role may no longer read ends it too */
	if (a->columns != NIL)
		for (i = 0; i < sub->nfilters; i++)
			if (!name_in(a->columns, sub->filters[i].column))
			{
				end_sub(sub, a, "permission_denied",
						psprintf("permission denied for column \"%s\" of table %s",
								 sub->filters[i].column, a->table));
				return true;
			}

	/* a subscription that stops reading the log takes what it has to get first */
	if ((a->colkey != NULL && sub->colkey == NULL) || (a->rls && !sub->rls))
		plank_subs_pull_now(conn);

	if ((a->colkey == NULL) != (sub->colkey == NULL) ||
		(a->colkey && strcmp(a->colkey, sub->colkey) != 0))
	{
		a->ncolumns_changed++;
		free_names(sub->columns, sub->ncolumns);
		if (sub->colkey)
			pfree(sub->colkey);
		sub->columns = copy_names(conn->mcxt, a->columns, &sub->ncolumns);
		sub->colkey = a->colkey ? MemoryContextStrdup(conn->mcxt, a->colkey) : NULL;
	}

	if (a->rls != sub->rls)
	{
		a->nrls_changed++;
		sub->rls = a->rls;
		plank_filter_index_sub_changed(sub);
	}
	/* the identity columns may change while RLS applies (a new primary key) */
	free_names(sub->keycols, sub->nkeycols);
	sub->keycols = copy_names(conn->mcxt, a->keycols, &sub->nkeycols);
	return true;
}

/* A list of column names for a log line: quoted, separated by commas. */
static char *
names_text(List *names)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, names)
		appendStringInfo(&buf, "%s%s", lc == list_head(names) ? "" : ", ",
						 quote_identifier((const char *) lfirst(lc)));
	return buf.data;
}

/* Log what a pass changed, one line per (table, role) pair and kind of change. */
static void
log_changes(HTAB *seen)
{
	HASH_SEQ_STATUS status;
	Access	   *a;

	hash_seq_init(&status, seen);
	while ((a = hash_seq_search(&status)) != NULL)
	{
		const char *role = GetUserNameFromId(a->key.roleid, true);

		if (role == NULL)
			role = "?";
		if (a->nended > 0)
			ereport(plank_log_level,
					(errmsg_plural("plank ended %d subscription of role \"%s\": %s",
								   "plank ended %d subscriptions of role \"%s\": %s",
								   a->nended, a->nended, role, a->why_ended)));
		if (a->ncolumns_changed > 0)
			ereport(plank_log_level,
					(errmsg_plural("plank: %d subscription of role \"%s\" now receives %s of table %s",
								   "plank: %d subscriptions of role \"%s\" now receive %s of table %s",
								   a->ncolumns_changed, a->ncolumns_changed, role,
								   a->columns ? psprintf("only the columns %s", names_text(a->columns)) : "every column",
								   a->table)));
		if (a->nrls_changed > 0)
			ereport(plank_log_level,
					(errmsg_plural("plank: row-level security of table %s %s to %d subscription of role \"%s\"",
								   "plank: row-level security of table %s %s to %d subscriptions of role \"%s\"",
								   a->nrls_changed, a->table,
								   a->rls ? "now applies" : "no longer applies",
								   a->nrls_changed, role)));
		if (a->nrenamed > 0)
			ereport(plank_log_level,
					(errmsg_plural("plank: %d subscription of role \"%s\" follows its table, now named %s",
								   "plank: %d subscriptions of role \"%s\" follow their table, now named %s",
								   a->nrenamed, a->nrenamed, role, a->table)));
	}
}

/* A connection whose role was dropped: tell it and close it. */
static void
close_if_role_dropped(PlankConn *conn, void *arg)
{
	StringInfoData buf;
	char	   *message;

	if (!OidIsValid(conn->ident.roleid) || conn->closing || conn->close_when_drained)
		return;
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(conn->ident.roleid)))
		message = psprintf("role \"%s\" no longer exists", conn->ident.role);
	else if (!plank_check_role_allowed(conn->ident.roleid, conn->ident.role))
		message = psprintf("role \"%s\" may no longer be used by clients", conn->ident.role);
	else
		return;
	ereport(plank_log_level,
			(errmsg("plank closing connection %llu from %s: %s",
					(unsigned long long) conn->id, conn->peer, message)));
	initStringInfo(&buf);
	appendStringInfoString(&buf, "\"type\":\"error\",\"code\":\"unknown_role\",\"message\":");
	escape_json(&buf, message);
	appendStringInfoChar(&buf, '}');
	plank_conn_send_text(conn, buf.data, buf.len);
	plank_conn_close_after_send(conn, PLANK_CLOSE_ROLE_DROPPED, "role no longer valid");
}

/*
 * The recheck itself, inside the caller's transaction: the roles of every
 * connection when roles changed, then the given subscriptions.
 */
static void
recheck(bool roles, List *subs)
{
	HTAB	   *seen;
	HASHCTL		ctl;
	ListCell   *lc;

	if (roles)
		plank_server_conns_walk(close_if_role_dropped, NULL);
	if (subs == NIL)
		return;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(AccessKey);
	ctl.entrysize = sizeof(Access);
	ctl.hcxt = recheck_cxt;
	seen = hash_create("plank recheck", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	foreach(lc, subs)
	{
		PlankSub   *sub = (PlankSub *) lfirst(lc);
		AccessKey	key;
		Access	   *a;
		bool		found;

		if (sub->conn->closing || sub->conn->close_when_drained)
			continue;
		memset(&key, 0, sizeof(key));
		key.relid = sub->relid;
		key.roleid = sub->conn->ident.roleid;
		a = hash_search(seen, &key, HASH_ENTER, &found);
		if (!found)
			compute_access(a);
		if (!apply_access(sub, a))
			note_rel(sub->relid);
	}
	log_changes(seen);
}

/*
 * plank_recheck_run
 *		Apply the catalog changes noted since the last run to the table
 *		subscriptions they concern (see the file header).  Called from the
 *		main loop, outside any transaction and never while an event is being
 *		dispatched; costs a few flag tests when nothing changed.  An error is
 *		logged (the pass is tried again at the next tick), never raised.
 */
void
plank_recheck_run(void)
{
	bool		roles = roles_changed;
	List	   *subs = NIL;
	MemoryContext old = CurrentMemoryContext;
	int			i;

	plank_subs_expire_aliases();
	if (!recheck_all && !roles && npending_rels == 0)
		return;

	/*
	 * Most relcache invalidations concern tables nobody subscribed to (any
	 * CREATE TABLE sends one): those cost a walk of the subscriptions, no
	 * transaction.
	 */
	MemoryContextSwitchTo(recheck_cxt);
	if (recheck_all)
		subs = plank_subs_tables(InvalidOid);
	else
		for (i = 0; i < npending_rels; i++)
			subs = list_concat(subs, plank_subs_tables(pending_rels[i]));
	MemoryContextSwitchTo(old);
	/* noted afresh from here: the transaction below may read more */
	recheck_all = roles_changed = false;
	npending_rels = 0;
	if (subs == NIL && !roles)
	{
		MemoryContextReset(recheck_cxt);
		return;
	}

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		MemoryContextSwitchTo(recheck_cxt);
		recheck(roles, subs);
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(recheck_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("plank could not recheck the privileges of live subscriptions: %s",
						edata->message),
				 errdetail("The check is tried again in %d ms.", RECHECK_INTERVAL_MS)));
		retry_at_tick = true;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(recheck_cxt);
}

/*
 * plank_recheck_accept
 *		Read the invalidation messages waiting for the worker (a transaction
 *		start does it) and apply what they concern, when there is a table
 *		subscription to apply it to; costs nothing otherwise.  Outside any
 *		transaction, between dispatches: the other workers of plank.workers
 *		call it before each batch of events from worker 0's queue.
 */
void
plank_recheck_accept(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (!plank_subs_any_table())
		return;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	plank_recheck_run();
}

/*
 * The timer.  libwebsockets 4.1 runs due timers at the start of
 * lws_service(), before it polls: the self-pipe byte makes that poll return
 * at once, so that the main loop handles the tick now, not at the next
 * socket event.
 */
static void
recheck_tick(lws_sorted_usec_list_t *sul)
{
	timer_armed = false;
	tick_due = true;
	plank_wakeup_handler();
}

/*
 * plank_recheck_service
 *		Called once per main-loop pass, outside any transaction: on a timer
 *		tick, read pending invalidation messages (a transaction start does
 *		it), then recheck what they concern; arm the timer again while any
 *		table subscription exists.
 */
void
plank_recheck_service(void)
{
	if (tick_due)
	{
		MemoryContext cxt = CurrentMemoryContext;

		tick_due = false;
		if (retry_at_tick)
		{
			retry_at_tick = false;
			recheck_all = roles_changed = true;
		}
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		CommitTransactionCommand();
		MemoryContextSwitchTo(cxt);
	}
	if (!retry_at_tick)
		plank_recheck_run();
	if (!timer_armed && (retry_at_tick || plank_subs_any_table()))
	{
		timer_armed = true;
		plank_schedule(&recheck_sul, recheck_tick,
							  (lws_usec_t) RECHECK_INTERVAL_MS * LWS_US_PER_MS);
	}
}
