/*-------------------------------------------------------------------------
 *
 * protocol.c
 *		Plank's client protocol: parses a client's JSON requests (subscribe,
 *		unsubscribe, publish, ping) and answers each with an acknowledgement or an
 *		error carrying a stable code.  docs/PROTOCOL.md is the specification.
 *
 * Client messages are parsed by PostgreSQL's own jsonb input function.  A
 * request that fails, for whatever reason, is answered with an error on that
 * connection only; it never reaches the worker's top level.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "access/htup_details.h"
#include "catalog/pg_attribute.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rls.h"
#include "utils/acl.h"
#include "access/relation.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "runtime.h"
#include "jsonspan.h"
#include "event.h"
#include "auth.h"
#include "check.h"
#include "stats.h"
#include "conn.h"
#include "filter.h"
#include "delivery.h"
#include "worker.h"

/* settings (GUCs), defined in plank_protocol_define_settings() */
static int	plank_max_subscriptions = 100;

#define PLANK_MAX_ID_LEN 64

/* per-request memory, reset after each request */
static MemoryContext request_cxt = NULL;


/* the "id" of the request being handled, echoed by an error reply */
static char *request_id = NULL;
/* the request is answered later (a subscribe waiting for its snapshot) */
static bool request_deferred = false;
/* the subscription the request being handled made, if any: unlinked if it fails */
static PlankSub *request_sub = NULL;

/*
 * The outcome of a request that failed: a stable code from docs/PROTOCOL.md
 * and a message in PostgreSQL's style.
 */
typedef struct RequestError
{
	const char *code;
	char	   *message;
} RequestError;

static RequestError *
request_error(const char *code, const char *fmt,...) pg_attribute_printf(2, 3);

static RequestError *
request_error(const char *code, const char *fmt,...)
{
	/*
	 * in request_cxt: an error found inside a transaction (resolve_table)
	 * is sent after its commit has freed the transaction's memory
	 */
	MemoryContext oldcxt = MemoryContextSwitchTo(request_cxt ? request_cxt : CurrentMemoryContext);
	RequestError *err = palloc(sizeof(RequestError));
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	err->code = code;
	err->message = buf.data;
	MemoryContextSwitchTo(oldcxt);
	return err;
}

/* Start a reply: {"type":..., and the request's "id" when it had one. */
static void
begin_reply(StringInfo buf, const char *type, const char *id)
{
	initStringInfo(buf);
	appendStringInfo(buf, "\"type\":\"%s\"", type);
	if (id)
	{
		appendStringInfoString(buf, ",\"id\":");
		escape_json(buf, id);
	}
}

static void
send_error_code(PlankConn *conn, const char *id, const char *code, const char *message)
{
	StringInfoData buf;

	begin_reply(&buf, "error", id);
	appendStringInfo(&buf, ",\"code\":\"%s\",\"message\":", code);
	escape_json(&buf, message);
	appendStringInfoChar(&buf, '}');
	plank_conn_send_text(conn, buf.data, buf.len);
	pfree(buf.data);
}

static void
send_error(PlankConn *conn, const char *id, RequestError *err)
{
	send_error_code(conn, id, err->code, err->message);
	plank_stats_count(PLANK_STAT_PROTOCOL_ERRORS, 1);
}

/*
 * resumed: -1 for a request that is not a subscribe, else false/true; seq:
 * the position the request took effect at
 */
static void
send_ack_at(PlankConn *conn, const char *id, const char *request, int resumed, uint64 seq)
{
	StringInfoData buf;

	begin_reply(&buf, "ack", id);
	appendStringInfo(&buf, ",\"request\":\"%s\",\"seq\":" UINT64_FORMAT,
					 request, seq);
	if (resumed >= 0)
		appendStringInfo(&buf, ",\"resumed\":%s", resumed ? "true" : "false");
	appendStringInfoChar(&buf, '}');
	plank_conn_send_text(conn, buf.data, buf.len);
}

static void
send_ack(PlankConn *conn, const char *id, const char *request, int resumed)
{
	send_ack_at(conn, id, request, resumed, plank_seq);
}

/* A subscribe's "since": where a reconnecting client left off. */
typedef struct Since
{
	bool		given;
	char	   *epoch;
	uint64		seq;
	bool		has_origin;		/* "origin" and "n": a change's origin position */
	XLogRecPtr	origin;
	uint32		origin_n;
} Since;

/*
 * Is num an integer from min to max?  Then *out is its value.  A fraction is
 * refused, never rounded.
 */
static bool
numeric_integer_in(Numeric num, int64 min, int64 max, int64 *out)
{
	Datum		d = NumericGetDatum(num);
	Datum		floor = DirectFunctionCall1(numeric_floor, d);

	if (!DatumGetBool(DirectFunctionCall2(numeric_eq, d, floor)) ||
		!DatumGetBool(DirectFunctionCall2(numeric_ge, d, NumericGetDatum(int64_to_numeric(min)))) ||
		!DatumGetBool(DirectFunctionCall2(numeric_le, d, NumericGetDatum(int64_to_numeric(max)))))
		return false;
	*out = DatumGetInt64(DirectFunctionCall1(numeric_int8, d));
	return true;
}

/*
 * The optional "origin" (an LSN string) and "n" (an integer from 1 to
 * 2^32 - 1) of a "since" object (container): the origin position of the
 * client's last change, for resuming on another node (origin.c).
 */
