/*-------------------------------------------------------------------------
 *
 * subs.c
 *		Subscriptions and fan-out: the index of subscriptions by table and by
 *		NOTIFY channel, filter matching, and dispatch of each received
 *		notification to the connections it matches.
 *
 * An event is serialised once into a shared frame; each matching
 * subscription only queues a reference to it.  Finding the subscribers of a
 * change costs one hash look-up plus the table's subscriptions that its
 * filter index (filter_index.c) cannot rule out, not a walk over every
 * connection.
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
#include "utils/date.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "runtime.h"
#include "event.h"
#include "stats.h"
#include "conn.h"
#include "filter.h"
#include "delivery.h"

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
	PlankFilterIndex *filter_index; /* its subscriptions by equality (filter_index.c) */
} TableEntry;

typedef struct ChannelEntry
{
	NameData	channel;
	dlist_head	subs;
	int			nsubs;
	bool		listening;		/* Async_Listen() has committed */
	uint64		listen_seq;		/* plank_seq when it did */
	TimestampTz idle_since;		/* when nsubs dropped to 0 */
} ChannelEntry;

/*
 * A channel without subscribers stays LISTENed this long, so that a client
 * that reconnects within it can resume its subscription from the ring.
 */
#define CHANNEL_IDLE_KEEP_MS (5 * 60 * 1000)

static HTAB *table_index = NULL;
static HTAB *channel_index = NULL;
static bool unlisten_pending = false;

/*
 * A table renamed under live subscriptions (plank_subs_rename_table): the
 * changes committed before the rename carry the old name, and some may not
 * have been dispatched yet when the subscriptions move to the new name.
 * Until an event has been dispatched after the move (then every change
 * committed before the rename has been: see plank_subs_rename_table), a
 * change under the old name also reaches the subscriptions of that table
 * under the new one.  After that, the alias is kept (the last MAX_ALIASES)
 * for replays (sub_targets): a resumed subscription of the table gets the
 * changes it missed under the old name, those up to until_seq.
 */
typedef struct TableAlias
{
	TableKey	old_key;
	TableKey	new_key;
	Oid			relid;
	uint64		at_seq;			/* plank_seq when the subscriptions moved */
	uint64		until_seq;		/* the last event it can name; 0: live */
} TableAlias;

#define MAX_ALIASES 64

static List *table_aliases = NIL;	/* of TableAlias, in TopMemoryContext */

/*
 * Reading the log (plank_subs_pull).  Change payloads parsed for filters (with the
 * values the filters decoded) are kept in a cache by sequence number
 * (direct-mapped, PARSE_CACHE entries), so that the connections reading the
 * same stretch of the log parse each payload once.  They live in one of two
 * memory contexts, generations: when the current one passes PARSE_GEN_MAX,
 * the other is emptied, with the cache entries it held, and becomes the
 * current one.  So the cache takes at most about twice PARSE_GEN_MAX.
 */
#define PARSE_CACHE 4096
#define PARSE_GEN_MAX (4 * 1024 * 1024)

typedef struct ParsedEntry
{
	uint64		seq;			/* 0: empty */
	int			gen;			/* the generation it was parsed in */
	PlankPayload *parsed;
} ParsedEntry;

static MemoryContext parse_cxt[2];
static int	parse_gen = 0;
static ParsedEntry parse_cache[PARSE_CACHE];


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

	parse_cxt[0] = AllocSetContextCreate(TopMemoryContext, "plank parsed payloads",
										 ALLOCSET_DEFAULT_SIZES);
	parse_cxt[1] = AllocSetContextCreate(TopMemoryContext, "plank parsed payloads",
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
link_sub(PlankSub *sub, dlist_head *list, int *nsubs, void *entry, const char *target)
{
	dlist_push_tail(list, &sub->index_node);
	(*nsubs)++;
	sub->entry = entry;
	/* a subscription that waited for its snapshot is in its connection's list already */
	if (sub->conn_node.next == NULL)
	{
		dlist_push_tail(&sub->conn->subs, &sub->conn_node);
		sub->conn->nsubs++;
	}
	plank_stats_sub_added(sub, target);
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
		entry->filter_index = NULL;
	}
	sub->from_seq = plank_seq;
	link_sub(sub, &entry->subs, &entry->nsubs, entry,
			 psprintf("%s.%s", quote_identifier(schema), quote_identifier(table)));
	plank_filter_index_add(&entry->filter_index, sub);
}

