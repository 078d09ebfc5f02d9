/*-------------------------------------------------------------------------
 *
 * server.c
 *		The WebSocket and HTTP server of the Plank worker, on libwebsockets:
 *		listening vhosts, static files, connection life cycle, reassembly of
 *		incoming messages and the bounded outgoing queue of each client.
 *
 * libwebsockets does the WebSocket framing, the HTTP server, UTF-8
 * validation of text frames and ping/pong; this file decides what a
 * connection receives and when it is closed.  No ereport(ERROR) may unwind
 * through libwebsockets' frames, so every callback runs under PG_TRY and an
 * error closes only the connection it happened on.
 *
 * Sources followed: RFC 6455 (section 5.6 text frames, 7.4.1 close codes),
 * libwebsockets 4.1 API documentation and minimal examples.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "port.h"
#include "utils/memutils.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "runtime.h"
#include "event.h"
#include "auth.h"
#include "check.h"
#include "stats.h"
#include "conn.h"

/* settings (GUCs), defined in plank_server_define_settings() */
char	   *plank_listen_addresses = NULL;
int			plank_port = 8090;
static char *plank_static_dir = NULL;
static int	plank_max_message_size = 64;
int			plank_max_client_buffer = 8192;
static int	plank_max_client_lag = 5000;
static int	plank_ping_interval = 30;
static int	plank_ping_timeout = 10;
static int	plank_max_backlog_memory = 262144;
static char *plank_allowed_origins = NULL;
static int	plank_max_connections = 10000;
static int	plank_max_unauthenticated = 1000;
static int	plank_auth_timeout = 10;
static int	plank_rate_limit = 50;
static bool plank_permessage_deflate = false;
static bool plank_ssl = false;
static char *plank_ssl_cert_file = NULL;
static char *plank_ssl_key_file = NULL;
static char *plank_http_allowed_addresses = NULL;

/* RFC 6455 7.4.2 / IANA registry: "Try Again Later"; libwebsockets 4.1 has no name for it */
#define PLANK_CLOSE_TRY_AGAIN_LATER 1013

/* Private-use close codes (RFC 6455 7.4.2), documented in docs/PROTOCOL.md */
#define PLANK_CLOSE_AUTH_FAILED 4001
#define PLANK_CLOSE_TOKEN_EXPIRED 4002
#define PLANK_CLOSE_ADMIN 4003		/* plank.disconnect(): do not reconnect */
#define PLANK_CLOSE_BANNED 4004		/* a ban of plank.disconnect() is in force */

/* per-session storage that libwebsockets allocates for each WebSocket */
typedef struct PlankSession
{
	PlankConn  *conn;			/* &conn_storage while a WebSocket is open */
	PlankConn	conn_storage;	/* in the session: libwebsockets allocates it exactly */
	char	   *http_body;		/* /health, /metrics: LWS_PRE + body, until written */
	int			http_len;
	dlist_node	unauth_node;	/* in unauth_conns while conn has no role */
} PlankSession;

#define session_of(conn) \
	((PlankSession *) ((char *) (conn) - offsetof(PlankSession, conn_storage)))

static struct lws_context *lws_ctx = NULL;
static struct lws_vhost *first_vhost = NULL;
static dlist_head all_conns = DLIST_STATIC_INIT(all_conns);
static int	nconns = 0;
static int	nunauth = 0;		/* of nconns: without a role yet */
static dlist_head unauth_conns = DLIST_STATIC_INIT(unauth_conns);	/* those, oldest first */
static uint64 next_conn_id = 0;
static MemoryContext conns_cxt = NULL;

/*
 * Buffers shared by every connection (the worker has one thread): wbuf holds
 * LWS_PRE bytes of headroom and the message being written (lws_write sends
 * it at once, or keeps the unsent rest itself); rx_scratch a client message
 * that arrived in one piece.  A connection has a receive buffer of its own
 * only while a message arrives in several pieces.  Both shrink back after a
 * large message.
 */
static StringInfoData wbuf;
static StringInfoData rx_scratch;
#define SHARED_BUF_KEEP (256 * 1024)

static int	wake_fd = -1;
static bool postmaster_died = false;
static bool shutdown_deadline_passed = false;
static lws_sorted_usec_list_t shutdown_sul;
static lws_sorted_usec_list_t housekeeping_sul;

/* how often the loop wakes up with nothing to do, for timed clean-ups */
#define HOUSEKEEPING_INTERVAL (60 * LWS_USEC_PER_SEC)

/*
 * Idle policy of WebSocket connections (plank.ping_interval, ping_timeout):
 * libwebsockets pings a connection silent for secs_since_valid_ping and drops
 * it when nothing valid came for secs_since_valid_hangup.  The vhosts keep a
 * pointer to it, so a reload updates it in place.
 */
static lws_retry_bo_t idle_policy;
static bool pings_were_on = false;

static char static_dir[MAXPGPATH];
static struct lws_http_mount static_mount;
static struct lws_http_mount health_mount;
static struct lws_http_mount metrics_mount;

/* ---------- outgoing queue ---------- */

/* queue entries of all connections' backlogs (one per message and client) */
static uint64 backlog_entries = 0;

static void
conn_purge_queue(PlankConn *conn)
{
	backlog_entries -= conn->q_len;
	while (conn->q_len > 0)
	{
		plank_frame_unref(conn->queue[conn->q_head].frame);
		conn->q_head = (conn->q_head + 1) % conn->q_cap;
		conn->q_len--;
	}
	conn->q_head = 0;
	conn->q_bytes = 0;
	conn->q_big = 0;
	if (conn->over_listed)
	{
		dlist_delete(&conn->over_node);
		conn->over_listed = false;
	}
}

/*
 * plank_conn_close
 *		Start closing a connection with an RFC 6455 close code (reason must be
 *		a constant string): queued messages are dropped and the close frame
 *		goes out on the next writeable callback.
 */
static void
plank_conn_close(PlankConn *conn, int code, const char *reason)
{
	if (conn->closing)
		return;
	conn->closing = true;
	conn->close_code = code;
	if (conn->end_code == 0)
		conn->end_code = code;
	conn->close_reason = reason;
	conn_purge_queue(conn);
	lws_callback_on_writable(conn->wsi);
}

/*
 * plank_conn_close_after_send
 *		Close a connection with an RFC 6455 close code once the messages
 *		already queued for it (an error explaining why) have been sent.
 */
void
plank_conn_close_after_send(PlankConn *conn, int code, const char *reason)
{
	if (conn->q_len == 0)
	{
		plank_conn_close(conn, code, reason);
		return;
	}
	conn->close_when_drained = true;
	conn->close_code = code;
	conn->close_reason = reason;
}

/*
 * The slow-client rule.  A client is slow only when its own socket stops
 * draining, never because the worker itself is behind: under a sustained
 * load the worker may queue a long backlog for every client in one loop pass
 * and reach their writeable callbacks much later, and clients that read
 * everything they get must keep their connection.
 *
 * What tells them apart is poll().  Each pass of the worker's loop polls
 * every socket once (plank_server_service: one lws_service call is one poll)
 * and a connection with a backlog has asked for POLLOUT.  The socket becomes
 * writable as soon as the client has read part of what the kernel holds for
 * it, and stays writable until the worker writes again, so a reading client
 * gets a writeable callback in the first pass whose poll comes after it
 * read, however long the worker was busy in between.  A connection records
 * the pass and the time of its last write progress (a writeable callback, or
 * the moment its backlog started, from empty); it is stalled when
 *
 *	- at least STALL_PASSES whole passes, each begun after that progress,
 *	  polled its socket without it becoming writable (libwebsockets may use
 *	  one writable pass to finish a partly sent frame of its own without
 *	  calling back, so one such pass proves nothing), and
 *	- the last of those polls began plank.max_client_lag or more after that
 *	  progress: the socket has been full, as seen by poll() itself, for that
 *	  long.
 *
 * Time the worker spends busy outside poll() after the last poll is not
 * counted, and no number of quick passes counts without the time.
 *
 * Only a connection whose backlog is over plank.max_client_buffer (not
 * counting its largest message) is checked: a stalled client under that
 * bound keeps its backlog, and one over it that drains is kept too.  It is
 * checked when a message would take it over the bound, and, while it stays
 * over, by a sweep of the connections over the bound (over_conns) every
 * STALL_SWEEP_MS or so, whose timer also makes the loop poll when nothing
 * else happens.  A stalled client over the bound is closed with 1013 (try
 * again later).
 */
#define STALL_PASSES 3

static uint64 service_passes_started = 0;	/* lws_service calls begun */
static uint64 service_passes_done = 0;	/* ... and returned */
static TimestampTz last_poll_began = 0; /* when the last returned one began */
static dlist_head over_conns = DLIST_STATIC_INIT(over_conns);
static lws_sorted_usec_list_t stall_sul;
static bool stall_sul_armed = false;

