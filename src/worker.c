/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The Plank background worker: signal handling, the event loop, and
 *		in-process reception of NOTIFY.
 *
 * The worker is one process with one thread.  libwebsockets owns the event
 * loop (lws_service) because Debian's build cannot hand its sockets to a
 * PostgreSQL WaitEventSet.  PostgreSQL's signals reach that loop through a
 * self-pipe: each handler does PostgreSQL's own work (setting a flag and the
 * latch) and writes one byte to the pipe, whose read end libwebsockets polls.
 * The postmaster-death pipe is polled the same way.  So the worker sleeps in
 * poll() when idle and burns no CPU.
 *
 * Notifications are received without any client connection: the worker
 * LISTENs with Async_Listen() and, when a notify interrupt is pending, runs
 * ProcessNotifyInterrupt() with whereToSendOutput = DestRemote and its own
 * PQcommMethods, whose putmessage() captures the 'A' (NotificationResponse)
 * messages that async.c would send to a frontend.
 *
 * Sources followed: PostgreSQL docs "Background Worker Processes",
 * src/test/modules/worker_spi, src/backend/commands/async.c, and the
 * frontend/backend protocol's NotificationResponse message format.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "access/xact.h"
#include "commands/async.h"
#include "libpq/libpq.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/procsignal.h"
#include "tcop/dest.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "runtime.h"
#include "event.h"
#include "auth.h"
#include "check.h"
#include "stats.h"
#include "conn.h"
#include "delivery.h"
#include "worker.h"

/*
 * Notifications captured by putmessage(), dispatched once
 * ProcessNotifyInterrupt() has returned.  putmessage() must never elog or
 * throw, so memory comes from a context with MCXT_ALLOC_NO_OOM.
 */
static MemoryContext notify_cxt = NULL;
static PlankNotification *pending_head = NULL;
static PlankNotification *pending_tail = NULL;
static uint64 pending_lost = 0;

/* what the layers above the transport do for a connection */
static const PlankConnHandlers conn_handlers = {
	.welcome = plank_protocol_welcome,
	.message = plank_protocol_handle,
	.sub_closed = plank_protocol_sub_remove,
	.fill = plank_subs_pull,
};

static void
plank_sigusr1(SIGNAL_ARGS)
{
	/* notify interrupts, barriers, ...: PostgreSQL's handler sets the flags */
	procsignal_sigusr1_handler(postgres_signal_arg);
	plank_wakeup_handler();
}

/* plank.workers > 1: worker 0 has written events to the shared queue */
static void
plank_sigusr2(SIGNAL_ARGS)
{
	plank_wakeup_handler();
}

static void
plank_sighup(SIGNAL_ARGS)
{
	SignalHandlerForConfigReload(postgres_signal_arg);
	plank_wakeup_handler();
}

static void
plank_sigterm(SIGNAL_ARGS)
{
	/* not die(): the loop closes every client with 1001 before it exits */
	ShutdownRequestPending = true;
	SetLatch(MyLatch);
	plank_wakeup_handler();
}

/*
 * PQcommMethods that capture NotificationResponse ('A') messages: int32 PID
 * in network byte order, channel name, NUL, payload, NUL.  Every other
 * message (notices and errors sent while DestRemote is set) is ignored; they
 * also go to the server log as usual.
 */
static int
capture_putmessage(char msgtype, const char *s, size_t len)
{
	const char *channel;
	const char *payload;
	const char *end = s + len;
	size_t		chlen;
	size_t		pllen;
	PlankNotification *pn;

	if (msgtype != 'A' || len < 6)
		return 0;

	channel = s + 4;
	chlen = strnlen(channel, end - channel);
	if (channel + chlen >= end)
		return 0;
	payload = channel + chlen + 1;
	pllen = strnlen(payload, end - payload);
	if (payload + pllen >= end)
		return 0;

	pn = MemoryContextAllocExtended(notify_cxt,
									sizeof(PlankNotification) + chlen + pllen + 2,
									MCXT_ALLOC_NO_OOM);
	if (pn == NULL)
	{
		pending_lost++;
		return 0;
	}
	pn->next = NULL;
	pn->pid = (int32) pg_ntoh32(*(const uint32 *) s);
	pn->channel = (char *) (pn + 1);
	memcpy(pn->channel, channel, chlen + 1);
	pn->payload = pn->channel + chlen + 1;
	memcpy(pn->payload, payload, pllen + 1);

	if (pending_tail)
		pending_tail->next = pn;
	else
		pending_head = pn;
	pending_tail = pn;
	return 0;
}