/*
 * plank_subs_rename_table
 *		Move a linked table subscription to the index entry of schema.table,
 *		its table's name now (after ALTER TABLE ... RENAME or SET SCHEMA, or
 *		ALTER SCHEMA ... RENAME), when that differs from the name it is
 *		linked under; returns whether it moved.  Called by the recheck
 *		(recheck.c), which runs before each batch of events is dispatched,
 *		after the invalidations committed before the batch's changes were
 *		read: so a change committed after the rename, which carries the new
 *		name, finds the subscription.  A change committed before it, already
 *		in the batch or in the next one, carries the old name: such changes
 *		still reach the subscription until the first event dispatched after
 *		the move (the alias above; plank_subs_expire_aliases).
 */
bool
plank_subs_rename_table(PlankSub *sub, const char *schema, const char *table)
{
	TableEntry *old_entry = (TableEntry *) sub->entry;
	TableKey	key;
	TableEntry *entry;
	bool		found;
	ListCell   *lc;
	TableAlias *alias;
	MemoryContext old;

	Assert(!sub->is_channel && old_entry != NULL);
	make_table_key(&key, schema, table);
	if (memcmp(&key, &old_entry->key, sizeof(TableKey)) == 0)
		return false;

	/* one alias per table and old name */
	alias = NULL;
	foreach(lc, table_aliases)
	{
		TableAlias *a = (TableAlias *) lfirst(lc);

		if (a->relid == sub->relid && a->until_seq == 0 &&
			memcmp(&a->old_key, &old_entry->key, sizeof(TableKey)) == 0)
			alias = a;
	}
	if (alias == NULL)
	{
		old = MemoryContextSwitchTo(TopMemoryContext);
		alias = palloc(sizeof(TableAlias));
		alias->old_key = old_entry->key;
		alias->relid = sub->relid;
		table_aliases = lappend(table_aliases, alias);
		MemoryContextSwitchTo(old);
	}
	alias->new_key = key;
	alias->at_seq = plank_seq;
	alias->until_seq = 0;

	dlist_delete(&sub->index_node);
	plank_stats_sub_removed(sub);
	plank_filter_index_remove(&old_entry->filter_index, sub);
	if (--old_entry->nsubs == 0)
		hash_search(table_index, &old_entry->key, HASH_REMOVE, NULL);

	entry = hash_search(table_index, &key, HASH_ENTER, &found);
	if (!found)
	{
		dlist_init(&entry->subs);
		entry->nsubs = 0;
		entry->filter_index = NULL;
	}
	link_sub(sub, &entry->subs, &entry->nsubs, entry,
			 psprintf("%s.%s", quote_identifier(schema), quote_identifier(table)));
	plank_filter_index_add(&entry->filter_index, sub);
	return true;
}

/*
 * plank_subs_expire_aliases
 *		End the live aliases of renamed tables once an event has been
 *		dispatched after the move (see plank_subs_rename_table); keep the
 *		last MAX_ALIASES for replays.  Called at each recheck; costs nothing
 *		without renames.
 */
void
plank_subs_expire_aliases(void)
{
	ListCell   *lc;

	foreach(lc, table_aliases)
	{
		TableAlias *a = (TableAlias *) lfirst(lc);

		if (a->until_seq == 0 && plank_seq > a->at_seq)
			a->until_seq = plank_seq;
	}
	while (list_length(table_aliases) > MAX_ALIASES &&
		   ((TableAlias *) linitial(table_aliases))->until_seq != 0)
	{
		pfree(linitial(table_aliases));
		table_aliases = list_delete_first(table_aliases);
	}
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
	if (!entry->listening && plank_workers > 1)
	{
		/* worker 0 LISTENs for every worker of the database (relay.c) */
		entry->listen_seq = plank_relay_listen(channel);
		entry->listening = true;
	}
	else if (!entry->listening)
	{
		MemoryContext cxt = CurrentMemoryContext;

		StartTransactionCommand();
		Async_Listen(channel);
		CommitTransactionCommand();
		MemoryContextSwitchTo(cxt);
		entry->listening = true;
		entry->listen_seq = plank_seq;
	}
	sub->from_seq = plank_seq;
	link_sub(sub, &entry->subs, &entry->nsubs, entry, channel);
	return true;
}

