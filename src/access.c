/*-------------------------------------------------------------------------
 *
 * access.c
 *		What each subscriber may see of a change: only the columns its role
 *		may SELECT, and, where row-level security applies to its role, only
 *		rows its policies let it see (docs/SECURITY.md states the rules).
 *
 * Checks are made once per event for each group of subscribers that share
 * a role and token claims, not once per socket, and each distinct rewrite
 * of a payload is serialised once per event and shared.  Row-level security
 * is evaluated inside the database: as the subscriber's role, with its
 * claims in request.jwt.claims, the worker looks the changed row up by its
 * key in a transaction that starts after the change committed.  A check that
 * fails with an error hides the row from that group only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "nodes/bitmapset.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "plank.h"

/* per-event caches, cleared by plank_access_event_done() */
typedef struct VisEntry
{
	Oid			roleid;
	const char *claims;
	Oid			relid;
	bool		visible;
} VisEntry;

typedef struct FrameEntry
{
	const char *colkey;			/* NULL: every column */
	char		mode;
	PlankFrame *frame;
} FrameEntry;

static VisEntry *vis_cache = NULL;
static int	nvis = 0;
static int	vis_cap = 0;
static FrameEntry *frame_cache = NULL;
static int	nframes = 0;
static int	frames_cap = 0;

/* Make room for one more entry in a cache array kept in TopMemoryContext. */
static void *
grow(void *array, int *cap, int used, Size elem)
{
	if (used < *cap)
		return array;
	*cap = *cap ? *cap * 2 : 16;
	return array ? repalloc(array, *cap * elem) : MemoryContextAlloc(TopMemoryContext, *cap * elem);
}

/* the transaction that row-level security checks of a batch share */
static bool in_check_xact = false;

#define MODE_PLAIN 'p'			/* the payload, columns restricted */
#define MODE_KEY_OLD 'k'		/* DELETE under RLS: "old" reduced to the key */
#define MODE_HIDDEN 'h'			/* UPDATE the subscriber may no longer see */

/*
 * plank_access_key_columns
 *		The columns that identify a row of a table: its replica identity
 *		index, else its primary key (REPLICA IDENTITY FULL has no index), or
 *		NIL when it has neither.  Inside a transaction.
 */
List *
plank_access_key_columns(Oid relid)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	Bitmapset  *idattrs = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);
	int			member = -1;
	List	   *cols = NIL;

	if (bms_is_empty(idattrs))
		idattrs = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	while ((member = bms_next_member(idattrs, member)) >= 0)
	{
		AttrNumber	attnum = member + FirstLowInvalidHeapAttributeNumber;

		cols = lappend(cols, pstrdup(NameStr(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attname)));
	}
	relation_close(rel, AccessShareLock);
	return cols;
}

static bool
column_allowed(const PlankSub *sub, const char *name, int len)
{
	int			i;

	if (sub->ncolumns == 0)
		return true;
	for (i = 0; i < sub->ncolumns; i++)
		if (strlen(sub->columns[i]) == (size_t) len && memcmp(sub->columns[i], name, len) == 0)
			return true;
	return false;
}

static bool
is_key_column(const PlankSub *sub, const char *name, int len)
{
	int			i;

	for (i = 0; i < sub->nkeycols; i++)
		if (strlen(sub->keycols[i]) == (size_t) len && memcmp(sub->keycols[i], name, len) == 0)
			return true;
	return false;
}

/* Push a row image keeping the columns the subscriber may see. */
static void
push_row(JsonbParseState **st, const PlankSub *sub, JsonbContainer *row, bool key_only)
{
	JsonbIterator *it = JsonbIteratorInit(row);
	JsonbIteratorToken tok;
	JsonbValue	v;
	JsonbValue	k;
	bool		keep = false;

	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			k = v;
			/* a table without a key gives away nothing of its rows here */
			keep = column_allowed(sub, v.val.string.val, v.val.string.len) &&
				(!key_only || is_key_column(sub, v.val.string.val, v.val.string.len));
		}
		else if (tok == WJB_VALUE && keep)
		{
			pushJsonbValue(st, WJB_KEY, &k);
			pushJsonbValue(st, WJB_VALUE, &v);
		}
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

static bool
key_is(const JsonbValue *k, const char *name)
{
	return k->val.string.len == strlen(name) && memcmp(k->val.string.val, name, k->val.string.len) == 0;
}

