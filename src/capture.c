/*-------------------------------------------------------------------------
 *
 * capture.c
 *		plank.capture(): the trigger function that turns a row change into a
 *		NOTIFY on channel "plank" with a JSON description of the change.
 *
 * NOTIFY is transactional: the notification is queued by Async_Notify and
 * delivered only when the writer's transaction commits, in commit order, and
 * never for a transaction that rolls back.  The payload format is documented
 * in docs/PROTOCOL.md ("Change payload").
 *
 * Sources followed: PostgreSQL docs "Writing Trigger Functions in C" and
 * "NOTIFY" (payload limit of 8000 bytes, duplicate folding within one
 * transaction, which the per-transaction counter "n" defeats on purpose).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "nodes/bitmapset.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/relcache.h"

#include "plank.h"

/* NOTIFY refuses payloads of this many bytes or more (async.c) */
#define NOTIFY_PAYLOAD_LIMIT 8000

/* room for ,"overflow":<int64>} at the end of a payload */
#define OVERFLOW_REF_MAXLEN 40

PG_FUNCTION_INFO_V1(plank_capture);

/* position of the next change within the current transaction */
static LocalTransactionId counter_lxid = InvalidLocalTransactionId;
static uint32 counter_n = 0;

/* Render a whole tuple with row_to_json (PostgreSQL's JSON conversion). */
static text *
tuple_to_json(HeapTuple tuple, TupleDesc tupdesc)
{
	Datum		rowdatum = heap_copy_tuple_as_datum(tuple, tupdesc);

	return DatumGetTextPP(DirectFunctionCall1(row_to_json, rowdatum));
}

/* Render the given attributes of a tuple (a set of attnums) as a JSON object. */
static text *
attrs_to_json(TupleDesc tupdesc, HeapTuple tuple, Bitmapset *attnums)
{
	int			natts = bms_num_members(attnums);
	TupleDesc	desc = CreateTemplateTupleDesc(natts);
	Datum	   *values = palloc(natts * sizeof(Datum));
	bool	   *nulls = palloc(natts * sizeof(bool));
	int			i = 0;
	int			attnum = -1;

	while ((attnum = bms_next_member(attnums, attnum)) >= 0)
	{
		TupleDescCopyEntry(desc, i + 1, tupdesc, attnum);
		values[i] = heap_getattr(tuple, attnum, tupdesc, &nulls[i]);
		i++;
	}
	desc = BlessTupleDesc(desc);

	return DatumGetTextPP(DirectFunctionCall1(row_to_json,
											  HeapTupleGetDatum(heap_form_tuple(desc, values, nulls))));
}

/*
 * The columns that identify a row, as attnums: the replica identity index's
 * (the primary key by default), else the primary key's (REPLICA IDENTITY
 * FULL or NOTHING have no index); NULL when the table has neither.
 */
static Bitmapset *
identity_attnums(Relation rel)
{
	Bitmapset  *idattrs = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);
	Bitmapset  *result = NULL;
	int			member = -1;

	if (bms_is_empty(idattrs))
		idattrs = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);

	while ((member = bms_next_member(idattrs, member)) >= 0)
		result = bms_add_member(result, member + FirstLowInvalidHeapAttributeNumber);
	return result;
}

/*
 * The columns a trigger sends, from its arguments (set by plank.track):
 * none: every column (NULL is returned); "columns", c1, c2...: those and the
 * identity columns; "exclude", c1, c2...: every column but those, keeping
 * the identity columns.
 */
static Bitmapset *
tracked_attnums(Relation rel, Trigger *trigger)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	bool		include;
	Bitmapset  *named = NULL;
	Bitmapset  *result;
	int			i;

	if (trigger->tgnargs < 1)
		return NULL;
	include = strcmp(trigger->tgargs[0], "columns") == 0;
	if (!include && strcmp(trigger->tgargs[0], "exclude") != 0)
		return NULL;
	for (i = 1; i < trigger->tgnargs; i++)
	{
		int			attnum = SPI_fnumber(tupdesc, trigger->tgargs[i]);

		if (attnum > 0)
			named = bms_add_member(named, attnum);
	}
	if (include)
		result = named;
	else
	{
		result = NULL;
		for (i = 1; i <= tupdesc->natts; i++)
			if (!TupleDescAttr(tupdesc, i - 1)->attisdropped && !bms_is_member(i, named))
				result = bms_add_member(result, i);
	}
	return bms_union(result, identity_attnums(rel));
}

