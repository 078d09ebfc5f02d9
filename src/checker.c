/*-------------------------------------------------------------------------
 *
 * checker.c
 *		The check worker: a background worker connected as
 *		plank.authenticator that runs, for its socket worker, every SQL
 *		that evaluates users' objects (snapshots, row-level security
 *		checks).  The socket worker itself never runs users' code.
 *
 * Each request runs in a transaction of its own that is always rolled
 * back, as the client's role with SECURITY_LOCAL_USERID_CHANGE and
 * SECURITY_RESTRICTED_OPERATION (so user code can neither SET ROLE, nor
 * LISTEN/UNLISTEN, nor create temporary objects), with request.jwt.claims,
 * lock_timeout and statement_timeout set locally.  The rollback undoes every
 * setting user code changed, even with set_config(..., false); session
 * advisory locks and prepared statements, which outlive a rollback, are
 * released after each request.  Plank's own SQL is parsed with search_path
 * = pg_catalog, pg_temp; users' code executes with the authenticator's
 * default search_path.
 *
 * Messages: check.h.  Sources followed: PostgreSQL docs "Background Worker
 * Processes" (dynamic workers, BackgroundWorkerInitializeConnection),
 * src/backend/storage/ipc/shm_mq.c (non-blocking send and receive),
 * src/backend/rewrite/rowsecurity.c (which policies apply to a SELECT: the
 * command, the roles by has_privs_of_role, permissive OR'd, restrictive
 * AND'd, no permissive policy: no row).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/prepare.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "rewrite/rowsecurity.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"
#include "access/transam.h"
#include "catalog/pg_attribute.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

#include "plank.h"
#include "check.h"

static shm_mq_handle *request_mq = NULL;
static shm_mq_handle *reply_mq = NULL;
static pid_t socket_worker_pid = 0;

/* Wake the socket worker (its SIGUSR1 handler writes its self-pipe). */
static void
poke_socket_worker(void)
{
	if (socket_worker_pid > 0)
		(void) kill(socket_worker_pid, SIGUSR1);
}

/* Set a setting for the current transaction only. */
static void
set_local(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * The condition a row must meet to pass the role's SELECT policies on a
 * table, as SQL over the table's columns qualified by the table's name, or
 * NULL when no permissive policy applies (no row passes).  Mirrors
 * get_row_security_policies() in src/backend/rewrite/rowsecurity.c.
 */
static char *
policy_condition(Relation rel, Oid roleid)
{
	List	   *dpcontext = deparse_context_for(RelationGetRelationName(rel), RelationGetRelid(rel));
	StringInfoData permissive;
	StringInfoData restrictive;
	ListCell   *lc;

	initStringInfo(&permissive);
	initStringInfo(&restrictive);
	if (rel->rd_rsdesc == NULL)
		return NULL;
	foreach(lc, rel->rd_rsdesc->policies)
	{
		RowSecurityPolicy *policy = (RowSecurityPolicy *) lfirst(lc);
		Datum	   *roles;
		int			nroles;
		bool		applies = false;
		int			i;
		char	   *qual;

		if (policy->polcmd != ACL_SELECT_CHR && policy->polcmd != '*')
			continue;
		if (policy->qual == NULL)
			continue;
		deconstruct_array(policy->roles, OIDOID, sizeof(Oid), true, TYPALIGN_INT,
						  &roles, NULL, &nroles);
		for (i = 0; i < nroles && !applies; i++)
			applies = DatumGetObjectId(roles[i]) == ACL_ID_PUBLIC ||
				has_privs_of_role(roleid, DatumGetObjectId(roles[i]));
		if (!applies)
			continue;
		qual = deparse_expression((Node *) policy->qual, dpcontext, true, false);
		if (policy->permissive)
			appendStringInfo(&permissive, "%s(%s)", permissive.len ? " OR " : "", qual);
		else
			appendStringInfo(&restrictive, " AND (%s)", qual);
	}
	if (permissive.len == 0)
		return NULL;
	return psprintf("(%s)%s", permissive.data, restrictive.data);
}

/*
 * The columns of a table whose JSON rendering cannot be read back: those of
 * a type (or a domain over one) that is not built in and has a cast to json
 * or jsonb, which row_to_json uses (PostgreSQL docs "JSON Functions",
 * to_json).  As a SQL text[] literal, or NULL when there are none; policies
 * see NULL in them.
 */
static char *
unreadable_columns(Relation rel, bool json_only)
{
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData buf;
	bool		any = false;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Oid			type = getBaseType(att->atttypid);

		if (att->attisdropped)
			continue;
		if (json_only ? type != JSONOID :
			(type < FirstNormalObjectId ||
			 (!SearchSysCacheExists2(CASTSOURCETARGET, ObjectIdGetDatum(type), ObjectIdGetDatum(JSONOID)) &&
			  !SearchSysCacheExists2(CASTSOURCETARGET, ObjectIdGetDatum(type), ObjectIdGetDatum(JSONBOID)))))
			continue;
		if (any)
			appendStringInfoChar(&buf, ',');
		appendStringInfoChar(&buf, '"');
		for (const char *c = NameStr(att->attname); *c; c++)
		{
			if (*c == '"' || *c == '\\')
				appendStringInfoChar(&buf, '\\');
			appendStringInfoChar(&buf, *c);
		}
		appendStringInfoChar(&buf, '"');
		any = true;
	}
	appendStringInfoChar(&buf, '}');
	return any ? quote_literal_cstr(buf.data) : NULL;
}

