/*-------------------------------------------------------------------------
 *
 * fuzz_common.h
 *		Shared by Plank's libFuzzer harnesses (test/fuzz): runs PostgreSQL's
 *		JSON parser (common/jsonapi.c, the parser behind jsonb_in) the way the
 *		backend does for a client message, with a nesting bound standing in
 *		for the backend's check_stack_depth().
 *
 * In the backend, pg_parse_json() calls check_stack_depth() on every object
 * and array, so a deeply nested message ends in an ERROR ("stack depth limit
 * exceeded", caught by protocol.c and answered with malformed_json).  The
 * frontend build of jsonapi.c has no such check, so without a bound the
 * harness would report the frontend's unbounded recursion, which the server
 * does not have.  The bound is enforced from the object_start/array_start
 * actions by a longjmp, as the backend's ereport(ERROR) would.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_FUZZ_COMMON_H
#define PLANK_FUZZ_COMMON_H

#include <setjmp.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

/*
 * Nesting bound.  The backend's is set by max_stack_depth (2MB by default),
 * several thousand levels of jsonb_in; this one keeps an ASan build well
 * inside the default 8MB stack.
 */
#ifndef FUZZ_MAX_DEPTH
#define FUZZ_MAX_DEPTH 2000
#endif

/* Free a lexer made by makeJsonLexContextCstringLen (PostgreSQL 15 has no function for it). */
static inline void
fuzz_free_lex(JsonLexContext *lex)
{
	if (lex->strval != NULL)
	{
		pfree(lex->strval->data);
		pfree(lex->strval);
	}
	pfree(lex);
}

#endif							/* PLANK_FUZZ_COMMON_H */
