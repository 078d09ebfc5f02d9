/*-------------------------------------------------------------------------
 *
 * visibility.c
 *		What each subscriber may see of a change: only the columns its role
 *		may SELECT, and, where row-level security applies to its role, only
 *		the changes whose committed row images its policies let it see
 *		(docs/SECURITY.md states the rules).
 *
 * Row-level security is decided on the row images the capture trigger
 * recorded at commit (the full old row of an UPDATE or DELETE is captured
 * for tables with row-level security), never on the table as it is later.
 * The socket worker does not evaluate policies itself: it batches the images
 * of each group of subscribers that share a role, token claims and table,
 * and a check worker (checker.c) evaluates the role's SELECT policies on
 * them, as that role.  Meanwhile each such subscription keeps its changes in
 * a queue of its own, in order, and delivers them once decided; other
 * subscriptions are not held up.  Column restriction and the key-only forms
 * are rewritten once per change and shared.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "nodes/bitmapset.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "jsonspan.h"
#include "event.h"
#include "check.h"
#include "conn.h"
#include "filter.h"
#include "delivery.h"

/* the per-event cache of rewritten frames, cleared by plank_visibility_event_done() */
typedef struct FrameEntry
{
	const char *colkey;			/* NULL: every column */
	char		mode;
	PlankFrame *frame;
} FrameEntry;

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

#define MODE_PLAIN 'p'			/* the payload, columns restricted */
#define MODE_KEY_OLD 'k'		/* RLS: "old" reduced to the key */
#define MODE_HIDDEN 'h'			/* RLS: an UPDATE the subscriber may no longer see */

/*
 * plank_visibility_key_columns
 *		The columns that identify a row of a table: its replica identity
 *		index, else its primary key (REPLICA IDENTITY FULL has no index), or
 *		NIL when it has neither.  Inside a transaction.  Reads only the
 *		catalogs, never the table or its indexes: a client's table may be
 *		locked by anyone (LOCK TABLE, VACUUM FULL) and the socket worker never
 *		waits for it.
 */
List *
plank_visibility_key_columns(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};
	List	   *cols = NIL;
	MemoryContext cxt = CurrentMemoryContext;
	bool		pushed = false;

	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	SPI_connect();
	if (SPI_execute_with_args("SELECT i.indkey FROM pg_catalog.pg_index i "
							  "JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indrelid "
							  "WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisvalid AND "
							  "((i.indisreplident AND c.relreplident OPERATOR(pg_catalog.=) 'i') OR i.indisprimary) "
							  "ORDER BY i.indisreplident DESC LIMIT 1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the key of relation %u", relid);
	if (SPI_processed == 1)
	{
		bool		isnull;
		int2vector *indkey = (int2vector *) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[0],
																		 SPI_tuptable->tupdesc, 1, &isnull));

		for (int i = 0; !isnull && i < indkey->dim1; i++)
		{
			char	   *name = get_attname(relid, indkey->values[i], true);

			if (name)
			{
				MemoryContext old = MemoryContextSwitchTo(cxt);

				cols = lappend(cols, pstrdup(name));
				MemoryContextSwitchTo(old);
			}
		}
	}
	SPI_finish();
	if (pushed)
		PopActiveSnapshot();
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

/*
 * Append a row image keeping the members the subscriber may see, each cut
 * out of the payload's text exactly as committed (key, ':', value).
 */
static void
append_row(StringInfo buf, const PlankSub *sub, const PlankJsonMember *row, int n, bool key_only)
{
	bool		first = true;

	appendStringInfoChar(buf, '{');
	for (int i = 0; i < n; i++)
	{
		int			len;
		char	   *name = plank_json_key(&row[i], &len);

		/* a table without a key gives away nothing of its rows here */
		if (!column_allowed(sub, name, len) || (key_only && !is_key_column(sub, name, len)))
			continue;
		if (!first)
			appendStringInfoChar(buf, ',');
		first = false;
		appendBinaryStringInfo(buf, row[i].key, row[i].keylen);
		appendStringInfoChar(buf, ':');
		appendBinaryStringInfo(buf, row[i].value, row[i].valuelen);
	}
	appendStringInfoChar(buf, '}');
}

