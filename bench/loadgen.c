/*
 * loadgen.c
 *		WebSocket load generator for Plank: thousands of non-blocking clients
 *		per process (libwebsockets' client API, one poll loop), optionally over
 *		several processes and several loopback source addresses.
 *
 * Every client connects to ws://HOST:PORT/PATH, subscribes to one table, and
 * for every change it receives records the commit-to-client latency (now
 * minus the ts_us column the writer put in the row), counts the delivery and
 * marks the row id in a bitmap (ids 1..--rows), so that loss and duplicates
 * are exact.  Clients given by --stall stop reading right after their
 * subscription is acknowledged (lws_rx_flow_control), to play a client that
 * no longer keeps up; they are not part of the latency figures and start
 * reading again at the end, to collect the close code the server sent.
 *
 * Phases: connect (bounded by --connect-timeout) -> ready (every client
 * acknowledged; --ready-file is created) -> run (until every reading client
 * has all --rows ids, or --idle seconds without a delivery after the first
 * one, or --duration seconds) -> drain of the stalled clients (--drain s).
 *
 * Output: key=value lines (clients, deliveries, deliveries_per_s, latency
 * quantiles in ms, loss, ...), then one human-readable summary line.
 *
 * libwebsockets does the WebSocket protocol (handshake, framing, masking,
 * close); no framing is written here.  Messages are read with json-c
 * (--parse json, the default) or, for the highest rates, by locating the
 * known keys in the text (--parse scan); see docs/BENCHMARKS.md.
 */
#include "bench_common.h"

#include <getopt.h>
#include <signal.h>
#include <sys/wait.h>

#include <ev.h>
#include <libwebsockets.h>

#define SUB_ID "b"
/* the reason Plank sends with close code 1013 (src/server.c) */
#define PLANK_1013_REASON "client too slow"

typedef enum
{
	C_IDLE = 0,
	C_CONNECTING,
	C_OPEN,
	C_SUBSCRIBED,
	C_CLOSED,
	C_FAILED
} ClientState;

typedef struct Client
{
	struct lws *wsi;
	int			index;			/* global index, over every process */
	uint8_t		state;
	uint8_t		stalled;
	uint8_t		sub_sent;
	uint8_t		complete;
	int			close_code;		/* from the server's close frame, 0 if none */
	int64_t		deliveries;
	IdSet		ids;
	char	   *rx;				/* reassembly of a fragmented message */
	size_t		rx_len;
	size_t		rx_cap;
} Client;

/* What one process reports to the parent: plain data, sent down a pipe. */
typedef struct Result
{
	int64_t		clients;		/* reading clients asked for */
	int64_t		stalled;
	int64_t		connected;		/* handshakes completed */
	int64_t		subscribed;
	int64_t		connect_errors;
	int64_t		deliveries;		/* changes received by reading clients */
	int64_t		stalled_deliveries;
	int64_t		stalled_closed_1013;
	int64_t		stalled_closed_other;
	int64_t		stalled_open_at_end;
	int64_t		stalled_close_code;	/* close code of a stalled client closed otherwise */
	int64_t		closed_by_server;	/* reading clients closed before the end */
	int64_t		resyncs;		/* resync_required messages received */
	int64_t		close_1013;
	int64_t		close_codes[8][2];	/* first distinct close codes of reading clients: code, count */
	int64_t		other_messages;
	int64_t		errors;			/* "error" messages */
	int64_t		malformed;
	int64_t		missing;		/* ids 1..rows never received, summed over reading clients */
	int64_t		dups;
	int64_t		out_of_range;
	int64_t		complete_clients;
	int64_t		min_client_deliveries;
	int64_t		max_client_deliveries;
	int64_t		first_rx_us;
	int64_t		last_rx_us;
	int64_t		ready_us;
	int64_t		connect_ms;
	double		cpu_s;
	Hist		hist;
} Result;

/* options */
/* see start_client(): no validity (ping) timers on the client side */
static const lws_retry_bo_t no_validity_policy;

