/*
 * listen_floor.c
 *		Raw libpq LISTEN client: the NOTIFY floor Plank's latency is measured
 *		against.
 *
 * Opens --conns connections (each a server backend), LISTENs on --channel
 * (default: the capture trigger's own channel, plank.change_channel() where
 * the extension has that function, else "plank") and, for every
 * notification, records the same commit-to-receive latency as loadgen
 * (receive time minus the ts_us in the row), counts receptions and marks the
 * row id (ids 1..--rows) to count loss.  The payload is read with json-c by
 * default (--parse json), or by locating the known keys (--parse scan).
 *
 * Phases and output follow loadgen: connect -> ready (--ready-file) -> run
 * until every connection has every id, --idle s without a notification
 * after the first, or --duration s; then key=value lines and a summary.
 */
#include "bench_common.h"

#include <getopt.h>
#include <poll.h>
#include <signal.h>

#include <libpq-fe.h>

static const char *opt_conninfo = "host=127.0.0.1 port=5498 dbname=plank_bench user=postgres";
static const char *opt_channel = "auto";
static int	opt_conns = 1;
static int64_t opt_rows = 0;
static double opt_duration = 60;
static double opt_idle = 5;
static const char *opt_ready_file = NULL;
static ParseMode opt_parse = PARSE_JSON;
static volatile sig_atomic_t interrupted;

