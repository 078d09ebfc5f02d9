/*-------------------------------------------------------------------------
 *
 * ring.c
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

#include "utils/memutils.h"

#include "plank.h"

static PlankEvent *ring = NULL;
static int	ring_cap = 0;
static int	ring_head = 0;		/* index of the oldest event */
static int	ring_len = 0;
static size_t ring_bytes = 0;

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
 * plank_ring_push
 *		Append an event (taking a reference to its frame), evicting the oldest
 *		events while the ring holds more than plank.replay_buffer kB.
 */
void
plank_ring_push(const PlankEvent *ev)
{
	size_t		limit = (size_t) plank_replay_buffer * 1024;

	if (ring_len == ring_cap)
	{
		int			newcap = ring_cap ? ring_cap * 2 : 1024;
		PlankEvent *newring = MemoryContextAllocHuge(TopMemoryContext,
													 (Size) newcap * sizeof(PlankEvent));
		int			i;

		for (i = 0; i < ring_len; i++)
			newring[i] = ring[(ring_head + i) % ring_cap];
		if (ring)
			pfree(ring);
		ring = newring;
		ring_cap = newcap;
		ring_head = 0;
	}

	ring[(ring_head + ring_len) % ring_cap] = *ev;
	ring[(ring_head + ring_len) % ring_cap].parsed = NULL;
	ev->frame->refcount++;
	ring_len++;
	ring_bytes += event_cost(ev);

	while (ring_len > 0 && ring_bytes > limit)
		evict_oldest();
	plank_stats_ring(ring_bytes, ring_len);
}

/*
 * plank_ring_start_after
 *		The ring starts empty at sequence number seq: nothing up to seq can be
 *		replayed (a worker that joined the others at seq, plank.workers > 1).
 */
void
plank_ring_start_after(uint64 seq)
{
	evicted_upto = seq;
}

/*
 * plank_ring_covers
 *		Are all the events after sequence number after_seq still in the ring
 *		(and is after_seq not in the future)?
 */
bool
plank_ring_covers(uint64 after_seq)
{
	return after_seq >= evicted_upto && after_seq <= plank_seq;
}

/*
 * plank_ring_walk
 *		Call fn for each event with a sequence number above after_seq, oldest
 *		first, until it returns false.
 */
void
plank_ring_walk(uint64 after_seq, plank_ring_walker fn, void *arg)
{
	int			i;

	for (i = 0; i < ring_len; i++)
	{
		PlankEvent *ev = &ring[(ring_head + i) % ring_cap];

		if (ev->seq <= after_seq)
			continue;
		if (!fn(ev, arg))
			break;
	}
}

/*
 * plank_ring_walk_back
 *		Call fn for each event with a sequence number at or below upto_seq,
 *		newest first, until it returns false.  The events are found by binary
 *		search: sequence numbers increase along the ring.
 */
void
plank_ring_walk_back(uint64 upto_seq, plank_ring_walker fn, void *arg)
{
	int			lo = 0;
	int			hi = ring_len;

	/* lo: the number of events with a sequence number at or below upto_seq */
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (ring[(ring_head + mid) % ring_cap].seq <= upto_seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	while (lo > 0)
	{
		PlankEvent *ev = &ring[(ring_head + lo - 1) % ring_cap];

		if (!fn(ev, arg))
			break;
		lo--;
	}
}