static const char *opt_host = "127.0.0.1";
static int	opt_port = 18096;
static const char *opt_path = "/ws";
static const char *opt_table = "public.bench_events";
static int	opt_clients = 10;
static int	opt_stall = 0;
static int	opt_procs = 0;		/* 0: as many as the fd limit requires */
static int	opt_sources = 0;	/* 0: one per 25,000 connections */
static int64_t opt_rows = 0;
static double opt_duration = 60;
static double opt_idle = 5;
static double opt_connect_timeout = 60;
static double opt_drain = 5;
static int	opt_batch = 500;
static const char *opt_ready_file = NULL;
static ParseMode opt_parse = PARSE_JSON;
static int	opt_verbose = 0;
static int	opt_evlib_ev = 1;	/* libev (epoll) loop; 0: lws' own poll() loop */

/* per-process state */
static struct lws_context *ctx;
static Client *clients;
static int	nclients;			/* in this process, reading + stalled */
static int	nstarted;
static int	nopen;
static int	nsubscribed;
static int	nfailed;
static int	nreading_complete;
static int	nreading_live;		/* reading clients not closed or failed */
static int	phase;				/* 0 connect, 1 run, 2 drain, 3 done */
static int64_t phase_start;
static int64_t connect_start;
static int	ready_fd = -1;
static char sources[256][20];
static int	nsources;
static struct json_tokener *tok;
static lws_sorted_usec_list_t tick_sul;
static volatile sig_atomic_t interrupted;
static Result res;
static int	single_process;
static char ready_state;		/* 'R' ready, 'F' failed, 0 not yet */
static int	nstalled_local;		/* the stalled clients of this process */

static void
on_change(Client *c, int64_t id, int64_t ts)
{
	int64_t		now = now_us();

	if (c->stalled)
	{
		res.stalled_deliveries++;
		return;
	}
	if (phase != 1 && phase != 2)
		return;
	hist_add(&res.hist, now - ts);
	c->deliveries++;
	res.deliveries++;
	if (res.first_rx_us == 0)
		res.first_rx_us = now;
	res.last_rx_us = now;
	idset_add(&c->ids, id);
	if (opt_rows > 0 && !c->complete && c->ids.distinct == opt_rows)
	{
		c->complete = 1;
		nreading_complete++;
	}
}

static void
on_message(Client *c, const char *msg, size_t len)
{
	int64_t		id = 0;
	int64_t		ts = 0;
	MsgKind		kind;

	if (opt_parse == PARSE_SCAN)
		kind = classify_scan(msg, len, 0, &id, &ts);
	else
		kind = classify_json(tok, msg, len, 0, &id, &ts);

	switch (kind)
	{
		case MSG_CHANGE:
			on_change(c, id, ts);
			break;
		case MSG_ACK:
			if (c->state == C_OPEN)
			{
				c->state = C_SUBSCRIBED;
				nsubscribed++;
				if (c->stalled)
					lws_rx_flow_control(c->wsi, 0);
			}
			break;
		case MSG_ERROR:
			res.errors++;
			if (res.errors <= 5)
				fprintf(stderr, "loadgen: client %d got an error: %.*s\n", c->index,
						(int) (len > 300 ? 300 : len), msg);
			break;
		case MSG_MALFORMED:
			res.malformed++;
			break;
		default:
			if (memmem(msg, len, "\"resync_required\"", 17) != NULL)
				res.resyncs++;
			res.other_messages++;
			break;
	}
}

/* tally a close code (0: the connection ended without a close frame) */
static void
count_close_code(int code)
{
	int			k;

	for (k = 0; k < 8; k++)
	{
		if (res.close_codes[k][1] == 0 || res.close_codes[k][0] == code)
		{
			res.close_codes[k][0] = code;
			res.close_codes[k][1]++;
			return;
		}
	}
}

