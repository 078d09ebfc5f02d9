/*-------------------------------------------------------------------------
 *
 * check.c
 *		The socket worker's pool of check workers (checker.c): starts them
 *		as dynamic background workers, queues jobs (snapshots, row-level
 *		security checks), hands each to an idle check worker over shm_mq
 *		without ever blocking, and calls the job's callback with the reply.
 *
 * The socket worker never waits for a check worker: sends and receives are
 * non-blocking, and the check workers signal it (SIGUSR1, which writes its
 * self-pipe) when they reply or read.  Budgets: one table's jobs, and one
 * role's snapshots, occupy at most plank.check_workers - 1 check workers
 * (all of them when there is one), so a slow policy, a locked table or an
 * expensive snapshot delays only the subscribers of that table or role; a
 * connection has one snapshot in flight at a time; every job runs under
 * plank.check_timeout, and a snapshot returns at most plank.snapshot_limit
 * rows and plank.max_client_buffer bytes.
 *
 * Sources followed: PostgreSQL docs "Background Worker Processes"
 * (RegisterDynamicBackgroundWorker, bgw_notify_pid) and "Dynamic Shared
 * Memory"; src/include/storage/shm_mq.h (nowait sends and receives, a
 * queue of a worker that never attached reads as detached through its
 * BackgroundWorkerHandle).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/acl.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "runtime.h"
#include "auth.h"
#include "check.h"
#include "stats.h"

/* settings (GUCs), defined in plank_check_define_settings() */
static int	plank_snapshot_limit = 10000;
char	   *plank_authenticator = NULL;
bool		plank_allow_privileged_roles = false;
static int	plank_check_workers = 2;
static int	plank_check_timeout = 5000;

typedef struct CheckWorker
{
	BackgroundWorkerHandle *handle;
	dsm_segment *seg;
	shm_mq_handle *request_mq;
	shm_mq_handle *reply_mq;
	PlankCheckJob *job;			/* in flight; NULL: idle */
	StringInfoData msg;			/* the request being sent */
	bool		sending;		/* msg not fully sent yet */
} CheckWorker;

static CheckWorker workers[32];
static int	nworkers = 0;		/* slots 0 .. nslots() - 1 that run one */
static MemoryContext check_cxt = NULL;
static dlist_head queue = DLIST_STATIC_INIT(queue);
static TimestampTz start_failed_at = 0;

/* the slots in use: plank.check_workers of them */
static int
nslots(void)
{
	return Min(plank_check_workers, (int) lengthof(workers));
}

static void
count_workers(void)
{
	nworkers = 0;
	for (int i = 0; i < nslots(); i++)
		if (workers[i].seg != NULL)
			nworkers++;
}

/* retry starting check workers after a failure at most this often */
#define START_RETRY_MS 2000

/* wakes the loop to try starting check workers again, while checks wait */
static lws_sorted_usec_list_t retry_sul;

static void
retry_tick(lws_sorted_usec_list_t *sul)
{
	plank_wakeup_handler();
}

/* A StringInfo whose buffer lives in the pool's context. */
static void
init_buf(StringInfo buf)
{
	MemoryContext old = MemoryContextSwitchTo(check_cxt);

	initStringInfo(buf);
	MemoryContextSwitchTo(old);
}

static void
ensure_cxt(void)
{
	if (check_cxt == NULL)
		check_cxt = AllocSetContextCreate(TopMemoryContext, "plank checks",
										  ALLOCSET_DEFAULT_SIZES);
}

/*
 * plank_check_job_new
 *		A job of kind PLANK_CHECK_SNAPSHOT or PLANK_CHECK_RLS for a client's
 *		identity, in the pool's memory, whose answer may take about
 *		max_bytes bytes (a snapshot stops there and is not complete); the
 *		caller fills body and the callback, then calls plank_check_submit().
 */
PlankCheckJob *
plank_check_job_new(int kind, const PlankIdentity *ident, Oid relid, int64 max_bytes)
{
	PlankCheckJob *job;

	ensure_cxt();
	job = MemoryContextAllocZero(check_cxt, sizeof(PlankCheckJob));
	job->kind = kind;
	job->roleid = ident->roleid;
	job->claims = MemoryContextStrdup(check_cxt, ident->claims ? ident->claims : "{}");
	job->relid = relid;
	job->max_rows = plank_snapshot_limit;
	job->max_bytes = max_bytes;
	init_buf(&job->body);
	return job;
}

static void
job_free(PlankCheckJob *job)
{
	pfree(job->claims);
	pfree(job->body.data);
	pfree(job);
}

