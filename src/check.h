/*-------------------------------------------------------------------------
 *
 * check.h
 *		The messages between a socket worker and its check workers
 *		(check.c on the socket worker's side, checker.c in the check
 *		worker), carried over a pair of shm_mq queues in a DSM segment.
 *
 * A check worker is a background worker connected as plank.authenticator
 * (never a superuser).  It runs every SQL that evaluates users' objects:
 * snapshots and row-level security checks, each in a transaction of its
 * own that is always rolled back, as the client's role.  docs/SECURITY.md
 * ("Isolation") describes the model.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_CHECK_H
#define PLANK_CHECK_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "lib/ilist.h"
#include "lib/stringinfo.h"

/* request kinds */
#define PLANK_CHECK_SNAPSHOT	1	/* run a SELECT of one text column, rows joined by ',' */
#define PLANK_CHECK_RLS			2	/* which row images the role's SELECT policies pass */

/*
 * A request: this header, then claims_len bytes of claims (a JSON object),
 * then body_len bytes of body: the SQL for a snapshot, a JSON array of row
 * images (objects) for a row-level security check.
 */
typedef struct PlankCheckRequest
{
	uint32		kind;
	uint32		claims_len;
	uint32		body_len;
	Oid			roleid;			/* the client's role */
	Oid			relid;			/* RLS: the table */
	int32		max_rows;		/* snapshot: rows to return at most */
	int64		max_bytes;		/* snapshot: bytes of rows to return at most */
	int32		timeout_ms;		/* statement_timeout and lock_timeout */
} PlankCheckRequest;

/* reply status */
#define PLANK_CHECK_OK		0
#define PLANK_CHECK_ERROR	1	/* data: the error message */

/*
 * A reply: this header, then data: for a snapshot, the rows (JSON texts
 * joined by ','); for RLS, one byte per image ('1' visible, '0' not); for
 * an error, its message.
 */
typedef struct PlankCheckReply
{
	uint32		status;
	uint32		nrows;			/* snapshot: rows returned */
	bool		complete;		/* snapshot: every row was returned */
	char		sqlstate[6];	/* error: its SQLSTATE */
} PlankCheckReply;

/* bgw_extra of a check worker: the database name (NUL-terminated) */

/* sizes of the two queues in a check worker's DSM segment */
#define PLANK_CHECK_REQUEST_QUEUE	(256 * 1024)
#define PLANK_CHECK_REPLY_QUEUE		(1024 * 1024)

/*
 * Settings (GUCs), defined in check.c; checker.c reads plank.authenticator
 * and plank.allow_privileged_roles
 */
extern char *plank_authenticator;
extern bool plank_allow_privileged_roles;

/* checker.c */
extern PGDLLEXPORT void plank_check_main(Datum main_arg);

/* the socket worker's side (check.c) */
struct PlankIdentity;

/* check.c: jobs for the check workers (checker.c, check.h) */
typedef struct PlankCheckJob PlankCheckJob;
typedef void (*plank_check_done) (PlankCheckJob *job, bool ok, const char *data, Size len,
								  const PlankCheckReply *rep);
struct PlankCheckJob
{
	dlist_node	node;			/* in the queue while queued */
	bool		queued;
	bool		cancelled;		/* its callback is not to run */
	int			kind;			/* PLANK_CHECK_* */
	Oid			roleid;
	char	   *claims;
	Oid			relid;			/* the table it reads */
	int32		max_rows;		/* snapshot limits */
	int64		max_bytes;
	StringInfoData body;		/* snapshot: SQL; RLS: JSON array of row images */
	uint64		conn_id;		/* snapshot: its connection */
	TimestampTz started_at;
	plank_check_done done;
	void	   *arg;
};
extern PlankCheckJob *plank_check_job_new(int kind, const struct PlankIdentity *ident, Oid relid,
										  int64 max_bytes);
extern void plank_check_submit(PlankCheckJob *job);
extern void plank_check_cancel(PlankCheckJob *job);
extern void plank_check_service(void);
extern void plank_check_status(int *running, int *queued);
extern void plank_check_shutdown(void);
extern bool plank_check_role_allowed(Oid roleid, const char *role);

#endif							/* PLANK_CHECK_H */
