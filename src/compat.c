/*-------------------------------------------------------------------------
 *
 * compat.c
 *		Functions compat.h supplies for older PostgreSQL major versions.
 *		Empty on 15 and later.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "plank.h"

#if PG_VERSION_NUM < 150000

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/tuplestore.h"

/*
 * plank_init_materialized_srf
 *		PostgreSQL 15's InitMaterializedSRF (funcapi.h) for 14, with no
 *		flags: make a set-returning function's result a tuplestore of its
 *		declared row type in the per-query memory context
 *		(fcinfo->resultinfo's setResult and setDesc), as the docs' "Returning
 *		Sets" (xfunc-c) describes.  Raises ERRCODE_FEATURE_NOT_SUPPORTED when
 *		the caller cannot take a set in materialize mode.
 */
void
plank_init_materialized_srf(FunctionCallInfo fcinfo, bits32 flags)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;
	TupleDesc	tupdesc;

	Assert(flags == 0);
	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("materialize mode required, but it is not allowed in this context")));

	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap((rsinfo->allowedModes & SFRM_Materialize_Random) != 0,
											  false, work_mem);
	rsinfo->setDesc = tupdesc;
	MemoryContextSwitchTo(old);
}

#endif
