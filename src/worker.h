/*-------------------------------------------------------------------------
 *
 * worker.h
 *		Declarations of the socket worker: the files that run in its single
 *		thread (worker.c, server.c, protocol.c, subs.c, events.c, access.c,
 *		auth.c, check.c, ...) include this header, and so does stats.c,
 *		whose worker side fills the shared memory its SQL functions read.
 *		It brings in libwebsockets and the connection, subscription, event
 *		and frame structs; the files that run in other backends (capture.c
 *		in every writer's backend, checker.c, subxact.c and the library
 *		entry point plank.c) include plank.h alone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_WORKER_H
#define PLANK_WORKER_H

#include "plank.h"

#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "common/jsonapi.h"
#include "utils/timestamp.h"

#include <libwebsockets.h>

/* Settings (GUCs) read in the socket worker; see plank.h */

/* server.c */
extern char *plank_listen_addresses;
extern int	plank_port;
extern char *plank_static_dir;
extern int	plank_max_message_size;	/* kB */
extern int	plank_max_client_buffer;	/* kB */
extern int	plank_max_client_lag;	/* ms */
extern int	plank_ping_interval;	/* s */
extern int	plank_ping_timeout;	/* s */
extern int	plank_max_backlog_memory;	/* kB */
extern char *plank_allowed_origins;
extern int	plank_max_connections;
extern int	plank_max_unauthenticated;
extern int	plank_auth_timeout;	/* s */
extern int	plank_rate_limit;	/* messages per second */
extern bool plank_permessage_deflate;
extern bool plank_ssl;
extern char *plank_ssl_cert_file;
extern char *plank_ssl_key_file;
extern char *plank_http_allowed_addresses;
extern int	plank_log_level;
extern bool plank_log_connections;

/* protocol.c */
extern int	plank_max_subscriptions;

/* auth.c */
extern char *plank_jwt_secret;
extern char *plank_jwt_secret_file;
extern char *plank_jwt_public_key_file;
extern char *plank_jwt_jwks_file;
extern char *plank_jwt_audience;
extern char *plank_jwt_issuer;
extern char *plank_jwt_role_claim;
extern char *plank_anonymous_role;

/* ring.c */
extern int	plank_replay_buffer;	/* kB */

/* queue.c */
extern int	plank_shared_queue_size;	/* kB */

/* worker.c */
extern PGDLLEXPORT void plank_worker_main(Datum main_arg);

/*
 * this worker: its database's index in plank.database, its number among the
 * plank.workers workers of that database (0: the one that LISTENs), its
 * database and its port
 */
extern int	plank_worker_index;
extern int	plank_worker_number;
extern char *plank_worker_database;
extern int	plank_worker_port;

struct PlankSub;

/* Who a client is: the role it acts as, and the claims of its token */
typedef struct PlankIdentity
{
	Oid			roleid;			/* InvalidOid: not authenticated */
	char	   *role;
	char	   *claims;			/* JSON object text; "{}" when anonymous */
	int64		exp;			/* token expiry, Unix seconds; 0: none */
	bool		from_token;		/* it came from a token (not anonymous) */
} PlankIdentity;

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

#define PLANK_OP_INSERT		0x01
#define PLANK_OP_UPDATE		0x02
#define PLANK_OP_DELETE		0x04
#define PLANK_OP_TRUNCATE	0x08
#define PLANK_OP_ALL		0x0F

/* A filter's operator (docs/PROTOCOL.md, "Filters") */
typedef enum PlankFilterOp
{
	PLANK_FILTER_EQ,			/* a plain value, or {"eq": v} */
	PLANK_FILTER_NEQ,
	PLANK_FILTER_LT,
	PLANK_FILTER_LTE,
	PLANK_FILTER_GT,
	PLANK_FILTER_GTE,
	PLANK_FILTER_IN,
	PLANK_FILTER_IS,			/* null, true or false */
	PLANK_FILTER_LIKE,
	PLANK_FILTER_ILIKE
} PlankFilterOp;

