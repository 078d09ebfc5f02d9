/*-------------------------------------------------------------------------
 *
 * auth.c
 *		Who a WebSocket client is, and what it may read: JSON Web Tokens
 *		(RFC 7519) in the JWS compact serialisation (RFC 7515), the role a
 *		token names, the anonymous role, and channel authorization by
 *		plank.channel_grants.
 *
 * Signatures are verified with OpenSSL: HS256/384/512 (HMAC) with the
 * secret of plank.jwt_secret_file (else plank.jwt_secret), RS256/384/512
 * (RSASSA-PKCS1-v1_5) and ES256/384/512 (ECDSA, RFC 7518 section 3.4) with
 * the PEM public key in plank.jwt_public_key_file.  When plank.jwt_jwks_file
 * names a JSON Web Key Set (RFC 7517), it is the only source of keys: a
 * token's key is the one its header's kid names (RFC 7515 section 4.1.4).
 * The key must be of the algorithm's family, so an HS token is never checked
 * against a public key (no algorithm confusion); "none" and unknown
 * algorithms are refused, as is a "crit" header (RFC 7515 section 4.1.11).
 * Header, claims and key sets are parsed with PostgreSQL's jsonb; JWK keys
 * are built with OpenSSL 3's EVP_PKEY_fromdata.  exp and nbf (RFC 7519
 * sections 4.1.4, 4.1.5), aud and iss are checked here.
 *
 * Key files are read at the socket worker's start and on every reload
 * (plank_auth_load_keys), never from a libwebsockets callback; secrets live
 * in files because PostgreSQL logs every changed setting with its value on
 * reload.
 *
 * (libjwt is not used: its JSON library's json_object() is shadowed by the
 * server's SQL function of the same name.)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
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

#include "jsonspan.h"
#include "jws.h"
#include "auth.h"
#include "check.h"

/* settings (GUCs), defined in plank_auth_define_settings() */
static char *plank_jwt_secret = NULL;
static char *plank_jwt_secret_file = NULL;
static char *plank_jwt_public_key_file = NULL;
static char *plank_jwt_jwks_file = NULL;
static char *plank_jwt_audience = NULL;
static char *plank_jwt_issuer = NULL;
static char *plank_jwt_role_claim = NULL;
static char *plank_anonymous_role = NULL;

/* the longest key file read: far above any real secret or key set */
#define MAX_KEY_FILE	(1024 * 1024)

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

/* One key of plank.jwt_jwks_file (RFC 7517 section 4). */
typedef struct Jwk
{
	char	   *kid;			/* "kid", NULL when the key has none */
	AlgFamily	family;			/* from "kty": oct, RSA, EC */
	const JwsAlg *alg;			/* "alg", NULL when the key has none */
	EVP_PKEY   *pkey;			/* RSA and EC keys */
	unsigned char *secret;		/* oct keys: "k" */
	int			secret_len;
} Jwk;

/* The keys of plank.jwt_jwks_file, all allocated in cxt. */
typedef struct JwkSet
{
	MemoryContext cxt;
	int			nkeys;
	Jwk		   *keys;
} JwkSet;

/* the public key of plank.jwt_public_key_file, read at start and on reload */
static EVP_PKEY *public_key = NULL;

/* the HMAC secret in force: plank.jwt_secret_file's contents, or plank.jwt_secret */
static unsigned char *hmac_secret = NULL;
static int	hmac_secret_len = 0;

/* the keys of plank.jwt_jwks_file; NULL when none could be read yet */
static JwkSet *jwk_set = NULL;

/* the file and SHA-256 of the contents jwk_set was read from: unchanged files are not re-read */
static char *jwk_set_path = NULL;
static unsigned char jwk_set_digest[32];

static Jsonb *parse_object(const char *text, int len);

/*
 * Read a whole key file named by a setting into buf.  The file may hold
 * secrets, so it must not be readable by group or others, as PostgreSQL asks
 * of ssl_key_file.  False, with a WARNING saying why, when the file is
 * missing, unreadable, not a regular file, too long or too open.
 */
