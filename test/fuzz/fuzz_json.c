/*-------------------------------------------------------------------------
 *
 * fuzz_json.c
 *		libFuzzer harness for PostgreSQL's JSON parser (pg_parse_json,
 *		common/jsonapi.c), the parser behind jsonb_in, which parses every
 *		client message (protocol.c) and every token's header and claims
 *		(auth.c) inside the server.
 *
 * The input is one client message.  As protocol.c does, a message with a
 * NUL byte is refused before parsing; the rest is parsed as UTF-8 with
 * de-escaping (jsonb_in's settings), through semantic actions that walk the
 * message the way the protocol reads it: the top-level members type, id,
 * table, channel, filter, ops, since and snapshot, the column/value pairs of
 * "filter", the names in "ops", epoch and seq in "since".  The walk checks
 * the parser's promises (balanced callbacks, one root value, numbers that
 * IsValidJsonNumber accepts, literals spelt right, a known error code, the
 * same verdict without actions) and applies the protocol's own rules, so
 * that the same inputs reach the same branches the server would take.
 * (json_errdetail, which builds the error text the server sends back, is
 * not in the frontend library of PostgreSQL 15.)
 *
 * Leak detection is off for this harness (run.sh): on a syntax error the
 * frontend build of jsonapi.c drops strings it has palloc'd; in the server
 * they live in the per-request memory context, reset after each message.
 *
 * Built by test/fuzz/run.sh.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_common.h"

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_json: check failed at %s:%d: %s\n", \
					__FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

/* the top-level members protocol.c reads */
typedef enum Member
{
	M_OTHER,
	M_TYPE,
	M_ID,
	M_TABLE,
	M_CHANNEL,
	M_FILTER,
	M_OPS,
	M_SINCE,
	M_SNAPSHOT,
	M_TOKEN
} Member;

typedef struct Walk
{
	int			depth;			/* objects and arrays open */
	bool		root_is_object;
	bool		root_seen;
	Member		member;			/* the top-level member being parsed */
	char		container;		/* its value: 'o' object, 'a' array, 0 scalar */
	char	   *since_key;		/* the member of "since" being parsed */
	char	   *filter_column;	/* the column of "filter" being parsed */
	int			fields_open;	/* object_field_start not yet ended */
	int			elements_open;	/* array_element_start not yet ended */
	/* what the protocol would conclude */
	int			nfilters;
	int			ops_mask;
	bool		bad;
	char		type[16];
	int			scalars;
} Walk;

static jmp_buf too_deep;

static Member
member_of(const char *name)
{
	static const struct
	{
		const char *name;
		Member		m;
	}			names[] = {
		{"type", M_TYPE}, {"id", M_ID}, {"table", M_TABLE}, {"channel", M_CHANNEL},
		{"filter", M_FILTER}, {"ops", M_OPS}, {"since", M_SINCE},
		{"snapshot", M_SNAPSHOT}, {"token", M_TOKEN},
	};
	int			i;

	for (i = 0; i < (int) lengthof(names); i++)
		if (strcmp(names[i].name, name) == 0)
			return names[i].m;
	return M_OTHER;
}

static void
object_start(void *state)
{
	Walk	   *w = state;

	if (!w->root_seen)
	{
		w->root_seen = true;
		w->root_is_object = true;
	}
	if (++w->depth > FUZZ_MAX_DEPTH)
		longjmp(too_deep, 1);
	if (w->depth == 2)
	{
		w->container = 'o';
		/* handle_subscribe: "ops" must be an array */
		if (w->member == M_OPS)
			w->bad = true;
	}
}

static void
array_start(void *state)
{
	Walk	   *w = state;

	w->root_seen = true;
	if (++w->depth > FUZZ_MAX_DEPTH)
		longjmp(too_deep, 1);
	if (w->depth == 2)
	{
		w->container = 'a';
		/* "filter" and "since" must be objects */
		if (w->member == M_FILTER || w->member == M_SINCE)
			w->bad = true;
	}
}