/*
 * plank_subs_channel_covers
 *		Has the worker been LISTENing on a channel since sequence number
 *		after_seq, so that the ring holds every notification on it since then?
 */
bool
plank_subs_channel_covers(const char *channel, uint64 after_seq)
{
	NameData	key;
	ChannelEntry *entry;

	memset(&key, 0, sizeof(key));
	strlcpy(NameStr(key), channel, NAMEDATALEN);
	entry = hash_search(channel_index, &key, HASH_FIND, NULL);
	if (entry != NULL && entry->listening)
		return entry->listen_seq <= after_seq;
	/* plank.workers > 1: worker 0 may listen on it for another worker */
	return plank_workers > 1 && plank_relay_listening_since(channel) <= after_seq;
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
	dlist_delete(&sub->conn_node);
	sub->conn->nsubs--;
	plank_visibility_sub_removed(sub);
	/* one still waiting for its snapshot is in no index yet */
	Assert(sub->snapshot == NULL);
	if (sub->entry != NULL)
	{
		dlist_delete(&sub->index_node);
		plank_stats_sub_removed(sub);
	}
	if (sub->open_xid != 0)
		dlist_delete(&sub->open_node);

	if (sub->entry != NULL && sub->is_channel)
	{
		ChannelEntry *entry = (ChannelEntry *) sub->entry;

		if (--entry->nsubs == 0)
		{
			entry->idle_since = GetCurrentTimestamp();
			unlisten_pending = true;
		}
	}
	else if (sub->entry != NULL)
	{
		TableEntry *entry = (TableEntry *) sub->entry;

		plank_filter_index_remove(&entry->filter_index, sub);
		if (--entry->nsubs == 0)
			hash_search(table_index, &entry->key, HASH_REMOVE, NULL);
	}

	plank_filter_free(sub->filters, sub->nfilters);
	pfree(sub->prefix);
	pfree(sub->id);
	pfree(sub);
}

/*
 * plank_subs_add_pending
 *		Count a table subscription that waits for its snapshot as one of its
 *		connection's (for duplicate ids, limits and closing) before it is
 *		linked into the index by plank_subs_add_table().
 */
void
plank_subs_add_pending(PlankSub *sub)
{
	sub->entry = NULL;
	dlist_push_tail(&sub->conn->subs, &sub->conn_node);
	sub->conn->nsubs++;
}

/*
 * plank_subs_unlisten_idle
 *		UNLISTEN, in one transaction, the channels that have had no
 *		subscribers for CHANNEL_IDLE_KEEP_MS.  Called from the main loop,
 *		outside any transaction; cheap when there is nothing to do.
 */
void
plank_subs_unlisten_idle(void)
{
	HASH_SEQ_STATUS status;
	ChannelEntry *entry;
	List	   *idle = NIL;
	ListCell   *lc;
	TimestampTz now;

	if (!unlisten_pending)
		return;
	unlisten_pending = false;

	now = GetCurrentTimestamp();
	hash_seq_init(&status, channel_index);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->nsubs > 0)
			continue;
		if (!entry->listening ||
			TimestampDifferenceExceeds(entry->idle_since, now, CHANNEL_IDLE_KEEP_MS))
			idle = lappend(idle, entry);
		else
			unlisten_pending = true;	/* look again on a later pass */
	}
	if (idle == NIL)
		return;

	if (plank_workers > 1)
	{
		foreach(lc, idle)
		{
			entry = (ChannelEntry *) lfirst(lc);
			if (entry->listening)
				plank_relay_unlisten(NameStr(entry->channel));
			hash_search(channel_index, &entry->channel, HASH_REMOVE, NULL);
		}
		list_free(idle);
		return;
	}

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