static bool
read_key_file(const char *setting, const char *path, StringInfo buf)
{
	FILE	   *f;
	struct stat st;
	size_t		n;

	f = AllocateFile(path, "r");
	if (f == NULL)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not open %s \"%s\": %m", setting, path),
				 errdetail("The keys read before stay in force.")));
		return false;
	}
	if (fstat(fileno(f), &st) != 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not stat %s \"%s\": %m", setting, path),
				 errdetail("The keys read before stay in force.")));
		FreeFile(f);
		return false;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > MAX_KEY_FILE)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s \"%s\" is not a regular file of at most %d bytes", setting, path, MAX_KEY_FILE),
				 errdetail("The keys read before stay in force.")));
		FreeFile(f);
		return false;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s \"%s\" has group or world access", setting, path),
				 errdetail("The file holds secrets, so it is not read; the keys read before stay in force."),
				 errhint("Make the file readable by the server's operating system user only: chmod 0600 \"%s\".", path)));
		FreeFile(f);
		return false;
	}
	initStringInfo(buf);
	enlargeStringInfo(buf, st.st_size + 1);
	n = fread(buf->data, 1, buf->maxlen - 1, f);
	if (ferror(f) || n > MAX_KEY_FILE)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not read %s \"%s\": %m", setting, path),
				 errdetail("The keys read before stay in force.")));
		FreeFile(f);
		explicit_bzero(buf->data, buf->maxlen);
		pfree(buf->data);
		return false;
	}
	FreeFile(f);
	buf->len = n;
	buf->data[n] = '\0';
	return true;
}

/* Forget a string that held a secret. */
static void
wipe(StringInfo buf)
{
	explicit_bzero(buf->data, buf->maxlen);
	pfree(buf->data);
}

/*
 * Make the HMAC secret in force: the contents of plank.jwt_secret_file
 * without trailing newlines when that is set, else plank.jwt_secret.  A file
 * that cannot be used keeps the secret in force before.
 */
static void
load_hmac_secret(void)
{
	StringInfoData buf;
	const char *src;
	int			len;

	if (plank_jwt_secret_file != NULL && plank_jwt_secret_file[0] != '\0')
	{
		if (!read_key_file("plank.jwt_secret_file", plank_jwt_secret_file, &buf))
			return;
		while (buf.len > 0 && (buf.data[buf.len - 1] == '\n' || buf.data[buf.len - 1] == '\r'))
			buf.len--;
		if (buf.len == 0)
		{
			ereport(WARNING,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("plank.jwt_secret_file \"%s\" is empty", plank_jwt_secret_file),
					 errdetail("The keys read before stay in force.")));
			wipe(&buf);
			return;
		}
		src = buf.data;
		len = buf.len;
	}
	else
	{
		buf.data = NULL;
		src = plank_jwt_secret ? plank_jwt_secret : "";
		len = strlen(src);
	}

	if (hmac_secret != NULL)
	{
		explicit_bzero(hmac_secret, hmac_secret_len);
		pfree(hmac_secret);
	}
	hmac_secret = NULL;
	hmac_secret_len = 0;
	if (len > 0)
	{
		hmac_secret = MemoryContextAlloc(TopMemoryContext, len);
		memcpy(hmac_secret, src, len);
		hmac_secret_len = len;
	}
	if (buf.data != NULL)
		wipe(&buf);
}

/*
 * (Re)read plank.jwt_public_key_file.  A file that cannot be read or parsed
 * is logged (WARNING) and keeps the key in force before; an empty setting
 * drops the key.
 */
static void
load_public_key(void)
{
	FILE	   *f;
	EVP_PKEY   *key;

	if (plank_jwt_public_key_file == NULL || plank_jwt_public_key_file[0] == '\0')
	{
		if (public_key)
			EVP_PKEY_free(public_key);
		public_key = NULL;
		return;
	}

	f = AllocateFile(plank_jwt_public_key_file, "r");
	if (f == NULL)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not open plank.jwt_public_key_file \"%s\": %m", plank_jwt_public_key_file),
				 errdetail(public_key ? "The key read before stays in force." :
						   "Tokens signed with RS or ES algorithms are refused until the file can be read.")));
		return;
	}
	key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	FreeFile(f);
	if (key == NULL)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("plank.jwt_public_key_file \"%s\" holds no PEM public key", plank_jwt_public_key_file),
				 errdetail(public_key ? "The key read before stays in force." :
						   "Tokens signed with RS or ES algorithms are refused.")));
		return;
	}
	if (public_key)
		EVP_PKEY_free(public_key);
	public_key = key;
}

static const JwsAlg *
find_alg(const char *name, int len)
{
	int			i;

	for (i = 0; i < lengthof(jws_algs); i++)
		if (strlen(jws_algs[i].name) == len && memcmp(jws_algs[i].name, name, len) == 0)
			return &jws_algs[i];
	return NULL;
}

