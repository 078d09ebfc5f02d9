/*-------------------------------------------------------------------------
 *
 * plank.h
 *		Declarations shared by Plank's source files: settings (GUCs), the
 *		background worker's entry point, and the change-capture trigger.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_H
#define PLANK_H

#include "postgres.h"

/* NOTIFY channel that the capture trigger sends table changes on */
#define PLANK_CHANGE_CHANNEL "plank"

/* Settings (GUCs), defined and documented in plank.c */
extern char *plank_database;
extern char *plank_listen_addresses;
extern int	plank_port;
extern char *plank_static_dir;
extern int	plank_max_message_size;	/* kB */
extern int	plank_max_client_buffer;	/* kB */
extern int	plank_max_subscriptions;
extern bool plank_log_connections;

/* worker.c */
extern PGDLLEXPORT void plank_worker_main(Datum main_arg);

#endif							/* PLANK_H */
