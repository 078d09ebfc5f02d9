/*-------------------------------------------------------------------------
 *
 * publish.c
 *		Broadcast between WebSocket clients: a client granted it (plank.
 *		publish_grants) publishes a string to a NOTIFY channel; the worker
 *		sends it with PostgreSQL's NOTIFY (Async_Notify) on a channel of its
 *		own, "plank_<64 random bits>_publish", with the sender's role and
 *		token sub attached, so that every worker of the database gets it
 *		through the notification queue; on receipt it becomes a "notify"
 *		message of the target channel with a "publisher" member
 *		(docs/PROTOCOL.md "publish").
 *
 * The publish channel's name derives from plank.change_channel(), drawn at
 * server start: no session can forge a publication without knowing it (a
 * NOTIFY needs no privilege), and it starts with "plank", which clients may
 * neither subscribe nor publish to.
 *
 * Sources followed: PostgreSQL docs "NOTIFY" (payload under 8000 bytes,
 * delivered at commit, in commit order), commands/async.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "runtime.h"
#include "jsonspan.h"
#include "event.h"
#include "auth.h"
#include "delivery.h"

/*
 * plank_publish_channel
 *		The NOTIFY channel publications travel on: plank.change_channel()
 *		followed by "_publish".  Raises nothing.
 */
const char *
plank_publish_channel(void)
{
	static char name[NAMEDATALEN];

	if (name[0] == '\0')
		snprintf(name, sizeof(name), "%s_publish", plank_change_channel());
	return name;
}

/*
 * plank_publish
 *		Publish payload (a string in the database encoding) to channel for a
 *		client acting as ident: check plank.publish_grants, then NOTIFY the
 *		publication {"channel":...,"role":...,"sub":...,"payload":...} on
 *		plank_publish_channel(), in a transaction of its own that commits
 *		before this returns.  The role and sub come from ident (the token the
 *		server verified), never from the client's message.  Returns
 *		PLANK_PUBLISH_OK, PLANK_PUBLISH_DENIED (no grant) or
 *		PLANK_PUBLISH_TOO_LARGE (the publication would reach NOTIFY's 8000
 *		bytes: PLANK_PUBLISH_MAX_BYTES).  Raises ERROR for a failure of the
 *		transaction (the caller answers internal_error).
 */
PlankPublishResult
plank_publish(const PlankIdentity *ident, const char *channel, const char *payload, int len)
{
	StringInfoData env;
	char	   *sub;
	PlankPublishResult result = PLANK_PUBLISH_OK;

	sub = plank_json_text_string(ident->from_token ? ident->claims : NULL, "sub");
	initStringInfo(&env);
	appendStringInfoString(&env, "{\"channel\":");
	escape_json(&env, channel);
	appendStringInfoString(&env, ",\"role\":");
	escape_json(&env, ident->role);
	appendStringInfoString(&env, ",\"sub\":");
	if (sub)
		escape_json(&env, sub);
	else
		appendStringInfoString(&env, "null");
	appendStringInfoString(&env, ",\"payload\":");
	{
		char	   *p = pnstrdup(payload, len);

		escape_json(&env, p);
		pfree(p);
	}
	appendStringInfoChar(&env, '}');
	if (env.len > PLANK_PUBLISH_MAX_BYTES)
		return PLANK_PUBLISH_TOO_LARGE;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!plank_auth_publish_allowed(ident->roleid, channel))
		result = PLANK_PUBLISH_DENIED;
	else
		Async_Notify(plank_publish_channel(), env.data);
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* worker 0 listens to the channel: its own notification is pending now */
	plank_wakeup_handler();
	return result;
}

/*
 * plank_publish_frame
 *		When ev is a notification on plank_publish_channel() (a publication):
 *		read it with jsonb's parser, make ev a notification of the channel it
 *		was published to, build its "notify" frame with the publisher's role
 *		and sub, and return true.  false for any other notification, and for
 *		a publication that does not read (only a superuser, who knows the
 *		channel's name, could send one), which then stays on the publish
 *		channel, where no client can subscribe.  Raises only out-of-memory
 *		errors.
 */
bool
plank_publish_frame(PlankEvent *ev, const char *payload)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile jb = NULL;
	JsonbValue	channel;
	JsonbValue	role;
	JsonbValue	sub;
	JsonbValue	text;
	StringInfoData buf;
	char	   *utf8;

	if (ev->is_change || strcmp(ev->channel, plank_publish_channel()) != 0)
		return false;
	PG_TRY();
	{
		jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(payload)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		jb = NULL;
	}
	PG_END_TRY();
	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb) ||
		!plank_jsonb_member(&jb->root, "channel", &channel) ||
		channel.type != jbvString || channel.val.string.len == 0 ||
		channel.val.string.len >= NAMEDATALEN ||
		!plank_jsonb_member(&jb->root, "role", &role) ||
		role.type != jbvString ||
		!plank_jsonb_member(&jb->root, "sub", &sub) ||
		(sub.type != jbvString && sub.type != jbvNull) ||
		!plank_jsonb_member(&jb->root, "payload", &text) ||
		text.type != jbvString)
	{
		ereport(WARNING,
				(errmsg("plank ignoring a malformed publication on its publish channel"),
				 errhint("The channel \"%s\" is reserved for publications of WebSocket clients.",
						 plank_publish_channel())));
		return false;
	}

	{
		const char *name = plank_event_name(pnstrdup(channel.val.string.val,
													 channel.val.string.len));

		if (name == NULL)
			return false;		/* too many names: plank_event_name() warned */
		ev->channel = name;
	}
	initStringInfo(&buf);
	appendStringInfo(&buf, "\"type\":\"notify\",\"seq\":" UINT64_FORMAT ",\"epoch\":\"%s\",\"channel\":",
					 ev->seq, plank_epoch);
	escape_json(&buf, ev->channel);
	appendStringInfoString(&buf, ",\"payload\":");
	escape_json(&buf, pnstrdup(text.val.string.val, text.val.string.len));
	appendStringInfo(&buf, ",\"pid\":%d,\"publisher\":{\"role\":", ev->pid);
	escape_json(&buf, pnstrdup(role.val.string.val, role.val.string.len));
	appendStringInfoString(&buf, ",\"sub\":");
	if (sub.type == jbvString)
		escape_json(&buf, pnstrdup(sub.val.string.val, sub.val.string.len));
	else
		appendStringInfoString(&buf, "null");
	appendStringInfoString(&buf, "}}");
	utf8 = pg_server_to_any(buf.data, buf.len, PG_UTF8);
	ev->frame = plank_frame_make(utf8, strlen(utf8));
	return true;
}