/*
 * A member of a JWK as a NUL-terminated string: *out NULL when it is absent;
 * false when it is present but not a string (or holds a NUL).
 */
static bool
jwk_string(JsonbContainer *jwk, const char *name, char **out)
{
	JsonbValue	v;

	*out = NULL;
	if (!plank_jsonb_member(jwk, name, &v))
		return true;
	if (v.type != jbvString || memchr(v.val.string.val, '\0', v.val.string.len) != NULL)
		return false;
	*out = pnstrdup(v.val.string.val, v.val.string.len);
	return true;
}

/* A base64url member of a JWK (RFC 7518 section 6), decoded; false if absent or bad. */
static bool
jwk_bytes(JsonbContainer *jwk, const char *name, StringInfo out)
{
	char	   *s;

	if (!jwk_string(jwk, name, &s) || s == NULL)
		return false;
	return plank_base64url_decode(s, strlen(s), out) && out->len > 0;
}

/* Make an EVP_PKEY of type ("RSA", "EC") from OSSL_PARAMs; NULL when OpenSSL refuses. */
static EVP_PKEY *
pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY   *pkey = NULL;

	if (params == NULL || ctx == NULL ||
		EVP_PKEY_fromdata_init(ctx) != 1 ||
		EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	if (pkey != NULL)
	{
		/* the point is on its curve, the modulus is odd, and so on */
		ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
		if (ctx == NULL || EVP_PKEY_public_check(ctx) != 1)
		{
			EVP_PKEY_free(pkey);
			pkey = NULL;
		}
		EVP_PKEY_CTX_free(ctx);
	}
	return pkey;
}

/* An RSA public key from a JWK's n and e (RFC 7518 section 6.3.1). */
static const char *
jwk_rsa(JsonbContainer *c, Jwk *key)
{
	StringInfoData n;
	StringInfoData e;
	BIGNUM	   *bn_n;
	BIGNUM	   *bn_e;
	OSSL_PARAM_BLD *bld;

	if (!jwk_bytes(c, "n", &n) || !jwk_bytes(c, "e", &e))
		return "Its \"n\" or \"e\" is missing or not base64url.";
	if (n.len < 2048 / 8)
		return "Its modulus is shorter than the 2048 bits RFC 7518 section 3.3 requires.";
	bn_n = BN_bin2bn((unsigned char *) n.data, n.len, NULL);
	bn_e = BN_bin2bn((unsigned char *) e.data, e.len, NULL);
	bld = OSSL_PARAM_BLD_new();
	if (bn_n != NULL && bn_e != NULL && bld != NULL &&
		OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) == 1 &&
		OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) == 1)
		key->pkey = pkey_from_params("RSA", bld);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	return key->pkey ? NULL : "OpenSSL does not accept it as an RSA public key.";
}

/* An EC public key from a JWK's crv, x and y (RFC 7518 section 6.2.1). */
static const char *
jwk_ec(JsonbContainer *c, Jwk *key)
{
	char	   *crv;
	const char *group;
	int			size;
	StringInfoData x;
	StringInfoData y;
	unsigned char *point;
	OSSL_PARAM_BLD *bld;

	if (!jwk_string(c, "crv", &crv) || crv == NULL)
		return "Its \"crv\" is missing.";
	if (strcmp(crv, "P-256") == 0)
		group = "prime256v1", size = 32;
	else if (strcmp(crv, "P-384") == 0)
		group = "secp384r1", size = 48;
	else if (strcmp(crv, "P-521") == 0)
		group = "secp521r1", size = 66;
	else
		return "Its \"crv\" is not P-256, P-384 or P-521.";
	/* x and y are the full size of a coordinate (section 6.2.1.2, 6.2.1.3) */
	if (!jwk_bytes(c, "x", &x) || !jwk_bytes(c, "y", &y) || x.len != size || y.len != size)
		return "Its \"x\" or \"y\" is missing, not base64url, or not of the curve's size.";
	/* an uncompressed point (SEC 1 section 2.3.3): 0x04 || x || y */
	point = palloc(1 + 2 * size);
	point[0] = 0x04;
	memcpy(point + 1, x.data, size);
	memcpy(point + 1 + size, y.data, size);
	bld = OSSL_PARAM_BLD_new();
	if (bld != NULL &&
		OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) == 1 &&
		OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * size) == 1)
		key->pkey = pkey_from_params("EC", bld);
	OSSL_PARAM_BLD_free(bld);
	return key->pkey ? NULL : "OpenSSL does not accept it as a point of its curve.";
}

