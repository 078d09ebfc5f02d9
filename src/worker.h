/*-------------------------------------------------------------------------
 *
 * worker.h
 *		The top of the socket worker: its main loop (worker.c), the requests
 *		of clients (protocol.c), the reception of notifications (events.c)
 *		and the periodic re-checks of subscriptions (recheck.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_WORKER_H
#define PLANK_WORKER_H

#include "check.h"
#include "delivery.h"
#include "stats.h"

/* worker.c */
extern PGDLLEXPORT void plank_worker_main(Datum main_arg);

/* protocol.c */
typedef enum PlankReadable
{
	PLANK_READ_NO_SCHEMA,		/* no USAGE on the table's schema */
	PLANK_READ_NONE,			/* no SELECT on the table or any column */
	PLANK_READ_COLUMNS,			/* SELECT on some columns only */
	PLANK_READ_ALL				/* SELECT on the table */
} PlankReadable;
extern PlankReadable plank_table_readable(Oid relid, Oid roleid, MemoryContext cxt,
										  List **columns);
extern void plank_protocol_welcome(PlankConn *conn);
extern void plank_protocol_handle(PlankConn *conn, char *msg, int len);
extern void plank_protocol_sub_remove(PlankSub *sub);

/* events.c */
extern void plank_events_init(void);
extern void plank_events_cleanup_overflow(void);
extern void plank_events_process(PlankNotification *batch);
extern void plank_events_start_after(uint64 seq);
extern void plank_events_deliver_relayed(const PlankRelayedEvent *rev);
extern void plank_events_relayed_done(int n);

/* recheck.c */
extern void plank_recheck_init(void);
extern void plank_recheck_run(void);
extern void plank_recheck_accept(void);
extern void plank_recheck_service(void);

#endif							/* PLANK_WORKER_H */
