/*-------------------------------------------------------------------------
 *
 * fuzz_payload.c
 *		libFuzzer harness for plank_json_members() (src/jsonspan.c), which
 *		the worker uses to read every change payload: its top-level members
 *		(routing: schema, table, op, xid, overflow) and the members of its
 *		row images (filters, column restriction, row-level security images),
 *		as spans of the committed text, with PostgreSQL's JSON parser in the
 *		json type's mode (no de-escaping).
 *
 * The input is one payload; like the notification it comes in, a payload
 * with a NUL byte never reaches the worker and is skipped.  The harness
 * checks what the worker relies on:
 *		- the verdict is the json type's: plank_json_members() succeeds
 *		  exactly when pg_parse_json (no actions, no de-escaping) accepts the
 *		  text and its root is an object;
 *		- every key span is a string token inside the text, every value span
 *		  lies inside the text and is, alone, one valid JSON value whose first
 *		  token has the recorded type;
 *		- the members reassembled as {key:value,...} (what column restriction
 *		  sends, visibility.c) parse again to the same members, byte for byte;
 *		- members that are objects (the row images) are read the same way.
 *
 * Leak detection is off for this harness (run.sh), as for fuzz_json: the
 * server frees these allocations with the event's memory context.
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
#include "jsonspan.h"

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_payload: check failed at %s:%d: %s\n", \
					__FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

/* Does pg_parse_json accept text (no actions, no de-escaping), and is its root an object? */
static bool
accepted(const char *text, int len, JsonTokenType *first)
{
	JsonLexContext *lex = makeJsonLexContextCstringLen((char *) text, len, PG_UTF8, false);
	JsonParseErrorType rc = pg_parse_json(lex, &nullSemAction);
	JsonLexContext *tok = makeJsonLexContextCstringLen((char *) text, len, PG_UTF8, false);

	*first = JSON_TOKEN_INVALID;
	if (json_lex(tok) == JSON_SUCCESS)
		*first = tok->token_type;
	fuzz_free_lex(tok);
	fuzz_free_lex(lex);
	return rc == JSON_SUCCESS;
}

static void
check_object(const char *text, int len, int depth)
{
	PlankJsonMember *m = NULL;
	int			n = 0;
	char	   *error = NULL;
	JsonTokenType first;
	bool		ok;
	bool		json_ok = accepted(text, len, &first);
	StringInfoData again;

	ok = plank_json_members(text, len, PG_UTF8, &m, &n, &error);
	CHECK(ok == (json_ok && first == JSON_TOKEN_OBJECT_START));
	if (!ok)
	{
		CHECK(error != NULL);
		return;
	}

	initStringInfo(&again);
	appendStringInfoChar(&again, '{');
	for (int i = 0; i < n; i++)
	{
		JsonTokenType vfirst;

		CHECK(m[i].key >= text && m[i].key + m[i].keylen <= text + len);
		CHECK(m[i].value >= text && m[i].value + m[i].valuelen <= text + len);
		CHECK(m[i].keylen >= 2 && m[i].key[0] == '"' && m[i].key[m[i].keylen - 1] == '"');
		CHECK(m[i].valuelen > 0);
		CHECK(accepted(m[i].key, m[i].keylen, &vfirst) && vfirst == JSON_TOKEN_STRING);
		CHECK(accepted(m[i].value, m[i].valuelen, &vfirst) && vfirst == m[i].type);
		if (i > 0)
			appendStringInfoChar(&again, ',');
		appendBinaryStringInfo(&again, m[i].key, m[i].keylen);
		appendStringInfoChar(&again, ':');
		appendBinaryStringInfo(&again, m[i].value, m[i].valuelen);
		if (m[i].type == JSON_TOKEN_OBJECT_START && depth < 1)
			check_object(m[i].value, m[i].valuelen, depth + 1);
	}
	appendStringInfoChar(&again, '}');

	{
		PlankJsonMember *m2 = NULL;
		int			n2 = 0;

		CHECK(plank_json_members(again.data, again.len, PG_UTF8, &m2, &n2, &error));
		CHECK(n2 == n);
		for (int i = 0; i < n; i++)
		{
			CHECK(m2[i].keylen == m[i].keylen && memcmp(m2[i].key, m[i].key, m[i].keylen) == 0);
			CHECK(m2[i].valuelen == m[i].valuelen &&
				  memcmp(m2[i].value, m[i].value, m[i].valuelen) == 0);
			CHECK(m2[i].type == m[i].type);
		}
		if (m2)
			pfree(m2);
	}
	pfree(again.data);
	if (m)
		pfree(m);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *text;

	int			opens = 0;

	if (size > 1024 * 1024 || memchr(data, '\0', size) != NULL)
		return 0;
	/* the frontend parser recurses without check_stack_depth(): bound the nesting */
	for (size_t i = 0; i < size; i++)
		opens += data[i] == '[' || data[i] == '{';
	if (opens > FUZZ_MAX_DEPTH)
		return 0;
	text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	check_object(text, (int) size, 0);
	free(text);
	return 0;
}