static void
capture_putmessage_noblock(char msgtype, const char *s, size_t len)
{
	(void) capture_putmessage(msgtype, s, len);
}

static void
capture_comm_reset(void)
{
}

static int
capture_flush(void)
{
	return 0;
}

static bool
capture_is_send_pending(void)
{
	return false;
}

static const PQcommMethods capture_methods = {
	.comm_reset = capture_comm_reset,
	.flush = capture_flush,
	.flush_if_writable = capture_flush,
	.is_send_pending = capture_is_send_pending,
	.putmessage = capture_putmessage,
	.putmessage_noblock = capture_putmessage_noblock,
};

/*
 * Read every notification that is waiting for us and hand each, with the
 * next sequence number, to the subscriptions.  Runs outside any transaction.
 */
static void
drain_notifications(void)
{
	whereToSendOutput = DestRemote;
	PG_TRY();
	{
		ProcessNotifyInterrupt(false);
	}
	PG_FINALLY();
	{
		whereToSendOutput = DestNone;
	}
	PG_END_TRY();

	if (pending_lost > 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("plank lost " UINT64_FORMAT " notifications: out of memory", pending_lost)));
		pending_lost = 0;
	}

	/*
	 * Reading them started a transaction, which read the catalog changes
	 * committed before them: apply those first (recheck.c).
	 */
	if (pending_head != NULL)
	{
		plank_recheck_run();
		plank_events_process(pending_head);
	}

	pending_head = pending_tail = NULL;
	MemoryContextReset(notify_cxt);
}

/*
 * plank.workers > 1, the other workers: events from worker 0's queue.  Before
 * the first event of a batch, read the catalog changes committed before it
 * (worker 0 had read them before it read the batch) and apply them to the
 * subscriptions, as worker 0 does in drain_notifications().
 */
static bool queue_batch_started = false;

static void
deliver_queued(const PlankRelayedEvent *rev)
{
	if (!queue_batch_started)
	{
		queue_batch_started = true;
		plank_recheck_accept();
	}
	plank_events_deliver_relayed(rev);
}

/*
 * LISTEN on the change channel, and drop the oversized payloads that no
 * worker will ever read (their notifications were sent while none listened).
 */
static void
listen_change_channel(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	plank_events_cleanup_overflow();
	PopActiveSnapshot();
	Async_Listen(plank_change_channel());
	/* clients' publications (publish.c) */
	Async_Listen(plank_publish_channel());
	CommitTransactionCommand();
}

/*
 * plank_worker_main
 *		Entry point of the background worker (bgw_function_name).  Connects to
 *		plank.database, LISTENs on channel "plank", serves WebSocket clients
 *		until SIGTERM or postmaster death.  Exits with code 1 in both cases so
 *		that a pg_terminate_backend() is followed by a restart; a FATAL error
 *		(for instance: cannot listen on plank.port) also exits with 1.
 */
