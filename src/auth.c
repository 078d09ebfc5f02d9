/*-------------------------------------------------------------------------
 *
 * auth.c
 *		Who a WebSocket client is, and what it may read: JSON Web Tokens
 *		(RFC 7519) in the JWS compact serialisation (RFC 7515), the role a
 *		token names, the anonymous role, and channel authorization by
 *		plank.channel_grants.
 *
 * Signatures are verified with OpenSSL: HS256/384/512 (HMAC) with
 * plank.jwt_secret, RS256/384/512 (RSASSA-PKCS1-v1_5) and ES256/384/512
 * (ECDSA, RFC 7518 section 3.4) with the PEM public key in
 * plank.jwt_public_key_file.  The key is chosen by the algorithm family and
 * must be of that family, so an HS token is never checked against the public
 * key (no algorithm confusion); "none" and unknown algorithms are refused,
 * as is a "crit" header (RFC 7515 section 4.1.11).  Header and claims are
 * parsed with PostgreSQL's jsonb; exp and nbf (RFC 7519 sections 4.1.4,
 * 4.1.5), aud and iss are checked here.
 *
 * (libjwt is not used: its JSON library's json_object() is shadowed by the
 * server's SQL function of the same name.)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "plank.h"

/* the public key of plank.jwt_public_key_file, read at start and on reload */
static EVP_PKEY *public_key = NULL;

/*
 * plank_auth_load_keys
 *		(Re)read plank.jwt_public_key_file.  A file that cannot be read or
 *		parsed is logged (WARNING) and leaves RS/ES tokens refused.
 */
void
plank_auth_load_keys(void)
{
	FILE	   *f;

	if (public_key)
		EVP_PKEY_free(public_key);
	public_key = NULL;
	if (plank_jwt_public_key_file == NULL || plank_jwt_public_key_file[0] == '\0')
		return;

	f = AllocateFile(plank_jwt_public_key_file, "r");
	if (f == NULL)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not open plank.jwt_public_key_file \"%s\": %m", plank_jwt_public_key_file),
				 errdetail("Tokens signed with RS or ES algorithms are refused until the file can be read.")));
		return;
	}
	public_key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	FreeFile(f);
	if (public_key == NULL)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("plank.jwt_public_key_file \"%s\" holds no PEM public key", plank_jwt_public_key_file),
				 errdetail("Tokens signed with RS or ES algorithms are refused.")));
}

typedef enum
{
	FAMILY_HMAC,
	FAMILY_RSA,
	FAMILY_ECDSA
} AlgFamily;

typedef struct JwsAlg
{
	const char *name;
	AlgFamily	family;
	int			bits;			/* of the digest: 256, 384, 512 */
} JwsAlg;

static const JwsAlg jws_algs[] = {
	{"HS256", FAMILY_HMAC, 256}, {"HS384", FAMILY_HMAC, 384}, {"HS512", FAMILY_HMAC, 512},
	{"RS256", FAMILY_RSA, 256}, {"RS384", FAMILY_RSA, 384}, {"RS512", FAMILY_RSA, 512},
	{"ES256", FAMILY_ECDSA, 256}, {"ES384", FAMILY_ECDSA, 384}, {"ES512", FAMILY_ECDSA, 512},
};

static const EVP_MD *
digest_of(int bits)
{
	return bits == 256 ? EVP_sha256() : bits == 384 ? EVP_sha384() : EVP_sha512();
}

/* Parse JSON text that must be an object; NULL if it is not. */
static Jsonb *
parse_object(const char *text, int len)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile jb = NULL;

	if ((int) strlen(text) != len)
		return NULL;			/* a NUL byte inside */
	PG_TRY();
	{
		jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		jb = NULL;
	}
	PG_END_TRY();
	if (jb != NULL && !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	return jb;
}

