/*-------------------------------------------------------------------------
 *
 * relay.c
 *		Several workers per database (plank.workers): the shared-memory queue
 *		through which worker 0 passes every event to the others, and the
 *		registry of the channels their clients subscribe to.
 *
 * All the workers of a database listen on the same port (SO_REUSEPORT, so
 * the kernel spreads new connections over them) and serve their own
 * clients.  Only worker 0 LISTENs: it receives the notifications, resolves
 * oversized payloads, numbers the events, serves them to its own clients and
 * appends each one to this queue: a byte ring in shared memory with one
 * writer (worker 0) and a read position per other worker.  The others
 * (the consumers) read every event from it, in order, with the sequence
 * number worker 0 gave it, and handle it exactly as worker 0 did, so seq and
 * epoch are the same on every worker and a client may resume on any of them.
 *
 * Flow control: worker 0 never overwrites what a running consumer has not
 * read.  When the ring is full it waits on its latch until the slowest
 * consumer has read on (consumers never block on clients: slow clients are
 * buffered and dropped per plank.max_client_buffer).  An event longer than a
 * quarter of the ring is written in pieces, which the consumer reassembles.
 * A consumer that exits (or crashes) stops counting at once.
 *
 * Wake-ups: consumers sleep in libwebsockets' poll(), so worker 0 wakes them
 * with SIGUSR2, whose handler writes the consumer's self-pipe, once per batch
 * of events; consumers wake worker 0 (waiting for room, or for a channel
 * LISTEN) through its latch.
 *
 * Channels: a consumer whose client subscribes to a channel sets its bit in
 * the channel's registry entry and waits until worker 0 has LISTENed and
 * committed; the subscription is acknowledged only then, so a NOTIFY
 * committed after the acknowledgement always reaches it.  Worker 0 UNLISTENs
 * a channel when no worker wants it any more.
 *
 * When worker 0 restarts, the sequence numbers restart with a new epoch: the
 * consumers see the queue's generation change and restart too (their
 * clients get 1001 and resume with resync_required "epoch_changed").
 *
 * Sources followed: PostgreSQL docs "Shared Memory and LWLocks" (xfunc-c),
 * src/backend/storage/ipc/shm_mq.c (a ring with one writer, latches for
 * wake-ups), src/backend/commands/async.c (LISTEN takes effect at commit).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "runtime.h"
#include "event.h"

/* settings (GUCs), defined in plank_relay_define_settings() */
static int	plank_shared_queue_size = 16384;

/* channels all the workers of one database may LISTEN on at once */
#define QUEUE_CHANNELS 1024

#define QE_PAD			0x01	/* filler up to the end of the ring */
#define QE_FIRST		0x02	/* the first piece of an event */
#define QE_LAST			0x04	/* its last piece */
#define QE_CHANGE		0x08	/* a table change (else a channel notification) */
#define QE_TX_LAST		0x10	/* the last change of its transaction */

/* one piece of an event in the ring; the channel (first piece) and data follow */
typedef struct QueueEntry
{
	uint32		total;			/* bytes taken in the ring, header included */
	uint16		flags;			/* QE_* */
	uint16		chanlen;		/* first piece: bytes of channel name */
	uint64		seq;
	int32		pid;
	uint32		len;			/* bytes of payload in this piece */
} QueueEntry;

typedef struct QueueWorker
{
	pg_atomic_uint64 pos;		/* consumer: ring bytes read */
	bool		attached;		/* counts for flow control */
	pid_t		pid;
	int			procno;			/* for its latch */
} QueueWorker;

typedef struct QueueChannel
{
	NameData	channel;
	uint64		want;			/* bit k: worker k has subscribers (or keeps it) */
	bool		listening;		/* worker 0's LISTEN has committed */
	uint64		listen_seq;		/* worker 0's last seq when it did */
} QueueChannel;

