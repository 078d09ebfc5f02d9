/*
 * bench_common.h
 *		Helpers shared by Plank's benchmark tools (loadgen.c, listen_floor.c,
 *		writer.c): wall-clock time in microseconds, a latency histogram that
 *		processes can merge, the extraction of (id, ts_us) from a change
 *		payload, and the key=value summary every tool prints.
 *
 * Latency is always "receive time minus the ts_us the writer put in the row",
 * both read from CLOCK_REALTIME on the same machine.  The writer takes ts_us
 * just before it sends the INSERT, so the figure covers the INSERT, the
 * commit, the NOTIFY queue and the delivery; the raw-LISTEN floor is measured
 * the same way, so the two are comparable.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

#include <json-c/json.h>

static inline int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Raise RLIMIT_NOFILE to the hard limit; returns the new soft limit. */
static inline long
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	return (long) rl.rlim_cur;
}

/* CPU seconds (user + system) of this process so far. */
static inline double
self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
		ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds (utime + stime) of another process, from /proc/<pid>/stat; -1 if unknown. */
static inline double
proc_cpu_s(int pid)
{
	char		path[64];
	char		buf[2048];
	FILE	   *f;
	size_t		n;
	char	   *p;
	unsigned long long ut, st;
	int			field;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');		/* comm may hold spaces */
	if (!p)
		return -1;
	p += 2;						/* at field 3, the state */
	for (field = 3; field < 14 && *p; field++)
	{
		p = strchr(p, ' ');
		if (!p)
			return -1;
		p++;
	}
	if (sscanf(p, "%llu %llu", &ut, &st) != 2)
		return -1;
	return (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
}

/*
 * Latency histogram: 1 us bins below 100 ms, 1 ms bins from 100 ms to about
 * 100 s, and one overflow bin; the exact maximum is kept aside.  Plain data,
 * so that a child process can write it down a pipe and the parent can merge.
 */
#define HIST_FINE		100000	/* bins of 1 us: [0, 100 ms) */
#define HIST_COARSE		99900	/* bins of 1 ms: [100 ms, 100 s) */
#define HIST_BINS		(HIST_FINE + HIST_COARSE + 1)

typedef struct Hist
{
	uint64_t	count;
	int64_t		max_us;
	int64_t		min_us;
	double		sum_us;
	uint32_t	bins[HIST_BINS];
} Hist;

static inline void
hist_init(Hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min_us = INT64_MAX;
}

static inline void
hist_add(Hist *h, int64_t us)
{
	int64_t		bin;

	if (us < 0)
		us = 0;
	if (us < HIST_FINE)
		bin = us;
	else
	{
		bin = HIST_FINE + (us - HIST_FINE) / 1000;
		if (bin >= HIST_BINS)
			bin = HIST_BINS - 1;
	}
	h->bins[bin]++;
	h->count++;
	h->sum_us += us;
	if (us > h->max_us)
		h->max_us = us;
	if (us < h->min_us)
		h->min_us = us;
}

static inline void
hist_merge(Hist *into, const Hist *from)
{
	int			i;

	for (i = 0; i < HIST_BINS; i++)
		into->bins[i] += from->bins[i];
	into->count += from->count;
	into->sum_us += from->sum_us;
	if (from->max_us > into->max_us)
		into->max_us = from->max_us;
	if (from->min_us < into->min_us)
		into->min_us = from->min_us;
}

/* The q-quantile (0 < q <= 1) in microseconds: the upper edge of its bin. */
static inline int64_t
hist_quantile(const Hist *h, double q)
{
	uint64_t	target;
	uint64_t	seen = 0;
	int			i;

	if (h->count == 0)
		return -1;
	target = (uint64_t) (q * (double) h->count);
	if (target < 1)
		target = 1;
	for (i = 0; i < HIST_BINS; i++)
	{
		seen += h->bins[i];
		if (seen >= target)
		{
			int64_t		v = i < HIST_FINE ? i : HIST_FINE + (int64_t) (i - HIST_FINE) * 1000 + 999;

			return v > h->max_us ? h->max_us : v;
		}
	}
	return h->max_us;
}

/* Print the latency figures as key=value lines, in milliseconds. */
static inline void
hist_print(const Hist *h, const char *prefix)
{
	if (h->count == 0)
	{
		printf("%sp50_ms=NA\n%sp90_ms=NA\n%sp99_ms=NA\n%sp999_ms=NA\n%smax_ms=NA\n%smean_ms=NA\n",
			   prefix, prefix, prefix, prefix, prefix, prefix);
		return;
	}
	printf("%sp50_ms=%.3f\n", prefix, hist_quantile(h, 0.50) / 1000.0);
	printf("%sp90_ms=%.3f\n", prefix, hist_quantile(h, 0.90) / 1000.0);
	printf("%sp99_ms=%.3f\n", prefix, hist_quantile(h, 0.99) / 1000.0);
	printf("%sp999_ms=%.3f\n", prefix, hist_quantile(h, 0.999) / 1000.0);
	printf("%smax_ms=%.3f\n", prefix, h->max_us / 1000.0);
	printf("%smean_ms=%.3f\n", prefix, h->sum_us / h->count / 1000.0);
}

/*
 * How a change message is read.  PARSE_JSON builds the whole message with
 * json-c (Debian's libjson-c5) and looks up change.new.id and
 * change.new.ts_us; PARSE_SCAN only locates the known keys in the text
 * (the message is produced by Plank from the trigger's row_to_json, whose
 * key spelling is fixed), for load generation where json-c's allocation per
 * message would make the client, not the server, the bottleneck.
 */
typedef enum
{
	PARSE_JSON,
	PARSE_SCAN
} ParseMode;

typedef enum
{
	MSG_OTHER = 0,
	MSG_CHANGE,					/* a row change: id and ts_us filled in */
	MSG_ACK,
	MSG_ERROR,
	MSG_WELCOME,
	MSG_MALFORMED
} MsgKind;

static inline const char *
scan_key(const char *s, size_t len, const char *key)
{
	return memmem(s, len, key, strlen(key));
}

/*
 * Read a Plank server message (PARSE_SCAN: by its known keys) or a raw
 * trigger payload (is_payload: no envelope, the change object itself, or a
 * bare row as row_to_json(NEW) renders it).  s need not be NUL-terminated,
 * but the byte after s[len-1] must be readable when PARSE_SCAN is used
 * (numbers are read with strtoll, which stops at the closing brace).
 */
static inline MsgKind
classify_scan(const char *s, size_t len, int is_payload, int64_t *id, int64_t *ts_us)
{
	const char *p;
	const char *row;
	size_t		rest;

	if (!is_payload)
	{
		/* Plank writes "type" right after "sub" (or first): look near the start */
		size_t		head = len < 96 ? len : 96;

		p = scan_key(s, head, "\"type\":\"");
		if (!p)
			return MSG_MALFORMED;
		p += 8;
		if (strncmp(p, "change\"", 7) != 0)
		{
			if (strncmp(p, "ack\"", 4) == 0)
				return MSG_ACK;
			if (strncmp(p, "error\"", 6) == 0)
				return MSG_ERROR;
			if (strncmp(p, "welcome\"", 8) == 0)
				return MSG_WELCOME;
			return MSG_OTHER;
		}
	}
	row = scan_key(s, len, "\"new\":{");
	if (!row)
	{
		if (!is_payload)
			return MSG_OTHER;	/* DELETE or truncated change: no new row */
		row = s;				/* a bare row */
	}
	rest = len - (row - s);
	p = scan_key(row, rest, "\"id\":");
	if (!p)
		return MSG_OTHER;
	*id = strtoll(p + 5, NULL, 10);
	p = scan_key(row, rest, "\"ts_us\":");
	if (!p)
		return MSG_OTHER;
	*ts_us = strtoll(p + 8, NULL, 10);
	return MSG_CHANGE;
}

static inline MsgKind
classify_json(struct json_tokener *tok, const char *s, size_t len, int is_payload,
			  int64_t *id, int64_t *ts_us)
{
	json_object *o;
	json_object *v;
	json_object *row;
	json_object *change;
	MsgKind		kind = MSG_OTHER;

	json_tokener_reset(tok);
	o = json_tokener_parse_ex(tok, s, (int) len);
	if (!o || !json_object_is_type(o, json_type_object))
	{
		if (o)
			json_object_put(o);
		return MSG_MALFORMED;
	}
	if (is_payload)
		change = o;
	else
	{
		const char *type;

		if (!json_object_object_get_ex(o, "type", &v))
		{
			json_object_put(o);
			return MSG_MALFORMED;
		}
		type = json_object_get_string(v);
		if (strcmp(type, "change") != 0)
		{
			kind = strcmp(type, "ack") == 0 ? MSG_ACK :
				strcmp(type, "error") == 0 ? MSG_ERROR :
				strcmp(type, "welcome") == 0 ? MSG_WELCOME : MSG_OTHER;
			json_object_put(o);
			return kind;
		}
		if (!json_object_object_get_ex(o, "change", &change))
		{
			json_object_put(o);
			return MSG_MALFORMED;
		}
	}
	if (!json_object_object_get_ex(change, "new", &row))
		row = is_payload ? change : NULL;	/* a bare row (plpgsql floor trigger) */
	if (row && json_object_object_get_ex(row, "id", &v))
	{
		*id = json_object_get_int64(v);
		if (json_object_object_get_ex(row, "ts_us", &v))
		{
			*ts_us = json_object_get_int64(v);
			kind = MSG_CHANGE;
		}
	}
	json_object_put(o);
	return kind;
}

/*
 * Per-receiver record of the row ids seen, ids 1..rows (the bench table is
 * truncated with RESTART IDENTITY before each scenario): a bitmap, so that
 * loss and duplicates are exact whatever the commit order of several writer
 * connections.
 */
typedef struct IdSet
{
	uint8_t    *bits;
	int64_t		rows;
	int64_t		distinct;
	int64_t		dups;
	int64_t		out_of_range;
} IdSet;

static inline int
idset_init(IdSet *s, int64_t rows)
{
	memset(s, 0, sizeof(*s));
	s->rows = rows;
	if (rows > 0)
	{
		s->bits = calloc((rows + 7) / 8, 1);
		if (!s->bits)
			return -1;
	}
	return 0;
}

static inline void
idset_add(IdSet *s, int64_t id)
{
	if (s->rows <= 0)
	{
		s->distinct++;
		return;
	}
	if (id < 1 || id > s->rows)
	{
		s->out_of_range++;
		return;
	}
	id--;
	if (s->bits[id >> 3] & (1 << (id & 7)))
		s->dups++;
	else
	{
		s->bits[id >> 3] |= (uint8_t) (1 << (id & 7));
		s->distinct++;
	}
}

static inline int
parse_mode(const char *s, ParseMode *m)
{
	if (strcmp(s, "json") == 0)
		*m = PARSE_JSON;
	else if (strcmp(s, "scan") == 0)
		*m = PARSE_SCAN;
	else
		return -1;
	return 0;
}

#endif							/* BENCH_COMMON_H */
