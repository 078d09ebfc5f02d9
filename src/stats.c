/*-------------------------------------------------------------------------
 *
 * stats.c
 *		What an operator can see of the worker, and steer: shared memory that
 *		the worker keeps current (counters, one slot per connection and per
 *		subscription), the SQL functions behind the views plank.stats,
 *		plank.connections and plank.subscriptions, plank.disconnect(), and the
 *		bodies of GET /health and GET /metrics (Prometheus text format 0.0.4).
 *
 * The worker is the only writer.  Slots carry a change counter, as
 * PostgreSQL's own backend status slots do: a reader copies a slot and
 * retries while the counter is odd or moved, so it never sees a half
 * written row.  Counters are atomics.
 *
 * Sources followed: PostgreSQL docs "Shared Memory and LWLocks" (add-in
 * shared memory, shmem_request_hook), "Returning Sets" (SRFs); Prometheus
 * "Exposition formats".
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "runtime.h"
#include "jsonspan.h"
#include "stats.h"
#include "filter.h"

#define SLOT_TEXT 128
#define SLOT_CLAIMS 512
#define MAX_DISCONNECTS 64
#define MAX_BANS 128

typedef struct ConnSlot
{
	uint32		changecount;
	uint64		id;				/* 0: free */
	char		addr[64];
	char		role[NAMEDATALEN];
	char		sub[SLOT_TEXT]; /* the token's "sub" (cut); "" none */
	bool		has_sub;
	char		claims[SLOT_CLAIMS];	/* the token's claims; "" none, or longer */
	uint64		ban_key;		/* hash of ban_what, what bans match */
	char		ban_what[SLOT_TEXT];	/* the same, readable */
	TimestampTz connected_at;
	int32		nsubs;
	uint64		messages_sent;
	uint64		bytes_sent;
	int32		queue_depth;
	uint64		queue_bytes;
	TimestampTz last_activity;
} ConnSlot;

typedef struct SubSlot
{
	uint32		changecount;
	uint64		conn_id;		/* 0: free */
	char		id[65];
	bool		is_channel;
	char		target[2 * NAMEDATALEN + 2];
	int32		ops;
	char		filter[SLOT_TEXT];
} SubSlot;

/*
 * A ban of plank.disconnect(id, ban): connections whose identity has this
 * key are refused until then.  Kept in the section of the database's first
 * worker, where every worker of the database looks.
 */
typedef struct PlankBan
{
	uint64		key;			/* 0: free */
	TimestampTz until;
	char		what[SLOT_TEXT];	/* "sub ...", "role ..." or "address ..." */
} PlankBan;

typedef struct PlankShared
{
	slock_t		mutex;			/* protects worker_pid, epoch, disconnects, bans */
	pid_t		worker_pid;
	TimestampTz started;
	char		epoch[32];
	pg_atomic_uint64 seq;
	pg_atomic_uint64 notifications;
	pg_atomic_uint64 messages;
	pg_atomic_uint64 bytes;
	pg_atomic_uint64 connections_total;
	pg_atomic_uint64 dropped_slow;
	pg_atomic_uint64 resyncs;
	pg_atomic_uint64 protocol_errors;
	pg_atomic_uint64 auth_failures;
	pg_atomic_uint64 undeliverable;	/* changes a subscription could not get exactly */
	pg_atomic_uint64 rate_limited;	/* clients closed for plank.rate_limit */
	pg_atomic_uint64 rls_check_failures;	/* RLS check requests that failed */
	pg_atomic_uint64 ring_bytes;
	pg_atomic_uint64 ring_events;
	pg_atomic_uint32 connections;
	pg_atomic_uint32 subscriptions;
	int			ndisconnect;
	uint64		disconnect[MAX_DISCONNECTS];
	PlankBan	bans[MAX_BANS];	/* used in a database's first section only */
	int			nconn_slots;
	int			nsub_slots;

	/*
	 * Slots below these marks have been used since the server started; the
	 * ones above were never touched.  A worker clears and readers scan only
	 * the used ones, so that a worker does not map every page of its slots
	 * (about 8 MB for 10,000) into its memory at start.
	 */
	pg_atomic_uint32 conn_slots_used;
	pg_atomic_uint32 sub_slots_used;

	/*
	 * Logical replication (a database's first section): the last apply
	 * transaction that sent tracked changes, its origin's commit end LSN and
	 * commit time, and when it was applied here.  Written by the apply
	 * worker under mutex; 0 until then.
	 */
	XLogRecPtr	origin_lsn;
	TimestampTz origin_committed;
	TimestampTz origin_applied;
	/* ConnSlot[nconn_slots] then SubSlot[nsub_slots] follow */
} PlankShared;


/* one section per worker (per database of plank.database) */
static char *shmem_base = NULL;
static int	nsections = 0;
static int	slots_at_start = 0;
static int	conn_slot_hint = 0;		/* worker: where to look for a free slot */
static int	sub_slot_hint = 0;

/* the section in use: the worker's own, or the current database's */
static PlankShared *shared = NULL;
static ConnSlot *conn_slots = NULL;
static SubSlot *sub_slots = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* commit-to-send is not known; the histogram is of receive-to-send, in ms */
static const double latency_buckets[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000};
static uint64 latency_counts[lengthof(latency_buckets) + 1];
static double latency_sum_ms = 0;
static uint64 latency_count = 0;

/*
 * Row-level security checks of the answering worker: time from handing a
 * batch to a check worker to reading its verdicts, in ms.
 */
static const double rls_buckets[] = {0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};
static uint64 rls_counts[lengthof(rls_buckets) + 1];
static double rls_sum_ms = 0;
static uint64 rls_count = 0;

/*
 * Changes per table seen by this worker since it started (every worker of
 * a database sees every change).  At most MAX_TABLE_COUNTS tables are
 * counted by name; the changes of others are counted together.
 */
#define MAX_TABLE_COUNTS 1000
typedef struct TableCount
{
	NameData	schema;			/* hash key: schema and table */
	NameData	table;
	uint64		changes;
} TableCount;
static HTAB *table_counts = NULL;
static uint64 other_table_changes = 0;

static Size
section_size(void)
{
	return MAXALIGN(add_size(sizeof(PlankShared),
							 add_size(mul_size(slots_at_start, sizeof(ConnSlot)),
									  mul_size(slots_at_start, sizeof(SubSlot)))));
}

static Size
shared_size(void)
{
	return mul_size(nsections, section_size());
}