/*
 * The SQL of a row-level security check: one boolean per image of the
 * json array $1, in order.  Each image is a JSON array [key, value, ...]
 * of the row's members as committed (visibility.c append_image()), taken apart
 * with json_array_elements, the one json function that does not de-escape
 * strings: columns of type json (or a domain over it) get their value's
 * text as it is, even a string holding "\u0000" that every other json
 * function refuses; the other columns go through json_populate_record; the
 * unreadable columns are left out (NULL).
 */
static char *
rls_check_sql(Relation rel, const char *cond)
{
	char	   *unreadable = unreadable_columns(rel, false);
	char	   *jsoncols = unreadable_columns(rel, true);
	char	   *qualified = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
													   RelationGetRelationName(rel));
	const char *members =
		"(SELECT CASE WHEN plank_e.i OPERATOR(pg_catalog.%) 2 OPERATOR(pg_catalog.=) 0 "
		"THEN pg_catalog.lag(plank_e.e) OVER (ORDER BY plank_e.i) "
		"OPERATOR(pg_catalog.#>>) '{}'::pg_catalog.text[] END AS k, plank_e.e AS v, plank_e.i "
		"FROM pg_catalog.json_array_elements(plank_images.image) WITH ORDINALITY AS plank_e(e, i)) AS plank_m";
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData row;
	bool		first = true;

	initStringInfo(&row);
	appendStringInfoString(&row, "(SELECT ");
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *name = quote_identifier(NameStr(att->attname));

		if (att->attisdropped)
			continue;
		if (!first)
			appendStringInfoString(&row, ", ");
		first = false;
		if (getBaseType(att->atttypid) == JSONOID)
			appendStringInfo(&row,
							 "(SELECT plank_m.v FROM %s WHERE plank_m.i OPERATOR(pg_catalog.%%) 2 OPERATOR(pg_catalog.=) 0 "
							 "AND plank_m.k OPERATOR(pg_catalog.=) %s LIMIT 1)::%s AS %s",
							 members, quote_literal_cstr(NameStr(att->attname)),
							 format_type_be_qualified(att->atttypid), name);
		else
			appendStringInfo(&row, "plank_r.%s", name);
	}
	appendStringInfo(&row,
					 " FROM pg_catalog.json_populate_record(NULL::%s, "
					 "(SELECT pg_catalog.json_object_agg(plank_m.k, plank_m.v) FROM %s "
					 "WHERE plank_m.i OPERATOR(pg_catalog.%%) 2 OPERATOR(pg_catalog.=) 0 "
					 "AND plank_m.k OPERATOR(pg_catalog.<>) ALL (%s::pg_catalog.text[]%s%s%s))) AS plank_r)",
					 qualified, members,
					 unreadable ? unreadable : "'{}'",
					 jsoncols ? " OPERATOR(pg_catalog.||) " : "",
					 jsoncols ? jsoncols : "",
					 jsoncols ? "::pg_catalog.text[]" : "");
	return psprintf("SELECT EXISTS (SELECT FROM %s AS %s WHERE %s) "
					"FROM pg_catalog.json_array_elements($1) WITH ORDINALITY AS plank_images(image, n) "
					"ORDER BY plank_images.n",
					row.data, quote_identifier(RelationGetRelationName(rel)), cond);
}

