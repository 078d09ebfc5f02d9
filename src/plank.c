/*-------------------------------------------------------------------------
 *
 * plank.c
 *		Library entry point: defines Plank's settings (GUCs) and registers
 *		the background worker.  The library must be loaded through
 *		shared_preload_libraries, because a background worker can only be
 *		registered while the postmaster starts.
 *
 * Sources followed: PostgreSQL docs, "Background Worker Processes" (bgworker)
 * and "Server Configuration" / "Customized Options" (GUCs).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "plank.h"

PG_MODULE_MAGIC;

char	   *plank_database = NULL;
char	   *plank_listen_addresses = NULL;
int			plank_port = 8090;
char	   *plank_static_dir = NULL;
int			plank_max_message_size = 64;
int			plank_max_client_buffer = 8192;
int			plank_max_client_lag = 5000;
int			plank_max_subscriptions = 100;
int			plank_snapshot_limit = 10000;
int			plank_replay_buffer = 32768;
int			plank_workers = 1;
bool		plank_permessage_deflate = false;
int			plank_shared_queue_size = 16384;
bool		plank_log_connections = false;
int			plank_log_level = LOG;
char	   *plank_http_allowed_addresses = NULL;
int			plank_ping_interval = 30;
int			plank_ping_timeout = 10;
char	   *plank_jwt_secret = NULL;
char	   *plank_jwt_secret_file = NULL;
char	   *plank_jwt_public_key_file = NULL;
char	   *plank_jwt_jwks_file = NULL;
char	   *plank_jwt_audience = NULL;
char	   *plank_jwt_issuer = NULL;
char	   *plank_jwt_role_claim = NULL;
char	   *plank_anonymous_role = NULL;
char	   *plank_allowed_origins = NULL;
int			plank_max_connections = 10000;
int			plank_max_unauthenticated = 1000;
int			plank_auth_timeout = 10;
int			plank_rate_limit = 50;
bool		plank_ssl = false;
char	   *plank_ssl_cert_file = NULL;
char	   *plank_ssl_key_file = NULL;
char	   *plank_authenticator = NULL;
bool		plank_allow_privileged_roles = false;
int			plank_check_workers = 2;
int			plank_check_timeout = 5000;
int			plank_max_backlog_memory = 262144;

void		_PG_init(void);
static void register_worker(int index, const char *dbname);

static const struct config_enum_entry log_level_options[] = {
	{"debug5", DEBUG5, false},
	{"debug4", DEBUG4, false},
	{"debug3", DEBUG3, false},
	{"debug2", DEBUG2, false},
	{"debug1", DEBUG1, false},
	{"debug", DEBUG2, true},
	{"info", INFO, false},
	{"notice", NOTICE, false},
	{"warning", WARNING, false},
	{"log", LOG, false},
	{NULL, 0, false}
};

static void
define_settings(void)
{
	DefineCustomStringVariable("plank.database",
							   "Sets the databases whose changes and notifications Plank serves.",
							   "A comma-separated list: one worker per database, serving the first on plank.port, "
							   "the second on plank.port + 1, and so on. Each worker connects as the bootstrap "
							   "superuser. Do not name template1: a connected worker blocks CREATE DATABASE.",
							   &plank_database,
							   "postgres",
							   PGC_POSTMASTER,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("plank.listen_addresses",
							   "Sets the addresses the Plank WebSocket/HTTP server listens on.",
							   "A comma-separated list of IP addresses; \"localhost\" means 127.0.0.1 "
							   "and \"*\" means every address.",
							   &plank_listen_addresses,
							   "localhost",
							   PGC_POSTMASTER,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("plank.port",
							"Sets the TCP port of the Plank WebSocket/HTTP server.",
							NULL,
							&plank_port,
							8090, 1, 65535,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("plank.static_dir",
							   "Sets the directory whose files the Plank server serves over HTTP.",
							   "Empty means SHAREDIR/plank/www, where \"make install\" puts the frontend.",
							   &plank_static_dir,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_message_size",
							"Sets the largest message a WebSocket client may send.",
							"A larger message closes the connection with code 1009.",
							&plank_max_message_size,
							64, 1, 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_client_buffer",
							"Sets the backlog above which a WebSocket client that stops reading is closed.",
							"A client whose queued messages, not counting the largest, exceed this while its socket takes no data for plank.max_client_lag is closed with code 1013; a client that reads is kept however large its backlog.",
							&plank_max_client_buffer,
							8192, 64, 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_client_lag",
							"Sets how long a client over plank.max_client_buffer may take no data before it is closed.",
							"Counted only while the worker polls the client's socket and finds it full; past it the client is closed with 1013.",
							&plank_max_client_lag,
							5000, 0, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_subscriptions",
							"Sets the largest number of subscriptions one WebSocket connection may hold.",
							NULL,
							&plank_max_subscriptions,
							100, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.snapshot_limit",
							"Sets the largest number of rows a subscription's snapshot sends.",
							"A table with more matching rows sends this many with \"complete\": false.",
							&plank_snapshot_limit,
							10000, 0, INT_MAX / 2,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.replay_buffer",
							"Sets how much memory the replay ring of recent events may use.",
							"A client that reconnects with \"since\" is sent the events it missed while they are still in the ring; older ones make it resync.",
							&plank_replay_buffer,
							32768, 0, MAX_KILOBYTES,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	/*
	 * plank.workers, plank.shared_queue_size: PGC_POSTMASTER (the workers are
	 * registered and the shared memory sized at server start).  Docs:
	 * README.md "Settings", docs/BENCHMARKS.md "Several workers".
	 */
	DefineCustomIntVariable("plank.workers",
							"Sets the number of worker processes that serve the WebSocket clients of each database.",
							"They share plank.port (SO_REUSEPORT); the first one LISTENs and passes every event to the others through shared memory.",
							&plank_workers,
							1, 1, PLANK_MAX_WORKERS,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.shared_queue_size",
							"Sets the size of the shared-memory queue through which the first worker of a database passes events to the others.",
							"Used only when plank.workers is above 1; a full queue makes the first worker wait for the slowest of the others.",
							&plank_shared_queue_size,
							16384, 64, MAX_KILOBYTES,
							PGC_POSTMASTER,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.ping_interval",
							"Sets how long a WebSocket connection may be silent before the server sends it a ping.",
							"Zero turns pings off. A change applies from each connection's next ping.",
							&plank_ping_interval,
							30, 0, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.ping_timeout",
							"Sets how long after a ping without answer a silent connection is dropped.",
							"A client whose network went away without a close is detected after plank.ping_interval plus this.",
							&plank_ping_timeout,
							10, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

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

	DefineCustomStringVariable("plank.authenticator",
							   "Sets the login role whose sessions evaluate users' objects for Plank.",
							   "Snapshots and row-level security checks run in check workers connected as this role, "
							   "which must not be a superuser; a client's role must be one the authenticator is a member of "
							   "(docs/SECURITY.md).",
							   &plank_authenticator,
							   "plank_authenticator",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("plank.allow_privileged_roles",
							 "Lets clients act as superuser or BYPASSRLS roles.",
							 "Off: a token or plank.anonymous_role naming such a role is refused with unknown_role.",
							 &plank_allow_privileged_roles,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("plank.check_workers",
							"Sets the number of check workers per database.",
							"Check workers run snapshots and row-level security checks as the client's role, "
							"outside the worker that holds the sockets.",
							&plank_check_workers,
							2, 1, 32,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_backlog_memory",
							"Sets the memory the backlogs of all clients of a worker may take.",
							"A backlog is one 24-byte entry per queued message and client; past this, the "
							"client furthest behind is closed with 1013.",
							&plank_max_backlog_memory,
							262144, 1024, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.check_timeout",
							"Sets the time limit of one snapshot or row-level security check.",
							"It is the statement_timeout and lock_timeout of the check's transaction.",
							&plank_check_timeout,
							5000, 10, 600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("plank.allowed_origins",
							   "Sets the web origins whose pages may open WebSocket connections.",
							   "A comma-separated list such as https://app.example.com; \"*\" allows any. "
							   "Empty allows only the pages Plank serves itself. Clients that send no Origin "
							   "(non-browser clients) are not affected.",
							   &plank_allowed_origins,
							   "",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_connections",
							"Sets the largest number of concurrent WebSocket connections that have a role.",
							"Further connections are refused during the handshake, or closed with 1013 when "
							"they authenticate. Connections waiting to authenticate are bounded by "
							"plank.max_unauthenticated instead.",
							&plank_max_connections,
							10000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.max_unauthenticated",
							"Sets the largest number of WebSocket connections waiting to authenticate.",
							"A connection waits from its handshake until its auth message is accepted; beyond "
							"this many, the one that waited longest is closed with 1013. Connections with a role "
							"count against plank.max_connections only. Not used with plank.anonymous_role set: "
							"every connection has that role from the start.",
							&plank_max_unauthenticated,
							1000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.auth_timeout",
							"Sets how long a client without a token has to send an auth message.",
							"When no anonymous role is set, a client that does not authenticate in time is closed with 4001.",
							&plank_auth_timeout,
							10, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("plank.rate_limit",
							"Sets how many messages per second a client may send, on average.",
							"Bursts of twice as many are allowed; a client going faster is closed with 1008. Zero: no limit.",
							&plank_rate_limit,
							50, 0, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	/*
	 * plank.permessage_deflate: RFC 7692, through libwebsockets' extension
	 * (lws_extension_callback_pm_deflate).  Off by default: compression is
	 * per connection, so each message is compressed once per client instead
	 * of being shared as one frame (docs/BENCHMARKS.md).
	 */
	DefineCustomBoolVariable("plank.permessage_deflate",
							 "Offers the permessage-deflate WebSocket extension (RFC 7692) to clients.",
							 "Clients that ask for it get compressed messages; it costs CPU per client and message.",
							 &plank_permessage_deflate,
							 false,
							 PGC_POSTMASTER,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("plank.ssl",
							 "Serves WebSocket and HTTP over TLS (wss://, https://).",
							 NULL,
							 &plank_ssl,
							 false,
							 PGC_POSTMASTER,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("plank.ssl_cert_file",
							   "Sets the PEM certificate (chain) file of the TLS server.",
							   "Empty uses PostgreSQL's ssl_cert_file. Relative paths are relative to the data directory.",
							   &plank_ssl_cert_file,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("plank.ssl_key_file",
							   "Sets the PEM private key file of the TLS server.",
							   "Empty uses PostgreSQL's ssl_key_file. Relative paths are relative to the data directory.",
							   &plank_ssl_key_file,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("plank.http_allowed_addresses",
							   "Sets the client addresses that may read /health and /metrics.",
							   "A comma-separated list of IP addresses; \"localhost\" means 127.0.0.1 and ::1, \"*\" any.",
							   &plank_http_allowed_addresses,
							   "localhost",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomEnumVariable("plank.log_level",
							 "Sets the message level of Plank's connection log lines.",
							 "Connections and disconnections (with plank.log_connections), refused "
							 "handshakes and tokens, slow clients closed and administrator disconnects "
							 "are logged at this level; they never carry a token.",
							 &plank_log_level,
							 LOG,
							 log_level_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("plank.log_connections",
							 "Logs each WebSocket connection and disconnection.",
							 NULL,
							 &plank_log_connections,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("plank");
}

/*
 * plank_database_list
 *		The database names of plank.database, in order (a list of strings in
 *		the current memory context).  Raises 22023 for a malformed list.
 */
List *
plank_database_list(void)
{
	char	   *raw = pstrdup(plank_database);
	List	   *names;

	if (!SplitIdentifierString(raw, ',', &names) || names == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in parameter \"plank.database\""),
				 errhint("List database names separated by commas.")));
	return names;
}

/* plank_serves_database: is this database in plank.database? */
bool
plank_serves_database(const char *dbname)
{
	ListCell   *lc;

	foreach(lc, plank_database_list())
		if (strcmp((const char *) lfirst(lc), dbname) == 0)
			return true;
	return false;
}

/*
 * One worker per database of plank.database, with its index as argument.
 * Raises 53400 (configuration_limit_exceeded) when max_worker_processes
 * cannot hold them.
 */
static void
register_workers(void)
{
	List	   *dbs = plank_database_list();
	int			n = list_length(dbs) * plank_workers;
	ListCell   *lc;

	if (n > max_worker_processes)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("plank needs %d background workers for plank.database and plank.workers, but max_worker_processes is %d",
						n, max_worker_processes),
				 errhint("Raise max_worker_processes to at least %d plus the workers other features use, and restart the server.",
						 n)));
	foreach(lc, dbs)
		for (int k = 0; k < plank_workers; k++)
			register_worker(foreach_current_index(lc) * PLANK_MAX_WORKERS + k,
							(const char *) lfirst(lc));
}

/* index: the database's place in plank.database * PLANK_MAX_WORKERS + worker number */
static void
register_worker(int index, const char *dbname)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* catalog access (table and column look-ups) needs a consistent state */
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* restart one second after an exit with code 1 or a crash */
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "plank");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "plank_worker_main");
	if (plank_workers > 1)
		snprintf(worker.bgw_name, BGW_MAXLEN, "plank worker %d for %s",
				 index % PLANK_MAX_WORKERS, dbname);
	else
		snprintf(worker.bgw_name, BGW_MAXLEN, "plank worker for %s", dbname);
	snprintf(worker.bgw_type, BGW_MAXLEN, "plank");
	worker.bgw_main_arg = Int32GetDatum(index);
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}

/*
 * _PG_init
 *		Library load hook.  Raises 55000 (object_not_in_prerequisite_state)
 *		unless loaded through shared_preload_libraries; defines the plank.*
 *		settings and registers the worker.
 */
void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("plank must be loaded via shared_preload_libraries"),
				 errhint("Add plank to the shared_preload_libraries configuration variable in postgresql.conf and restart the server.")));

	define_settings();
	plank_stats_init(list_length(plank_database_list()));
	plank_queue_init(list_length(plank_database_list()));
	register_workers();
}