/*
 * One JWK into key (allocated in the current memory context).  Returns NULL
 * when the key is usable, else why not (an errdetail sentence).  RFC 7517
 * section 5: keys of a set that are not understood are ignored.
 */
static const char *
jwk_parse(JsonbContainer *c, Jwk *key)
{
	char	   *kty;
	char	   *alg;
	char	   *use;
	JsonbValue	v;

	memset(key, 0, sizeof(*key));
	if (!jwk_string(c, "kid", &key->kid))
		return "Its \"kid\" is not a string.";
	if (!jwk_string(c, "kty", &kty) || kty == NULL)
		return "It has no \"kty\" string.";
	if (!jwk_string(c, "use", &use) || (use != NULL && strcmp(use, "sig") != 0))
		return "Its \"use\" is not \"sig\".";
	if (!jwk_string(c, "alg", &alg))
		return "Its \"alg\" is not a string.";
	if (alg != NULL && (key->alg = find_alg(alg, strlen(alg))) == NULL)
		return "Its \"alg\" is not one of HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, ES512.";

	if (strcmp(kty, "oct") == 0)
	{
		StringInfoData k;

		key->family = FAMILY_HMAC;
		if (key->alg != NULL && key->alg->family != FAMILY_HMAC)
			return "Its \"alg\" is not an HMAC algorithm, as its \"kty\" oct requires.";
		if (!jwk_bytes(c, "k", &k))
			return "Its \"k\" is missing, empty or not base64url.";
		key->secret = (unsigned char *) k.data;
		key->secret_len = k.len;
		return NULL;
	}
	if (strcmp(kty, "RSA") != 0 && strcmp(kty, "EC") != 0)
		return "Its \"kty\" is not oct, RSA or EC.";
	if (plank_jsonb_member(c, "d", &v))
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("key \"%s\" of plank.jwt_jwks_file \"%s\" holds a private key",
						key->kid ? key->kid : "", plank_jwt_jwks_file),
				 errdetail("Only its public part is used."),
				 errhint("Give the server the public key only.")));
	if (strcmp(kty, "RSA") == 0)
	{
		key->family = FAMILY_RSA;
		if (key->alg != NULL && key->alg->family != FAMILY_RSA)
			return "Its \"alg\" is not an RS algorithm, as its \"kty\" RSA requires.";
		return jwk_rsa(c, key);
	}
	key->family = FAMILY_ECDSA;
	if (key->alg != NULL && key->alg->family != FAMILY_ECDSA)
		return "Its \"alg\" is not an ES algorithm, as its \"kty\" EC requires.";
	return jwk_ec(c, key);
}

static void
free_jwk_set(JwkSet *set)
{
	int			i;

	for (i = 0; i < set->nkeys; i++)
	{
		if (set->keys[i].pkey)
			EVP_PKEY_free(set->keys[i].pkey);
		if (set->keys[i].secret)
			explicit_bzero(set->keys[i].secret, set->keys[i].secret_len);
	}
	MemoryContextDelete(set->cxt);
}

/*
 * Parse a JSON Web Key Set (RFC 7517 section 5) held in text, in the current
 * memory context.  NULL (with a WARNING) when it is not a key set or holds no
 * usable key; keys that cannot be used are left out with a WARNING each.
 */
static JwkSet *
jwk_set_parse(const char *text, int len, MemoryContext cxt)
{
	Jsonb	   *jb = parse_object(text, len);
	JsonbValue	v;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JwkSet	   *set;
	int			index = 0;

	if (jb == NULL ||
		!plank_jsonb_member(&jb->root, "keys", &v) ||
		v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data))
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("plank.jwt_jwks_file \"%s\" is not a JSON Web Key Set", plank_jwt_jwks_file),
				 errdetail("A key set is a JSON object whose member \"keys\" is an array of keys (RFC 7517 section 5). "
						   "The keys read before stay in force.")));
		return NULL;
	}

	set = palloc0(sizeof(JwkSet));
	set->cxt = cxt;
	set->keys = palloc0(sizeof(Jwk) * Max(JsonContainerSize(v.val.binary.data), 1));
	it = JsonbIteratorInit(v.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Jwk		   *key = &set->keys[set->nkeys];
		const char *why;

		if (tok != WJB_ELEM)
			continue;
		index++;
		memset(key, 0, sizeof(*key));
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			why = "It is not a JSON object.";
		else
			why = jwk_parse(v.val.binary.data, key);
		if (why == NULL)
		{
			set->nkeys++;
			continue;
		}
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("key %d (kid \"%s\") of plank.jwt_jwks_file \"%s\" is not used",
						index, key->kid ? key->kid : "", plank_jwt_jwks_file),
				 errdetail("%s", why)));
		if (key->pkey)
			EVP_PKEY_free(key->pkey);
	}
	if (set->nkeys == 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("plank.jwt_jwks_file \"%s\" holds no usable key", plank_jwt_jwks_file),
				 errdetail("The keys read before stay in force.")));
		return NULL;
	}
	return set;
}

