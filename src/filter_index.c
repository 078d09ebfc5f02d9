/*-------------------------------------------------------------------------
 *
 * filter_index.c
 *		The equality index of one table's subscriptions: which subscriptions
 *		a change can match, found by the row's values instead of by a walk
 *		over every subscription of the table.
 *
 * A subscription whose filter holds an equality (a plain value, or
 * {"eq": v}) that this file can put in canonical form is filed under
 * (column, canonical value) of its first such filter, in a dynahash; every
 * other subscription of the table is on the "walked" list.  For a change,
 * the candidates are the walked list plus the subscriptions filed under the
 * values the change's row images hold in each indexed column; the caller
 * (subs.c, dispatch_change) evaluates them exactly as before.  A
 * subscription left out cannot match: its indexed filter fails on every
 * row image the change is judged by (docs/PROTOCOL.md "Filters and row
 * images"), so it would have been given nothing.
 *
 * Canonical values follow the filters' JSON equality (docs/PROTOCOL.md
 * "Filters", jsonb equality; filter.c member_equals): null, true, false; a
 * string as its de-escaped text; a number as numeric_normalize() writes its
 * numeric value (1, 1.0 and 1e0 are all "1").  Not indexed: operands that
 * a timestamp or date column reads as a time (they compare as instants,
 * not as JSON), and non-scalar operands.
 *
 * When the index cannot tell, the caller walks every subscription of the
 * table as before: a TRUNCATE, a "truncated" payload, a DELETE whose old
 * image lacks an indexed column (a missing column counts as matching), a
 * value with no canonical form (a string the database encoding cannot
 * hold, a number outside numeric's range), a payload that cannot be read.
 *
 * Which subscriptions may be left out (plank_filter_index_add): only those
 * without row-level security.  A row-level security subscription has every
 * change of its table queued for its check (visibility.c), which sends some
 * regardless of the filters (an UPDATE that hides the row, a DELETE of a
 * visible row): it stays on the walked list, as does one whose role gains
 * row-level security later (plank_filter_index_sub_changed), for good,
 * since changes queued before may still wait for their check.  For the
 * others, skipping a change their filters fail is what dispatch_change
 * would have done, except that it also advances sub->from_seq (where a
 * subscription that starts reading the log begins, recheck.c).  Left
 * behind, from_seq only lets the log reader look again at changes the
 * filters fail (pull_one evaluates them: nothing is sent), and whether the
 * log still holds them is judged by the connection's cursor, not by
 * from_seq (plank_subs_pull): so nothing changes for the client.  A log-reading
 * subscription is only woken by dispatch_change; a connection not woken for
 * a change it gets nothing from is still "given every event for it"
 * (server.c, plank_conn_wake).
 *
 * Order: candidates are returned in the order subscriptions were linked to
 * the table, the order of the table's list that dispatch_change walks
 * otherwise, so that one connection's messages for one event keep their
 * order.
 *
 * Sources followed: docs/PROTOCOL.md ("Filters", "Filters and row images");
 * PostgreSQL docs "JSON Types" (8.14.4: jsonb equality) and
 * src/include/utils/hsearch.h (dynahash with a custom hash and match).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "jsonspan.h"
#include "filter.h"

/* A bucket's key: column name, a NUL, then the canonical value (tag byte first) */
typedef struct BucketKey
{
	const char *data;
	int			len;
} BucketKey;

typedef struct Bucket
{
	BucketKey	key;			/* data owned by the bucket */
	dlist_head	subs;			/* IndexedSub.node, in link order */
} Bucket;

typedef struct IndexColumn
{
	char	   *name;
	int			len;
	int			refs;			/* indexed subscriptions filed under it */
} IndexColumn;

struct PlankFilterIndex
{
	MemoryContext cxt;
	HTAB	   *buckets;		/* NULL until a subscription is indexed */
	dlist_head	walked;			/* IndexedSub.node, in link order */
	int			nsubs;			/* walked and indexed */
	int			nindexed;
	IndexColumn *columns;
	int			ncolumns;
	int			columns_cap;
};