/* the sweep interval: a quarter of plank.max_client_lag, 10 ms to 1 s */
#define STALL_SWEEP_MS Max(10, Min(plank_max_client_lag / 4, 1000))

static void stall_sweep(lws_sorted_usec_list_t *sul);

/* conn_progress: the connection's socket took data or became writable now */
static inline void
conn_progress(PlankConn *conn, TimestampTz now)
{
	conn->progress_pass = service_passes_started;
	conn->progress_at = now;
	conn->outq_seen = -1;
}

/*
 * conn_over: is the backlog over plank.max_client_buffer (see plank_conn_send)?
 * The backlog is its queue plus, while it has events to read from the log,
 * every event after its cursor that the ring holds.
 */
static bool
conn_over(PlankConn *conn)
{
	uint64		backlog = conn->q_bytes;

	if (conn->want_pull)
		backlog += plank_replay_bytes_after(conn->cursor);
	return backlog > conn->q_big + (uint64) plank_max_client_buffer * 1024;
}

/* conn_watch: put a connection with a backlog under the stall sweep */
static void
conn_watch(PlankConn *conn)
{
	if (conn->over_listed)
		return;
	dlist_push_tail(&over_conns, &conn->over_node);
	conn->over_listed = true;
	if (!stall_sul_armed)
	{
		lws_sul_schedule(lws_ctx, 0, &stall_sul, stall_sweep,
						 (lws_usec_t) STALL_SWEEP_MS * LWS_US_PER_MS);
		stall_sul_armed = true;
	}
}

/*
 * conn_stalled: has conn's socket stopped draining (see above)?  poll()
 * reports a socket writable only once a good part of its send buffer is
 * free, and the kernel grows that buffer to megabytes: a client that reads
 * slowly through it drains the socket for seconds without poll() saying so.
 * So before a connection counts as stalled, the bytes its socket still holds
 * (SIOCOUTQ: sent but not acknowledged, and unsent) must not have fallen
 * since the previous check (the first check only records them: a client is
 * closed a sweep interval after plank.max_client_lag at the earliest).
 */
static bool
conn_stalled(PlankConn *conn)
{
	int			outq;

	if (service_passes_done < conn->progress_pass + STALL_PASSES ||
		!TimestampDifferenceExceeds(conn->progress_at, last_poll_began,
									plank_max_client_lag))
		return false;
	if (ioctl(lws_get_socket_fd(conn->wsi), SIOCOUTQ, &outq) != 0)
		return true;
	if (conn->outq_seen < 0 || outq < conn->outq_seen)
	{
		/* drained since the last check (or the first check): not stalled yet */
		bool		first = conn->outq_seen < 0;

		if (!first)
			conn_progress(conn, GetCurrentTimestamp());
		conn->outq_seen = outq;
		return false;
	}
	return true;
}

/* conn_close_stalled: close a stalled client with 1013 */
static void
conn_close_stalled(PlankConn *conn)
{
	ereport(plank_log_level,
			(errmsg("plank closing connection %llu from %s as role %s: its socket took no data for plank.max_client_lag with more than plank.max_client_buffer queued",
					(unsigned long long) conn->id, conn->peer,
					conn->ident.role ? conn->ident.role : "(none)")));
	plank_conn_close(conn, PLANK_CLOSE_TRY_AGAIN_LATER, "client too slow");
	plank_stats_count(PLANK_STAT_DROPPED_SLOW, 1);
}

/* The sweep of the connections over the bound (a libwebsockets timer). */
static void
stall_sweep(lws_sorted_usec_list_t *sul)
{
	dlist_mutable_iter iter;

	stall_sul_armed = false;
	dlist_foreach_modify(iter, &over_conns)
	{
		PlankConn  *conn = dlist_container(PlankConn, over_node, iter.cur);

		if (conn->closing || (!conn->want_pull && !conn_over(conn)))
		{
			dlist_delete(&conn->over_node);
			conn->over_listed = false;
		}
		else if (conn_stalled(conn) && conn_over(conn))
			conn_close_stalled(conn);	/* leaves the list */
	}
	if (!dlist_is_empty(&over_conns))
	{
		lws_sul_schedule(lws_ctx, 0, &stall_sul, stall_sweep,
						 (lws_usec_t) STALL_SWEEP_MS * LWS_US_PER_MS);
		stall_sul_armed = true;
	}
}

/*
 * The worker's memory bound.  Every connection's backlog is a queue of
 * references to shared messages, one entry per message and client, so under
 * a sustained load the worker cannot keep up with (a writer committing
 * faster than the fan-out can deliver) the entries grow with events x
 * clients even though every client reads.  Past plank.max_backlog_memory of
 * entries, the client furthest behind (the longest queue) is closed with
 * 1013, and so on until the backlogs fit: it reconnects and resumes from
 * the replay ring, or is told to resync.  The scan runs only over the bound.
 */
static bool
shed_backlog(PlankConn *sending)
{
	bool		sending_closed = false;

	while ((backlog_entries + 1) * sizeof(PlankOutMsg) > (uint64) plank_max_backlog_memory * 1024)
	{
		dlist_iter	iter;
		PlankConn  *furthest = NULL;

		dlist_foreach(iter, &all_conns)
		{
			PlankConn  *c = dlist_container(PlankConn, node, iter.cur);

			if (!c->closing && c->q_len > 0 && (furthest == NULL || c->q_len > furthest->q_len))
				furthest = c;
		}
		if (furthest == NULL)
			break;
		ereport(plank_log_level,
				(errmsg("plank closing connection %llu from %s as role %s: the backlogs of all clients exceed plank.max_backlog_memory and it is the furthest behind (%d messages)",
						(unsigned long long) furthest->id, furthest->peer,
						furthest->ident.role ? furthest->ident.role : "(none)", furthest->q_len)));
		plank_conn_close(furthest, PLANK_CLOSE_TRY_AGAIN_LATER, "client too slow");
		plank_stats_count(PLANK_STAT_DROPPED_SLOW, 1);
		if (furthest == sending)
			sending_closed = true;
	}
	return sending_closed;
}

/*
 * plank_conn_send
 *		Queue a frame for a connection (taking a reference).  sub, when not
 *		NULL, names the subscription the message answers: its prefix is
 *		written before the frame.  A client whose backlog is over
 *		plank.max_client_buffer while its socket has stopped draining for
 *		plank.max_client_lag is closed with 1013 (try again later); see the
 *		slow-client rule above.  When the backlogs of all connections would
 *		take more than plank.max_backlog_memory, the client furthest behind
 *		is closed with 1013 (shed_backlog).
 */
void
plank_conn_send(PlankConn *conn, PlankFrame *frame, PlankSub *sub)
{
	plank_conn_send_event(conn, frame, sub, plank_now);
}

/*
 * plank_conn_send_event
 *		plank_conn_send() for the frame of an event the worker received at
 *		received_at (the start of the latency it reports, plank_stats_sent).
 */
void
plank_conn_send_event(PlankConn *conn, PlankFrame *frame, PlankSub *sub,
					  TimestampTz received_at)
{
	PlankOutMsg *slot;

	if (conn->closing || conn->close_when_drained)
		return;
	if ((backlog_entries + 1) * sizeof(PlankOutMsg) > (uint64) plank_max_backlog_memory * 1024 &&
		shed_backlog(conn))
		return;

	/*
	 * The bound is on the backlog not counting its largest message, so that
	 * a large row or snapshot is always accepted.  q_big only drops when the
	 * queue empties: an over-estimate, on the lenient side.
	 */
	{
		size_t		big = Max(conn->q_big, (size_t) frame->len);

		if (conn->q_bytes + frame->len > big + (size_t) plank_max_client_buffer * 1024)
		{
			if (conn_stalled(conn))
			{
				conn_close_stalled(conn);
				return;
			}
			conn_watch(conn);
		}
		conn->q_big = big;
	}

	if (conn->q_len == conn->q_cap)
	{
		/* grow the ring, unrolling it so that it starts at index 0 */
		int			newcap = conn->q_cap * 2;
		PlankOutMsg *newq = MemoryContextAlloc(conn->mcxt, newcap * sizeof(PlankOutMsg));
		int			i;

		for (i = 0; i < conn->q_len; i++)
			newq[i] = conn->queue[(conn->q_head + i) % conn->q_cap];
		pfree(conn->queue);
		conn->queue = newq;
		conn->q_cap = newcap;
		conn->q_head = 0;
	}

	slot = &conn->queue[(conn->q_head + conn->q_len) % conn->q_cap];
	slot->frame = frame;
	slot->sub = sub;
	slot->queued_at = received_at;
	frame->refcount++;
	conn->q_bytes += frame->len;
	backlog_entries++;
	if (conn->q_len++ == 0 && !conn->want_pull)
	{
		/* the backlog starts: the stall clock starts from here */
		conn_progress(conn, GetCurrentTimestamp());
		lws_callback_on_writable(conn->wsi);
	}
}