static RequestError *
parse_since_origin(JsonbContainer *container, Since *since)
{
	JsonbValue	o;
	JsonbValue	n;
	bool		has_o = plank_jsonb_member(container, "origin", &o);
	bool		has_n = plank_jsonb_member(container, "n", &n);
	char	   *text;
	int64		value;

	since->has_origin = false;
	if (!has_o && !has_n)
		return NULL;
	if (!has_o || !has_n || o.type != jbvString || n.type != jbvNumeric)
		return request_error("invalid_message",
							 "\"since\".\"origin\" (a string) and \"since\".\"n\" (a number) go together");
	text = pnstrdup(o.val.string.val, o.val.string.len);
	if (!plank_origin_parse(text, &since->origin))
		return request_error("invalid_message",
							 "\"since\".\"origin\" must be an LSN such as \"0/16B3748\"");
	if (!numeric_integer_in(n.val.numeric, 1, PG_UINT32_MAX, &value))
		return request_error("invalid_message",
							 "\"since\".\"n\" must be an integer from 1 to 4294967295");
	since->origin_n = (uint32) value;
	since->has_origin = true;
	return NULL;
}

static RequestError *
parse_since(Jsonb *jb, Since *since)
{
	JsonbValue	v;
	JsonbValue	e;
	JsonbValue	q;
	int64		seq;

	since->given = false;
	since->has_origin = false;
	if (!plank_jsonb_member(&jb->root, "since", &v))
		return NULL;
	if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data) ||
		!plank_jsonb_member(v.val.binary.data, "epoch", &e) ||
		e.type != jbvString ||
		!plank_jsonb_member(v.val.binary.data, "seq", &q) ||
		q.type != jbvNumeric)
		return request_error("invalid_message",
							 "\"since\" must be an object with an \"epoch\" string and a \"seq\" number");
	/* an integer from 0 to 2^63 - 1: a fraction is refused, not rounded */
	if (!numeric_integer_in(q.val.numeric, 0, PG_INT64_MAX, &seq))
		return request_error("invalid_message",
							 "\"since\".\"seq\" must be an integer sequence number from 0 to 9223372036854775807");
	since->seq = (uint64) seq;
	since->epoch = pnstrdup(e.val.string.val, e.val.string.len);
	since->given = true;
	return parse_since_origin(v.val.binary.data, since);
}

/*
 * Start delivery to a new subscription that the caller has linked into its
 * index: replay what the client missed when its "since" can be honoured
 * (covered: the ring, and for a channel the worker's LISTEN, span it), else
 * tell it to resync and send the snapshot, if any.  Returns whether it
 * resumed.
 */
static bool
start_delivery(PlankConn *conn, PlankSub *sub, const Since *since,
			   bool covered, PlankFrame *snapshot)
{
	const char *reason = NULL;

	if (since->given)
	{
		if (strcmp(since->epoch, plank_epoch) != 0)
			reason = "epoch_changed";
		else if (!covered)
			reason = "out_of_range";
		else
		{
			plank_subs_replay(sub, since->seq);
			return true;
		}
	}
	if (reason)
	{
		char		buf[200];
		int			len;

		plank_stats_count(PLANK_STAT_RESYNCS, 1);
		len = snprintf(buf, sizeof(buf),
					   "\"type\":\"resync_required\",\"reason\":\"%s\",\"epoch\":\"%s\",\"seq\":" UINT64_FORMAT "}",
					   reason, plank_epoch, plank_seq);
		{
			PlankFrame *frame = plank_frame_make(buf, len);

			plank_conn_send(conn, frame, sub);
			plank_frame_unref(frame);
		}
	}
	if (snapshot)
		plank_conn_send(conn, snapshot, sub);
	return false;
}

/*
 * plank_protocol_welcome
 *		Queue the first message of a connection: protocol version, epoch and
 *		the last sequence number assigned.
 */
void
plank_protocol_welcome(PlankConn *conn)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "\"type\":\"welcome\",\"protocol\":1,\"server\":\"plank/1.0\","
					 "\"epoch\":\"%s\"", plank_epoch);
	/* the sequence number tells how busy tables are: for clients with a role */
	if (OidIsValid(conn->ident.roleid))
	{
		appendStringInfo(&buf, ",\"seq\":" UINT64_FORMAT ",\"role\":", plank_seq);
		escape_json(&buf, conn->ident.role);
	}
	else
		appendStringInfoString(&buf, ",\"auth\":\"required\"");
	appendStringInfoChar(&buf, '}');
	plank_conn_send_text(conn, buf.data, buf.len);
	pfree(buf.data);
}

/*
 * plank_protocol_auth_failed
 *		Answer a refused token with an error carrying its code, then close
 *		the connection with 4001 once the error is sent.
 */
static void
plank_protocol_auth_failed(PlankConn *conn, const char *id, const char *code, const char *detail)
{
	send_error_code(conn, id, code, detail);
	plank_conn_close_after_send(conn, 4001, "authentication failed");
	plank_stats_count(PLANK_STAT_AUTH_FAILURES, 1);
}

/* A string member: NULL when absent; *bad when present but not a string. */
static char *
string_member(Jsonb *jb, const char *key, bool *bad)
{
	JsonbValue	v;

	*bad = false;
	if (!plank_jsonb_member(&jb->root, key, &v))
		return NULL;
	if (v.type != jbvString)
	{
		*bad = true;
		return NULL;
	}
	return pnstrdup(v.val.string.val, v.val.string.len);
}

static PlankSub *
find_sub(PlankConn *conn, const char *id)
{
	dlist_iter	iter;

	dlist_foreach(iter, &conn->subs)
	{
		PlankSub   *sub = dlist_container(PlankSub, conn_node, iter.cur);

		if (strcmp(sub->id, id) == 0)
			return sub;
	}
	return NULL;
}

static PlankSub *
new_sub(PlankConn *conn, const char *id, bool is_channel)
{
	PlankSub   *sub;
	StringInfoData prefix;

	/* built in the request's memory: a StringInfo starts at 1 kB */
	initStringInfo(&prefix);
	appendStringInfoString(&prefix, "{\"sub\":");
	escape_json(&prefix, id);
	appendStringInfoChar(&prefix, ',');

	sub = MemoryContextAllocZero(conn->mcxt, sizeof(PlankSub));
	sub->conn = conn;
	sub->id = MemoryContextStrdup(conn->mcxt, id);
	sub->is_channel = is_channel;
	sub->ops = PLANK_OP_ALL;
	sub->prefix = MemoryContextStrdup(conn->mcxt, prefix.data);
	sub->prefix_len = prefix.len;
	pfree(prefix.data);
	request_sub = sub;
	return sub;
}

