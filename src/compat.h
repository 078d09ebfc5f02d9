/*-------------------------------------------------------------------------
 *
 * compat.h
 *		Differences between the PostgreSQL major versions Plank builds
 *		against (14, 15, 16, 17 and 18), each behind PG_VERSION_NUM here and
 *		nowhere else.  Plank's code is written to PostgreSQL 15's API: a
 *		function 15 has and 14 lacks is supplied under 15's name; a function
 *		whose signature changed after 15 is reached through a plank_ wrapper
 *		that takes 15's arguments.
 *
 * Each entry names the release that changed the API (the release notes of
 * that version say more).  Compiles in the server and, with -DFRONTEND, in
 * the fuzz harness (only the JSON parser part is used there).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_COMPAT_H
#define PLANK_COMPAT_H

#include "common/jsonapi.h"

#if PG_VERSION_NUM < 140000
#error "Plank needs PostgreSQL 14 or later"
#endif

/*
 * JSON parser (common/jsonapi.h).
 *
 * From 16 the semantic-action callbacks return JsonParseErrorType (a
 * callback may stop the parse with an error); up to 15 they return void.
 * Declare a callback as returning PlankJsonCbResult and end it with
 * "return PLANK_JSON_CB_OK;".
 */
#if PG_VERSION_NUM >= 160000
typedef JsonParseErrorType PlankJsonCbResult;
#define PLANK_JSON_CB_OK JSON_SUCCESS
#else
typedef void PlankJsonCbResult;
#define PLANK_JSON_CB_OK
#endif

/*
 * plank_json_lex_cstring
 *		A lexer over len bytes of json in the given encoding, allocated in
 *		the current memory context: makeJsonLexContextCstringLen, which
 *		from 17 takes the JsonLexContext to fill (NULL: allocate one) as
 *		its first argument.  Raises only out-of-memory errors.
 */
static inline JsonLexContext *
plank_json_lex_cstring(const char *json, int len, int encoding, bool need_escapes)
{
#if PG_VERSION_NUM >= 170000
	return makeJsonLexContextCstringLen(NULL, json, len, encoding, need_escapes);
#else
	return makeJsonLexContextCstringLen((char *) json, len, encoding, need_escapes);
#endif
}

#ifndef FRONTEND

#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/regproc.h"

/*
 * Shared memory requests (storage/ipc.h).  shmem_request_hook appeared in 15;
 * before it, an extension calls RequestAddinShmemSpace and
 * RequestNamedLWLockTranche from _PG_init itself.
 * plank_install_shmem_request_hook(&prev, fn) chains fn on 15 and later and
 * calls it at once on 14 (with *prev NULL).
 */
#if PG_VERSION_NUM < 150000
typedef void (*shmem_request_hook_type) (void);
#endif

static inline void
plank_install_shmem_request_hook(shmem_request_hook_type *prev, shmem_request_hook_type fn)
{
#if PG_VERSION_NUM >= 150000
	*prev = shmem_request_hook;
	shmem_request_hook = fn;
#else
	*prev = NULL;
	fn();
#endif
}

/*
 * plank_shm_mq_send
 *		shm_mq_send (storage/shm_mq.h) with 15's force_flush argument, which
 *		14 lacks (there every send is flushed).
 */
static inline shm_mq_result
plank_shm_mq_send(shm_mq_handle *mqh, Size nbytes, const void *data, bool nowait,
				  bool force_flush)
{
#if PG_VERSION_NUM >= 150000
	return shm_mq_send(mqh, nbytes, data, nowait, force_flush);
#else
	return shm_mq_send(mqh, nbytes, data, nowait);
#endif
}

/*
 * PGPROC (storage/proc.h): 17 moved the local transaction id into
 * PGPROC.vxid and dropped PGPROC.pgprocno for GetNumberFromPGProc().
 * plank_my_lxid() is this backend's local transaction id,
 * plank_my_procno() its index in ProcGlobal->allProcs.
 */
static inline LocalTransactionId
plank_my_lxid(void)
{
#if PG_VERSION_NUM >= 170000
	return MyProc->vxid.lxid;
#else
	return MyProc->lxid;
#endif
}

static inline int
plank_my_procno(void)
{
#if PG_VERSION_NUM >= 170000
	return GetNumberFromPGProc(MyProc);
#else
	return MyProc->pgprocno;
#endif
}

/*
 * plank_string_to_qualified_name_list
 *		stringToQualifiedNameList (catalog/namespace.h), which from 16 takes
 *		a soft-error context (NULL: raise errors, as 15 does).  Raises
 *		ERRCODE_INVALID_NAME for an invalid name.
 */
static inline List *
plank_string_to_qualified_name_list(const char *string)
{
#if PG_VERSION_NUM >= 160000
	return stringToQualifiedNameList(string, NULL);
#else
	return stringToQualifiedNameList(string);
#endif
}

/*
 * Privilege checks (utils/acl.h): 16 replaced pg_namespace_aclcheck and its
 * kind by object_aclcheck(classid, ...).
 */
#if PG_VERSION_NUM >= 160000
#define pg_namespace_aclcheck(nspid, roleid, mode) \
	object_aclcheck(NamespaceRelationId, (nspid), (roleid), (mode))
#endif

/*
 * Functions 15 added, supplied for 14: MarkGUCPrefixReserved (14 has its
 * forerunner EmitWarningsOnPlaceholders), strtoi64 (c.h) and
 * InitMaterializedSRF (funcapi.h; compat.c).
 */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#ifdef HAVE_LONG_INT_64
#define strtoi64(str, endptr, base) ((int64) strtol(str, endptr, base))
#else
#define strtoi64(str, endptr, base) ((int64) strtoll(str, endptr, base))
#endif
#define InitMaterializedSRF(fcinfo, flags) plank_init_materialized_srf(fcinfo, flags)
extern void plank_init_materialized_srf(FunctionCallInfo fcinfo, bits32 flags);
#endif

/*
 * A generation memory context (utils/mmgr/generation.c): its sizes became
 * minimum, initial and maximum block sizes in 15.
 */
#if PG_VERSION_NUM >= 150000
#define plank_generation_context_create(parent, name, block) \
	GenerationContextCreate(parent, name, 0, block, block)
#else
#define plank_generation_context_create(parent, name, block) \
	GenerationContextCreate(parent, name, block)
#endif

#endif							/* FRONTEND */

#endif							/* PLANK_COMPAT_H */