/*
 * (Re)read plank.jwt_jwks_file.  A file that cannot be read or holds no
 * usable key keeps the set in force before (none at start: every token is
 * refused until it can be read); an empty setting drops the set.  A file
 * whose contents did not change since the set in force was read is not
 * parsed again, so each key set is logged once.
 */
static void
load_jwk_set(void)
{
	StringInfoData buf;
	MemoryContext cxt;
	MemoryContext old;
	JwkSet	   *set;
	unsigned char digest[32];

	if (plank_jwt_jwks_file == NULL || plank_jwt_jwks_file[0] == '\0')
	{
		if (jwk_set)
			free_jwk_set(jwk_set);
		jwk_set = NULL;
		return;
	}
	if (!read_key_file("plank.jwt_jwks_file", plank_jwt_jwks_file, &buf))
		return;

	/* the same contents of the same file: keep the keys (and do not log them again) */
	if (EVP_Digest(buf.data, buf.len, digest, NULL, EVP_sha256(), NULL) == 1 &&
		jwk_set != NULL && jwk_set_path != NULL &&
		strcmp(jwk_set_path, plank_jwt_jwks_file) == 0 &&
		memcmp(digest, jwk_set_digest, sizeof(digest)) == 0)
	{
		wipe(&buf);
		return;
	}

	cxt = AllocSetContextCreate(TopMemoryContext, "plank JWK set", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	set = jwk_set_parse(buf.data, buf.len, cxt);
	MemoryContextSwitchTo(old);
	wipe(&buf);
	if (set == NULL)
	{
		MemoryContextDelete(cxt);
		return;
	}
	if (jwk_set)
		free_jwk_set(jwk_set);
	jwk_set = set;
	if (jwk_set_path)
		pfree(jwk_set_path);
	jwk_set_path = MemoryContextStrdup(TopMemoryContext, plank_jwt_jwks_file);
	memcpy(jwk_set_digest, digest, sizeof(digest));
	ereport(LOG,
			(errmsg("plank read %d key%s from plank.jwt_jwks_file \"%s\"",
					set->nkeys, set->nkeys == 1 ? "" : "s", plank_jwt_jwks_file)));
}

/*
 * plank_auth_load_keys
 *		(Re)read the keys that verify tokens: plank.jwt_secret_file (else
 *		plank.jwt_secret), plank.jwt_public_key_file and plank.jwt_jwks_file.
 *		Called by the socket worker at start and after each reload (SIGHUP),
 *		outside any libwebsockets callback.  Never raises an error: a file
 *		that cannot be used is logged (WARNING) and the keys read from it
 *		before stay in force, so a half-done rotation neither stops the
 *		worker nor drops the keys clients use.
 */
void
plank_auth_load_keys(void)
{
	load_hmac_secret();
	load_public_key();
	load_jwk_set();
}

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

/* Verify an HMAC signature (RFC 7518 section 3.2) with OpenSSL. */
static bool
hmac_valid(const JwsAlg *alg, const unsigned char *key, int keylen,
		   const char *input, int inputlen, StringInfo sig)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	if (key == NULL || keylen <= 0)
		return false;
	if (HMAC(digest_of(alg->bits), key, keylen,
			 (const unsigned char *) input, inputlen, mac, &maclen) == NULL)
		return false;
	return (unsigned int) sig->len == maclen && CRYPTO_memcmp(mac, sig->data, maclen) == 0;
}

/*
 * Verify an RSASSA-PKCS1-v1_5 or ECDSA signature (RFC 7518 sections 3.3,
 * 3.4) with OpenSSL.  The key must be of the algorithm's family, and an EC
 * key on the algorithm's curve (ES256: P-256, ES384: P-384, ES512: P-521).
 */