/* What the index keeps of one subscription (PlankSub.filter_index) */
typedef struct IndexedSub
{
	PlankSub   *sub;
	PlankFilterIndex *index;
	uint64		ordinal;		/* when it was linked: its place in the table's list */
	uint64		stamp;			/* the last candidates call that took it */
	Bucket	   *bucket;			/* NULL: on the walked list */
	dlist_node	node;
} IndexedSub;

static uint64 next_ordinal = 0;
static uint64 next_stamp = 0;

/* candidates, reused from call to call (TopMemoryContext) */
static PlankSub **out_subs = NULL;
static int	out_cap = 0;
static IndexedSub **hits = NULL;
static int	hits_cap = 0;

#define CANON_OK		0
#define CANON_NONE		1		/* equals no scalar operand (an object, an array) */
#define CANON_UNKNOWN	2		/* no canonical form: the caller walks everything */

static uint32
bucket_hash(const void *key, Size keysize)
{
	const BucketKey *k = (const BucketKey *) key;

	return hash_bytes((const unsigned char *) k->data, k->len);
}

static int
bucket_match(const void *key1, const void *key2, Size keysize)
{
	const BucketKey *a = (const BucketKey *) key1;
	const BucketKey *b = (const BucketKey *) key2;

	return (a->len == b->len && memcmp(a->data, b->data, a->len) == 0) ? 0 : 1;
}

/* Append a number's canonical form: numeric_normalize() of its value. */
static void
append_numeric(StringInfo buf, Numeric num)
{
	appendStringInfoChar(buf, 'd');
	appendStringInfoString(buf, numeric_normalize(num));
}

/*
 * The canonical form of a filter's operand appended to buf; false for one
 * the index does not take.
 */
static bool
operand_canonical(const JsonbValue *v, StringInfo buf)
{
	switch (v->type)
	{
		case jbvNull:
			appendStringInfoChar(buf, 'n');
			return true;
		case jbvBool:
			appendStringInfoChar(buf, v->val.boolean ? 't' : 'f');
			return true;
		case jbvString:
			appendStringInfoChar(buf, 's');
			appendBinaryStringInfo(buf, v->val.string.val, v->val.string.len);
			return true;
		case jbvNumeric:
			append_numeric(buf, v->val.numeric);
			return true;
		default:
			return false;
	}
}

/*
 * The canonical form of a row member's value appended to buf: CANON_OK,
 * CANON_NONE or CANON_UNKNOWN (above).  Never raises.
 */
static int
member_canonical(const PlankJsonMember *m, StringInfo buf)
{
	switch (m->type)
	{
		case JSON_TOKEN_NULL:
			appendStringInfoChar(buf, 'n');
			return CANON_OK;
		case JSON_TOKEN_TRUE:
			appendStringInfoChar(buf, 't');
			return CANON_OK;
		case JSON_TOKEN_FALSE:
			appendStringInfoChar(buf, 'f');
			return CANON_OK;
		case JSON_TOKEN_STRING:
			{
				int			len;
				char	   *str = plank_json_string(m->value, m->valuelen, &len);

				if (str == NULL)
					return CANON_UNKNOWN;
				appendStringInfoChar(buf, 's');
				appendBinaryStringInfo(buf, str, len);
				pfree(str);
				return CANON_OK;
			}
		case JSON_TOKEN_NUMBER:
			{
				MemoryContext cxt = CurrentMemoryContext;
				char	   *text = pnstrdup(m->value, m->valuelen);
				volatile Numeric num = NULL;

				PG_TRY();
				{
					num = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(text),
															  ObjectIdGetDatum(InvalidOid),
															  Int32GetDatum(-1)));
				}
				PG_CATCH();
				{
					/* outside numeric's range */
					MemoryContextSwitchTo(cxt);
					FlushErrorState();
					num = NULL;
				}
				PG_END_TRY();
				pfree(text);
				if (num == NULL)
					return CANON_UNKNOWN;
				append_numeric(buf, num);
				return CANON_OK;
			}
		case JSON_TOKEN_OBJECT_START:
		case JSON_TOKEN_ARRAY_START:
			/* member_equals: no scalar operand equals an object or an array */
			return CANON_NONE;
		default:
			return CANON_UNKNOWN;
	}
}

/*
 * The filter a subscription is indexed by: its first equality whose operand
 * compares as JSON and has a canonical form; -1 when it has none.
 */
