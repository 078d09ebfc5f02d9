/*
 * writer.c
 *		libpq writer for Plank's benchmarks.
 *
 * Row mode (default): inserts --rows rows into
 *     bench_events(id bigserial primary key, ts_us bigint, payload text)
 * at --rate rows/s in total (0: flat out), over --conns connections (one
 * thread each), --per-txn rows per transaction (sent back to back; the
 * pacing is per transaction); with --seconds S instead, flat out or paced
 * for S seconds, as many rows as that takes.  ts_us is the wall clock
 * (CLOCK_REALTIME, microseconds since the epoch) taken just before the
 * INSERT is sent: the receivers compute commit-to-client latency from it.
 * With --ts server, ts_us is clock_timestamp() evaluated while the INSERT
 * runs instead (the same clock, read by the server), which leaves the trip
 * from the writer to the server out of the figure.
 *
 * Bulk modes: --bulk-insert N runs one INSERT ... SELECT of N rows,
 * --bulk-update runs one UPDATE of every row; both set ts_us to the
 * statement's start time.
 *
 * Output: key=value lines: rows, seconds, rows_per_s, start_us, end_us (wall
 * clock around the whole run or statement), statement latency quantiles,
 * the CPU seconds of this process and of its server backends.
 */
#include "bench_common.h"

#include <getopt.h>
#include <pthread.h>

#include <libpq-fe.h>

static const char *opt_conninfo = "host=127.0.0.1 port=5498 dbname=plank_bench user=postgres";
static const char *opt_table = "bench_events";
static int64_t opt_rows = 1000;
static double opt_rate = 0;
static int	opt_conns = 1;
static int	opt_per_txn = 1;
static int	opt_payload = 64;
static double opt_max_seconds = 300;
static double opt_seconds = 0;	/* --seconds: run this long, rows unbounded */
static int64_t opt_bulk_insert = 0;
static int	opt_server_ts = 0;	/* --ts server: ts_us from clock_timestamp() */
static int	opt_bulk_update = 0;

typedef struct Worker
{
	pthread_t	thread;
	int			index;
	int64_t		rows;			/* rows to insert */
	double		rate;			/* rows/s for this connection, 0 = flat out */
	int64_t		done;
	int			failed;
	double		backend_cpu_s;
	int			backend_pid;
	Hist	   *stmt;			/* per-statement round trip */
} Worker;

static char *payload;
static volatile int ready_to_go;
static int64_t start_mono;

static PGconn *
connect_db(void)
{
	PGconn	   *conn = PQconnectdb(opt_conninfo);

	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "writer: could not connect: %s", PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

static int
exec_ok(PGconn *conn, const char *sql)
{
	PGresult   *r = PQexec(conn, sql);
	int			ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

	if (!ok)
		fprintf(stderr, "writer: %s: %s", sql, PQerrorMessage(conn));
	PQclear(r);
	return ok;
}

static void
sleep_until_mono(int64_t t)
{
	struct timespec ts;

	ts.tv_sec = t / 1000000;
	ts.tv_nsec = (t % 1000000) * 1000;
	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static void *
worker_main(void *arg)
{
	Worker	   *w = arg;
	PGconn	   *conn = connect_db();
	char		sql[256];
	int64_t		i;
	int64_t		deadline;

	if (!conn)
	{
		w->failed = 1;
		return NULL;
	}
	w->backend_pid = PQbackendPID(conn);
	if (opt_server_ts)
		snprintf(sql, sizeof(sql),
				 "INSERT INTO %s (ts_us, payload) VALUES "
				 "((extract(epoch FROM clock_timestamp()) * 1000000)::bigint + 0 * $1::bigint, $2)",
				 opt_table);
	else
		snprintf(sql, sizeof(sql), "INSERT INTO %s (ts_us, payload) VALUES ($1, $2)", opt_table);
	{
		PGresult   *r = PQprepare(conn, "ins", sql, 2, NULL);

		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "writer: prepare: %s", PQerrorMessage(conn));
			PQclear(r);
			PQfinish(conn);
			w->failed = 1;
			return NULL;
		}
		PQclear(r);
	}
	while (!ready_to_go)
		usleep(100);
	deadline = start_mono + (int64_t) (opt_max_seconds * 1e6);

	for (i = 0; i < w->rows; i++)
	{
		char		tsbuf[32];
		const char *params[2];
		PGresult   *r;
		int64_t		t0;

		/* paced by transaction: the rows of one transaction go back to back */
		if (w->rate > 0 && i % opt_per_txn == 0)
			sleep_until_mono(start_mono + (int64_t) (i * 1e6 / w->rate));
		if (mono_us() > deadline)
		{
			if (opt_seconds > 0)
				break;
			fprintf(stderr, "writer: --max-seconds reached after %lld rows\n", (long long) i);
			break;
		}
		if (opt_per_txn > 1 && i % opt_per_txn == 0 && !exec_ok(conn, "BEGIN"))
		{
			w->failed = 1;
			break;
		}
		t0 = now_us();
		snprintf(tsbuf, sizeof(tsbuf), "%lld", (long long) t0);
		params[0] = tsbuf;
		params[1] = payload;
		r = PQexecPrepared(conn, "ins", 2, params, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "writer: insert: %s", PQerrorMessage(conn));
			PQclear(r);
			w->failed = 1;
			break;
		}
		PQclear(r);
		if (opt_per_txn > 1 && (i % opt_per_txn == opt_per_txn - 1 || i == w->rows - 1) &&
			!exec_ok(conn, "COMMIT"))
		{
			w->failed = 1;
			break;
		}
		hist_add(w->stmt, now_us() - t0);
		w->done++;
	}
	if (opt_per_txn > 1 && w->failed == 0 && w->done % opt_per_txn != 0)
		exec_ok(conn, "COMMIT");
	w->backend_cpu_s = proc_cpu_s(w->backend_pid);
	PQfinish(conn);
	return NULL;
}