typedef struct PlankQueue
{
	slock_t		mutex;			/* generation .. in_progress */
	uint64		generation;		/* bumped by each start of worker 0 */
	char		epoch[32];
	pid_t		reader_pid;
	int			reader_procno;
	uint64		last_seq;		/* of the last event written whole */
	bool		in_progress;	/* an event's pieces are being written */
	pg_atomic_uint64 head;		/* ring bytes written */
	pg_atomic_uint32 reader_waiting;	/* worker 0 waits for room or a consumer */
	LWLock	   *lock;			/* the channel registry */
	bool		listens_dirty;	/* the registry wants worker 0's attention */
	QueueWorker workers[PLANK_MAX_WORKERS];
	QueueChannel channels[QUEUE_CHANNELS];
	Size		size;			/* of data */
	char		data[FLEXIBLE_ARRAY_MEMBER];
} PlankQueue;

static int	ndatabases = 0;
static char *queue_base = NULL;
static PlankQueue *queue = NULL;	/* this worker's database's */
static uint64 my_generation = 0;
static StringInfoData assembly;		/* consumer: the event being reassembled */
static bool assembling = false;
static QueueEntry assembly_head;
static char assembly_channel[NAMEDATALEN];
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
ring_size(void)
{
	return (Size) plank_shared_queue_size * 1024;
}

static Size
queue_size(void)
{
	return MAXALIGN(add_size(offsetof(PlankQueue, data), ring_size()));
}

static void
queue_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(mul_size(ndatabases, queue_size()));
	RequestNamedLWLockTranche("plank queue", ndatabases);
}

