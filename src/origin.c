/*-------------------------------------------------------------------------
 *
 * origin.c
 *		Resuming on another node: a "since" that names a change by its origin
 *		position ("origin", "n") instead of this worker's sequence number.
 *
 * On a logical replication subscriber, every change applied from the
 * primary carries "origin", the primary's commit end LSN of its transaction
 * (capture.c), and "n", its position in that transaction: the same on every
 * subscriber that tracks the same tables.  A client that moves to another
 * node sends them in its "since"; this worker looks for the same change in
 * its replay ring, and when it holds it, the client resumes right after it,
 * as with a "since" of this worker's own epoch.  When the ring does not hold
 * it (older than the ring, or not yet applied here), the client resyncs.
 * docs/SCALING.md ("Positions") and docs/PROTOCOL.md ("since").
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlogdefs.h"
#include "mb/pg_wchar.h"

#include "runtime.h"
#include "jsonspan.h"
#include "event.h"

typedef struct OriginSearch
{
	char		needle[64];		/* "origin":"X/Y", as capture.c writes it */
	int			needle_len;
	uint32		n;
	uint64		found_seq;		/* 0: not found */
} OriginSearch;

/* Is the member m the JSON number n (as capture.c writes it)? */
static bool
member_is_number(const PlankJsonMember *m, uint32 n)
{
	char		text[16];
	int			len = snprintf(text, sizeof(text), "%u", n);

	return m->type == JSON_TOKEN_NUMBER && m->valuelen == len &&
		memcmp(m->value, text, len) == 0;
}

/* A ring walker, newest first: stop at the change with this origin and n. */
static bool
find_origin(PlankEvent *ev, void *arg)
{
	OriginSearch *search = (OriginSearch *) arg;
	const char *payload;
	PlankJsonMember *members;
	int			nmembers;
	char	   *error;
	bool		origin_ok = false;
	bool		n_ok = false;

	if (!ev->is_change || ev->frame == NULL)
		return true;
	payload = ev->frame->data + ev->payload_off;
	/* a quick look first: most changes are of other transactions */
	if (memmem(payload, ev->payload_len, search->needle, search->needle_len) == NULL)
		return true;
	if (!plank_json_members(payload, ev->payload_len, PG_UTF8, &members, &nmembers, &error))
		return true;
	for (int i = 0; i < nmembers; i++)
	{
		const PlankJsonMember *m = &members[i];

		if (m->keylen == 8 && memcmp(m->key, "\"origin\"", 8) == 0)
			origin_ok = m->type == JSON_TOKEN_STRING &&
				m->valuelen == search->needle_len - 9 &&
				memcmp(m->value, search->needle + 9, m->valuelen) == 0;
		else if (m->keylen == 3 && memcmp(m->key, "\"n\"", 3) == 0)
			n_ok = member_is_number(m, search->n);
	}
	pfree(members);
	if (origin_ok && n_ok)
	{
		search->found_seq = ev->seq;
		return false;
	}
	return true;
}

/*
 * plank_origin_parse
 *		Parse an LSN written as PostgreSQL writes pg_lsn ("16/B374D848": two
 *		hexadecimal numbers of at most 8 digits); false when text is not one.
 *		Source: pg_lsn_in in src/backend/utils/adt/pg_lsn.c (not called: it
 *		raises an error on bad input, and this runs for client input).
 */
bool
plank_origin_parse(const char *text, XLogRecPtr *lsn)
{
	size_t		len1 = strspn(text, "0123456789abcdefABCDEF");
	size_t		len2;

	if (len1 < 1 || len1 > 8 || text[len1] != '/')
		return false;
	len2 = strspn(text + len1 + 1, "0123456789abcdefABCDEF");
	if (len2 < 1 || len2 > 8 || text[len1 + 1 + len2] != '\0')
		return false;
	*lsn = ((uint64) strtoul(text, NULL, 16) << 32) | (uint64) strtoul(text + len1 + 1, NULL, 16);
	return true;
}

/*
 * plank_origin_find
 *		The sequence number, in this worker's ring, of the change whose
 *		"origin" is lsn and "n" is n; 0 when the ring does not hold it.
 *		Walks the ring newest first (memory: one change's members at a
 *		time).  Raises nothing.
 */
uint64
plank_origin_find(XLogRecPtr lsn, uint32 n)
{
	OriginSearch search;

	search.needle_len = snprintf(search.needle, sizeof(search.needle),
								 "\"origin\":\"%X/%X\"", LSN_FORMAT_ARGS(lsn));
	search.n = n;
	search.found_seq = 0;
	plank_replay_walk_back(plank_seq, find_origin, &search);
	return search.found_seq;
}
