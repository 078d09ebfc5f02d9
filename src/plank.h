/*-------------------------------------------------------------------------
 *
 * plank.h
 *		Declarations shared by Plank's source files: settings (GUCs), the
 *		background worker's entry point, and the change-capture trigger.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_H
#define PLANK_H

#include "postgres.h"

/* NOTIFY channel that the capture trigger sends table changes on */
#define PLANK_CHANGE_CHANNEL "plank"

/* Settings (GUCs), defined and documented in plank.c */
extern char *plank_database;
extern char *plank_listen_addresses;
extern int	plank_port;
extern char *plank_static_dir;
extern int	plank_max_message_size;	/* kB */
extern int	plank_max_client_buffer;	/* kB */
extern int	plank_max_subscriptions;
extern int	plank_snapshot_limit;
extern bool plank_log_connections;

/* worker.c */
extern PGDLLEXPORT void plank_worker_main(Datum main_arg);

/*
 * Worker-internal declarations (worker.c, server.c, protocol.c, subs.c).
 * Everything below runs in the single thread of the Plank worker.
 */
#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"

struct lws;
struct PlankSub;

/*
 * An outgoing message body shared by every connection it goes to: the event
 * is serialised once and each delivery only references it.  data holds the
 * JSON object without its opening brace; the per-delivery prefix supplies
 * it ("{" or "{\"sub\":\"id\",").
 */
typedef struct PlankFrame
{
	uint32		refcount;
	uint32		len;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} PlankFrame;

typedef struct PlankOutMsg
{
	PlankFrame *frame;
	struct PlankSub *sub;		/* NULL for replies and welcome */
} PlankOutMsg;

/* One WebSocket client.  Lives in its own memory context. */
typedef struct PlankConn
{
	struct lws *wsi;
	MemoryContext mcxt;
	uint64		id;
	dlist_node	node;			/* in the list of all connections */
	StringInfoData rx;			/* message being reassembled from fragments */
	StringInfoData wbuf;		/* LWS_PRE headroom + the frame being written */
	PlankOutMsg *queue;			/* ring of messages waiting to be written */
	int			q_head;
	int			q_len;
	int			q_cap;
	size_t		q_bytes;
	dlist_head	subs;			/* PlankSub.conn_node */
	int			nsubs;
	bool		closing;		/* a close frame is to be sent */
	int			close_code;
	const char *close_reason;
	char		peer[64];
} PlankConn;

#define PLANK_OP_INSERT		0x01
#define PLANK_OP_UPDATE		0x02
#define PLANK_OP_DELETE		0x04
#define PLANK_OP_TRUNCATE	0x08
#define PLANK_OP_ALL		0x0F

typedef struct PlankFilter
{
	char	   *column;
	int			column_len;
	JsonbValue	value;			/* a scalar */
} PlankFilter;

typedef struct PlankSub
{
	PlankConn  *conn;
	char	   *id;
	char	   *prefix;			/* {"sub":"<id>", */
	int			prefix_len;
	bool		is_channel;
	int			ops;			/* PLANK_OP_* mask, tables only */
	int			nfilters;
	PlankFilter *filters;
	void	   *entry;			/* the index entry it is linked into */
	dlist_node	conn_node;
	dlist_node	index_node;
} PlankSub;

/* worker.c */
extern uint64 plank_seq;
extern char plank_epoch[32];
extern void plank_wakeup_handler(void);

/* server.c */
extern void plank_server_start(int wake_fd, int postmaster_fd);
extern void plank_server_service(void);
extern bool plank_server_postmaster_died(void);
extern void plank_server_shutdown(void);
extern PlankFrame *plank_frame_make(const char *data, int len);
extern void plank_frame_unref(PlankFrame *frame);
extern void plank_conn_send(PlankConn *conn, PlankFrame *frame, PlankSub *sub);
extern void plank_conn_send_text(PlankConn *conn, const char *data, int len);
extern void plank_conn_drop_sub_messages(PlankConn *conn, PlankSub *sub);

/* protocol.c */
extern void plank_protocol_welcome(PlankConn *conn);
extern void plank_protocol_handle(PlankConn *conn, char *msg, int len);

/* subs.c */
extern void plank_subs_init(void);
extern void plank_subs_add_table(PlankSub *sub, const char *schema, const char *table);
extern bool plank_subs_add_channel(PlankSub *sub, const char *channel);
extern void plank_subs_remove(PlankSub *sub);
extern void plank_subs_unlisten_idle(void);
extern void plank_subs_dispatch(uint64 seq, const char *channel,
								const char *payload, int32 pid);

#endif							/* PLANK_H */