static void
struct_end(void *state)
{
	Walk	   *w = state;

	CHECK(w->depth > 0);
	w->depth--;
}

static void
field_start(void *state, char *fname, bool isnull)
{
	Walk	   *w = state;

	w->fields_open++;
	CHECK(w->depth > 0);
	/* a de-escaped name: \u0000 is refused, so no NUL inside */
	CHECK(fname != NULL);
	if (w->depth == 1)
	{
		w->member = member_of(fname);
		w->container = 0;
	}
	else if (w->depth == 2 && w->member == M_SINCE)
		w->since_key = fname;
	else if (w->depth == 2 && w->member == M_FILTER)
		w->filter_column = fname;
}

static void
field_end(void *state, char *fname, bool isnull)
{
	Walk	   *w = state;

	CHECK(w->fields_open > 0);
	w->fields_open--;
	if (w->depth == 1)
		w->member = M_OTHER;
	else if (w->depth == 2 && w->member == M_FILTER && fname == w->filter_column)
	{
		w->nfilters++;
		w->filter_column = NULL;
	}
	if (fname == w->since_key)
		w->since_key = NULL;
	/* the parser hands fname to both actions; it is the actions' to free */
	pfree(fname);
}

static void
element_start(void *state, bool isnull)
{
	Walk	   *w = state;

	w->elements_open++;
	CHECK(w->depth > 0);
}

static void
element_end(void *state, bool isnull)
{
	Walk	   *w = state;

	CHECK(w->elements_open > 0);
	w->elements_open--;
}

