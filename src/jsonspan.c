/*-------------------------------------------------------------------------
 *
 * jsonspan.c
 *		The members of a JSON object as spans of its text, found with
 *		PostgreSQL's own JSON parser (common/jsonapi.h) in the mode the json
 *		type's input function uses (no de-escaping): every value the json
 *		type accepts is accepted, including those jsonb refuses (a string
 *		holding \u0000, a number such as 1e1000000), and nothing is
 *		re-serialised.  The worker routes, filters and cuts change payloads
 *		with it (events.c, subs.c, visibility.c).
 *
 * Compiles in the server and, with -DFRONTEND, in the fuzz harness
 * test/fuzz/fuzz_payload.c.
 *
 *-------------------------------------------------------------------------
 */
#ifdef FRONTEND
#include "postgres_fe.h"
#else
#include "postgres.h"
#endif

#include "common/jsonapi.h"
#ifndef FRONTEND
#include "mb/pg_wchar.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#endif

#include "compat.h"
#include "jsonspan.h"

typedef struct MembersState
{
	JsonLexContext *lex;
	char	   *next_key;		/* the next key's token starts here (after spaces) */
	PlankJsonMember *members;
	int			n;
	int			cap;
	bool		is_object;
} MembersState;

static inline bool
json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static PlankJsonCbResult
members_object_start(void *state)
{
	MembersState *st = (MembersState *) state;

	if (st->lex->lex_level == 0)
	{
		st->is_object = true;
		st->next_key = (char *) st->lex->token_terminator;	/* past the '{' */
	}
	return PLANK_JSON_CB_OK;
}

static PlankJsonCbResult
members_field_start(void *state, char *fname, bool isnull)
{
	MembersState *st = (MembersState *) state;
	PlankJsonMember *m;
	char	   *p;
	char	   *e;

	if (st->lex->lex_level != 1)
		return PLANK_JSON_CB_OK;
	if (st->n == st->cap)
	{
		st->cap = st->cap ? st->cap * 2 : 16;
		st->members = st->members ? repalloc(st->members, st->cap * sizeof(PlankJsonMember)) :
			palloc(st->cap * sizeof(PlankJsonMember));
	}
	m = &st->members[st->n++];
	m->value = st->lex->token_start;
	m->valuelen = 0;
	m->type = st->lex->token_type;
	/* the key: the string token between the '{' or ',' and the ':' */
	p = st->next_key;
	while (json_space(*p))
		p++;
	e = (char *) st->lex->prev_token_terminator - 1;	/* the ':' */
	while (e > p && json_space(e[-1]))
		e--;
	m->key = p;
	m->keylen = e - p;
	return PLANK_JSON_CB_OK;
}

static PlankJsonCbResult
members_field_end(void *state, char *fname, bool isnull)
{
	MembersState *st = (MembersState *) state;
	PlankJsonMember *m;

	if (st->lex->lex_level != 1)
		return PLANK_JSON_CB_OK;
	m = &st->members[st->n - 1];
	m->valuelen = st->lex->prev_token_terminator - m->value;
	st->next_key = (char *) st->lex->token_terminator;	/* past the ',' or '}' */
	return PLANK_JSON_CB_OK;
}

/*
 * plank_json_members
 *		The members of the JSON object text json (len bytes in the given
 *		encoding), in order, as spans of the text: PostgreSQL's JSON parser
 *		without de-escaping, which accepts exactly what the json type
 *		accepts.  Returns false, with *error set to the parser's message, when
 *		the text is not JSON or not an object.  Allocates in the current
 *		memory context; raises only out-of-memory errors.
 */
bool
plank_json_members(const char *json, int len, int encoding,
				   PlankJsonMember **members, int *nmembers, char **error)
{
	JsonSemAction sem;
	MembersState st;
	JsonParseErrorType rc;

	memset(&sem, 0, sizeof(sem));
	memset(&st, 0, sizeof(st));
	st.lex = plank_json_lex_cstring(json, len, encoding, false);
	sem.semstate = &st;
	sem.object_start = members_object_start;
	sem.object_field_start = members_field_start;
	sem.object_field_end = members_field_end;
	rc = pg_parse_json(st.lex, &sem);
	if (rc != JSON_SUCCESS)
	{
#ifndef FRONTEND
		*error = json_errdetail(rc, st.lex);
#else
		*error = "it is not valid JSON";	/* no json_errdetail in 15's frontend library */
#endif
		return false;
	}
	if (!st.is_object)
	{
		*error = "it is not a JSON object";
		return false;
	}
	*members = st.members;
	*nmembers = st.n;
	return true;
}

