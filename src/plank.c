/*-------------------------------------------------------------------------
 *
 * plank.c
 *		Library entry point: has each module define its settings (GUCs),
 *		reserves the plank prefix and registers the background workers.
 *		The library must be loaded through shared_preload_libraries,
 *		because a background worker can only be registered while the
 *		postmaster starts.
 *
 * Sources followed: PostgreSQL docs, "Background Worker Processes" (bgworker)
 * and "Server Configuration" / "Customized Options" (GUCs).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "nodes/pg_list.h"
#include "utils/guc.h"

#include "plank.h"

PG_MODULE_MAGIC;

void		_PG_init(void);
static void register_worker(int index, const char *dbname);

/*
 * One worker per database of plank.database, with its index as argument.
 * Raises 53400 (configuration_limit_exceeded) when max_worker_processes
 * cannot hold them.
 */
static void
register_workers(void)
{
	List	   *dbs = plank_database_list();
	int			n = list_length(dbs) * plank_workers;
	ListCell   *lc;

	if (n > max_worker_processes)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("plank needs %d background workers for plank.database and plank.workers, but max_worker_processes is %d",
						n, max_worker_processes),
				 errhint("Raise max_worker_processes to at least %d plus the workers other features use, and restart the server.",
						 n)));
	foreach(lc, dbs)
		for (int k = 0; k < plank_workers; k++)
			register_worker(foreach_current_index(lc) * PLANK_MAX_WORKERS + k,
							(const char *) lfirst(lc));
}

/* index: the database's place in plank.database * PLANK_MAX_WORKERS + worker number */
static void
register_worker(int index, const char *dbname)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* catalog access (table and column look-ups) needs a consistent state */
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* restart one second after an exit with code 1 or a crash */
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "plank");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "plank_worker_main");
	if (plank_workers > 1)
		snprintf(worker.bgw_name, BGW_MAXLEN, "plank worker %d for %s",
				 index % PLANK_MAX_WORKERS, dbname);
	else
		snprintf(worker.bgw_name, BGW_MAXLEN, "plank worker for %s", dbname);
	snprintf(worker.bgw_type, BGW_MAXLEN, "plank");
	worker.bgw_main_arg = Int32GetDatum(index);
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}

/*
 * _PG_init
 *		Library load hook.  Raises 55000 (object_not_in_prerequisite_state)
 *		unless loaded through shared_preload_libraries; defines the plank.*
 *		settings and registers the worker.
 */
void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("plank must be loaded via shared_preload_libraries"),
				 errhint("Add plank to the shared_preload_libraries configuration variable in postgresql.conf and restart the server.")));

	/* each module defines the settings it reads; then plank.* is reserved */
	plank_runtime_define_settings();
	plank_server_define_settings();
	plank_protocol_define_settings();
	plank_auth_define_settings();
	plank_check_define_settings();
	plank_replay_define_settings();
	plank_relay_define_settings();
	MarkGUCPrefixReserved("plank");

	/* shared memory is sized from plank.database, plank.workers, plank.shared_queue_size */
	plank_capture_init();
	plank_stats_init(list_length(plank_database_list()), plank_server_max_sockets());
	plank_relay_init(list_length(plank_database_list()));
	register_workers();
}
