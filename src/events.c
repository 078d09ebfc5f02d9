/*-------------------------------------------------------------------------
 *
 * events.c
 *		Turns the notifications the worker received into events: stamps each
 *		with the next sequence number, expands the notifications that carry
 *		several changes (a statement's) into one per change, parses change
 *		payloads, fetches the payloads of oversized rows and statements from
 *		plank.overflow, marks where each transaction ends, builds each
 *		event's shared message body once, and hands the events to the
 *		subscriptions and the replay ring.
 *
 * A committed transaction's notifications are always read in one pass of
 * ProcessNotifyInterrupt (async.c writes them contiguously before commit and
 * readers stop at uncommitted entries), so the last change of a transaction
 * is found by looking ahead within the batch.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "runtime.h"
#include "jsonspan.h"
#include "event.h"
#include "stats.h"
#include "delivery.h"
#include "worker.h"

static MemoryContext batch_cxt = NULL;

/*
 * Memory of one notification while it is parsed, and of one event while it
 * is dispatched: reset after each, so that a statement changing 100,000 rows
 * does not hold 100,000 parsed payloads at once.
 */
static MemoryContext event_cxt = NULL;

/* plank_events_init: memory for event batches (worker start). */
void
plank_events_init(void)
{
	batch_cxt = AllocSetContextCreate(TopMemoryContext, "plank event batch",
									  ALLOCSET_DEFAULT_SIZES);
	event_cxt = AllocSetContextCreate(TopMemoryContext, "plank event",
									  ALLOCSET_DEFAULT_SIZES);
}

/*
 * plank_events_cleanup_overflow
 *		Delete every row of plank.overflow, if the extension is installed in
 *		this database.  Run in the transaction that starts LISTEN: rows left
 *		by notifications that no worker received (it was down) would never be
 *		read.  Uses SPI; the caller holds a transaction and a snapshot.
 */
void
plank_events_cleanup_overflow(void)
{
	Oid			nspid = get_namespace_oid("plank", true);

	/* catalog look-ups by name in schema plank, not a query: no search path */
	if (!OidIsValid(nspid) || !OidIsValid(get_relname_relid("overflow", nspid)))
		return;
	SPI_connect();
	if (SPI_execute("DELETE FROM plank.overflow", false, 0) == SPI_OK_DELETE && SPI_processed > 0)
		ereport(LOG,
				(errmsg("plank removed " UINT64_FORMAT " oversized payloads of changes sent while no worker was listening",
						(uint64) SPI_processed)));
	SPI_finish();
}

static bool
get_int64(Jsonb *jb, const char *key, int64 *result)
{
	JsonbValue	v;

	if (!plank_jsonb_member(&jb->root, key, &v) ||
		v.type != jbvNumeric)
		return false;
	*result = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v.val.numeric)));
	return true;
}

static int
op_from_name(const char *op)
{
	if (strcmp(op, "INSERT") == 0)
		return PLANK_OP_INSERT;
	if (strcmp(op, "UPDATE") == 0)
		return PLANK_OP_UPDATE;
	if (strcmp(op, "DELETE") == 0)
		return PLANK_OP_DELETE;
	if (strcmp(op, "TRUNCATE") == 0)
		return PLANK_OP_TRUNCATE;
	return 0;
}

/* A routing member's string value, de-escaped, into dst (dstlen bytes). */
static bool
member_string(const PlankJsonMember *m, char *dst, int dstlen)
{
	int			len;
	char	   *str;

	if (m == NULL || m->type != JSON_TOKEN_STRING)
		return false;
	str = plank_json_string(m->value, m->valuelen, &len);
	if (str == NULL || len >= dstlen || memchr(str, '\0', len) != NULL)
		return false;
	memcpy(dst, str, len);
	dst[len] = '\0';
	return true;
}

/* A routing member's integer value (a JSON number without fraction). */
static bool
member_int64(const PlankJsonMember *m, int64 *result)
{
	char		buf[32];
	char	   *end;

	if (m == NULL || m->type != JSON_TOKEN_NUMBER || m->valuelen >= (int) sizeof(buf))
		return false;
	memcpy(buf, m->value, m->valuelen);
	buf[m->valuelen] = '\0';
	errno = 0;
	*result = strtoi64(buf, &end, 10);
	return errno == 0 && *end == '\0' && end != buf;
}