/*
 * The payload of an event for one subscriber, cut out of the committed
 * text without re-serialising (docs/PROTOCOL.md "Column privileges"): row
 * images keep the subscriber's columns; MODE_HIDDEN replaces them with
 * "visible": false and the key.  Raises ERROR only when the payload cannot
 * be read (the callers catch it) or out of memory.
 */
static PlankFrame *
rewrite(PlankEvent *ev, const PlankSub *sub, char mode)
{
	PlankPayload *p = plank_event_payload(ev);
	StringInfoData buf;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < p->nmembers; i++)
	{
		const PlankJsonMember *m = &p->members[i];
		int			row = -1;

		for (int r = 0; r < 3; r++)
			if (p->row_member[r] == i)
				row = r;
		if (mode == MODE_HIDDEN &&
			(row >= 0 || plank_json_key_is(m, "truncated") || plank_json_key_is(m, "overflow")))
			continue;
		if (!first)
			appendStringInfoChar(&buf, ',');
		first = false;
		appendBinaryStringInfo(&buf, m->key, m->keylen);
		appendStringInfoChar(&buf, ':');
		if (row >= 0 && p->rows[row] != NULL)
			append_row(&buf, sub, p->rows[row], p->nrows[row],
					   mode == MODE_KEY_OLD && row == PLANK_ROW_OLD);
		else
			appendBinaryStringInfo(&buf, m->value, m->valuelen);
	}
	if (mode == MODE_HIDDEN)
	{
		/* "this row is no longer visible to you", with the key it knows: the old row's */
		int			row = p->row_member[PLANK_ROW_OLD] >= 0 ? PLANK_ROW_OLD : PLANK_ROW_NEW;

		if (!first)
			appendStringInfoChar(&buf, ',');
		appendStringInfoString(&buf, "\"visible\":false");
		if (p->row_member[row] >= 0 && p->rows[row] != NULL)
		{
			appendStringInfoString(&buf, ",\"key\":");
			append_row(&buf, sub, p->rows[row], p->nrows[row], true);
		}
	}
	appendStringInfoChar(&buf, '}');
	return plank_change_frame(ev, buf.data, buf.len, NULL);
}

/* The rewritten frame of an event for a subscriber, cached for the event. */
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
 * plank_visibility_frame
 *		The frame a table subscription without row-level security may receive
 *		for a change of its table: the event's own frame when its role may
 *		read every column, else one with only its columns.
 */
PlankFrame *
plank_visibility_frame(PlankSub *sub, PlankEvent *ev)
{
	if (sub->ncolumns == 0)
		return ev->frame;
	return variant(ev, sub, MODE_PLAIN);
}

/*
 * Row-level security, asynchronously.
 *
 * RlsEvent: a change waiting in the queues of RLS subscriptions, shared.
 * RlsCheck: the decision for one change and one group (role, claims,
 * table): is the new image visible, is the old image visible.
 * RlsEntry: one item of a subscription's queue: a change (with its check)
 * or the commit marker of a transaction.
 */
typedef struct RlsEvent
{
	PlankEvent	ev;				/* a copy: frame referenced */
	int			refcount;
} RlsEvent;

typedef struct RlsGroup RlsGroup;

typedef struct RlsCheck
{
	dlist_node	node;			/* in the group's list of unsent checks */
	RlsGroup   *group;
	RlsEvent   *rev;
	int			refcount;		/* entries, and the group while it is unsent or sent */
	bool		done;
	bool		alone;			/* its batch failed: it is checked by itself */
	bool		new_visible;
	bool		old_visible;
	int			new_idx;		/* places of its images in the sent batch; -1: none */
	int			old_idx;
	int			nframes;		/* frames rewritten for it, shared by the group */
	struct
	{
		char		mode;
		const char *colkey;
		PlankFrame *frame;
	}			frames[4];
} RlsCheck;

