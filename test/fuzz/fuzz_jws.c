/*-------------------------------------------------------------------------
 *
 * fuzz_jws.c
 *		libFuzzer harness for src/jws.c: plank_jws_split() on the input as a
 *		token (the "token" string of a client's auth message), and
 *		plank_base64url_decode() on the raw bytes.  Each decoded header and
 *		payload then goes through PostgreSQL's JSON parser, as auth.c hands
 *		them to jsonb_in.
 *
 * Besides the sanitizers' checks, it asserts what auth.c relies on:
 *	- a split token has exactly two dots, and signing_input_len is the
 *	  offset of the second one;
 *	- every decoded part is NUL-terminated at its length, no longer than
 *	  3/4 of its segment, and equal to decoding that segment on its own;
 *	- decoding is all or nothing (a refused input leaves an empty, valid
 *	  buffer behind).
 *
 * Built by test/fuzz/run.sh.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "jws.h"
#include "fuzz_common.h"

/* an assertion that stays on in every build and ends the run as a crash */
#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_jws: check failed at %s:%d: %s\n", \
					__FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

static int	depth;
static jmp_buf too_deep;

static void
nest_start(void *state)
{
	if (++depth > FUZZ_MAX_DEPTH)
		longjmp(too_deep, 1);
}

static void
nest_end(void *state)
{
	depth--;
}

/*
 * Parse a decoded header or payload as the backend does: the whole text
 * (auth.c refuses one with a NUL byte inside), UTF-8, with de-escaping.
 * Apart from the nesting bound this is nullSemAction: no other action.
 */
static void
parse_json_part(StringInfo part)
{
	JsonSemAction sem = nullSemAction;
	JsonLexContext *volatile lex;

	if ((int) strlen(part->data) != part->len)
		return;
	sem.object_start = nest_start;
	sem.object_end = nest_end;
	sem.array_start = nest_start;
	sem.array_end = nest_end;
	depth = 0;
	lex = makeJsonLexContextCstringLen(part->data, part->len, PG_UTF8, true);
	if (setjmp(too_deep) == 0)
		(void) pg_parse_json(lex, &sem);
	fuzz_free_lex(lex);
}

/* A decoded part against the segment it came from. */
static void
check_part(StringInfo part, const char *seg, int seglen)
{
	StringInfoData again;

	CHECK(part->data != NULL);
	CHECK(part->len >= 0 && part->len < part->maxlen);
	CHECK(part->data[part->len] == '\0');
	CHECK((int64) part->len * 4 <= (int64) seglen * 3);
	CHECK(plank_base64url_decode(seg, seglen, &again));
	CHECK(again.len == part->len && memcmp(again.data, part->data, part->len) == 0);
	pfree(again.data);
}

static void
free_part(StringInfo part)
{
	if (part->data != NULL)
		pfree(part->data);
}

/*
 * Once, before fuzzing: the 64kB bound on a token, which inputs of
 * libFuzzer's default sizes do not reach.  A token of exactly 64kB is split;
 * one byte more is refused.
 */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const int	limit = 64 * 1024;
	char	   *token = malloc(limit + 2);
	PlankJws	jws;
	int			i;

	/* "AAAA...AAAA.AAAA.AAAA": segments of multiples of 4, total limit */
	for (i = 0; i < limit; i++)
		token[i] = 'A';
	token[limit - 9] = '.';
	token[limit - 4] = '.';
	token[limit] = '\0';
	memset(&jws, 0, sizeof(jws));
	CHECK(plank_jws_split(token, &jws));
	CHECK(jws.signing_input_len == limit - 4);
	CHECK(jws.header.len == (limit - 9) / 4 * 3 + ((limit - 9) % 4 ? (limit - 9) % 4 - 1 : 0));
	free_part(&jws.header);
	free_part(&jws.payload);
	free_part(&jws.signature);

	token[limit] = 'A';
	token[limit + 1] = '\0';
	memset(&jws, 0, sizeof(jws));
	CHECK(!plank_jws_split(token, &jws));
	free_part(&jws.header);
	free_part(&jws.payload);
	free_part(&jws.signature);
	free(token);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *token;
	PlankJws	jws;
	StringInfoData raw;
	bool		ok;

	if (size > 128 * 1024)
		return 0;

	/* the token, as the NUL-terminated string protocol.c extracts */
	token = malloc(size + 1);
	memcpy(token, data, size);
	token[size] = '\0';

	memset(&jws, 0, sizeof(jws));
	ok = plank_jws_split(token, &jws);
	if (ok)
	{
		const char *dot1 = strchr(token, '.');
		const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;

		CHECK(dot1 != NULL && dot2 != NULL && strchr(dot2 + 1, '.') == NULL);
		CHECK(strlen(token) <= 64 * 1024);
		CHECK(jws.signing_input_len == dot2 - token);
		check_part(&jws.header, token, dot1 - token);
		check_part(&jws.payload, dot1 + 1, dot2 - dot1 - 1);
		check_part(&jws.signature, dot2 + 1, strlen(dot2 + 1));
		parse_json_part(&jws.header);
		parse_json_part(&jws.payload);
	}
	free_part(&jws.header);
	free_part(&jws.payload);
	free_part(&jws.signature);
	free(token);

	/*
	 * The decoder on the raw bytes with their exact length: no NUL at the
	 * end, so a read past len lands in ASan's redzone.
	 */
	memset(&raw, 0, sizeof(raw));
	if (size <= INT32_MAX / 2)
	{
		ok = plank_base64url_decode((const char *) data, (int) size, &raw);
		CHECK(raw.data != NULL && raw.len >= 0 && raw.len < raw.maxlen);
		if (ok)
		{
			CHECK(raw.data[raw.len] == '\0');
			CHECK((int64) raw.len * 4 <= (int64) size * 3);
			/* every 4 characters make 3 bytes; 2 or 3 left over make 1 or 2 */
			CHECK(raw.len == (int) (size / 4 * 3 + (size % 4 ? size % 4 - 1 : 0)));
		}
		else
			CHECK(raw.len == 0);
		pfree(raw.data);
	}
	return 0;
}