static void
queue_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	queue_base = ShmemInitStruct("plank queue", mul_size(ndatabases, queue_size()), &found);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche("plank queue");

		for (int i = 0; i < ndatabases; i++)
		{
			PlankQueue *q = (PlankQueue *) (queue_base + i * queue_size());

			memset(q, 0, offsetof(PlankQueue, data));
			SpinLockInit(&q->mutex);
			pg_atomic_init_u64(&q->head, 0);
			pg_atomic_init_u32(&q->reader_waiting, 0);
			for (int k = 0; k < PLANK_MAX_WORKERS; k++)
				pg_atomic_init_u64(&q->workers[k].pos, 0);
			q->lock = &locks[i].lock;
			q->size = ring_size();
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * plank_relay_init
 *		Called from _PG_init (in the postmaster): with plank.workers above 1,
 *		reserve a queue of plank.shared_queue_size kB and a channel registry
 *		per database of plank.database.
 */
void
plank_relay_init(int ndbs)
{
	if (plank_workers <= 1)
		return;
	ndatabases = ndbs;
	plank_install_shmem_request_hook(&prev_shmem_request_hook, queue_shmem_request);
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = queue_shmem_startup;
}

static void
set_latch_of(int procno)
{
	SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

static void
wake_reader(void)
{
	pid_t		pid;

	SpinLockAcquire(&queue->mutex);
	pid = queue->reader_pid;
	SpinLockRelease(&queue->mutex);
	/* its SIGUSR2 handler writes its self-pipe; its latch is set for waits */
	if (pid != 0)
	{
		set_latch_of(queue->reader_procno);
		kill(pid, SIGUSR2);
	}
}

/* a consumer leaves: it no longer holds the ring back nor wants channels */
static void
consumer_detach(int code, Datum arg)
{
	uint64		bit = UINT64CONST(1) << plank_worker_number;
	bool		dirty = false;

	SpinLockAcquire(&queue->mutex);
	queue->workers[plank_worker_number].attached = false;
	queue->workers[plank_worker_number].pid = 0;
	SpinLockRelease(&queue->mutex);
	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	for (int i = 0; i < QUEUE_CHANNELS; i++)
		if (queue->channels[i].want & bit)
		{
			queue->channels[i].want &= ~bit;
			dirty = true;
		}
	if (dirty)
		queue->listens_dirty = true;
	LWLockRelease(queue->lock);
	wake_reader();
}

static void
reader_detach(int code, Datum arg)
{
	SpinLockAcquire(&queue->mutex);
	queue->reader_pid = 0;
	SpinLockRelease(&queue->mutex);
}

/*
 * plank_relay_attach
 *		Worker start, after BackgroundWorkerInitializeConnection.  Worker 0
 *		starts a new generation with its epoch and forgets the registry (its
 *		LISTENs died with the previous worker 0).  Another worker waits for
 *		worker 0, takes its epoch and starts reading at the end of the queue:
 *		sets plank_epoch and plank_seq.  Nothing to do with plank.workers = 1.
 */
void
plank_relay_attach(void)
{
	if (plank_workers <= 1)
		return;
	queue = (PlankQueue *) (queue_base + plank_worker_index * queue_size());
	initStringInfo(&assembly);

	if (plank_worker_number == 0)
	{
		LWLockAcquire(queue->lock, LW_EXCLUSIVE);
		memset(queue->channels, 0, sizeof(queue->channels));
		queue->listens_dirty = false;
		LWLockRelease(queue->lock);
		SpinLockAcquire(&queue->mutex);
		my_generation = ++queue->generation;
		strlcpy(queue->epoch, plank_epoch, sizeof(queue->epoch));
		queue->reader_pid = MyProcPid;
		queue->reader_procno = plank_my_procno();
		queue->last_seq = 0;
		queue->in_progress = false;
		SpinLockRelease(&queue->mutex);
		before_shmem_exit(reader_detach, (Datum) 0);
		/*
		 * consumers waiting for a worker 0 (see below), and those of the
		 * previous generation, which restart when they see the new one
		 */
		for (int k = 1; k < plank_workers; k++)
		{
			pid_t		pid;

			SpinLockAcquire(&queue->mutex);
			pid = queue->workers[k].pid;
			if (pid != 0)
				set_latch_of(queue->workers[k].procno);
			SpinLockRelease(&queue->mutex);
			if (pid != 0)
				kill(pid, SIGUSR2);
		}
		return;
	}

	SpinLockAcquire(&queue->mutex);
	queue->workers[plank_worker_number].pid = MyProcPid;
	queue->workers[plank_worker_number].procno = plank_my_procno();
	SpinLockRelease(&queue->mutex);
	before_shmem_exit(consumer_detach, (Datum) 0);

	/* worker 0 sets our latch when it starts; the timeout is a safety net */
	for (;;)
	{
		bool		ready;

		SpinLockAcquire(&queue->mutex);
		ready = queue->reader_pid != 0 && queue->generation != 0;
		if (ready)
		{
			my_generation = queue->generation;
			strlcpy(plank_epoch, queue->epoch, sizeof(plank_epoch));
			pg_atomic_write_u64(&queue->workers[plank_worker_number].pos,
								pg_atomic_read_u64(&queue->head));
			/* an event half written is skipped: it counts as read */
			plank_runtime_set_seq(queue->last_seq + (queue->in_progress ? 1 : 0));
			queue->workers[plank_worker_number].attached = true;
		}
		SpinLockRelease(&queue->mutex);
		if (ready)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			proc_exit(1);
	}
	assembling = false;
}

/* worker 0: the read position of the slowest attached consumer */
static uint64
slowest_pos(uint64 head)
{
	uint64		min = head;

	for (int k = 1; k < plank_workers; k++)
	{
		QueueWorker *w = &queue->workers[k];

		if (w->attached)
		{
			uint64		pos = pg_atomic_read_u64(&w->pos);

			if (pos < min)
				min = pos;
		}
	}
	return min;
}

/* worker 0: wait until need bytes past head are free */
static void
wait_for_room(uint64 head, Size need)
{
	while (head + need - slowest_pos(head) > queue->size)
	{
		pg_atomic_write_u32(&queue->reader_waiting, 1);
		plank_relay_wake_others();
		/* re-check after announcing the wait: a consumer may just have moved */
		if (head + need - slowest_pos(head) <= queue->size)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		if (ShutdownRequestPending)
			proc_exit(1);
		/* a worker may be waiting for a LISTEN before it reads on */
		if (!IsTransactionState())
			plank_relay_serve_listens();
	}
	pg_atomic_write_u32(&queue->reader_waiting, 0);
}

/*
 * plank_relay_publish
 *		Worker 0: append one event (its seq, kind, notifying pid, channel and
 *		the payload text as the event's frame was built from) for the other
 *		workers.  Waits while the ring is full.  Nothing with one worker.
 */
void
plank_relay_publish(const PlankEvent *ev, const char *payload, int len)
{
	Size		max_piece;
	int			off = 0;
	int			chanlen = ev->is_change ? 0 : strlen(ev->channel);
	uint16		kind = (ev->is_change ? QE_CHANGE : 0) | (ev->tx_last ? QE_TX_LAST : 0);

	if (queue == NULL)
		return;
	max_piece = queue->size / 4;
	do
	{
		uint64		head = pg_atomic_read_u64(&queue->head);
		Size		room_to_end = queue->size - head % queue->size;
		bool		first = off == 0;
		int			piece = Min((Size) (len - off), max_piece);
		Size		need = MAXALIGN(sizeof(QueueEntry) + (first ? chanlen : 0) + piece);
		QueueEntry *e;
		bool		last;

		if (room_to_end < need)
		{
			/* the rest of the ring is filler; the piece starts at its beginning */
			wait_for_room(head, room_to_end + need);
			if (room_to_end >= sizeof(QueueEntry))
			{
				e = (QueueEntry *) (queue->data + head % queue->size);
				e->total = room_to_end;
				e->flags = QE_PAD;
			}
			head += room_to_end;
		}
		else
			wait_for_room(head, need);

		e = (QueueEntry *) (queue->data + head % queue->size);
		e->total = need;
		last = off + piece == len;
		e->flags = kind | (first ? QE_FIRST : 0) | (last ? QE_LAST : 0);
		e->chanlen = first ? chanlen : 0;
		e->seq = ev->seq;
		e->pid = ev->pid;
		e->len = piece;
		if (first && chanlen > 0)
			memcpy((char *) (e + 1), ev->channel, chanlen);
		memcpy((char *) (e + 1) + e->chanlen, payload + off, piece);
		off += piece;

		pg_write_barrier();
		SpinLockAcquire(&queue->mutex);
		pg_atomic_write_u64(&queue->head, head + need);
		if (last)
		{
			queue->last_seq = ev->seq;
			queue->in_progress = false;
		}
		else
			queue->in_progress = true;
		SpinLockRelease(&queue->mutex);
	} while (off < len);
}

/*
 * plank_relay_wake_others
 *		Worker 0: wake the other workers (after a batch of events, or while
 *		waiting for room).
 */
void
plank_relay_wake_others(void)
{
	if (queue == NULL || plank_worker_number != 0)
		return;
	for (int k = 1; k < plank_workers; k++)
	{
		pid_t		pid;

		SpinLockAcquire(&queue->mutex);
		pid = queue->workers[k].attached ? queue->workers[k].pid : 0;
		SpinLockRelease(&queue->mutex);
		if (pid != 0)
			kill(pid, SIGUSR2);
	}
}

/*
 * plank_relay_consume
 *		Another worker: hand every event written since the last call to fn,
 *		in order; returns how many.  When worker 0 has restarted (a new
 *		epoch), logs it and returns -1: the caller closes its clients and
 *		exits with code 1, the worker is restarted and its clients resume
 *		with resync_required.
 */
int
plank_relay_consume(plank_relay_consumer fn)
{
	QueueWorker *me;
	uint64		pos;
	uint64		head;
	uint64		generation;
	int			n = 0;

	if (queue == NULL || plank_worker_number == 0)
		return 0;
	me = &queue->workers[plank_worker_number];
	SpinLockAcquire(&queue->mutex);
	generation = queue->generation;
	head = pg_atomic_read_u64(&queue->head);
	SpinLockRelease(&queue->mutex);
	if (generation != my_generation)
	{
		ereport(LOG,
				(errmsg("plank worker %d restarting: worker 0 of database \"%s\" has restarted",
						plank_worker_number, plank_worker_database)));
		return -1;
	}
	pg_read_barrier();

	pos = pg_atomic_read_u64(&me->pos);
	while (pos < head)
	{
		Size		at = pos % queue->size;
		QueueEntry *e = (QueueEntry *) (queue->data + at);
		QueueEntry	h;

		if (queue->size - at < sizeof(QueueEntry) || (e->flags & QE_PAD))
		{
			pos += queue->size - at;
			continue;
		}
		h = *e;
		if (h.flags & QE_FIRST)
		{
			resetStringInfo(&assembly);
			assembly_head = h;
			memcpy(assembly_channel, (char *) (e + 1), h.chanlen);
			assembly_channel[h.chanlen] = '\0';
			assembling = true;
		}
		if (assembling)
			appendBinaryStringInfo(&assembly, (char *) (e + 1) + h.chanlen, h.len);
		pos += h.total;
		pg_atomic_write_u64(&me->pos, pos);
		if (pg_atomic_read_u32(&queue->reader_waiting))
			set_latch_of(queue->reader_procno);

		if ((h.flags & QE_LAST) && assembling)
		{
			PlankRelayedEvent rev;

			assembling = false;
			rev.seq = assembly_head.seq;
			rev.is_change = (assembly_head.flags & QE_CHANGE) != 0;
			rev.tx_last = (assembly_head.flags & QE_TX_LAST) != 0;
			rev.pid = assembly_head.pid;
			rev.channel = assembly_channel;
			rev.payload = assembly.data;
			rev.len = assembly.len;
			fn(&rev);
			n++;
			if (assembly.maxlen > 1024 * 1024)
			{
				pfree(assembly.data);
				initStringInfo(&assembly);
			}
		}
	}
	return n;
}

/* the registry changed: worker 0 acts on it now, another worker wakes it */
static void
registry_changed(void)
{
	if (plank_worker_number == 0)
		plank_relay_serve_listens();
	else
		wake_reader();
}

static QueueChannel *
find_channel(const char *channel)
{
	for (int i = 0; i < QUEUE_CHANNELS; i++)
		if (queue->channels[i].want != 0 &&
			strcmp(NameStr(queue->channels[i].channel), channel) == 0)
			return &queue->channels[i];
	return NULL;
}

/*
 * plank_relay_listen
 *		Make sure worker 0 LISTENs on channel for this worker, and return
 *		worker 0's last sequence number when its LISTEN committed (every
 *		notification on channel after it reaches us).  Worker 0 LISTENs at
 *		once; another worker waits (on its latch) until worker 0 has.
 *		Raises 53400 (configuration_limit_exceeded) when QUEUE_CHANNELS
 *		channels are in use, 58000 (system_error) when worker 0 does not
 *		answer in 10 s.
 */
uint64
plank_relay_listen(const char *channel)
{
	uint64		bit = UINT64CONST(1) << plank_worker_number;
	QueueChannel *qc;
	TimestampTz deadline = GetCurrentTimestamp() + 10 * USECS_PER_SEC;

	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	qc = find_channel(channel);
	if (qc == NULL)
	{
		for (int i = 0; i < QUEUE_CHANNELS && qc == NULL; i++)
			if (queue->channels[i].want == 0)
			{
				qc = &queue->channels[i];
				namestrcpy(&qc->channel, channel);
				qc->listening = false;
			}
		if (qc == NULL)
		{
			LWLockRelease(queue->lock);
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("plank workers listen on %d channels already", QUEUE_CHANNELS),
					 errhint("Unsubscribe from channels that are no longer needed.")));
		}
	}
	qc->want |= bit;
	if (!qc->listening)
		queue->listens_dirty = true;
	LWLockRelease(queue->lock);
	registry_changed();

	for (;;)
	{
		uint64		seq = 0;
		bool		done;

		LWLockAcquire(queue->lock, LW_SHARED);
		qc = find_channel(channel);
		done = qc != NULL && qc->listening;
		if (done)
			seq = qc->listen_seq;
		LWLockRelease(queue->lock);
		if (done)
			return seq;
		if (plank_worker_number == 0 || GetCurrentTimestamp() > deadline)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("plank worker 0 did not LISTEN on channel \"%s\"", channel),
					 errhint("Check the server log of the plank workers.")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * plank_relay_listening_since
 *		Worker 0's last sequence number when its LISTEN on channel committed,
 *		or PG_UINT64_MAX when it does not listen on it.
 */
uint64
plank_relay_listening_since(const char *channel)
{
	QueueChannel *qc;
	uint64		seq = PG_UINT64_MAX;

	LWLockAcquire(queue->lock, LW_SHARED);
	qc = find_channel(channel);
	if (qc != NULL && qc->listening)
		seq = qc->listen_seq;
	LWLockRelease(queue->lock);
	return seq;
}

/*
 * plank_relay_unlisten
 *		This worker no longer wants channel; worker 0 UNLISTENs once no
 *		worker does.
 */
void
plank_relay_unlisten(const char *channel)
{
	uint64		bit = UINT64CONST(1) << plank_worker_number;
	QueueChannel *qc;

	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	qc = find_channel(channel);
	if (qc != NULL && (qc->want & bit))
	{
		qc->want &= ~bit;
		if (qc->want == 0)
		{
			/* the entry is free again; worker 0 unlistens by name */
			queue->listens_dirty = true;
		}
	}
	LWLockRelease(queue->lock);
	registry_changed();
}

/* worker 0: channels it LISTENs on for others, kept to UNLISTEN them */
static List *listened = NIL;

/*
 * plank_relay_serve_listens
 *		Worker 0, in its main loop (outside any transaction): LISTEN on the
 *		channels some worker wants and UNLISTEN those none wants, in one
 *		transaction, then wake the workers that wait.  Cheap when nothing
 *		changed.
 */
void
plank_relay_serve_listens(void)
{
	List	   *to_listen = NIL;
	List	   *to_unlisten = NIL;
	ListCell   *lc;
	MemoryContext cxt = CurrentMemoryContext;

	if (queue == NULL || plank_worker_number != 0 || !queue->listens_dirty)
		return;

	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	queue->listens_dirty = false;
	for (int i = 0; i < QUEUE_CHANNELS; i++)
	{
		QueueChannel *qc = &queue->channels[i];

		if (qc->want != 0 && !qc->listening)
			to_listen = lappend(to_listen, pstrdup(NameStr(qc->channel)));
	}
	foreach(lc, listened)
	{
		QueueChannel *qc = find_channel((char *) lfirst(lc));

		if (qc == NULL)
			to_unlisten = lappend(to_unlisten, lfirst(lc));
	}
	LWLockRelease(queue->lock);
	if (to_listen == NIL && to_unlisten == NIL)
		return;

	StartTransactionCommand();
	foreach(lc, to_listen)
		Async_Listen((char *) lfirst(lc));
	foreach(lc, to_unlisten)
		Async_Unlisten((char *) lfirst(lc));
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);

	foreach(lc, to_unlisten)
		listened = list_delete_ptr(listened, lfirst(lc));
	foreach(lc, to_listen)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		listened = lappend(listened, pstrdup((char *) lfirst(lc)));
		MemoryContextSwitchTo(old);
	}

	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	foreach(lc, to_listen)
	{
		QueueChannel *qc = find_channel((char *) lfirst(lc));

		if (qc != NULL && !qc->listening)
		{
			qc->listening = true;
			qc->listen_seq = plank_seq;
		}
	}
	LWLockRelease(queue->lock);

	/* the waiting workers */
	for (int k = 1; k < plank_workers; k++)
	{
		SpinLockAcquire(&queue->mutex);
		if (queue->workers[k].pid != 0)
			set_latch_of(queue->workers[k].procno);
		SpinLockRelease(&queue->mutex);
	}
}

/* Settings (GUCs) read by this file; documented in README.md "Settings" */

/*
 * plank_relay_define_settings
 *		Defines the plank.* settings of the shared-memory queue between
 *		the workers of a database.  Called once from _PG_init, in the
 *		postmaster, before the plank prefix is reserved
 *		(MarkGUCPrefixReserved).  Raises no error.  PostgreSQL docs:
 *		"Customized Options".
 */
void
plank_relay_define_settings(void)
{
	/*
	 * PGC_POSTMASTER: the queue is sized in shared memory at server start
	 * (plank_relay_init, from _PG_init).
	 */
	DefineCustomIntVariable("plank.shared_queue_size",
							"Sets the size of the shared-memory queue through which the first worker of a database passes events to the others.",
							"Used only when plank.workers is above 1; a full queue makes the first worker wait for the slowest of the others.",
							&plank_shared_queue_size,
							16384, 64, MAX_KILOBYTES,
							PGC_POSTMASTER,
							GUC_UNIT_KB,
							NULL, NULL, NULL);
}