static void
job_finish(PlankCheckJob *job, bool ok, const char *data, Size len,
		   const PlankCheckReply *rep)
{
	if (!job->cancelled && job->done)
	{
		MemoryContext cxt = CurrentMemoryContext;

		/* an error in a callback must not take the socket worker down */
		PG_TRY();
		{
			job->done(job, ok, data, len, rep);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			ereport(LOG,
					(errmsg("plank could not process a check worker's reply: %s", edata->message)));
			FreeErrorData(edata);
		}
		PG_END_TRY();
	}
	job_free(job);
}

/* Fail a job without running it (no check worker could take it). */
static void
job_fail(PlankCheckJob *job, const char *message)
{
	PlankCheckReply rep;

	memset(&rep, 0, sizeof(rep));
	rep.status = PLANK_CHECK_ERROR;
	memcpy(rep.sqlstate, "58000", 5);
	job_finish(job, false, message, strlen(message), &rep);
}

/*
 * Start check worker i: its DSM segment with the two queues, and the
 * dynamic background worker.  False when it could not be registered.
 */
static bool
start_worker(CheckWorker *w)
{
	BackgroundWorker bgw;
	shm_mq	   *reqq;
	shm_mq	   *repq;

	w->seg = dsm_create(PLANK_CHECK_REQUEST_QUEUE + PLANK_CHECK_REPLY_QUEUE, 0);
	dsm_pin_mapping(w->seg);
	reqq = shm_mq_create(dsm_segment_address(w->seg), PLANK_CHECK_REQUEST_QUEUE);
	repq = shm_mq_create((char *) dsm_segment_address(w->seg) + PLANK_CHECK_REQUEST_QUEUE,
						 PLANK_CHECK_REPLY_QUEUE);
	shm_mq_set_sender(reqq, MyProc);
	shm_mq_set_receiver(repq, MyProc);

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "plank");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "plank_check_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "plank check worker for %s", plank_worker_database);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "plank check");
	bgw.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(w->seg));
	strlcpy(bgw.bgw_extra, plank_worker_database, BGW_EXTRALEN);
	bgw.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&bgw, &w->handle))
	{
		dsm_detach(w->seg);
		w->seg = NULL;
		return false;
	}
	w->request_mq = shm_mq_attach(reqq, w->seg, w->handle);
	w->reply_mq = shm_mq_attach(repq, w->seg, w->handle);
	w->job = NULL;
	w->sending = false;
	init_buf(&w->msg);
	return true;
}

/* Forget a check worker that exited (or failed to start). */
static void
worker_gone(CheckWorker *w)
{
	bool		busy = w->job != NULL;

	if (w->job)
	{
		PlankCheckJob *job = w->job;

		w->job = NULL;
		job_fail(job, "the check worker exited");
	}
	if (w->handle)
	{
		/* an idle check worker exits by itself when its queues are detached */
		if (busy)
			TerminateBackgroundWorker(w->handle);
		pfree(w->handle);
	}
	if (w->seg)
		dsm_detach(w->seg);
	if (w->msg.data)
		pfree(w->msg.data);
	memset(w, 0, sizeof(*w));
	count_workers();
	/* a check worker that cannot connect would otherwise restart per job */
	start_failed_at = GetCurrentTimestamp();
}

/* Start the check workers when none is running. */
static void
ensure_workers(void)
{
	int			want = nslots();

	if (nworkers == want)
		return;
	if (start_failed_at != 0 &&
		!TimestampDifferenceExceeds(start_failed_at, GetCurrentTimestamp(), START_RETRY_MS))
		return;
	start_failed_at = 0;
	for (int i = 0; i < want; i++)
	{
		if (workers[i].seg != NULL)
			continue;
		if (!start_worker(&workers[i]))
		{
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("plank could not start a check worker: no background worker slot is free"),
					 errhint("Raise max_worker_processes by plank.check_workers for each Plank worker, and restart the server.")));
			start_failed_at = GetCurrentTimestamp();
			break;
		}
	}
	count_workers();
}

/*
 * May a queued job start now?  Budgets: the jobs of one table, and the
 * snapshots of one role, occupy at most all check workers but one; a
 * connection has one snapshot in flight.
 */
static bool
may_start(const PlankCheckJob *job)
{
	int			same_table = 0;
	int			same_role = 0;
	int			cap = Max(1, nworkers - 1);

	for (int i = 0; i < nslots(); i++)
	{
		PlankCheckJob *other = workers[i].job;

		if (other == NULL)
			continue;
		if (other->relid == job->relid)
			same_table++;
		if (job->kind == PLANK_CHECK_SNAPSHOT && other->kind == PLANK_CHECK_SNAPSHOT)
		{
			if (other->conn_id == job->conn_id)
				return false;
			if (other->roleid == job->roleid)
				same_role++;
		}
	}
	return same_table < cap && same_role < cap;
}

