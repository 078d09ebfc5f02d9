/*-------------------------------------------------------------------------
 *
 * capture.c
 *		plank.capture(): the trigger function that turns row changes into
 *		NOTIFYs on the change channel (plank.change_channel()) carrying JSON
 *		descriptions of the changes.
 *
 * plank.track() attaches it as AFTER INSERT / UPDATE / DELETE FOR EACH
 * STATEMENT triggers with transition tables, so that a statement changing
 * many rows costs a few notifications: its changes go out as JSON arrays
 * under NOTIFY's limit, or as arrays of about 1 MB stored in plank.overflow
 * and referenced by one notification each.  The worker (events.c) expands
 * them into one event per row.  Each row's change is built by
 * append_change(), which the FOR EACH ROW form shares.
 *
 * On a logical replication subscriber, the apply worker fires row triggers
 * only, and only those enabled for replica: plank.track() adds FOR EACH ROW
 * triggers enabled that way, so that changes applied from the primary are
 * sent as local writes are (the same payloads, the apply transaction's
 * boundaries): held until the apply transaction commits, then sent packed,
 * each with the origin's commit position ("Changes applied by logical
 * replication" below).  docs/SCALING.md describes the topology.
 *
 * NOTIFY is transactional: the notification is queued by Async_Notify and
 * delivered only when the writer's transaction commits, in commit order, and
 * never for a transaction that rolls back.  The payload format is documented
 * in docs/PROTOCOL.md ("Change payload").
 *
 * Sources followed: PostgreSQL docs "Writing Trigger Functions in C",
 * "CREATE TRIGGER" (transition tables, one event per trigger, statement
 * triggers of partitioned tables) and "NOTIFY" (payload limit of 8000
 * bytes, duplicate folding within one transaction, which the per-transaction
 * counter "n" defeats on purpose); src/backend/commands/trigger.c and
 * src/backend/executor/nodeModifyTable.c of PostgreSQL 15 (how transition
 * tables are filled), src/backend/executor/nodeNamedtuplestorescan.c (how
 * they are read).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_class.h"
#include "catalog/pg_subscription_rel.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "nodes/bitmapset.h"
#include "replication/origin.h"
#include "replication/worker_internal.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"
#include "utils/memutils.h"

#include "plank.h"

/* NOTIFY refuses payloads of this many bytes or more (async.c) */
#define NOTIFY_PAYLOAD_LIMIT 8000

/* room for ,"overflow":<int64>} at the end of a payload */
#define OVERFLOW_REF_MAXLEN 40

PG_FUNCTION_INFO_V1(plank_capture);

/* position of the next change within the current transaction */
/*
 * The NOTIFY channel of table changes: "plank_" and 64 random bits, drawn
 * when the server starts, in shared memory.  Only the capture trigger and
 * the worker know it, so no SQL session can forge a change with
 * pg_notify() (superusers can read it with plank.change_channel()).
 */
typedef struct ChangeChannel
{
	char		name[NAMEDATALEN];
} ChangeChannel;

static ChangeChannel *change_channel = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
channel_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(ChangeChannel)));
}

static void
channel_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	change_channel = ShmemInitStruct("plank change channel", sizeof(ChangeChannel), &found);
	if (!found)
	{
		uint64		secret;

		if (!pg_strong_random(&secret, sizeof(secret)))
			ereport(FATAL,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random channel name for plank")));
		snprintf(change_channel->name, NAMEDATALEN, "plank_%016llx", (unsigned long long) secret);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * plank_capture_init
 *		Called from _PG_init (in the postmaster): reserve the shared memory of
 *		the change channel, drawn when it is first attached.  Raises FATAL
 *		(XX000) at server start when no strong random number is available.
 */
void
plank_capture_init(void)
{
	plank_install_shmem_request_hook(&prev_shmem_request_hook, channel_shmem_request);
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = channel_shmem_startup;
}

/*
 * plank_change_channel
 *		The NOTIFY channel the capture trigger and the worker use for table
 *		changes (random, fixed until the server restarts).
 */
const char *
plank_change_channel(void)
{
	return change_channel->name;
}

PG_FUNCTION_INFO_V1(plank_change_channel_sql);

/*
 * plank_change_channel_sql
 *		plank.change_channel() returns text: the channel of table changes, for
 *		superusers who LISTEN to the raw payloads (tests, benchmarks).
 *		Raises nothing; EXECUTE is revoked from PUBLIC.
 */
Datum
plank_change_channel_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(plank_change_channel()));
}

static LocalTransactionId counter_lxid = InvalidLocalTransactionId;
static uint32 counter_n = 0;

/*
 * Partitions whose TRUNCATE is already covered by the TRUNCATE change of an
 * ancestor in this statement (a TRUNCATE of a partitioned table fires the
 * AFTER TRUNCATE triggers of all its partitions too, after its own): each is
 * skipped once, when its trigger fires.  The list belongs to one statement,
 * told by transaction, subtransaction and command ID; allocated in
 * TopTransactionContext.
 */
static LocalTransactionId truncated_lxid = InvalidLocalTransactionId;
static SubTransactionId truncated_subxid = InvalidSubTransactionId;
static CommandId truncated_cid = InvalidCommandId;
static List *truncated_covered = NIL;

