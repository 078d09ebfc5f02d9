/*-------------------------------------------------------------------------
 *
 * subs.c
 *		Subscriptions and fan-out: the index of subscriptions by table and by
 *		NOTIFY channel, filter matching, and dispatch of each received
 *		notification to the connections it matches.
 *
 * An event is serialised once into a shared frame; each matching
 * subscription only queues a reference to it.  Finding the subscribers of a
 * change costs one hash look-up plus the subscriptions of that table, not a
 * walk over every connection.
 *
 * Sources followed: PostgreSQL docs "LISTEN" / "NOTIFY", "jsonb" (equality
 * of JSON values), and docs/PROTOCOL.md ("Filters and row images").
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "plank.h"

typedef struct TableKey
{
	NameData	schema;
	NameData	table;
} TableKey;

typedef struct TableEntry
{
	TableKey	key;
	dlist_head	subs;			/* PlankSub.index_node */
	int			nsubs;
} TableEntry;

typedef struct ChannelEntry
{
	NameData	channel;
	dlist_head	subs;
	int			nsubs;
	bool		listening;		/* Async_Listen() has committed */
} ChannelEntry;

static HTAB *table_index = NULL;
static HTAB *channel_index = NULL;
static MemoryContext dispatch_cxt = NULL;
static bool unlisten_pending = false;

/* plank_subs_init: create the subscription indexes (worker start). */
void
plank_subs_init(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(TableKey);
	ctl.entrysize = sizeof(TableEntry);
	table_index = hash_create("plank table subscriptions", 64, &ctl, HASH_ELEM | HASH_BLOBS);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(NameData);
	ctl.entrysize = sizeof(ChannelEntry);
	channel_index = hash_create("plank channel subscriptions", 64, &ctl, HASH_ELEM | HASH_BLOBS);

	dispatch_cxt = AllocSetContextCreate(TopMemoryContext, "plank dispatch",
										 ALLOCSET_DEFAULT_SIZES);
}

static void
make_table_key(TableKey *key, const char *schema, const char *table)
{
	memset(key, 0, sizeof(TableKey));
	strlcpy(NameStr(key->schema), schema, NAMEDATALEN);
	strlcpy(NameStr(key->table), table, NAMEDATALEN);
}

static void
link_sub(PlankSub *sub, dlist_head *list, int *nsubs, void *entry)
{
	dlist_push_tail(list, &sub->index_node);
	(*nsubs)++;
	sub->entry = entry;
	dlist_push_tail(&sub->conn->subs, &sub->conn_node);
	sub->conn->nsubs++;
}

/*
 * plank_subs_add_table
 *		Link a table subscription into the index under schema.table (names as
 *		in the catalog, which is how the capture trigger writes them).
 */
void
plank_subs_add_table(PlankSub *sub, const char *schema, const char *table)
{
	TableKey	key;
	TableEntry *entry;
	bool		found;

	make_table_key(&key, schema, table);
	entry = hash_search(table_index, &key, HASH_ENTER, &found);
	if (!found)
	{
		dlist_init(&entry->subs);
		entry->nsubs = 0;
	}
	link_sub(sub, &entry->subs, &entry->nsubs, entry);
}

/*
 * plank_subs_add_channel
 *		Link a channel subscription; the first subscriber of a channel makes
 *		the worker LISTEN on it (in a transaction of its own: the registration
 *		takes effect at commit).  Errors from LISTEN propagate to the caller.
 */
bool
plank_subs_add_channel(PlankSub *sub, const char *channel)
{
	NameData	key;
	ChannelEntry *entry;
	bool		found;

	memset(&key, 0, sizeof(key));
	strlcpy(NameStr(key), channel, NAMEDATALEN);
	entry = hash_search(channel_index, &key, HASH_ENTER, &found);
	if (!found)
	{
		dlist_init(&entry->subs);
		entry->nsubs = 0;
		entry->listening = false;
		/* removed again by plank_subs_unlisten_idle() if LISTEN fails */
		unlisten_pending = true;
	}
	if (!entry->listening)
	{
		MemoryContext cxt = CurrentMemoryContext;

		StartTransactionCommand();
		Async_Listen(channel);
		CommitTransactionCommand();
		MemoryContextSwitchTo(cxt);
		entry->listening = true;
	}
	link_sub(sub, &entry->subs, &entry->nsubs, entry);
	return true;
}

/*
 * plank_subs_remove
 *		Unlink a subscription from its index entry and its connection, and
 *		free it.  A channel left without subscribers is unlistened later, by
 *		plank_subs_unlisten_idle() in the main loop (it needs a transaction).
 */
