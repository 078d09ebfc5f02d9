/*-------------------------------------------------------------------------
 *
 * event.h
 *		The event model: a notification as received, the event it becomes
 *		(its sequence number, routing and shared frame), the frames and
 *		names of frame.c, and the services that keep or carry events: the
 *		replay ring (replay.c), the relay to the other workers (relay.c) and
 *		origin positions (origin.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_EVENT_H
#define PLANK_EVENT_H

#include "runtime.h"
#include "jsonspan.h"

/*
 * An outgoing message body shared by every connection it goes to: the event
 * is serialised once and each delivery only references it.  data holds the
 * JSON object without its opening brace; the per-delivery prefix supplies
 * it ("{" or "{\"sub\":\"id\",").
 */
typedef struct PlankFrame
{
	uint32		refcount;
	uint32		len;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} PlankFrame;

#define PLANK_OP_INSERT		0x01
#define PLANK_OP_UPDATE		0x02
#define PLANK_OP_DELETE		0x04
#define PLANK_OP_TRUNCATE	0x08
#define PLANK_OP_ALL		0x0F

/* A notification as received, before it becomes an event (worker.c) */
typedef struct PlankNotification
{
	struct PlankNotification *next;
	int32		pid;
	char	   *channel;
	char	   *payload;
} PlankNotification;

/*
 * An event: one received notification with its sequence number, routing
 * information and shared message body.  The replay ring keeps copies of
 * these (with parsed = NULL).
 */
typedef struct PlankEvent
{
	uint64		seq;
	bool		is_change;		/* a table change (channel "plank") */
	const char *channel;		/* plain NOTIFY: its channel */
	int32		pid;			/* the notifying backend */
	const char *schema;			/* change: the table */
	const char *table;			/* (names interned: plank_event_name) */
	int			op;				/* change: PLANK_OP_* */
	uint64		xid;			/* change: the writing transaction */
	bool		tx_last;		/* change: the last one of its transaction */
	TimestampTz received_at;	/* when the worker received it */
	PlankFrame *frame;			/* message body, without the "{" or sub prefix */
	uint32		payload_off;	/* change: the payload's place in frame->data */
	uint32		payload_len;
	struct PlankPayload *parsed;	/* change: its members, while dispatching */
} PlankEvent;

/*
 * An event as worker 0 relays it to the other workers of its database
 * (relay.c): its number and the text its frame is built from.
 */
typedef struct PlankRelayedEvent
{
	uint64		seq;
	bool		is_change;
	bool		tx_last;		/* change: the last one of its transaction */
	int32		pid;			/* the notifying backend */
	const char *channel;		/* plain NOTIFY: its channel */
	char	   *payload;		/* len bytes, NUL-terminated; may be modified */
	int			len;
} PlankRelayedEvent;

#define PLANK_ROW_NEW	0
#define PLANK_ROW_OLD	1
#define PLANK_ROW_KEY	2

/* A change payload's members, and the members of its row images. */
typedef struct PlankPayload
{
	PlankJsonMember *members;
	int			nmembers;
	bool		truncated;		/* it has a "truncated" member */
	int			row_member[3];	/* index of "new", "old", "key"; -1: none */
	PlankJsonMember *rows[3];	/* their members, when the value is an object */
	int			nrows[3];
	void	   *values[3];		/* their values as filters read them (filter.c) */
} PlankPayload;

/* frame.c: the event model's messages */
extern PlankFrame *plank_frame_make(const char *data, int len);
extern void plank_frame_unref(PlankFrame *frame);
extern PlankFrame *plank_change_frame(const PlankEvent *ev, const char *change, int len,
									  uint32 *change_off);
extern PlankFrame *plank_commit_frame(const PlankEvent *ev);
extern PlankFrame *plank_resync_frame(const char *reason);
extern const char *plank_event_name(const char *name);


/* replay.c */
extern void plank_replay_push(const PlankEvent *ev);
extern bool plank_replay_covers(uint64 after_seq);
extern void plank_replay_start_after(uint64 seq);
typedef bool (*plank_replay_walker) (PlankEvent *ev, void *arg);
extern void plank_replay_walk(uint64 after_seq, plank_replay_walker fn, void *arg);
extern void plank_replay_walk_back(uint64 upto_seq, plank_replay_walker fn, void *arg);
extern uint64 plank_replay_bytes_after(uint64 seq);

/* relay.c: events from worker 0 to the other workers of its database */
extern void plank_relay_attach(void);
extern void plank_relay_publish(const PlankEvent *ev, const char *payload, int len);
typedef void (*plank_relay_consumer) (const PlankRelayedEvent *rev);
extern int	plank_relay_consume(plank_relay_consumer fn);
extern uint64 plank_relay_listen(const char *channel);
extern void plank_relay_unlisten(const char *channel);
extern uint64 plank_relay_listening_since(const char *channel);
extern void plank_relay_serve_listens(void);
extern void plank_relay_wake_others(void);

/* origin.c */
extern bool plank_origin_parse(const char *text, XLogRecPtr *lsn);
extern uint64 plank_origin_find(XLogRecPtr lsn, uint32 n);

#endif							/* PLANK_EVENT_H */