typedef struct RlsKey
{
	Oid			roleid;
	Oid			relid;
	uint32		claims_hash;
} RlsKey;

struct RlsGroup
{
	RlsKey		key;			/* hash key: first */
	RlsGroup   *next;			/* other groups with the same key (claims differ) */
	char	   *claims;
	PlankIdentity ident;
	dlist_head	subs;			/* PlankSub.rls_group_node */
	dlist_head	unsent;			/* RlsCheck.node, in order */
	RlsCheck   *last;			/* the newest check, shared by the group's subs */
	PlankCheckJob *job;			/* the batch in flight */
	RlsCheck  **sent;			/* its checks */
	int			nsent;
	dlist_node	flush_node;		/* in the list of groups with unsent checks */
	bool		in_flush;
};

typedef struct RlsEntry
{
	dlist_node	node;
	bool		is_commit;
	bool		seen;			/* received before a resume: decides, sends nothing */
	RlsEvent   *rev;
	RlsCheck   *check;			/* NULL: no check (TRUNCATE, or a commit marker) */
} RlsEntry;

/* a subscription queues at most this many changes, then is told to resync */
#define RLS_MAX_QUEUED 10000
/* at most this many images in one check */
#define RLS_BATCH 256

static MemoryContext rls_cxt = NULL;
static HTAB *groups = NULL;
static dlist_head flush_list = DLIST_STATIC_INIT(flush_list);
/* RLS subscriptions with changes of an open transaction queued */
static dlist_head tx_subs = DLIST_STATIC_INIT(tx_subs);