/*
 * The log and its cursors.  A subscription that gets each event's own frame
 * (a channel, or a table the role reads whole, without row-level security)
 * keeps no queue of its own: its connection has a cursor into the replay
 * ring (replay.c), and subs.c's filler turns the events after the cursor into
 * messages only when the socket is writable, a run at a time.  The backlog
 * of a client that reads is then its position in the ring, whatever the
 * number of clients; one that falls out of the ring is told to resync
 * (out_of_range).  Subscriptions under row-level security or column
 * privileges keep queues of their own (visibility.c), bounded by
 * plank.max_backlog_memory.
 */

/*
 * What the layers above do for a connection (plank_server_start): the
 * transport calls up only through these.
 */
static PlankConnHandlers handlers;

/*
 * plank_conn_wake
 *		Event seq may be for one of conn's subscriptions that read the log:
 *		ask for a writeable callback, whose filler reads the log from the
 *		cursor on.  Costs a test when the connection is awake already.  A
 *		connection that is not awake has been given every event for it up to
 *		seq - 1 (it was woken for each), so its cursor moves there.
 */
void
plank_conn_wake(PlankConn *conn, uint64 seq)
{
	if (conn->want_pull || conn->closing)
		return;
	conn->want_pull = true;
	if (conn->cursor < seq - 1)
		conn->cursor = seq - 1;
	if (conn->q_len == 0)
	{
		/* the backlog starts: the stall clock starts from here */
		conn_progress(conn, GetCurrentTimestamp());
		lws_callback_on_writable(conn->wsi);
	}
	conn_watch(conn);
}

/* ---------- notices to a subscription ---------- */

/*
 * plank_conn_resync
 *		Tell a subscription's client that it missed changes and must resync
 *		(docs/PROTOCOL.md "resync_required"), with a reason (a short ASCII
 *		word).  Never raises, except out of memory.
 */
void
plank_conn_resync(PlankSub *sub, const char *reason)
{
	PlankFrame *frame = plank_resync_frame(reason);

	plank_stats_count(PLANK_STAT_RESYNCS, 1);
	plank_conn_send(sub->conn, frame, sub);
	plank_frame_unref(frame);
}

/*
 * plank_conn_undeliverable
 *		A change could not be sent to a subscription exactly (why: the
 *		error's message): count it, log it, and tell the client to resync
 *		with reason "undeliverable_change" (docs/PROTOCOL.md).  Never raises.
 */
void
plank_conn_undeliverable(PlankSub *sub, const PlankEvent *ev, const char *why)
{
	plank_stats_count(PLANK_STAT_UNDELIVERABLE, 1);
	ereport(WARNING,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("plank could not send change " UINT64_FORMAT " of table %s.%s to subscription \"%s\": %s",
					ev->seq, ev->schema, ev->table, sub->id, why),
			 errdetail("The subscription was sent resync_required with reason \"undeliverable_change\".")));
	plank_conn_resync(sub, "undeliverable_change");
}

/* plank_conn_send_text: queue a one-off message (data without its "{"). */
void
plank_conn_send_text(PlankConn *conn, const char *data, int len)
{
	PlankFrame *frame = plank_frame_make(data, len);

	plank_conn_send(conn, frame, NULL);
	plank_frame_unref(frame);
}

/* plank_conn_drop_sub_messages: remove queued messages of a subscription. */
void
plank_conn_drop_sub_messages(PlankConn *conn, PlankSub *sub)
{
	int			i;
	int			kept = 0;

	for (i = 0; i < conn->q_len; i++)
	{
		PlankOutMsg msg = conn->queue[(conn->q_head + i) % conn->q_cap];

		if (msg.sub == sub)
		{
			conn->q_bytes -= msg.frame->len;
			plank_frame_unref(msg.frame);
		}
		else
			conn->queue[(conn->q_head + kept++) % conn->q_cap] = msg;
	}
	conn->q_len = kept;
}

/* ---------- connection life cycle ---------- */

/*
 * Is the host part of a Host header an IP address or "localhost"?  Only
 * then does "same origin" mean this server: a DNS name in Host could be an
 * attacker's, pointed at this address (DNS rebinding), so pages served
 * under a name must be listed in plank.allowed_origins.
 */
static bool
host_is_address(const char *hostport)
{
	char		host[256];
	unsigned char buf[sizeof(struct in6_addr)];
	const char *end;

	if (hostport[0] == '[')
	{
		end = strchr(hostport, ']');
		if (end == NULL || end - hostport - 1 >= (int) sizeof(host))
			return false;
		memcpy(host, hostport + 1, end - hostport - 1);
		host[end - hostport - 1] = '\0';
		return inet_pton(AF_INET6, host, buf) == 1;
	}
	end = strchr(hostport, ':');
	if (end == NULL)
		end = hostport + strlen(hostport);
	if (end - hostport >= (int) sizeof(host))
		return false;
	memcpy(host, hostport, end - hostport);
	host[end - hostport] = '\0';
	return pg_strcasecmp(host, "localhost") == 0 || inet_pton(AF_INET, host, buf) == 1;
}

/*
 * Is a page of this origin allowed to connect?  The pages Plank serves
 * itself (the Origin equals this server's Host, when that is an address),
 * and the origins in plank.allowed_origins ("*": any).
 */
static bool
origin_allowed(struct lws *wsi, const char *origin)
{
	char		host[256];
	char		self[300];
	char	   *list;
	List	   *origins;
	ListCell   *lc;
	bool		allowed = false;

	if (lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST) > 0 && host_is_address(host))
	{
		/*
		 * Either scheme: behind a TLS-terminating proxy the page is https
		 * while Plank itself speaks plain HTTP.  A browser sets Origin
		 * itself, so another site cannot claim this host.
		 */
		snprintf(self, sizeof(self), "http://%s", host);
		if (pg_strcasecmp(origin, self) == 0)
			return true;
		snprintf(self, sizeof(self), "https://%s", host);
		if (pg_strcasecmp(origin, self) == 0)
			return true;
	}

	list = pstrdup(plank_allowed_origins);
	if (SplitGUCList(list, ',', &origins))
	{
		foreach(lc, origins)
		{
			const char *o = (const char *) lfirst(lc);

			if (strcmp(o, "*") == 0 || pg_strcasecmp(o, origin) == 0)
				allowed = true;
		}
	}
	list_free(origins);
	pfree(list);
	return allowed;
}

/* The connection's deadline: the end of its auth timeout, or its token's expiry. */
static void conn_deadline(lws_sorted_usec_list_t *sul);

/* Arm the expiry timer; a far expiry is re-armed by the day. */
static void
arm_expiry(PlankConn *conn)
{
	int64		secs = conn->ident.exp - (int64) time(NULL);

	lws_sul_schedule(lws_ctx, 0, &conn->deadline, conn_deadline,
					 (lws_usec_t) Min(Max(secs, 0), SECS_PER_DAY) * LWS_USEC_PER_SEC);
}

static void
conn_deadline(lws_sorted_usec_list_t *sul)
{
	PlankConn  *conn = lws_container_of(sul, PlankConn, deadline);

	if (!OidIsValid(conn->ident.roleid))
		plank_conn_close(conn, PLANK_CLOSE_AUTH_FAILED, "authentication timeout");
	else if (conn->ident.exp > (int64) time(NULL))
		arm_expiry(conn);
	else
		plank_conn_close(conn, PLANK_CLOSE_TOKEN_EXPIRED, "token expired");
}

/*
 * Close a connection whose identity (its token's sub, its role, or for a
 * client without a token its address) a ban of plank.disconnect() covers,
 * with 4004; also shows the identity in plank.connections.
 */
static void
refuse_if_banned(PlankConn *conn)
{
	TimestampTz until;

	if (plank_stats_conn_identified(conn, &until))
	{
		ereport(plank_log_level,
				(errmsg("plank closing connection %llu from %s as role %s: banned by plank.disconnect() until %s",
						(unsigned long long) conn->id, conn->peer,
						conn->ident.role ? conn->ident.role : "(none)", timestamptz_to_str(until))));
		plank_conn_close(conn, PLANK_CLOSE_BANNED, "banned by an administrator");
	}
}

/*
 * More connections wait to authenticate than plank.max_unauthenticated: close
 * the one that has waited longest (not conn, the newest), with 1013.  A
 * client that sends its token as soon as it is welcomed thus always gets in,
 * unless sockets that never authenticate are opened faster than its round
 * trip.
 */
static void
evict_oldest_unauthenticated(PlankConn *newest)
{
	dlist_iter	iter;

	dlist_foreach(iter, &unauth_conns)
	{
		PlankConn  *conn = &dlist_container(PlankSession, unauth_node, iter.cur)->conn_storage;

		if (conn != newest && !conn->closing)
		{
			ereport(plank_log_level,
					(errmsg("plank closing connection %llu from %s: plank.max_unauthenticated (%d) reached and it waited longest",
							(unsigned long long) conn->id, conn->peer, plank_max_unauthenticated)));
			plank_conn_close(conn, PLANK_CLOSE_TRY_AGAIN_LATER, "too many unauthenticated connections");
			return;
		}
	}
}