static void
attach_section(int i)
{
	shared = (PlankShared *) (shmem_base + i * section_size());
	conn_slots = (ConnSlot *) (shared + 1);
	sub_slots = (SubSlot *) (conn_slots + shared->nconn_slots);
}

/*
 * plank.workers > 1: a database has one section per worker, from
 * db_first_section on.  The totals of a database add them up; attach_nth()
 * moves to the database's worker k (0: the one that LISTENs).
 */
static int	db_first_section = 0;

static void
attach_nth(int k)
{
	attach_section(db_first_section + k);
}

/* a counter of the database: the sum over its workers' sections */
static uint64
db_u64(size_t offset)
{
	uint64		n = 0;

	for (int k = 0; k < plank_workers; k++)
	{
		PlankShared *s = (PlankShared *) (shmem_base + (db_first_section + k) * section_size());

		n += pg_atomic_read_u64((pg_atomic_uint64 *) ((char *) s + offset));
	}
	return n;
}

static uint32
db_u32(size_t offset)
{
	uint32		n = 0;

	for (int k = 0; k < plank_workers; k++)
	{
		PlankShared *s = (PlankShared *) (shmem_base + (db_first_section + k) * section_size());

		n += pg_atomic_read_u32((pg_atomic_uint32 *) ((char *) s + offset));
	}
	return n;
}

#define db_connections() db_u32(offsetof(PlankShared, connections))
#define db_subscriptions() db_u32(offsetof(PlankShared, subscriptions))



static void
stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shared_size());
}

static void
stats_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shmem_base = ShmemInitStruct("plank", shared_size(), &found);
	for (int i = 0; i < nsections && !found; i++)
	{
		shared = (PlankShared *) (shmem_base + i * section_size());
		memset(shared, 0, section_size());
		SpinLockInit(&shared->mutex);
		pg_atomic_init_u64(&shared->seq, 0);
		pg_atomic_init_u64(&shared->notifications, 0);
		pg_atomic_init_u64(&shared->messages, 0);
		pg_atomic_init_u64(&shared->bytes, 0);
		pg_atomic_init_u64(&shared->connections_total, 0);
		pg_atomic_init_u64(&shared->dropped_slow, 0);
		pg_atomic_init_u64(&shared->resyncs, 0);
		pg_atomic_init_u64(&shared->protocol_errors, 0);
		pg_atomic_init_u64(&shared->auth_failures, 0);
		pg_atomic_init_u64(&shared->undeliverable, 0);
		pg_atomic_init_u64(&shared->rate_limited, 0);
		pg_atomic_init_u64(&shared->rls_check_failures, 0);
		pg_atomic_init_u64(&shared->ring_bytes, 0);
		pg_atomic_init_u64(&shared->ring_events, 0);
		pg_atomic_init_u32(&shared->connections, 0);
		pg_atomic_init_u32(&shared->subscriptions, 0);
		shared->nconn_slots = slots_at_start;
		shared->nsub_slots = slots_at_start;
		pg_atomic_init_u32(&shared->conn_slots_used, 0);
		pg_atomic_init_u32(&shared->sub_slots_used, 0);
	}
	LWLockRelease(AddinShmemInitLock);
	shared = NULL;
}

/*
 * plank_stats_init
 *		Called from _PG_init (in the postmaster): reserve shared memory for
 *		the counters of each of nworkers workers and for as many connection
 *		and subscription slots as conn_slots (plank.max_connections plus
 *		plank.max_unauthenticated at server start: the sockets a worker may
 *		hold), at most 10000 each.
 */
