/*-------------------------------------------------------------------------
 *
 * conn.h
 *		The transport (server.c): a WebSocket connection, its outgoing
 *		queue, the subscriptions it holds, and what the layers above do for
 *		it (PlankConnHandlers).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_CONN_H
#define PLANK_CONN_H

#include "auth.h"
#include "event.h"
#include "lib/ilist.h"
#include "lib/stringinfo.h"

/* server.c */
extern char *plank_listen_addresses;
extern int	plank_port;
extern int	plank_max_client_buffer;	/* kB */

typedef struct PlankOutMsg
{
	PlankFrame *frame;
	struct PlankSub *sub;		/* NULL for replies and welcome */
	TimestampTz queued_at;
} PlankOutMsg;

/* One WebSocket client.  Lives in its own memory context. */
typedef struct PlankConn
{
	struct lws *wsi;
	MemoryContext mcxt;
	uint64		id;
	dlist_node	node;			/* in the list of all connections */
	StringInfoData rx;			/* a message arriving in pieces; data NULL otherwise */
	PlankOutMsg *queue;			/* ring of messages waiting to be written */
	int			q_head;
	int			q_len;
	int			q_cap;
	size_t		q_bytes;
	size_t		q_big;			/* largest message queued since it was empty */
	uint64		progress_pass;	/* loop pass of the last write progress */
	TimestampTz progress_at;	/* ... and its time (server.c, conn_stalled) */
	int			outq_seen;		/* bytes its socket held at the last stall check;
								 * -1: none since the last progress */
	dlist_node	over_node;		/* in server.c's over_conns, when over_listed */
	bool		over_listed;	/* it has a backlog the stall sweep watches */
	uint64		cursor;			/* the log (replay ring): events up to here were
								 * considered for its log-read subscriptions */
	bool		want_pull;		/* an event after cursor may be for one of them */
	dlist_head	subs;			/* PlankSub.conn_node */
	int			nsubs;
	bool		closing;		/* a close frame is to be sent */
	bool		close_when_drained; /* ... once the queue is empty */
	int			close_code;
	const char *close_reason;
	char		peer[64];
	PlankIdentity ident;		/* roleid InvalidOid until authenticated */
	lws_sorted_usec_list_t deadline;	/* auth timeout, then token expiry */
	int			slot;			/* in shared memory (stats.c); -1: none */
	double		rate_tokens;	/* token bucket of plank.rate_limit */
	TimestampTz rate_checked;
	TimestampTz opened_at;		/* the handshake, for the disconnection log line */
	int			end_code;		/* the close code sent or received; 0: none yet */
} PlankConn;

typedef struct PlankSub
{
	PlankConn  *conn;
	char	   *id;
	char	   *prefix;			/* {"sub":"<id>", */
	int			prefix_len;
	bool		is_channel;
	int			ops;			/* PLANK_OP_* mask, tables only */
	int			nfilters;
	struct PlankFilter *filters;
	int			ncolumns;		/* > 0: the only columns its role may read */
	char	  **columns;
	char	   *colkey;			/* the column list as one string, to share frames */
	bool		rls;			/* row-level security applies to its role */
	int			nkeycols;		/* with rls: the table's identity columns */
	char	  **keycols;
	Oid			relid;			/* tables: the table */
	void	   *entry;			/* the index entry it is linked into */
	void	   *filter_index;	/* tables: its place in the entry's filter index */
	dlist_node	conn_node;
	dlist_node	index_node;
	int			slot;			/* in shared memory (stats.c); -1: none */
	uint64		from_seq;		/* read from the log only the events after this */
	uint64		open_xid;		/* transaction whose commit marker is due */
	dlist_node	open_node;		/* in the list of subscriptions with one due */
	/* with rls: changes wait in a queue of their own until checked (visibility.c) */
	void	   *rls_group;		/* the group it is checked with */
	dlist_node	rls_group_node;
	dlist_head	rls_queue;		/* changes and commit markers, in order */
	int			rls_queued;
	uint64		rls_tx_xid;		/* a change of this transaction is queued */
	dlist_node	rls_tx_node;
	uint64		rls_sent_xid;	/* a change of this transaction was sent */
	/* a subscription waiting for its snapshot is not linked into an index */
	struct PlankSnapshotWait *snapshot;
} PlankSub;

/* server.c */
/*
 * What the layers above the transport do for a connection, given to
 * plank_server_start(): welcome a client that connected (protocol.c), handle
 * one text message of it (protocol.c; msg is NUL-terminated, len bytes, and
 * may be modified), forget a subscription of a closing connection (subs.c),
 * and fill a writable connection's queue from the log, at most max_msgs
 * messages or max_bytes bytes, returning whether events remain (subs.c).
 */
typedef struct PlankConnHandlers
{
	void		(*welcome) (PlankConn *conn);
	void		(*message) (PlankConn *conn, char *msg, int len);
	void		(*sub_closed) (PlankSub *sub);
	bool		(*fill) (PlankConn *conn, int max_msgs, size_t max_bytes);
} PlankConnHandlers;

extern void plank_server_start(int wake_fd, int postmaster_fd, const PlankConnHandlers *h);
extern void plank_server_service(void);
extern bool plank_server_postmaster_died(void);
extern void plank_server_shutdown(void);
extern void plank_server_reload(void);
extern void plank_server_disconnect(uint64 id);
extern void plank_conn_send(PlankConn *conn, PlankFrame *frame, PlankSub *sub);
extern void plank_conn_send_event(PlankConn *conn, PlankFrame *frame, PlankSub *sub,
								  TimestampTz received_at);
extern void plank_conn_wake(PlankConn *conn, uint64 seq);
extern void plank_conn_send_text(PlankConn *conn, const char *data, int len);
extern void plank_conn_resync(PlankSub *sub, const char *reason);
extern void plank_conn_undeliverable(PlankSub *sub, const PlankEvent *ev, const char *why);
extern void plank_conn_drop_sub_messages(PlankConn *conn, PlankSub *sub);
extern void plank_conn_close_after_send(PlankConn *conn, int code, const char *reason);
extern void plank_conn_set_identity(PlankConn *conn, const PlankIdentity *id);
typedef void (*plank_conn_walker) (PlankConn *conn, void *arg);
extern void plank_server_conns_walk(plank_conn_walker fn, void *arg);

#endif							/* PLANK_CONN_H */