/*
 * Parse a change payload into an event's routing fields ("schema",
 * "table", "op", "xid", and "overflow" for a truncated oversized row) with
 * PostgreSQL's JSON parser, which accepts every value the json type accepts
 * (docs/PROTOCOL.md, "Change payload"); the rest of the payload is never
 * converted.  Returns false (after a WARNING that says why) for a
 * notification on channel "plank" that is not a change from
 * plank.capture().
 */
static bool
parse_change(PlankEvent *ev, const char *payload, int64 *overflow_id)
{
	static const char *const names[5] = {"schema", "table", "op", "xid", "overflow"};
	const PlankJsonMember *found[5] = {NULL};
	PlankJsonMember *members;
	int			nmembers;
	char	   *error = NULL;
	char		opname[16];
	int64		xid = 0;
	const char *bad = NULL;
	NameData	schema;
	NameData	table;

	if (!plank_json_members(payload, strlen(payload), GetDatabaseEncoding(),
							&members, &nmembers, &error))
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("plank ignoring a notification on its change channel that is not a JSON object: %s",
						error),
				 errhint("The channel of plank.change_channel() is reserved for plank.capture().")));
		return false;
	}
	for (int i = 0; i < nmembers; i++)
		for (int f = 0; f < 5; f++)
			if (found[f] == NULL && plank_json_key_is(&members[i], names[f]))
				found[f] = &members[i];
	if (!member_string(found[0], NameStr(schema), NAMEDATALEN))
		bad = "schema";
	else if (!member_string(found[1], NameStr(table), NAMEDATALEN))
		bad = "table";
	else if (!member_string(found[2], opname, sizeof(opname)) ||
			 (ev->op = op_from_name(opname)) == 0)
		bad = "op";
	else if (!member_int64(found[3], &xid))
		bad = "xid";
	if (bad != NULL)
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("plank ignoring a notification on its change channel whose member \"%s\" is missing or invalid",
						bad),
				 errhint("The channel of plank.change_channel() is reserved for plank.capture().")));
		return false;
	}
	ev->xid = (uint64) xid;
	ev->schema = plank_event_name(NameStr(schema));
	ev->table = plank_event_name(NameStr(table));
	if (ev->schema == NULL || ev->table == NULL)
		return false;
	if (!member_int64(found[4], overflow_id))
		*overflow_id = 0;
	return true;
}

/*
 * Fetch, and delete, the stored payloads of oversized rows: ids[i] becomes
 * payloads[i], or NULL when the row is gone.  A failure leaves every
 * payload NULL (the events then go out in their truncated form) and is
 * logged; it never stops the worker.
 */