#ifndef FRONTEND

/*
 * Change payloads are read with PostgreSQL's own JSON parser (common/
 * jsonapi.h) without de-escaping, as the json type's input function does:
 * every value the json type accepts (strings holding "\u0000", numbers such
 * as 1e1000000) is accepted, and members are found as spans of the text, so
 * that nothing is re-serialised.  Only the members a filter compares, and
 * keys, are de-escaped, one token at a time, with the same lexer.
 */
/*
 * plank_json_string
 *		De-escape one JSON string token (len bytes, with its quotes) with
 *		PostgreSQL's JSON lexer: a palloc'd NUL-terminated copy, *outlen
 *		bytes.  Returns NULL, never raising, when it cannot be de-escaped
 *		(it holds \u0000, or a character the database encoding lacks).
 */
char *
plank_json_string(const char *tok, int len, int *outlen)
{
	MemoryContext cxt = CurrentMemoryContext;
	char	   *volatile result = NULL;

	if (len < 2 || tok[0] != '"')
		return NULL;
	if (memchr(tok, '\\', len) == NULL)
	{
		*outlen = len - 2;
		return pnstrdup(tok + 1, len - 2);
	}
	PG_TRY();
	{
		JsonLexContext *lex = plank_json_lex_cstring(tok, len,
													 GetDatabaseEncoding(), true);

		if (json_lex(lex) == JSON_SUCCESS && lex->token_type == JSON_TOKEN_STRING &&
			lex->token_terminator == tok + len)
		{
			*outlen = lex->strval->len;
			result = lex->strval->data;
		}
	}
	PG_CATCH();
	{
		/* a \u escape the database encoding cannot hold */
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		result = NULL;
	}
	PG_END_TRY();
	return result;
}

/*
 * plank_json_key
 *		A member's key, de-escaped (NUL-terminated, *len bytes); raises
 *		ERROR (22P05) for a key that cannot be de-escaped (change payloads
 *		have column names as keys, which cannot).
 */
char *
plank_json_key(const PlankJsonMember *m, int *len)
{
	char	   *key = plank_json_string(m->key, m->keylen, len);

	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
				 errmsg("plank cannot read the member name %.*s of a change payload",
						Min(m->keylen, 200), m->key)));
	return key;
}

/* plank_json_key_is: is a member's key the plain name (no escapes in name)? */
bool
plank_json_key_is(const PlankJsonMember *m, const char *name)
{
	int			len = strlen(name);

	return m->keylen == len + 2 && m->key[0] == '"' && memcmp(m->key + 1, name, len) == 0;
}

/*
 * plank_jsonb_member
 *		Member key of the jsonb container c into *out: false when c is not an
 *		object or has no such member.  PostgreSQL docs "JSON Types" (jsonb
 *		object keys are unique: the last one given wins).
 */
bool
plank_jsonb_member(JsonbContainer *c, const char *key, JsonbValue *out)
{
	return JsonContainerIsObject(c) &&
		getKeyJsonValueFromContainer(c, key, strlen(key), out) != NULL;
}

/*
 * jsonb_string
 *		The string member key of the jsonb container c, palloc'd and
 *		NUL-terminated, or NULL when it is absent or not a string.
 */
static char *
jsonb_string(JsonbContainer *c, const char *key)
{
	JsonbValue	v;

	if (!plank_jsonb_member(c, key, &v) || v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/*
 * plank_json_text_string
 *		The string member key of a JSON object given as text (a token's
 *		claims: RFC 7519 section 4.1.2 makes "sub" a StringOrURI), or NULL
 *		when json is NULL or empty, not an object, or the member is absent
 *		or not a string.  Raises ERROR (22P02) for text that is not JSON.
 */
char *
plank_json_text_string(const char *json, const char *key)
{
	Jsonb	   *jb;
	char	   *result;

	if (json == NULL || json[0] == '\0')
		return NULL;
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
	result = jsonb_string(&jb->root, key);
	pfree(jb);
	return result;
}

#endif							/* !FRONTEND */