static void
rls_init(void)
{
	HASHCTL		ctl;

	if (rls_cxt != NULL)
		return;
	rls_cxt = AllocSetContextCreate(TopMemoryContext, "plank row-level security",
									ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(RlsKey);
	ctl.entrysize = sizeof(RlsGroup);
	ctl.hcxt = rls_cxt;
	groups = hash_create("plank row-level security groups", 64, &ctl,
						 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

static void
rev_unref(RlsEvent *rev)
{
	if (--rev->refcount > 0)
		return;
	plank_frame_unref(rev->ev.frame);
	pfree(rev);
}

static void
check_unref(RlsCheck *check)
{
	if (--check->refcount > 0)
		return;
	for (int i = 0; i < check->nframes; i++)
		plank_frame_unref(check->frames[i].frame);
	if (check->group && check->group->last == check)
		check->group->last = NULL;
	rev_unref(check->rev);
	pfree(check);
}

/* The group of a subscription (its connection's identity may change). */
static RlsGroup *
group_of(PlankSub *sub)
{
	PlankIdentity *id = &sub->conn->ident;
	RlsKey		key;
	RlsGroup   *head;
	RlsGroup   *g;
	bool		found;

	if (sub->rls_group)
	{
		g = (RlsGroup *) sub->rls_group;
		if (g->key.roleid == id->roleid && strcmp(g->claims, id->claims) == 0)
			return g;
		dlist_delete(&sub->rls_group_node);
		sub->rls_group = NULL;
	}
	memset(&key, 0, sizeof(key));
	key.roleid = id->roleid;
	key.relid = sub->relid;
	key.claims_hash = hash_bytes((const unsigned char *) id->claims, strlen(id->claims));
	head = hash_search(groups, &key, HASH_ENTER, &found);
	if (!found)
	{
		memset(((char *) head) + sizeof(RlsKey), 0, sizeof(RlsGroup) - sizeof(RlsKey));
		head->claims = NULL;
	}
	for (g = head; g; g = g->next)
		if (g->claims == NULL || strcmp(g->claims, id->claims) == 0)
			break;
	if (g == NULL)
	{
		g = MemoryContextAllocZero(rls_cxt, sizeof(RlsGroup));
		g->key = key;
		g->next = head->next;
		head->next = g;
	}
	if (g->claims == NULL)
	{
		g->claims = MemoryContextStrdup(rls_cxt, id->claims);
		g->ident.roleid = id->roleid;
		g->ident.role = MemoryContextStrdup(rls_cxt, id->role);
		g->ident.claims = g->claims;
		dlist_init(&g->subs);
		dlist_init(&g->unsent);
	}
	dlist_push_tail(&g->subs, &sub->rls_group_node);
	sub->rls_group = g;
	return g;
}

static RlsEvent *
rev_make(PlankEvent *ev)
{
	RlsEvent   *rev = MemoryContextAlloc(rls_cxt, sizeof(RlsEvent));

	rev->ev = *ev;
	rev->ev.frame->refcount++;
	rev->ev.parsed = NULL;		/* parsed again, briefly, when needed */
	rev->refcount = 0;
	return rev;
}

static void
queue_entry(PlankSub *sub, RlsEntry *e)
{
	dlist_push_tail(&sub->rls_queue, &e->node);
	sub->rls_queued++;
}

static void drain(PlankSub *sub);
static void clear_queue(PlankSub *sub);

/* Queue ev for sub; seen: decide it but send nothing (a resumed client has it). */
static void
enqueue(PlankSub *sub, PlankEvent *ev, bool seen)
{
	RlsEntry   *e;

	rls_init();
	if (sub->rls_queued >= RLS_MAX_QUEUED)
	{
		/* the checks cannot keep up: start over from a snapshot */
		clear_queue(sub);
		plank_conn_resync(sub, "check_backlog");
	}
	e = MemoryContextAllocZero(rls_cxt, sizeof(RlsEntry));
	e->seen = seen;
	if (ev->op == PLANK_OP_TRUNCATE)
	{
		/* nothing to check: decided, and its frames cached like the others */
		RlsCheck   *check = MemoryContextAllocZero(rls_cxt, sizeof(RlsCheck));

		check->rev = rev_make(ev);
		check->rev->refcount++;
		check->done = true;
		check->refcount = 1;
		e->check = check;
		e->rev = check->rev;
		e->rev->refcount++;
	}
	else
	{
		RlsGroup   *g = group_of(sub);
		RlsCheck   *check = g->last;

		if (check == NULL || check->rev->ev.seq != ev->seq)
		{
			check = MemoryContextAllocZero(rls_cxt, sizeof(RlsCheck));
			check->group = g;
			check->rev = rev_make(ev);
			check->rev->refcount++;
			check->new_idx = check->old_idx = -1;
			check->refcount = 1;	/* the group's, until decided */
			dlist_push_tail(&g->unsent, &check->node);
			g->last = check;
			if (!g->in_flush)
			{
				dlist_push_tail(&flush_list, &g->flush_node);
				g->in_flush = true;
			}
		}
		check->refcount++;
		e->check = check;
		e->rev = check->rev;
		e->rev->refcount++;
	}
	queue_entry(sub, e);

	/* which transaction's commit marker this subscription may owe */
	if (ev->tx_last)
	{
		if (sub->rls_tx_xid != 0)
			dlist_delete(&sub->rls_tx_node);
		sub->rls_tx_xid = 0;
	}
	else
	{
		if (sub->rls_tx_xid == 0)
			dlist_push_tail(&tx_subs, &sub->rls_tx_node);
		sub->rls_tx_xid = ev->xid;
	}
	if (e->check->done)
		drain(sub);
}

/*
 * plank_visibility_enqueue
 *		Queue a change of its table for a subscription under row-level
 *		security; it is delivered, in order, once its group's check is back
 *		(plank_visibility_batch_done() sends the checks).
 */
void
plank_visibility_enqueue(PlankSub *sub, PlankEvent *ev)
{
	enqueue(sub, ev, false);
}

/*
 * plank_visibility_enqueue_seen
 *		ev, a change that is not the last of its transaction, reached the
 *		client before it resumed (plank_subs_replay()): queue its check
 *		without sending it again, so that the transaction's commit marker is
 *		sent when the subscription could see the change (docs/PROTOCOL.md,
 *		"resume after a reconnect").
 */
void
plank_visibility_enqueue_seen(PlankSub *sub, PlankEvent *ev)
{
	enqueue(sub, ev, true);
}

/*
 * plank_visibility_enqueue_commit
 *		ev, the last change of a transaction, went to other tables: queue the
 *		transaction's commit marker for a subscription that has changes of it
 *		queued.
 */
void
plank_visibility_enqueue_commit(PlankSub *sub, PlankEvent *ev)
{
	RlsEntry   *e = MemoryContextAllocZero(rls_cxt, sizeof(RlsEntry));

	e->is_commit = true;
	e->rev = rev_make(ev);
	e->rev->refcount++;
	queue_entry(sub, e);
	if (sub->rls_tx_xid != 0)
		dlist_delete(&sub->rls_tx_node);
	sub->rls_tx_xid = 0;
	drain(sub);
}

/*
 * plank_visibility_tx_closed
 *		After ev (the last change of its transaction) was dispatched: the
 *		RLS subscriptions that queued changes of its transaction but not ev
 *		get its commit marker queued.
 */
void
plank_visibility_tx_closed(PlankEvent *ev)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &tx_subs)
	{
		PlankSub   *sub = dlist_container(PlankSub, rls_tx_node, iter.cur);

		if (sub->rls_tx_xid == ev->xid)
			plank_visibility_enqueue_commit(sub, ev);
	}
}

/* The frame of a decided change for a subscription, shared by its group. */
static PlankFrame *
check_frame(RlsCheck *check, PlankSub *sub, char mode)
{
	PlankFrame *frame;
	MemoryContext old;
	MemoryContext tmp;

	for (int i = 0; i < check->nframes; i++)
		if (check->frames[i].mode == mode &&
			((check->frames[i].colkey == NULL && sub->colkey == NULL) ||
			 (check->frames[i].colkey && sub->colkey &&
			  strcmp(check->frames[i].colkey, sub->colkey) == 0)))
			return check->frames[i].frame;
	if (mode == MODE_PLAIN && sub->ncolumns == 0)
		return check->rev->ev.frame;

	tmp = AllocSetContextCreate(CurrentMemoryContext, "plank rewrite", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(tmp);
	PG_TRY();
	{
		frame = rewrite(&check->rev->ev, sub, mode);
	}
	PG_FINALLY();
	{
		check->rev->ev.parsed = NULL;	/* it was parsed in tmp */
		MemoryContextSwitchTo(old);
		MemoryContextDelete(tmp);
	}
	PG_END_TRY();

	if (check->nframes < lengthof(check->frames))
	{
		check->frames[check->nframes].mode = mode;
		check->frames[check->nframes].colkey = sub->colkey ?
			MemoryContextStrdup(rls_cxt, sub->colkey) : NULL;
		check->frames[check->nframes].frame = frame;
		check->nframes++;
	}
	else
	{
		/* not cached: the connection's queue keeps it alive */
		plank_conn_send(sub->conn, frame, sub);
		plank_frame_unref(frame);
		return NULL;
	}
	return frame;
}

static void
send_commit_marker(PlankSub *sub, PlankEvent *ev)
{
	PlankFrame *frame = plank_commit_frame(ev);

	plank_conn_send(sub->conn, frame, sub);
	plank_frame_unref(frame);
}

/*
 * Send one decided change to a subscription, if it may see it and its
 * filters match; *sent: whether it was sent.  Returns false when the change
 * could not be sent exactly (the subscription was told to resync): an
 * error never leaves the dispatch path.
 */
static bool
deliver_change(PlankSub *sub, RlsEntry *e, volatile bool *sent)
{
	PlankEvent *ev = &e->rev->ev;
	RlsCheck   *c = e->check;
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext tmp = AllocSetContextCreate(cxt, "plank filters", ALLOCSET_SMALL_SIZES);
	volatile bool ok = true;

	PG_TRY();
	{
		char		mode = 0;

		MemoryContextSwitchTo(tmp);
		switch (ev->op)
		{
			case PLANK_OP_TRUNCATE:
				mode = MODE_PLAIN;
				break;
			case PLANK_OP_INSERT:
				if (c->new_visible && plank_filter_match(sub, ev, false))
					mode = MODE_PLAIN;
				break;
			case PLANK_OP_UPDATE:
				/* filters see the old row only when the role could see it */
				if (c->new_visible)
				{
					if (plank_filter_match(sub, ev, !c->old_visible))
						mode = MODE_KEY_OLD;
				}
				else if (c->old_visible)
					mode = MODE_HIDDEN;
				break;
			case PLANK_OP_DELETE:
				if (c->old_visible)
					mode = MODE_KEY_OLD;
				break;
		}
		ev->parsed = NULL;		/* parsed in tmp */
		MemoryContextSwitchTo(cxt);
		if (mode)
		{
			PlankFrame *frame = e->seen ? NULL : check_frame(c, sub, mode);

			if (frame)
				plank_conn_send(sub->conn, frame, sub);
			*sent = true;
			sub->rls_sent_xid = ev->tx_last ? 0 : ev->xid;
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		ev->parsed = NULL;
		edata = CopyErrorData();
		FlushErrorState();
		plank_conn_undeliverable(sub, ev, edata->message);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextDelete(tmp);
	return ok;
}

/* Deliver one decided change: docs/SECURITY.md "Row-level security". */
static void
deliver(PlankSub *sub, RlsEntry *e)
{
	PlankEvent *ev = &e->rev->ev;
	volatile bool sent = false;

	if (e->is_commit)
	{
		if (sub->rls_sent_xid == ev->xid)
		{
			send_commit_marker(sub, ev);
			sub->rls_sent_xid = 0;
		}
		return;
	}
	/* on failure the subscription was told to resync; its commit marker still goes */
	(void) deliver_change(sub, e, &sent);
	if (!sent && ev->tx_last && sub->rls_sent_xid == ev->xid)
	{
		send_commit_marker(sub, ev);
		sub->rls_sent_xid = 0;
	}
}

static void
entry_free(PlankSub *sub, RlsEntry *e)
{
	dlist_delete(&e->node);
	sub->rls_queued--;
	if (e->check)
		check_unref(e->check);
	rev_unref(e->rev);
	pfree(e);
}

/* Deliver a subscription's queued items up to the first undecided one. */
static void
drain(PlankSub *sub)
{
	while (!dlist_is_empty(&sub->rls_queue))
	{
		RlsEntry   *e = dlist_head_element(RlsEntry, node, &sub->rls_queue);

		if (e->check && !e->check->done)
			break;
		if (!sub->conn->closing)
			deliver(sub, e);
		entry_free(sub, e);
	}
}

static void
clear_queue(PlankSub *sub)
{
	while (!dlist_is_empty(&sub->rls_queue))
		entry_free(sub, dlist_head_element(RlsEntry, node, &sub->rls_queue));
	sub->rls_sent_xid = 0;
}

/*
 * A row image for a check, as the JSON array [key, value, key, value, ...]
 * of its members' committed text: the check worker takes each element
 * apart with json_array_elements, which does not de-escape, so that a json
 * column holding "\u0000" reaches the policy as committed (checker.c).
 */
static void
append_image(StringInfo body, const PlankJsonMember *row, int n)
{
	appendStringInfoChar(body, '[');
	for (int i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoChar(body, ',');
		appendBinaryStringInfo(body, row[i].key, row[i].keylen);
		appendStringInfoChar(body, ',');
		appendBinaryStringInfo(body, row[i].value, row[i].valuelen);
	}
	appendStringInfoChar(body, ']');
}

/*
 * The images a check needs, appended to a JSON array exactly as committed;
 * their places.  Raises ERROR only when the payload cannot be read.
 */
static void
add_images(StringInfo body, int *nimages, RlsCheck *check)
{
	PlankEvent *ev = &check->rev->ev;
	PlankPayload *p = plank_event_payload(ev);
	int			m;

	/* a row sent truncated (its stored payload lost) shows nobody anything */
	if (p->truncated)
		return;
	if ((ev->op == PLANK_OP_INSERT || ev->op == PLANK_OP_UPDATE) &&
		(m = p->row_member[PLANK_ROW_NEW]) >= 0 && p->rows[PLANK_ROW_NEW] != NULL)
	{
		appendStringInfoChar(body, *nimages ? ',' : '[');
		append_image(body, p->rows[PLANK_ROW_NEW], p->nrows[PLANK_ROW_NEW]);
		check->new_idx = (*nimages)++;
	}
	if ((ev->op == PLANK_OP_UPDATE || ev->op == PLANK_OP_DELETE) &&
		(m = p->row_member[PLANK_ROW_OLD]) >= 0 && p->rows[PLANK_ROW_OLD] != NULL)
	{
		appendStringInfoChar(body, *nimages ? ',' : '[');
		append_image(body, p->rows[PLANK_ROW_OLD], p->nrows[PLANK_ROW_OLD]);
		check->old_idx = (*nimages)++;
	}
}

static void check_done(PlankCheckJob *job, bool ok, const char *data, Size len,
					   const PlankCheckReply *rep);

/* Mark a check decided, and drain the group's subscriptions. */
static void
decide(RlsGroup *g, RlsCheck **checks, int n)
{
	dlist_mutable_iter iter;

	for (int i = 0; i < n; i++)
		checks[i]->done = true;
	dlist_foreach_modify(iter, &g->subs)
		drain(dlist_container(PlankSub, rls_group_node, iter.cur));
	for (int i = 0; i < n; i++)
		check_unref(checks[i]);
}

/* Send a group's next batch of checks, unless one is in flight. */
static void
send_batch(RlsGroup *g)
{
	PlankCheckJob *job;
	int			nimages = 0;
	RlsCheck  **nocheck = NULL;
	int			nnocheck = 0;

	if (g->job || dlist_is_empty(&g->unsent))
		return;
	job = plank_check_job_new(PLANK_CHECK_RLS, &g->ident, g->key.relid,
							  (int64) plank_max_client_buffer * 1024);
	g->sent = MemoryContextAlloc(rls_cxt, RLS_BATCH * sizeof(RlsCheck *));
	g->nsent = 0;
	while (!dlist_is_empty(&g->unsent) && g->nsent < RLS_BATCH &&
		   job->body.len < PLANK_CHECK_REQUEST_QUEUE / 2)
	{
		RlsCheck   *check = dlist_head_element(RlsCheck, node, &g->unsent);
		MemoryContext tmp;
		MemoryContext old;
		int			body_len = job->body.len;
		int			images_before = nimages;

		/* a check whose batch failed goes alone, so that only its own row is hidden */
		if (check->alone && g->nsent > 0)
			break;
		dlist_delete(&check->node);
		tmp = AllocSetContextCreate(CurrentMemoryContext, "plank images", ALLOCSET_SMALL_SIZES);
		old = MemoryContextSwitchTo(tmp);
		PG_TRY();
		{
			add_images(&job->body, &nimages, check);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			/* its images cannot be read: nothing of it is visible (logged) */
			MemoryContextSwitchTo(tmp);
			edata = CopyErrorData();
			FlushErrorState();
			ereport(WARNING,
					(errmsg("plank hides change " UINT64_FORMAT " from role \"%s\": %s",
							check->rev->ev.seq, g->ident.role, edata->message)));
			job->body.len = body_len;
			job->body.data[body_len] = '\0';
			nimages = images_before;
			check->new_idx = check->old_idx = -1;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(old);
		MemoryContextDelete(tmp);
		check->rev->ev.parsed = NULL;	/* it was parsed in tmp */
		g->sent[g->nsent++] = check;
		if (check->alone)
			break;
	}
	if (nimages == 0)
	{
		/* nothing to ask (truncated rows only): decided, nothing visible */
		nocheck = g->sent;
		nnocheck = g->nsent;
		g->sent = NULL;
		g->nsent = 0;
		pfree(job->body.data);
		pfree(job->claims);
		pfree(job);
		decide(g, nocheck, nnocheck);
		pfree(nocheck);
		send_batch(g);
		return;
	}
	appendStringInfoChar(&job->body, ']');
	job->done = check_done;
	job->arg = g;
	g->job = job;
	plank_check_submit(job);
}

/* A batch's reply: one '0' or '1' per image. */
static void
check_done(PlankCheckJob *job, bool ok, const char *data, Size len,
		   const PlankCheckReply *rep)
{
	RlsGroup   *g = (RlsGroup *) job->arg;
	RlsCheck  **checks = g->sent;
	int			n = g->nsent;

	g->job = NULL;
	g->sent = NULL;
	g->nsent = 0;
	if (!ok && strncmp(rep->sqlstate, "58000", 5) == 0)
	{
		/*
		 * No check worker ran it (one exited, or none can start): not a
		 * verdict on these rows.  They wait, in order, for the next one.
		 */
		ereport(LOG,
				(errmsg("plank will check %d changes of relation %u for role \"%s\" again: %.*s",
						n, g->key.relid, g->ident.role, (int) len, data)));
		for (int i = n - 1; i >= 0; i--)
		{
			checks[i]->new_idx = checks[i]->old_idx = -1;
			dlist_push_head(&g->unsent, &checks[i]->node);
		}
		pfree(checks);
		send_batch(g);
		return;
	}
	if (!ok && n > 1)
	{
		/* retry each on its own (in order, before the unsent ones) */
		for (int i = n - 1; i >= 0; i--)
		{
			checks[i]->alone = true;
			checks[i]->new_idx = checks[i]->old_idx = -1;
			dlist_push_head(&g->unsent, &checks[i]->node);
		}
		pfree(checks);
		send_batch(g);
		return;
	}
	if (!ok)
	{
		ereport(LOG,
				(errmsg("plank hides a change of relation %u from role \"%s\": its row-level security check failed: %.*s",
						g->key.relid, g->ident.role, (int) len, data)));
	}
	for (int i = 0; i < n; i++)
	{
		RlsCheck   *c = checks[i];

		c->new_visible = ok && c->new_idx >= 0 && (Size) c->new_idx < len && data[c->new_idx] == '1';
		c->old_visible = ok && c->old_idx >= 0 && (Size) c->old_idx < len && data[c->old_idx] == '1';
	}
	decide(g, checks, n);
	pfree(checks);
	send_batch(g);
}

/*
 * plank_visibility_sub_removed
 *		A subscription goes: drop its queue and leave its group.
 */
void
plank_visibility_sub_removed(PlankSub *sub)
{
	RlsGroup   *g = (RlsGroup *) sub->rls_group;

	clear_queue(sub);
	if (sub->rls_tx_xid != 0)
		dlist_delete(&sub->rls_tx_node);
	sub->rls_tx_xid = 0;
	if (g == NULL)
		return;
	dlist_delete(&sub->rls_group_node);
	sub->rls_group = NULL;
	/* an idle group without subscribers gives its slot back */
	if (dlist_is_empty(&g->subs) && g->job == NULL && dlist_is_empty(&g->unsent) && !g->in_flush)
	{
		pfree(g->claims);
		pfree(g->ident.role);
		g->claims = NULL;
		g->last = NULL;
	}
}

/* plank_visibility_event_done: forget the per-event caches. */
void
plank_visibility_event_done(void)
{
	int			i;

	for (i = 0; i < nframes; i++)
		plank_frame_unref(frame_cache[i].frame);
	nframes = 0;
}

/*
 * plank_visibility_batch_done
 *		After a batch of events: send the row-level security checks they
 *		queued, one batch per group (more follow as replies come back).
 */
void
plank_visibility_batch_done(void)
{
	while (!dlist_is_empty(&flush_list))
	{
		RlsGroup   *g = dlist_container(RlsGroup, flush_node, dlist_pop_head_node(&flush_list));

		g->in_flush = false;
		send_batch(g);
	}
}