static void
fetch_overflow(int64 *ids, char **payloads, int n, bool batches)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool failed = false;
	int			i;

	memset(payloads, 0, n * sizeof(char *));
	PG_TRY();
	{
		Datum	   *elems = palloc(n * sizeof(Datum));
		ArrayType  *arr;
		Oid			argtypes[1] = {INT8ARRAYOID};
		Datum		args[1];
		uint64		row;

		for (i = 0; i < n; i++)
			elems[i] = Int64GetDatum(ids[i]);
		arr = construct_array(elems, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
		args[0] = PointerGetDatum(arr);

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_connect();

		/*
		 * Never wait for a lock: the worker ignores SIGINT, through which
		 * lock_timeout and statement_timeout act, so a wait would stall
		 * every client of the database for as long as the lock is held.
		 * Only an administrator's lock conflicts (writers take ROW
		 * EXCLUSIVE too, autovacuum SHARE UPDATE EXCLUSIVE, pg_dump ACCESS
		 * SHARE); then the read fails at once, as any other failure.
		 */
		if (SPI_execute("LOCK TABLE plank.overflow IN ROW EXCLUSIVE MODE NOWAIT", false, 0) != SPI_OK_UTILITY ||
			SPI_execute_with_args("DELETE FROM plank.overflow WHERE id OPERATOR(pg_catalog.=) ANY ("
								  "SELECT plank_o.id FROM plank.overflow AS plank_o "
								  "WHERE plank_o.id OPERATOR(pg_catalog.=) ANY ($1) FOR UPDATE NOWAIT) "
								  "RETURNING id, payload",
								  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE_RETURNING)
			elog(ERROR, "could not read plank.overflow");
		for (row = 0; row < SPI_processed; row++)
		{
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row],
														 SPI_tuptable->tupdesc, 1, &isnull));
			Datum		payload = SPI_getbinval(SPI_tuptable->vals[row],
												SPI_tuptable->tupdesc, 2, &isnull);

			for (i = 0; i < n; i++)
				if (ids[i] == id && payloads[i] == NULL)
					payloads[i] = MemoryContextStrdup(cxt, TextDatumGetCString(payload));
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextSwitchTo(cxt);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(cxt);
		if (batches)
			ereport(WARNING,
					(errmsg("plank could not read %d stored batches of changes from plank.overflow: %s",
							n, edata->message),
					 errdetail("Their changes cannot be sent; every table subscription is sent resync_required with reason \"undeliverable_change\".")));
		else
			ereport(WARNING,
					(errmsg("plank could not read the payloads of %d oversized rows from plank.overflow: %s",
							n, edata->message),
					 errdetail("The changes are sent with their key and \"truncated\": true instead.")));
		memset(payloads, 0, n * sizeof(char *));
		failed = true;
	}
	PG_END_TRY();

	for (i = 0; i < n && !failed; i++)
		if (payloads[i] == NULL)
			ereport(WARNING,
					(errmsg("plank could not find the payload of oversized %s " INT64_FORMAT " in plank.overflow",
							batches ? "batch of changes" : "row", ids[i]),
					 batches ? errdetail("Its changes cannot be sent; every table subscription is sent resync_required with reason \"undeliverable_change\".") :
					 errdetail("The change is sent with its key and \"truncated\": true instead.")));
}

/*
 * Multi-change notifications (docs/PROTOCOL.md, "Change payload"): the
 * statement trigger sends the changes of a statement as a JSON array of
 * change objects, or stores such an array in plank.overflow and notifies a
 * reference {"batch": id, "xid": ..., "changes": count}.  Before anything
 * else, each is replaced by one notification per change, in order, so that
 * every change still becomes an event of its own (its own seq; the commit
 * look-ahead sees every change).  The elements are cut out of the array's
 * text exactly as the trigger wrote them, with PostgreSQL's JSON parser
 * (common/jsonapi.h, as json_array_elements does in jsonfuncs.c).
 */
typedef struct SplitState
{
	JsonLexContext *lex;
	char	   *start;			/* of the current top-level element */
	PlankNotification *proto;	/* pid and channel of the elements */
	PlankNotification **tail;	/* where the next element is linked */
	int			count;
} SplitState;

static PlankJsonCbResult
split_element_start(void *state, bool isnull)
{
	SplitState *st = (SplitState *) state;

	if (st->lex->lex_level == 1)
		st->start = (char *) st->lex->token_start;
	return PLANK_JSON_CB_OK;
}

static PlankJsonCbResult
split_element_end(void *state, bool isnull)
{
	SplitState *st = (SplitState *) state;
	PlankNotification *pn;

	if (st->lex->lex_level != 1)
		return PLANK_JSON_CB_OK;
	pn = palloc(sizeof(PlankNotification));
	pn->next = NULL;
	pn->pid = st->proto->pid;
	pn->channel = st->proto->channel;
	pn->payload = pnstrdup(st->start, st->lex->prev_token_terminator - st->start);
	*st->tail = pn;
	st->tail = &pn->next;
	st->count++;
	return PLANK_JSON_CB_OK;
}

/*
 * Append one notification per element of the JSON array text to *tail;
 * return the new tail.  Malformed text is logged (WARNING) and skipped
 * whole: nothing is appended.
 */