/* How the ordering operators compare a column's values, by its SQL type */
typedef enum PlankFilterKind
{
	PLANK_KIND_OTHER,			/* no ordering: eq, neq, in, is only */
	PLANK_KIND_NUMBER,			/* numerically (numeric) */
	PLANK_KIND_TEXT,			/* by bytes, as COLLATE "C"; like, ilike */
	PLANK_KIND_TIMESTAMPTZ,		/* as instants */
	PLANK_KIND_TIMESTAMP,
	PLANK_KIND_DATE
} PlankFilterKind;

typedef struct PlankFilter
{
	char	   *column;
	int			column_len;
	PlankFilterOp op;
	PlankFilterKind kind;		/* set when the table is resolved */
	int			nvalues;		/* 1; in: as many as its array has */
	JsonbValue *values;			/* the operand's scalars */
	Datum	   *bounds;			/* timestamp and date columns: each string operand
								 * as the column's type reads it; else NULL */
	text	   *pattern;		/* like, ilike: the operand as text */
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
	/* with rls: changes wait in a queue of their own until checked (access.c) */
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

/* A notification as received, before it becomes an event (worker.c) */
typedef struct PlankNotification
{
	struct PlankNotification *next;
	int32		pid;
	char	   *channel;
	char	   *payload;
} PlankNotification;

/*
 * An event: one received notification with its sequence number, routing
 * information and shared message body.  The replay ring keeps copies of
 * these (with parsed = NULL).
 */
typedef struct PlankEvent
{
	uint64		seq;
	bool		is_change;		/* a table change (channel "plank") */
	const char *channel;		/* plain NOTIFY: its channel */
	int32		pid;			/* the notifying backend */
	const char *schema;			/* change: the table */
	const char *table;			/* (names interned: plank_event_name) */
	int			op;				/* change: PLANK_OP_* */
	uint64		xid;			/* change: the writing transaction */
	bool		tx_last;		/* change: the last one of its transaction */
	TimestampTz received_at;	/* when the worker received it */
	PlankFrame *frame;			/* message body, without the "{" or sub prefix */
	uint32		payload_off;	/* change: the payload's place in frame->data */
	uint32		payload_len;
	struct PlankPayload *parsed;	/* change: its members, while dispatching */
} PlankEvent;

#include "jsonspan.h"

#define PLANK_ROW_NEW	0
#define PLANK_ROW_OLD	1
#define PLANK_ROW_KEY	2

/* A change payload's members, and the members of its row images. */
typedef struct PlankPayload
{
	PlankJsonMember *members;
	int			nmembers;
	bool		truncated;		/* it has a "truncated" member */
	int			row_member[3];	/* index of "new", "old", "key"; -1: none */
	PlankJsonMember *rows[3];	/* their members, when the value is an object */
	int			nrows[3];
	void	   *values[3];		/* their values as filters read them (subs.c) */
} PlankPayload;

/* worker.c */
extern uint64 plank_seq;
extern TimestampTz plank_now;	/* the time of the loop pass, read once per pass */
extern char plank_epoch[32];
extern void plank_wakeup_handler(void);

/* server.c */
extern void plank_server_start(int wake_fd, int postmaster_fd);
extern void plank_server_service(void);
extern bool plank_server_postmaster_died(void);
extern void plank_server_shutdown(void);
extern void plank_server_reload(void);
extern void plank_server_disconnect(uint64 id);
extern PlankFrame *plank_frame_make(const char *data, int len);
extern void plank_frame_unref(PlankFrame *frame);
extern void plank_conn_send(PlankConn *conn, PlankFrame *frame, PlankSub *sub);
extern void plank_conn_send_event(PlankConn *conn, PlankFrame *frame, PlankSub *sub,
								  TimestampTz received_at);
extern void plank_conn_wake(PlankConn *conn, uint64 seq);
typedef bool (*plank_conn_filler) (PlankConn *conn, int max_msgs, size_t max_bytes);
extern void plank_server_set_filler(plank_conn_filler fn);
extern void plank_conn_send_text(PlankConn *conn, const char *data, int len);
extern void plank_conn_drop_sub_messages(PlankConn *conn, PlankSub *sub);
extern void plank_conn_close_after_send(PlankConn *conn, int code, const char *reason);
extern void plank_conn_set_identity(PlankConn *conn, const PlankIdentity *id);
extern void plank_server_schedule(lws_sorted_usec_list_t *sul, sul_cb_t cb, lws_usec_t us);
typedef void (*plank_conn_walker) (PlankConn *conn, void *arg);
extern void plank_server_conns_walk(plank_conn_walker fn, void *arg);

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

/* events.c */
extern void plank_events_init(void);
extern void plank_events_cleanup_overflow(void);
extern void plank_events_process(PlankNotification *batch);
extern PlankFrame *plank_change_frame(const PlankEvent *ev, const char *change, int len,
									  uint32 *change_off);
extern void plank_events_start_after(uint64 seq);
extern void plank_events_deliver(uint64 seq, bool is_change, bool tx_last, int32 pid,
								 const char *channel, char *payload, int len);
extern void plank_events_delivered(int n);
extern const char *plank_event_name(const char *name);

/* jws.c */
#include "jws.h"

/* auth.c */
extern void plank_auth_load_keys(void);
extern const char *plank_auth_verify(const char *token, MemoryContext cxt,
									 PlankIdentity *id, char **detail);
extern bool plank_auth_anonymous(MemoryContext cxt, PlankIdentity *id);
extern bool plank_auth_channel_allowed(Oid roleid, const char *channel);
extern bool plank_auth_publish_allowed(Oid roleid, const char *channel);

/* access.c */
extern List *plank_access_key_columns(Oid relid);
extern PlankFrame *plank_access_frame(PlankSub *sub, PlankEvent *ev);
extern void plank_access_enqueue(PlankSub *sub, PlankEvent *ev);
extern void plank_access_enqueue_seen(PlankSub *sub, PlankEvent *ev);
extern void plank_access_enqueue_commit(PlankSub *sub, PlankEvent *ev);
extern void plank_access_tx_closed(PlankEvent *ev);
extern void plank_access_sub_removed(PlankSub *sub);
extern void plank_access_event_done(void);
extern void plank_access_batch_done(void);

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
extern void plank_stats_conn_opened(PlankConn *conn);
extern void plank_stats_conn_updated(PlankConn *conn);
extern void plank_stats_conn_activity(PlankConn *conn);
extern void plank_stats_sent(PlankConn *conn, int len, TimestampTz queued_at, TimestampTz now);
extern void plank_stats_conn_closed(PlankConn *conn);
extern void plank_stats_sub_added(PlankSub *sub, const char *target);
extern void plank_stats_sub_removed(PlankSub *sub);
extern int	plank_stats_take_disconnects(uint64 *ids, int max);
extern bool plank_stats_conn_identified(PlankConn *conn, TimestampTz *banned_until);
extern void plank_stats_health(StringInfo buf, bool *ok);
extern void plank_stats_metrics(StringInfo buf);
extern void plank_stats_rls_check(int64 usec, bool ok);
extern void plank_stats_change(const PlankEvent *ev);
extern char *plank_stats_claims_sub(const char *claims);

/* queue.c: events from worker 0 to the other workers of its database */
extern void plank_queue_attach(void);
extern void plank_queue_publish(const PlankEvent *ev, const char *payload, int len);
typedef void (*plank_queue_consumer) (uint64 seq, bool is_change, bool tx_last, int32 pid,
									  const char *channel, char *payload, int len);
extern int	plank_queue_consume(plank_queue_consumer fn);
extern uint64 plank_queue_listen(const char *channel);
extern void plank_queue_unlisten(const char *channel);
extern uint64 plank_queue_listening_since(const char *channel);
extern void plank_queue_serve_listens(void);
extern void plank_queue_wake_others(void);

/* check.c: jobs for the check workers (checker.c, check.h) */
#include "check.h"

typedef struct PlankCheckJob PlankCheckJob;
typedef void (*plank_check_done) (PlankCheckJob *job, bool ok, const char *data, Size len,
								  const PlankCheckReply *rep);
struct PlankCheckJob
{
	dlist_node	node;			/* in the queue while queued */
	bool		queued;
	bool		cancelled;		/* its callback is not to run */
	int			kind;			/* PLANK_CHECK_* */
	Oid			roleid;
	char	   *claims;
	Oid			relid;			/* the table it reads */
	int32		max_rows;		/* snapshot limits */
	int64		max_bytes;
	StringInfoData body;		/* snapshot: SQL; RLS: JSON array of row images */
	uint64		conn_id;		/* snapshot: its connection */
	TimestampTz started_at;
	plank_check_done done;
	void	   *arg;
};
extern PlankCheckJob *plank_check_job_new(int kind, const PlankIdentity *ident, Oid relid);
extern void plank_check_submit(PlankCheckJob *job);
extern void plank_check_cancel(PlankCheckJob *job);
extern void plank_check_service(void);
extern void plank_check_status(int *running, int *queued);
extern void plank_check_shutdown(void);
extern bool plank_check_role_allowed(Oid roleid, const char *role);

/* ring.c */
extern void plank_ring_push(const PlankEvent *ev);
extern bool plank_ring_covers(uint64 after_seq);
extern void plank_ring_start_after(uint64 seq);
typedef bool (*plank_ring_walker) (PlankEvent *ev, void *arg);
extern void plank_ring_walk(uint64 after_seq, plank_ring_walker fn, void *arg);
extern void plank_ring_walk_back(uint64 upto_seq, plank_ring_walker fn, void *arg);
extern uint64 plank_ring_bytes_after(uint64 seq);

/* origin.c */
extern bool plank_origin_parse(const char *text, XLogRecPtr *lsn);
extern uint64 plank_origin_find(XLogRecPtr lsn, uint32 n);

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
extern void plank_subs_add_pending(PlankSub *sub);
extern bool plank_subs_filters_match(const PlankSub *sub, PlankEvent *ev, bool new_only);
extern PlankFrame *plank_subs_commit_frame(const PlankEvent *ev);
extern void plank_subs_resync(PlankSub *sub, const char *reason);
extern void plank_subs_resync_tables(const char *reason);

/* protocol.c */
extern void plank_protocol_snapshot_cancel(PlankSub *sub);
extern List *plank_subs_tables(Oid relid);
extern bool plank_subs_any_table(void);
extern PlankPayload *plank_event_payload(PlankEvent *ev);
extern char *plank_json_key(const PlankJsonMember *m, int *len);
extern char *plank_json_string(const char *tok, int len, int *outlen);
extern bool plank_json_key_is(const PlankJsonMember *m, const char *name);
extern void plank_subs_undeliverable(PlankSub *sub, const PlankEvent *ev, const char *why);
extern int	plank_subs_row_member(const PlankPayload *p, int which, const char *name, int len);

/* filter_index.c: the equality index of a table's subscriptions */
typedef struct PlankFilterIndex PlankFilterIndex;
extern void plank_filter_index_add(PlankFilterIndex **index, PlankSub *sub);
extern void plank_filter_index_remove(PlankFilterIndex **index, PlankSub *sub);
extern void plank_filter_index_sub_changed(PlankSub *sub);
extern PlankSub **plank_filter_index_candidates(PlankFilterIndex *index, PlankEvent *ev, int *n);

/* filter.c: the operators of subscription filters */
extern char *plank_filter_parse(JsonbValue *filter, PlankFilter **filters, int *nfilters);
extern char *plank_filter_resolve(PlankFilter *f, Oid typid);
extern PlankFilter *plank_filter_copy(MemoryContext cxt, const PlankFilter *filters, int n);
extern void plank_filter_free(PlankFilter *filters, int n);
extern void plank_filter_sql(StringInfo buf, const PlankFilter *f);
extern void plank_filter_describe(StringInfo buf, const PlankFilter *f);
extern Datum plank_filter_time_in(PlankFilterKind kind, const char *str);
extern bool plank_filter_like(const PlankFilter *f, text *value);

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

/* recheck.c */
extern void plank_recheck_init(void);
extern void plank_recheck_run(void);
extern void plank_recheck_accept(void);
extern void plank_recheck_service(void);

#endif							/* PLANK_WORKER_H */