/* Verify a JWS signature over input with OpenSSL. */
static bool
signature_valid(const JwsAlg *alg, const char *input, int inputlen, StringInfo sig)
{
	bool		ok = false;

	if (alg->family == FAMILY_HMAC)
	{
		unsigned char mac[EVP_MAX_MD_SIZE];
		unsigned int maclen = 0;

		if (plank_jwt_secret == NULL || plank_jwt_secret[0] == '\0')
			return false;
		if (HMAC(digest_of(alg->bits), plank_jwt_secret, strlen(plank_jwt_secret),
				 (const unsigned char *) input, inputlen, mac, &maclen) == NULL)
			return false;
		return (unsigned int) sig->len == maclen && CRYPTO_memcmp(mac, sig->data, maclen) == 0;
	}
	else
	{
		EVP_MD_CTX *ctx;
		unsigned char *der = NULL;
		const unsigned char *verify_sig = (const unsigned char *) sig->data;
		size_t		verify_len = sig->len;
		int			want = alg->family == FAMILY_RSA ? EVP_PKEY_RSA : EVP_PKEY_EC;

		if (public_key == NULL || EVP_PKEY_base_id(public_key) != want)
			return false;
		if (alg->family == FAMILY_ECDSA)
		{
			/* JWS carries R || S of fixed size; OpenSSL wants DER */
			int			half = alg->bits == 512 ? 66 : alg->bits / 8;
			ECDSA_SIG  *es;
			int			derlen;

			if (sig->len != 2 * half)
				return false;
			es = ECDSA_SIG_new();
			if (es == NULL ||
				!ECDSA_SIG_set0(es, BN_bin2bn((unsigned char *) sig->data, half, NULL),
								BN_bin2bn((unsigned char *) sig->data + half, half, NULL)))
			{
				ECDSA_SIG_free(es);
				return false;
			}
			derlen = i2d_ECDSA_SIG(es, &der);
			ECDSA_SIG_free(es);
			if (derlen <= 0)
				return false;
			verify_sig = der;
			verify_len = derlen;
		}
		ctx = EVP_MD_CTX_new();
		if (ctx != NULL &&
			EVP_DigestVerifyInit(ctx, NULL, digest_of(alg->bits), NULL, public_key) == 1 &&
			EVP_DigestVerify(ctx, verify_sig, verify_len, (const unsigned char *) input, inputlen) == 1)
			ok = true;
		EVP_MD_CTX_free(ctx);
		if (der)
			OPENSSL_free(der);
	}
	return ok;
}

/* A numeric claim as seconds; false when absent or not a number. */
static bool
numeric_claim(Jsonb *claims, const char *name, double *value)
{
	JsonbValue	v;

	if (getKeyJsonValueFromContainer(&claims->root, name, strlen(name), &v) == NULL ||
		v.type != jbvNumeric)
		return false;
	*value = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric)));
	return true;
}

/* Does the aud claim (a string or an array of strings) hold plank.jwt_audience? */
static bool
audience_matches(Jsonb *claims)
{
	JsonbValue	v;
	const char *want = plank_jwt_audience;
	int			wantlen = strlen(want);

	if (getKeyJsonValueFromContainer(&claims->root, "aud", 3, &v) == NULL)
		return false;
	if (v.type == jbvString)
		return v.val.string.len == wantlen && memcmp(v.val.string.val, want, wantlen) == 0;
	if (v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data))
	{
		JsonbIterator *it = JsonbIteratorInit(v.val.binary.data);
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			if (tok == WJB_ELEM && v.type == jbvString &&
				v.val.string.len == wantlen && memcmp(v.val.string.val, want, wantlen) == 0)
				return true;
	}
	return false;
}

/*
 * The role claim at plank.jwt_role_claim: a dot-separated path of object
 * keys ("role", "app_metadata.role"), as PostgREST's jwt-role-claim-key.
 */
static char *
role_claim(Jsonb *claims)
{
	char	   *path = pstrdup(plank_jwt_role_claim);
	char	   *key;
	char	   *save = NULL;
	JsonbContainer *c = &claims->root;
	JsonbValue	v;

	for (key = strtok_r(path, ".", &save); key != NULL; key = strtok_r(NULL, ".", &save))
	{
		if (c == NULL || getKeyJsonValueFromContainer(c, key, strlen(key), &v) == NULL)
			return NULL;
		c = (v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data)) ?
			v.val.binary.data : NULL;
	}
	if (v.type != jbvString || v.val.string.len == 0 || v.val.string.len >= NAMEDATALEN)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/* Look up a role by name in a transaction of our own; InvalidOid if none. */