/*
 * In a logical replication worker: the local transaction that last applied a
 * tracked change, and whether the commit callback is registered (once per
 * process).
 */
static LocalTransactionId applied_lxid = InvalidLocalTransactionId;
static bool origin_callback_registered = false;

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
 * IDENTITY FULL, for a table with row-level security enabled, or when the
 * table has no identity index.
 */
static text *
identity_to_json(Relation rel, HeapTuple tuple, Bitmapset *columns)
{
	Bitmapset  *idattrs;

	/*
	 * Row-level security is decided on the old row as committed: clients
	 * under it get only its key (visibility.c), the others may read the row.
	 */
	if (rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL || rel->rd_rel->relrowsecurity)
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
	int			save_nestlevel;
	bool		isnull;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(ins->owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);

	/*
	 * This runs in the writer's session, under the writer's search_path.  The
	 * statement names nothing unqualified (no operator, function or type is
	 * looked up), and search_path is pinned as a SET clause would pin it, so
	 * that nothing found through the writer's path can run here as the table
	 * owner (PostgreSQL docs, "Writing SECURITY DEFINER Functions Safely").
	 * The subtransaction's abort restores it on error.
	 */
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	SPI_connect();
	if (SPI_execute_with_args("INSERT INTO plank.overflow (payload) VALUES ($1::pg_catalog.text) RETURNING id",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not insert into plank.overflow");
	ins->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	AtEOXact_GUC(true, save_nestlevel);
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
 * The relation a payload names: the table itself, or for a partition, the
 * partitioned table that was tracked.  A partition's row trigger is a clone
 * of its parent's (named by the root, as always); a partition's statement
 * triggers are made by plank.track() on the partitioned table, named
 * plank_partition_<op>, and name the farthest ancestor that carries the
 * matching plank_capture_<op> trigger (the root when none does any more).
 */
static void
payload_relation_names(Relation rel, Trigger *trigger, char **schema, char **table)
{
	Oid			relid = RelationGetRelid(rel);

	if (rel->rd_rel->relispartition &&
		(trigger->tgisclone || strncmp(trigger->tgname, "plank_partition_", 16) == 0))
	{
		List	   *ancestors = get_partition_ancestors(relid);
		ListCell   *lc;

		relid = llast_oid(ancestors);
		if (!trigger->tgisclone)
		{
			char		tracked[NAMEDATALEN];
			Oid			found = InvalidOid;

			snprintf(tracked, sizeof(tracked), "plank_capture_%s", trigger->tgname + 16);
			foreach(lc, ancestors)
			{
				if (OidIsValid(get_trigger_oid(lfirst_oid(lc), tracked, true)))
					found = lfirst_oid(lc);
			}
			if (OidIsValid(found))
				relid = found;
		}
	}

	*schema = get_namespace_name(get_rel_namespace(relid));
	*table = get_rel_name(relid);
}

/*
 * What every change of one trigger call shares: the table, the names the
 * payload gives it, the columns sent, and the writing transaction.
 */
typedef struct CaptureTarget
{
	Relation	rel;
	char	   *schema;
	char	   *table;
	Bitmapset  *columns;		/* NULL: every column */
	uint64		xid;
	char	   *part_schema;	/* TRUNCATE of a partition: the partition */
	char	   *part_table;
} CaptureTarget;

/* The next change's position in the current transaction ("n"), from 1. */
static uint32
next_change_number(void)
{
	/* a fresh counter for each transaction; makes every payload unique */
	if (plank_my_lxid() != counter_lxid)
	{
		counter_lxid = plank_my_lxid();
		counter_n = 0;
	}
	return ++counter_n;
}

/* room for ,"origin":"XXXXXXXX/XXXXXXXX" in a deferred change */
#define ORIGIN_MAXLEN 32

/*
 * append_change_deferrable
 *		Append one change payload (a JSON object, docs/PROTOCOL.md "Change
 *		payload") to out: op is "INSERT" (newtup), "UPDATE" (newtup and
 *		oldtup), "DELETE" (oldtup) or "TRUNCATE" (neither).  The row trigger
 *		and the statement trigger both build each change here.  A payload
 *		that would reach NOTIFY's 8000-byte limit is stored in
 *		plank.overflow and replaced by the row's key with "truncated": true
 *		and a reference the worker resolves, so what is appended is always
 *		under the limit and the writer's transaction never fails on size.
 *
 *		With fallback (a change sent at commit, see "Changes applied by
 *		logical replication" below), nothing is stored: out gets the whole
 *		payload, and when it is too large to be sent with the origin member
 *		added, fallback gets the truncated form without its reference and
 *		closing brace, and true is returned.
 */
static bool
append_change_deferrable(StringInfo out, CaptureTarget *t, const char *op,
						 HeapTuple newtup, HeapTuple oldtup, StringInfo fallback)
{
	Relation	rel = t->rel;
	text	   *newjson = NULL;
	text	   *oldjson = NULL;
	StringInfoData head;
	StringInfo	small;
	int			start = out->len;
	int			room = fallback ? ORIGIN_MAXLEN : 0;
	int			small_start;
	int64		overflow_id = 0;

	if (newtup)
		newjson = row_to_payload_json(rel, newtup, t->columns);
	if (oldtup)
		oldjson = identity_to_json(rel, oldtup, t->columns);

	initStringInfo(&head);
	appendStringInfoString(&head, "{\"schema\":");
	escape_json(&head, t->schema);
	appendStringInfoString(&head, ",\"table\":");
	escape_json(&head, t->table);
	appendStringInfo(&head, ",\"op\":\"%s\",\"xid\":" UINT64_FORMAT ",\"n\":%u",
					 op, t->xid, next_change_number());
	if (t->part_table != NULL)
	{
		appendStringInfoString(&head, ",\"partition\":{\"schema\":");
		escape_json(&head, t->part_schema);
		appendStringInfoString(&head, ",\"table\":");
		escape_json(&head, t->part_table);
		appendStringInfoChar(&head, '}');
	}

	appendBinaryStringInfo(out, head.data, head.len);
	if (newjson)
		append_json_text(out, "new", newjson);
	if (oldjson)
		append_json_text(out, "old", oldjson);
	appendStringInfoChar(out, '}');

	if (out->len - start + room < NOTIFY_PAYLOAD_LIMIT)
	{
		pfree(head.data);
		return false;
	}

	/*
	 * Too large for NOTIFY: store the payload, exactly as it is now, for the
	 * worker, and send the identity with "truncated" and a reference to the
	 * stored payload.  If the payload cannot be stored, the identity alone
	 * still reaches clients.  A deferred change is stored at commit, by the
	 * caller.
	 */
	if (fallback == NULL)
	{
		overflow_id = store_overflow(out->data + start);
		out->len = start;
		out->data[start] = '\0';
		small = out;
	}
	else
		small = fallback;
	small_start = small->len;
	appendBinaryStringInfo(small, head.data, head.len);
	appendStringInfoString(small, ",\"truncated\":true");
	if (newjson)
		append_json_text(small, "key", identity_to_json(rel, newtup, t->columns));
	if (oldjson)
		append_json_text(small, "old", oldjson);

	if (small->len - small_start + room >= NOTIFY_PAYLOAD_LIMIT - OVERFLOW_REF_MAXLEN)
	{
		/* even the key is too large (or the table has no key) */
		small->len = small_start;
		small->data[small_start] = '\0';
		appendBinaryStringInfo(small, head.data, head.len);
		appendStringInfoString(small, ",\"truncated\":true");
	}
	if (fallback == NULL)
	{
		if (overflow_id > 0)
			appendStringInfo(out, ",\"overflow\":" INT64_FORMAT, overflow_id);
		appendStringInfoChar(out, '}');
	}
	pfree(head.data);
	return true;
}

/* append_change_deferrable for a change sent now. */
static void
append_change(StringInfo out, CaptureTarget *t, const char *op,
			  HeapTuple newtup, HeapTuple oldtup)
{
	(void) append_change_deferrable(out, t, op, newtup, oldtup, NULL);
}

/*
 * Packing the changes of one statement into few notifications.
 *
 * The changes are appended, as the elements of a JSON array, to a chunk of at
 * most CHUNK_TARGET bytes (a change that does not fit starts the next chunk),
 * and each full chunk is sent as soon as it is full, so that the writer holds
 * one chunk at a time however many rows the statement changed.  A chunk is
 * sent as one notification when it is under NOTIFY's limit (the bare object
 * when it holds one change, as the row trigger sends it), as a few
 * notifications of at most 8000 bytes each when it is under PACK_MAX bytes,
 * and else stored in plank.overflow and referenced by one notification
 * {"batch": id, "xid": ..., "changes": count}: a 100,000-row statement costs
 * about one notification per megabyte of payload.  Every change appended is
 * under NOTIFY's limit (append_change), so packing always succeeds.
 */
#define CHUNK_TARGET (1024 * 1024)
#define PACK_MAX (4 * NOTIFY_PAYLOAD_LIMIT)

typedef struct ChangeChunk
{
	MemoryContext cxt;			/* buf and ends; reset after each chunk */
	StringInfoData buf;			/* "[" c1 "," c2 ... (no "]" yet) */
	int		   *ends;			/* where each change ends in buf */
	int			nchanges;
	int			maxchanges;
	uint64		xid;
} ChangeChunk;

static void
chunk_start(ChangeChunk *chunk)
{
	MemoryContext old = MemoryContextSwitchTo(chunk->cxt);

	initStringInfo(&chunk->buf);
	appendStringInfoChar(&chunk->buf, '[');
	chunk->maxchanges = 64;
	chunk->ends = palloc(chunk->maxchanges * sizeof(int));
	chunk->nchanges = 0;
	MemoryContextSwitchTo(old);
}

/* Send changes [from, to) of the chunk: the bare object for one, else an array. */
static void
chunk_notify_range(ChangeChunk *chunk, int from, int to)
{
	StringInfoData msg;
	int			begin = from == 0 ? 1 : chunk->ends[from - 1] + 1;
	int			end = chunk->ends[to - 1];

	if (to - from == 1)
	{
		/* a copy: the payload must end with a NUL */
		char	   *one = pnstrdup(chunk->buf.data + begin, end - begin);

		Async_Notify(plank_change_channel(), one);
		pfree(one);
		return;
	}
	initStringInfo(&msg);
	appendStringInfoChar(&msg, '[');
	appendBinaryStringInfo(&msg, chunk->buf.data + begin, end - begin);
	appendStringInfoChar(&msg, ']');
	Async_Notify(plank_change_channel(), msg.data);
	pfree(msg.data);
}

/* Send a chunk's changes in notifications of at most 8000 bytes each. */
static void
chunk_notify_packed(ChangeChunk *chunk)
{
	int			from = 0;
	int			i;

	for (i = 1; i <= chunk->nchanges; i++)
	{
		int			begin = from == 0 ? 1 : chunk->ends[from - 1] + 1;

		/* "[" changes from..i "]" must stay under the limit */
		if (i < chunk->nchanges &&
			chunk->ends[i] - begin + 2 < NOTIFY_PAYLOAD_LIMIT)
			continue;
		chunk_notify_range(chunk, from, i);
		from = i;
	}
}

/* Send the chunk's changes (see above) and empty it. */
static void
chunk_flush(ChangeChunk *chunk)
{
	int64		batch_id = 0;

	if (chunk->nchanges == 0)
		return;
	if (chunk->buf.len + 1 < PACK_MAX)
		chunk_notify_packed(chunk);
	else
	{
		char		ref[128];

		appendStringInfoChar(&chunk->buf, ']');
		batch_id = store_overflow(chunk->buf.data);
		if (batch_id > 0)
		{
			snprintf(ref, sizeof(ref),
					 "{\"batch\":" INT64_FORMAT ",\"xid\":" UINT64_FORMAT ",\"changes\":%d}",
					 batch_id, chunk->xid, chunk->nchanges);
			Async_Notify(plank_change_channel(), ref);
		}
		else
		{
			/* not stored (another database, or an error already reported) */
			chunk->buf.len--;
			chunk->buf.data[chunk->buf.len] = '\0';
			chunk_notify_packed(chunk);
		}
	}
	MemoryContextReset(chunk->cxt);
	chunk_start(chunk);
}

/* Append the change just written at the end of row (a NUL-terminated object). */
static void
chunk_add(ChangeChunk *chunk, StringInfo row)
{
	MemoryContext old;

	if (chunk->nchanges > 0 && chunk->buf.len + 1 + row->len + 1 > CHUNK_TARGET)
		chunk_flush(chunk);
	old = MemoryContextSwitchTo(chunk->cxt);
	if (chunk->nchanges > 0)
		appendStringInfoChar(&chunk->buf, ',');
	appendBinaryStringInfo(&chunk->buf, row->data, row->len);
	if (chunk->nchanges == chunk->maxchanges)
	{
		chunk->maxchanges *= 2;
		chunk->ends = repalloc(chunk->ends, chunk->maxchanges * sizeof(int));
	}
	chunk->ends[chunk->nchanges++] = chunk->buf.len;
	MemoryContextSwitchTo(old);
}

/*
 * A reader of a transition table: its own read pointer (the tuplestore is
 * shared with any other AFTER STATEMENT trigger of the statement, as
 * nodeNamedtuplestorescan.c does) and a slot.  The slot lives in the trigger
 * call's context: a tuple read back from a spilled tuplestore belongs to the
 * slot, which frees it at the next read.
 */
typedef struct TransitionReader
{
	Tuplestorestate *ts;
	int			readptr;
	TupleTableSlot *slot;
} TransitionReader;

static void
reader_open(TransitionReader *r, Tuplestorestate *ts, TupleDesc desc)
{
	r->ts = ts;
	r->readptr = tuplestore_alloc_read_pointer(ts, EXEC_FLAG_REWIND);
	r->slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	/* a new read pointer starts where pointer 0 is: at the start, rewound */
	tuplestore_select_read_pointer(ts, r->readptr);
	tuplestore_rescan(ts);
}

/*
 * Read the next row into the reader's slot; false at the end.  Call it in the
 * trigger call's context (the slot owns what it reads).
 */
static bool
reader_next(TransitionReader *r)
{
	tuplestore_select_read_pointer(r->ts, r->readptr);
	return tuplestore_gettupleslot(r->ts, true, false, r->slot);
}

/*
 * The row last read, as a heap tuple: a copy, made in the current memory
 * context (the per-row one, reset after each row: the copies of a
 * million-row statement must not pile up).
 */
static HeapTuple
reader_tuple(TransitionReader *r)
{
	bool		should_free;

	return ExecFetchSlotHeapTuple(r->slot, false, &should_free);
}

static void
reader_close(TransitionReader *r)
{
	tuplestore_select_read_pointer(r->ts, 0);
	ExecDropSingleTupleTableSlot(r->slot);
}

/*
 * capture_statement
 *		The statement trigger's work: one change per row of the transition
 *		tables, built by append_change exactly as the row trigger builds it,
 *		in the order the rows were changed, packed into chunks (above).
 *		Memory: one row's JSON (reset per row) and one chunk at a time.
 *
 * UPDATE pairs the i-th row of the OLD TABLE with the i-th row of the NEW
 * TABLE.  PostgreSQL 15 appends both images of a row together
 * (ExecARUpdateTriggers -> AfterTriggerSaveEvent in
 * src/backend/commands/trigger.c), and a cross-partition UPDATE appends the
 * old image when it deletes the row from its partition and the new one when
 * it inserts it into the other (ExecCrossPartitionUpdate, ExecDelete and
 * ExecInsert in src/backend/executor/nodeModifyTable.c), so the pairing holds
 * for partitioned tables too, with one exception checked on 15.20: when a
 * BEFORE INSERT row trigger of the destination partition returns NULL, the
 * row is deleted from its partition and inserted nowhere, and its old image
 * has no new one.  The tables then differ in length and no pairing can be
 * trusted, so the statement is sent as what it did: a DELETE for every old
 * row, then an INSERT for every new one.
 */
static void
capture_statement(TriggerData *trigdata, CaptureTarget *t)
{
	TriggerEvent event = trigdata->tg_event;
	TupleDesc	desc = RelationGetDescr(t->rel);
	Tuplestorestate *newts = NULL;
	Tuplestorestate *oldts = NULL;
	TransitionReader newr;
	TransitionReader oldr;
	ChangeChunk chunk;
	MemoryContext callcxt = CurrentMemoryContext;
	MemoryContext rowcxt;
	StringInfoData row;
	bool		paired = true;

	memset(&newr, 0, sizeof(newr));
	memset(&oldr, 0, sizeof(oldr));
	if (TRIGGER_FIRED_BY_INSERT(event) || TRIGGER_FIRED_BY_UPDATE(event))
		newts = trigdata->tg_newtable;
	if (TRIGGER_FIRED_BY_DELETE(event) || TRIGGER_FIRED_BY_UPDATE(event))
		oldts = trigdata->tg_oldtable;
	if ((newts == NULL && !TRIGGER_FIRED_BY_DELETE(event)) ||
		(oldts == NULL && !TRIGGER_FIRED_BY_INSERT(event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("plank.capture() fired FOR EACH STATEMENT needs the statement's transition tables"),
				 errhint("Attach it with plank.track(table), which declares REFERENCING NEW TABLE and OLD TABLE.")));

	/* a statement that changed no row sends nothing (and takes no xid) */
	if ((newts == NULL || tuplestore_tuple_count(newts) == 0) &&
		(oldts == NULL || tuplestore_tuple_count(oldts) == 0))
		return;
	if (newts && oldts && tuplestore_tuple_count(newts) != tuplestore_tuple_count(oldts))
		paired = false;

	t->xid = U64FromFullTransactionId(GetTopFullTransactionId());

	/*
	 * One row, the common case of single-row statements: one change, sent as
	 * the row trigger sends it, without creating the chunk's memory
	 * contexts.  Measured (pgbench, 4 clients, -T 10, synchronous_commit =
	 * off, 10 runs on 2 busy cores): single-row INSERT at a median of 15,200
	 * TPS with this trigger, 14,800 with the FOR EACH ROW form, 25,500
	 * untracked, so statement triggers cost single-row writers nothing more.
	 */
	if (paired &&
		(newts == NULL || tuplestore_tuple_count(newts) == 1) &&
		(oldts == NULL || tuplestore_tuple_count(oldts) == 1))
	{
		if (newts)
			reader_open(&newr, newts, desc);
		if (oldts)
			reader_open(&oldr, oldts, desc);
		if ((newts && !reader_next(&newr)) || (oldts && !reader_next(&oldr)))
			elog(ERROR, "could not read a transition table");
		initStringInfo(&row);
		append_change(&row, t, newts && oldts ? "UPDATE" : newts ? "INSERT" : "DELETE",
					  newts ? reader_tuple(&newr) : NULL, oldts ? reader_tuple(&oldr) : NULL);
		Async_Notify(plank_change_channel(), row.data);
		if (newts)
			reader_close(&newr);
		if (oldts)
			reader_close(&oldr);
		return;
	}

	chunk.xid = t->xid;
	chunk.cxt = AllocSetContextCreate(callcxt, "plank capture chunk",
									  ALLOCSET_DEFAULT_SIZES);
	chunk_start(&chunk);
	rowcxt = AllocSetContextCreate(callcxt, "plank capture row",
								   ALLOCSET_DEFAULT_SIZES);
	if (newts)
		reader_open(&newr, newts, desc);
	if (oldts)
		reader_open(&oldr, oldts, desc);

	if (paired)
	{
		const char *op = newts && oldts ? "UPDATE" : newts ? "INSERT" : "DELETE";

		for (;;)
		{
			/* read in the call's context: the slots own what they read */
			bool		more_new = newts && reader_next(&newr);
			bool		more_old = oldts && reader_next(&oldr);

			if (!more_new && !more_old)
				break;
			MemoryContextSwitchTo(rowcxt);
			initStringInfo(&row);
			append_change(&row, t, op, more_new ? reader_tuple(&newr) : NULL,
						  more_old ? reader_tuple(&oldr) : NULL);
			chunk_add(&chunk, &row);
			MemoryContextSwitchTo(callcxt);
			MemoryContextReset(rowcxt);
			CHECK_FOR_INTERRUPTS();
		}
	}
	else
	{
		/* an UPDATE whose images cannot be paired (see above) */
		while (reader_next(&oldr))
		{
			MemoryContextSwitchTo(rowcxt);
			initStringInfo(&row);
			append_change(&row, t, "DELETE", NULL, reader_tuple(&oldr));
			chunk_add(&chunk, &row);
			MemoryContextSwitchTo(callcxt);
			MemoryContextReset(rowcxt);
			CHECK_FOR_INTERRUPTS();
		}
		while (reader_next(&newr))
		{
			MemoryContextSwitchTo(rowcxt);
			initStringInfo(&row);
			append_change(&row, t, "INSERT", reader_tuple(&newr), NULL);
			chunk_add(&chunk, &row);
			MemoryContextSwitchTo(callcxt);
			MemoryContextReset(rowcxt);
			CHECK_FOR_INTERRUPTS();
		}
	}
	chunk_flush(&chunk);

	if (newts)
		reader_close(&newr);
	if (oldts)
		reader_close(&oldr);
	MemoryContextDelete(rowcxt);
	MemoryContextDelete(chunk.cxt);
}

/*
 * The output settings rows are rendered with, whatever the writer's session
 * says, as pg_dump fixes them (src/bin/pg_dump/pg_backup_db.c and
 * pg_dump.c setup_connection): every float digit, ISO dates, UTC, hex
 * bytea, PostgreSQL intervals.  The check worker reads snapshots with the
 * same settings (checker.c), so that a change and a snapshot of the same
 * row are byte-identical (docs/PROTOCOL.md "Exact values").
 */
const char *const plank_output_settings[][2] = {
	{"extra_float_digits", "3"},
	{"DateStyle", "ISO, YMD"},
	{"IntervalStyle", "postgres"},
	{"bytea_output", "hex"},
	{"TimeZone", "UTC"},
	{NULL, NULL}
};

/*
 * plank_output_settings_push
 *		Apply plank_output_settings for the rest of this call, as a
 *		function's SET clause does (fmgr_security_definer in fmgr.c): a new
 *		GUC nest level; the caller ends it with AtEOXact_GUC(true, level),
 *		and an error ends it with the (sub)transaction.  Returns the level.
 *		Cost, measured on 15.20 (20,000 single-row INSERT statements of a
 *		tracked table in one DO block, 3 runs each on a busy 2-core machine):
 *		90-95 ms without, 108-154 ms with, about 1 us per statement (once
 *		per statement, not per row).
 */
static int
plank_output_settings_push(void)
{
	int			nestlevel = NewGUCNestLevel();

	for (int i = 0; plank_output_settings[i][0] != NULL; i++)
		(void) set_config_option(plank_output_settings[i][0], plank_output_settings[i][1],
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

/*
 * truncate_covered
 *		For a TRUNCATE trigger firing on rel: whether an ancestor's TRUNCATE
 *		change, sent earlier in this statement, already covers rel (then
 *		nothing is sent; only plank_partition_truncate, which names the same
 *		tracked table as the ancestor's, is ever covered).  Otherwise, when rel is partitioned, its partitions
 *		are noted as covered: their triggers fire after its own in the same
 *		statement (ExecuteTruncateGuts in src/backend/commands/tablecmds.c
 *		fires the AFTER TRUNCATE triggers in the order the relations are
 *		listed, the named ones before the partitions it added).  When another
 *		trigger bumps the command ID in between, the partition's change is
 *		sent as well: a repeated TRUNCATE, never a lost one.
 */
static bool
truncate_covered(Relation rel, Trigger *trigger)
{
	Oid			relid = RelationGetRelid(rel);
	SubTransactionId subxid = GetCurrentSubTransactionId();
	CommandId	cid = GetCurrentCommandId(false);
	MemoryContext old;

	if (plank_my_lxid() != truncated_lxid || subxid != truncated_subxid ||
		cid != truncated_cid)
	{
		/* a list of an earlier transaction went with its memory */
		if (plank_my_lxid() == truncated_lxid)
			list_free(truncated_covered);
		truncated_lxid = plank_my_lxid();
		truncated_subxid = subxid;
		truncated_cid = cid;
		truncated_covered = NIL;
	}
	if (strcmp(trigger->tgname, "plank_partition_truncate") == 0 &&
		list_member_oid(truncated_covered, relid))
	{
		truncated_covered = list_delete_oid(truncated_covered, relid);
		return true;
	}
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
	{
		List	   *tree = find_all_inheritors(relid, NoLock, NULL);

		old = MemoryContextSwitchTo(TopTransactionContext);
		truncated_covered = list_concat(truncated_covered, list_delete_first(tree));
		MemoryContextSwitchTo(old);
	}
	return false;
}

/*
 * Changes applied by logical replication.
 *
 * In a logical replication worker, the changes of an apply transaction are
 * held until it commits and sent then (origin_xact_callback), each with the
 * origin's commit end LSN as "origin": the apply worker sets it just before
 * committing (replorigin_session_origin_lsn, apply_handle_commit_internal in
 * src/backend/replication/logical/worker.c of PostgreSQL 15).  A change has
 * the same "origin" and "n" on every subscriber, so that a client can resume
 * on another node (docs/SCALING.md).  What is held: each change's payload,
 * and the truncated form of an oversized one (stored in plank.overflow at
 * commit, with its origin), in TopTransactionContext: memory grows with the
 * payloads of the apply transaction until its commit.  They are sent packed
 * into chunks, as a statement's changes are.
 */
typedef struct DeferredChange
{
	char	   *payload;		/* the whole change, a JSON object */
	int			len;
	char	   *fallback;		/* oversized: the truncated form, open; else NULL */
	int			fallback_len;
} DeferredChange;

static LocalTransactionId deferred_lxid = InvalidLocalTransactionId;
static List *deferred_changes = NIL;
static uint64 deferred_xid = 0;

/* Hold one change of the apply transaction until its commit. */
static void
defer_change(CaptureTarget *t, const char *op, HeapTuple newtup, HeapTuple oldtup)
{
	StringInfoData full;
	StringInfoData fallback;
	DeferredChange *dc;
	MemoryContext old;
	bool		oversized;

	initStringInfo(&full);
	initStringInfo(&fallback);
	oversized = append_change_deferrable(&full, t, op, newtup, oldtup, &fallback);

	if (deferred_lxid != plank_my_lxid())
	{
		/* an earlier transaction's list went with its memory */
		deferred_lxid = plank_my_lxid();
		deferred_changes = NIL;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	dc = palloc(sizeof(DeferredChange));
	dc->payload = pnstrdup(full.data, full.len);
	dc->len = full.len;
	dc->fallback = oversized ? pnstrdup(fallback.data, fallback.len) : NULL;
	dc->fallback_len = oversized ? fallback.len : 0;
	deferred_changes = lappend(deferred_changes, dc);
	deferred_xid = t->xid;
	MemoryContextSwitchTo(old);
	pfree(full.data);
	pfree(fallback.data);
}

/*
 * Send the held changes of the committing transaction, each with
 * "origin": origin_lsn (none when it is invalid).
 */
static void
send_deferred_changes(XLogRecPtr origin_lsn)
{
	ChangeChunk chunk;
	ListCell   *lc;
	char		origin[ORIGIN_MAXLEN + 1];
	bool		pushed = false;

	if (deferred_lxid != plank_my_lxid() || deferred_changes == NIL)
		return;
	/* plank.overflow is written through SPI, which needs a snapshot */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	origin[0] = '\0';
	if (!XLogRecPtrIsInvalid(origin_lsn))
		snprintf(origin, sizeof(origin), ",\"origin\":\"%X/%X\"", LSN_FORMAT_ARGS(origin_lsn));

	chunk.xid = deferred_xid;
	chunk.cxt = AllocSetContextCreate(CurrentMemoryContext, "plank deferred chunk",
									  ALLOCSET_DEFAULT_SIZES);
	chunk_start(&chunk);
	foreach(lc, deferred_changes)
	{
		DeferredChange *dc = (DeferredChange *) lfirst(lc);
		StringInfoData row;

		/* the payload, with the origin before its closing brace */
		initStringInfo(&row);
		appendBinaryStringInfo(&row, dc->payload, dc->len - 1);
		appendStringInfoString(&row, origin);
		appendStringInfoChar(&row, '}');
		if (dc->fallback != NULL)
		{
			int64		overflow_id = store_overflow(row.data);

			resetStringInfo(&row);
			appendBinaryStringInfo(&row, dc->fallback, dc->fallback_len);
			appendStringInfoString(&row, origin);
			if (overflow_id > 0)
				appendStringInfo(&row, ",\"overflow\":" INT64_FORMAT, overflow_id);
			appendStringInfoChar(&row, '}');
		}
		chunk_add(&chunk, &row);
		pfree(row.data);
	}
	chunk_flush(&chunk);
	MemoryContextDelete(chunk.cxt);
	if (pushed)
		PopActiveSnapshot();
	deferred_changes = NIL;
	deferred_lxid = InvalidLocalTransactionId;
}

/*
 * origin_xact_callback
 *		Just before an apply transaction that captured tracked changes
 *		commits, send them (send_deferred_changes) and record the origin's
 *		position for plank.stats, /health and /metrics:
 *		the apply worker has then set replorigin_session_origin_lsn and
 *		_timestamp to the primary's commit end LSN and commit time
 *		(apply_handle_commit_internal in
 *		src/backend/replication/logical/worker.c of PostgreSQL 15).
 */
static void
origin_xact_callback(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_PRE_COMMIT || plank_my_lxid() != applied_lxid)
		return;
	send_deferred_changes(replorigin_session_origin == InvalidRepOriginId ?
						  InvalidXLogRecPtr : replorigin_session_origin_lsn);
	if (replorigin_session_origin == InvalidRepOriginId ||
		XLogRecPtrIsInvalid(replorigin_session_origin_lsn))
		return;
	plank_stats_origin_commit(replorigin_session_origin_lsn,
							  replorigin_session_origin_timestamp);
}

/*
 * replica_change_sent
 *		For a trigger that plank.track() enabled for replica only
 *		(plank_replica_<op>, ENABLE REPLICA): whether this firing sends its
 *		change.  Such triggers fire only under session_replication_role =
 *		replica, where the statement triggers do not.  They send in the
 *		logical replication workers (changes applied from the primary, and
 *		the catch-up of a table's synchronisation), never for the initial
 *		COPY of a table's synchronisation (its existing rows are not new
 *		changes: clients read them with a snapshot), nor in an ordinary
 *		session that set session_replication_role = replica (a bulk load
 *		that bypasses triggers on purpose).  Notes the transaction for
 *		origin_xact_callback.
 */
static bool
replica_change_sent(Trigger *trigger)
{
	if (trigger->tgenabled != TRIGGER_FIRES_ON_REPLICA)
		return true;
	if (MyLogicalRepWorker == NULL)
		return false;
	/* the initial COPY runs while the table is in the DATASYNC state (tablesync.c) */
	if (OidIsValid(MyLogicalRepWorker->relid) &&
		MyLogicalRepWorker->relstate == SUBREL_STATE_DATASYNC)
		return false;
	if (!origin_callback_registered)
	{
		RegisterXactCallback(origin_xact_callback, NULL);
		origin_callback_registered = true;
	}
	applied_lxid = plank_my_lxid();
	return true;
}

/*
 * plank_capture
 *		Trigger function plank.capture(), attached by plank.track():
 *		- AFTER INSERT / UPDATE / DELETE FOR EACH STATEMENT, one event per
 *		  trigger, with REFERENCING NEW TABLE (INSERT, UPDATE) and OLD TABLE
 *		  (UPDATE, DELETE): one change per row of the transition tables,
 *		  packed into few notifications (capture_statement);
 *		- AFTER TRUNCATE FOR EACH STATEMENT: one TRUNCATE change; fired
 *		  on a partition (plank_partition_truncate), it names the tracked
 *		  table and, in "partition", the partition truncated; nothing when a
 *		  TRUNCATE of an ancestor in the same statement already sent one;
 *		- AFTER INSERT / UPDATE / DELETE FOR EACH ROW: one notification per
 *		  row; plank.track() makes them ENABLE REPLICA (plank_replica_<op>)
 *		  for the changes a logical replication subscription applies, where
 *		  statement triggers never fire (replica_change_sent);
 *		- the same ENABLE REPLICA for AFTER TRUNCATE (plank_replica_truncate).
 *		Arguments (from plank.track): none (every column), or 'columns', c1,
 *		c2... (those and the identity key), or 'exclude', c1, c2... (all but
 *		those).  Each change is a JSON object, and a notification on the
 *		channel of plank.change_channel() carries one change, an array of
 *		changes, or a reference to an array stored in plank.overflow
 *		(docs/PROTOCOL.md, "Change payload").  Raises 39P01
 *		(trigger_protocol_violated) when called in any other way, or fired
 *		FOR EACH STATEMENT on INSERT, UPDATE or DELETE without the transition
 *		tables it needs.
 */
Datum
plank_capture(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent event;
	CaptureTarget target;
	StringInfoData buf;
	int			nestlevel;
	const char *op = "TRUNCATE";
	HeapTuple	newtup = NULL;
	HeapTuple	oldtup = NULL;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("plank.capture() must be called as a trigger")));

	event = trigdata->tg_event;
	if (!TRIGGER_FIRED_AFTER(event) ||
		(TRIGGER_FIRED_BY_TRUNCATE(event) && !TRIGGER_FIRED_FOR_STATEMENT(event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("plank.capture() must be fired AFTER"),
				 errhint("Attach it with plank.track(table).")));

	if (!replica_change_sent(trigdata->tg_trigger))
		return PointerGetDatum(NULL);

	target.rel = trigdata->tg_relation;
	target.part_schema = target.part_table = NULL;
	if (TRIGGER_FIRED_BY_TRUNCATE(event))
	{
		if (truncate_covered(target.rel, trigdata->tg_trigger))
			return PointerGetDatum(NULL);
		if (target.rel->rd_rel->relispartition &&
			strcmp(trigdata->tg_trigger->tgname, "plank_partition_truncate") == 0)
		{
			target.part_schema = get_namespace_name(RelationGetNamespace(target.rel));
			target.part_table = pstrdup(RelationGetRelationName(target.rel));
		}
	}
	payload_relation_names(target.rel, trigdata->tg_trigger, &target.schema, &target.table);
	target.columns = tracked_attnums(target.rel, trigdata->tg_trigger);

	nestlevel = plank_output_settings_push();
	if (TRIGGER_FIRED_FOR_STATEMENT(event) && !TRIGGER_FIRED_BY_TRUNCATE(event))
	{
		capture_statement(trigdata, &target);
		AtEOXact_GUC(true, nestlevel);
		return PointerGetDatum(NULL);
	}

	target.xid = U64FromFullTransactionId(GetTopFullTransactionId());
	if (TRIGGER_FIRED_BY_INSERT(event))
	{
		op = "INSERT";
		newtup = trigdata->tg_trigtuple;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(event))
	{
		op = "UPDATE";
		newtup = trigdata->tg_newtuple;
		oldtup = trigdata->tg_trigtuple;
	}
	else if (TRIGGER_FIRED_BY_DELETE(event))
	{
		op = "DELETE";
		oldtup = trigdata->tg_trigtuple;
	}

	if (trigdata->tg_trigger->tgenabled == TRIGGER_FIRES_ON_REPLICA)
	{
		/* applied by logical replication: sent at the apply commit */
		defer_change(&target, op, newtup, oldtup);
		AtEOXact_GUC(true, nestlevel);
		return PointerGetDatum(NULL);
	}

	initStringInfo(&buf);
	append_change(&buf, &target, op, newtup, oldtup);
	AtEOXact_GUC(true, nestlevel);
	Async_Notify(plank_change_channel(), buf.data);

	return PointerGetDatum(NULL);
}