/*
 * plank_conn_set_identity
 *		Make a connection act as a verified identity (copied into its memory
 *		context) and arm its expiry, replacing any earlier one.  A connection
 *		that had no role and would exceed plank.max_connections with one is
 *		closed with 1013 (try again later); one whose identity is banned by
 *		plank.disconnect() with 4004: it is then closing when this returns,
 *		and replies the caller queues are dropped.
 */
void
plank_conn_set_identity(PlankConn *conn, const PlankIdentity *id)
{
	bool		was_unauth = !OidIsValid(conn->ident.roleid);

	if (conn->ident.role)
		pfree(conn->ident.role);
	if (conn->ident.claims)
		pfree(conn->ident.claims);
	conn->ident.roleid = id->roleid;
	conn->ident.role = MemoryContextStrdup(conn->mcxt, id->role);
	conn->ident.claims = MemoryContextStrdup(conn->mcxt, id->claims);
	conn->ident.exp = id->exp;
	conn->ident.from_token = id->from_token;

	lws_sul_cancel(&conn->deadline);
	if (id->exp > 0)
		arm_expiry(conn);

	if (was_unauth && OidIsValid(id->roleid))
	{
		dlist_delete(&session_of(conn)->unauth_node);
		nunauth--;
		/* the handshake checked this too, but other clients may have authenticated since */
		if (nconns - nunauth > plank_max_connections)
		{
			ereport(plank_log_level,
					(errmsg("plank closing connection %llu from %s as role %s: plank.max_connections (%d) reached",
							(unsigned long long) conn->id, conn->peer, conn->ident.role, plank_max_connections)));
			plank_conn_close(conn, PLANK_CLOSE_TRY_AGAIN_LATER, "too many connections");
			return;
		}
	}
	refuse_if_banned(conn);
}

static void
conn_open(struct lws *wsi, PlankSession *pss)
{
	MemoryContext mcxt;
	MemoryContext oldcxt;
	PlankConn  *conn;
	PlankIdentity ident;

	/*
	 * The connection's own memory (its queue, identity and subscriptions;
	 * the PlankConn is in the session): one block of 1.25 kB holds it with a
	 * subscription (880 bytes measured with one), where the default 1 kB
	 * start took three blocks, 4 kB.
	 */
	mcxt = AllocSetContextCreate(conns_cxt, "plank connection", 1280,
								 ALLOCSET_SMALL_INITSIZE, ALLOCSET_DEFAULT_MAXSIZE);
	oldcxt = MemoryContextSwitchTo(mcxt);
	conn = &pss->conn_storage;
	memset(conn, 0, sizeof(PlankConn));
	conn->wsi = wsi;
	conn->mcxt = mcxt;
	/* ids are unique across the workers of a database: (id - 1) % workers = number */
	conn->id = next_conn_id * plank_workers + plank_worker_number + 1;
	next_conn_id++;
	/* conn->rx stays empty (data NULL) until a message arrives in pieces */
	conn->q_cap = 4;
	conn->queue = palloc(conn->q_cap * sizeof(PlankOutMsg));
	dlist_init(&conn->subs);
	lws_get_peer_simple(wsi, conn->peer, sizeof(conn->peer));
	conn->rate_tokens = 2.0 * plank_rate_limit;
	conn->rate_checked = GetCurrentTimestamp();
	conn->opened_at = conn->rate_checked;
	MemoryContextSwitchTo(oldcxt);

	pss->conn = conn;
	dlist_push_tail(&all_conns, &conn->node);
	nconns++;
	dlist_push_tail(&unauth_conns, &pss->unauth_node);
	nunauth++;
	plank_stats_conn_opened(conn);

	if (plank_auth_anonymous(mcxt, &ident))
		plank_conn_set_identity(conn, &ident);
	else
	{
		lws_sul_schedule(lws_ctx, 0, &conn->deadline, conn_deadline,
						 (lws_usec_t) plank_auth_timeout * LWS_USEC_PER_SEC);
		/* closing ones are still counted: evict one per newcomer */
		if (nunauth > plank_max_unauthenticated)
			evict_oldest_unauthenticated(conn);
		refuse_if_banned(conn);
	}
	plank_stats_conn_updated(conn);
	handlers.welcome(conn);

	if (plank_log_connections && conn->ident.role)
		ereport(plank_log_level,
				(errmsg("plank connection %llu from %s as role %s", (unsigned long long) conn->id,
						conn->peer, conn->ident.role)));
	else if (plank_log_connections)
		ereport(plank_log_level,
				(errmsg("plank connection %llu from %s waiting to authenticate",
						(unsigned long long) conn->id, conn->peer)));
}

/*
 * Check a WebSocket handshake before it completes: the connection limits and
 * the Origin (cross-site WebSocket hijacking).  Returns non-zero to refuse.
 * A new connection has no role yet (unless plank.anonymous_role gives it
 * one): it is refused when plank.max_connections clients have a role
 * already, or when it would leave no room for them (more than
 * plank.max_connections + plank.max_unauthenticated sockets).  Beyond
 * plank.max_unauthenticated waiting ones, conn_open() closes the oldest.
 * Tokens come in the first message, not in Sec-WebSocket-Protocol:
 * libwebsockets 4.1 refuses that header beyond 127 bytes, shorter than a JWT.
 */
#define PLANK_ORIGIN_REFUSED_BODY \
	"Plank refused this WebSocket handshake: the page's origin (its Origin header) is not " \
	"allowed. To allow it, add the origin (scheme://host[:port], such as " \
	"https://app.example) to the setting plank.allowed_origins in postgresql.conf and " \
	"reload PostgreSQL (SELECT pg_reload_conf()). The server log names the origin refused."

static int
conn_filter(struct lws *wsi)
{
	char		buf[1024];
	int			len;

	if (nconns - nunauth >= plank_max_connections ||
		nconns >= plank_max_connections + plank_max_unauthenticated)
	{
		if (nconns - nunauth >= plank_max_connections)
			ereport(plank_log_level,
					(errmsg("plank refused a connection: plank.max_connections (%d) reached",
							plank_max_connections)));
		else
			ereport(plank_log_level,
					(errmsg("plank refused a connection: plank.max_connections + plank.max_unauthenticated (%d) sockets are open",
							plank_max_connections + plank_max_unauthenticated),
					 errdetail("%d clients wait to authenticate or are being closed.", nunauth)));
		lws_return_http_status(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "too many connections");
		return 1;
	}

	len = lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_ORIGIN);
	if (len > 0 && !origin_allowed(wsi, buf))
	{
		ereport(plank_log_level,
				(errmsg("plank refused a connection from origin \"%s\"", buf),
				 errhint("Add the origin to plank.allowed_origins to allow its pages.")));
		/*
		 * A browser shows only the status to the page ("Unexpected response
		 * code: 403"); the body, in its network panel, names the setting.  It
		 * does not echo the Origin (text the page chose, in an HTML body).
		 */
		lws_return_http_status(wsi, HTTP_STATUS_FORBIDDEN, PLANK_ORIGIN_REFUSED_BODY);
		return 1;
	}

	return 0;
}

static void
conn_free(PlankConn *conn)
{
	dlist_mutable_iter iter;

	lws_sul_cancel(&conn->deadline);
	dlist_foreach_modify(iter, &conn->subs)
		handlers.sub_closed(dlist_container(PlankSub, conn_node, iter.cur));
	conn_purge_queue(conn);
	if (conn->rx.data != NULL)
		pfree(conn->rx.data);
	dlist_delete(&conn->node);
	nconns--;
	if (!OidIsValid(conn->ident.roleid))
	{
		dlist_delete(&session_of(conn)->unauth_node);
		nunauth--;
	}
	plank_stats_conn_closed(conn);

	if (plank_log_connections)
	{
		long		secs;
		int			usecs;

		/* as log_disconnections: the session time; 1006 when no close frame came or went */
		TimestampDifference(conn->opened_at, GetCurrentTimestamp(), &secs, &usecs);
		ereport(plank_log_level,
				(errmsg("plank disconnection %llu from %s as role %s: close code %d, session time %ld:%02ld:%02ld.%03d",
						(unsigned long long) conn->id, conn->peer,
						conn->ident.role ? conn->ident.role : "(none)",
						conn->end_code ? conn->end_code : LWS_CLOSE_STATUS_ABNORMAL_CLOSE,
						secs / 3600, (secs / 60) % 60, secs % 60, usecs / 1000)));
	}
	MemoryContextDelete(conn->mcxt);
}

/*
 * Token bucket of plank.rate_limit: refilled at that many messages per
 * second, holding at most twice as many.
 */