/*
 * The frame a subscription without row-level security gets for a change of
 * its table, or NULL when its filters do not match.  An error (the payload
 * cannot be read, out of memory) never leaves the dispatch path: the
 * subscription is told to resync instead.
 */
static PlankFrame *
sub_frame(PlankSub *sub, PlankEvent *ev)
{
	MemoryContext cxt = CurrentMemoryContext;
	PlankFrame *volatile frame = NULL;

	PG_TRY();
	{
		if (plank_filter_match(sub, ev, false))
			frame = plank_visibility_frame(sub, ev);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		plank_conn_undeliverable(sub, ev, edata->message);
		FreeErrorData(edata);
		frame = NULL;
	}
	PG_END_TRY();
	return frame;
}

/* Is an event on a subscription's channel, or a change of its table it wants? */
static bool
sub_targets(const PlankSub *sub, PlankEvent *ev)
{
	if (sub->is_channel)
		return !ev->is_change &&
			strcmp(NameStr(((ChannelEntry *) sub->entry)->channel), ev->channel) == 0;
	if (!ev->is_change || !(sub->ops & ev->op))
		return false;
	{
		TableEntry *entry = (TableEntry *) sub->entry;
		ListCell   *lc;

		if (strcmp(NameStr(entry->key.schema), ev->schema) == 0 &&
			strcmp(NameStr(entry->key.table), ev->table) == 0)
			return true;
		/* a change of its table under a name the table had before */
		foreach(lc, table_aliases)
		{
			TableAlias *a = (TableAlias *) lfirst(lc);

			if (a->relid == sub->relid &&
				(a->until_seq == 0 || ev->seq <= a->until_seq) &&
				strcmp(NameStr(a->old_key.schema), ev->schema) == 0 &&
				strcmp(NameStr(a->old_key.table), ev->table) == 0)
				return true;
		}
		return false;
	}
}

/*
 * Does a subscription read its events from the log, by its connection's
 * cursor (plank_subs_pull), rather than have them queued as they arrive?
 * Those that get each event's own frame do: channels, and tables its role
 * reads whole without row-level security (and with no checks queued).
 */
static inline bool
sub_pulls(PlankSub *sub)
{
	return sub->is_channel ||
		(!sub->rls && sub->ncolumns == 0 && dlist_is_empty(&sub->rls_queue));
}

/*
 * subscriptions with a transaction open: they received a change of it but
 * not yet its last one or its commit marker
 */
static dlist_head open_subs = DLIST_STATIC_INIT(open_subs);

/* Keep track of sub's open transaction after it was sent change ev. */
static void
sub_tx_sent(PlankSub *sub, const PlankEvent *ev)
{
	if (ev->tx_last)
	{
		/* this change closes the transaction for sub */
		if (sub->open_xid != 0)
		{
			dlist_delete(&sub->open_node);
			sub->open_xid = 0;
		}
	}
	else
	{
		if (sub->open_xid == 0)
			dlist_push_tail(&open_subs, &sub->open_node);
		sub->open_xid = ev->xid;
	}
}

/* Send sub the commit marker of its open transaction, which ev closes. */
static void
sub_tx_commit(PlankSub *sub, const PlankEvent *ev, PlankFrame *frame)
{
	PlankFrame *own = frame ? NULL : plank_commit_frame(ev);

	plank_conn_send_event(sub->conn, frame ? frame : own, sub, ev->received_at);
	if (own)
		plank_frame_unref(own);
	sub->open_xid = 0;
	dlist_delete(&sub->open_node);
}

/* Send a change to one subscription of its table (dispatch_change). */
static void
dispatch_change_sub(PlankSub *sub, PlankEvent *ev, Oid relid)
{
	PlankFrame *frame;

	if (!(sub->ops & ev->op))
		return;
	if (OidIsValid(relid) && sub->relid != relid)
		return;
	if (sub_pulls(sub))
	{
		plank_conn_wake(sub->conn, ev->seq);
		return;
	}
	/* should it read the log later, it starts after this event */
	sub->from_seq = ev->seq;
	if (sub->rls || !dlist_is_empty(&sub->rls_queue))
	{
		/* decided later, in order, by its group's check */
		plank_visibility_enqueue(sub, ev);
		return;
	}
	if ((frame = sub_frame(sub, ev)) == NULL)
		return;
	plank_conn_send_event(sub->conn, frame, sub, ev->received_at);
	sub_tx_sent(sub, ev);
}

