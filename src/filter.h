/*-------------------------------------------------------------------------
 *
 * filter.h
 *		Subscription filters (filter.c): their operators, parsing, SQL and
 *		matching a change.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLANK_FILTER_H
#define PLANK_FILTER_H

#include "conn.h"
#include "utils/jsonb.h"

/* A filter's operator (docs/PROTOCOL.md, "Filters") */
typedef enum PlankFilterOp
{
	PLANK_FILTER_EQ,			/* a plain value, or {"eq": v} */
	PLANK_FILTER_NEQ,
	PLANK_FILTER_LT,
	PLANK_FILTER_LTE,
	PLANK_FILTER_GT,
	PLANK_FILTER_GTE,
	PLANK_FILTER_IN,
	PLANK_FILTER_IS,			/* null, true or false */
	PLANK_FILTER_LIKE,
	PLANK_FILTER_ILIKE
} PlankFilterOp;

/* How the ordering operators compare a column's values, by its SQL type */
typedef enum PlankFilterKind
{
	PLANK_KIND_OTHER,			/* no ordering: eq, neq, in, is only */
	PLANK_KIND_NUMBER,			/* numerically (numeric) */
	PLANK_KIND_TEXT,			/* by bytes, as COLLATE "C"; like, ilike */
	PLANK_KIND_TIMESTAMPTZ,		/* as instants */
	PLANK_KIND_TIMESTAMP,
	PLANK_KIND_DATE
} PlankFilterKind;

typedef struct PlankFilter
{
	char	   *column;
	int			column_len;
	PlankFilterOp op;
	PlankFilterKind kind;		/* set when the table is resolved */
	int			nvalues;		/* 1; in: as many as its array has */
	JsonbValue *values;			/* the operand's scalars */
	Datum	   *bounds;			/* timestamp and date columns: each string operand
								 * as the column's type reads it; else NULL */
	text	   *pattern;		/* like, ilike: the operand as text */
} PlankFilter;

/* filter.c: the operators of subscription filters, and matching a change */
extern PlankPayload *plank_event_payload(PlankEvent *ev);
extern bool plank_filter_match(const PlankSub *sub, PlankEvent *ev, bool new_only);
extern int	plank_filter_row_member(const PlankPayload *p, int which, const char *name, int len);
extern char *plank_filter_parse(JsonbValue *filter, PlankFilter **filters, int *nfilters);
extern char *plank_filter_resolve(PlankFilter *f, Oid typid);
extern PlankFilter *plank_filter_copy(MemoryContext cxt, const PlankFilter *filters, int n);
extern void plank_filter_free(PlankFilter *filters, int n);
extern void plank_filter_sql(StringInfo buf, const PlankFilter *f);
extern void plank_filter_describe(StringInfo buf, const PlankFilter *f);

/* filter_index.c: the equality index of a table's subscriptions */
typedef struct PlankFilterIndex PlankFilterIndex;
extern void plank_filter_index_add(PlankFilterIndex **index, PlankSub *sub);
extern void plank_filter_index_remove(PlankFilterIndex **index, PlankSub *sub);
extern void plank_filter_index_sub_changed(PlankSub *sub);
extern PlankSub **plank_filter_index_candidates(PlankFilterIndex *index, PlankEvent *ev, int *n);

#endif							/* PLANK_FILTER_H */
