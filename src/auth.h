/*-------------------------------------------------------------------------
 *
 * auth.h
 *		Who a client is (PlankIdentity) and how it is established and
 *		checked (auth.c): tokens, the anonymous role, channel and publish
 *		grants.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_AUTH_H
#define PLANK_AUTH_H

#include "plank.h"

/* Who a client is: the role it acts as, and the claims of its token */
typedef struct PlankIdentity
{
	Oid			roleid;			/* InvalidOid: not authenticated */
	char	   *role;
	char	   *claims;			/* JSON object text; "{}" when anonymous */
	int64		exp;			/* token expiry, Unix seconds; 0: none */
	bool		from_token;		/* it came from a token (not anonymous) */
} PlankIdentity;

/* auth.c */
extern void plank_auth_load_keys(void);
extern const char *plank_auth_verify(const char *token, MemoryContext cxt,
									 PlankIdentity *id, char **detail);
extern bool plank_auth_anonymous(MemoryContext cxt, PlankIdentity *id);
extern bool plank_auth_channel_allowed(Oid roleid, const char *channel);
extern bool plank_auth_publish_allowed(Oid roleid, const char *channel);

#endif							/* PLANK_AUTH_H */