void
plank_subs_remove(PlankSub *sub)
{
	dlist_delete(&sub->index_node);
	dlist_delete(&sub->conn_node);
	sub->conn->nsubs--;

	if (sub->is_channel)
	{
		ChannelEntry *entry = (ChannelEntry *) sub->entry;

		if (--entry->nsubs == 0)
			unlisten_pending = true;
	}
	else
	{
		TableEntry *entry = (TableEntry *) sub->entry;

		if (--entry->nsubs == 0)
			hash_search(table_index, &entry->key, HASH_REMOVE, NULL);
	}

	if (sub->filters)
		pfree(sub->filters);
	pfree(sub->prefix);
	pfree(sub->id);
	pfree(sub);
}

/*
 * plank_subs_unlisten_idle
 *		UNLISTEN the channels that no longer have subscribers, in one
 *		transaction.  Called from the main loop, outside any transaction.
 */
void
plank_subs_unlisten_idle(void)
{
	HASH_SEQ_STATUS status;
	ChannelEntry *entry;
	List	   *idle = NIL;
	ListCell   *lc;

	if (!unlisten_pending)
		return;
	unlisten_pending = false;

	hash_seq_init(&status, channel_index);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (entry->nsubs == 0)
			idle = lappend(idle, entry);
	if (idle == NIL)
		return;

	StartTransactionCommand();
	foreach(lc, idle)
	{
		entry = (ChannelEntry *) lfirst(lc);
		if (entry->listening)
			Async_Unlisten(NameStr(entry->channel));
	}
	CommitTransactionCommand();

	foreach(lc, idle)
	{
		entry = (ChannelEntry *) lfirst(lc);
		hash_search(channel_index, &entry->channel, HASH_REMOVE, NULL);
	}
	list_free(idle);
}

/* JSON equality of two scalars (jsonb's rules: 1 = 1.0, "1" <> 1). */
static bool
scalar_equal(const JsonbValue *a, const JsonbValue *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type)
	{
		case jbvNull:
			return true;
		case jbvBool:
			return a->val.boolean == b->val.boolean;
		case jbvString:
			return a->val.string.len == b->val.string.len &&
				memcmp(a->val.string.val, b->val.string.val, a->val.string.len) == 0;
		case jbvNumeric:
			return DatumGetBool(DirectFunctionCall2(numeric_eq,
													NumericGetDatum(a->val.numeric),
													NumericGetDatum(b->val.numeric)));
		default:
			return false;
	}
}

#define MATCH_NO		0
#define MATCH_YES		1
#define MATCH_UNKNOWN	2		/* the row image lacks a filtered column */

/* Compare a row image (a JSON object, or NULL when absent) with the filters. */
static int
match_image(const PlankSub *sub, JsonbContainer *image)
{
	int			result = MATCH_YES;
	int			i;

	if (image == NULL)
		return MATCH_UNKNOWN;
	for (i = 0; i < sub->nfilters; i++)
	{
		JsonbValue	v;

		if (getKeyJsonValueFromContainer(image, sub->filters[i].column,
										 sub->filters[i].column_len, &v) == NULL)
			result = MATCH_UNKNOWN;
		else if (!scalar_equal(&v, &sub->filters[i].value))
			return MATCH_NO;
	}
	return result;
}

/* The parts of a change payload that routing needs. */
typedef struct Change
{
	int			op;				/* PLANK_OP_* */
	bool		truncated;
	JsonbContainer *newrow;
	JsonbContainer *oldrow;
	JsonbContainer *key;
} Change;

/* Apply a subscription's filters to a change: docs/PROTOCOL.md rules. */
static bool
filters_match(const PlankSub *sub, const Change *c)
{
	if (sub->nfilters == 0 || c->op == PLANK_OP_TRUNCATE)
		return true;
	if (c->truncated)
		return match_image(sub, c->key) != MATCH_NO || match_image(sub, c->oldrow) != MATCH_NO;
	switch (c->op)
	{
		case PLANK_OP_INSERT:
			return match_image(sub, c->newrow) == MATCH_YES;
		case PLANK_OP_UPDATE:
			return match_image(sub, c->newrow) == MATCH_YES ||
				match_image(sub, c->oldrow) == MATCH_YES;
		default:
			return match_image(sub, c->oldrow) != MATCH_NO;
	}
}

static JsonbContainer *
object_member(Jsonb *jb, const char *key)
{
	JsonbValue	v;

	if (getKeyJsonValueFromContainer(&jb->root, key, strlen(key), &v) == NULL ||
		v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
		return NULL;
	return v.val.binary.data;
}

static bool
string_member_into(Jsonb *jb, const char *key, char *dst, int dstlen)
{
	JsonbValue	v;

	if (getKeyJsonValueFromContainer(&jb->root, key, strlen(key), &v) == NULL ||
		v.type != jbvString || v.val.string.len >= dstlen)
		return false;
	memcpy(dst, v.val.string.val, v.val.string.len);
	dst[v.val.string.len] = '\0';
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

/* Parse a change payload; NULL (after a WARNING) when it is not one. */
static Jsonb *
parse_change(const char *payload)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile jb = NULL;

	PG_TRY();
	{
		jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(payload)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		jb = NULL;
	}
	PG_END_TRY();

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("plank ignoring a notification on channel \"%s\" that is not a change payload",
						PLANK_CHANGE_CHANNEL),
				 errhint("Channel \"%s\" is reserved for plank.capture(); use another channel for pg_notify().",
						 PLANK_CHANGE_CHANNEL)));
		return NULL;
	}
	return jb;
}

