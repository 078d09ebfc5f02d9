/*-------------------------------------------------------------------------
 *
 * delivery.h
 *		Delivery: subscriptions by table and channel, dispatch and the log
 *		cursors (subs.c), what a subscription's role may see (visibility.c), and
 *		broadcast between clients (publish.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_DELIVERY_H
#define PLANK_DELIVERY_H

#include "conn.h"
#include "filter.h"

/* subs.c */
extern void plank_subs_init(void);
extern void plank_subs_add_table(PlankSub *sub, const char *schema, const char *table);
extern bool plank_subs_rename_table(PlankSub *sub, const char *schema, const char *table);
extern void plank_subs_expire_aliases(void);
extern bool plank_subs_add_channel(PlankSub *sub, const char *channel);
extern bool plank_subs_channel_covers(const char *channel, uint64 after_seq);
extern void plank_subs_remove(PlankSub *sub);
extern void plank_subs_unlisten_idle(void);
extern void plank_subs_dispatch(PlankEvent *ev);
extern void plank_subs_replay(PlankSub *sub, uint64 after_seq);
extern void plank_subs_pull_now(PlankConn *conn);
extern bool plank_subs_pull(PlankConn *conn, int max_msgs, size_t max_bytes);
extern void plank_subs_add_pending(PlankSub *sub);
extern void plank_subs_resync_tables(const char *reason);

extern List *plank_subs_tables(Oid relid);
extern bool plank_subs_any_table(void);

/* visibility.c */
extern List *plank_visibility_key_columns(Oid relid);
extern PlankFrame *plank_visibility_frame(PlankSub *sub, PlankEvent *ev);
extern void plank_visibility_enqueue(PlankSub *sub, PlankEvent *ev);
extern void plank_visibility_enqueue_seen(PlankSub *sub, PlankEvent *ev);
extern void plank_visibility_enqueue_commit(PlankSub *sub, PlankEvent *ev);
extern void plank_visibility_tx_closed(PlankEvent *ev);
extern void plank_visibility_sub_removed(PlankSub *sub);
extern void plank_visibility_event_done(void);
extern void plank_visibility_batch_done(void);

/* publish.c: broadcast between clients */
#define PLANK_PUBLISH_MAX_BYTES 7999	/* a NOTIFY payload is under 8000 bytes */
typedef enum PlankPublishResult
{
	PLANK_PUBLISH_OK,
	PLANK_PUBLISH_DENIED,
	PLANK_PUBLISH_TOO_LARGE
} PlankPublishResult;
extern const char *plank_publish_channel(void);
extern PlankPublishResult plank_publish(const PlankIdentity *ident, const char *channel,
										const char *payload, int len);
extern bool plank_publish_frame(PlankEvent *ev, const char *payload);

#endif							/* PLANK_DELIVERY_H */