static int
callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	Client	   *c = (Client *) lws_get_opaque_user_data(wsi);
	unsigned char buf[LWS_PRE + 256];
	int			n;

	switch (reason)
	{
		case LWS_CALLBACK_CLIENT_ESTABLISHED:
			if (!c)
				return -1;
			c->state = C_OPEN;
			nopen++;
			lws_callback_on_writable(wsi);
			break;

		case LWS_CALLBACK_CLIENT_WRITEABLE:
			if (!c || c->sub_sent)
				break;
			n = snprintf((char *) buf + LWS_PRE, sizeof(buf) - LWS_PRE,
						 "{\"type\":\"subscribe\",\"id\":\"" SUB_ID "\",\"table\":\"%s\"}",
						 opt_table);
			if (lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_TEXT) < n)
				return -1;
			c->sub_sent = 1;
			break;

		case LWS_CALLBACK_CLIENT_RECEIVE:
			if (!c)
				break;
			if (c->rx_len == 0 && lws_is_final_fragment(wsi) &&
				lws_remaining_packet_payload(wsi) == 0)
			{
				on_message(c, in, len);
				break;
			}
			/* a fragment: reassemble (rare; messages are small) */
			if (c->rx_len + len + 1 > c->rx_cap)
			{
				size_t		cap = (c->rx_len + len + 1) * 2;

				c->rx = realloc(c->rx, cap);
				if (!c->rx)
					return -1;
				c->rx_cap = cap;
			}
			memcpy(c->rx + c->rx_len, in, len);
			c->rx_len += len;
			c->rx[c->rx_len] = '\0';
			if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0)
			{
				on_message(c, c->rx, c->rx_len);
				c->rx_len = 0;
			}
			break;

		case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
			if (c && len >= 2)
			{
				c->close_code = (((unsigned char *) in)[0] << 8) | ((unsigned char *) in)[1];

				/*
				 * libwebsockets 4.1's client rewrites close codes 1012-1015 to
				 * 1002 before this callback (its parser predates their
				 * registration) but keeps the reason: Plank's 1013 carries
				 * "client too slow", so take that pair for 1013.
				 */
				if (c->close_code == 1002 && len - 2 == strlen(PLANK_1013_REASON) &&
					memcmp((char *) in + 2, PLANK_1013_REASON, len - 2) == 0)
					c->close_code = 1013;
			}
			return 0;			/* echo the close */

		case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
			if (c)
			{
				if (res.connect_errors < 5)
					fprintf(stderr, "loadgen: client %d: connection error: %s\n", c->index,
							in ? (char *) in : "(none)");
				res.connect_errors++;
				if (c->state == C_CONNECTING)
					nfailed++;
				else if (!c->stalled && c->state != C_CLOSED && c->state != C_FAILED)
					nreading_live--;
				c->state = C_FAILED;
				c->wsi = NULL;
				lws_set_opaque_user_data(wsi, NULL);
			}
			break;

		case LWS_CALLBACK_CLIENT_CLOSED:
			if (c)
			{
				if (!c->stalled && (phase == 1 || phase == 0))
				{
					res.closed_by_server++;
					if (c->close_code == 1013)
						res.close_1013++;
					count_close_code(c->close_code);
				}
				if (!c->stalled && c->state != C_CLOSED && c->state != C_FAILED)
					nreading_live--;
				c->state = C_CLOSED;
				c->wsi = NULL;
				lws_set_opaque_user_data(wsi, NULL);
			}
			break;

		default:
			break;
	}
	(void) user;
	return 0;
}

static const struct lws_protocols protocols[] = {
	{"plank-bench", callback, 0, 4096, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0}
};

static void
start_client(Client *c)
{
	struct lws_client_connect_info ci;

	memset(&ci, 0, sizeof(ci));
	ci.context = ctx;
	ci.address = opt_host;
	ci.port = opt_port;
	ci.path = opt_path;
	ci.host = opt_host;
	ci.origin = NULL;			/* a non-browser client: no Origin header */
	ci.protocol = NULL;			/* Plank needs no Sec-WebSocket-Protocol */
	ci.local_protocol_name = protocols[0].name;
	ci.opaque_user_data = c;
	ci.pwsi = &c->wsi;
	/*
	 * No validity timer (an all-zero idle policy): libwebsockets 4.1 would
	 * otherwise keep one per client in a sorted list, re-inserted by walking
	 * it, which made the load generator quadratic in its clients (90% of its
	 * CPU in lws_dll2_add_sorted at 15,000 clients).  Plank pings the clients;
	 * libwebsockets answers those pings without a policy.
	 */
	ci.retry_and_idle_policy = &no_validity_policy;
	if (nsources > 1)
		ci.iface = sources[c->index % nsources];
	c->state = C_CONNECTING;
	nstarted++;
	if (!lws_client_connect_via_info(&ci) && c->state == C_CONNECTING)
	{
		/* failed synchronously, without a CONNECTION_ERROR callback */
		c->state = C_FAILED;
		c->wsi = NULL;
		nfailed++;
		res.connect_errors++;
	}
}

