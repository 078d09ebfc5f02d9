/*-------------------------------------------------------------------------
 *
 * subxact.c
 *		Run a piece of work in an internal subtransaction, so that an error
 *		it raises is caught and rolled back without ending the surrounding
 *		transaction: the pattern PL/pgSQL uses for its exception blocks.
 *
 * Used where a failure must cost only that piece of work: storing an
 * oversized payload in a writer's transaction (capture.c), and a row-level
 * security check for one group of subscribers (visibility.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "plank.h"

/*
 * plank_try_subxact
 *		Call fn(arg) inside a subtransaction of the current transaction.
 *		Returns true when it completed (the subtransaction is released);
 *		false when it raised an error, which is rolled back and returned in
 *		*edata (allocated in the caller's memory context).  The caller's
 *		memory context and resource owner are restored either way; so is the
 *		user ID, by the subtransaction's abort.  Errors other than ERROR
 *		(FATAL, PANIC) are not caught.
 */
bool
plank_try_subxact(void (*fn) (void *arg), void *arg, ErrorData **edata)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		*edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}
