/*-------------------------------------------------------------------------
 *
 * runtime.c
 *		The bottom of the socket worker: which databases Plank serves and by
 *		how many workers (plank.database, plank.workers), which worker this
 *		process is, its run (epoch), its event sequence, the clock of the
 *		loop pass, the log settings every layer uses, the self-pipe that
 *		wakes the event loop, and timers in that loop.  Every other file may
 *		use this one; it uses none of them.
 *
 * Sources followed: PostgreSQL docs "Server Configuration" / "Customized
 * Options" (GUCs) and "Background Worker Processes"; libwebsockets'
 * lws_sul_schedule() (include/libwebsockets/lws-timeout-timer.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "utils/guc.h"
#include "utils/varlena.h"

#include "runtime.h"

static char *plank_database = NULL;
int			plank_workers = 1;
int			plank_log_level = LOG;
bool		plank_log_connections = false;

int			plank_worker_index = 0;
int			plank_worker_number = 0;
char	   *plank_worker_database = NULL;
int			plank_worker_port = 0;
TimestampTz plank_now = 0;
uint64		plank_seq = 0;
char		plank_epoch[32];

/* the self-pipe that wakes the libwebsockets loop from signal handlers */
static int	wake_pipe[2] = {-1, -1};

/* the event loop's context, for timers (plank_schedule) */
static struct lws_context *loop_ctx = NULL;

static const struct config_enum_entry log_level_options[] = {
	{"debug5", DEBUG5, false},
	{"debug4", DEBUG4, false},
	{"debug3", DEBUG3, false},
	{"debug2", DEBUG2, false},
	{"debug1", DEBUG1, false},
	{"debug", DEBUG2, true},
	{"info", INFO, false},
	{"notice", NOTICE, false},
	{"warning", WARNING, false},
	{"log", LOG, false},
	{NULL, 0, false}
};

/*
 * plank_runtime_define_settings
 *		Define plank.database, plank.workers (PGC_POSTMASTER: the workers are
 *		registered and shared memory sized at server start), plank.log_level
 *		and plank.log_connections (PGC_SIGHUP).  Called from _PG_init; docs:
 *		README.md "Settings", docs/BENCHMARKS.md "Several workers".
 */
void
plank_runtime_define_settings(void)
{
	DefineCustomStringVariable("plank.database",
							   "Sets the databases whose changes and notifications Plank serves.",
							   "A comma-separated list: one worker per database, serving the first on plank.port, "
							   "the second on plank.port + 1, and so on. Each worker connects as the bootstrap "
							   "superuser. Do not name template1: a connected worker blocks CREATE DATABASE.",
							   &plank_database,
							   "postgres",
							   PGC_POSTMASTER,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("plank.workers",
							"Sets the number of worker processes that serve the WebSocket clients of each database.",
							"They share plank.port (SO_REUSEPORT); the first one LISTENs and passes every event to the others through shared memory.",
							&plank_workers,
							1, 1, PLANK_MAX_WORKERS,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("plank.log_level",
							 "Sets the message level of Plank's connection log lines.",
							 "Connections and disconnections (with plank.log_connections), refused "
							 "handshakes and tokens, slow clients closed and administrator disconnects "
							 "are logged at this level; they never carry a token.",
							 &plank_log_level,
							 LOG,
							 log_level_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("plank.log_connections",
							 "Logs each WebSocket connection and disconnection.",
							 NULL,
							 &plank_log_connections,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);
}

/*
 * plank_database_list
 *		The database names of plank.database, in order (a list of strings in
 *		the current memory context).  Raises 22023 for a malformed list.
 */
List *
plank_database_list(void)
{
	char	   *raw = pstrdup(plank_database);
	List	   *names;

	if (!SplitIdentifierString(raw, ',', &names) || names == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in parameter \"plank.database\""),
				 errhint("List database names separated by commas.")));
	return names;
}

/* plank_serves_database: is this database in plank.database? */
bool
plank_serves_database(const char *dbname)
{
	ListCell   *lc;

	foreach(lc, plank_database_list())
		if (strcmp((const char *) lfirst(lc), dbname) == 0)
			return true;
	return false;
}

/*
 * plank_runtime_start
 *		This process is worker arg (the database's place in plank.database
 *		* PLANK_MAX_WORKERS + its number among that database's workers),
 *		serving on port; its run's epoch is now, in Unix microseconds.
 *		Raises 22023 for a malformed plank.database.
 */
void
plank_runtime_start(int arg, int port)
{
	plank_worker_index = arg / PLANK_MAX_WORKERS;
	plank_worker_number = arg % PLANK_MAX_WORKERS;
	plank_worker_database = pstrdup((const char *) list_nth(plank_database_list(),
															  plank_worker_index));
	plank_worker_port = port;
	plank_now = GetCurrentTimestamp();
	snprintf(plank_epoch, sizeof(plank_epoch), INT64_FORMAT,
			 (int64) plank_now + (int64) ((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY));
}

/* plank_runtime_tick: read the clock for this pass of the loop (plank_now). */
void
plank_runtime_tick(void)
{
	plank_now = GetCurrentTimestamp();
}

/* plank_runtime_set_seq: the newest sequence number is seq (resume, queue). */
void
plank_runtime_set_seq(uint64 seq)
{
	plank_seq = seq;
}

/* plank_runtime_next_seq: the sequence number of a new event. */
uint64
plank_runtime_next_seq(void)
{
	return ++plank_seq;
}

/*
 * plank_runtime_wake_pipe
 *		Open the self-pipe (non-blocking, close-on-exec) and return its read
 *		end, for the event loop to poll; -1 with errno set when it cannot.
 */
int
plank_runtime_wake_pipe(void)
{
	if (pipe(wake_pipe) != 0 ||
		fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
		fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK) != 0 ||
		fcntl(wake_pipe[0], F_SETFD, FD_CLOEXEC) != 0 ||
		fcntl(wake_pipe[1], F_SETFD, FD_CLOEXEC) != 0)
		return -1;
	return wake_pipe[0];
}

/*
 * plank_wakeup_handler
 *		Wake the event loop: write a byte to the self-pipe.  Async-signal-safe
 *		(signal handlers and check-worker completions call it).
 */
void
plank_wakeup_handler(void)
{
	int			save_errno = errno;

	if (wake_pipe[1] >= 0)
	{
		ssize_t		rc pg_attribute_unused();

		rc = write(wake_pipe[1], "x", 1);
	}
	errno = save_errno;
}

/* plank_runtime_set_loop: the event loop's context (server.c, once it exists). */
void
plank_runtime_set_loop(struct lws_context *ctx)
{
	loop_ctx = ctx;
}

/*
 * plank_schedule
 *		Run cb once, us microseconds from now, from inside lws_service().
 *		libwebsockets 4.1 runs due timers when lws_service() starts, before it
 *		polls: a callback that needs the main loop to act at once must also
 *		wake it (plank_wakeup_handler()).  The callback runs inside
 *		libwebsockets: it must not raise errors.  Scheduling a pending sul
 *		again moves it.  Does nothing before the loop exists.
 */
void
plank_schedule(lws_sorted_usec_list_t *sul, sul_cb_t cb, lws_usec_t us)
{
	if (loop_ctx != NULL)
		lws_sul_schedule(loop_ctx, 0, sul, cb, us);
}