static bool
rate_allows(PlankConn *conn)
{
	TimestampTz now;
	double		burst = 2.0 * plank_rate_limit;

	if (plank_rate_limit <= 0)
		return true;
	now = GetCurrentTimestamp();
	conn->rate_tokens += (double) (now - conn->rate_checked) / USECS_PER_SEC * plank_rate_limit;
	conn->rate_checked = now;
	if (conn->rate_tokens > burst)
		conn->rate_tokens = burst;
	if (conn->rate_tokens < 1.0)
		return false;
	conn->rate_tokens -= 1.0;
	return true;
}

/* Reassemble a message from its fragments; handle it once complete. */
static int
conn_receive(PlankConn *conn, const char *in, size_t len)
{
	struct lws *wsi = conn->wsi;

	if (conn->closing)
		return 0;

	if (lws_frame_is_binary(wsi))
	{
		plank_conn_close(conn, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE, "binary frames are not supported");
		return 0;
	}
	if ((size_t) conn->rx.len + len > (size_t) plank_max_message_size * 1024)
	{
		plank_conn_close(conn, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message exceeds plank.max_message_size");
		return 0;
	}
	if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0)
	{
		StringInfo	msg;

		/* any message proves the connection alive, like a pong */
		lws_validity_confirmed(wsi);
		plank_stats_conn_activity(conn);
		if (!rate_allows(conn))
		{
			ereport(plank_log_level,
					(errmsg("plank closing connection %llu from %s as role %s: messages faster than plank.rate_limit (%d per second)",
							(unsigned long long) conn->id, conn->peer,
							conn->ident.role ? conn->ident.role : "(none)", plank_rate_limit)));
			plank_conn_close(conn, LWS_CLOSE_STATUS_POLICY_VIOLATION, "message rate exceeds plank.rate_limit");
			plank_stats_count(PLANK_STAT_RATE_LIMITED, 1);
			return 0;
		}
		if (conn->rx.data != NULL)
			msg = &conn->rx;	/* the last piece of a message */
		else
		{
			msg = &rx_scratch;	/* a message in one piece */
			resetStringInfo(msg);
		}
		appendBinaryStringInfo(msg, in, len);
		handlers.message(conn, msg->data, msg->len);
		if (msg == &conn->rx)
		{
			pfree(conn->rx.data);
			memset(&conn->rx, 0, sizeof(conn->rx));
		}
		else if (msg->maxlen > SHARED_BUF_KEEP)
		{
			pfree(msg->data);
			initStringInfo(msg);
		}
		return 0;
	}

	/*
	 * a piece of a message: kept until its last piece arrives, in memory
	 * shared by all connections (conns_cxt), so that what one freed serves
	 * the next rather than staying in a connection's own context
	 */
	if (conn->rx.data == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(conns_cxt);

		initStringInfo(&conn->rx);
		MemoryContextSwitchTo(oldcxt);
	}
	appendBinaryStringInfo(&conn->rx, in, len);
	return 0;
}

/* at most this many messages go out per writeable callback, for fairness */
#define WRITE_BURST 256
#define FILL_MSGS 64
#define FILL_BYTES (64 * 1024)

/*
 * Write queued messages, each in a WebSocket text frame of its own: as many
 * as the socket takes without libwebsockets having to buffer a partial
 * write, up to WRITE_BURST, so that a client that fell behind catches up
 * without one poll round trip per message.  When the queue runs dry and the
 * connection has events to read from the log, the filler queues the next
 * run of them (FILL_MSGS messages or FILL_BYTES at most).
 */
static int
conn_writeable(PlankConn *conn)
{
	int			n;
	int			fd = lws_get_socket_fd(conn->wsi);
	int			one = 1;
	int			zero = 0;
	bool		corked;
	TimestampTz now;

	if (conn->closing)
	{
		lws_close_reason(conn->wsi, conn->close_code,
						 (unsigned char *) conn->close_reason, strlen(conn->close_reason));
		return -1;
	}

	/* a burst goes out in as few TCP segments as it fills (TCP_CORK) */
	now = GetCurrentTimestamp();
	conn_progress(conn, now);
	if (conn->q_len == 0 && conn->want_pull)
		handlers.fill(conn, FILL_MSGS, FILL_BYTES);
	corked = (conn->q_len > 1 || conn->want_pull) &&
		setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof(one)) == 0;
	for (n = 0; n < WRITE_BURST && conn->q_len > 0 && !lws_partial_buffered(conn->wsi); n++)
	{
		PlankOutMsg msg = conn->queue[conn->q_head];
		int			len;

		conn->q_head = (conn->q_head + 1) % conn->q_cap;
		conn->q_len--;
		backlog_entries--;
		conn->q_bytes -= msg.frame->len;
		if (conn->q_len == 0)
			conn->q_big = 0;

		wbuf.len = 0;
		enlargeStringInfo(&wbuf, LWS_PRE);
		wbuf.len = LWS_PRE;
		if (msg.sub)
			appendBinaryStringInfo(&wbuf, msg.sub->prefix, msg.sub->prefix_len);
		else
			appendStringInfoChar(&wbuf, '{');
		appendBinaryStringInfo(&wbuf, msg.frame->data, msg.frame->len);
		plank_frame_unref(msg.frame);

		len = wbuf.len - LWS_PRE;
		if (lws_write(conn->wsi, (unsigned char *) wbuf.data + LWS_PRE, len, LWS_WRITE_TEXT) < len)
			return -1;
		plank_stats_sent(conn, len, msg.queued_at, now);
		if (conn->q_len == 0 && conn->want_pull && !conn->closing)
			handlers.fill(conn, FILL_MSGS, FILL_BYTES);
	}
	if (wbuf.maxlen > SHARED_BUF_KEEP)
	{
		pfree(wbuf.data);
		initStringInfo(&wbuf);
	}
	if (corked)
		(void) setsockopt(fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero));

	if (conn->closing || conn->q_len > 0 || conn->want_pull)
		lws_callback_on_writable(conn->wsi);
	else if (conn->close_when_drained)
		plank_conn_close(conn, conn->close_code, conn->close_reason);
	return 0;
}

/* May this client read /health and /metrics (plank.http_allowed_addresses)? */
static bool
http_client_allowed(struct lws *wsi)
{
	char		peer[64];
	char	   *list;
	List	   *addrs;
	ListCell   *lc;
	bool		allowed = false;

	lws_get_peer_simple(wsi, peer, sizeof(peer));
	list = pstrdup(plank_http_allowed_addresses);
	if (SplitGUCList(list, ',', &addrs))
	{
		foreach(lc, addrs)
		{
			const char *a = (const char *) lfirst(lc);

			if (strcmp(a, "*") == 0 || strcmp(a, peer) == 0 ||
				(strcmp(a, "localhost") == 0 &&
				 (strcmp(peer, "127.0.0.1") == 0 || strcmp(peer, "::1") == 0 ||
				  strcmp(peer, "::ffff:127.0.0.1") == 0)))
				allowed = true;
		}
	}
	list_free(addrs);
	pfree(list);
	return allowed;
}

/* Answer with a bare status; returns what the callback must return. */
static int
http_status_only(struct lws *wsi, unsigned int code)
{
	if (lws_return_http_status(wsi, code, NULL))
		return -1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/*
 * Answer GET /health (JSON; 503 when the database does not answer) and
 * GET /metrics (Prometheus text format), for allowed addresses (else 403).
 * The body is written on the next writeable callback.
 */
static int
http_request(struct lws *wsi, PlankSession *pss)
{
	char		uri[64];
	StringInfoData body;
	int			status = HTTP_STATUS_OK;
	const char *ctype;
	unsigned char hdr[LWS_PRE + 1024];
	unsigned char *start = hdr + LWS_PRE;
	unsigned char *p = start;
	unsigned char *end = hdr + sizeof(hdr) - 1;

	if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0)
		return http_status_only(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED);

	initStringInfo(&body);
	if (!http_client_allowed(wsi))
	{
		status = HTTP_STATUS_FORBIDDEN;
		ctype = "text/plain";
		appendStringInfoString(&body, "forbidden: see plank.http_allowed_addresses\n");
	}
	else if (strcmp(uri, "/health") == 0)
	{
		bool		ok;
		int			checkers;
		int			queued;

		ctype = "application/json";
		plank_check_status(&checkers, &queued);
		plank_stats_health(&body, &ok, checkers, queued);
		if (!ok)
			status = HTTP_STATUS_SERVICE_UNAVAILABLE;
	}
	else if (strcmp(uri, "/metrics") == 0)
	{
		ctype = "text/plain; version=0.0.4; charset=utf-8";
		plank_stats_metrics(&body);
	}
	else
	{
		pfree(body.data);
		return http_status_only(wsi, HTTP_STATUS_NOT_FOUND);
	}

	if (lws_add_http_common_headers(wsi, status, ctype, body.len, &p, end) ||
		lws_finalize_write_http_header(wsi, start, &p, end))
	{
		pfree(body.data);
		return -1;
	}
	pss->http_body = MemoryContextAlloc(conns_cxt, LWS_PRE + body.len);
	memcpy(pss->http_body + LWS_PRE, body.data, body.len);
	pss->http_len = body.len;
	pfree(body.data);
	lws_callback_on_writable(wsi);
	return 0;
}