/* Run a prepared plan as a cursor, appending rows to out (snapshot). */
static void
run_snapshot(SPIPlanPtr plan, const PlankCheckRequest *req, PlankCheckReply *rep, StringInfo out)
{
	Portal		portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);

	rep->complete = true;
	for (;;)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, 100);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

			if (isnull)
				continue;
			if ((int64) rep->nrows >= req->max_rows || out->len >= req->max_bytes)
			{
				rep->complete = false;
				break;
			}
			if (rep->nrows > 0)
				appendStringInfoChar(out, ',');
			appendStringInfoString(out, TextDatumGetCString(d));
			rep->nrows++;
		}
		SPI_freetuptable(SPI_tuptable);
		if (!rep->complete)
			break;
	}
	SPI_cursor_close(portal);
}

/*
 * Run one request in a transaction that the caller rolls back.  Raises
 * 42501 when the role is not one the authenticator may act as.
 */
static void
run_request(const PlankCheckRequest *req, const char *claims, const char *body,
			PlankCheckReply *rep, StringInfo out)
{
	char		ms[32];
	char	   *default_path = pstrdup(GetConfigOptionResetString("search_path"));
	char	   *sql;
	SPIPlanPtr	plan;
	Oid			argtypes[1] = {JSONOID};
	Datum		args[1];
	Oid			save_userid;
	int			save_sec_context;

	snprintf(ms, sizeof(ms), "%d", req->timeout_ms);
	set_local("lock_timeout", ms);
	set_local("row_security", "on");
	set_local("request.jwt.claims", claims);
	set_local("search_path", "pg_catalog, pg_temp");
	/* rows rendered as the capture renders them (capture.c plank_output_settings) */
	for (int i = 0; plank_output_settings[i][0] != NULL; i++)
		set_local(plank_output_settings[i][0], plank_output_settings[i][1]);
	PushActiveSnapshot(GetTransactionSnapshot());

	/* the authenticator acts only as roles granted to it (PostgREST) */
	if (!is_member_of_role(GetSessionUserId(), req->roleid) ||
		(!plank_allow_privileged_roles &&
		 (superuser_arg(req->roleid) || has_bypassrls_privilege(req->roleid))))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("plank.authenticator may not act as role with OID %u", req->roleid)));

	SPI_connect();
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(req->roleid, save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (req->kind == PLANK_CHECK_SNAPSHOT)
	{
		plan = SPI_prepare(body, 0, NULL);
		if (plan == NULL)
			elog(ERROR, "could not prepare a snapshot query: %s", SPI_result_code_string(SPI_result));
		set_local("search_path", default_path);
		run_snapshot(plan, req, rep, out);
	}
	else
	{
		Relation	rel = relation_open(req->relid, AccessShareLock);
		char	   *cond = policy_condition(rel, req->roleid);
		uint64		i;

		if (cond == NULL)
			cond = "false";
		sql = rls_check_sql(rel, cond);
		relation_close(rel, NoLock);
		plan = SPI_prepare(sql, 1, argtypes);
		if (plan == NULL)
			elog(ERROR, "could not prepare a row-level security check: %s", SPI_result_code_string(SPI_result));
		set_local("search_path", default_path);
		args[0] = CStringGetTextDatum(body);	/* json: text, checked by json_array_elements */
		if (SPI_execute_plan(plan, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not run a row-level security check");
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

			appendStringInfoChar(out, !isnull && DatumGetBool(d) ? '1' : '0');
		}
		rep->nrows = SPI_processed;
	}
	SetUserIdAndSecContext(save_userid, save_sec_context);
	SPI_finish();
	PopActiveSnapshot();
}

/* Send a reply, waiting for room without blocking the socket worker. */
static void
send_reply(const PlankCheckReply *rep, const StringInfo out)
{
	StringInfoData msg;

	initStringInfo(&msg);
	appendBinaryStringInfo(&msg, (const char *) rep, sizeof(*rep));
	appendBinaryStringInfo(&msg, out->data, out->len);
	for (;;)
	{
		shm_mq_result res = plank_shm_mq_send(reply_mq, msg.len, msg.data, true, true);

		/* the socket worker waits in poll(), not on its latch: signal it */
		poke_socket_worker();
		if (res == SHM_MQ_SUCCESS)
			break;
		if (res == SHM_MQ_DETACHED)
			proc_exit(0);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	pfree(msg.data);
}

/* Handle one request message and reply to it. */
static void
handle_request(const char *data, Size len, MemoryContext cxt)
{
	PlankCheckRequest req;
	PlankCheckReply rep;
	StringInfoData out;
	char	   *claims;
	char	   *body;

	memset(&rep, 0, sizeof(rep));
	initStringInfo(&out);
	if (len < sizeof(req))
		elog(FATAL, "plank check worker received a malformed request");
	memcpy(&req, data, sizeof(req));
	if ((Size) req.claims_len + req.body_len != len - sizeof(req))
		elog(FATAL, "plank check worker received a malformed request");
	claims = pnstrdup(data + sizeof(req), req.claims_len);
	body = pnstrdup(data + sizeof(req) + req.claims_len, req.body_len);

	pgstat_report_activity(STATE_RUNNING, req.kind == PLANK_CHECK_SNAPSHOT ? "plank snapshot" : "plank row-level security check");
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	enable_timeout_after(STATEMENT_TIMEOUT, req.timeout_ms);
	PG_TRY();
	{
		run_request(&req, claims, body, &rep, &out);
		disable_timeout(STATEMENT_TIMEOUT, false);
		/* always rolled back: nothing user code did in it survives */
		AbortCurrentTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		disable_all_timeouts(false);
		QueryCancelPending = false;
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		RESUME_INTERRUPTS();
		rep.status = PLANK_CHECK_ERROR;
		memcpy(rep.sqlstate, unpack_sql_state(edata->sqlerrcode), 5);
		resetStringInfo(&out);
		appendStringInfoString(&out, edata->message ? edata->message : "unknown error");
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);

	/* what outlives a rollback: session advisory locks, prepared statements */
	LockReleaseSession(USER_LOCKMETHOD);
	DropAllPreparedStatements();
	pgstat_report_activity(STATE_IDLE, NULL);

	send_reply(&rep, &out);
}

/*
 * plank_check_main
 *		Entry point of a check worker (a dynamic background worker started
 *		by its socket worker, check.c).  main_arg: the dsm_handle of its
 *		queues; bgw_extra: the database name; bgw_notify_pid: the socket
 *		worker.  Exits when the socket worker detaches.  Exits with FATAL
 *		42501 when plank.authenticator is a superuser, and with the
 *		connection's own errors when the role cannot log in.
 */
void
plank_check_main(Datum main_arg)
{
	dsm_segment *seg;
	shm_mq	   *reqq;
	shm_mq	   *repq;
	char		dbname[NAMEDATALEN];
	MemoryContext cxt;
	bool		woken = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	CurrentResourceOwner = ResourceOwnerCreate(NULL, "plank check worker");
	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("could not map the plank check worker's dynamic shared memory segment")));
	dsm_pin_mapping(seg);
	reqq = (shm_mq *) dsm_segment_address(seg);
	repq = (shm_mq *) ((char *) reqq + PLANK_CHECK_REQUEST_QUEUE);
	shm_mq_set_receiver(reqq, MyProc);
	shm_mq_set_sender(repq, MyProc);
	request_mq = shm_mq_attach(reqq, seg, NULL);
	reply_mq = shm_mq_attach(repq, seg, NULL);
	socket_worker_pid = MyBgworkerEntry->bgw_notify_pid;
	strlcpy(dbname, MyBgworkerEntry->bgw_extra, sizeof(dbname));

	BackgroundWorkerInitializeConnection(dbname, plank_authenticator, 0);
	if (superuser())
		ereport(FATAL,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" named by plank.authenticator must not be a superuser", plank_authenticator),
				 errhint("Create a role with LOGIN NOINHERIT and no other attribute, grant it the roles clients act as, and name it in plank.authenticator.")));

	cxt = AllocSetContextCreate(TopMemoryContext, "plank check request", ALLOCSET_DEFAULT_SIZES);
	pgstat_report_activity(STATE_IDLE, NULL);
	/* a request sent before this worker attached waits for the socket worker to go on */
	poke_socket_worker();
	for (;;)
	{
		Size		nbytes;
		void	   *data;
		shm_mq_result res;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		res = shm_mq_receive(request_mq, &nbytes, &data, true);
		if (res == SHM_MQ_DETACHED)
			proc_exit(0);
		if (res == SHM_MQ_SUCCESS)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			handle_request(data, nbytes, cxt);
			MemoryContextSwitchTo(old);
			MemoryContextReset(cxt);
			woken = false;
			continue;
		}
		/* part of a request read: the socket worker may send the rest */
		if (woken)
			poke_socket_worker();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		woken = true;
	}
}