static bool
pkey_valid(const JwsAlg *alg, EVP_PKEY *pkey, const char *input, int inputlen, StringInfo sig)
{
	EVP_MD_CTX *ctx;
	unsigned char *der = NULL;
	const unsigned char *verify_sig = (const unsigned char *) sig->data;
	size_t		verify_len = sig->len;
	int			want = alg->family == FAMILY_RSA ? EVP_PKEY_RSA : EVP_PKEY_EC;
	bool		ok = false;

	if (pkey == NULL || EVP_PKEY_base_id(pkey) != want)
		return false;
	if (alg->family == FAMILY_ECDSA)
	{
		/* JWS carries R || S of fixed size; OpenSSL wants DER */
		int			half = alg->bits == 512 ? 66 : alg->bits / 8;
		ECDSA_SIG  *es;
		int			derlen;

		if (EVP_PKEY_get_bits(pkey) != (alg->bits == 512 ? 521 : alg->bits))
			return false;
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
		EVP_DigestVerifyInit(ctx, NULL, digest_of(alg->bits), NULL, pkey) == 1 &&
		EVP_DigestVerify(ctx, verify_sig, verify_len, (const unsigned char *) input, inputlen) == 1)
		ok = true;
	EVP_MD_CTX_free(ctx);
	if (der)
		OPENSSL_free(der);
	return ok;
}

/*
 * Verify a token's signature with the key the configuration gives it.  With
 * plank.jwt_jwks_file set, the key set is the only source: the key is the
 * one whose kid equals the header's kid (RFC 7515 section 4.1.4), or the
 * set's only key when the header has no kid, and must suit the algorithm
 * (its kty, and its alg when it has one).  Otherwise HS tokens are checked
 * with the HMAC secret and RS/ES tokens with plank.jwt_public_key_file.
 * Returns NULL when the signature is valid, else a refusal detail.
 */
static const char *
verify_signature(const JwsAlg *alg, Jsonb *header, const char *input, int inputlen,
				 StringInfo sig)
{
	JsonbValue	v;
	const char *kid = NULL;
	int			kidlen = 0;
	bool		named = false;
	bool		suited = false;
	int			i;

	if (plank_jwt_jwks_file == NULL || plank_jwt_jwks_file[0] == '\0')
	{
		if (alg->family == FAMILY_HMAC ?
			hmac_valid(alg, hmac_secret, hmac_secret_len, input, inputlen, sig) :
			pkey_valid(alg, public_key, input, inputlen, sig))
			return NULL;
		return "token signature is not valid";
	}

	if (plank_jsonb_member(&header->root, "kid", &v))
	{
		if (v.type != jbvString)
			return "token header kid is not a string";
		kid = v.val.string.val;
		kidlen = v.val.string.len;
	}
	if (jwk_set == NULL)
		return "the server holds no key set to verify the token with";
	if (kid == NULL && jwk_set->nkeys != 1)
		return "token has no kid and plank.jwt_jwks_file holds more than one key";

	for (i = 0; i < jwk_set->nkeys; i++)
	{
		Jwk		   *key = &jwk_set->keys[i];

		if (kid != NULL &&
			(key->kid == NULL || strlen(key->kid) != kidlen || memcmp(key->kid, kid, kidlen) != 0))
			continue;
		named = true;
		if (key->family != alg->family || (key->alg != NULL && key->alg != alg))
			continue;
		suited = true;
		if (alg->family == FAMILY_HMAC ?
			hmac_valid(alg, key->secret, key->secret_len, input, inputlen, sig) :
			pkey_valid(alg, key->pkey, input, inputlen, sig))
			return NULL;
	}
	if (!named)
		return "token kid names no key of plank.jwt_jwks_file";
	if (!suited)
		return "token algorithm does not suit the key its kid names";
	return "token signature is not valid";
}

/* A numeric claim as seconds; false when absent or not a number. */
static bool
numeric_claim(Jsonb *claims, const char *name, double *value)
{
	JsonbValue	v;

	if (!plank_jsonb_member(&claims->root, name, &v) ||
		v.type != jbvNumeric)
		return false;
	/* a number beyond double's range is +-Infinity here, never an error */
	*value = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
												NumericGetDatum(v.val.numeric)));
	return true;
}