static void
on_signal(int sig)
{
	(void) sig;
	interrupted = 1;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: listen_floor [options]\n"
			"  --conninfo S     libpq connection string\n"
			"  --channel C      channel to LISTEN on (auto: the capture trigger's channel)\n"
			"  --conns N        listening connections (1)\n"
			"  --rows N         expect row ids 1..N on every connection (0: unknown)\n"
			"  --duration S     longest run after LISTEN (60)\n"
			"  --idle S         stop after S s without a notification, once one came (5)\n"
			"  --ready-file F   created once every connection listens\n"
			"  --parse json|scan\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static struct option longopts[] = {
		{"conninfo", required_argument, NULL, 'd'},
		{"channel", required_argument, NULL, 'c'},
		{"conns", required_argument, NULL, 'j'},
		{"rows", required_argument, NULL, 'n'},
		{"duration", required_argument, NULL, 'D'},
		{"idle", required_argument, NULL, 'i'},
		{"ready-file", required_argument, NULL, 'r'},
		{"parse", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			ch;
	PGconn	  **conns;
	IdSet	   *ids;
	int64_t    *recv_count;
	struct pollfd *pfds;
	Hist	   *hist;
	struct json_tokener *tok = json_tokener_new();
	int64_t		received = 0;
	int64_t		first_rx = 0;
	int64_t		last_rx = 0;
	int64_t		start;
	int64_t		missing = 0;
	int64_t		dups = 0;
	int64_t		malformed = 0;
	int			complete = 0;
	int			k;
	char		sql[128];
	double		span;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (ch)
		{
			case 'd': opt_conninfo = optarg; break;
			case 'c': opt_channel = optarg; break;
			case 'j': opt_conns = atoi(optarg); break;
			case 'n': opt_rows = atoll(optarg); break;
			case 'D': opt_duration = atof(optarg); break;
			case 'i': opt_idle = atof(optarg); break;
			case 'r': opt_ready_file = optarg; break;
			case 'm':
				if (parse_mode(optarg, &opt_parse) != 0)
					usage();
				break;
			default: usage();
		}
	}
	if (opt_conns < 1)
		usage();
	raise_nofile();
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (opt_ready_file)
		unlink(opt_ready_file);

	conns = calloc(opt_conns, sizeof(PGconn *));
	ids = calloc(opt_conns, sizeof(IdSet));
	recv_count = calloc(opt_conns, sizeof(int64_t));
	pfds = calloc(opt_conns, sizeof(struct pollfd));
	hist = malloc(sizeof(Hist));
	hist_init(hist);
	for (k = 0; k < opt_conns; k++)
	{
		PGresult   *r;

		conns[k] = PQconnectdb(opt_conninfo);
		if (PQstatus(conns[k]) != CONNECTION_OK)
		{
			fprintf(stderr, "listen_floor: could not connect: %s", PQerrorMessage(conns[k]));
			return 1;
		}
		if (k == 0 && strcmp(opt_channel, "auto") == 0)
		{
			/* the trigger's channel: a per-cluster name in builds that have plank.change_channel() */
			r = PQexec(conns[0], "SELECT to_regprocedure('plank.change_channel()') IS NOT NULL");
			if (PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "t") == 0)
			{
				PQclear(r);
				r = PQexec(conns[0], "SELECT plank.change_channel()");
				if (PQresultStatus(r) != PGRES_TUPLES_OK)
				{
					fprintf(stderr, "listen_floor: plank.change_channel(): %s", PQerrorMessage(conns[0]));
					return 1;
				}
				opt_channel = strdup(PQgetvalue(r, 0, 0));
			}
			else
				opt_channel = "plank";
			PQclear(r);
		}
		snprintf(sql, sizeof(sql), "LISTEN \"%s\"", opt_channel);
		r = PQexec(conns[k], sql);
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "listen_floor: %s: %s", sql, PQerrorMessage(conns[k]));
			return 1;
		}
		PQclear(r);
		PQsetnonblocking(conns[k], 1);
		pfds[k].fd = PQsocket(conns[k]);
		pfds[k].events = POLLIN;
		if (idset_init(&ids[k], opt_rows) != 0)
		{
			fprintf(stderr, "listen_floor: out of memory\n");
			return 1;
		}
	}
	if (opt_ready_file)
	{
		FILE	   *f = fopen(opt_ready_file, "w");

		if (f)
			fclose(f);
	}

	start = mono_us();
	while (!interrupted)
	{
		int			n = poll(pfds, opt_conns, 50);

		if (n < 0 && errno != EINTR)
		{
			perror("poll");
			break;
		}
		for (k = 0; n > 0 && k < opt_conns; k++)
		{
			PGnotify   *nf;

			if (!(pfds[k].revents & (POLLIN | POLLERR | POLLHUP)))
				continue;
			if (!PQconsumeInput(conns[k]))
			{
				fprintf(stderr, "listen_floor: connection lost: %s", PQerrorMessage(conns[k]));
				interrupted = 1;
				break;
			}
			while ((nf = PQnotifies(conns[k])) != NULL)
			{
				int64_t		id = 0;
				int64_t		ts = 0;
				int64_t		now = now_us();
				size_t		len = strlen(nf->extra);
				MsgKind		kind;

				if (opt_parse == PARSE_SCAN)
					kind = classify_scan(nf->extra, len, 1, &id, &ts);
				else
					kind = classify_json(tok, nf->extra, len, 1, &id, &ts);
				if (kind == MSG_CHANGE)
				{
					int64_t		before = ids[k].distinct;

					hist_add(hist, now - ts);
					received++;
					recv_count[k]++;
					if (!first_rx)
						first_rx = now;
					last_rx = now;
					idset_add(&ids[k], id);
					if (opt_rows > 0 && before < opt_rows && ids[k].distinct == opt_rows)
						complete++;
				}
				else
					malformed++;
				PQfreemem(nf);
			}
		}
		if (opt_rows > 0 && complete == opt_conns)
			break;
		if (mono_us() - start > opt_duration * 1e6)
			break;
		if (last_rx && now_us() - last_rx > opt_idle * 1e6)
			break;
	}

	for (k = 0; k < opt_conns; k++)
	{
		if (opt_rows > 0)
			missing += opt_rows - ids[k].distinct;
		dups += ids[k].dups;
		PQfinish(conns[k]);
	}
	span = (last_rx - first_rx) / 1e6;
	printf("conns=%d\n", opt_conns);
	printf("channel=%s\n", opt_channel);
	printf("parse=%s\n", opt_parse == PARSE_JSON ? "json" : "scan");
	printf("rows_expected=%lld\n", (long long) opt_rows);
	printf("deliveries=%lld\n", (long long) received);
	printf("deliveries_expected=%lld\n", (long long) (opt_rows * opt_conns));
	printf("deliveries_per_s=%.0f\n", span > 0 ? received / span : 0);
	printf("first_rx_us=%lld\n", (long long) first_rx);
	printf("last_rx_us=%lld\n", (long long) last_rx);
	printf("complete_clients=%d\n", complete);
	printf("loss=%lld\n", (long long) missing);
	printf("duplicates=%lld\n", (long long) dups);
	printf("malformed=%lld\n", (long long) malformed);
	printf("listener_cpu_s=%.2f\n", self_cpu_s());
	hist_print(hist, "");
	printf("summary: %d LISTEN connection(s), %lld notifications, %.0f/s, "
		   "p50 %.3f ms p90 %.3f ms p99 %.3f ms max %.3f ms, loss %lld\n",
		   opt_conns, (long long) received, span > 0 ? received / span : 0,
		   hist_quantile(hist, 0.5) / 1000.0, hist_quantile(hist, 0.9) / 1000.0,
		   hist_quantile(hist, 0.99) / 1000.0, hist->max_us / 1000.0, (long long) missing);
	return (opt_rows > 0 && missing > 0) ? 1 : 0;
}
