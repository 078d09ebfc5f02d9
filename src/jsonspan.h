/*-------------------------------------------------------------------------
 *
 * jsonspan.h
 *		The members of a JSON object as spans of its text (jsonspan.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_JSONSPAN_H
#define PLANK_JSONSPAN_H

#include "common/jsonapi.h"

/*
 * One member of a JSON object, as spans of the object's text found with
 * PostgreSQL's JSON parser (common/jsonapi.h): nothing is re-serialised.
 */
typedef struct PlankJsonMember
{
	const char *key;			/* the key's string token, with its quotes */
	int			keylen;
	const char *value;			/* the value's text */
	int			valuelen;
	JsonTokenType type;			/* the value's first token */
} PlankJsonMember;

extern bool plank_json_members(const char *json, int len, int encoding,
							   PlankJsonMember **members, int *nmembers, char **error);

#ifndef FRONTEND
#include "utils/jsonb.h"

extern bool plank_jsonb_member(JsonbContainer *c, const char *key, JsonbValue *out);
extern char *plank_json_text_string(const char *json, const char *key);
extern char *plank_json_string(const char *tok, int len, int *outlen);
extern char *plank_json_key(const PlankJsonMember *m, int *len);
extern bool plank_json_key_is(const PlankJsonMember *m, const char *name);
#endif

#endif							/* PLANK_JSONSPAN_H */