/* Payload text as UTF-8, the only encoding of WebSocket text frames. */
static const char *
to_utf8(const char *s, int len)
{
	if (GetDatabaseEncoding() == PG_UTF8 || GetDatabaseEncoding() == PG_SQL_ASCII)
		return s;
	return pg_server_to_any(s, len, PG_UTF8);
}

static void
dispatch_change(uint64 seq, const char *payload)
{
	Jsonb	   *jb;
	TableKey	key;
	TableEntry *entry;
	char		opname[16];
	Change		change;
	PlankFrame *frame = NULL;
	dlist_iter	iter;

	if ((jb = parse_change(payload)) == NULL)
		return;

	memset(&key, 0, sizeof(key));
	if (!string_member_into(jb, "schema", NameStr(key.schema), NAMEDATALEN) ||
		!string_member_into(jb, "table", NameStr(key.table), NAMEDATALEN) ||
		!string_member_into(jb, "op", opname, sizeof(opname)) ||
		(change.op = op_from_name(opname)) == 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("plank ignoring a change payload without schema, table and op")));
		return;
	}

	entry = hash_search(table_index, &key, HASH_FIND, NULL);
	if (entry == NULL)
		return;

	{
		JsonbValue	v;

		change.truncated = getKeyJsonValueFromContainer(&jb->root, "truncated", 9, &v) != NULL;
	}
	change.newrow = object_member(jb, "new");
	change.oldrow = object_member(jb, "old");
	change.key = object_member(jb, "key");

	dlist_foreach(iter, &entry->subs)
	{
		PlankSub   *sub = dlist_container(PlankSub, index_node, iter.cur);

		if (!(sub->ops & change.op) || !filters_match(sub, &change))
			continue;
		if (frame == NULL)
		{
			StringInfoData buf;

			initStringInfo(&buf);
			appendStringInfo(&buf, "\"type\":\"change\",\"seq\":" UINT64_FORMAT ",\"epoch\":\"%s\",\"change\":",
							 seq, plank_epoch);
			appendStringInfoString(&buf, to_utf8(payload, strlen(payload)));
			appendStringInfoChar(&buf, '}');
			frame = plank_frame_make(buf.data, buf.len);
		}
		plank_conn_send(sub->conn, frame, sub);
	}
	if (frame)
		plank_frame_unref(frame);
}

static void
dispatch_notify(uint64 seq, const char *channel, const char *payload, int32 pid)
{
	NameData	key;
	ChannelEntry *entry;
	StringInfoData buf;
	const char *body;
	PlankFrame *frame;
	dlist_iter	iter;

	memset(&key, 0, sizeof(key));
	strlcpy(NameStr(key), channel, NAMEDATALEN);
	entry = hash_search(channel_index, &key, HASH_FIND, NULL);
	if (entry == NULL || entry->nsubs == 0)
		return;

	initStringInfo(&buf);
	appendStringInfo(&buf, "\"type\":\"notify\",\"seq\":" UINT64_FORMAT ",\"epoch\":\"%s\",\"channel\":",
					 seq, plank_epoch);
	escape_json(&buf, channel);
	appendStringInfoString(&buf, ",\"payload\":");
	escape_json(&buf, payload);
	appendStringInfo(&buf, ",\"pid\":%d}", pid);
	body = to_utf8(buf.data, buf.len);
	frame = plank_frame_make(body, strlen(body));

	dlist_foreach(iter, &entry->subs)
	{
		PlankSub   *sub = dlist_container(PlankSub, index_node, iter.cur);

		plank_conn_send(sub->conn, frame, sub);
	}
	plank_frame_unref(frame);
}

/*
 * plank_subs_dispatch
 *		Deliver one received notification, stamped with sequence number seq,
 *		to every matching subscription.  Channel "plank" carries change
 *		payloads from plank.capture(); any other channel is a plain NOTIFY.
 *		A payload on "plank" that is not a change is logged (WARNING) and
 *		dropped.
 */
void
plank_subs_dispatch(uint64 seq, const char *channel, const char *payload, int32 pid)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(dispatch_cxt);

	if (strcmp(channel, PLANK_CHANGE_CHANNEL) == 0)
		dispatch_change(seq, payload);
	else
		dispatch_notify(seq, channel, payload, pid);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(dispatch_cxt);
}