static void
scalar(void *state, char *token, JsonTokenType type)
{
	Walk	   *w = state;
	size_t		len;

	CHECK(token != NULL);
	len = strlen(token);
	w->scalars++;
	if (!w->root_seen)
		w->root_seen = true;	/* a scalar at the top: not an object */
	switch (type)
	{
		case JSON_TOKEN_NUMBER:
			CHECK(IsValidJsonNumber(token, (int) len));
			break;
		case JSON_TOKEN_TRUE:
			CHECK(strcmp(token, "true") == 0);
			break;
		case JSON_TOKEN_FALSE:
			CHECK(strcmp(token, "false") == 0);
			break;
		case JSON_TOKEN_NULL:
			CHECK(strcmp(token, "null") == 0);
			break;
		case JSON_TOKEN_STRING:
			break;
		default:
			CHECK(!"scalar of an unexpected token type");
	}

	if (w->depth == 1)
	{
		/* top-level members, as handle_request() and handle_subscribe() read them */
		switch (w->member)
		{
			case M_TYPE:
				if (type == JSON_TOKEN_STRING)
					snprintf(w->type, sizeof(w->type), "%s", token);
				else
					w->bad = true;
				break;
			case M_ID:
				if (type != JSON_TOKEN_STRING || len == 0 || len > 64)
					w->bad = true;
				break;
			case M_TABLE:
			case M_CHANNEL:
			case M_TOKEN:
				if (type != JSON_TOKEN_STRING)
					w->bad = true;
				break;
			case M_FILTER:
			case M_OPS:
			case M_SINCE:
				w->bad = true;	/* must be an object or array */
				break;
			case M_SNAPSHOT:
				if (type != JSON_TOKEN_TRUE && type != JSON_TOKEN_FALSE)
					w->bad = true;
				break;
			case M_OTHER:
				break;
		}
	}
	else if (w->depth == 2 && w->member == M_OPS && w->container == 'a')
	{
		if (type != JSON_TOKEN_STRING)
			w->bad = true;
		else if (pg_strcasecmp(token, "INSERT") == 0)
			w->ops_mask |= 1;
		else if (pg_strcasecmp(token, "UPDATE") == 0)
			w->ops_mask |= 2;
		else if (pg_strcasecmp(token, "DELETE") == 0)
			w->ops_mask |= 4;
		else if (pg_strcasecmp(token, "TRUNCATE") == 0)
			w->ops_mask |= 8;
		else
			w->bad = true;
	}
	else if (w->depth == 2 && w->member == M_SINCE && w->since_key != NULL)
	{
		if (strcmp(w->since_key, "seq") == 0)
		{
			if (type != JSON_TOKEN_NUMBER || token[0] == '-')
				w->bad = true;
			else
			{
				/* numeric_le(seq, INT64_MAX) and numeric_int8 */
				double		d = strtod(token, NULL);

				if (d > 9.2233720368547758e18)
					w->bad = true;
			}
		}
		else if (strcmp(w->since_key, "epoch") == 0 && type != JSON_TOKEN_STRING)
			w->bad = true;
	}
	else if (w->depth == 2 && w->member == M_FILTER && w->container == 'o')
		CHECK(w->filter_column != NULL);	/* a value follows its column */
	pfree(token);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *msg;
	JsonLexContext *volatile lex;
	JsonSemAction sem = {0};
	Walk		w;
	volatile JsonParseErrorType result = JSON_SUCCESS;
	volatile bool deep = false;

	/* plank.max_message_size is 64kB by default */
	if (size > 256 * 1024)
		return 0;

	/* protocol.c: the message is NUL-terminated at len; one with a NUL inside is refused */
	msg = malloc(size + 1);
	memcpy(msg, data, size);
	msg[size] = '\0';
	if (strlen(msg) != size)
	{
		free(msg);
		return 0;
	}

	memset(&w, 0, sizeof(w));
	sem.semstate = &w;
	sem.object_start = object_start;
	sem.object_end = struct_end;
	sem.array_start = array_start;
	sem.array_end = struct_end;
	sem.object_field_start = field_start;
	sem.object_field_end = field_end;
	sem.array_element_start = element_start;
	sem.array_element_end = element_end;
	sem.scalar = scalar;

	lex = makeJsonLexContextCstringLen(msg, (int) size, PG_UTF8, true);
	if (setjmp(too_deep) == 0)
		result = pg_parse_json(lex, &sem);
	else
		deep = true;

	if (!deep)
	{
		if (result == JSON_SUCCESS)
		{
			/* a complete value: every action paired, exactly one root */
			CHECK(w.depth == 0);
			CHECK(w.fields_open == 0);
			CHECK(w.elements_open == 0);
			CHECK(w.root_seen);
			CHECK(lex->token_type == JSON_TOKEN_END);
			/* the same bytes parse again, the same way, without actions */
			{
				JsonLexContext *again = makeJsonLexContextCstringLen(msg, (int) size, PG_UTF8, true);

				CHECK(pg_parse_json(again, &nullSemAction) == JSON_SUCCESS);
				fuzz_free_lex(again);
			}
		}
		else
		{
			/* a parse error is one of the codes the server turns into malformed_json */
			CHECK(result > JSON_SUCCESS && result <= JSON_UNICODE_LOW_SURROGATE);

			/*
			 * The server's error text quotes the offending token (the
			 * backend's json_errdetail copies token_start..token_terminator,
			 * or reads the byte at token_terminator) and the line around it
			 * (report_json_context, from line_start): all inside the message
			 * or at its terminating NUL.  Copy the token as the backend does,
			 * so that ASan checks the bounds.
			 */
			if (lex->token_start != NULL)
			{
				char	   *end = lex->input + lex->input_length;
				int			toklen;
				char	   *token;

				CHECK(lex->token_start >= lex->input && lex->token_start <= end);
				CHECK(lex->token_terminator >= lex->token_start && lex->token_terminator <= end);
				toklen = lex->token_terminator - lex->token_start;
				token = palloc(toklen + 1);
				memcpy(token, lex->token_start, toklen);
				token[toklen] = '\0';
				pfree(token);
				{
					volatile char at = *lex->token_terminator;

					(void) at;
				}
			}
			CHECK(lex->line_start >= lex->input && lex->line_start <= lex->input + lex->input_length);
			CHECK(lex->line_number >= 1);
		}
	}
	fuzz_free_lex(lex);
	free(msg);
	return 0;
}
