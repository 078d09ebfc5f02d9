/*-------------------------------------------------------------------------
 *
 * stats.h
 *		The worker side of the statistics (stats.c): counters and the
 *		connection and subscription slots in shared memory, and the bodies
 *		of GET /health and GET /metrics.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_STATS_H
#define PLANK_STATS_H

#include "event.h"
#include "lib/stringinfo.h"

struct PlankConn;
struct PlankSub;

/* stats.c */
typedef enum PlankCounter
{
	PLANK_STAT_NOTIFICATIONS,
	PLANK_STAT_DROPPED_SLOW,
	PLANK_STAT_RESYNCS,
	PLANK_STAT_PROTOCOL_ERRORS,
	PLANK_STAT_AUTH_FAILURES,
	PLANK_STAT_UNDELIVERABLE,
	PLANK_STAT_RATE_LIMITED		/* clients closed with 1008 for plank.rate_limit */
} PlankCounter;

extern void plank_stats_worker_started(void);
extern void plank_stats_count(PlankCounter counter, uint64 n);
extern void plank_stats_seq(uint64 seq);
extern void plank_stats_ring(uint64 bytes, uint64 events);
extern void plank_stats_conn_opened(struct PlankConn *conn);
extern void plank_stats_conn_updated(struct PlankConn *conn);
extern void plank_stats_conn_activity(struct PlankConn *conn);
extern void plank_stats_sent(struct PlankConn *conn, int len, TimestampTz queued_at, TimestampTz now);
extern void plank_stats_conn_closed(struct PlankConn *conn);
extern void plank_stats_sub_added(struct PlankSub *sub, const char *target);
extern void plank_stats_sub_removed(struct PlankSub *sub);
extern int	plank_stats_take_disconnects(uint64 *ids, int max);
extern bool plank_stats_conn_identified(struct PlankConn *conn, TimestampTz *banned_until);
extern void plank_stats_health(StringInfo buf, bool *ok, int checkers, int queued);
extern void plank_stats_metrics(StringInfo buf);
extern void plank_stats_rls_check(int64 usec, bool ok);
extern void plank_stats_change(const PlankEvent *ev);

#endif							/* PLANK_STATS_H */
