/*-------------------------------------------------------------------------
 *
 * jws.c
 *		The JWS compact serialisation (RFC 7515 section 7.1): three base64url
 *		segments (section 2, no padding) separated by dots.  Only splits and
 *		decodes; auth.c parses the JSON and verifies the signature.
 *
 * Uses PostgreSQL's base64 decoder (common/base64.c) after mapping the URL
 * alphabet onto the standard one.  Builds in the backend and, for the fuzz
 * harness, in frontend code linked with libpgcommon.
 *
 *-------------------------------------------------------------------------
 */
#ifdef FRONTEND
#include "postgres_fe.h"
#else
#include "postgres.h"
#endif

#include <ctype.h>

#include "common/base64.h"
#include "jws.h"

/* the longest token accepted: far above any real JWT, bounds the work */
#define MAX_TOKEN_LEN (64 * 1024)

/*
 * plank_base64url_decode
 *		Decode len bytes of unpadded base64url into out (initialised here,
 *		NUL-terminated).  False for a character outside the alphabet or a
 *		length base64 cannot have.
 */
bool
plank_base64url_decode(const char *in, int len, StringInfo out)
{
	StringInfoData std;
	int			i;
	int			n;

	initStringInfo(out);
	if (len % 4 == 1)
		return false;
	initStringInfo(&std);
	for (i = 0; i < len; i++)
	{
		char		c = in[i];

		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (!isalnum((unsigned char) c))
		{
			pfree(std.data);
			return false;
		}
		appendStringInfoChar(&std, c);
	}
	/*
	 * Only the canonical spelling: the bits a last, partial character does
	 * not fill must be zero (RFC 4648 section 3.5), so that a signature has
	 * exactly one encoding.
	 */
	if (len % 4 != 0)
	{
		char		c = std.data[std.len - 1];
		int			v = isupper((unsigned char) c) ? c - 'A' :
			islower((unsigned char) c) ? c - 'a' + 26 :
			isdigit((unsigned char) c) ? c - '0' + 52 :
			c == '+' ? 62 : 63;
		int			spare = (len % 4 == 2) ? 0x0F : 0x03;

		if ((v & spare) != 0)
		{
			pfree(std.data);
			return false;
		}
	}
	while (std.len % 4 != 0)
		appendStringInfoChar(&std, '=');
	enlargeStringInfo(out, pg_b64_dec_len(std.len) + 1);
	n = pg_b64_decode(std.data, std.len, (void *) out->data, out->maxlen - 1);
	pfree(std.data);
	if (n < 0)
		return false;
	out->len = n;
	out->data[n] = '\0';
	return true;
}

/*
 * plank_jws_split
 *		Split a token into its three decoded parts.  False for anything that
 *		is not exactly three well-formed segments (or is longer than 64 kB).
 */
bool
plank_jws_split(const char *token, PlankJws *out)
{
	size_t		len = strnlen(token, MAX_TOKEN_LEN + 1);
	const char *dot1;
	const char *dot2;

	if (len > MAX_TOKEN_LEN)
		return false;
	dot1 = strchr(token, '.');
	dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL)
		return false;
	if (!plank_base64url_decode(token, dot1 - token, &out->header) ||
		!plank_base64url_decode(dot1 + 1, dot2 - dot1 - 1, &out->payload) ||
		!plank_base64url_decode(dot2 + 1, strlen(dot2 + 1), &out->signature))
		return false;
	out->signing_input_len = dot2 - token;
	return true;
}