/* The new row as sent: every column, or the tracked ones. */
static text *
row_to_payload_json(Relation rel, HeapTuple tuple, Bitmapset *columns)
{
	if (columns == NULL)
		return tuple_to_json(tuple, RelationGetDescr(rel));
	return attrs_to_json(RelationGetDescr(rel), tuple, columns);
}

/*
 * Render the replica identity columns of a tuple (the primary key by default)
 * as a JSON object; the whole row (its tracked columns) with REPLICA
 * IDENTITY FULL or when the table has no identity index.
 */
static text *
identity_to_json(Relation rel, HeapTuple tuple, Bitmapset *columns)
{
	Bitmapset  *idattrs;

	if (rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL)
		return row_to_payload_json(rel, tuple, columns);
	idattrs = identity_attnums(rel);
	if (bms_is_empty(idattrs))
		return row_to_payload_json(rel, tuple, columns);
	return attrs_to_json(RelationGetDescr(rel), tuple, idattrs);
}

/*
 * Store an oversized payload in plank.overflow for the worker, which reads
 * and deletes it once the transaction has committed.  Runs as the table's
 * owner (writers get no privilege on it) in a subtransaction, so that a
 * failure costs the writer nothing but this payload: returns 0 then, with a
 * WARNING.  Also returns 0 outside plank.database, where no worker would
 * ever read the row.
 */
typedef struct OverflowInsert
{
	const char *payload;
	Oid			owner;
	int64		id;
} OverflowInsert;