/*
 * A request failed with an error after it made a subscription: if that
 * subscription was linked (to its connection, its table or channel), take
 * it out again, with whatever it had queued (a replay cut short), so that
 * the failure leaves nothing behind: a retry with the same id is a new
 * subscription.
 */
static void
unlink_failed_sub(PlankConn *conn)
{
	PlankSub   *sub = request_sub;
	dlist_iter	iter;

	request_sub = NULL;
	if (sub == NULL)
		return;
	dlist_foreach(iter, &conn->subs)
	{
		if (dlist_container(PlankSub, conn_node, iter.cur) == sub)
		{
			plank_conn_drop_sub_messages(conn, sub);
			plank_protocol_sub_remove(sub);
			return;
		}
	}
}

/* Parse "ops": NULL means all; otherwise a non-empty array of op names. */
static RequestError *
parse_ops(Jsonb *jb, int *ops)
{
	JsonbValue	v;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	int			mask = 0;

	*ops = PLANK_OP_ALL;
	if (!plank_jsonb_member(&jb->root, "ops", &v))
		return NULL;
	if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data) ||
		JsonContainerSize(v.val.binary.data) == 0)
		return request_error("invalid_message", "\"ops\" must be a non-empty array of operation names");

	it = JsonbIteratorInit(v.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		if (v.type != jbvString)
			return request_error("invalid_message", "\"ops\" must hold only strings");
#define OPNAME_IS(name) (v.val.string.len == strlen(name) && \
						 pg_strncasecmp(v.val.string.val, name, v.val.string.len) == 0)
		if (OPNAME_IS("INSERT"))
			mask |= PLANK_OP_INSERT;
		else if (OPNAME_IS("UPDATE"))
			mask |= PLANK_OP_UPDATE;
		else if (OPNAME_IS("DELETE"))
			mask |= PLANK_OP_DELETE;
		else if (OPNAME_IS("TRUNCATE"))
			mask |= PLANK_OP_TRUNCATE;
		else
			return request_error("invalid_message",
								 "unknown operation \"%.*s\" in \"ops\": expected INSERT, UPDATE, DELETE or TRUNCATE",
								 Min(v.val.string.len, 32), v.val.string.val);
#undef OPNAME_IS
	}
	*ops = mask;
	return NULL;
}

/*
 * Parse "filter" (docs/PROTOCOL.md "Filters"; filter.c).  The filters are
 * allocated in the current (per-request) context; plank_filter_copy() moves
 * them into the connection's context once the subscription is accepted.
 */
static RequestError *
parse_filter(Jsonb *jb, PlankFilter **filters, int *nfilters)
{
	JsonbValue	v;
	char	   *err;

	*filters = NULL;
	*nfilters = 0;
	if (!plank_jsonb_member(&jb->root, "filter", &v))
		return NULL;
	if ((err = plank_filter_parse(&v, filters, nfilters)) != NULL)
		return request_error("bad_filter", "%s", err);
	return NULL;
}

/* Is one of the capture triggers from plank.track() there? */
static bool
table_is_tracked(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};
	bool		tracked;

	SPI_connect();
	if (SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_trigger "
							  "WHERE tgrelid OPERATOR(pg_catalog.=) $1 "
							  "AND tgname OPERATOR(pg_catalog.=) ANY ('{plank_capture_insert,"
							  "plank_capture_update,plank_capture_delete,plank_capture_truncate}'"
							  "::pg_catalog.name[]) "
							  "AND tgparentid OPERATOR(pg_catalog.=) 0::pg_catalog.oid",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the triggers of relation %u", relid);
	tracked = SPI_processed > 0;
	SPI_finish();
	return tracked;
}

/*
 * The columns of a table that a role may SELECT, when it may not SELECT the
 * whole table; NIL when it may (allocated in cxt).
 */
static List *
selectable_columns(Oid relid, Oid roleid, MemoryContext cxt)
{
	List	   *cols = NIL;
	int			natts;
	int			i;

	if (pg_class_aclcheck(relid, roleid, ACL_SELECT) == ACLCHECK_OK)
		return NIL;
	/* the catalog only: the table may be locked by anyone, and is not waited for */
	{
		HeapTuple	reltup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));

		if (!HeapTupleIsValid(reltup))
			return NIL;
		natts = ((Form_pg_class) GETSTRUCT(reltup))->relnatts;
		ReleaseSysCache(reltup);
	}
	for (i = 1; i <= natts; i++)
	{
		HeapTuple	tup = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid), Int16GetDatum(i));
		Form_pg_attribute att;

		if (!HeapTupleIsValid(tup))
			continue;
		att = (Form_pg_attribute) GETSTRUCT(tup);
		if (!att->attisdropped &&
			pg_attribute_aclcheck(relid, att->attnum, roleid, ACL_SELECT) == ACLCHECK_OK)
		{
			/* the list outlives the transaction */
			MemoryContext old = MemoryContextSwitchTo(cxt);

			cols = lappend(cols, pstrdup(NameStr(att->attname)));
			MemoryContextSwitchTo(old);
		}
		ReleaseSysCache(tup);
	}
	return cols;
}

/*
 * plank_table_readable
 *		What a role may read of an existing table, from the catalogs only
 *		(no user code runs): PLANK_READ_NO_SCHEMA without USAGE on its schema,
 *		PLANK_READ_NONE without SELECT on the table or any of its columns,
 *		PLANK_READ_ALL with SELECT on the table, PLANK_READ_COLUMNS with SELECT
 *		on some columns only, whose names *columns then lists (allocated in
 *		cxt; NIL otherwise).  Inside a transaction; the caller has checked that
 *		the table exists.  Follows PostgreSQL docs "Privileges" (5.7): a
 *		column privilege grants SELECT of that column only.
 */