static PlankNotification **
split_changes(PlankNotification *proto, char *json, PlankNotification **tail)
{
	JsonSemAction sem;
	SplitState	st;
	PlankNotification *first = NULL;
	JsonParseErrorType rc;

	memset(&sem, 0, sizeof(sem));
	memset(&st, 0, sizeof(st));
	st.lex = plank_json_lex_cstring(json, strlen(json), GetDatabaseEncoding(), false);
	st.proto = proto;
	st.tail = &first;
	sem.semstate = &st;
	sem.array_element_start = split_element_start;
	sem.array_element_end = split_element_end;
	rc = pg_parse_json(st.lex, &sem);
	if (rc != JSON_SUCCESS)
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("plank ignoring a malformed array of changes on its change channel"),
				 errdetail("%s", json_errdetail(rc, st.lex)),
				 errhint("The channel of plank.change_channel() is reserved for plank.capture().")));
		return tail;
	}
	if (first == NULL)
		return tail;
	*tail = first;
	return st.tail;
}

/* The id of a reference to a stored batch of changes, or 0 (after a WARNING). */
static int64
batch_reference(const char *payload)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile jb = NULL;
	int64		id = 0;

	PG_TRY();
	{
		jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(payload)));
		if (!JB_ROOT_IS_OBJECT(jb) || !get_int64(jb, "batch", &id))
			id = 0;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		id = 0;
	}
	PG_END_TRY();
	if (id <= 0)
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("plank ignoring a malformed reference to a batch of changes on its change channel"),
				 errhint("The channel of plank.change_channel() is reserved for plank.capture().")));
	return id;
}

#define IS_BATCH_REF(payload) (strncmp((payload), "{\"batch\":", 9) == 0)
#define IS_ARRAY(payload) ((payload)[0] == '[')

/*
 * expand_changes
 *		The batch with every array of changes, and every reference to a
 *		stored one (all fetched from plank.overflow in one transaction),
 *		replaced by one notification per change, in order.  Returns the
 *		batch itself when it holds neither.  Allocates in the current memory
 *		context.
 */
static PlankNotification *
expand_changes(PlankNotification *batch)
{
	const char *channel = plank_change_channel();
	PlankNotification *pn;
	PlankNotification *result = NULL;
	PlankNotification **tail = &result;
	int64	   *ids;
	char	  **fetched;
	int			nrefs = 0;
	int			nmulti = 0;
	int			i = 0;
	bool		lost = false;

	for (pn = batch; pn != NULL; pn = pn->next)
		if (strcmp(pn->channel, channel) == 0 &&
			(IS_ARRAY(pn->payload) || IS_BATCH_REF(pn->payload)))
		{
			nmulti++;
			if (IS_BATCH_REF(pn->payload))
				nrefs++;
		}
	if (nmulti == 0)
		return batch;

	ids = palloc0(Max(nrefs, 1) * sizeof(int64));
	fetched = palloc0(Max(nrefs, 1) * sizeof(char *));
	for (pn = batch; pn != NULL; pn = pn->next)
		if (strcmp(pn->channel, channel) == 0 && IS_BATCH_REF(pn->payload))
			ids[i++] = batch_reference(pn->payload);
	if (nrefs > 0)
	{
		int64	   *valid = palloc(nrefs * sizeof(int64));
		char	  **got = palloc(nrefs * sizeof(char *));
		int			nvalid = 0;
		int			j;

		for (i = 0; i < nrefs; i++)
			if (ids[i] > 0)
				valid[nvalid++] = ids[i];
		if (nvalid > 0)
			fetch_overflow(valid, got, nvalid, true);
		for (i = 0, j = 0; i < nrefs; i++)
			if (ids[i] > 0)
				fetched[i] = got[j++];
	}

	i = 0;
	for (pn = batch; pn != NULL; pn = pn->next)
	{
		PlankNotification *copy;

		if (strcmp(pn->channel, channel) == 0 && IS_BATCH_REF(pn->payload))
		{
			if (fetched[i] != NULL)
				tail = split_changes(pn, fetched[i], tail);
			else
				lost = true;
			i++;
			continue;
		}
		if (strcmp(pn->channel, channel) == 0 && IS_ARRAY(pn->payload))
		{
			tail = split_changes(pn, pn->payload, tail);
			continue;
		}
		copy = palloc(sizeof(PlankNotification));
		*copy = *pn;
		copy->next = NULL;
		*tail = copy;
		tail = &copy->next;
	}

	/*
	 * A stored batch that cannot be read: its changes (of a table the
	 * reference does not name) cannot be sent, so no table subscription may
	 * go on as if it had them.
	 */
	if (lost)
		plank_subs_resync_tables("undeliverable_change");
	return result;
}