/* The INSERT into plank.overflow, as the table's owner (in a subtransaction). */
static void
insert_overflow(void *arg)
{
	OverflowInsert *ins = (OverflowInsert *) arg;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(ins->payload)};
	Oid			save_userid;
	int			save_sec_context;
	bool		isnull;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(ins->owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	SPI_connect();
	if (SPI_execute_with_args("INSERT INTO plank.overflow (payload) VALUES ($1) RETURNING id",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not insert into plank.overflow");
	ins->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

static int64
store_overflow(const char *payload)
{
	Oid			nspid = get_namespace_oid("plank", true);
	Oid			relid = OidIsValid(nspid) ? get_relname_relid("overflow", nspid) : InvalidOid;
	HeapTuple	reltup;
	OverflowInsert ins;
	ErrorData  *edata;
	char	   *dbname = get_database_name(MyDatabaseId);

	if (!OidIsValid(relid) || dbname == NULL || !plank_serves_database(dbname))
		return 0;

	reltup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(reltup))
		return 0;
	ins.owner = ((Form_pg_class) GETSTRUCT(reltup))->relowner;
	ReleaseSysCache(reltup);
	ins.payload = payload;
	ins.id = 0;

	if (!plank_try_subxact(insert_overflow, &ins, &edata))
	{
		ereport(WARNING,
				(errmsg("plank could not store an oversized change payload: %s", edata->message),
				 errdetail("Clients receive the row's key with \"truncated\": true.")));
		FreeErrorData(edata);
		return 0;
	}
	return ins.id;
}

static void
append_json_text(StringInfo buf, const char *key, text *json)
{
	appendStringInfo(buf, ",\"%s\":", key);
	appendBinaryStringInfo(buf, VARDATA_ANY(json), VARSIZE_ANY_EXHDR(json));
}

/*
 * The relation a payload names: the table itself, or for a partition (whose
 * trigger is a clone of its parent's), the root partitioned table.
 */
static void
payload_relation_names(Relation rel, Trigger *trigger, char **schema, char **table)
{
	Oid			relid = RelationGetRelid(rel);

	if (rel->rd_rel->relispartition && trigger->tgisclone)
		relid = llast_oid(get_partition_ancestors(relid));

	*schema = get_namespace_name(get_rel_namespace(relid));
	*table = get_rel_name(relid);
}

/*
 * plank_capture
 *		Trigger function plank.capture(): AFTER INSERT/UPDATE/DELETE FOR EACH
 *		ROW, or AFTER TRUNCATE FOR EACH STATEMENT.  Queues one NOTIFY on channel
 *		"plank" whose payload is described in docs/PROTOCOL.md.  Raises 39P01
 *		(trigger_protocol_violated) when called in any other way.  A payload
 *		that would reach NOTIFY's 8000-byte limit is stored in plank.overflow
 *		and replaced by the row's key with "truncated": true and a reference
 *		the worker resolves, so the writer's transaction never fails on size.
 */
Datum
plank_capture(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TriggerEvent event;
	const char *op;
	char	   *schema;
	char	   *table;
	text	   *newjson = NULL;
	text	   *oldjson = NULL;
	Bitmapset  *columns;
	StringInfoData head;
	StringInfoData buf;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("plank.capture() must be called as a trigger")));

	event = trigdata->tg_event;
	if (!TRIGGER_FIRED_AFTER(event) ||
		(TRIGGER_FIRED_BY_TRUNCATE(event) ? !TRIGGER_FIRED_FOR_STATEMENT(event)
		 : !TRIGGER_FIRED_FOR_ROW(event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("plank.capture() must be fired AFTER, FOR EACH ROW (or FOR EACH STATEMENT on TRUNCATE)"),
				 errhint("Attach it with plank.track(table).")));

	rel = trigdata->tg_relation;
	payload_relation_names(rel, trigdata->tg_trigger, &schema, &table);
	columns = tracked_attnums(rel, trigdata->tg_trigger);

	if (TRIGGER_FIRED_BY_INSERT(event))
	{
		op = "INSERT";
		newjson = row_to_payload_json(rel, trigdata->tg_trigtuple, columns);
	}
	else if (TRIGGER_FIRED_BY_UPDATE(event))
	{
		op = "UPDATE";
		newjson = row_to_payload_json(rel, trigdata->tg_newtuple, columns);
		oldjson = identity_to_json(rel, trigdata->tg_trigtuple, columns);
	}
	else if (TRIGGER_FIRED_BY_DELETE(event))
	{
		op = "DELETE";
		oldjson = identity_to_json(rel, trigdata->tg_trigtuple, columns);
	}
	else
		op = "TRUNCATE";

	/* a fresh counter for each transaction; makes every payload unique */
	if (MyProc->lxid != counter_lxid)
	{
		counter_lxid = MyProc->lxid;
		counter_n = 0;
	}
	counter_n++;

	initStringInfo(&head);
	appendStringInfoString(&head, "{\"schema\":");
	escape_json(&head, schema);
	appendStringInfoString(&head, ",\"table\":");
	escape_json(&head, table);
	appendStringInfo(&head, ",\"op\":\"%s\",\"xid\":" UINT64_FORMAT ",\"n\":%u",
					 op, U64FromFullTransactionId(GetTopFullTransactionId()),
					 counter_n);

	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, head.data, head.len);
	if (newjson)
		append_json_text(&buf, "new", newjson);
	if (oldjson)
		append_json_text(&buf, "old", oldjson);
	appendStringInfoChar(&buf, '}');

	if (buf.len >= NOTIFY_PAYLOAD_LIMIT)
	{
		/*
		 * Too large for NOTIFY: store the payload, exactly as it is now, for
		 * the worker, and notify the identity with "truncated" and a
		 * reference to the stored payload.  If the payload cannot be stored,
		 * the identity alone still reaches clients.
		 */
		int64		overflow_id = store_overflow(buf.data);

		resetStringInfo(&buf);
		appendBinaryStringInfo(&buf, head.data, head.len);
		appendStringInfoString(&buf, ",\"truncated\":true");
		if (newjson)
			append_json_text(&buf, "key",
							 identity_to_json(rel, TRIGGER_FIRED_BY_UPDATE(event) ?
											  trigdata->tg_newtuple : trigdata->tg_trigtuple, columns));
		if (oldjson)
			append_json_text(&buf, "old", oldjson);

		if (buf.len >= NOTIFY_PAYLOAD_LIMIT - OVERFLOW_REF_MAXLEN)
		{
			/* even the key is too large (or the table has no key) */
			resetStringInfo(&buf);
			appendBinaryStringInfo(&buf, head.data, head.len);
			appendStringInfoString(&buf, ",\"truncated\":true");
		}
		if (overflow_id > 0)
			appendStringInfo(&buf, ",\"overflow\":" INT64_FORMAT, overflow_id);
		appendStringInfoChar(&buf, '}');
	}

	Async_Notify(plank_change_channel(), buf.data);

	return PointerGetDatum(NULL);
}