/* Try to send the rest of a worker's request; false if it exited. */
static bool
push_request(CheckWorker *w)
{
	shm_mq_result res;

	if (!w->sending)
		return true;
	res = plank_shm_mq_send(w->request_mq, w->msg.len, w->msg.data, true, true);
	if (res == SHM_MQ_SUCCESS)
		w->sending = false;
	return res != SHM_MQ_DETACHED;
}

static void
assign(CheckWorker *w, PlankCheckJob *job)
{
	PlankCheckRequest req;

	memset(&req, 0, sizeof(req));
	req.kind = job->kind;
	req.claims_len = strlen(job->claims);
	req.body_len = job->body.len;
	req.roleid = job->roleid;
	req.relid = job->relid;
	req.max_rows = job->max_rows;
	req.max_bytes = job->max_bytes;
	req.timeout_ms = plank_check_timeout;
	resetStringInfo(&w->msg);
	appendBinaryStringInfo(&w->msg, (const char *) &req, sizeof(req));
	appendBinaryStringInfo(&w->msg, job->claims, req.claims_len);
	appendBinaryStringInfo(&w->msg, job->body.data, job->body.len);
	w->job = job;
	w->sending = true;
	job->started_at = GetCurrentTimestamp();
	if (!push_request(w))
		worker_gone(w);
}

/* Read the reply of a busy worker, if it is complete. */
static void
pull_reply(CheckWorker *w)
{
	Size		nbytes;
	void	   *data;
	shm_mq_result res;
	PlankCheckReply rep;
	PlankCheckJob *job;

	if (!push_request(w))
	{
		worker_gone(w);
		return;
	}
	res = shm_mq_receive(w->reply_mq, &nbytes, &data, true);
	if (res == SHM_MQ_WOULD_BLOCK)
		return;
	if (res == SHM_MQ_DETACHED || nbytes < sizeof(rep))
	{
		worker_gone(w);
		return;
	}
	memcpy(&rep, data, sizeof(rep));
	job = w->job;
	w->job = NULL;
	if (job && job->kind == PLANK_CHECK_RLS)
		plank_stats_rls_check(GetCurrentTimestamp() - job->started_at, rep.status == PLANK_CHECK_OK);
	if (job)
		job_finish(job, rep.status == PLANK_CHECK_OK, (char *) data + sizeof(rep),
				   nbytes - sizeof(rep), &rep);
}

/*
 * plank_check_submit
 *		Queue a job; its callback runs from a later plank_check_service()
 *		(never from inside this call), once, unless it is cancelled first.
 */
void
plank_check_submit(PlankCheckJob *job)
{
	dlist_push_tail(&queue, &job->node);
	job->queued = true;
	plank_wakeup_handler();
}

/*
 * plank_check_cancel
 *		Forget a job's callback: a queued job is dropped, one in flight is
 *		left to finish and its reply ignored.
 */
void
plank_check_cancel(PlankCheckJob *job)
{
	if (job->queued)
	{
		dlist_delete(&job->node);
		job_free(job);
		return;
	}
	job->cancelled = true;
}

/*
 * plank_check_service
 *		Called once per loop pass of the socket worker: collect replies,
 *		notice check workers that exited, and hand queued jobs to idle ones.
 *		Never blocks.
 */
void
plank_check_service(void)
{
	dlist_mutable_iter iter;

	for (int i = 0; i < nslots(); i++)
		if (workers[i].job)
			pull_reply(&workers[i]);
	if (dlist_is_empty(&queue))
		return;
	ensure_workers();
	if (nworkers == 0)
	{
		/*
		 * Nobody can run them now.  A snapshot fails at once (its client is
		 * answered); row-level security checks wait for the check workers to
		 * come back (their subscriptions are told to resync if too many
		 * changes wait, visibility.c), tried again after START_RETRY_MS.
		 */
		dlist_foreach_modify(iter, &queue)
		{
			PlankCheckJob *job = dlist_container(PlankCheckJob, node, iter.cur);

			if (job->kind != PLANK_CHECK_SNAPSHOT)
				continue;
			dlist_delete(&job->node);
			job->queued = false;
			job_fail(job, "no check worker is running");
		}
		if (!dlist_is_empty(&queue))
			plank_schedule(&retry_sul, retry_tick, (lws_usec_t) START_RETRY_MS * 1000);
		return;
	}
	dlist_foreach_modify(iter, &queue)
	{
		PlankCheckJob *job = dlist_container(PlankCheckJob, node, iter.cur);
		CheckWorker *idle = NULL;

		for (int i = 0; i < nslots() && idle == NULL; i++)
			if (workers[i].seg && workers[i].job == NULL)
				idle = &workers[i];
		if (idle == NULL)
			break;
		if (!may_start(job))
			continue;
		dlist_delete(&job->node);
		job->queued = false;
		assign(idle, job);
	}
}