/*
 * Send a change to the subscriptions of one index entry (those of table
 * relid only, unless InvalidOid) whose operations it matches: those that
 * read the log are woken, the others get it queued.  Only the candidates
 * of the entry's filter index are visited, in the entry's order; the
 * others' filters cannot match (filter_index.c says why skipping them is
 * exact).
 */
static void
dispatch_change(TableEntry *entry, PlankEvent *ev, Oid relid)
{
	dlist_iter	iter;
	PlankSub  **subs;
	int			n;

	if ((subs = plank_filter_index_candidates(entry->filter_index, ev, &n)) != NULL)
	{
		for (int i = 0; i < n; i++)
			dispatch_change_sub(subs[i], ev, relid);
		return;
	}
	dlist_foreach(iter, &entry->subs)
		dispatch_change_sub(dlist_container(PlankSub, index_node, iter.cur), ev, relid);
}

/*
 * plank_subs_dispatch
 *		Send one event to every subscription that matches it.  The last
 *		change of a transaction goes out with "commit":true; a subscription
 *		that received earlier changes of the transaction but not its last one
 *		gets a separate commit marker.
 */
void
plank_subs_dispatch(PlankEvent *ev)
{
	dlist_iter	iter;
	dlist_mutable_iter miter;
	ListCell   *lc;

	if (ev->is_change)
	{
		TableKey	key;
		TableEntry *entry;

		make_table_key(&key, ev->schema, ev->table);
		entry = hash_search(table_index, &key, HASH_FIND, NULL);
		if (entry != NULL)
			dispatch_change(entry, ev, InvalidOid);
		foreach(lc, table_aliases)
		{
			TableAlias *a = (TableAlias *) lfirst(lc);

			/* a change committed before its table was renamed */
			if (a->until_seq == 0 &&
				memcmp(&a->old_key, &key, sizeof(TableKey)) == 0 &&
				(entry = hash_search(table_index, &a->new_key, HASH_FIND, NULL)) != NULL)
				dispatch_change(entry, ev, a->relid);
		}
		if (ev->tx_last && !dlist_is_empty(&open_subs))
		{
			PlankFrame *frame = NULL;

			dlist_foreach_modify(miter, &open_subs)
			{
				PlankSub   *sub = dlist_container(PlankSub, open_node, miter.cur);

				if (sub_pulls(sub))
				{
					/* its read of the log closes the transaction */
					plank_conn_wake(sub->conn, ev->seq);
					continue;
				}
				if (frame == NULL)
					frame = plank_commit_frame(ev);
				sub_tx_commit(sub, ev, frame);
			}
			if (frame)
				plank_frame_unref(frame);
		}
		if (ev->tx_last)
			plank_visibility_tx_closed(ev);
		plank_visibility_event_done();
	}
	else
	{
		NameData	channel;
		ChannelEntry *entry;

		memset(&channel, 0, sizeof(channel));
		strlcpy(NameStr(channel), ev->channel, NAMEDATALEN);
		entry = hash_search(channel_index, &channel, HASH_FIND, NULL);

		if (entry == NULL)
			return;
		dlist_foreach(iter, &entry->subs)
		{
			PlankSub   *sub = dlist_container(PlankSub, index_node, iter.cur);

			plank_conn_wake(sub->conn, ev->seq);
		}
	}
}

typedef struct ReplayState
{
	PlankSub   *sub;
	uint64		open_xid;		/* transaction whose commit marker is due */
	uint64		since_seq;		/* the client has every event up to this one */
	uint64		since_xid;		/* the transaction of the event at since.seq */
	uint64		first_seq;		/* its first change that the ring holds */
	bool		seen;			/* a change of it up to since.seq matched sub */
} ReplayState;

/*
 * Would sub have received ev (a change of its table it wants) live, its
 * filters aside from row-level security?  A filter that cannot be evaluated
 * counts as no match: the subscription was told to resync then.
 */