static int
run_rows(void)
{
	Worker	   *ws = calloc(opt_conns, sizeof(Worker));
	Hist	   *all = malloc(sizeof(Hist));
	int64_t		t0_wall;
	int64_t		t1_wall;
	int64_t		done = 0;
	double		backend_cpu = 0;
	double		secs;
	int			failed = 0;
	int			k;

	hist_init(all);
	for (k = 0; k < opt_conns; k++)
	{
		ws[k].index = k;
		ws[k].rows = opt_rows / opt_conns + (k < opt_rows % opt_conns);
		ws[k].rate = opt_rate / opt_conns;
		ws[k].stmt = malloc(sizeof(Hist));
		hist_init(ws[k].stmt);
		pthread_create(&ws[k].thread, NULL, worker_main, &ws[k]);
	}
	/* let every connection be made and prepared, then start together */
	usleep(200000);
	t0_wall = now_us();
	start_mono = mono_us() + 1000;
	ready_to_go = 1;
	for (k = 0; k < opt_conns; k++)
	{
		pthread_join(ws[k].thread, NULL);
		done += ws[k].done;
		failed |= ws[k].failed;
		if (ws[k].backend_cpu_s > 0)
			backend_cpu += ws[k].backend_cpu_s;
		hist_merge(all, ws[k].stmt);
	}
	t1_wall = now_us();
	secs = (t1_wall - t0_wall) / 1e6;
	printf("mode=rows\n");
	printf("conns=%d\n", opt_conns);
	printf("per_txn=%d\n", opt_per_txn);
	printf("target_rate=%.0f\n", opt_rate);
	printf("rows=%lld\n", (long long) done);
	printf("seconds=%.3f\n", secs);
	printf("rows_per_s=%.0f\n", secs > 0 ? done / secs : 0);
	printf("start_us=%lld\n", (long long) t0_wall);
	printf("end_us=%lld\n", (long long) t1_wall);
	printf("writer_cpu_s=%.2f\n", self_cpu_s());
	printf("backend_cpu_s=%.2f\n", backend_cpu);
	hist_print(all, "stmt_");
	printf("summary: %lld rows in %.2f s = %.0f rows/s (target %s), statement p50 %.3f ms p99 %.3f ms\n",
		   (long long) done, secs, secs > 0 ? done / secs : 0,
		   opt_rate > 0 ? "paced" : "flat out",
		   hist_quantile(all, 0.5) / 1000.0, hist_quantile(all, 0.99) / 1000.0);
	return failed || (opt_seconds == 0 && done != opt_rows);
}