PlankReadable
plank_table_readable(Oid relid, Oid roleid, MemoryContext cxt, List **columns)
{
	*columns = NIL;
	if (pg_namespace_aclcheck(get_rel_namespace(relid), roleid, ACL_USAGE) != ACLCHECK_OK)
		return PLANK_READ_NO_SCHEMA;
	if (pg_class_aclcheck(relid, roleid, ACL_SELECT) == ACLCHECK_OK)
		return PLANK_READ_ALL;
	*columns = selectable_columns(relid, roleid, cxt);
	return *columns != NIL ? PLANK_READ_COLUMNS : PLANK_READ_NONE;
}

static bool
column_in(List *cols, const char *name)
{
	ListCell   *lc;

	foreach(lc, cols)
		if (strcmp((const char *) lfirst(lc), name) == 0)
			return true;
	return false;
}

/*
 * A table the role may not see: the client learns only that the table does
 * not exist or may not be read, the same answer for a name that names
 * nothing, so that subscribe requests cannot tell which tables exist.  The
 * true reason goes to the server log at plank.log_level.
 */
static const char *
role_name_or_dropped(Oid roleid)
{
	char	   *role = GetUserNameFromId(roleid, true);

	return role ? role : "(dropped)";
}

static RequestError *
hidden_table(const char *name, Oid roleid, const char *reason)
{
	ereport(plank_log_level,
			(errmsg("plank refused table \"%s\" to role %s: %s",
					name, role_name_or_dropped(roleid), reason)));
	return request_error("unknown_table", "table \"%s\" does not exist or may not be read", name);
}

/* The same for a filtered column: missing and unreadable answer alike. */
static RequestError *
hidden_column(const char *name, const char *column, Oid roleid, const char *reason)
{
	ereport(plank_log_level,
			(errmsg("plank refused a filter on column \"%s\" of table \"%s\" to role %s: %s",
					column, name, role_name_or_dropped(roleid), reason)));
	return request_error("bad_filter", "column \"%s\" of table \"%s\" does not exist or may not be read",
						 column, name);
}

/*
 * Resolve and check a table name inside the caller's transaction.  Returns
 * an error, or NULL with *schema and *relname allocated in request_cxt and
 * *columns the columns the role may read (NIL: all of them).
 *
 * What a client may learn follows the role's privileges: a table that does
 * not exist, is not a table, or that the role may not read (no USAGE on its
 * schema, no SELECT on it or any of its columns) are all unknown_table with
 * one message; only a table the role may read can be untracked_table.  A
 * filter on a column the table lacks and one on a column the role may not
 * read are both bad_filter with one message.
 */
static RequestError *
resolve_table(const char *name, PlankFilter *filters, int nfilters, Oid roleid,
			  char **schema, char **relname, Oid *relidp, List **columns)
{
	List	   *names;
	Oid			relid;
	char		relkind;
	int			i;
	List	   *cols;

	names = plank_string_to_qualified_name_list(name);
	if (list_length(names) > 2)
		return request_error("unknown_table", "table name \"%s\" has too many dotted names", name);
	/* an unqualified name means public: never looked up in the search path */
	if (list_length(names) == 1)
		names = lcons(makeString(pstrdup("public")), names);
	relid = RangeVarGetRelid(makeRangeVarFromNameList(names), NoLock, true);
	if (!OidIsValid(relid))
		return hidden_table(name, roleid, "it does not exist");

	relkind = get_rel_relkind(relid);
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE &&
		relkind != RELKIND_VIEW && relkind != RELKIND_MATVIEW &&
		relkind != RELKIND_FOREIGN_TABLE)
		return hidden_table(name, roleid, "it is not a table");

	/* the client's role must be able to SELECT the table, or some columns */
	if (pg_namespace_aclcheck(get_rel_namespace(relid), roleid, ACL_USAGE) != ACLCHECK_OK)
		return hidden_table(name, roleid, "the role has no USAGE privilege on its schema");
	cols = selectable_columns(relid, roleid, request_cxt);
	if (cols == NIL && pg_class_aclcheck(relid, roleid, ACL_SELECT) != ACLCHECK_OK)
		return hidden_table(name, roleid, "the role may not SELECT it or any of its columns");

	/* the role may read it: now it may learn that it is not tracked */
	if ((relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE) ||
		!table_is_tracked(relid))
		return request_error("untracked_table",
							 "table \"%s\" is not tracked", name);

	for (i = 0; i < nfilters; i++)
	{
		AttrNumber	attnum = get_attnum(relid, filters[i].column);

		if (attnum == InvalidAttrNumber || attnum < 0)
			return hidden_column(name, filters[i].column, roleid, "the table has no such column");
		if (cols != NIL && !column_in(cols, filters[i].column))
			return hidden_column(name, filters[i].column, roleid, "the role may not SELECT the column");
		/*
		 * the operator against the column's type: the role may read the
		 * column.  What it resolves (bounds, pattern) must outlive this
		 * transaction: it is made in the request's context.
		 */
		{
			MemoryContext old = MemoryContextSwitchTo(request_cxt);
			char	   *err = plank_filter_resolve(&filters[i], get_atttype(relid, attnum));

			MemoryContextSwitchTo(old);
			if (err != NULL)
				return request_error("bad_filter", "%s", err);
		}
	}
	*columns = cols;

	*schema = MemoryContextStrdup(request_cxt, get_namespace_name(get_rel_namespace(relid)));
	*relname = MemoryContextStrdup(request_cxt, get_rel_name(relid));
	*relidp = relid;
	return NULL;
}