/* Serialise a rewritten payload of an event for one subscriber. */
static PlankFrame *
rewrite(PlankEvent *ev, const PlankSub *sub, char mode)
{
	Jsonb	   *jb = plank_event_payload(ev);
	JsonbParseState *st = NULL;
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbIteratorToken tok;
	JsonbValue	v;
	JsonbValue	k;
	JsonbValue *res;
	StringInfoData buf;
	Jsonb	   *out;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		bool		is_row;

		if (tok == WJB_KEY)
		{
			k = v;
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		is_row = key_is(&k, "new") || key_is(&k, "old") || key_is(&k, "key");
		if (mode == MODE_HIDDEN && (is_row || key_is(&k, "truncated") || key_is(&k, "overflow")))
			continue;
		if (is_row && v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
		{
			pushJsonbValue(&st, WJB_KEY, &k);
			push_row(&st, sub, v.val.binary.data, mode == MODE_KEY_OLD && key_is(&k, "old"));
		}
		else
		{
			pushJsonbValue(&st, WJB_KEY, &k);
			pushJsonbValue(&st, WJB_VALUE, &v);
		}
	}
	if (mode == MODE_HIDDEN)
	{
		/* "this row is no longer visible to you": its key, from the new row */
		JsonbValue	fv;
		JsonbValue	row;

		fv.type = jbvString;
		fv.val.string.val = "visible";
		fv.val.string.len = 7;
		pushJsonbValue(&st, WJB_KEY, &fv);
		fv.type = jbvBool;
		fv.val.boolean = false;
		pushJsonbValue(&st, WJB_VALUE, &fv);
		if (getKeyJsonValueFromContainer(&jb->root, "new", 3, &row) != NULL &&
			row.type == jbvBinary)
		{
			fv.type = jbvString;
			fv.val.string.val = "key";
			fv.val.string.len = 3;
			pushJsonbValue(&st, WJB_KEY, &fv);
			push_row(&st, sub, row.val.binary.data, true);
		}
	}
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	out = JsonbValueToJsonb(res);

	initStringInfo(&buf);
	JsonbToCString(&buf, &out->root, VARSIZE(out));
	return plank_change_frame(ev, buf.data, buf.len, NULL);
}

static void
begin_checks(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (in_check_xact)
		return;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	/* the caller's allocations keep going to its own context */
	MemoryContextSwitchTo(cxt);
	in_check_xact = true;
}

/*
 * Is the row of a change visible to a subscriber's role under its
 * row-level security policies?  Looks the row up by its key as that role.
 */
typedef struct RlsCheck
{
	PlankSub   *sub;
	const char *query;
	Jsonb	   *image;
	bool		visible;
} RlsCheck;

/* Look the row up as the subscriber (in a subtransaction). */
static void
run_rls_check(void *arg)
{
	RlsCheck   *check = (RlsCheck *) arg;
	Oid			argtypes[1] = {JSONBOID};
	Datum		args[1] = {JsonbPGetDatum(check->image)};
	Oid			save_userid;
	int			save_sec_context;

	SPI_connect();
	plank_auth_become(&check->sub->conn->ident, &save_userid, &save_sec_context);
	if (SPI_execute_with_args(check->query, 1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not check row-level security");
	check->visible = SPI_processed > 0;
	plank_auth_unbecome(save_userid, save_sec_context);
	SPI_finish();
}

static bool
rls_visible(PlankSub *sub, PlankEvent *ev, JsonbValue *image)
{
	RlsCheck	check;
	ErrorData  *edata;
	StringInfoData query;
	char	   *qualified = quote_qualified_identifier(NameStr(ev->schema), NameStr(ev->table));
	Jsonb	   *imagejb;
	int			i;

	if (image == NULL)
		return false;
	imagejb = JsonbValueToJsonb(image);

	initStringInfo(&query);
	appendStringInfo(&query, "SELECT 1 FROM %s t, pg_catalog.jsonb_populate_record(NULL::%s, $1) k WHERE true",
					 qualified, qualified);
	if (sub->nkeycols > 0)
	{
		for (i = 0; i < sub->nkeycols; i++)
			appendStringInfo(&query, " AND t.%s = k.%s",
							 quote_identifier(sub->keycols[i]), quote_identifier(sub->keycols[i]));
	}
	else
	{
		/* no key: the row with every column equal */
		JsonbIterator *it = JsonbIteratorInit(image->val.binary.data);
		JsonbIteratorToken tok;
		JsonbValue	v;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			if (tok == WJB_KEY)
			{
				char	   *col = pnstrdup(v.val.string.val, v.val.string.len);

				appendStringInfo(&query, " AND t.%s IS NOT DISTINCT FROM k.%s",
								 quote_identifier(col), quote_identifier(col));
			}
	}
	appendStringInfoString(&query, " LIMIT 1");

	begin_checks();
	check.sub = sub;
	check.query = query.data;
	check.image = imagejb;
	check.visible = false;
	if (!plank_try_subxact(run_rls_check, &check, &edata))
	{
		ereport(LOG,
				(errmsg("plank hides a change of \"%s\" from role \"%s\": its row-level security check failed: %s",
						qualified, sub->conn->ident.role, edata->message)));
		FreeErrorData(edata);
		return false;
	}
	return check.visible;
}

/* Cached visibility of an event's row for a subscriber's group. */
static bool
group_sees(PlankSub *sub, PlankEvent *ev, JsonbValue *image)
{
	int			i;
	bool		visible;

	for (i = 0; i < nvis; i++)
		if (vis_cache[i].roleid == sub->conn->ident.roleid &&
			vis_cache[i].relid == sub->relid &&
			strcmp(vis_cache[i].claims, sub->conn->ident.claims) == 0)
			return vis_cache[i].visible;

	visible = rls_visible(sub, ev, image);
	vis_cache = grow(vis_cache, &vis_cap, nvis, sizeof(VisEntry));
	vis_cache[nvis].roleid = sub->conn->ident.roleid;
	vis_cache[nvis].claims = sub->conn->ident.claims;
	vis_cache[nvis].relid = sub->relid;
	vis_cache[nvis].visible = visible;
	nvis++;
	return visible;
}

static PlankFrame *
variant(PlankEvent *ev, PlankSub *sub, char mode)
{
	int			i;
	PlankFrame *frame;

	for (i = 0; i < nframes; i++)
		if (frame_cache[i].mode == mode &&
			((frame_cache[i].colkey == NULL && sub->colkey == NULL) ||
			 (frame_cache[i].colkey && sub->colkey && strcmp(frame_cache[i].colkey, sub->colkey) == 0)))
			return frame_cache[i].frame;

	frame = rewrite(ev, sub, mode);
	frame_cache = grow(frame_cache, &frames_cap, nframes, sizeof(FrameEntry));
	frame_cache[nframes].colkey = sub->colkey;
	frame_cache[nframes].mode = mode;
	frame_cache[nframes].frame = frame;
	nframes++;
	return frame;
}

/*
 * plank_access_frame
 *		The frame a table subscription may receive for a change of its table:
 *		the event's own frame when its role sees everything, a rewritten one
 *		(only its columns; for row-level security, DELETE keys only, or a
 *		"visible": false marker for an UPDATE it can no longer see), or NULL
 *		when it may not see the change at all.  Called before the
 *		subscription's filter: *key_only is set for the DELETE and marker
 *		frames of row-level security, which are sent whatever the filter says,
 *		so that a filter on hidden values cannot be used to probe them.
 */
PlankFrame *
plank_access_frame(PlankSub *sub, PlankEvent *ev, bool *key_only)
{
	char		mode = MODE_PLAIN;

	*key_only = false;
	if (sub->rls && ev->op != PLANK_OP_TRUNCATE)
	{
		Jsonb	   *jb = plank_event_payload(ev);
		JsonbValue	v;
		JsonbValue *image = NULL;

		if (ev->op == PLANK_OP_DELETE)
			mode = MODE_KEY_OLD;
		else
		{
			/* the new row (or, for an oversized one sent truncated, its key) */
			if ((getKeyJsonValueFromContainer(&jb->root, "new", 3, &v) != NULL ||
				 getKeyJsonValueFromContainer(&jb->root, "key", 3, &v) != NULL) &&
				v.type == jbvBinary)
				image = &v;
			if (!group_sees(sub, ev, image))
			{
				if (ev->op != PLANK_OP_UPDATE)
					return NULL;
				mode = MODE_HIDDEN;
			}
		}
	}
	*key_only = mode != MODE_PLAIN;
	if (mode == MODE_PLAIN && sub->ncolumns == 0)
		return ev->frame;
	return variant(ev, sub, mode);
}

/* plank_access_event_done: forget the per-event caches. */
void
plank_access_event_done(void)
{
	int			i;

	for (i = 0; i < nframes; i++)
		plank_frame_unref(frame_cache[i].frame);
	nframes = 0;
	nvis = 0;
}

/* plank_access_batch_done: end the transaction the batch's checks shared. */
void
plank_access_batch_done(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (!in_check_xact)
		return;
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	in_check_xact = false;
}