static void
touch_ready_file(void)
{
	FILE	   *f;

	if (!opt_ready_file)
		return;
	f = fopen(opt_ready_file, "w");
	if (f)
		fclose(f);
}

static void
signal_ready(char what)
{
	ready_state = what;
	if (single_process && what == 'R')
		touch_ready_file();
	if (ready_fd >= 0)
	{
		ssize_t		rc = write(ready_fd, &what, 1);

		(void) rc;
		close(ready_fd);
		ready_fd = -1;
	}
}

static void
tick(lws_sorted_usec_list_t *sul)
{
	int64_t		now = mono_us();
	int			i;

	if (interrupted)
		phase = 3;

	if (phase == 0)
	{
		/* keep at most 2 batches of handshakes in flight */
		int			inflight = nstarted - nopen - nfailed;

		for (i = 0; nstarted < nclients && inflight < 2 * opt_batch && i < opt_batch; i++, inflight++)
			start_client(&clients[nstarted]);

		if (nsubscribed + nfailed >= nclients && nstarted == nclients)
		{
			int			lost = 0;

			/* count clients lost while others were still connecting */
			for (i = 0; i < nclients; i++)
				if (clients[i].state != C_SUBSCRIBED)
					lost++;
			res.connect_ms = (now - connect_start) / 1000;
			if (lost > 0)
			{
				fprintf(stderr, "loadgen: %d of %d clients failed to connect or subscribe\n",
						lost, nclients);
				signal_ready('F');
				phase = 3;
			}
			else
			{
				phase = 1;
				phase_start = now;
				res.ready_us = now_us();
				signal_ready('R');
			}
		}
		else if (now - connect_start > opt_connect_timeout * 1e6)
		{
			fprintf(stderr, "loadgen: connect timeout: %d started, %d open, %d subscribed, %d failed of %d\n",
					nstarted, nopen, nsubscribed, nfailed, nclients);
			res.connect_ms = (now - connect_start) / 1000;
			signal_ready('F');
			phase = 3;
		}
	}
	else if (phase == 1)
	{
		int			reading = nclients - nstalled_local;
		int			done = 0;

		if (opt_rows > 0 && nreading_complete >= reading)
			done = 1;
		else if (nreading_live == 0)
			done = 1;
		else if (now - phase_start > opt_duration * 1e6)
			done = 1;
		else if (res.last_rx_us > 0 && now_us() - res.last_rx_us > opt_idle * 1e6)
			done = 1;
		if (done)
		{
			phase = 2;
			phase_start = now;
			for (i = 0; i < nclients; i++)
				if (clients[i].stalled && clients[i].wsi)
					lws_rx_flow_control(clients[i].wsi, 1);
		}
	}
	else if (phase == 2)
	{
		int			open = 0;

		for (i = 0; i < nclients; i++)
			if (clients[i].stalled && clients[i].wsi)
				open++;
		if (open == 0 || now - phase_start > opt_drain * 1e6)
			phase = 3;
	}

	if (phase != 3)
		lws_sul_schedule(ctx, 0, sul, tick, 10 * LWS_US_PER_MS);
	else
		lws_cancel_service(ctx);
}

static void
on_signal(int sig)
{
	(void) sig;
	interrupted = 1;
}

/*
 * Run clients [first, first + count) of the global numbering, the last
 * nstall of them stalled, in this process; fill res.
 */