static int
run_bulk(void)
{
	PGconn	   *conn = connect_db();
	char		sql[512];
	char		tsbuf[32];
	const char *params[1];
	PGresult   *r;
	int64_t		t0;
	int64_t		t1;
	int			pid;
	int			ok;
	double		cpu0;

	if (!conn)
		return 1;
	pid = PQbackendPID(conn);
	if (opt_bulk_insert > 0)
		snprintf(sql, sizeof(sql),
				 "INSERT INTO %s (ts_us, payload) SELECT $1::bigint, repeat('x', %d) "
				 "FROM generate_series(1, %lld)",
				 opt_table, opt_payload, (long long) opt_bulk_insert);
	else
		snprintf(sql, sizeof(sql), "UPDATE %s SET ts_us = $1::bigint", opt_table);
	cpu0 = proc_cpu_s(pid);
	t0 = now_us();
	snprintf(tsbuf, sizeof(tsbuf), "%lld", (long long) t0);
	params[0] = tsbuf;
	r = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
	t1 = now_us();
	ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		fprintf(stderr, "writer: %s: %s", sql, PQerrorMessage(conn));
	printf("mode=%s\n", opt_bulk_insert > 0 ? "bulk-insert" : "bulk-update");
	printf("rows=%s\n", ok ? PQcmdTuples(r) : "0");
	printf("seconds=%.3f\n", (t1 - t0) / 1e6);
	printf("start_us=%lld\n", (long long) t0);
	printf("end_us=%lld\n", (long long) t1);
	printf("backend_cpu_s=%.2f\n", proc_cpu_s(pid) - cpu0);
	printf("summary: %s of %s rows: %.3f s (statement and commit)\n",
		   opt_bulk_insert > 0 ? "INSERT ... SELECT" : "UPDATE", ok ? PQcmdTuples(r) : "0",
		   (t1 - t0) / 1e6);
	PQclear(r);
	PQfinish(conn);
	return ok ? 0 : 1;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: writer [options]\n"
			"  --conninfo S       libpq connection string (host=127.0.0.1 port=5498 dbname=plank_bench user=postgres)\n"
			"  --table T          table (bench_events)\n"
			"  --rows N           rows to insert (1000)\n"
			"  --rate R           rows/s in total, 0 = flat out (0)\n"
			"  --conns N          connections, one thread each (1)\n"
			"  --per-txn N        rows per transaction (1)\n"
			"  --payload N        bytes of the payload column (64)\n"
			"  --max-seconds S    stop inserting after S s (300)\n"
			"  --seconds S        insert for S s, as many rows as that takes (instead of --rows)\n"
			"  --bulk-insert N    one INSERT ... SELECT of N rows instead\n"
			"  --bulk-update      one UPDATE of every row instead\n"
			"  --ts client|server ts_us from the writer's clock before sending the INSERT\n"
			"                     (client, the default) or from clock_timestamp() while the\n"
			"                     INSERT runs (server: excludes the trip to the server)\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static struct option longopts[] = {
		{"conninfo", required_argument, NULL, 'd'},
		{"table", required_argument, NULL, 't'},
		{"rows", required_argument, NULL, 'n'},
		{"rate", required_argument, NULL, 'r'},
		{"conns", required_argument, NULL, 'c'},
		{"per-txn", required_argument, NULL, 'x'},
		{"payload", required_argument, NULL, 's'},
		{"max-seconds", required_argument, NULL, 'T'},
		{"seconds", required_argument, NULL, 'E'},
		{"bulk-insert", required_argument, NULL, 'B'},
		{"bulk-update", no_argument, NULL, 'U'},
		{"ts", required_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			ch;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (ch)
		{
			case 'd': opt_conninfo = optarg; break;
			case 't': opt_table = optarg; break;
			case 'n': opt_rows = atoll(optarg); break;
			case 'r': opt_rate = atof(optarg); break;
			case 'c': opt_conns = atoi(optarg); break;
			case 'x': opt_per_txn = atoi(optarg); break;
			case 's': opt_payload = atoi(optarg); break;
			case 'T': opt_max_seconds = atof(optarg); break;
			case 'E': opt_seconds = atof(optarg); break;
			case 'B': opt_bulk_insert = atoll(optarg); break;
			case 'U': opt_bulk_update = 1; break;
			case 'S':
				if (strcmp(optarg, "server") == 0)
					opt_server_ts = 1;
				else if (strcmp(optarg, "client") == 0)
					opt_server_ts = 0;
				else
					usage();
				break;
			default: usage();
		}
	}
	if (opt_conns < 1 || opt_per_txn < 1 || opt_payload < 0 || opt_rows < 0 || opt_rate < 0 ||
		opt_seconds < 0)
		usage();
	if (opt_seconds > 0)
	{
		opt_rows = INT64_MAX / 2;
		opt_max_seconds = opt_seconds;
	}
	payload = malloc(opt_payload + 1);
	memset(payload, 'x', opt_payload);
	payload[opt_payload] = '\0';

	if (opt_bulk_insert > 0 || opt_bulk_update)
		return run_bulk();
	return run_rows();
}