/*
 * The query of a snapshot: the current rows of a table that pass the
 * filters, as JSON texts (row_to_json, as the capture trigger renders rows),
 * only the columns the role may read, filtered as changes are
 * (plank_filter_sql()).  Plank's own SQL: every name is qualified and every value a
 * quoted literal; the row is referred to as plank_row.* (a whole-row
 * reference no column name can shadow); a check worker runs it as the client's role (so that its
 * privileges and row-level security policies apply).
 */
static char *
snapshot_sql(const char *schema, const char *relname, List *columns,
			 PlankFilter *filters, int nfilters)
{
	ListCell   *lc;
	StringInfoData query;
	int			f;

	initStringInfo(&query);
	appendStringInfoString(&query, "SELECT pg_catalog.row_to_json(plank_row.*)::pg_catalog.text FROM ");
	if (columns == NIL)
		appendStringInfoString(&query, quote_qualified_identifier(schema, relname));
	else
	{
		appendStringInfoString(&query, "(SELECT ");
		foreach(lc, columns)
			appendStringInfo(&query, "%s%s", lc == list_head(columns) ? "" : ", ",
							 quote_identifier((const char *) lfirst(lc)));
		appendStringInfo(&query, " FROM %s)", quote_qualified_identifier(schema, relname));
	}
	appendStringInfoString(&query, " AS plank_row WHERE true");
	for (f = 0; f < nfilters; f++)
		plank_filter_sql(&query, &filters[f]);
	return query.data;
}

/*
 * A table subscription waiting for its snapshot: it is in its connection's
 * list but in no index; its subscribe request is answered (snapshot, then
 * ack) when the check worker's reply comes back.
 */
typedef struct PlankSnapshotWait
{
	PlankSub   *sub;
	PlankCheckJob *job;
	char	   *request_id;
	NameData	schema;
	NameData	table;
	uint64		seq;			/* every change up to it is in the snapshot */
	const char *resync_reason;	/* the client's "since" could not be honoured */
} PlankSnapshotWait;

static MemoryContext reply_cxt = NULL;