static int
run_process(int first, int count, int nstall)
{
	struct lws_context_creation_info info;
	int			i;
	long		nofile;
	struct ev_loop *loop = NULL;
	void	   *foreign_loops[1];

	nofile = raise_nofile();
	if (nofile > 0 && count + 64 > nofile)
	{
		fprintf(stderr, "loadgen: %d connections need more than the %ld open files allowed\n",
				count, nofile);
		return -1;
	}
	memset(&res, 0, sizeof(res));
	hist_init(&res.hist);
	tok = json_tokener_new();

	nclients = count;
	nstalled_local = nstall;
	clients = calloc(count, sizeof(Client));
	if (!clients)
		return -1;
	for (i = 0; i < count; i++)
	{
		clients[i].index = first + i;
		clients[i].stalled = i >= count - nstall;
		if (!clients[i].stalled && idset_init(&clients[i].ids, opt_rows) != 0)
		{
			fprintf(stderr, "loadgen: out of memory for the id bitmaps\n");
			return -1;
		}
	}
	nreading_live = count - nstall;

	lws_set_log_level(opt_verbose ? (LLL_ERR | LLL_WARN | LLL_NOTICE) : LLL_ERR, NULL);
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.pt_serv_buf_size = 32 * 1024;
	info.timeout_secs = (unsigned int) (opt_connect_timeout > 5 ? opt_connect_timeout : 5);
	info.connect_timeout_secs = info.timeout_secs;
	if (opt_evlib_ev)
	{
		/* an epoll loop that we own: poll() over thousands of sockets costs O(n) per wake-up */
		loop = ev_loop_new(EVFLAG_AUTO);
		if (!loop)
		{
			fprintf(stderr, "loadgen: could not create the libev loop\n");
			return -1;
		}
		foreign_loops[0] = loop;
		info.options |= LWS_SERVER_OPTION_LIBEV;
		info.foreign_loops = foreign_loops;
	}
	ctx = lws_create_context(&info);
	if (!ctx)
	{
		fprintf(stderr, "loadgen: could not create the libwebsockets context\n");
		return -1;
	}

	connect_start = mono_us();
	phase = 0;
	lws_sul_schedule(ctx, 0, &tick_sul, tick, 1);
	while (phase != 3)
	{
		if (loop)
			ev_run(loop, EVRUN_ONCE);
		else if (lws_service(ctx, 0) < 0)
			break;
	}

	/* results */
	res.clients = count - nstall;
	res.stalled = nstall;
	res.connected = nopen;
	res.subscribed = nsubscribed;
	res.min_client_deliveries = INT64_MAX;
	for (i = 0; i < count; i++)
	{
		Client	   *c = &clients[i];

		if (c->stalled)
		{
			if (c->close_code == 1013)
				res.stalled_closed_1013++;
			else if (c->state == C_CLOSED)
			{
				res.stalled_closed_other++;
				res.stalled_close_code = c->close_code;
			}
			else
				res.stalled_open_at_end++;
			continue;
		}
		if (c->deliveries < res.min_client_deliveries)
			res.min_client_deliveries = c->deliveries;
		if (c->deliveries > res.max_client_deliveries)
			res.max_client_deliveries = c->deliveries;
		if (opt_rows > 0)
			res.missing += opt_rows - c->ids.distinct;
		res.dups += c->ids.dups;
		res.out_of_range += c->ids.out_of_range;
		if (c->complete)
			res.complete_clients++;
	}
	if (res.min_client_deliveries == INT64_MAX)
		res.min_client_deliveries = 0;
	res.cpu_s = self_cpu_s();
	/* close every client and free libwebsockets' state */
	lws_context_destroy(ctx);
	if (loop)
	{
		for (i = 0; i < 10; i++)
			ev_run(loop, EVRUN_NOWAIT);
		ev_loop_destroy(loop);
	}
	return 0;
}