static bool
replay_matched(PlankSub *sub, PlankEvent *ev)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool match = false;

	PG_TRY();
	{
		match = plank_filter_match(sub, ev, false);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		match = false;
	}
	PG_END_TRY();
	ev->parsed = NULL;
	return match;
}

/*
 * A walker over the events at and before since.seq, newest first: the
 * changes of the transaction of the event at since.seq, which stays open for
 * the client when it is not the transaction's last change; seen: whether
 * the subscription received one of them before it reconnected.
 */
static bool
replay_seen_one(PlankEvent *ev, void *arg)
{
	ReplayState *rs = (ReplayState *) arg;
	PlankSub   *sub = rs->sub;

	if (rs->since_xid == 0)
	{
		/* the event at since.seq: only a transaction it leaves open matters */
		if (ev->seq != rs->since_seq || !ev->is_change || ev->tx_last)
			return false;
		rs->since_xid = ev->xid;
	}
	else if (!ev->is_change)
		return true;			/* a NOTIFY of the transaction itself */
	else if (ev->xid != rs->since_xid)
		return false;			/* a transaction's changes are contiguous */
	rs->first_seq = ev->seq;
	if (!rs->seen && sub_targets(sub, ev) && !sub->rls &&
		dlist_is_empty(&sub->rls_queue) && replay_matched(sub, ev))
		rs->seen = true;
	return true;
}

/*
 * A walker from the first change of that transaction to since.seq, for a
 * subscription under row-level security: it queues the changes it wants as
 * already seen, in order; their checks decide whether the client received
 * any, and so whether the commit marker is due.
 */
static bool
replay_seen_rls(PlankEvent *ev, void *arg)
{
	ReplayState *rs = (ReplayState *) arg;

	if (ev->seq > rs->since_seq)
		return false;
	if (ev->is_change && ev->xid == rs->since_xid && sub_targets(rs->sub, ev))
		plank_visibility_enqueue_seen(rs->sub, ev);
	ev->parsed = NULL;
	return true;
}

static bool
replay_one(PlankEvent *ev, void *arg)
{
	ReplayState *rs = (ReplayState *) arg;
	PlankSub   *sub = rs->sub;

	if (!sub->is_channel && (sub->rls || !dlist_is_empty(&sub->rls_queue)))
	{
		/* as plank_subs_dispatch() does for it */
		if (sub_targets(sub, ev))
			plank_visibility_enqueue(sub, ev);
		else if (ev->is_change && ev->tx_last && sub->rls_tx_xid == ev->xid)
			plank_visibility_enqueue_commit(sub, ev);
		ev->parsed = NULL;
		return !sub->conn->closing;
	}
	if (sub_targets(sub, ev))
	{
		PlankFrame *frame = ev->frame;

		if (ev->is_change)
			frame = sub_frame(sub, ev);
		if (frame)
		{
			plank_conn_send(sub->conn, frame, sub);
			if (ev->is_change)
				rs->open_xid = ev->tx_last ? 0 : ev->xid;
		}
		if (ev->is_change)
			plank_visibility_event_done();
	}
	if (ev->is_change && ev->tx_last && rs->open_xid == ev->xid && rs->open_xid != 0)
	{
		PlankFrame *frame = plank_commit_frame(ev);

		plank_conn_send(sub->conn, frame, sub);
		plank_frame_unref(frame);
		rs->open_xid = 0;
	}
	/* row images parsed for filters are not kept in the ring */
	ev->parsed = NULL;
	return !sub->conn->closing;
}

/*
 * plank_subs_replay
 *		Send a subscription, linked into its index entry, every event after
 *		after_seq that the replay ring holds and that it matches, with commit
 *		markers, exactly as they were sent live.  The caller has checked with
 *		plank_replay_covers() (and plank_subs_channel_covers()) that nothing is
 *		missing.
 *
 *		The client has every event up to after_seq.  When the event at
 *		after_seq is a change that is not the last of its transaction and
 *		the subscription received a change of that transaction, the client
 *		has not seen the transaction's end: its commit marker is sent after
 *		the transaction's last change, as live (docs/PROTOCOL.md, "resume
 *		after a reconnect").
 */