static int
indexed_filter(const PlankSub *sub)
{
	for (int i = 0; i < sub->nfilters; i++)
	{
		const PlankFilter *f = &sub->filters[i];

		if (f->op != PLANK_FILTER_EQ || f->nvalues != 1)
			continue;
		/* a string on a timestamp or date column compares as a time */
		if (f->bounds != NULL && f->values[0].type == jbvString)
			continue;
		if (f->values[0].type == jbvNull || f->values[0].type == jbvBool ||
			f->values[0].type == jbvString || f->values[0].type == jbvNumeric)
			return i;
	}
	return -1;
}

/* Insert an IndexedSub into a list kept in ordinal order. */
static void
insert_ordered(dlist_head *list, IndexedSub *is)
{
	dlist_iter	iter;

	dlist_reverse_foreach(iter, list)
	{
		IndexedSub *other = dlist_container(IndexedSub, node, iter.cur);

		if (other->ordinal < is->ordinal)
		{
			dlist_insert_after(iter.cur, &is->node);
			return;
		}
	}
	dlist_push_head(list, &is->node);
}

/* Take an indexed subscription out of its bucket and its column's count. */
static void
unfile(PlankFilterIndex *index, IndexedSub *is)
{
	const PlankFilter *f = &is->sub->filters[indexed_filter(is->sub)];
	Bucket	   *b = is->bucket;

	dlist_delete(&is->node);
	is->bucket = NULL;
	index->nindexed--;
	if (dlist_is_empty(&b->subs))
	{
		BucketKey	key = b->key;

		hash_search(index->buckets, &key, HASH_REMOVE, NULL);
		pfree((void *) key.data);
	}
	for (int c = 0; c < index->ncolumns; c++)
		if (index->columns[c].len == f->column_len &&
			memcmp(index->columns[c].name, f->column, f->column_len) == 0)
		{
			if (--index->columns[c].refs == 0)
			{
				pfree(index->columns[c].name);
				index->columns[c] = index->columns[--index->ncolumns];
			}
			break;
		}
}

/*
 * plank_filter_index_add
 *		File a subscription just linked to a table's entry (at the tail of its
 *		list) in the entry's filter index *index, creating the index when
 *		*index is NULL.  Call for every table subscription linked to the
 *		entry, so that candidates cover them all.  Raises only out of memory
 *		(ERROR 53200).
 */
void
plank_filter_index_add(PlankFilterIndex **index, PlankSub *sub)
{
	PlankFilterIndex *ix = *index;
	IndexedSub *is;
	int			fi;

	if (ix == NULL)
	{
		MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "plank filter index",
												  ALLOCSET_SMALL_SIZES);

		ix = MemoryContextAllocZero(cxt, sizeof(PlankFilterIndex));
		ix->cxt = cxt;
		dlist_init(&ix->walked);
		*index = ix;
	}
	is = MemoryContextAllocZero(ix->cxt, sizeof(IndexedSub));
	is->sub = sub;
	is->index = ix;
	is->ordinal = ++next_ordinal;
	sub->filter_index = is;
	ix->nsubs++;

	fi = sub->rls ? -1 : indexed_filter(sub);
	if (fi < 0)
		dlist_push_tail(&ix->walked, &is->node);
	else
	{
		const PlankFilter *f = &sub->filters[fi];
		StringInfoData buf;
		BucketKey	key;
		Bucket	   *b;
		bool		found;
		int			c;

		if (ix->buckets == NULL)
		{
			HASHCTL		ctl;

			memset(&ctl, 0, sizeof(ctl));
			ctl.keysize = sizeof(BucketKey);
			ctl.entrysize = sizeof(Bucket);
			ctl.hash = bucket_hash;
			ctl.match = bucket_match;
			ctl.hcxt = ix->cxt;
			ix->buckets = hash_create("plank filter index", 64, &ctl,
									  HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
		}
		initStringInfo(&buf);
		appendBinaryStringInfo(&buf, f->column, f->column_len);
		appendStringInfoChar(&buf, '\0');
		(void) operand_canonical(&f->values[0], &buf);
		key.data = buf.data;
		key.len = buf.len;
		b = hash_search(ix->buckets, &key, HASH_ENTER, &found);
		if (!found)
		{
			b->key.data = MemoryContextAlloc(ix->cxt, buf.len);
			memcpy((char *) b->key.data, buf.data, buf.len);
			b->key.len = buf.len;
			dlist_init(&b->subs);
		}
		pfree(buf.data);
		dlist_push_tail(&b->subs, &is->node);
		is->bucket = b;
		ix->nindexed++;

		for (c = 0; c < ix->ncolumns; c++)
			if (ix->columns[c].len == f->column_len &&
				memcmp(ix->columns[c].name, f->column, f->column_len) == 0)
				break;
		if (c == ix->ncolumns)
		{
			if (ix->ncolumns == ix->columns_cap)
			{
				ix->columns_cap = ix->columns_cap ? ix->columns_cap * 2 : 4;
				ix->columns = ix->columns ?
					repalloc(ix->columns, ix->columns_cap * sizeof(IndexColumn)) :
					MemoryContextAlloc(ix->cxt, ix->columns_cap * sizeof(IndexColumn));
			}
			ix->columns[c].name = MemoryContextAlloc(ix->cxt, f->column_len + 1);
			memcpy(ix->columns[c].name, f->column, f->column_len);
			ix->columns[c].name[f->column_len] = '\0';
			ix->columns[c].len = f->column_len;
			ix->columns[c].refs = 0;
			ix->ncolumns++;
		}
		ix->columns[c].refs++;
	}
}