/* Does the aud claim (a string or an array of strings) hold plank.jwt_audience? */
static bool
audience_matches(Jsonb *claims)
{
	JsonbValue	v;
	const char *want = plank_jwt_audience;
	int			wantlen = strlen(want);

	if (!plank_jsonb_member(&claims->root, "aud", &v))
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
		if (c == NULL || !plank_jsonb_member(c, key, &v))
			return NULL;
		c = (v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data)) ?
			v.val.binary.data : NULL;
	}
	if (v.type != jbvString || v.val.string.len == 0 || v.val.string.len >= NAMEDATALEN)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/*
 * Look up a role by name in a transaction of our own; InvalidOid if none, or
 * if clients may not act as it.
 */
static Oid
lookup_role(const char *role)
{
	Oid			roleid;
	MemoryContext cxt = CurrentMemoryContext;

	StartTransactionCommand();
	roleid = get_role_oid(role, true);
	/* only roles granted to plank.authenticator (docs/SECURITY.md) */
	if (OidIsValid(roleid) && !plank_check_role_allowed(roleid, role))
		roleid = InvalidOid;
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
	double		nbf = 0;
	bool		has_exp;
	bool		has_nbf;
	const char *why;
	char	   *role;
	Oid			roleid;

	if (!plank_jws_split(token, &jws) ||
		(header = parse_object(jws.header.data, jws.header.len)) == NULL ||
		(claims = parse_object(jws.payload.data, jws.payload.len)) == NULL)
		return refuse(detail, "invalid_token", "token is not a well-formed JWT");

	if (plank_jsonb_member(&header->root, "alg", &v) && v.type == jbvString)
		alg = find_alg(v.val.string.val, v.val.string.len);
	if (alg == NULL)
		return refuse(detail, "invalid_token", "token algorithm is not accepted by this server");
	if (plank_jsonb_member(&header->root, "crit", &v))
		return refuse(detail, "invalid_token", "token has critical header parameters this server does not understand");
	if ((why = verify_signature(alg, header, token, jws.signing_input_len, &jws.signature)) != NULL)
		return refuse(detail, "invalid_token", why);

	/*
	 * A present exp or nbf is always checked, whatever its value (0 and -0.0
	 * are long past); one that is not a number is refused rather than
	 * ignored.
	 */
	has_exp = plank_jsonb_member(&claims->root, "exp", &v);
	if (has_exp && !numeric_claim(claims, "exp", &exp))
		return refuse(detail, "invalid_token", "token claim exp is not a number");
	has_nbf = plank_jsonb_member(&claims->root, "nbf", &v);
	if (has_nbf && !numeric_claim(claims, "nbf", &nbf))
		return refuse(detail, "invalid_token", "token claim nbf is not a number");
	if (has_exp && !(now < exp))
		return refuse(detail, "token_expired", "token has expired");
	/* keep a far expiry representable (the year 3000 is far enough) */
	if (has_exp && exp > 32503680000.0)
		exp = 32503680000.0;
	if (has_nbf && !(now >= nbf))
		return refuse(detail, "token_not_yet_valid", "token is not valid yet");
	if (plank_jwt_audience[0] != '\0' && !audience_matches(claims))
		return refuse(detail, "invalid_token", "token audience does not match plank.jwt_audience");
	if (plank_jwt_issuer[0] != '\0')
	{
		JsonbValue	iss;

		if (!plank_jsonb_member(&claims->root, "iss", &iss) ||
			iss.type != jbvString || iss.val.string.len != strlen(plank_jwt_issuer) ||
			memcmp(iss.val.string.val, plank_jwt_issuer, iss.val.string.len) != 0)
		{
				return refuse(detail, "invalid_token", "token issuer does not match plank.jwt_issuer");
		}
	}

	role = role_claim(claims);
	if (role == NULL)
		return refuse(detail, "invalid_token", "token has no role claim at plank.jwt_role_claim");
	roleid = lookup_role(role);
	if (!OidIsValid(roleid))
	{
		*detail = psprintf("role \"%s\" named by the token does not exist or is not granted to plank.authenticator",
						   role);
		return "unknown_role";
	}

	id->roleid = roleid;
	id->role = MemoryContextStrdup(cxt, role);
	id->claims = MemoryContextStrdup(cxt, jws.payload.data);
	id->exp = has_exp ? (int64) exp : 0;
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
				 errmsg("role \"%s\" named by plank.anonymous_role does not exist or may not be used by clients", plank_anonymous_role),
				 errhint("Create the role and grant it to plank.authenticator, or change plank.anonymous_role.")));
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
 * Does a row of the grants table (plank.channel_grants or
 * plank.publish_grants, a constant) whose channel pattern (LIKE) matches
 * name "public" or a role roleid is a member of?  Superusers need none.
 */
