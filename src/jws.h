/*-------------------------------------------------------------------------
 *
 * jws.h
 *		Splitting a JWS compact serialisation (RFC 7515 section 7.1) into its
 *		decoded parts.  Free of backend dependencies, so that the fuzz
 *		harness (test/fuzz) links it with libpgcommon alone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_JWS_H
#define PLANK_JWS_H

#include "lib/stringinfo.h"

typedef struct PlankJws
{
	StringInfoData header;		/* decoded JOSE header (JSON text) */
	StringInfoData payload;		/* decoded payload: the claims (JSON text) */
	StringInfoData signature;	/* decoded signature bytes */
	int			signing_input_len;	/* bytes of "header.payload" in the token */
} PlankJws;

extern bool plank_base64url_decode(const char *in, int len, StringInfo out);
extern bool plank_jws_split(const char *token, PlankJws *out);

#endif							/* PLANK_JWS_H */