/*
 * plank_check_status
 *		For /health: check workers running and jobs queued.
 */
void
plank_check_status(int *running, int *queued)
{
	dlist_iter	iter;

	*running = 0;
	for (int i = 0; i < nslots(); i++)
	{
		pid_t		pid;

		if (workers[i].seg && GetBackgroundWorkerPid(workers[i].handle, &pid) == BGWH_STARTED)
			(*running)++;
	}
	*queued = 0;
	dlist_foreach(iter, &queue)
		(*queued)++;
}

/* plank_check_shutdown: stop the check workers (the socket worker exits). */
void
plank_check_shutdown(void)
{
	for (int i = 0; i < nslots(); i++)
		if (workers[i].seg)
		{
			PlankCheckJob *job = workers[i].job;

			if (job)
				job->cancelled = true;
			worker_gone(&workers[i]);
		}
	nworkers = 0;
}

/*
 * plank_check_role_allowed
 *		May a client act as this role?  Only a role granted to
 *		plank.authenticator (PostgREST's rule), never the authenticator
 *		itself, and a superuser or BYPASSRLS role only with
 *		plank.allow_privileged_roles.  Logs (LOG) a refusal
 *		with the role's name and the reason.  Inside a transaction.
 */
bool
plank_check_role_allowed(Oid roleid, const char *role)
{
	Oid			authid = get_role_oid(plank_authenticator, true);

	if (!OidIsValid(authid))
	{
		ereport(LOG,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("plank refuses role \"%s\": role \"%s\" named by plank.authenticator does not exist",
						role, plank_authenticator),
				 errhint("Create it: CREATE ROLE %s LOGIN NOINHERIT, then GRANT %s TO %s.",
						 quote_identifier(plank_authenticator), quote_identifier(role),
						 quote_identifier(plank_authenticator))));
		return false;
	}
	if (roleid == authid)
	{
		ereport(LOG,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("plank refuses role \"%s\": it is plank.authenticator itself", role),
				 errhint("Clients act as the roles granted to the authenticator, never as the authenticator.")));
		return false;
	}
	if (!is_member_of_role(authid, roleid))
	{
		ereport(LOG,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("plank refuses role \"%s\": it is not granted to plank.authenticator \"%s\"",
						role, plank_authenticator),
				 errhint("GRANT %s TO %s lets clients act as it.",
						 quote_identifier(role), quote_identifier(plank_authenticator))));
		return false;
	}
	if (!plank_allow_privileged_roles && (superuser_arg(roleid) || has_bypassrls_privilege(roleid)))
	{
		ereport(LOG,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("plank refuses role \"%s\": it is a superuser or has BYPASSRLS", role),
				 errhint("Set plank.allow_privileged_roles to let clients act as such roles.")));
		return false;
	}
	return true;
}

/* Settings (GUCs) read by this file; documented in README.md "Settings" */

/*
 * plank_check_define_settings
 *		Defines the plank.* settings of the check workers: their role,
 *		their number, the time limit of a check and the size of a
 *		snapshot.  Called once from _PG_init, in the postmaster, before
 *		the plank prefix is reserved (MarkGUCPrefixReserved).  Raises no
 *		error.  PostgreSQL docs: "Customized Options".
 */
void
plank_check_define_settings(void)
{
	DefineCustomIntVariable("plank.snapshot_limit",
							"Sets the largest number of rows a subscription's snapshot sends.",
							"A table with more matching rows sends this many with \"complete\": false.",
							&plank_snapshot_limit,
							10000, 0, INT_MAX / 2,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("plank.authenticator",
							   "Sets the login role whose sessions evaluate users' objects for Plank.",
							   "Snapshots and row-level security checks run in check workers connected as this role, "
							   "which must not be a superuser; a client's role must be one the authenticator is a member of "
							   "(docs/SECURITY.md).",
							   &plank_authenticator,
							   "plank_authenticator",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("plank.allow_privileged_roles",
							 "Lets clients act as superuser or BYPASSRLS roles.",
							 "Off: a token or plank.anonymous_role naming such a role is refused with unknown_role.",
							 &plank_allow_privileged_roles,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("plank.check_workers",
							"Sets the number of check workers per database.",
							"Check workers run snapshots and row-level security checks as the client's role, "
							"outside the worker that holds the sockets.",
							&plank_check_workers,
							2, 1, 32,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.check_timeout",
							"Sets the time limit of one snapshot or row-level security check.",
							"It is the statement_timeout and lock_timeout of the check's transaction.",
							&plank_check_timeout,
							5000, 10, 600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
}