/*
 * plank_filter_index_remove
 *		Take a subscription out of the filter index *index of the entry it is
 *		linked to; the index is freed, and *index set to NULL, when it was
 *		the last one.  A subscription never added is ignored.  Never raises.
 */
void
plank_filter_index_remove(PlankFilterIndex **index, PlankSub *sub)
{
	IndexedSub *is = (IndexedSub *) sub->filter_index;
	PlankFilterIndex *ix = *index;

	if (is == NULL || ix == NULL)
		return;
	Assert(is->index == ix);
	if (is->bucket != NULL)
		unfile(ix, is);
	else
		dlist_delete(&is->node);
	sub->filter_index = NULL;
	pfree(is);
	if (--ix->nsubs == 0)
	{
		MemoryContextDelete(ix->cxt);
		*index = NULL;
	}
}

/*
 * plank_filter_index_sub_changed
 *		A linked table subscription's row-level security changed (recheck.c):
 *		one that has it now moves to the walked list, for good (see the file
 *		header).  Never raises.
 */
void
plank_filter_index_sub_changed(PlankSub *sub)
{
	IndexedSub *is = (IndexedSub *) sub->filter_index;

	if (is == NULL || is->bucket == NULL || !sub->rls)
		return;
	unfile(is->index, is);
	insert_ordered(&is->index->walked, is);
}

/* Take the subscriptions of the bucket of (column, value) as hits. */
static void
take_bucket(PlankFilterIndex *ix, StringInfo key, int *nhits, uint64 stamp)
{
	BucketKey	k;
	Bucket	   *b;
	dlist_iter	iter;

	k.data = key->data;
	k.len = key->len;
	if ((b = hash_search(ix->buckets, &k, HASH_FIND, NULL)) == NULL)
		return;
	dlist_foreach(iter, &b->subs)
	{
		IndexedSub *is = dlist_container(IndexedSub, node, iter.cur);

		if (is->stamp == stamp)
			continue;
		is->stamp = stamp;
		if (*nhits == hits_cap)
		{
			hits_cap = hits_cap ? hits_cap * 2 : 64;
			hits = hits ? repalloc(hits, hits_cap * sizeof(IndexedSub *)) :
				MemoryContextAlloc(TopMemoryContext, hits_cap * sizeof(IndexedSub *));
		}
		hits[(*nhits)++] = is;
	}
}

static int
ordinal_cmp(const void *a, const void *b)
{
	uint64		x = (*(IndexedSub *const *) a)->ordinal;
	uint64		y = (*(IndexedSub *const *) b)->ordinal;

	return (x > y) - (x < y);
}