void
plank_stats_init(int nworkers, int conn_slots)
{
	nsections = nworkers * plank_workers;
	slots_at_start = Min(conn_slots, 10000);
	plank_install_shmem_request_hook(&prev_shmem_request_hook, stats_shmem_request);
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

/* ---------- worker side ---------- */

/*
 * Copy a string into a slot of size bytes, cut on a character boundary of
 * the database encoding (pg_mbcliplen), so that readers can always turn it
 * into text.
 */
static void
clip_copy(char *dst, const char *src, int size)
{
	int			len = pg_mbcliplen(src, strlen(src), size - 1);

	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* The section of the current database's first worker, which holds its bans. */
static PlankShared *
first_section(void)
{
	return (PlankShared *) (shmem_base + db_first_section * section_size());
}

#define SLOT_BEGIN(slot) do { (slot)->changecount++; pg_write_barrier(); } while (0)
#define SLOT_END(slot) do { pg_write_barrier(); (slot)->changecount++; } while (0)

/* plank_stats_worker_started: the worker's PID and epoch, counters from 0. */
void
plank_stats_worker_started(void)
{
	int			i;
	int			nused;

	db_first_section = plank_worker_index * plank_workers;
	attach_section(db_first_section + plank_worker_number);
	SpinLockAcquire(&shared->mutex);
	shared->worker_pid = MyProcPid;
	shared->started = GetCurrentTimestamp();
	strlcpy(shared->epoch, plank_epoch, sizeof(shared->epoch));
	shared->ndisconnect = 0;
	SpinLockRelease(&shared->mutex);
	pg_atomic_write_u64(&shared->seq, 0);
	pg_atomic_write_u32(&shared->connections, 0);
	pg_atomic_write_u32(&shared->subscriptions, 0);
	/* a previous worker's connections are gone */
	nused = (int) pg_atomic_read_u32(&shared->conn_slots_used);
	for (i = 0; i < nused; i++)
		conn_slots[i].id = 0;
	nused = (int) pg_atomic_read_u32(&shared->sub_slots_used);
	for (i = 0; i < nused; i++)
		sub_slots[i].conn_id = 0;
}

void
plank_stats_count(PlankCounter counter, uint64 n)
{
	pg_atomic_uint64 *c;

	switch (counter)
	{
		case PLANK_STAT_NOTIFICATIONS:
			c = &shared->notifications;
			break;
		case PLANK_STAT_DROPPED_SLOW:
			c = &shared->dropped_slow;
			break;
		case PLANK_STAT_RESYNCS:
			c = &shared->resyncs;
			break;
		case PLANK_STAT_PROTOCOL_ERRORS:
			c = &shared->protocol_errors;
			break;
		case PLANK_STAT_AUTH_FAILURES:
			c = &shared->auth_failures;
			break;
		case PLANK_STAT_UNDELIVERABLE:
			c = &shared->undeliverable;
			break;
		case PLANK_STAT_RATE_LIMITED:
			c = &shared->rate_limited;
			break;
		default:
			return;
	}
	pg_atomic_fetch_add_u64(c, n);
}

void
plank_stats_seq(uint64 seq)
{
	pg_atomic_write_u64(&shared->seq, seq);
}

void
plank_stats_ring(uint64 bytes, uint64 events)
{
	pg_atomic_write_u64(&shared->ring_bytes, bytes);
	pg_atomic_write_u64(&shared->ring_events, events);
}

/* plank_stats_conn_opened: a slot for a new connection (-1 when none is free). */
void
plank_stats_conn_opened(PlankConn *conn)
{
	int			i;

	pg_atomic_fetch_add_u64(&shared->connections_total, 1);
	pg_atomic_fetch_add_u32(&shared->connections, 1);
	conn->slot = -1;
	/* from where the last search stopped: opening N connections stays linear */
	for (int k = 0; k < shared->nconn_slots; k++)
	{
		ConnSlot   *s;

		i = (conn_slot_hint + k) % shared->nconn_slots;
		s = &conn_slots[i];
		if (s->id != 0)
			continue;
		conn_slot_hint = i + 1;
		if (i >= (int) pg_atomic_read_u32(&shared->conn_slots_used))
			pg_atomic_write_u32(&shared->conn_slots_used, i + 1);
		SLOT_BEGIN(s);
		s->id = conn->id;
		strlcpy(s->addr, conn->peer, sizeof(s->addr));
		s->role[0] = '\0';
		s->sub[0] = '\0';
		s->has_sub = false;
		s->claims[0] = '\0';
		s->ban_key = 0;
		s->ban_what[0] = '\0';
		s->connected_at = GetCurrentTimestamp();
		s->nsubs = 0;
		s->messages_sent = 0;
		s->bytes_sent = 0;
		s->queue_depth = 0;
		s->queue_bytes = 0;
		s->last_activity = s->connected_at;
		SLOT_END(s);
		conn->slot = i;
		return;
	}
}

/* plank_stats_conn_updated: role, subscriptions and queue of a connection. */
void
plank_stats_conn_updated(PlankConn *conn)
{
	ConnSlot   *s;

	if (conn->slot < 0)
		return;
	s = &conn_slots[conn->slot];
	SLOT_BEGIN(s);
	strlcpy(s->role, conn->ident.role ? conn->ident.role : "", sizeof(s->role));
	s->nsubs = conn->nsubs;
	s->queue_depth = conn->q_len;
	s->queue_bytes = conn->q_bytes;
	SLOT_END(s);
}

/*
 * plank_stats_conn_identified
 *		A connection was opened or got a new identity: show its token's sub
 *		and claims in plank.connections, and say whether a ban of
 *		plank.disconnect() covers it (true, with *banned_until its end).  The
 *		identity a ban applies to is the token's sub; without one, the role
 *		the token names; for a client without a token, its address.
 */
bool
plank_stats_conn_identified(PlankConn *conn, TimestampTz *banned_until)
{
	char	   *sub = NULL;
	StringInfoData what;
	uint64		key;
	PlankShared *first = first_section();
	TimestampTz now = GetCurrentTimestamp();
	bool		banned = false;

	if (conn->ident.from_token && conn->ident.claims != NULL)
		sub = plank_json_text_string(conn->ident.claims, "sub");
	initStringInfo(&what);
	if (sub != NULL)
		appendStringInfo(&what, "sub %s", sub);
	else if (conn->ident.from_token)
		appendStringInfo(&what, "role %s", conn->ident.role);
	else
		appendStringInfo(&what, "address %s", conn->peer);
	key = hash_bytes_extended((const unsigned char *) what.data, what.len, 0);
	if (key == 0)
		key = 1;				/* 0 marks a free ban */

	if (conn->slot >= 0)
	{
		ConnSlot   *s = &conn_slots[conn->slot];

		SLOT_BEGIN(s);
		clip_copy(s->sub, sub ? sub : "", sizeof(s->sub));
		s->has_sub = sub != NULL;
		if (conn->ident.from_token && strlen(conn->ident.claims) < sizeof(s->claims))
			strlcpy(s->claims, conn->ident.claims, sizeof(s->claims));
		else
			s->claims[0] = '\0';
		s->ban_key = key;
		clip_copy(s->ban_what, what.data, sizeof(s->ban_what));
		SLOT_END(s);
	}

	SpinLockAcquire(&first->mutex);
	for (int i = 0; i < MAX_BANS; i++)
		if (first->bans[i].key == key && first->bans[i].until > now)
		{
			banned = true;
			*banned_until = first->bans[i].until;
			break;
		}
	SpinLockRelease(&first->mutex);

	pfree(what.data);
	if (sub)
		pfree(sub);
	return banned;
}

/* plank_stats_conn_activity: a message arrived from the client. */
void
plank_stats_conn_activity(PlankConn *conn)
{
	if (conn->slot >= 0)
		conn_slots[conn->slot].last_activity = GetCurrentTimestamp();
}

/*
 * plank_stats_sent: a message of len bytes went to a client, queued_at
 * microseconds after the worker received its event.
 */
void
plank_stats_sent(PlankConn *conn, int len, TimestampTz queued_at, TimestampTz now)
{
	double		ms = (double) (now - queued_at) / 1000.0;
	int			b;

	pg_atomic_fetch_add_u64(&shared->messages, 1);
	pg_atomic_fetch_add_u64(&shared->bytes, len);
	if (conn->slot >= 0)
	{
		ConnSlot   *s = &conn_slots[conn->slot];

		SLOT_BEGIN(s);
		s->messages_sent++;
		s->bytes_sent += len;
		s->queue_depth = conn->q_len;
		s->queue_bytes = conn->q_bytes;
		SLOT_END(s);
	}
	for (b = 0; b < lengthof(latency_buckets) && ms > latency_buckets[b]; b++)
		;
	latency_counts[b]++;
	latency_sum_ms += ms;
	latency_count++;
}

void
plank_stats_conn_closed(PlankConn *conn)
{
	pg_atomic_fetch_sub_u32(&shared->connections, 1);
	if (conn->slot >= 0)
	{
		ConnSlot   *s = &conn_slots[conn->slot];

		SLOT_BEGIN(s);
		s->id = 0;
		SLOT_END(s);
	}
}

/* plank_stats_sub_added: a slot describing a subscription. */
void
plank_stats_sub_added(PlankSub *sub, const char *target)
{
	int			i;

	pg_atomic_fetch_add_u32(&shared->subscriptions, 1);
	sub->slot = -1;
	for (int k = 0; k < shared->nsub_slots; k++)
	{
		SubSlot    *s;
		StringInfoData f;
		int			j;

		i = (sub_slot_hint + k) % shared->nsub_slots;
		s = &sub_slots[i];
		if (s->conn_id != 0)
			continue;
		sub_slot_hint = i + 1;
		if (i >= (int) pg_atomic_read_u32(&shared->sub_slots_used))
			pg_atomic_write_u32(&shared->sub_slots_used, i + 1);
		initStringInfo(&f);
		for (j = 0; j < sub->nfilters; j++)
		{
			if (j > 0)
				appendStringInfoString(&f, " AND ");
			plank_filter_describe(&f, &sub->filters[j]);
		}
		SLOT_BEGIN(s);
		s->conn_id = sub->conn->id;
		strlcpy(s->id, sub->id, sizeof(s->id));
		s->is_channel = sub->is_channel;
		strlcpy(s->target, target, sizeof(s->target));
		s->ops = sub->ops;
		clip_copy(s->filter, f.data, sizeof(s->filter));
		SLOT_END(s);
		pfree(f.data);
		sub->slot = i;
		break;
	}
	plank_stats_conn_updated(sub->conn);
}

void
plank_stats_sub_removed(PlankSub *sub)
{
	pg_atomic_fetch_sub_u32(&shared->subscriptions, 1);
	if (sub->slot >= 0)
	{
		SubSlot    *s = &sub_slots[sub->slot];

		SLOT_BEGIN(s);
		s->conn_id = 0;
		SLOT_END(s);
	}
	plank_stats_conn_updated(sub->conn);
}

/*
 * plank_stats_take_disconnects
 *		Move the pending plank.disconnect() requests into ids (at most
 *		MAX_DISCONNECTS); returns how many.
 */
int
plank_stats_take_disconnects(uint64 *ids, int max)
{
	int			n;

	SpinLockAcquire(&shared->mutex);
	n = Min(shared->ndisconnect, max);
	memcpy(ids, shared->disconnect, n * sizeof(uint64));
	shared->ndisconnect = 0;
	SpinLockRelease(&shared->mutex);
	return n;
}

/* ---------- readers ---------- */

static void
read_conn_slot(int i, ConnSlot *out)
{
	int			tries;

	for (tries = 0; tries < 1000; tries++)
	{
		uint32		before = conn_slots[i].changecount;

		pg_read_barrier();
		memcpy(out, &conn_slots[i], sizeof(ConnSlot));
		pg_read_barrier();
		if (before == conn_slots[i].changecount && (before & 1) == 0)
			return;
	}
	out->id = 0;				/* kept changing: skip it */
}

static void
read_sub_slot(int i, SubSlot *out)
{
	int			tries;

	for (tries = 0; tries < 1000; tries++)
	{
		uint32		before = sub_slots[i].changecount;

		pg_read_barrier();
		memcpy(out, &sub_slots[i], sizeof(SubSlot));
		pg_read_barrier();
		if (before == sub_slots[i].changecount && (before & 1) == 0)
			return;
	}
	out->conn_id = 0;
}

/*
 * In a backend: use the section of the worker serving the current database.
 * False when plank.database does not list it.
 */
static bool
attach_current_database(void)
{
	char	   *dbname = get_database_name(MyDatabaseId);
	ListCell   *lc;

	foreach(lc, plank_database_list())
		if (dbname && strcmp((const char *) lfirst(lc), dbname) == 0 &&
			foreach_current_index(lc) * plank_workers < nsections)
		{
			db_first_section = foreach_current_index(lc) * plank_workers;
			attach_nth(0);
			return true;
		}
	return false;
}

static bool
worker_running(void)
{
	pid_t		pid;

	if (!attach_current_database())
		return false;
	SpinLockAcquire(&shared->mutex);
	pid = shared->worker_pid;
	SpinLockRelease(&shared->mutex);
	return pid != 0 && kill(pid, 0) == 0;
}

static double
queue_usage(void)
{
	return DatumGetFloat8(DirectFunctionCall1(pg_notification_queue_usage, (Datum) 0));
}

/* ---------- logical replication ---------- */

/*
 * plank_stats_origin_commit
 *		Called in a logical replication worker just before an apply
 *		transaction that sent tracked changes commits (capture.c): lsn is the
 *		origin's commit end LSN, committed its commit time (0: unknown).
 *		Noted in the first section of the database, when a worker serves it.
 *		Raises nothing of its own (it runs inside that transaction, which the
 *		database name lookup needs).
 */
void
plank_stats_origin_commit(XLogRecPtr lsn, TimestampTz committed)
{
	TimestampTz now = GetCurrentTimestamp();
	PlankShared *first;

	if (!attach_current_database())
		return;
	first = first_section();
	SpinLockAcquire(&first->mutex);
	first->origin_lsn = lsn;
	first->origin_committed = committed;
	first->origin_applied = now;
	SpinLockRelease(&first->mutex);
}

/*
 * What a node knows of the logical replication that feeds it: the
 * subscriptions of its database, and the last apply transaction that sent
 * tracked changes (plank_stats_origin_commit).
 */
typedef struct ReplicationState
{
	int			nsubs;
	int			syncing;		/* tables not yet ready, over all subscriptions */
	int			down;			/* subscriptions disabled, or without an apply worker */
	XLogRecPtr	origin_lsn;		/* 0: no replicated change sent yet */
	TimestampTz origin_committed;
	TimestampTz origin_applied;
} ReplicationState;

/*
 * The subscriptions of the current database: enabled, whether its apply
 * worker runs, and how many of its tables are not yet synchronised
 * (pg_subscription_rel.srsubstate other than 'r', ready).  Readable by any
 * role (PostgreSQL grants SELECT on these columns to PUBLIC).
 */
static const char *const subscriptions_sql =
"SELECT s.subenabled, st.pid IS NOT NULL, "
"       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_subscription_rel r "
"         WHERE r.srsubid OPERATOR(pg_catalog.=) s.oid "
"           AND r.srsubstate OPERATOR(pg_catalog.<>) 'r') "
"  FROM pg_catalog.pg_subscription s "
"  LEFT JOIN pg_catalog.pg_stat_subscription st "
"    ON st.subid OPERATOR(pg_catalog.=) s.oid AND st.relid IS NULL "
" WHERE s.subdbid OPERATOR(pg_catalog.=) "
"       (SELECT d.oid FROM pg_catalog.pg_database d "
"         WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())";

/*
 * replication_read
 *		Fill rs: the subscriptions through SPI (the caller is in a transaction
 *		with an active snapshot), the origin position from the database's
 *		first section (the caller attached the database's sections).
 */
static void
replication_read(ReplicationState *rs)
{
	PlankShared *first = first_section();

	memset(rs, 0, sizeof(*rs));
	SPI_connect();
	if (SPI_execute(subscriptions_sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_subscription");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bool		enabled = DatumGetBool(SPI_getbinval(tup, desc, 1, &isnull));
		bool		running = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));

		rs->nsubs++;
		rs->syncing += (int) DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		if (!enabled || !running)
			rs->down++;
	}
	SPI_finish();

	SpinLockAcquire(&first->mutex);
	rs->origin_lsn = first->origin_lsn;
	rs->origin_committed = first->origin_committed;
	rs->origin_applied = first->origin_applied;
	SpinLockRelease(&first->mutex);
}

/*
 * The state of the subscriptions as one word: "none" (the database has no
 * subscription), "syncing" (a table's initial synchronisation is not
 * finished), "down" (a subscription is disabled or its apply worker is not
 * running), else "streaming".
 */
static const char *
replication_state_name(const ReplicationState *rs)
{
	if (rs->nsubs == 0)
		return "none";
	if (rs->syncing > 0)
		return "syncing";
	if (rs->down > 0)
		return "down";
	return "streaming";
}

/*
 * Lag of the last replicated transaction that sent changes, in seconds: its
 * apply time here minus its commit time on the origin (clock skew between
 * the hosts adds to it).  Negative when none was seen.
 */
static double
replication_lag(const ReplicationState *rs)
{
	if (rs->origin_lsn == InvalidXLogRecPtr || rs->origin_committed == 0)
		return -1;
	return (double) (rs->origin_applied - rs->origin_committed) / USECS_PER_SEC;
}

PG_FUNCTION_INFO_V1(plank_stats_sql);

/*
 * plank_stats_sql
 *		plank.stats(): one row of the counters and gauges of the worker that
 *		serves the current database (see the view plank.stats and its
 *		COMMENT); NULLs when none does.  Raises nothing.
 */
Datum
plank_stats_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[22];
	bool		nulls[22];
	ReplicationState rs;
	pid_t		pid;
	TimestampTz started;
	char		epoch[32];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	memset(nulls, 0, sizeof(nulls));

	if (!attach_current_database())
	{
		/* no worker serves this database: a row of NULLs */
		memset(nulls, true, sizeof(nulls));
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
	}
	SpinLockAcquire(&shared->mutex);
	pid = shared->worker_pid;
	started = shared->started;
	strlcpy(epoch, shared->epoch, sizeof(epoch));
	SpinLockRelease(&shared->mutex);

	if (!worker_running())
	{
		nulls[0] = nulls[1] = nulls[2] = true;
	}
	values[0] = Int32GetDatum(pid);
	values[1] = CStringGetTextDatum(epoch);
	values[2] = TimestampTzGetDatum(started);
	/* worker 0's sequence number; the database's totals over its workers */
	values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&shared->seq));
	values[4] = Int32GetDatum((int32) db_connections());
	values[5] = Int32GetDatum((int32) db_subscriptions());
	values[6] = Int64GetDatum((int64) db_u64(offsetof(PlankShared, connections_total)));
	/* every worker receives each event: worker 0's count */
	values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&shared->notifications));
	values[8] = Int64GetDatum((int64) db_u64(offsetof(PlankShared, messages)));
	values[9] = Int64GetDatum((int64) db_u64(offsetof(PlankShared, bytes)));
	values[10] = Int64GetDatum((int64) db_u64(offsetof(PlankShared, dropped_slow)));
	values[11] = Int64GetDatum((int64) db_u64(offsetof(PlankShared, resyncs)));
	values[12] = Int64GetDatum((int64) db_u64(offsetof(PlankShared, protocol_errors)));
	values[13] = Int64GetDatum((int64) db_u64(offsetof(PlankShared, auth_failures)));
	values[14] = Int64GetDatum((int64) pg_atomic_read_u64(&shared->ring_events));
	values[15] = Int64GetDatum((int64) pg_atomic_read_u64(&shared->ring_bytes));
	values[16] = Float8GetDatum(queue_usage());

	/* logical replication (see replication_read) */
	replication_read(&rs);
	values[17] = CStringGetTextDatum(replication_state_name(&rs));
	values[18] = Int32GetDatum(rs.syncing);
	if (rs.origin_lsn != InvalidXLogRecPtr)
	{
		values[19] = LSNGetDatum(rs.origin_lsn);
		values[20] = TimestampTzGetDatum(rs.origin_committed);
		values[21] = Float8GetDatum(replication_lag(&rs));
	}
	else
		nulls[19] = nulls[20] = nulls[21] = true;

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