/* Payload text as UTF-8, the only encoding of WebSocket text frames. */
static const char *
to_utf8(const char *s)
{
	int			enc = GetDatabaseEncoding();

	if (enc == PG_UTF8 || enc == PG_SQL_ASCII)
		return s;
	return pg_server_to_any(s, strlen(s), PG_UTF8);
}

static void
build_change_frame(PlankEvent *ev, const char *payload)
{
	const char *utf8 = to_utf8(payload);

	ev->payload_len = strlen(utf8);
	ev->frame = plank_change_frame(ev, utf8, ev->payload_len, &ev->payload_off);
}

static void
build_notify_frame(PlankEvent *ev, const char *channel, const char *payload, int32 pid)
{
	StringInfoData buf;
	const char *utf8;

	initStringInfo(&buf);
	appendStringInfo(&buf, "\"type\":\"notify\",\"seq\":" UINT64_FORMAT ",\"epoch\":\"%s\",\"channel\":",
					 ev->seq, plank_epoch);
	escape_json(&buf, channel);
	appendStringInfoString(&buf, ",\"payload\":");
	escape_json(&buf, payload);
	appendStringInfo(&buf, ",\"pid\":%d}", pid);
	utf8 = to_utf8(buf.data);
	ev->frame = plank_frame_make(utf8, strlen(utf8));
}

/*
 * Build an event's message body from its payload, send it to the matching
 * subscriptions and keep it in the replay ring.  ev has its seq, routing
 * fields and tx_last.
 */
static void
deliver(PlankEvent *ev, const char *payload)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(event_cxt);

	ev->received_at = plank_now;
	if (ev->is_change)
	{
		build_change_frame(ev, payload);
		plank_stats_change(ev);
	}
	else if (!plank_publish_frame(ev, payload))	/* a client's publication */
		build_notify_frame(ev, ev->channel, payload, ev->pid);
	plank_subs_dispatch(ev);
	plank_replay_push(ev);
	plank_frame_unref(ev->frame);
	ev->parsed = NULL;
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(event_cxt);
}

/*
 * plank_events_start_after
 *		A worker other than worker 0 starts serving at sequence number seq
 *		(plank.workers > 1): its replay ring covers nothing before it.
 */
void
plank_events_start_after(uint64 seq)
{
	plank_replay_start_after(seq);
	plank_stats_seq(seq);
}

/*
 * plank_events_deliver_relayed
 *		A worker other than worker 0: one event read from the shared queue
 *		(relay.c), numbered by worker 0, with the payload its frame is built
 *		from.  Handled exactly as worker 0 handled it.  A change payload
 *		that does not parse (never written by worker 0) is skipped with a
 *		WARNING.  The caller ends the pass with plank_events_relayed_done().
 */
void
plank_events_deliver_relayed(const PlankRelayedEvent *rev)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(batch_cxt);
	PlankEvent	ev;

	memset(&ev, 0, sizeof(ev));
	ev.seq = rev->seq;
	ev.pid = rev->pid;
	ev.is_change = rev->is_change;
	ev.tx_last = rev->tx_last;
	plank_runtime_set_seq(rev->seq);
	if (rev->is_change)
	{
		int64		overflow_id;
		bool		valid;

		MemoryContextSwitchTo(event_cxt);
		valid = parse_change(&ev, rev->payload, &overflow_id);
		ev.parsed = NULL;
		MemoryContextSwitchTo(batch_cxt);
		MemoryContextReset(event_cxt);
		ev.tx_last = rev->tx_last;
		if (valid)
			deliver(&ev, rev->payload);
	}
	else
	{
		ev.channel = plank_event_name(rev->channel);
		if (ev.channel != NULL)
			deliver(&ev, rev->payload);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(batch_cxt);
}