static void
snapshot_done(PlankCheckJob *job, bool ok, const char *data, Size len,
			  const PlankCheckReply *rep)
{
	PlankSnapshotWait *wait = (PlankSnapshotWait *) job->arg;
	PlankSub   *sub = wait->sub;
	PlankConn  *conn = sub->conn;
	MemoryContext old;

	if (reply_cxt == NULL)
		reply_cxt = AllocSetContextCreate(TopMemoryContext, "plank snapshot reply",
										  ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(reply_cxt);
	sub->snapshot = NULL;
	if (!ok)
	{
		ereport(plank_log_level,
				(errmsg("plank could not read a snapshot of \"%s\".\"%s\" for connection %llu as role \"%s\": %.*s",
						NameStr(wait->schema), NameStr(wait->table), (unsigned long long) conn->id,
						conn->ident.role, (int) len, data)));
		send_error_code(conn, wait->request_id,
						strncmp(rep->sqlstate, "57014", 5) == 0 || strncmp(rep->sqlstate, "55P03", 5) == 0 ?
						"snapshot_timeout" : "snapshot_failed",
						"the snapshot could not be read; the subscription was not made");
		plank_stats_count(PLANK_STAT_PROTOCOL_ERRORS, 1);
		plank_protocol_sub_remove(sub);
	}
	else
	{
		StringInfoData body;
		PlankFrame *frame;

		if (wait->resync_reason)
			plank_conn_resync(sub, wait->resync_reason);
		initStringInfo(&body);
		appendStringInfo(&body, "\"type\":\"snapshot\",\"seq\":" UINT64_FORMAT ",\"epoch\":\"%s\",\"complete\":%s,\"rows\":[",
						 wait->seq, plank_epoch, rep->complete ? "true" : "false");
		appendBinaryStringInfo(&body, data, len);
		appendStringInfoString(&body, "]}");
		frame = plank_frame_make(body.data, body.len);
		plank_conn_send(conn, frame, sub);
		plank_frame_unref(frame);
		/* the snapshot, then the ack at its position, then what came since */
		send_ack_at(conn, wait->request_id, "subscribe", false, wait->seq);

		plank_subs_add_table(sub, NameStr(wait->schema), NameStr(wait->table));
		if (plank_replay_covers(wait->seq))
			plank_subs_replay(sub, wait->seq);
		else
			plank_conn_resync(sub, "out_of_range");
	}
	pfree(wait->request_id);
	pfree(wait);
	MemoryContextSwitchTo(old);
	MemoryContextReset(reply_cxt);
}

/* A subscription that waits for its snapshot is removed: forget the snapshot. */
static void
snapshot_cancel(PlankSub *sub)
{
	PlankSnapshotWait *wait = sub->snapshot;

	if (wait == NULL)
		return;
	sub->snapshot = NULL;
	plank_check_cancel(wait->job);
	pfree(wait->request_id);
	pfree(wait);
}

/*
 * plank_protocol_sub_remove
 *		Remove a subscription (unsubscribe, its connection closes, recheck.c
 *		drops it), with the snapshot it may still wait for.
 */
void
plank_protocol_sub_remove(PlankSub *sub)
{
	snapshot_cancel(sub);
	plank_subs_remove(sub);
}

/* Can a "since" be honoured as far as the ring and epoch go? */
static bool
since_in_ring(const Since *since)
{
	return since->given && strcmp(since->epoch, plank_epoch) == 0 &&
		plank_replay_covers(since->seq);
}

static RequestError *
subscribe_table(PlankConn *conn, Jsonb *jb, const char *id, const char *table,
				const Since *since, bool *resumed)
{
	RequestError *err;
	PlankFilter *filters;
	int			nfilters;
	int			ops;
	char	   *schema = NULL;
	char	   *relname = NULL;
	Oid			relid;
	PlankSub   *sub;
	JsonbValue	v;
	bool		want_snapshot = false;
	bool		covered = since_in_ring(since);
	char	   *snapshot = NULL;
	List	   *columns = NIL;
	List	   *keycols = NIL;
	bool		rls = false;

	if ((err = parse_ops(jb, &ops)) != NULL ||
		(err = parse_filter(jb, &filters, &nfilters)) != NULL)
		return err;
	if (plank_jsonb_member(&jb->root, "snapshot", &v))
	{
		if (v.type != jbvBool)
			return request_error("invalid_message", "\"snapshot\" must be true or false");
		want_snapshot = v.val.boolean;
	}

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	err = resolve_table(table, filters, nfilters, conn->ident.roleid,
						&schema, &relname, &relid, &columns);
	if (err == NULL)
		rls = check_enable_rls(relid, conn->ident.roleid, false) == RLS_ENABLED;
	if (rls)
	{
		MemoryContext old = MemoryContextSwitchTo(request_cxt);

		keycols = plank_visibility_key_columns(relid);
		MemoryContextSwitchTo(old);
	}
	/* a client that resumes has the rows already */
	if (err == NULL && want_snapshot && !covered)
	{
		/* in request_cxt: the query outlives this transaction */
		MemoryContext old = MemoryContextSwitchTo(request_cxt);

		snapshot = snapshot_sql(schema, relname, columns, filters, nfilters);
		MemoryContextSwitchTo(old);
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(request_cxt);
	if (err)
		return err;

	sub = new_sub(conn, id, false);
	sub->ops = ops;
	sub->filters = plank_filter_copy(conn->mcxt, filters, nfilters);
	sub->nfilters = nfilters;
	sub->relid = relid;
	sub->rls = rls;
	if (keycols != NIL)
	{
		ListCell   *lc;
		int			i = 0;

		sub->nkeycols = list_length(keycols);
		sub->keycols = MemoryContextAlloc(conn->mcxt, sub->nkeycols * sizeof(char *));
		foreach(lc, keycols)
			sub->keycols[i++] = MemoryContextStrdup(conn->mcxt, (const char *) lfirst(lc));
	}
	if (columns != NIL)
	{
		StringInfoData key;
		ListCell   *lc;
		int			i = 0;

		initStringInfo(&key);
		sub->ncolumns = list_length(columns);
		sub->columns = MemoryContextAlloc(conn->mcxt, sub->ncolumns * sizeof(char *));
		foreach(lc, columns)
		{
			sub->columns[i++] = MemoryContextStrdup(conn->mcxt, (const char *) lfirst(lc));
			appendStringInfo(&key, "%s,", (const char *) lfirst(lc));
		}
		sub->colkey = MemoryContextStrdup(conn->mcxt, key.data);
	}
	if (snapshot)
	{
		/* read by a check worker; the answer waits for it (snapshot_done) */
		PlankSnapshotWait *wait = MemoryContextAllocZero(conn->mcxt, sizeof(PlankSnapshotWait));
		PlankCheckJob *job = plank_check_job_new(PLANK_CHECK_SNAPSHOT, &conn->ident, relid,
												 (int64) plank_max_client_buffer * 1024);

		appendStringInfoString(&job->body, snapshot);
		job->conn_id = conn->id;
		job->done = snapshot_done;
		job->arg = wait;
		wait->sub = sub;
		wait->job = job;
		wait->request_id = MemoryContextStrdup(conn->mcxt, id);
		namestrcpy(&wait->schema, schema);
		namestrcpy(&wait->table, relname);
		wait->seq = plank_seq;
		if (since->given)
			wait->resync_reason = strcmp(since->epoch, plank_epoch) != 0 ? "epoch_changed" : "out_of_range";
		sub->snapshot = wait;
		plank_subs_add_pending(sub);
		plank_check_submit(job);
		request_deferred = true;
		return NULL;
	}
	plank_subs_add_table(sub, schema, relname);
	*resumed = start_delivery(conn, sub, since, covered, NULL);
	return NULL;
}

/* Check plank.channel_grants for a client, in a transaction of its own. */
static bool
channel_allowed(PlankConn *conn, const char *channel)
{
	bool		allowed;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	allowed = plank_auth_channel_allowed(conn->ident.roleid, channel);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(request_cxt);
	return allowed;
}

/*
 * auth: a token, first or fresh.  A fresh token must name the same role; it
 * moves the connection's expiry.  A refused token closes the connection.
 */
static RequestError *
handle_auth(PlankConn *conn, Jsonb *jb, const char *id, bool *closed)
{
	bool		bad;
	char	   *token = string_member(jb, "token", &bad);
	PlankIdentity ident;
	char	   *detail;
	const char *code;
	bool		fresh;

	*closed = false;
	if (token == NULL)
		return request_error("invalid_message", "auth needs a \"token\" string");
	code = plank_auth_verify(token, request_cxt, &ident, &detail);
	if (code != NULL)
	{
		ereport(plank_log_level,
				(errmsg("plank refused a token from %s: %s", conn->peer, detail)));
		plank_protocol_auth_failed(conn, id, code, detail);
		*closed = true;
		return NULL;
	}
	/* a token may upgrade an anonymous connection; a fresh one keeps its role */
	if (conn->ident.from_token && ident.roleid != conn->ident.roleid)
	{
		ereport(plank_log_level,
				(errmsg("plank refused a fresh token from %s naming role %s: connection %llu acts as role %s",
						conn->peer, ident.role, (unsigned long long) conn->id, conn->ident.role)));
		return request_error("role_mismatch",
							 "a fresh token must name the connection's role \"%s\"", conn->ident.role);
	}
	fresh = conn->ident.from_token;
	plank_conn_set_identity(conn, &ident);
	plank_stats_conn_updated(conn);
	if (plank_log_connections && !conn->closing)
	{
		char	   *sub = plank_json_text_string(ident.claims, "sub");

		ereport(plank_log_level,
				(errmsg("plank connection %llu from %s %s as role %s (token sub %s%s%s, expires %s)",
						(unsigned long long) conn->id, conn->peer,
						fresh ? "sent a fresh token" : "authenticated", ident.role,
						sub ? "\"" : "", sub ? sub : "none", sub ? "\"" : "",
						ident.exp > 0 ? timestamptz_to_str(time_t_to_timestamptz((pg_time_t) ident.exp)) : "never")));
	}
	return NULL;
}

static void
send_auth_ack(PlankConn *conn, const char *id)
{
	StringInfoData buf;

	begin_reply(&buf, "ack", id);
	appendStringInfoString(&buf, ",\"request\":\"auth\",\"role\":");
	escape_json(&buf, conn->ident.role);
	if (conn->ident.exp > 0)
		appendStringInfo(&buf, ",\"expires\":" INT64_FORMAT, conn->ident.exp);
	appendStringInfo(&buf, ",\"epoch\":\"%s\",\"seq\":" UINT64_FORMAT "}", plank_epoch, plank_seq);
	plank_conn_send_text(conn, buf.data, buf.len);
}

static RequestError *
handle_subscribe(PlankConn *conn, Jsonb *jb, const char *id, bool *resumed)
{
	bool		bad_table;
	bool		bad_channel;
	char	   *table = string_member(jb, "table", &bad_table);
	char	   *channel = string_member(jb, "channel", &bad_channel);
	RequestError *err;
	Since		since;

	*resumed = false;
	if (id == NULL)
		return request_error("invalid_message", "subscribe needs an \"id\" naming the subscription");
	if (bad_table || bad_channel)
		return request_error("invalid_message", "\"table\" and \"channel\" must be strings");
	if ((table == NULL) == (channel == NULL))
		return request_error("invalid_message", "subscribe needs exactly one of \"table\" and \"channel\"");
	if ((err = parse_since(jb, &since)) != NULL)
		return err;
	if (since.given && since.has_origin && !channel && strcmp(since.epoch, plank_epoch) != 0)
	{
		/* another node's (or worker's) position: the same change in this ring */
		uint64		seq = plank_origin_find(since.origin, since.origin_n);

		if (seq > 0)
		{
			since.epoch = pstrdup(plank_epoch);
			since.seq = seq;
		}
	}
	if (find_sub(conn, id) != NULL)
		return request_error("duplicate_subscription", "subscription \"%s\" already exists", id);
	if (conn->nsubs >= plank_max_subscriptions)
		return request_error("too_many_subscriptions",
							 "connection already has %d subscriptions, the limit set by plank.max_subscriptions",
							 conn->nsubs);

	if (channel)
	{
		bool		covered;
		PlankSub   *sub;

		if (channel[0] == '\0' || strlen(channel) >= NAMEDATALEN)
			return request_error("bad_channel", "channel name must be 1 to %d bytes long", NAMEDATALEN - 1);
		if (strncmp(channel, PLANK_RESERVED_CHANNEL_PREFIX, strlen(PLANK_RESERVED_CHANNEL_PREFIX)) == 0)
			return request_error("bad_channel",
								 "channel names starting with \"%s\" are reserved; subscribe to a table for its changes",
								 PLANK_RESERVED_CHANNEL_PREFIX);
		if (!channel_allowed(conn, channel))
			return request_error("permission_denied",
								 "role \"%s\" may not subscribe to channel \"%s\"", conn->ident.role, channel);
		/* judged before this subscription may start a LISTEN of its own */
		covered = since_in_ring(&since) && plank_subs_channel_covers(channel, since.seq);
		sub = new_sub(conn, id, true);
		plank_subs_add_channel(sub, channel);
		*resumed = start_delivery(conn, sub, &since, covered, NULL);
		return NULL;
	}
	return subscribe_table(conn, jb, id, table, &since, resumed);
}

/*
 * publish: a string to a NOTIFY channel's subscribers, with the sender's
 * role and token sub attached by the server (publish.c).  Any member the
 * client adds ("role", "sub", "publisher") is ignored.
 */
static RequestError *
handle_publish(PlankConn *conn, Jsonb *jb)
{
	bool		bad_channel;
	char	   *channel = string_member(jb, "channel", &bad_channel);
	JsonbValue	v;

	if (channel == NULL || bad_channel)
		return request_error("invalid_message", "publish needs a \"channel\" string");
	if (!plank_jsonb_member(&jb->root, "payload", &v) || v.type != jbvString)
		return request_error("invalid_message", "publish needs a \"payload\" string");
	if (channel[0] == '\0' || strlen(channel) >= NAMEDATALEN)
		return request_error("bad_channel", "channel name must be 1 to %d bytes long", NAMEDATALEN - 1);
	if (strncmp(channel, PLANK_RESERVED_CHANNEL_PREFIX, strlen(PLANK_RESERVED_CHANNEL_PREFIX)) == 0)
		return request_error("bad_channel",
							 "channel names starting with \"%s\" are reserved",
							 PLANK_RESERVED_CHANNEL_PREFIX);
	switch (plank_publish(&conn->ident, channel, v.val.string.val, v.val.string.len))
	{
		case PLANK_PUBLISH_DENIED:
			ereport(plank_log_level,
					(errmsg("plank refused a publication on channel \"%s\" to role %s: no grant in plank.publish_grants",
							channel, conn->ident.role)));
			return request_error("permission_denied",
								 "role \"%s\" may not publish to channel \"%s\"", conn->ident.role, channel);
		case PLANK_PUBLISH_TOO_LARGE:
			return request_error("payload_too_large",
								 "the publication is larger than %d bytes: the payload (as a JSON string), channel, role and sub must fit one NOTIFY",
								 PLANK_PUBLISH_MAX_BYTES);
		default:
			MemoryContextSwitchTo(request_cxt);
			return NULL;
	}
}

static RequestError *
handle_unsubscribe(PlankConn *conn, const char *id)
{
	PlankSub   *sub;

	if (id == NULL)
		return request_error("invalid_message", "unsubscribe needs the \"id\" of a subscription");
	sub = find_sub(conn, id);
	if (sub == NULL)
		return request_error("unknown_subscription", "subscription \"%s\" does not exist", id);
	plank_conn_drop_sub_messages(conn, sub);
	plank_protocol_sub_remove(sub);
	return NULL;
}

static void
send_pong(PlankConn *conn, const char *id)
{
	StringInfoData buf;

	begin_reply(&buf, "pong", id);
	appendStringInfo(&buf, ",\"seq\":" UINT64_FORMAT "}", plank_seq);
	plank_conn_send_text(conn, buf.data, buf.len);
}

/* Parse a message; returns NULL and sets *err when it is not a JSON object. */
static Jsonb *
parse_message(char *msg, int len, RequestError **err)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile jb = NULL;

	if ((int) strlen(msg) != len)
	{
		*err = request_error("malformed_json", "message contains a NUL byte");
		return NULL;
	}
	PG_TRY();
	{
		char	   *converted = pg_any_to_server(msg, len, PG_UTF8);

		jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(converted)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		*err = request_error("malformed_json", "message is not valid JSON: %s", edata->message);
		return NULL;
	}
	PG_END_TRY();

	if (!JB_ROOT_IS_OBJECT(jb))
	{
		*err = request_error("malformed_json", "message must be a JSON object");
		return NULL;
	}
	return jb;
}

static void
handle_request(PlankConn *conn, char *msg, int len)
{
	RequestError *err = NULL;
	Jsonb	   *jb;
	char	   *id;
	char	   *type;
	bool		bad;

	jb = parse_message(msg, len, &err);
	if (jb == NULL)
	{
		send_error(conn, NULL, err);
		return;
	}

	id = request_id = string_member(jb, "id", &bad);
	if (bad || (id && (id[0] == '\0' || strlen(id) > PLANK_MAX_ID_LEN)))
	{
		send_error(conn, NULL,
				   request_error("invalid_message", "\"id\" must be a string of 1 to %d bytes",
								 PLANK_MAX_ID_LEN));
		return;
	}
	type = string_member(jb, "type", &bad);
	if (type == NULL)
		err = request_error("invalid_message", "message needs a \"type\" string");
	else if (!OidIsValid(conn->ident.roleid) && strcmp(type, "auth") != 0 &&
			 (strcmp(type, "subscribe") == 0 || strcmp(type, "unsubscribe") == 0 ||
			  strcmp(type, "ping") == 0 || strcmp(type, "publish") == 0))
		err = request_error("unauthenticated", "send an auth message with a token first");
	else if (strcmp(type, "subscribe") == 0)
	{
		bool		resumed;

		request_deferred = false;
		if ((err = handle_subscribe(conn, jb, id, &resumed)) == NULL && !request_deferred)
			send_ack(conn, id, "subscribe", resumed);
	}
	else if (strcmp(type, "unsubscribe") == 0)
	{
		if ((err = handle_unsubscribe(conn, id)) == NULL)
			send_ack(conn, id, "unsubscribe", -1);
	}
	else if (strcmp(type, "ping") == 0)
		send_pong(conn, id);
	else if (strcmp(type, "publish") == 0)
	{
		if ((err = handle_publish(conn, jb)) == NULL)
			send_ack(conn, id, "publish", -1);
	}
	else if (strcmp(type, "auth") == 0)
	{
		bool		closed;

		if ((err = handle_auth(conn, jb, id, &closed)) == NULL && !closed)
			send_auth_ack(conn, id);
	}
	else
		err = request_error("unknown_type", "unknown message type \"%.32s\"", type);

	if (err)
		send_error(conn, id, err);
}

/*
 * plank_protocol_handle
 *		Handle one complete client message of len bytes (msg is NUL-terminated
 *		at msg[len]).  Every outcome is a reply on this connection: an error
 *		raised while handling it is logged and answered with internal_error
 *		(or unknown_table for a table name that is not a valid SQL name).
 */
void
plank_protocol_handle(PlankConn *conn, char *msg, int len)
{
	MemoryContext oldcxt;

	if (request_cxt == NULL)
		request_cxt = AllocSetContextCreate(TopMemoryContext, "plank request",
											ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(request_cxt);

	request_sub = NULL;
	PG_TRY();
	{
		handle_request(conn, msg, len);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		RequestError *err;

		MemoryContextSwitchTo(request_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(request_cxt);
		unlink_failed_sub(conn);

		if (edata->sqlerrcode == ERRCODE_INVALID_NAME ||
			edata->sqlerrcode == ERRCODE_SYNTAX_ERROR ||
			edata->sqlerrcode == ERRCODE_NAME_TOO_LONG)
			err = request_error("unknown_table", "%s", edata->message);
		else if (edata->sqlerrcode == ERRCODE_CONFIGURATION_LIMIT_EXCEEDED)
			err = request_error("limit_exceeded", "%s", edata->message);
		else
		{
			ereport(LOG,
					(errmsg("plank could not process a request from %s: %s",
							conn->peer, edata->message)));
			err = request_error("internal_error", "the server could not process the request; see its log");
		}
		send_error(conn, request_id, err);
	}
	PG_END_TRY();

	request_id = NULL;
	request_sub = NULL;
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(request_cxt);
}

/* Settings (GUCs) read by this file; documented in README.md "Settings" */

/*
 * plank_protocol_define_settings
 *		Defines the plank.* settings of the protocol: the subscriptions
 *		one connection may hold.  Called once from _PG_init, in the
 *		postmaster, before the plank prefix is reserved
 *		(MarkGUCPrefixReserved).  Raises no error.  PostgreSQL docs:
 *		"Customized Options".
 */
void
plank_protocol_define_settings(void)
{
	DefineCustomIntVariable("plank.max_subscriptions",
							"Sets the largest number of subscriptions one WebSocket connection may hold.",
							NULL,
							&plank_max_subscriptions,
							100, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
}
