/*-------------------------------------------------------------------------
 *
 * frame.c
 *		The event model's messages: frames (a message body serialised once
 *		and shared by reference by every connection it goes to), the bodies
 *		of change, commit and resync_required messages, and the interned
 *		table, schema and channel names events carry.  Uses only runtime.c.
 *
 * Sources followed: docs/PROTOCOL.md ("change", "commit",
 * "resync_required"); PostgreSQL's src/backend/utils/mmgr/README
 * (generation memory contexts).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "runtime.h"
#include "event.h"

static MemoryContext frames_cxt = NULL;

/*
 * plank_frame_make
 *		A shared message body holding len bytes of data (a JSON object without
 *		its opening brace), with one reference owned by the caller.
 */
PlankFrame *
plank_frame_make(const char *data, int len)
{
	PlankFrame *frame;

	if (frames_cxt == NULL)
	{
		/*
		 * Frames are freed in about the order they were made (the replay
		 * ring drops the oldest): a generation context keeps them at their
		 * own size, where an AllocSet would round each up to a power of two.
		 */
		frames_cxt = plank_generation_context_create(TopMemoryContext, "plank frames",
													 64 * 1024);
	}
	frame = MemoryContextAlloc(frames_cxt, offsetof(PlankFrame, data) + len + 1);
	frame->refcount = 1;
	frame->len = len;
	memcpy(frame->data, data, len);
	frame->data[len] = '\0';
	return frame;
}

/* plank_frame_unref: drop one reference; the last one frees the frame. */
void
plank_frame_unref(PlankFrame *frame)
{
	Assert(frame->refcount > 0);
	if (--frame->refcount == 0)
		pfree(frame);
}

/* the names events carry (tables, schemas, channels), each stored once */
static HTAB *event_names = NULL;

/*
 * plank_event_name
 *		The stored copy of a table, schema or channel name (at most
 *		NAMEDATALEN - 1 bytes are kept), valid for the worker's lifetime: an
 *		event carries a pointer to it, not a copy, so that the replay ring
 *		holds events compactly.  Names are few (those of tracked tables, of
 *		channels the worker LISTENs on, and of channels clients publish to);
 *		past MAX_EVENT_NAMES distinct ones, a new name is refused with a
 *		WARNING (NULL: the event is skipped), so that memory stays bounded.
 */
#define MAX_EVENT_NAMES 100000

const char *
plank_event_name(const char *name)
{
	NameData	key;
	NameData   *entry;
	bool		found;

	if (event_names == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(NameData);
		ctl.entrysize = sizeof(NameData);
		event_names = hash_create("plank event names", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	}
	memset(&key, 0, sizeof(key));
	strlcpy(NameStr(key), name, NAMEDATALEN);
	entry = hash_search(event_names, &key, HASH_FIND, &found);
	if (entry == NULL)
	{
		if (hash_get_num_entries(event_names) >= MAX_EVENT_NAMES)
		{
			ereport(WARNING,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("plank skipping an event on \"%s\": its worker has seen %d distinct table and channel names",
							NameStr(key), MAX_EVENT_NAMES),
					 errhint("Restart the worker (pg_terminate_backend) to forget the names of dropped tables and unused channels.")));
			return NULL;
		}
		entry = hash_search(event_names, &key, HASH_ENTER, NULL);
	}
	return NameStr(*entry);
}

/*
 * plank_change_frame
 *		The message body of a change event: its type, seq and epoch, the
 *		change object (len bytes of JSON text at change) and, when the event
 *		is the last change of its transaction, "commit":true, which closes the
 *		transaction for whoever receives it (docs/PROTOCOL.md, "commit").
 *		*change_off, when not NULL, is set to the change's offset in the body.
 *		Raises only out-of-memory errors.
 */
PlankFrame *
plank_change_frame(const PlankEvent *ev, const char *change, int len, uint32 *change_off)
{
	StringInfoData buf;
	PlankFrame *frame;

	initStringInfo(&buf);
	appendStringInfo(&buf, "\"type\":\"change\",\"seq\":" UINT64_FORMAT ",\"epoch\":\"%s\",\"change\":",
					 ev->seq, plank_epoch);
	if (change_off)
		*change_off = buf.len;
	appendBinaryStringInfo(&buf, change, len);
	appendStringInfoString(&buf, ev->tx_last ? ",\"commit\":true}" : "}");
	frame = plank_frame_make(buf.data, buf.len);
	pfree(buf.data);
	return frame;
}

/*
 * plank_commit_frame
 *		The commit marker of ev's transaction (ev is its last change):
 *		docs/PROTOCOL.md "commit".  Raises only out-of-memory errors.
 */
PlankFrame *
plank_commit_frame(const PlankEvent *ev)
{
	char		buf[160];
	int			len;

	len = snprintf(buf, sizeof(buf),
				   "\"type\":\"commit\",\"seq\":" UINT64_FORMAT ",\"epoch\":\"%s\",\"xid\":" UINT64_FORMAT "}",
				   ev->seq, plank_epoch, ev->xid);
	return plank_frame_make(buf, len);
}

/*
 * plank_resync_frame
 *		The body of resync_required with a reason (a short ASCII word,
 *		docs/PROTOCOL.md "resync_required") at the newest event.
 */
PlankFrame *
plank_resync_frame(const char *reason)
{
	char		buf[200];
	int			len;

	len = snprintf(buf, sizeof(buf),
				   "\"type\":\"resync_required\",\"reason\":\"%s\",\"epoch\":\"%s\",\"seq\":" UINT64_FORMAT "}",
				   reason, plank_epoch, plank_seq);
	return plank_frame_make(buf, len);
}