void
plank_subs_replay(PlankSub *sub, uint64 after_seq)
{
	ReplayState rs;

	rs.sub = sub;
	rs.open_xid = 0;
	rs.since_seq = after_seq;
	rs.since_xid = 0;
	rs.seen = false;
	rs.first_seq = 0;
	if (!sub->is_channel)
		plank_replay_walk_back(after_seq, replay_seen_one, &rs);
	if (rs.since_xid != 0 && (sub->rls || !dlist_is_empty(&sub->rls_queue)))
		plank_replay_walk(rs.first_seq - 1, replay_seen_rls, &rs);
	if (rs.seen)
		rs.open_xid = rs.since_xid;
	plank_replay_walk(after_seq, replay_one, &rs);
	if (rs.open_xid != 0 && sub->open_xid == 0 && !sub->conn->closing)
	{
		/* the transaction's last change is still to come: live delivery closes it */
		dlist_push_tail(&open_subs, &sub->open_node);
		sub->open_xid = rs.open_xid;
	}
	/* the replay sent everything up to now */
	sub->from_seq = plank_seq;
	plank_visibility_batch_done();
}

/* Begin a read of the log: keep the parse cache's memory bounded. */
static void
pull_begin(void)
{
	if (MemoryContextMemAllocated(parse_cxt[parse_gen], false) > PARSE_GEN_MAX)
	{
		parse_gen = 1 - parse_gen;
		MemoryContextReset(parse_cxt[parse_gen]);
		for (int i = 0; i < PARSE_CACHE; i++)
			if (parse_cache[i].gen == parse_gen)
				parse_cache[i].seq = 0;
	}
}

/*
 * One event of the log for one subscription that reads it (pull_one): its
 * message, if it wants it.  Commit markers come after every subscription's
 * message for the event, as live (plank_subs_dispatch).
 */
static void
pull_event(PlankSub *sub, PlankEvent *ev)
{
	PlankFrame *frame;

	if (!sub_targets(sub, ev))
		return;
	frame = ev->is_change ? sub_frame(sub, ev) : ev->frame;
	if (frame == NULL)
		return;
	plank_conn_send_event(sub->conn, frame, sub, ev->received_at);
	if (ev->is_change)
		sub_tx_sent(sub, ev);
}

typedef struct PullState
{
	PlankConn  *conn;
	int			max_msgs;		/* < 0: no limit */
	size_t		max_bytes;
	bool		full;			/* it stopped at a limit */
} PullState;

/* A walker over the log after a connection's cursor (plank_subs_pull). */
static bool
pull_one(PlankEvent *ev, void *arg)
{
	PullState  *ps = (PullState *) arg;
	PlankConn  *conn = ps->conn;
	ParsedEntry *pe = &parse_cache[ev->seq % PARSE_CACHE];
	dlist_iter	iter;

	if (ps->max_msgs >= 0 &&
		(conn->q_len >= ps->max_msgs || conn->q_bytes >= ps->max_bytes))
	{
		ps->full = true;
		return false;
	}
	if (pe->seq == ev->seq)
		ev->parsed = pe->parsed;
	dlist_foreach(iter, &conn->subs)
	{
		PlankSub   *sub = dlist_container(PlankSub, conn_node, iter.cur);

		/* a subscription waiting for its snapshot is in no index yet */
		if (sub->entry == NULL || !sub_pulls(sub) || ev->seq <= sub->from_seq)
			continue;
		pull_event(sub, ev);
		if (conn->closing)
			break;
	}
	if (ev->is_change && ev->tx_last && !conn->closing)
	{
		dlist_foreach(iter, &conn->subs)
		{
			PlankSub   *sub = dlist_container(PlankSub, conn_node, iter.cur);

			if (sub->entry != NULL && sub_pulls(sub) && ev->seq > sub->from_seq &&
				sub->open_xid == ev->xid && sub->open_xid != 0)
				sub_tx_commit(sub, ev, NULL);
		}
	}
	if (ev->parsed != NULL && pe->seq != ev->seq)
	{
		/* parsed now, in the current generation: it takes the entry's place */
		pe->seq = ev->seq;
		pe->gen = parse_gen;
		pe->parsed = ev->parsed;
	}
	ev->parsed = NULL;			/* the ring's events keep no parse */
	conn->cursor = ev->seq;
	return !conn->closing;
}

