/*-------------------------------------------------------------------------
 *
 * plank.h
 *		Declarations any backend may include: the ones shared by the
 *		library entry point (plank.c, in the postmaster), the change-capture
 *		trigger (capture.c, which runs in every writer's backend), the check
 *		workers (checker.c) and the socket worker.  Nothing of the socket
 *		worker itself (libwebsockets, connections, subscriptions, events):
 *		those are in the worker's headers, one per layer (runtime.h,
 *		event.h, auth.h, check.h, stats.h, conn.h, filter.h, delivery.h,
 *		worker.h; docs/ARCHITECTURE.md), which build on this one.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_H
#define PLANK_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

#include "compat.h"

/*
 * Channel names that WebSocket clients may not subscribe to and
 * plank.publish() refuses: the capture trigger's channel is one of them.
 */
#define PLANK_RESERVED_CHANNEL_PREFIX "plank"

/* plank.workers is at most this */
#define PLANK_MAX_WORKERS 64

/*
 * Settings (GUCs), each defined by the file that reads it, in its
 * plank_<file>_define_settings(), called from _PG_init; README.md
 * "Settings" documents them.
 */

/* runtime.c: the databases served (plank.database), the workers of each */
extern int	plank_workers;
extern void plank_runtime_define_settings(void);
extern List *plank_database_list(void);
extern bool plank_serves_database(const char *dbname);

/*
 * The other files' settings, each defined in plank_<file>_define_settings(),
 * called from _PG_init in this order.  A setting's variable is static in
 * the file that defines it; the few that other files read are declared in
 * its header (conn.h, check.h, runtime.h).
 */
extern void plank_server_define_settings(void);
extern int	plank_server_max_sockets(void);
extern void plank_protocol_define_settings(void);
extern void plank_auth_define_settings(void);
extern void plank_check_define_settings(void);
extern void plank_replay_define_settings(void);
extern void plank_relay_define_settings(void);

/* capture.c: the change channel (shared memory, requested from _PG_init) */
extern void plank_capture_init(void);
extern const char *plank_change_channel(void);

/* capture.c; checker.c renders rows with the same settings */
extern const char *const plank_output_settings[][2];

/* stats.c: shared memory, requested from _PG_init */
extern void plank_stats_init(int nworkers, int conn_slots);

/* stats.c, from capture.c in a logical replication worker */
extern void plank_stats_origin_commit(XLogRecPtr lsn, TimestampTz committed);

/* relay.c: shared memory, requested from _PG_init */
extern void plank_relay_init(int ndatabases);

/* subxact.c */
extern bool plank_try_subxact(void (*fn) (void *arg), void *arg, ErrorData **edata);

#endif							/* PLANK_H */