static const char *
ops_text(int ops)
{
	static char buf[64];

	buf[0] = '\0';
	if (ops & PLANK_OP_INSERT)
		strcat(buf, "INSERT,");
	if (ops & PLANK_OP_UPDATE)
		strcat(buf, "UPDATE,");
	if (ops & PLANK_OP_DELETE)
		strcat(buf, "DELETE,");
	if (ops & PLANK_OP_TRUNCATE)
		strcat(buf, "TRUNCATE,");
	if (buf[0])
		buf[strlen(buf) - 1] = '\0';
	return buf;
}

/*
 * The rows of plank.connections for the attached section (one worker); the
 * claims only when with_claims (a superuser asks).
 */
static void
put_connection_rows(ReturnSetInfo *rsinfo, bool with_claims)
{
	int			used = (int) pg_atomic_read_u32(&shared->conn_slots_used);

	for (int i = 0; i < used; i++)
	{
		ConnSlot	s;
		Datum		values[12];
		bool		nulls[12];

		read_conn_slot(i, &s);
		if (s.id == 0)
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = Int64GetDatum((int64) s.id);
		values[1] = CStringGetTextDatum(s.addr);
		values[2] = CStringGetTextDatum(s.role);
		nulls[2] = s.role[0] == '\0';
		values[3] = CStringGetTextDatum(s.sub);
		nulls[3] = !s.has_sub;
		nulls[4] = !with_claims || s.claims[0] == '\0';
		if (!nulls[4])
			values[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum(s.claims));
		values[5] = TimestampTzGetDatum(s.connected_at);
		values[6] = Int32GetDatum(s.nsubs);
		values[7] = Int64GetDatum((int64) s.messages_sent);
		values[8] = Int64GetDatum((int64) s.bytes_sent);
		values[9] = Int32GetDatum(s.queue_depth);
		values[10] = Int64GetDatum((int64) s.queue_bytes);
		values[11] = TimestampTzGetDatum(s.last_activity);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

PG_FUNCTION_INFO_V1(plank_connections_sql);

/*
 * plank_connections_sql
 *		plank.connections(): one row per connected client of every worker of
 *		the current database (at most the slots reserved at server start).
 *		The claims column is NULL unless the caller is a superuser.  Raises
 *		nothing.
 */
Datum
plank_connections_sql(PG_FUNCTION_ARGS)
{
	bool		with_claims = superuser();

	InitMaterializedSRF(fcinfo, 0);
	if (!worker_running())
		return (Datum) 0;
	for (int k = 0; k < plank_workers; k++)
	{
		attach_nth(k);
		put_connection_rows((ReturnSetInfo *) fcinfo->resultinfo, with_claims);
	}
	return (Datum) 0;
}

/* the rows of plank.subscriptions for the attached section (one worker) */
static void
put_subscription_rows(ReturnSetInfo *rsinfo)
{
	int			used = (int) pg_atomic_read_u32(&shared->sub_slots_used);

	for (int i = 0; i < used; i++)
	{
		SubSlot		s;
		Datum		values[6];
		bool		nulls[6];

		read_sub_slot(i, &s);
		if (s.conn_id == 0)
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = Int64GetDatum((int64) s.conn_id);
		values[1] = CStringGetTextDatum(s.id);
		values[2] = CStringGetTextDatum(s.is_channel ? "channel" : "table");
		values[3] = CStringGetTextDatum(s.target);
		values[4] = CStringGetTextDatum(ops_text(s.ops));
		nulls[4] = s.is_channel;
		values[5] = CStringGetTextDatum(s.filter);
		nulls[5] = s.filter[0] == '\0';
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

PG_FUNCTION_INFO_V1(plank_subscriptions_sql);

/*
 * plank_subscriptions_sql
 *		plank.subscriptions(): one row per subscription of every worker of
 *		the current database (at most the slots reserved at server start).
 *		Raises nothing.
 */
Datum
plank_subscriptions_sql(PG_FUNCTION_ARGS)
{
	InitMaterializedSRF(fcinfo, 0);
	if (!worker_running())
		return (Datum) 0;
	for (int k = 0; k < plank_workers; k++)
	{
		attach_nth(k);
		put_subscription_rows((ReturnSetInfo *) fcinfo->resultinfo);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(plank_disconnect_sql);

/*
 * Record a ban of key until then in the database's first section; an
 * existing ban of the same identity is replaced.  Raises 53400 when
 * MAX_BANS bans are in force.
 */
static void
add_ban(uint64 key, const char *what, TimestampTz until)
{
	PlankShared *first = first_section();
	TimestampTz now = GetCurrentTimestamp();
	int			free_slot = -1;
	int			i;

	SpinLockAcquire(&first->mutex);
	for (i = 0; i < MAX_BANS; i++)
	{
		if (first->bans[i].key == key)
			break;
		if (free_slot < 0 && (first->bans[i].key == 0 || first->bans[i].until <= now))
			free_slot = i;
	}
	if (i == MAX_BANS)
		i = free_slot;
	if (i < 0)
	{
		SpinLockRelease(&first->mutex);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many plank bans are in force"),
				 errdetail("At most %d identities can be banned at a time.", MAX_BANS),
				 errhint("Disconnect without a ban, or wait until a ban ends.")));
	}
	first->bans[i].key = key;
	first->bans[i].until = until;
	strlcpy(first->bans[i].what, what, sizeof(first->bans[i].what));
	SpinLockRelease(&first->mutex);
}

/*
 * plank_disconnect_sql
 *		plank.disconnect(id bigint, ban interval DEFAULT NULL) returns
 *		boolean: asks the worker to close a client with close code 4003 (which
 *		the bundled client takes as final); false when no such connection is
 *		listed, NULL when id is NULL.  With a ban, new connections of the same
 *		identity (the token's sub; without one, the token's role; without a
 *		token, the client's address) are closed with 4004 until the ban ends,
 *		by every worker of the database, until the server restarts.  Raises
 *		22023 (invalid_parameter_value) for a ban that is not positive, 53400
 *		(configuration_limit_exceeded) when too many requests are pending or
 *		too many bans are in force, 55000 when the worker is not running.
 */
Datum
plank_disconnect_sql(PG_FUNCTION_ARGS)
{
	uint64		id;
	bool		found = false;
	ConnSlot	s;
	pid_t		pid;
	int			i;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	id = (uint64) PG_GETARG_INT64(0);
	if (!worker_running())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the plank worker is not running")));
	/* ids tell their worker: (id - 1) % plank.workers */
	if (id > 0)
		attach_nth((int) ((id - 1) % plank_workers));
	for (i = 0; i < (int) pg_atomic_read_u32(&shared->conn_slots_used) && !found; i++)
	{
		read_conn_slot(i, &s);
		found = s.id == id;
	}
	if (!found)
		PG_RETURN_BOOL(false);

	if (!PG_ARGISNULL(1))
	{
		Interval   *ban = PG_GETARG_INTERVAL_P(1);
		double		usecs;
		TimestampTz until;

		/* a month counts 30 days, as justify_days() and interval comparison do */
		usecs = (double) ban->time +
			((double) ban->day + (double) ban->month * DAYS_PER_MONTH) * USECS_PER_DAY;
		if (usecs <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a ban must be a positive interval")));
		until = GetCurrentTimestamp() + (TimestampTz) Min(usecs, (double) (PG_INT64_MAX / 4));
		if (s.ban_key != 0)
		{
			add_ban(s.ban_key, s.ban_what, until);
			ereport(plank_log_level,
					(errmsg("plank banned %s until %s", s.ban_what, timestamptz_to_str(until))));
		}
	}

	SpinLockAcquire(&shared->mutex);
	if (shared->ndisconnect >= MAX_DISCONNECTS)
	{
		SpinLockRelease(&shared->mutex);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many plank disconnect requests are pending"),
				 errhint("Try again in a moment.")));
	}
	shared->disconnect[shared->ndisconnect++] = id;
	pid = shared->worker_pid;
	SpinLockRelease(&shared->mutex);
	/* wakes the worker's loop (its SIGUSR1 handler writes its self-pipe) */
	kill(pid, SIGUSR1);
	PG_RETURN_BOOL(true);
}

/* ---------- HTTP bodies ---------- */

/*
 * Can the worker run a query?  For /health; also reads the replication
 * state (rs) in the same transaction.
 */
static bool
database_reachable(ReplicationState *rs)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = false;

	memset(rs, 0, sizeof(*rs));
	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_connect();
		ok = SPI_execute("SELECT 1", true, 1) == SPI_OK_SELECT;
		SPI_finish();
		replication_read(rs);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		AbortCurrentTransaction();
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return ok;
}

/*
 * plank_stats_health
 *		The JSON body of GET /health: worker state, whether the database
 *		answers a query, connections, NOTIFY queue usage, the answering
 *		worker's check workers running and jobs waiting for one, and the
 *		logical replication that feeds the database ("replication": the
 *		subscriptions' state, the last origin commit sent to clients, its
 *		LSN, lag and age).  *ok is false when the database does not answer,
 *		or when a subscription is synchronising or down (the server then
 *		replies 503, so that a load balancer sends no client to a node
 *		whose data is incomplete or stale).  checkers and queued: the check
 *		workers running and the jobs waiting (plank_check_status()).
 */
void
plank_stats_health(StringInfo buf, bool *ok, int checkers, int queued)
{
	ReplicationState rs;
	const char *state;
	bool		reachable;
	TimestampTz now = GetCurrentTimestamp();

	reachable = database_reachable(&rs);
	state = replication_state_name(&rs);
	*ok = reachable && (rs.nsubs == 0 || strcmp(state, "streaming") == 0);
	appendStringInfo(buf,
					 "{\"status\":\"%s\",\"worker_pid\":%d,\"database\":",
					 !reachable ? "degraded" : *ok ? "ok" : state, MyProcPid);
	escape_json(buf, plank_worker_database);
	appendStringInfo(buf,
					 ",\"database_reachable\":%s,\"epoch\":\"%s\",\"seq\":" UINT64_FORMAT
					 ",\"connections\":%u,\"subscriptions\":%u,\"notify_queue_usage\":%g"
					 ",\"check_workers\":%d,\"checks_queued\":%d"
					 ",\"uptime_seconds\":%.0f",
					 reachable ? "true" : "false", plank_epoch, plank_seq,
					 db_connections(), db_subscriptions(),
					 queue_usage(), checkers, queued,
					 (double) (GetCurrentTimestamp() - shared->started) / USECS_PER_SEC);
	appendStringInfo(buf,
					 ",\"replication\":{\"state\":\"%s\",\"subscriptions\":%d"
					 ",\"tables_syncing\":%d",
					 state, rs.nsubs, rs.syncing);
	if (rs.origin_lsn != InvalidXLogRecPtr)
	{
		appendStringInfo(buf, ",\"origin_lsn\":\"%X/%X\",\"origin_commit_time\":",
						 LSN_FORMAT_ARGS(rs.origin_lsn));
		escape_json(buf, timestamptz_to_str(rs.origin_committed));
		appendStringInfo(buf, ",\"lag_seconds\":%.6f,\"last_origin_commit_age_seconds\":%.6f",
						 replication_lag(&rs),
						 (double) (now - rs.origin_committed) / USECS_PER_SEC);
	}
	appendStringInfoString(buf, "}}\n");
}

/*
 * plank_stats_rls_check
 *		A batch of row-level security checks came back from a check worker
 *		after usec microseconds (from handing it over to reading the reply);
 *		ok false: it failed (an error in a policy, plank.check_timeout).
 *		Feeds plank_rls_check_seconds (this worker's) and
 *		plank_rls_check_failures_total (the database's).
 */
void
plank_stats_rls_check(int64 usec, bool ok)
{
	double		ms = (double) usec / 1000.0;
	int			b;

	for (b = 0; b < lengthof(rls_buckets) && ms > rls_buckets[b]; b++)
		;
	rls_counts[b]++;
	rls_sum_ms += ms;
	rls_count++;
	if (!ok)
		pg_atomic_fetch_add_u64(&shared->rls_check_failures, 1);
}

/*
 * plank_stats_change
 *		Count a table change the worker received, for plank_changes_total
 *		(per table, since this worker started).  Never raises an error past
 *		out of memory.
 */
void
plank_stats_change(const PlankEvent *ev)
{
	TableCount	key;
	TableCount *tc;
	bool		found;

	if (table_counts == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = 2 * sizeof(NameData);
		ctl.entrysize = sizeof(TableCount);
		ctl.hcxt = TopMemoryContext;
		table_counts = hash_create("plank changes per table", 64, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	namestrcpy(&key.schema, ev->schema);
	namestrcpy(&key.table, ev->table);
	tc = hash_search(table_counts, &key, HASH_FIND, NULL);
	if (tc == NULL)
	{
		if (hash_get_num_entries(table_counts) >= MAX_TABLE_COUNTS)
		{
			other_table_changes++;
			return;
		}
		tc = hash_search(table_counts, &key, HASH_ENTER, &found);
		tc->changes = 0;
	}
	tc->changes++;
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void
append_label(StringInfo buf, const char *value)
{
	for (const char *p = value; *p; p++)
	{
		if (*p == '\\' || *p == '"')
			appendStringInfoChar(buf, '\\');
		if (*p == '\n')
			appendStringInfoString(buf, "\\n");
		else
			appendStringInfoChar(buf, *p);
	}
}

static void
metric(StringInfo buf, const char *name, const char *type, const char *help, double value)
{
	appendStringInfo(buf, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, value);
}

/*
 * A histogram in seconds from nbuckets upper bounds in ms (bounds_ms), the
 * counts per bucket (counts, nbuckets + 1 of them: the last is above every
 * bound), their sum in ms and their number (Prometheus "histogram").
 */
static void
histogram(StringInfo buf, const char *name, const char *help, const double *bounds_ms,
		  int nbuckets, const uint64 *counts, double sum_ms, uint64 count)
{
	uint64		cumulative = 0;

	appendStringInfo(buf, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (int b = 0; b < nbuckets; b++)
	{
		cumulative += counts[b];
		appendStringInfo(buf, "%s_bucket{le=\"%g\"} " UINT64_FORMAT "\n",
						 name, bounds_ms[b] / 1000.0, cumulative);
	}
	cumulative += counts[nbuckets];
	appendStringInfo(buf, "%s_bucket{le=\"+Inf\"} " UINT64_FORMAT "\n", name, cumulative);
	appendStringInfo(buf, "%s_sum %.9g\n", name, sum_ms / 1000.0);
	appendStringInfo(buf, "%s_count " UINT64_FORMAT "\n", name, count);
}

/*
 * plank_stats_metrics
 *		The body of GET /metrics, Prometheus text exposition format 0.0.4.
 */
void
plank_stats_metrics(StringInfo buf)
{
	ReplicationState rs;

	metric(buf, "plank_notifications_received_total", "counter",
		   "Notifications the worker received (table changes and channel notifications).",
		   (double) pg_atomic_read_u64(&shared->notifications));
	metric(buf, "plank_messages_sent_total", "counter",
		   "WebSocket messages written to clients.", (double) db_u64(offsetof(PlankShared, messages)));
	metric(buf, "plank_bytes_sent_total", "counter",
		   "Payload bytes of the WebSocket messages written to clients.",
		   (double) db_u64(offsetof(PlankShared, bytes)));
	metric(buf, "plank_connections_total", "counter",
		   "WebSocket connections accepted.", (double) db_u64(offsetof(PlankShared, connections_total)));
	metric(buf, "plank_clients_dropped_slow_total", "counter",
		   "Clients closed with 1013 because their backlog exceeded plank.max_client_buffer.",
		   (double) db_u64(offsetof(PlankShared, dropped_slow)));
	metric(buf, "plank_resyncs_total", "counter",
		   "resync_required messages sent.", (double) db_u64(offsetof(PlankShared, resyncs)));
	metric(buf, "plank_protocol_errors_total", "counter",
		   "Requests answered with an error.", (double) db_u64(offsetof(PlankShared, protocol_errors)));
	metric(buf, "plank_auth_failures_total", "counter",
		   "Tokens refused.", (double) db_u64(offsetof(PlankShared, auth_failures)));
	metric(buf, "plank_undeliverable_changes_total", "counter",
		   "Changes a subscription could not be sent exactly (it was sent resync_required instead).",
		   (double) db_u64(offsetof(PlankShared, undeliverable)));
	metric(buf, "plank_clients_rate_limited_total", "counter",
		   "Clients closed with 1008 because they sent messages faster than plank.rate_limit.",
		   (double) db_u64(offsetof(PlankShared, rate_limited)));
	metric(buf, "plank_rls_check_failures_total", "counter",
		   "Row-level security check requests that failed (an error in a policy, plank.check_timeout); their changes were retried alone, then hidden.",
		   (double) db_u64(offsetof(PlankShared, rls_check_failures)));
	metric(buf, "plank_connections", "gauge",
		   "Connected WebSocket clients.", (double) db_connections());
	metric(buf, "plank_subscriptions", "gauge",
		   "Live subscriptions.", (double) db_subscriptions());
	metric(buf, "plank_replay_ring_events", "gauge",
		   "Events held in the replay ring.", (double) pg_atomic_read_u64(&shared->ring_events));
	metric(buf, "plank_replay_ring_bytes", "gauge",
		   "Memory used by the replay ring.", (double) pg_atomic_read_u64(&shared->ring_bytes));
	metric(buf, "plank_last_seq", "gauge",
		   "The last sequence number assigned in this epoch.", (double) plank_seq);
	metric(buf, "plank_notify_queue_usage", "gauge",
		   "Fraction of the NOTIFY queue in use (pg_notification_queue_usage()).", queue_usage());
	metric(buf, "plank_uptime_seconds", "gauge",
		   "Seconds since the worker started.",
		   (double) (GetCurrentTimestamp() - shared->started) / USECS_PER_SEC);

	/* logical replication: read in a transaction of its own */
	if (database_reachable(&rs))
	{
		metric(buf, "plank_replication_subscriptions", "gauge",
			   "Logical replication subscriptions of the database.", (double) rs.nsubs);
		metric(buf, "plank_replication_tables_syncing", "gauge",
			   "Tables of the subscriptions whose initial synchronisation is not finished.",
			   (double) rs.syncing);
		metric(buf, "plank_replication_subscriptions_down", "gauge",
			   "Subscriptions disabled or without a running apply worker.", (double) rs.down);
	}
	if (rs.origin_lsn != InvalidXLogRecPtr)
	{
		metric(buf, "plank_replication_lag_seconds", "gauge",
			   "Apply time here minus origin commit time of the last replicated transaction sent to clients.",
			   replication_lag(&rs));
		metric(buf, "plank_replication_last_origin_commit_timestamp_seconds", "gauge",
			   "Origin commit time (Unix seconds) of the last replicated transaction sent to clients.",
			   (double) (rs.origin_committed - SetEpochTimestamp()) / USECS_PER_SEC);
		metric(buf, "plank_replication_origin_lsn", "gauge",
			   "Origin commit end LSN (bytes) of the last replicated transaction sent to clients.",
			   (double) rs.origin_lsn);
	}

	histogram(buf, "plank_send_latency_seconds",
			  "Time from the worker receiving an event to writing it to a client.",
			  latency_buckets, lengthof(latency_buckets), latency_counts,
			  latency_sum_ms, latency_count);
	histogram(buf, "plank_rls_check_seconds",
			  "Time from handing a batch of row-level security checks to a check worker to reading its verdicts (this worker).",
			  rls_buckets, lengthof(rls_buckets), rls_counts, rls_sum_ms, rls_count);

	appendStringInfoString(buf,
						   "# HELP plank_changes_total Table changes received since this worker started, per table (at most 1000 tables; the others under table=\"\").\n"
						   "# TYPE plank_changes_total counter\n");
	if (table_counts != NULL)
	{
		HASH_SEQ_STATUS hs;
		TableCount *tc;

		hash_seq_init(&hs, table_counts);
		while ((tc = hash_seq_search(&hs)) != NULL)
		{
			appendStringInfoString(buf, "plank_changes_total{schema=\"");
			append_label(buf, NameStr(tc->schema));
			appendStringInfoString(buf, "\",table=\"");
			append_label(buf, NameStr(tc->table));
			appendStringInfo(buf, "\"} " UINT64_FORMAT "\n", tc->changes);
		}
	}
	if (other_table_changes > 0)
		appendStringInfo(buf, "plank_changes_total{schema=\"\",table=\"\"} " UINT64_FORMAT "\n",
						 other_table_changes);
}