/*
 * plank_events_relayed_done
 *		After plank_events_deliver_relayed() was called n times in a pass: end the
 *		transaction the access checks of those events shared, as worker 0
 *		does after each batch, and count them.
 */
void
plank_events_relayed_done(int n)
{
	plank_visibility_batch_done();
	plank_stats_count(PLANK_STAT_NOTIFICATIONS, n);
	plank_stats_seq(plank_seq);
}

/*
 * plank_events_process
 *		Process one batch of received notifications, in the order received:
 *		each valid one becomes an event with the next sequence number, is
 *		dispatched to the matching subscriptions and kept in the replay ring.
 */
void
plank_events_process(PlankNotification *batch)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(batch_cxt);
	PlankNotification *pn;
	PlankEvent *evs;
	char	  **payloads;
	int64	   *overflow_ids;
	int		   *overflow_index;
	int			noverflow = 0;
	int			n = 0;
	int			nevs = 0;
	int			i;
	uint64		next_xid = 0;
	bool		next_is_change = false;

	/* arrays of changes, and stored ones, become one notification per change */
	batch = expand_changes(batch);

	for (pn = batch; pn != NULL; pn = pn->next)
		n++;
	evs = palloc0(n * sizeof(PlankEvent));
	payloads = palloc(n * sizeof(char *));
	overflow_ids = palloc(n * sizeof(int64));
	overflow_index = palloc(n * sizeof(int));

	/* parse: only valid notifications become events */
	for (pn = batch; pn != NULL; pn = pn->next)
	{
		PlankEvent *ev = &evs[nevs];

		if (strcmp(pn->channel, plank_change_channel()) == 0)
		{
			int64		overflow_id;
			bool		valid;

			/* only the routing fields are kept; the payload is parsed again if needed */
			MemoryContextSwitchTo(event_cxt);
			valid = parse_change(ev, pn->payload, &overflow_id);
			ev->parsed = NULL;
			MemoryContextSwitchTo(batch_cxt);
			MemoryContextReset(event_cxt);
			if (!valid)
				continue;
			ev->is_change = true;
			if (overflow_id > 0)
			{
				overflow_ids[noverflow] = overflow_id;
				overflow_index[noverflow++] = nevs;
			}
		}
		else if ((ev->channel = plank_event_name(pn->channel)) == NULL)
			continue;
		ev->pid = pn->pid;
		payloads[nevs++] = pn->payload;
	}

	/* oversized rows: their payloads, exactly as committed, from plank.overflow */
	if (noverflow > 0)
	{
		char	  **fetched = palloc(noverflow * sizeof(char *));

		fetch_overflow(overflow_ids, fetched, noverflow, false);
		for (i = 0; i < noverflow; i++)
		{
			if (fetched[i] == NULL)
				continue;
			payloads[overflow_index[i]] = fetched[i];
		}
	}

	/* the last change of each transaction: the next change has another xid */
	for (i = nevs - 1; i >= 0; i--)
	{
		if (!evs[i].is_change)
			continue;
		evs[i].tx_last = !next_is_change || next_xid != evs[i].xid;
		next_is_change = true;
		next_xid = evs[i].xid;
	}

	for (i = 0; i < nevs; i++)
	{
		PlankEvent *ev = &evs[i];

		ev->seq = plank_runtime_next_seq();
		/* plank.workers > 1: the other workers get it through the shared queue */
		plank_relay_publish(ev, payloads[i], strlen(payloads[i]));
		deliver(ev, payloads[i]);
	}
	plank_relay_wake_others();	/* to read the batch (plank.workers > 1) */
	plank_visibility_batch_done();
	plank_stats_count(PLANK_STAT_NOTIFICATIONS, nevs);
	plank_stats_seq(plank_seq);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(batch_cxt);
}