/*
 * plank_server_disconnect
 *		Close the client with this connection id with 4003 (plank.disconnect()),
 *		which the bundled client takes as final: it does not reconnect.
 */
void
plank_server_disconnect(uint64 id)
{
	dlist_iter	iter;

	dlist_foreach(iter, &all_conns)
	{
		PlankConn  *conn = dlist_container(PlankConn, node, iter.cur);

		if (conn->id == id)
		{
			ereport(plank_log_level,
					(errmsg("plank disconnecting connection %llu from %s on request",
							(unsigned long long) id, conn->peer)));
			plank_conn_close(conn, PLANK_CLOSE_ADMIN, "disconnected by an administrator");
			return;
		}
	}
}

/*
 * plank_server_conns_walk
 *		Call fn for every open WebSocket connection.  fn may close the
 *		connection it is given (it stays in the list until libwebsockets
 *		reports it closed).
 */
void
plank_server_conns_walk(plank_conn_walker fn, void *arg)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &all_conns)
		fn(dlist_container(PlankConn, node, iter.cur), arg);
}

static int
plank_ws_callback_guts(struct lws *wsi, enum lws_callback_reasons reason,
					   void *user, void *in, size_t len)
{
	PlankSession *pss = (PlankSession *) user;

	switch (reason)
	{
		case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
			return conn_filter(wsi);
		case LWS_CALLBACK_ESTABLISHED:
			conn_open(wsi, pss);
			return 0;
		case LWS_CALLBACK_RECEIVE:
			return pss->conn ? conn_receive(pss->conn, in, len) : -1;
		case LWS_CALLBACK_RECEIVE_PONG:
			if (pss->conn)
				plank_stats_conn_activity(pss->conn);
			return 0;
		case LWS_CALLBACK_SERVER_WRITEABLE:
			return pss->conn ? conn_writeable(pss->conn) : -1;
		case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
			/* the client's close code (RFC 6455 5.5.1), for the disconnection line */
			if (pss->conn && pss->conn->end_code == 0)
				pss->conn->end_code = len >= 2 ?
					(((unsigned char *) in)[0] << 8) | ((unsigned char *) in)[1] :
					LWS_CLOSE_STATUS_NO_STATUS;
			return 0;
		case LWS_CALLBACK_CLOSED:
			if (pss->conn)
				conn_free(pss->conn);
			pss->conn = NULL;
			return 0;
		case LWS_CALLBACK_HTTP:
			return http_request(wsi, pss);
		case LWS_CALLBACK_HTTP_WRITEABLE:
			if (pss && pss->http_body)
			{
				int			n = lws_write(wsi, (unsigned char *) pss->http_body + LWS_PRE,
										  pss->http_len, LWS_WRITE_HTTP_FINAL);

				pfree(pss->http_body);
				pss->http_body = NULL;
				if (n < 0 || lws_http_transaction_completed(wsi))
					return -1;
				return 0;
			}
			return lws_callback_http_dummy(wsi, reason, user, in, len);
		case LWS_CALLBACK_WSI_DESTROY:
			if (pss && pss->http_body)
			{
				pfree(pss->http_body);
				pss->http_body = NULL;
			}
			return lws_callback_http_dummy(wsi, reason, user, in, len);
		default:
			/* HTTP: static files from the mount */
			return lws_callback_http_dummy(wsi, reason, user, in, len);
	}
}

/*
 * Callback of the "plank" protocol, protocols[0] of every vhost, so that
 * WebSocket clients without Sec-WebSocket-Protocol land on it.  An error
 * raised while handling it is logged and closes this connection only.
 */
static int
plank_ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
				  void *user, void *in, size_t len)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile int rc = 0;

	plank_runtime_tick();
	PG_TRY();
	{
		rc = plank_ws_callback_guts(wsi, reason, user, in, len);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("plank closing a connection after an error: %s", edata->message)));
		FreeErrorData(edata);
		rc = -1;
	}
	PG_END_TRY();
	return rc;
}

/* Callback of the self-pipe and of the postmaster death pipe. */
static int
plank_wake_callback(struct lws *wsi, enum lws_callback_reasons reason,
					void *user, void *in, size_t len)
{
	/* a WebSocket client that asked for this protocol by name is refused */
	if (reason == LWS_CALLBACK_ESTABLISHED)
		return -1;
	if (reason == LWS_CALLBACK_RAW_RX_FILE)
	{
		if (lws_get_socket_fd(wsi) == wake_fd)
		{
			char		buf[64];

			while (read(wake_fd, buf, sizeof(buf)) > 0)
				;
			return 0;
		}
		/* the postmaster death pipe is readable only once the postmaster is gone */
		postmaster_died = true;
		return -1;
	}
	/* poll() reports a dead postmaster's pipe as hung up: lws closes the wsi */
	if (reason == LWS_CALLBACK_RAW_CLOSE_FILE && lws_get_socket_fd(wsi) != wake_fd)
		postmaster_died = true;
	return 0;
}

/* ---------- a port shared by several workers (plank.workers > 1) ---------- */

#define MAX_SHARED_LISTENERS 16
static struct
{
	int			fd;
	struct lws_vhost *vh;
}			shared_listeners[MAX_SHARED_LISTENERS];
static int	nshared_listeners = 0;
static lws_sorted_usec_list_t accept_pause_sul;
static struct lws *shared_listener_wsi[MAX_SHARED_LISTENERS];

static void
accept_resume(lws_sorted_usec_list_t *sul)
{
	for (int i = 0; i < nshared_listeners; i++)
		if (shared_listener_wsi[i])
			lws_rx_flow_control(shared_listener_wsi[i], 1);
}

/*
 * A shared listening socket is readable: accept what is waiting and hand
 * each connection to the address's vhost, as libwebsockets does with its own
 * listening sockets.  At the open-file limit, stop accepting for 100 ms
 * rather than spin on EMFILE.
 */
static int
plank_listen_callback(struct lws *wsi, enum lws_callback_reasons reason,
					  void *user, void *in, size_t len)
{
	int			lfd;
	int			i;

	if (reason == LWS_CALLBACK_ESTABLISHED)
		return -1;
	if (reason != LWS_CALLBACK_RAW_RX_FILE)
		return 0;
	lfd = lws_get_socket_fd(wsi);
	for (i = 0; i < nshared_listeners && shared_listeners[i].fd != lfd; i++)
		;
	if (i == nshared_listeners)
		return 0;
	shared_listener_wsi[i] = wsi;
	for (int n = 0; n < 64; n++)
	{
		int			fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
		{
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			{
				ereport(LOG,
						(errmsg("plank could not accept a connection: %m"),
						 errhint("Raise the open-file limit of the server, or lower plank.max_connections or plank.max_unauthenticated.")));
				lws_rx_flow_control(wsi, 0);
				lws_sul_schedule(lws_get_context(wsi), 0, &accept_pause_sul, accept_resume,
								 100 * LWS_US_PER_MS);
			}
			break;
		}
		if (lws_adopt_socket_vhost(shared_listeners[i].vh, fd) == NULL)
			close(fd);
	}
	return 0;
}

/*
 * Open a listening socket on addr (an address from listen_iface(), or NULL
 * for every address) and port, with SO_REUSEPORT so that the other workers
 * of the database can open theirs; it is polled by the loop and its
 * connections go to vh.  FATAL when it cannot be opened.
 */
static void
open_shared_listener(const char *addr, int port, struct lws_vhost *vh)
{
	struct sockaddr_storage ss;
	socklen_t	sslen;
	int			fd;
	int			one = 1;
	int			zero = 0;
	bool		v6 = addr == NULL || strchr(addr, ':') != NULL;
	lws_sock_file_fd_type desc;

	memset(&ss, 0, sizeof(ss));
	if (v6)
	{
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = in6addr_any;
		if (addr != NULL)
			(void) inet_pton(AF_INET6, addr, &sin6->sin6_addr);
		sslen = sizeof(*sin6);
	}
	else
	{
		struct sockaddr_in *sin = (struct sockaddr_in *) &ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		(void) inet_pton(AF_INET, addr, &sin->sin_addr);
		sslen = sizeof(*sin);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
		(v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, addr == NULL ? &zero : &one, sizeof(int)) != 0) ||
		bind(fd, (struct sockaddr *) &ss, sslen) != 0 ||
		listen(fd, SOMAXCONN) != 0 ||
		nshared_listeners == MAX_SHARED_LISTENERS)
		ereport(FATAL,
				(errcode_for_socket_access(),
				 errmsg("could not listen on address \"%s\" port %d for plank: %m", addr ? addr : "*", port),
				 errhint("Is another process using the port? Change plank.port or plank.listen_addresses and restart the server.")));
	shared_listeners[nshared_listeners].fd = fd;
	shared_listeners[nshared_listeners++].vh = vh;
	desc.filefd = fd;
	if (!lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, desc, "plank-listen", NULL))
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not add a descriptor to the plank event loop")));
}