static bool
grant_allows(const char *table, Oid roleid, const char *channel)
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
	if (SPI_execute_with_args(psprintf("SELECT 1 FROM %s g "
									   "LEFT JOIN pg_catalog.pg_roles r "
									   "ON r.rolname OPERATOR(pg_catalog.=) g.grantee "
									   "WHERE $1 OPERATOR(pg_catalog.~~) g.channel AND CASE "
									   "WHEN g.grantee OPERATOR(pg_catalog.=) 'public'::pg_catalog.name THEN true "
									   "WHEN r.oid IS NULL THEN false "
									   "ELSE pg_catalog.pg_has_role($2, r.oid, 'MEMBER') END "
									   "LIMIT 1", table),
							  2, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read %s", table);
	allowed = SPI_processed > 0;
	SPI_finish();
	return allowed;
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
	return grant_allows("plank.channel_grants", roleid, channel);
}

/*
 * plank_auth_publish_allowed
 *		May a role publish to a channel (docs/PROTOCOL.md "publish")?  As
 *		plank_auth_channel_allowed(), with plank.publish_grants.
 */
bool
plank_auth_publish_allowed(Oid roleid, const char *channel)
{
	return grant_allows("plank.publish_grants", roleid, channel);
}

/* Settings (GUCs) read by this file; documented in README.md "Settings" */

/*
 * plank_auth_define_settings
 *		Defines the plank.* settings of token verification (JWT) and the
 *		role of clients without a token.  Called once from _PG_init, in
 *		the postmaster, before the plank prefix is reserved
 *		(MarkGUCPrefixReserved).  Raises no error.  PostgreSQL docs:
 *		"Customized Options".
 */
void
plank_auth_define_settings(void)
{
	/*
	 * plank.jwt_secret is logged with its value when a reload changes it
	 * (PostgreSQL logs every changed setting): plank.jwt_secret_file is the
	 * way to give the secret.  Hidden from SHOW ALL, hence also absent from
	 * the sample file (from 16 an assertion requires GUC_NOT_IN_SAMPLE with
	 * GUC_NO_SHOW_ALL).
	 */
	DefineCustomStringVariable("plank.jwt_secret",
							   "Sets the shared secret that verifies HS256, HS384 and HS512 tokens.",
							   "Discouraged: a reload that changes it writes it to the server log; use plank.jwt_secret_file. "
							   "Not used when plank.jwt_secret_file is set. Empty refuses HMAC-signed tokens.",
							   &plank_jwt_secret,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	/* RFC 7518 section 3.2; read by auth.c at start and on reload */
	DefineCustomStringVariable("plank.jwt_secret_file",
							   "Sets the file holding the shared secret that verifies HS256, HS384 and HS512 tokens.",
							   "Read at start and on reload; trailing newlines are not part of the secret. "
							   "The file must not be readable by group or others. Empty: plank.jwt_secret is used.",
							   &plank_jwt_secret_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("plank.jwt_public_key_file",
							   "Sets the PEM file of the public key that verifies RS256/384/512 and ES256/384/512 tokens.",
							   "Read at start and on reload. Empty refuses those algorithms.",
							   &plank_jwt_public_key_file,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	/* RFC 7517 section 5; read by auth.c at start and on reload */
	DefineCustomStringVariable("plank.jwt_jwks_file",
							   "Sets the JSON Web Key Set file whose keys verify tokens, chosen by the token's kid.",
							   "Read at start and on reload. When set, the only source of keys. "
							   "The file must not be readable by group or others. Empty: no key set.",
							   &plank_jwt_jwks_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("plank.jwt_audience",
							   "Sets the audience a token's aud claim must contain.",
							   "Empty: the aud claim is not checked.",
							   &plank_jwt_audience,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("plank.jwt_issuer",
							   "Sets the issuer a token's iss claim must equal.",
							   "Empty: the iss claim is not checked.",
							   &plank_jwt_issuer,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("plank.jwt_role_claim",
							   "Sets the path of the token claim that names the client's role.",
							   "Object keys separated by dots, for example app_metadata.role.",
							   &plank_jwt_role_claim,
							   "role",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("plank.anonymous_role",
							   "Sets the role of clients that present no token.",
							   "Empty refuses clients without a token.",
							   &plank_anonymous_role,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);
}