static void
merge(Result *into, const Result *r)
{
	into->clients += r->clients;
	into->stalled += r->stalled;
	into->connected += r->connected;
	into->subscribed += r->subscribed;
	into->connect_errors += r->connect_errors;
	into->deliveries += r->deliveries;
	into->stalled_deliveries += r->stalled_deliveries;
	into->stalled_closed_1013 += r->stalled_closed_1013;
	into->stalled_closed_other += r->stalled_closed_other;
	into->stalled_open_at_end += r->stalled_open_at_end;
	if (r->stalled_close_code)
		into->stalled_close_code = r->stalled_close_code;
	into->closed_by_server += r->closed_by_server;
	into->resyncs += r->resyncs;
	into->close_1013 += r->close_1013;
	into->other_messages += r->other_messages;
	into->errors += r->errors;
	into->malformed += r->malformed;
	into->missing += r->missing;
	into->dups += r->dups;
	into->out_of_range += r->out_of_range;
	into->complete_clients += r->complete_clients;
	if (r->clients > 0 && (into->min_client_deliveries < 0 ||
						   r->min_client_deliveries < into->min_client_deliveries))
		into->min_client_deliveries = r->min_client_deliveries;
	for (int k = 0; k < 8 && r->close_codes[k][1] > 0; k++)
	{
		for (int j = 0; j < 8; j++)
		{
			if (into->close_codes[j][1] == 0 || into->close_codes[j][0] == r->close_codes[k][0])
			{
				into->close_codes[j][0] = r->close_codes[k][0];
				into->close_codes[j][1] += r->close_codes[k][1];
				break;
			}
		}
	}
	if (r->max_client_deliveries > into->max_client_deliveries)
		into->max_client_deliveries = r->max_client_deliveries;
	if (r->first_rx_us && (!into->first_rx_us || r->first_rx_us < into->first_rx_us))
		into->first_rx_us = r->first_rx_us;
	if (r->last_rx_us > into->last_rx_us)
		into->last_rx_us = r->last_rx_us;
	if (r->ready_us > into->ready_us)
		into->ready_us = r->ready_us;
	if (r->connect_ms > into->connect_ms)
		into->connect_ms = r->connect_ms;
	into->cpu_s += r->cpu_s;
	hist_merge(&into->hist, &r->hist);
}