/*
 * plank.permessage_deflate: RFC 7692 through libwebsockets' own extension.
 * The client may keep its compression context; the server does not (each
 * message is compressed on its own, so memory per connection stays small).
 */
static const struct lws_extension plank_extensions[] = {
	{"permessage-deflate", lws_extension_callback_pm_deflate,
	"permessage-deflate; server_no_context_takeover; client_max_window_bits"},
	{NULL, NULL, NULL}
};

static const struct lws_protocols plank_protocols[] = {
	/*
	 * rx_buffer_size: libwebsockets allocates this much per connection for
	 * received frame data (0 would mean 4 kB); client messages are small and
	 * longer ones arrive in pieces that conn_receive() reassembles.  Not
	 * less than 1 kB: with 128-512 bytes libwebsockets 4.1.6 spins at 100%
	 * CPU on a handshake refused by conn_filter() (recv() of 0 bytes in a
	 * loop; test_security_transport.py's refused origins).
	 */
	{"plank", plank_ws_callback, sizeof(PlankSession), 1024, 0, NULL, 0},
	{"plank-wake", plank_wake_callback, 0, 0, 0, NULL, 0},
	{"plank-listen", plank_listen_callback, 0, 0, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0}
};

/* Route libwebsockets' log lines to the server log, never as errors. */
static void
lws_log_emit(int level, const char *line)
{
	int			n = strlen(line);

	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	ereport(level == LLL_ERR ? LOG : DEBUG1,
			(errmsg_internal("libwebsockets: %.*s", n, line)));
}

static void
adopt_fd(int fd)
{
	lws_sock_file_fd_type desc;

	desc.filefd = fd;
	if (!lws_adopt_descriptor_vhost(first_vhost, LWS_ADOPT_RAW_FILE_DESC, desc,
									"plank-wake", NULL))
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not add a descriptor to the plank event loop")));
}

/*
 * The interface a vhost binds for one entry of plank.listen_addresses, and
 * the socket family options that go with it.  An IPv4 address must get an
 * IPv4 socket: on an IPv6 socket libwebsockets 4.1 would bind every address.
 */
static const char *
listen_iface(const char *addr, uint64_t *options)
{
	unsigned char buf[sizeof(struct in6_addr)];

	if (strcmp(addr, "*") == 0)
		return NULL;			/* every address, IPv4 and IPv6 */
	if (strcmp(addr, "localhost") == 0)
		addr = "127.0.0.1";
	if (inet_pton(AF_INET, addr, buf) == 1)
	{
		*options |= LWS_SERVER_OPTION_DISABLE_IPV6;
		return addr;
	}
	if (inet_pton(AF_INET6, addr, buf) == 1)
	{
		/* this address only, not its IPv4-mapped twin */
		*options |= LWS_SERVER_OPTION_IPV6_V6ONLY_MODIFY | LWS_SERVER_OPTION_IPV6_V6ONLY_VALUE;
		return addr;
	}
	ereport(FATAL,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid address \"%s\" in plank.listen_addresses", addr),
			 errhint("Use IP addresses, \"localhost\" or \"*\".")));
	return NULL;				/* keep the compiler quiet */
}

/*
 * A timer that only makes lws_service() return once a minute, so that the
 * main loop's timed clean-ups (idle channels) run even when nothing happens.
 */
static void
housekeeping(lws_sorted_usec_list_t *sul)
{
	lws_sul_schedule(lws_ctx, 0, &housekeeping_sul, housekeeping, HOUSEKEEPING_INTERVAL);
}

/*
 * plank_server_start
 *		Create the libwebsockets context and one vhost per entry of
 *		plank.listen_addresses, all on plank.port, serving WebSocket clients
 *		and the files of plank.static_dir.  wake_fd (the self-pipe) and
 *		postmaster_fd are polled by the same loop; h: what the layers above
 *		do for a connection (copied).  Raises FATAL: 22023
 *		(invalid_parameter_value) for a malformed plank.listen_addresses, F0000
 *		(config_file_error) when an address and port cannot be bound, XX000
 *		when libwebsockets cannot be set up.
 */
void
plank_server_start(int pipe_fd, int postmaster_fd, const PlankConnHandlers *h)
{
	struct lws_context_creation_info info;
	char	   *rawaddrs;
	List	   *addrs;
	ListCell   *lc;
	int			i = 0;

	handlers = *h;
	conns_cxt = AllocSetContextCreate(TopMemoryContext, "plank connections",
									  ALLOCSET_DEFAULT_SIZES);
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&wbuf);
		initStringInfo(&rx_scratch);
		MemoryContextSwitchTo(oldcxt);
	}

	if (plank_static_dir[0] != '\0')
		strlcpy(static_dir, plank_static_dir, sizeof(static_dir));
	else
	{
		char		sharepath[MAXPGPATH];

		get_share_path(my_exec_path, sharepath);
		snprintf(static_dir, sizeof(static_dir), "%s/plank/www", sharepath);
	}
	memset(&static_mount, 0, sizeof(static_mount));
	static_mount.mountpoint = "/";
	static_mount.mountpoint_len = 1;
	static_mount.origin = static_dir;
	static_mount.def = "index.html";
	static_mount.origin_protocol = LWSMPRO_FILE;
	static_mount.mount_next = &health_mount;
	/* /health and /metrics are answered by the plank protocol's callback */
	memset(&health_mount, 0, sizeof(health_mount));
	health_mount.mountpoint = "/health";
	health_mount.mountpoint_len = 7;
	health_mount.origin = "plank";
	health_mount.origin_protocol = LWSMPRO_CALLBACK;
	health_mount.mount_next = &metrics_mount;
	memset(&metrics_mount, 0, sizeof(metrics_mount));
	metrics_mount.mountpoint = "/metrics";
	metrics_mount.mountpoint_len = 8;
	metrics_mount.origin = "plank";
	metrics_mount.origin_protocol = LWSMPRO_CALLBACK;

	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
	plank_server_reload();

	memset(&info, 0, sizeof(info));
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
		LWS_SERVER_OPTION_VALIDATE_UTF8;
	if (plank_ssl)
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.port = CONTEXT_PORT_NO_LISTEN;
	/* room for long Cookie and Origin headers */
	info.max_http_header_data = 8192;
	lws_ctx = lws_create_context(&info);
	plank_runtime_set_loop(lws_ctx);
	if (lws_ctx == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not create the libwebsockets context")));

	rawaddrs = pstrdup(plank_listen_addresses);
	if (!SplitGUCList(rawaddrs, ',', &addrs) || addrs == NIL)
		ereport(FATAL,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in parameter \"plank.listen_addresses\"")));

	foreach(lc, addrs)
	{
		const char *addr = (const char *) lfirst(lc);
		struct lws_context_creation_info vinfo;
		struct lws_vhost *vh;
		char		name[32];

		snprintf(name, sizeof(name), "plank%d", i++);
		memset(&vinfo, 0, sizeof(vinfo));
		vinfo.vhost_name = name;
		vinfo.port = plank_worker_port;
		vinfo.protocols = plank_protocols;
		vinfo.mounts = &static_mount;
		vinfo.retry_and_idle_policy = &idle_policy;
		if (plank_permessage_deflate)
			vinfo.extensions = plank_extensions;
		if (plank_ssl)
		{
			/* relative paths are relative to the data directory, our cwd */
			vinfo.ssl_cert_filepath = plank_ssl_cert_file[0] ? plank_ssl_cert_file :
				GetConfigOption("ssl_cert_file", false, false);
			vinfo.ssl_private_key_filepath = plank_ssl_key_file[0] ? plank_ssl_key_file :
				GetConfigOption("ssl_key_file", false, false);
		}
		vinfo.options = info.options |
			LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
		vinfo.iface = listen_iface(addr, &vinfo.options);
		/*
		 * plank.workers > 1: the workers of a database share the port
		 * through sockets of our own with SO_REUSEPORT (Debian's
		 * libwebsockets 4.1 does not set it), whose connections are handed
		 * to the vhost (lws_adopt_socket_vhost); the vhost listens on none.
		 */
		if (plank_workers > 1)
			vinfo.port = CONTEXT_PORT_NO_LISTEN_SERVER;
		vh = lws_create_vhost(lws_ctx, &vinfo);
		if (vh == NULL)
			ereport(FATAL,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("could not listen on address \"%s\" port %d for plank", addr, plank_worker_port),
					 errhint("Is another process using the port? Change plank.port or plank.listen_addresses and restart the server.")));
		if (first_vhost == NULL)
			first_vhost = vh;
		if (plank_workers > 1)
			open_shared_listener(vinfo.iface, plank_worker_port, vh);
	}

	wake_fd = pipe_fd;
	adopt_fd(pipe_fd);
	adopt_fd(postmaster_fd);

	memset(&housekeeping_sul, 0, sizeof(housekeeping_sul));
	lws_sul_schedule(lws_ctx, 0, &housekeeping_sul, housekeeping, HOUSEKEEPING_INTERVAL);
}