static Oid
lookup_role(const char *role)
{
	Oid			roleid;
	MemoryContext cxt = CurrentMemoryContext;

	StartTransactionCommand();
	roleid = get_role_oid(role, true);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return roleid;
}

static const char *
refuse(char **detail, const char *code, const char *msg)
{
	*detail = pstrdup(msg);
	return code;
}

/*
 * plank_auth_verify
 *		Verify a JWT (compact serialisation) and fill *id with the role it
 *		names and its claims, allocated in cxt.  Returns NULL on success, or a
 *		stable error code ("invalid_token", "token_expired",
 *		"token_not_yet_valid", "unknown_role") with *detail set.  Runs outside
 *		a transaction (it starts one to look the role up); never raises an
 *		error for a bad token.
 */
const char *
plank_auth_verify(const char *token, MemoryContext cxt, PlankIdentity *id, char **detail)
{
	PlankJws	jws;
	Jsonb	   *header;
	Jsonb	   *claims;
	JsonbValue	v;
	const JwsAlg *alg = NULL;
	double		now = (double) time(NULL);
	double		exp = 0;
	double		nbf;
	char	   *role;
	Oid			roleid;
	int			i;

	if (!plank_jws_split(token, &jws) ||
		(header = parse_object(jws.header.data, jws.header.len)) == NULL ||
		(claims = parse_object(jws.payload.data, jws.payload.len)) == NULL)
		return refuse(detail, "invalid_token", "token is not a well-formed JWT");

	if (getKeyJsonValueFromContainer(&header->root, "alg", 3, &v) != NULL && v.type == jbvString)
		for (i = 0; i < lengthof(jws_algs); i++)
			if (strlen(jws_algs[i].name) == v.val.string.len &&
				memcmp(jws_algs[i].name, v.val.string.val, v.val.string.len) == 0)
				alg = &jws_algs[i];
	if (alg == NULL)
		return refuse(detail, "invalid_token", "token algorithm is not accepted by this server");
	if (getKeyJsonValueFromContainer(&header->root, "crit", 4, &v) != NULL)
		return refuse(detail, "invalid_token", "token has critical header parameters this server does not understand");
	if (!signature_valid(alg, token, jws.signing_input_len, &jws.signature))
		return refuse(detail, "invalid_token", "token signature is not valid");

	if (getKeyJsonValueFromContainer(&claims->root, "exp", 3, &v) != NULL &&
		!numeric_claim(claims, "exp", &exp))
		return refuse(detail, "invalid_token", "token claim exp is not a number");
	if (getKeyJsonValueFromContainer(&claims->root, "nbf", 3, &v) != NULL &&
		!numeric_claim(claims, "nbf", &nbf))
		return refuse(detail, "invalid_token", "token claim nbf is not a number");
	if (exp != 0 && now >= exp)
		return refuse(detail, "token_expired", "token has expired");
	/* keep a far expiry representable (the year 3000 is far enough) */
	if (exp > 32503680000.0)
		exp = 32503680000.0;
	if (numeric_claim(claims, "nbf", &nbf) && now < nbf)
		return refuse(detail, "token_not_yet_valid", "token is not valid yet");
	if (plank_jwt_audience[0] != '\0' && !audience_matches(claims))
		return refuse(detail, "invalid_token", "token audience does not match plank.jwt_audience");
	if (plank_jwt_issuer[0] != '\0')
	{
		JsonbValue	v;

		if (getKeyJsonValueFromContainer(&claims->root, "iss", 3, &v) == NULL ||
			v.type != jbvString || v.val.string.len != strlen(plank_jwt_issuer) ||
			memcmp(v.val.string.val, plank_jwt_issuer, v.val.string.len) != 0)
		{
				return refuse(detail, "invalid_token", "token issuer does not match plank.jwt_issuer");
		}
	}

	role = role_claim(claims);
	if (role == NULL)
		return refuse(detail, "invalid_token", "token has no role claim at plank.jwt_role_claim");
	roleid = lookup_role(role);
	if (!OidIsValid(roleid))
		return refuse(detail, "unknown_role", "the role named by the token does not exist");

	id->roleid = roleid;
	id->role = MemoryContextStrdup(cxt, role);
	id->claims = MemoryContextStrdup(cxt, jws.payload.data);
	id->exp = (int64) exp;
	id->from_token = true;
	return NULL;
}