/*
 * plank_subs_pull
 *		The filler of a writable connection that has events to read from the
 *		log (server.c, "The log and its cursors"): queue the messages its
 *		log-reading subscriptions get from the events after its cursor, in
 *		order, with their commit markers, until max_msgs messages or
 *		max_bytes are queued (no limit when max_msgs < 0).  Returns whether
 *		events remain.  A connection whose cursor has left the ring missed
 *		events: each of those subscriptions is sent resync_required
 *		(out_of_range) and goes on from the newest event.
 */
bool
plank_subs_pull(PlankConn *conn, int max_msgs, size_t max_bytes)
{
	PullState	ps;
	MemoryContext old;

	if (!conn->want_pull || conn->closing)
		return false;
	if (!plank_replay_covers(conn->cursor))
	{
		dlist_iter	iter;

		conn->cursor = plank_seq;
		conn->want_pull = false;
		dlist_foreach(iter, &conn->subs)
		{
			PlankSub   *sub = dlist_container(PlankSub, conn_node, iter.cur);

			if (sub->entry == NULL || !sub_pulls(sub))
				continue;
			if (sub->open_xid != 0)
			{
				dlist_delete(&sub->open_node);
				sub->open_xid = 0;
			}
			sub->from_seq = plank_seq;
			plank_conn_resync(sub, "out_of_range");
		}
		return false;
	}

	pull_begin();
	ps.conn = conn;
	ps.max_msgs = max_msgs;
	ps.max_bytes = max_bytes;
	ps.full = false;
	old = MemoryContextSwitchTo(parse_cxt[parse_gen]);
	plank_replay_walk(conn->cursor, pull_one, &ps);
	MemoryContextSwitchTo(old);
	if (!ps.full && !conn->closing)
	{
		/* every event up to now: the newest may not be in the ring (not valid) */
		conn->cursor = plank_seq;
		conn->want_pull = false;
	}
	return conn->want_pull;
}

/*
 * plank_subs_pull_now
 *		Queue everything the log-reading subscriptions of conn still have to
 *		get, with no limit: before one of them stops reading the log (its
 *		role's columns or row-level security changed, recheck.c).
 */
void
plank_subs_pull_now(PlankConn *conn)
{
	plank_subs_pull(conn, -1, 0);
}

/*
 * plank_subs_tables
 *		The table subscriptions on the table relid (InvalidOid: on every
 *		table), as a List allocated in the current memory context; NIL when
 *		there are none.  The list is a copy: the caller may remove the
 *		subscriptions it holds while it walks it.
 */
List *
plank_subs_tables(Oid relid)
{
	HASH_SEQ_STATUS status;
	TableEntry *entry;
	List	   *out = NIL;

	hash_seq_init(&status, table_index);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		dlist_iter	iter;

		dlist_foreach(iter, &entry->subs)
		{
			PlankSub   *sub = dlist_container(PlankSub, index_node, iter.cur);

			if (!OidIsValid(relid) || sub->relid == relid)
				out = lappend(out, sub);
		}
	}
	return out;
}

/*
 * plank_subs_resync_tables
 *		Changes of an unknown table were lost (a stored batch that could not
 *		be read): every table subscription is counted as having missed a
 *		change and told to resync with the reason given.
 */
void
plank_subs_resync_tables(const char *reason)
{
	List	   *subs = plank_subs_tables(InvalidOid);
	ListCell   *lc;

	foreach(lc, subs)
	{
		plank_stats_count(PLANK_STAT_UNDELIVERABLE, 1);
		plank_conn_resync((PlankSub *) lfirst(lc), reason);
	}
	list_free(subs);
}

/* plank_subs_any_table: is there at least one table subscription? */
bool
plank_subs_any_table(void)
{
	return hash_get_num_entries(table_index) > 0;
}
