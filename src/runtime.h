/*-------------------------------------------------------------------------
 *
 * runtime.h
 *		The bottom of the socket worker (runtime.c): this worker's identity,
 *		its run, its event sequence, the loop's clock, the self-pipe and
 *		timers, and the log settings.  Every worker file may include it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_RUNTIME_H
#define PLANK_RUNTIME_H

#include "plank.h"
#include "utils/timestamp.h"
#include <libwebsockets.h>

/*
 * runtime.c: the bottom of the worker, used by every other file.  This
 * worker: its database's index in plank.database, its number among the
 * plank.workers workers of that database (0: the one that LISTENs), its
 * database and its port; its run (epoch, Unix microseconds of its start),
 * the newest event's sequence number, the time of the loop pass.  Only
 * runtime.c writes them (plank_runtime_*).
 */
extern int	plank_log_level;
extern bool plank_log_connections;
extern int	plank_worker_index;
extern int	plank_worker_number;
extern char *plank_worker_database;
extern int	plank_worker_port;
extern uint64 plank_seq;
extern TimestampTz plank_now;
extern char plank_epoch[32];
extern void plank_runtime_start(int arg, int port);
extern void plank_runtime_tick(void);
extern void plank_runtime_set_seq(uint64 seq);
extern uint64 plank_runtime_next_seq(void);
extern int	plank_runtime_wake_pipe(void);
extern void plank_wakeup_handler(void);
extern void plank_runtime_set_loop(struct lws_context *ctx);
extern void plank_schedule(lws_sorted_usec_list_t *sul, sul_cb_t cb, lws_usec_t us);

#endif							/* PLANK_RUNTIME_H */