void
plank_worker_main(Datum main_arg)
{
	int			pm_fd;
	int			wake_fd;

	/* handlers are installed before signals are unblocked (worker_spi) */
	pqsignal(SIGHUP, plank_sighup);
	pqsignal(SIGTERM, plank_sigterm);
	pqsignal(SIGUSR1, plank_sigusr1);
	/* plank.workers: worker 0 wakes the others with SIGUSR2 (relay.c) */
	pqsignal(SIGUSR2, plank_sigusr2);
	/* pg_cancel_backend() must not stop the worker */
	pqsignal(SIGINT, SIG_IGN);

	wake_fd = plank_runtime_wake_pipe();
	if (wake_fd < 0)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not create self-pipe for the plank worker: %m")));

	/* one descriptor per client: take the hard limit, not the soft 1024 */
	{
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
		{
			rl.rlim_cur = rl.rlim_max;
			(void) setrlimit(RLIMIT_NOFILE, &rl);
		}
	}

	BackgroundWorkerUnblockSignals();
	plank_runtime_start(DatumGetInt32(main_arg),
						plank_port + DatumGetInt32(main_arg) / PLANK_MAX_WORKERS);
	BackgroundWorkerInitializeConnection(plank_worker_database, NULL, 0);

	/*
	 * Pin search_path for the session, so that no name in the SQL this worker
	 * runs can resolve to an object a user created: "$user" and public are
	 * left out, pg_temp comes last (PostgreSQL docs, "Writing SECURITY
	 * DEFINER Functions Safely").  PGC_S_OVERRIDE makes it the session's
	 * default too, so RESET and DISCARD come back to it.  It does not stop
	 * SET or set_config() run in this session (PGC_S_SESSION outranks every
	 * other source), which is why Plank's statements are also qualified
	 * throughout, and why code of users must not run in this session.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	/* with plank.workers > 1, the others take worker 0's epoch and seq */
	plank_relay_attach();
	plank_stats_worker_started();
	notify_cxt = AllocSetContextCreate(TopMemoryContext, "plank notifications",
									   ALLOCSET_DEFAULT_SIZES);
	PqCommMethods = &capture_methods;
	plank_subs_init();
	plank_recheck_init();
	plank_events_init();
	plank_auth_load_keys();
	if (plank_worker_number == 0)
		listen_change_channel();
	else
		plank_events_start_after(plank_seq);

	/* lws closes what it adopts: give it a duplicate of the death pipe */
	pm_fd = dup(postmaster_alive_fds[POSTMASTER_FD_WATCH]);
	if (pm_fd < 0)
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not duplicate the postmaster death pipe: %m")));
	plank_server_start(wake_fd, pm_fd, &conn_handlers);

	if (plank_workers > 1)
		ereport(LOG,
				(errmsg("plank worker %d of %d serving database \"%s\" on %s port %d",
						plank_worker_number, plank_workers, plank_worker_database,
						plank_listen_addresses, plank_worker_port)));
	else
		ereport(LOG,
				(errmsg("plank worker serving database \"%s\" on %s port %d",
						plank_worker_database, plank_listen_addresses, plank_worker_port)));
	pgstat_report_activity(STATE_IDLE, NULL);

	for (;;)
	{
		ResetLatch(MyLatch);
		plank_runtime_tick();

		if (plank_server_postmaster_died())
			proc_exit(1);
		if (ShutdownRequestPending)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			plank_server_reload();
			plank_auth_load_keys();
		}
		CHECK_FOR_INTERRUPTS();

		if (notifyInterruptPending)
			drain_notifications();
		/* privilege changes on live subscriptions, and their timer */
		plank_recheck_service();
		/* plank.workers > 1: worker 0 LISTENs for the others, they read its events */
		plank_relay_serve_listens();
		{
			int			n;

			queue_batch_started = false;
			n = plank_relay_consume(deliver_queued);
			if (n < 0)
			{
				/* worker 0 restarted: this one restarts too */
				plank_server_shutdown();
				proc_exit(1);
			}
			if (n > 0)
				plank_events_relayed_done(n);
		}
		/* replies of the check workers (snapshots, row-level security) */
		plank_check_service();
		plank_subs_unlisten_idle();
		{
			uint64		ids[64];
			int			n = plank_stats_take_disconnects(ids, lengthof(ids));

			while (n-- > 0)
				plank_server_disconnect(ids[n]);
		}

		/* sleeps in poll() until a socket, the self-pipe or a timer is ready */
		plank_server_service();
	}

	ereport(LOG, (errmsg("plank worker shutting down")));
	plank_check_shutdown();
	plank_server_shutdown();
	proc_exit(1);
}