/*
 * plank_auth_anonymous
 *		The identity of a client without a token: plank.anonymous_role with
 *		empty claims.  False when no anonymous role is set (anonymous clients
 *		are refused) or it does not exist (logged).
 */
bool
plank_auth_anonymous(MemoryContext cxt, PlankIdentity *id)
{
	Oid			roleid;

	if (plank_anonymous_role == NULL || plank_anonymous_role[0] == '\0')
		return false;
	roleid = lookup_role(plank_anonymous_role);
	if (!OidIsValid(roleid))
	{
		ereport(WARNING,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" named by plank.anonymous_role does not exist", plank_anonymous_role),
				 errhint("Create the role or change plank.anonymous_role.")));
		return false;
	}
	id->roleid = roleid;
	id->role = MemoryContextStrdup(cxt, plank_anonymous_role);
	id->claims = MemoryContextStrdup(cxt, "{}");
	id->exp = 0;
	id->from_token = false;
	return true;
}

/*
 * plank_auth_channel_allowed
 *		May a role subscribe to a NOTIFY channel?  Superusers may; others if
 *		a row of plank.channel_grants whose channel pattern (LIKE) matches
 *		names "public" or a role the role is a member of.  Runs inside the
 *		caller's transaction, with a snapshot.
 */
bool
plank_auth_channel_allowed(Oid roleid, const char *channel)
{
	Oid			argtypes[2] = {TEXTOID, OIDOID};
	Datum		args[2];
	bool		allowed;

	if (superuser_arg(roleid))
		return true;

	args[0] = CStringGetTextDatum(channel);
	args[1] = ObjectIdGetDatum(roleid);
	SPI_connect();
	/* every name qualified: immune to the search path (SECURITY.md) */
	if (SPI_execute_with_args("SELECT 1 FROM plank.channel_grants g "
							  "LEFT JOIN pg_catalog.pg_roles r "
							  "ON r.rolname OPERATOR(pg_catalog.=) g.grantee "
							  "WHERE $1 OPERATOR(pg_catalog.~~) g.channel AND CASE "
							  "WHEN g.grantee OPERATOR(pg_catalog.=) 'public'::pg_catalog.name THEN true "
							  "WHEN r.oid IS NULL THEN false "
							  "ELSE pg_catalog.pg_has_role($2, r.oid, 'MEMBER') END "
							  "LIMIT 1",
							  2, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read plank.channel_grants");
	allowed = SPI_processed > 0;
	SPI_finish();
	return allowed;
}

/*
 * plank_auth_become
 *		Act as a client inside the current transaction: its role for
 *		privilege checks and row-level security, and its token's claims in
 *		request.jwt.claims (the PostgREST convention, so that policies read
 *		current_setting('request.jwt.claims', true)).  The claims setting is
 *		transaction-local; plank_auth_unbecome restores the user.
 */
void
plank_auth_become(const PlankIdentity *id, Oid *save_userid, int *save_sec_context)
{
	GetUserIdAndSecContext(save_userid, save_sec_context);
	(void) set_config_option("request.jwt.claims", id->claims,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
							 true, 0, false);
	SetUserIdAndSecContext(id->roleid, *save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

/* plank_auth_unbecome: back to the worker's own user. */
void
plank_auth_unbecome(Oid save_userid, int save_sec_context)
{
	SetUserIdAndSecContext(save_userid, save_sec_context);
}