static void
print_result(const Result *r, int procs)
{
	double		span = (r->last_rx_us - r->first_rx_us) / 1e6;
	double		rate = span > 0 ? r->deliveries / span : 0;

	printf("procs=%d\n", procs);
	printf("sources=%d\n", nsources);
	printf("parse=%s\n", opt_parse == PARSE_JSON ? "json" : "scan");
	printf("evlib=%s\n", opt_evlib_ev ? "ev" : "poll");
	printf("clients=%lld\n", (long long) r->clients);
	printf("stalled_clients=%lld\n", (long long) r->stalled);
	printf("connected=%lld\n", (long long) r->connected);
	printf("subscribed=%lld\n", (long long) r->subscribed);
	printf("connect_errors=%lld\n", (long long) r->connect_errors);
	printf("connect_ms=%lld\n", (long long) r->connect_ms);
	printf("rows_expected=%lld\n", (long long) opt_rows);
	printf("deliveries=%lld\n", (long long) r->deliveries);
	printf("deliveries_expected=%lld\n", (long long) (opt_rows * r->clients));
	printf("deliveries_per_s=%.0f\n", rate);
	printf("first_rx_us=%lld\n", (long long) r->first_rx_us);
	printf("last_rx_us=%lld\n", (long long) r->last_rx_us);
	printf("ready_us=%lld\n", (long long) r->ready_us);
	printf("complete_clients=%lld\n", (long long) r->complete_clients);
	printf("min_client_deliveries=%lld\n", (long long) (r->min_client_deliveries < 0 ? 0 : r->min_client_deliveries));
	printf("max_client_deliveries=%lld\n", (long long) r->max_client_deliveries);
	printf("loss=%lld\n", (long long) r->missing);
	printf("duplicates=%lld\n", (long long) r->dups);
	printf("out_of_range=%lld\n", (long long) r->out_of_range);
	printf("closed_by_server=%lld\n", (long long) r->closed_by_server);
	printf("closed_1013=%lld\n", (long long) r->close_1013);
	printf("resync_required=%lld\n", (long long) r->resyncs);
	printf("close_codes=");
	for (int k = 0; k < 8 && r->close_codes[k][1] > 0; k++)
		printf("%s%d:%lld", k ? "," : "", (int) r->close_codes[k][0], (long long) r->close_codes[k][1]);
	printf("\n");
	printf("error_messages=%lld\n", (long long) r->errors);
	printf("other_messages=%lld\n", (long long) r->other_messages);
	printf("malformed=%lld\n", (long long) r->malformed);
	printf("stalled_deliveries=%lld\n", (long long) r->stalled_deliveries);
	printf("stalled_closed_1013=%lld\n", (long long) r->stalled_closed_1013);
	printf("stalled_closed_other=%lld\n", (long long) r->stalled_closed_other);
	printf("stalled_open_at_end=%lld\n", (long long) r->stalled_open_at_end);
	printf("stalled_other_close_code=%lld\n", (long long) r->stalled_close_code);
	printf("loadgen_cpu_s=%.2f\n", r->cpu_s);
	hist_print(&r->hist, "");
	printf("summary: %lld clients (%lld subscribed), %lld deliveries, %.0f/s, "
		   "p50 %.3f ms p90 %.3f ms p99 %.3f ms max %.3f ms, loss %lld\n",
		   (long long) r->clients, (long long) r->subscribed, (long long) r->deliveries, rate,
		   hist_quantile(&r->hist, 0.5) / 1000.0, hist_quantile(&r->hist, 0.9) / 1000.0,
		   hist_quantile(&r->hist, 0.99) / 1000.0, r->hist.max_us / 1000.0,
		   (long long) r->missing);
	fflush(stdout);
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: loadgen [options]\n"
			"  --host ADDR           server address (127.0.0.1)\n"
			"  --port N              Plank's port (18096)\n"
			"  --path P              WebSocket path (/ws)\n"
			"  --table T             table to subscribe to (public.bench_events)\n"
			"  --clients N           reading clients (10)\n"
			"  --stall N             extra clients that stop reading after their ack (0)\n"
			"  --rows N              expect row ids 1..N at every client (0: unknown)\n"
			"  --procs N             processes (0: as the open-file limit requires)\n"
			"  --sources N           loopback source addresses 127.0.0.1..N (0: one per 25,000)\n"
			"  --duration S          longest run after all are subscribed (60)\n"
			"  --idle S              stop after S s without a delivery, once one came (5)\n"
			"  --connect-timeout S   longest connect phase (60)\n"
			"  --drain S             time the stalled clients get to read their close (5)\n"
			"  --batch N             connections started per 10 ms (500)\n"
			"  --ready-file F        created once every client is subscribed\n"
			"  --parse json|scan     how messages are read (json)\n"
			"  --evlib ev|poll       event loop: libev on epoll (ev), or lws' poll() loop\n"
			"  --verbose             libwebsockets notices\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static struct option longopts[] = {
		{"host", required_argument, NULL, 'H'},
		{"port", required_argument, NULL, 'p'},
		{"path", required_argument, NULL, 'P'},
		{"table", required_argument, NULL, 't'},
		{"clients", required_argument, NULL, 'c'},
		{"stall", required_argument, NULL, 's'},
		{"rows", required_argument, NULL, 'n'},
		{"procs", required_argument, NULL, 'j'},
		{"sources", required_argument, NULL, 'a'},
		{"duration", required_argument, NULL, 'd'},
		{"idle", required_argument, NULL, 'i'},
		{"connect-timeout", required_argument, NULL, 'C'},
		{"drain", required_argument, NULL, 'D'},
		{"batch", required_argument, NULL, 'b'},
		{"ready-file", required_argument, NULL, 'r'},
		{"parse", required_argument, NULL, 'm'},
		{"verbose", no_argument, NULL, 'v'},
		{"evlib", required_argument, NULL, 'e'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			ch;
	int			total;
	long		nofile;
	int			procs;
	int			k;
	Result		all;
	int			failed = 0;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (ch)
		{
			case 'H': opt_host = optarg; break;
			case 'p': opt_port = atoi(optarg); break;
			case 'P': opt_path = optarg; break;
			case 't': opt_table = optarg; break;
			case 'c': opt_clients = atoi(optarg); break;
			case 's': opt_stall = atoi(optarg); break;
			case 'n': opt_rows = atoll(optarg); break;
			case 'j': opt_procs = atoi(optarg); break;
			case 'a': opt_sources = atoi(optarg); break;
			case 'd': opt_duration = atof(optarg); break;
			case 'i': opt_idle = atof(optarg); break;
			case 'C': opt_connect_timeout = atof(optarg); break;
			case 'D': opt_drain = atof(optarg); break;
			case 'b': opt_batch = atoi(optarg); break;
			case 'r': opt_ready_file = optarg; break;
			case 'm':
				if (parse_mode(optarg, &opt_parse) != 0)
					usage();
				break;
			case 'v': opt_verbose = 1; break;
			case 'e':
				if (strcmp(optarg, "ev") == 0)
					opt_evlib_ev = 1;
				else if (strcmp(optarg, "poll") == 0)
					opt_evlib_ev = 0;
				else
					usage();
				break;
			default: usage();
		}
	}
	total = opt_clients + opt_stall;
	if (opt_clients < 0 || opt_stall < 0 || total < 1 || opt_batch < 1 || opt_duration <= 0)
		usage();

	nofile = raise_nofile();
	procs = opt_procs;
	if (procs <= 0)
	{
		long		per = nofile > 200 ? nofile - 100 : 100;

		procs = (int) ((total + per - 1) / per);
	}
	if (procs > total)
		procs = total;
	nsources = opt_sources > 0 ? opt_sources : (total + 24999) / 25000;
	if (nsources > 254)
		nsources = 254;
	for (k = 0; k < nsources; k++)
		snprintf(sources[k], sizeof(sources[k]), "127.0.0.%d", k + 1);

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	if (opt_ready_file)
		unlink(opt_ready_file);

	memset(&all, 0, sizeof(all));
	hist_init(&all.hist);
	all.min_client_deliveries = -1;

	if (procs == 1)
	{
		single_process = 1;
		if (run_process(0, opt_clients + opt_stall, opt_stall) != 0)
			return 1;
		failed = ready_state != 'R';
		merge(&all, &res);
	}
	else
	{
		pid_t	   *pids = calloc(procs, sizeof(pid_t));
		int		   *rfds = calloc(procs, sizeof(int));
		int		   *readyfds = calloc(procs, sizeof(int));
		int			first = 0;
		int			nready = 0;

		for (k = 0; k < procs; k++)
		{
			int			count = opt_clients / procs + (k < opt_clients % procs);
			int			nstall = opt_stall / procs + (k < opt_stall % procs);
			int			rp[2];
			int			yp[2];

			if (pipe(rp) != 0 || pipe(yp) != 0)
			{
				perror("pipe");
				return 1;
			}
			pids[k] = fork();
			if (pids[k] == 0)
			{
				Result	   *r = &res;
				size_t		off = 0;
				int			rc;

				close(rp[0]);
				close(yp[0]);
				ready_fd = yp[1];
				rc = run_process(first, count + nstall, nstall);
				if (rc != 0)
					_exit(1);
				while (off < sizeof(*r))
				{
					ssize_t		w = write(rp[1], (char *) r + off, sizeof(*r) - off);

					if (w <= 0)
						_exit(1);
					off += w;
				}
				_exit(0);
			}
			close(rp[1]);
			close(yp[1]);
			rfds[k] = rp[0];
			readyfds[k] = yp[0];
			first += count + nstall;
		}
		/* wait for every process to be subscribed (or to fail) */
		for (k = 0; k < procs; k++)
		{
			char		c = 'F';
			ssize_t		rc = read(readyfds[k], &c, 1);

			if (rc == 1 && c == 'R')
				nready++;
			close(readyfds[k]);
		}
		failed = nready != procs;
		if (!failed)
			touch_ready_file();
		for (k = 0; k < procs; k++)
		{
			Result	   *r = malloc(sizeof(Result));
			size_t		off = 0;
			ssize_t		n;

			while (r && off < sizeof(*r) && (n = read(rfds[k], (char *) r + off, sizeof(*r) - off)) > 0)
				off += n;
			if (r && off == sizeof(*r))
				merge(&all, r);
			else
				failed = 1;
			free(r);
			close(rfds[k]);
			waitpid(pids[k], NULL, 0);
		}
	}
	print_result(&all, procs);
	if (failed)
		fprintf(stderr, "loadgen: not every client connected and subscribed\n");
	return failed ? 1 : 0;
}