/*
 * Collect the hits of one row image; false when the image cannot rule
 * subscriptions out (the caller walks everything).  must_match: the change
 * matches through this image only when every filtered column is in it and
 * passes (INSERT, UPDATE), so an image or column that is missing gives no
 * candidates; otherwise (DELETE) a missing one counts as matching.
 */
static bool
image_hits(PlankFilterIndex *ix, PlankPayload *p, int which, bool must_match,
		   int *nhits, uint64 stamp)
{
	StringInfoData key;
	bool		ok = true;

	if (p->rows[which] == NULL)
		return must_match;
	initStringInfo(&key);
	for (int c = 0; c < ix->ncolumns && ok; c++)
	{
		IndexColumn *col = &ix->columns[c];
		int			m = plank_filter_row_member(p, which, col->name, col->len);

		if (m < 0)
		{
			ok = must_match;
			continue;
		}
		resetStringInfo(&key);
		appendBinaryStringInfo(&key, col->name, col->len);
		appendStringInfoChar(&key, '\0');
		switch (member_canonical(&p->rows[which][m], &key))
		{
			case CANON_OK:
				take_bucket(ix, &key, nhits, stamp);
				break;
			case CANON_NONE:
				break;
			default:
				ok = false;
				break;
		}
	}
	pfree(key.data);
	return ok;
}

/*
 * plank_filter_index_candidates
 *		The subscriptions of a table entry (its filter index, index) that
 *		change ev can match: the walked ones and those filed under the
 *		values of ev's row images, in the order they were linked to the
 *		entry, *n of them.  The array is valid until the next call.  Returns
 *		NULL when every subscription of the entry must be walked (no index,
 *		none indexed, or a change the index cannot judge: file header).
 *		Parses ev's payload (plank_event_payload, in the current memory
 *		context) when it was not yet; never raises but out of memory (ERROR
 *		53200): a payload that cannot be read returns NULL, and the walk
 *		reports it per subscription as before.
 */
PlankSub **
plank_filter_index_candidates(PlankFilterIndex *index, PlankEvent *ev, int *n)
{
	MemoryContext cxt = CurrentMemoryContext;
	PlankPayload *volatile p = NULL;
	uint64		stamp;
	int			nhits = 0;
	int			h;
	int			nout;
	dlist_iter	iter;
	bool		ok;

	if (index == NULL || index->nindexed == 0 || !ev->is_change ||
		ev->op == PLANK_OP_TRUNCATE)
		return NULL;
	PG_TRY();
	{
		p = plank_event_payload(ev);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		p = NULL;
	}
	PG_END_TRY();
	if (p == NULL || p->truncated)
		return NULL;

	stamp = ++next_stamp;
	switch (ev->op)
	{
		case PLANK_OP_INSERT:
			ok = image_hits(index, p, PLANK_ROW_NEW, true, &nhits, stamp);
			break;
		case PLANK_OP_UPDATE:
			ok = image_hits(index, p, PLANK_ROW_NEW, true, &nhits, stamp) &&
				image_hits(index, p, PLANK_ROW_OLD, true, &nhits, stamp);
			break;
		case PLANK_OP_DELETE:
			ok = image_hits(index, p, PLANK_ROW_OLD, false, &nhits, stamp);
			break;
		default:
			ok = false;
			break;
	}
	if (!ok)
		return NULL;

	/* merge the walked list and the hits, both by ordinal */
	if (nhits > 1)
		qsort(hits, nhits, sizeof(IndexedSub *), ordinal_cmp);
	if (out_cap < index->nsubs)
	{
		out_cap = Max(index->nsubs, out_cap * 2);
		out_subs = out_subs ? repalloc(out_subs, out_cap * sizeof(PlankSub *)) :
			MemoryContextAlloc(TopMemoryContext, out_cap * sizeof(PlankSub *));
	}
	nout = 0;
	h = 0;
	dlist_foreach(iter, &index->walked)
	{
		IndexedSub *is = dlist_container(IndexedSub, node, iter.cur);

		while (h < nhits && hits[h]->ordinal < is->ordinal)
			out_subs[nout++] = hits[h++]->sub;
		out_subs[nout++] = is->sub;
	}
	while (h < nhits)
		out_subs[nout++] = hits[h++]->sub;
	*n = nout;
	return out_subs;
}
