/*-------------------------------------------------------------------------
 *
 * replay.c
 *		The replay ring: the most recent events, bounded by
 *		plank.replay_buffer, from which a reconnecting client is sent what it
 *		missed (docs/PROTOCOL.md, "resume after a reconnect").
 *
 * The ring holds a reference to each event's shared frame, so keeping an
 * event costs its routing information plus nothing more than the message
 * that was already built for live delivery.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"
#include "utils/memutils.h"

#include "runtime.h"
#include "event.h"
#include "stats.h"

/* settings (GUCs), defined in plank_replay_define_settings() */
static int	plank_replay_buffer = 40960;

static PlankEvent *ring = NULL;
static int	ring_cap = 0;
static int	ring_head = 0;		/* index of the oldest event */
static int	ring_len = 0;
static size_t ring_bytes = 0;

/*
 * Bytes of every frame ever pushed, and for each event in the ring the
 * total up to and including it: what a client that has every event up to
 * a sequence number still has to be sent is their difference
 * (plank_replay_bytes_after).
 */
static uint64 pushed_bytes = 0;
static uint64 *ring_ends = NULL;

/* the largest sequence number that has left the ring (0: none has) */
static uint64 evicted_upto = 0;

static size_t
event_cost(const PlankEvent *ev)
{
	return sizeof(PlankEvent) + ev->frame->len;
}

static void
evict_oldest(void)
{
	PlankEvent *old = &ring[ring_head];

	evicted_upto = old->seq;
	ring_bytes -= event_cost(old);
	plank_frame_unref(old->frame);
	ring_head = (ring_head + 1) % ring_cap;
	ring_len--;
}

/*
 * plank_replay_push
 *		Append an event (taking a reference to its frame), evicting the oldest
 *		events while the ring holds more than plank.replay_buffer kB (all but
 *		the newest one).
 */
void
plank_replay_push(const PlankEvent *ev)
{
	size_t		limit = (size_t) plank_replay_buffer * 1024;

	if (ring_len == ring_cap)
	{
		int			newcap = ring_cap ? ring_cap * 2 : 1024;
		PlankEvent *newring = MemoryContextAllocHuge(TopMemoryContext,
													 (Size) newcap * sizeof(PlankEvent));
		uint64	   *newends = MemoryContextAllocHuge(TopMemoryContext,
													 (Size) newcap * sizeof(uint64));
		int			i;

		for (i = 0; i < ring_len; i++)
		{
			newring[i] = ring[(ring_head + i) % ring_cap];
			newends[i] = ring_ends[(ring_head + i) % ring_cap];
		}
		if (ring)
		{
			pfree(ring);
			pfree(ring_ends);
		}
		ring = newring;
		ring_ends = newends;
		ring_cap = newcap;
		ring_head = 0;
	}

	ring[(ring_head + ring_len) % ring_cap] = *ev;
	ring[(ring_head + ring_len) % ring_cap].parsed = NULL;
	pushed_bytes += ev->frame->len;
	ring_ends[(ring_head + ring_len) % ring_cap] = pushed_bytes;
	ev->frame->refcount++;
	ring_len++;
	ring_bytes += event_cost(ev);

	/* the newest event stays, however large: its clients have still to read it */
	while (ring_len > 1 && ring_bytes > limit)
		evict_oldest();
	plank_stats_ring(ring_bytes, ring_len);
}

/*
 * plank_replay_start_after
 *		The ring starts empty at sequence number seq: nothing up to seq can be
 *		replayed (a worker that joined the others at seq, plank.workers > 1).
 */
void
plank_replay_start_after(uint64 seq)
{
	evicted_upto = seq;
}

/*
 * plank_replay_covers
 *		Are all the events after sequence number after_seq still in the ring
 *		(and is after_seq not in the future)?
 */
bool
plank_replay_covers(uint64 after_seq)
{
	return after_seq >= evicted_upto && after_seq <= plank_seq;
}

/* The number of events in the ring with a sequence number at or below seq. */
static int
count_upto(uint64 seq)
{
	int			lo = 0;
	int			hi = ring_len;

	/* sequence numbers increase along the ring */
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (ring[(ring_head + mid) % ring_cap].seq <= seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * plank_replay_walk
 *		Call fn for each event with a sequence number above after_seq, oldest
 *		first, until it returns false.  fn must not push to the ring.
 */
void
plank_replay_walk(uint64 after_seq, plank_replay_walker fn, void *arg)
{
	int			i;

	for (i = count_upto(after_seq); i < ring_len; i++)
	{
		if (!fn(&ring[(ring_head + i) % ring_cap], arg))
			break;
	}
}

/*
 * plank_replay_bytes_after
 *		The bytes of the frames of the events in the ring with a sequence
 *		number above seq (a connection's backlog in the log, server.c).
 */
uint64
plank_replay_bytes_after(uint64 seq)
{
	int			n = count_upto(seq);

	if (n == 0)
		return ring_len > 0 ? pushed_bytes - ring_ends[ring_head] + ring[ring_head].frame->len : 0;
	return pushed_bytes - ring_ends[(ring_head + n - 1) % ring_cap];
}

/*
 * plank_replay_walk_back
 *		Call fn for each event with a sequence number at or below upto_seq,
 *		newest first, until it returns false.  The events are found by binary
 *		search: sequence numbers increase along the ring.
 */
void
plank_replay_walk_back(uint64 upto_seq, plank_replay_walker fn, void *arg)
{
	int			lo = count_upto(upto_seq);

	while (lo > 0)
	{
		PlankEvent *ev = &ring[(ring_head + lo - 1) % ring_cap];

		if (!fn(ev, arg))
			break;
		lo--;
	}
}

/* Settings (GUCs) read by this file; documented in README.md "Settings" */

/*
 * plank_replay_define_settings
 *		Defines the plank.* settings of the replay ring of recent events.
 *		Called once from _PG_init, in the postmaster, before the plank
 *		prefix is reserved (MarkGUCPrefixReserved).  Raises no error.
 *		PostgreSQL docs: "Customized Options".
 */
void
plank_replay_define_settings(void)
{
	DefineCustomIntVariable("plank.replay_buffer",
							"Sets how much memory the replay ring of recent events may use.",
							"A client that reconnects with \"since\" is sent the events it missed while they are still in the ring; older ones make it resync.",
							&plank_replay_buffer,
							40960, 0, MAX_KILOBYTES,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);
}