/*
 * plank_server_reload
 *		Apply reloadable settings to the server (after SIGHUP): the idle
 *		policy.  plank.max_message_size, max_client_buffer and the other limits
 *		are read where they apply and need nothing here.
 */
void
plank_server_reload(void)
{
	memset(&idle_policy, 0, sizeof(idle_policy));
	if (plank_ping_interval > 0)
	{
		idle_policy.secs_since_valid_ping = plank_ping_interval;
		idle_policy.secs_since_valid_hangup = plank_ping_interval + plank_ping_timeout;
	}
	else if (pings_were_on)
	{
		/*
		 * Pings turned off by a reload: connections still have a validity
		 * timer of the old policy, which would ping and then hang up after
		 * secs_since_valid_hangup - secs_since_valid_ping: leave a pong the
		 * time to arrive, and reschedule far away.
		 */
		idle_policy.secs_since_valid_ping = UINT16_MAX - 60;
		idle_policy.secs_since_valid_hangup = UINT16_MAX;
	}
	/*
	 * else: never ping, never hang up on an idle connection.  A zero
	 * secs_since_valid_hangup makes libwebsockets keep no validity timer at
	 * all, rather than one far in the future per connection, inserted into
	 * its sorted timer list by walking it (O(connections) per received frame).
	 */
	pings_were_on |= plank_ping_interval > 0;
}

/*
 * plank_server_service
 *		Wait for and handle socket, pipe and timer events: one pass of
 *		lws_service, which sleeps in poll() while nothing is ready.
 */
void
plank_server_service(void)
{
	TimestampTz began = GetCurrentTimestamp();

	/* the pass counters of the slow-client rule (see conn_stalled) */
	service_passes_started++;
	lws_service(lws_ctx, 0);
	service_passes_done = service_passes_started;
	last_poll_began = began;
}

/* plank_server_postmaster_died: has the death pipe fired? */
bool
plank_server_postmaster_died(void)
{
	return postmaster_died;
}

static void
shutdown_deadline(lws_sorted_usec_list_t *sul)
{
	shutdown_deadline_passed = true;
}

/*
 * plank_server_shutdown
 *		Close every client with 1001 (going away), wait up to three seconds
 *		for the closing handshakes, then destroy the context.
 */
void
plank_server_shutdown(void)
{
	dlist_iter	iter;

	dlist_foreach(iter, &all_conns)
		plank_conn_close(dlist_container(PlankConn, node, iter.cur),
				   LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");

	memset(&shutdown_sul, 0, sizeof(shutdown_sul));
	lws_sul_schedule(lws_ctx, 0, &shutdown_sul, shutdown_deadline, 3 * LWS_USEC_PER_SEC);
	while (nconns > 0 && !shutdown_deadline_passed && !postmaster_died)
		lws_service(lws_ctx, 0);

	lws_context_destroy(lws_ctx);
	lws_ctx = NULL;
	plank_runtime_set_loop(NULL);
}

/* Settings (GUCs) read by this file; documented in README.md "Settings" */

/*
 * plank_server_max_sockets
 *		The client sockets a worker may hold: plank.max_connections plus
 *		plank.max_unauthenticated, as set now (at server start, for sizing
 *		shared memory).
 */
int
plank_server_max_sockets(void)
{
	return plank_max_connections + plank_max_unauthenticated;
}

/*
 * plank_server_define_settings
 *		Defines the plank.* settings of the WebSocket/HTTP server: its
 *		addresses, port and TLS, the limits on clients and the logging of
 *		connections.  Called once from _PG_init, in the postmaster, before
 *		the plank prefix is reserved (MarkGUCPrefixReserved).  Raises no
 *		error.  PostgreSQL docs: "Customized Options".
 */
void
plank_server_define_settings(void)
{
	DefineCustomStringVariable("plank.listen_addresses",
							   "Sets the addresses the Plank WebSocket/HTTP server listens on.",
							   "A comma-separated list of IP addresses; \"localhost\" means 127.0.0.1 "
							   "and \"*\" means every address.",
							   &plank_listen_addresses,
							   "localhost",
							   PGC_POSTMASTER,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("plank.port",
							"Sets the TCP port of the Plank WebSocket/HTTP server.",
							NULL,
							&plank_port,
							8090, 1, 65535,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("plank.static_dir",
							   "Sets the directory whose files the Plank server serves over HTTP.",
							   "Empty means SHAREDIR/plank/www, where \"make install\" puts the frontend.",
							   &plank_static_dir,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_message_size",
							"Sets the largest message a WebSocket client may send.",
							"A larger message closes the connection with code 1009.",
							&plank_max_message_size,
							64, 1, 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_client_buffer",
							"Sets the backlog above which a WebSocket client that stops reading is closed.",
							"A client whose queued messages, not counting the largest, exceed this while its socket takes no data for plank.max_client_lag is closed with code 1013; a client that reads is kept however large its backlog.",
							&plank_max_client_buffer,
							8192, 64, 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_client_lag",
							"Sets how long a client over plank.max_client_buffer may take no data before it is closed.",
							"Counted only while the worker polls the client's socket and finds it full; past it the client is closed with 1013.",
							&plank_max_client_lag,
							5000, 0, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.ping_interval",
							"Sets how long a WebSocket connection may be silent before the server sends it a ping.",
							"Zero turns pings off. A change applies from each connection's next ping.",
							&plank_ping_interval,
							30, 0, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.ping_timeout",
							"Sets how long after a ping without answer a silent connection is dropped.",
							"A client whose network went away without a close is detected after plank.ping_interval plus this.",
							&plank_ping_timeout,
							10, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_backlog_memory",
							"Sets the memory the backlogs of all clients of a worker may take.",
							"A backlog is one 24-byte entry per queued message and client; past this, the "
							"client furthest behind is closed with 1013.",
							&plank_max_backlog_memory,
							262144, 1024, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomStringVariable("plank.allowed_origins",
							   "Sets the web origins whose pages may open WebSocket connections.",
							   "A comma-separated list such as https://app.example.com; \"*\" allows any. "
							   "Empty allows only the pages Plank serves itself. Clients that send no Origin "
							   "(non-browser clients) are not affected.",
							   &plank_allowed_origins,
							   "",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_connections",
							"Sets the largest number of concurrent WebSocket connections that have a role.",
							"Further connections are refused during the handshake, or closed with 1013 when "
							"they authenticate. Connections waiting to authenticate are bounded by "
							"plank.max_unauthenticated instead.",
							&plank_max_connections,
							10000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_unauthenticated",
							"Sets the largest number of WebSocket connections waiting to authenticate.",
							"A connection waits from its handshake until its auth message is accepted; beyond "
							"this many, the one that waited longest is closed with 1013. Connections with a role "
							"count against plank.max_connections only. Not used with plank.anonymous_role set: "
							"every connection has that role from the start.",
							&plank_max_unauthenticated,
							1000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.auth_timeout",
							"Sets how long a client without a token has to send an auth message.",
							"When no anonymous role is set, a client that does not authenticate in time is closed with 4001.",
							&plank_auth_timeout,
							10, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.rate_limit",
							"Sets how many messages per second a client may send, on average.",
							"Bursts of twice as many are allowed; a client going faster is closed with 1008. Zero: no limit.",
							&plank_rate_limit,
							50, 0, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	/*
	 * plank.permessage_deflate: RFC 7692, through libwebsockets' extension
	 * (lws_extension_callback_pm_deflate).  Off by default: compression is
	 * per connection, so each message is compressed once per client instead
	 * of being shared as one frame (docs/BENCHMARKS.md).
	 */
	DefineCustomBoolVariable("plank.permessage_deflate",
							 "Offers the permessage-deflate WebSocket extension (RFC 7692) to clients.",
							 "Clients that ask for it get compressed messages; it costs CPU per client and message.",
							 &plank_permessage_deflate,
							 false,
							 PGC_POSTMASTER,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("plank.ssl",
							 "Serves WebSocket and HTTP over TLS (wss://, https://).",
							 NULL,
							 &plank_ssl,
							 false,
							 PGC_POSTMASTER,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("plank.ssl_cert_file",
							   "Sets the PEM certificate (chain) file of the TLS server.",
							   "Empty uses PostgreSQL's ssl_cert_file. Relative paths are relative to the data directory.",
							   &plank_ssl_cert_file,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("plank.ssl_key_file",
							   "Sets the PEM private key file of the TLS server.",
							   "Empty uses PostgreSQL's ssl_key_file. Relative paths are relative to the data directory.",
							   &plank_ssl_key_file,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("plank.http_allowed_addresses",
							   "Sets the client addresses that may read /health and /metrics.",
							   "A comma-separated list of IP addresses; \"localhost\" means 127.0.0.1 and ::1, \"*\" any.",
							   &plank_http_allowed_addresses,
							   "localhost",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);
}
