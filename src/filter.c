/*-------------------------------------------------------------------------
 *
 * filter.c
 *		The operators of subscription filters: parsing a subscribe request's
 *		"filter" (already read by jsonb's input function), checking each
 *		operator against its column's type, the SQL that applies the same
 *		filter to a snapshot, and the pieces of matching that call into
 *		PostgreSQL (LIKE, timestamp input).  Matching itself, on the members
 *		of a change's row images, is in subs.c.
 *
 * Sources followed: docs/PROTOCOL.md ("Filters"); PostgreSQL docs
 * "Comparison Functions and Operators" (9.2: a comparison with NULL is not
 * true), "Pattern Matching" (9.7.1: LIKE, ILIKE, the backslash escape),
 * "Date/Time Input" (8.5.1) and "JSON Types" (8.14.4: jsonb equality).
 *
 * Nothing here runs user-defined code: the functions called are built-in
 * (numeric_in, timestamptz_in, textlike, texticlike), with the built-in "C"
 * collation or the database's default collation.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "jsonspan.h"
#include "filter.h"

static const char *const op_names[] = {
	[PLANK_FILTER_EQ] = "eq",
	[PLANK_FILTER_NEQ] = "neq",
	[PLANK_FILTER_LT] = "lt",
	[PLANK_FILTER_LTE] = "lte",
	[PLANK_FILTER_GT] = "gt",
	[PLANK_FILTER_GTE] = "gte",
	[PLANK_FILTER_IN] = "in",
	[PLANK_FILTER_IS] = "is",
	[PLANK_FILTER_LIKE] = "like",
	[PLANK_FILTER_ILIKE] = "ilike",
};

#define NUM_OPS lengthof(op_names)


static bool
is_scalar(const JsonbValue *v)
{
	return v->type == jbvNull || v->type == jbvString || v->type == jbvNumeric ||
		v->type == jbvBool;
}

/* One operator's operand: check its shape and fill f (allocated in the current context). */
static char *
parse_operand(PlankFilter *f, const char *column, JsonbValue *v)
{
	const char *op = op_names[f->op];

	switch (f->op)
	{
		case PLANK_FILTER_IN:
			{
				JsonbIterator *it;
				JsonbIteratorToken tok;
				JsonbValue	e;
				int			n = 0;

				if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data) ||
					JsonContainerSize(v->val.binary.data) == 0)
					return psprintf("operand of \"in\" for column \"%s\" must be a non-empty array of strings, numbers, booleans or nulls",
										column);
				f->values = palloc0(JsonContainerSize(v->val.binary.data) * sizeof(JsonbValue));
				it = JsonbIteratorInit(v->val.binary.data);
				while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
				{
					if (tok != WJB_ELEM)
						continue;
					if (!is_scalar(&e))
						return psprintf("operand of \"in\" for column \"%s\" must be a non-empty array of strings, numbers, booleans or nulls",
											column);
					f->values[n++] = e;
				}
				f->nvalues = n;
				return NULL;
			}
		case PLANK_FILTER_EQ:
			if (!is_scalar(v))
				return psprintf("operand of \"eq\" for column \"%s\" must be a string, number, boolean or null",
									column);
			break;
		case PLANK_FILTER_NEQ:
			if (!is_scalar(v) || v->type == jbvNull)
				return psprintf("operand of \"neq\" for column \"%s\" must be a string, number or boolean (use \"is\" for null)",
									column);
			break;
		case PLANK_FILTER_IS:
			if (v->type != jbvNull && v->type != jbvBool)
				return psprintf("operand of \"is\" for column \"%s\" must be null, true or false",
									column);
			break;
		case PLANK_FILTER_LIKE:
		case PLANK_FILTER_ILIKE:
			if (v->type != jbvString)
				return psprintf("operand of \"%s\" for column \"%s\" must be a string (a LIKE pattern)",
									op, column);
			break;
		default:				/* lt, lte, gt, gte */
			if (v->type != jbvString && v->type != jbvNumeric)
				return psprintf("operand of \"%s\" for column \"%s\" must be a number or a string",
									op, column);
			break;
	}
	f->values = palloc(sizeof(JsonbValue));
	f->values[0] = *v;
	f->nvalues = 1;
	return NULL;
}

/* A zeroed filter on column at (*out)[n], growing *out (*cap entries) as needed. */
static void
new_filter(PlankFilter **out, int n, int *cap, char *column)
{
	if (n == *cap)
	{
		*cap = *cap ? *cap * 2 : 8;
		*out = *out ? repalloc(*out, *cap * sizeof(PlankFilter)) :
			palloc(*cap * sizeof(PlankFilter));
	}
	memset(&(*out)[n], 0, sizeof(PlankFilter));
	(*out)[n].column = column;
	(*out)[n].column_len = strlen(column);
}

/*
 * plank_filter_parse
 *		Read a subscribe request's "filter" member (a JsonbValue from the
 *		request's jsonb): an object from column name to either a JSON scalar
 *		(equality) or an object of operators to operands, {"gt": 5, "lt":
 *		10} (every operator must hold).  Fills *filters (one entry per
 *		column and operator, allocated in the current memory context) and
 *		*nfilters.  Returns NULL, or the message of a bad_filter error for
 *		a shape it refuses (docs/PROTOCOL.md "Filters").  Raises only
 *		out-of-memory errors.
 */
char *
plank_filter_parse(JsonbValue *filter, PlankFilter **filters, int *nfilters)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	PlankFilter *out = NULL;
	int			n = 0;
	int			cap = 0;
	char	   *column = NULL;

	*filters = NULL;
	*nfilters = 0;
	if (filter->type != jbvBinary || !JsonContainerIsObject(filter->val.binary.data))
		return psprintf("\"filter\" must be an object of column names to values or operators");

	it = JsonbIteratorInit(filter->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		JsonbIterator *oit;
		JsonbValue	ov;
		JsonbIteratorToken otok;
		int			before = n;
		char	   *opname = NULL;

		if (tok == WJB_KEY)
		{
			column = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		if (v.type == jbvBinary && !JsonContainerIsObject(v.val.binary.data))
			return psprintf("filter for column \"%s\" must be a string, number, boolean, null or an object of operators",
								column);
		if (v.type != jbvBinary)
		{
			/* a plain value: equality */
			new_filter(&out, n, &cap, column);
			out[n].op = PLANK_FILTER_EQ;
			out[n].values = palloc(sizeof(JsonbValue));
			out[n].values[0] = v;
			out[n].nvalues = 1;
			n++;
			continue;
		}
		oit = JsonbIteratorInit(v.val.binary.data);
		while ((otok = JsonbIteratorNext(&oit, &ov, true)) != WJB_DONE)
		{
			char	   *err;
			int			op;

			if (otok == WJB_KEY)
			{
				opname = pnstrdup(ov.val.string.val, ov.val.string.len);
				continue;
			}
			if (otok != WJB_VALUE)
				continue;
			for (op = 0; op < (int) NUM_OPS; op++)
				if (strcmp(opname, op_names[op]) == 0)
					break;
			if (op == (int) NUM_OPS)
				return psprintf("unknown filter operator \"%.32s\" for column \"%s\": expected eq, neq, lt, lte, gt, gte, in, is, like or ilike",
									opname, column);
			new_filter(&out, n, &cap, column);
			out[n].op = (PlankFilterOp) op;
			if ((err = parse_operand(&out[n], column, &ov)) != NULL)
				return err;
			n++;
		}
		if (n == before)
			return psprintf("filter for column \"%s\" has no operator", column);
	}
	*filters = out;
	*nfilters = n;
	return NULL;
}

/* How the ordering operators compare values of a type (its base type). */
static PlankFilterKind
type_kind(Oid typid)
{
	switch (getBaseType(typid))
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
		case OIDOID:
			return PLANK_KIND_NUMBER;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case NAMEOID:
			return PLANK_KIND_TEXT;
		case TIMESTAMPTZOID:
			return PLANK_KIND_TIMESTAMPTZ;
		case TIMESTAMPOID:
			return PLANK_KIND_TIMESTAMP;
		case DATEOID:
			return PLANK_KIND_DATE;
		default:
			return PLANK_KIND_OTHER;
	}
}

static bool
kind_is_time(PlankFilterKind kind)
{
	return kind == PLANK_KIND_TIMESTAMPTZ || kind == PLANK_KIND_TIMESTAMP ||
		kind == PLANK_KIND_DATE;
}

/*
 * plank_filter_time_in
 *		A timestamptz, timestamp or date (by kind) read from str with the
 *		type's input function, under TimeZone UTC and DateStyle ISO, YMD:
 *		the settings the capture renders rows with (capture.c
 *		plank_output_settings), so that a time without an offset means UTC
 *		and 01/02/2026 is read as in the snapshots' SQL.  Raises the input
 *		function's errors (22007, 22008) for text it refuses.
 */
static Datum
plank_filter_time_in(PlankFilterKind kind, const char *str)
{
	pg_tz	   *save_tz = session_timezone;
	int			save_style = DateStyle;
	int			save_order = DateOrder;
	Datum		result = (Datum) 0;

	session_timezone = pg_tzset("UTC");
	DateStyle = USE_ISO_DATES;
	DateOrder = DATEORDER_YMD;
	PG_TRY();
	{
		if (kind == PLANK_KIND_DATE)
			result = DirectFunctionCall1(date_in, CStringGetDatum(str));
		else
			result = DirectFunctionCall3(kind == PLANK_KIND_TIMESTAMPTZ ? timestamptz_in : timestamp_in,
										 CStringGetDatum(str), ObjectIdGetDatum(InvalidOid),
										 Int32GetDatum(-1));
	}
	PG_FINALLY();
	{
		session_timezone = save_tz;
		DateStyle = save_style;
		DateOrder = save_order;
	}
	PG_END_TRY();
	return result;
}

/* The same value written back in UTC and ISO style, for the snapshot's SQL. */
static char *
filter_time_out(PlankFilterKind kind, Datum d)
{
	pg_tz	   *save_tz = session_timezone;
	int			save_style = DateStyle;
	int			save_order = DateOrder;
	char	   *result = NULL;

	session_timezone = pg_tzset("UTC");
	DateStyle = USE_ISO_DATES;
	DateOrder = DATEORDER_YMD;
	PG_TRY();
	{
		if (kind == PLANK_KIND_DATE)
			result = DatumGetCString(DirectFunctionCall1(date_out, d));
		else
			result = DatumGetCString(DirectFunctionCall1(kind == PLANK_KIND_TIMESTAMPTZ ?
														 timestamptz_out : timestamp_out, d));
	}
	PG_FINALLY();
	{
		session_timezone = save_tz;
		DateStyle = save_style;
		DateOrder = save_order;
	}
	PG_END_TRY();
	return result;
}

/*
 * Does a LIKE pattern end with its escape character (a backslash with
 * nothing after it)?  textlike() would raise 22025 when matching reaches
 * it; the request is refused instead.
 */
static bool
pattern_ends_in_escape(const char *p, int len)
{
	int			i = 0;

	while (i < len)
	{
		if (p[i] == '\\')
		{
			if (i + 1 >= len)
				return true;
			i++;
		}
		i += pg_mblen(p + i);
	}
	return false;
}

/*
 * plank_filter_resolve
 *		Check a filter against the type of its column (typid, a domain is
 *		taken as its base type) and read its operands as that type does:
 *		the ordering operators (lt, lte, gt, gte) apply to numbers (a number
 *		operand), text (a string), timestamptz, timestamp and date (a string
 *		the type's input reads, as plank_filter_time_in()); like and ilike to
 *		text columns; eq, neq, in and is to every column, and on a timestamp
 *		or date column their string operands are read as times too.  Inside
 *		a transaction (catalog look-ups).  Returns NULL, or the message of a
 *		bad_filter error.  Raises only out-of-memory errors.
 */
char *
plank_filter_resolve(PlankFilter *f, Oid typid)
{
	const char *op = op_names[f->op];
	MemoryContext cxt = CurrentMemoryContext;

	f->kind = type_kind(typid);
	switch (f->op)
	{
		case PLANK_FILTER_LIKE:
		case PLANK_FILTER_ILIKE:
			if (f->kind != PLANK_KIND_TEXT)
				return psprintf("operator \"%s\" does not apply to column \"%s\" of type %s: like and ilike apply to text columns",
									op, f->column, format_type_be(typid));
			if (pattern_ends_in_escape(f->values[0].val.string.val, f->values[0].val.string.len))
				return psprintf("pattern of \"%s\" for column \"%s\" must not end with the escape character \\",
									op, f->column);
			f->pattern = cstring_to_text_with_len(f->values[0].val.string.val,
												  f->values[0].val.string.len);
			return NULL;
		case PLANK_FILTER_LT:
		case PLANK_FILTER_LTE:
		case PLANK_FILTER_GT:
		case PLANK_FILTER_GTE:
			if (f->kind == PLANK_KIND_OTHER)
				return psprintf("operator \"%s\" does not apply to column \"%s\" of type %s: lt, lte, gt and gte apply to numbers, text, timestamps and dates",
									op, f->column, format_type_be(typid));
			if (f->kind == PLANK_KIND_NUMBER && f->values[0].type != jbvNumeric)
				return psprintf("operand of \"%s\" for column \"%s\" must be a number", op, f->column);
			if (f->kind != PLANK_KIND_NUMBER && f->values[0].type != jbvString)
				return psprintf("operand of \"%s\" for column \"%s\" must be a string", op, f->column);
			break;
		default:
			break;
	}
	if (!kind_is_time(f->kind))
		return NULL;

	f->bounds = palloc0(f->nvalues * sizeof(Datum));
	for (int i = 0; i < f->nvalues; i++)
	{
		char	   *str;
		volatile bool ok = false;

		if (f->values[i].type != jbvString)
			continue;
		str = pnstrdup(f->values[i].val.string.val, f->values[i].val.string.len);
		PG_TRY();
		{
			f->bounds[i] = plank_filter_time_in(f->kind, str);
			ok = true;
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(cxt);
			FlushErrorState();
		}
		PG_END_TRY();
		if (!ok)
			return psprintf("operand of \"%s\" for column \"%s\" must be a %s, such as \"2026-11-21T09:00:00+00:00\"; \"%.64s\" is not",
								op, f->column, format_type_be(typid), str);
	}
	return NULL;
}

static void
copy_value(MemoryContext cxt, JsonbValue *v)
{
	if (v->type == jbvString)
	{
		char	   *s = MemoryContextAlloc(cxt, v->val.string.len + 1);

		memcpy(s, v->val.string.val, v->val.string.len);
		s[v->val.string.len] = '\0';
		v->val.string.val = s;
	}
	else if (v->type == jbvNumeric)
	{
		Size		sz = VARSIZE(v->val.numeric);
		Numeric		num = MemoryContextAlloc(cxt, sz);

		memcpy(num, v->val.numeric, sz);
		v->val.numeric = num;
	}
}

/*
 * plank_filter_copy
 *		Deep copy of n filters into cxt (a connection's context), for a
 *		subscription that was accepted.  NULL when n is 0.
 */
PlankFilter *
plank_filter_copy(MemoryContext cxt, const PlankFilter *filters, int n)
{
	PlankFilter *out;

	if (n == 0)
		return NULL;
	out = MemoryContextAlloc(cxt, n * sizeof(PlankFilter));
	for (int i = 0; i < n; i++)
	{
		PlankFilter *f = &out[i];

		*f = filters[i];
		f->column = MemoryContextStrdup(cxt, filters[i].column);
		f->values = MemoryContextAlloc(cxt, f->nvalues * sizeof(JsonbValue));
		memcpy(f->values, filters[i].values, f->nvalues * sizeof(JsonbValue));
		for (int j = 0; j < f->nvalues; j++)
			copy_value(cxt, &f->values[j]);
		if (filters[i].bounds)
		{
			/* timestamps and dates are passed by value */
			f->bounds = MemoryContextAlloc(cxt, f->nvalues * sizeof(Datum));
			memcpy(f->bounds, filters[i].bounds, f->nvalues * sizeof(Datum));
		}
		if (filters[i].pattern)
		{
			Size		sz = VARSIZE_ANY(filters[i].pattern);

			f->pattern = MemoryContextAlloc(cxt, sz);
			memcpy(f->pattern, filters[i].pattern, sz);
		}
	}
	return out;
}

/* plank_filter_free: free filters made by plank_filter_copy(). */
void
plank_filter_free(PlankFilter *filters, int n)
{
	if (filters == NULL)
		return;
	for (int i = 0; i < n; i++)
	{
		PlankFilter *f = &filters[i];

		for (int j = 0; j < f->nvalues; j++)
		{
			if (f->values[j].type == jbvString)
				pfree(f->values[j].val.string.val);
			else if (f->values[j].type == jbvNumeric)
				pfree(f->values[j].val.numeric);
		}
		pfree(f->values);
		if (f->bounds)
			pfree(f->bounds);
		if (f->pattern)
			pfree(f->pattern);
		pfree(f->column);
	}
	pfree(filters);
}

/* A scalar as a jsonb literal: '<json>'::pg_catalog.jsonb */
static void
append_jsonb_literal(StringInfo buf, const JsonbValue *v)
{
	StringInfoData text;
	Jsonb	   *jb = JsonbValueToJsonb((JsonbValue *) v);

	initStringInfo(&text);
	(void) JsonbToCString(&text, &jb->root, VARSIZE(jb));
	appendStringInfo(buf, "%s::pg_catalog.jsonb", quote_literal_cstr(text.data));
	pfree(text.data);
}

static const char *
time_type(PlankFilterKind kind)
{
	return kind == PLANK_KIND_TIMESTAMPTZ ? "pg_catalog.timestamptz" :
		kind == PLANK_KIND_TIMESTAMP ? "pg_catalog.\"timestamp\"" : "pg_catalog.date";
}

static const char *
sql_operator(PlankFilterOp op)
{
	switch (op)
	{
		case PLANK_FILTER_EQ:
			return "OPERATOR(pg_catalog.=)";
		case PLANK_FILTER_NEQ:
			return "OPERATOR(pg_catalog.<>)";
		case PLANK_FILTER_LT:
			return "OPERATOR(pg_catalog.<)";
		case PLANK_FILTER_LTE:
			return "OPERATOR(pg_catalog.<=)";
		case PLANK_FILTER_GT:
			return "OPERATOR(pg_catalog.>)";
		case PLANK_FILTER_GTE:
			return "OPERATOR(pg_catalog.>=)";
		case PLANK_FILTER_LIKE:
			return "OPERATOR(pg_catalog.~~)";
		case PLANK_FILTER_ILIKE:
			return "OPERATOR(pg_catalog.~~*)";
		default:
			return "OPERATOR(pg_catalog.=)";
	}
}

/*
 * One value of an eq, is, in or neq: the column's JSON value compared with
 * a scalar (j: to_jsonb of the column; jv: the same, NULL for the JSON
 * null), or for timestamp and date columns the column compared as a time.
 */
static void
append_compare(StringInfo buf, const PlankFilter *f, const char *col, const char *j,
			   const char *jv, int i, PlankFilterOp op)
{
	const JsonbValue *v = &f->values[i];

	if (v->type == jbvNull)
		appendStringInfo(buf, "%s IS NULL", jv);
	else if (f->bounds != NULL && v->type == jbvString)
		appendStringInfo(buf, "plank_row.%s %s %s::%s", col, sql_operator(op),
						 quote_literal_cstr(filter_time_out(f->kind, f->bounds[i])), time_type(f->kind));
	else
	{
		/* neq is not true for a null value: jv */
		appendStringInfo(buf, "%s %s ", op == PLANK_FILTER_EQ ? j : jv, sql_operator(op));
		append_jsonb_literal(buf, v);
	}
}

/*
 * plank_filter_sql
 *		Append " AND <condition>" to a snapshot's query (protocol.c): the
 *		same filter as subs.c applies to changes, in Plank's own SQL (every
 *		operator and function schema-qualified, every value a quoted
 *		literal), on the filtered column alone (plank_row.<column>): other
 *		columns may hold json that jsonb refuses.  A column's value is
 *		taken as its JSON form (to_jsonb), the JSON null counting as NULL,
 *		as changes carry it; numbers compare as numeric, text under COLLATE
 *		"C", timestamps and dates as their types.  f was resolved
 *		(plank_filter_resolve()).
 */
void
plank_filter_sql(StringInfo buf, const PlankFilter *f)
{
	const char *col = quote_identifier(f->column);
	StringInfoData j;
	StringInfoData jv;

	initStringInfo(&j);
	appendStringInfo(&j, "pg_catalog.to_jsonb(plank_row.%s)", col);
	/* the value, NULL for SQL NULL and for a json column's null */
	initStringInfo(&jv);
	appendStringInfo(&jv, "(CASE WHEN %s OPERATOR(pg_catalog.=) 'null'::pg_catalog.jsonb THEN NULL ELSE %s END)",
					 j.data, j.data);

	appendStringInfoString(buf, " AND (");
	switch (f->op)
	{
		case PLANK_FILTER_EQ:
		case PLANK_FILTER_IS:
			append_compare(buf, f, col, j.data, jv.data, 0, PLANK_FILTER_EQ);
			break;
		case PLANK_FILTER_NEQ:
			append_compare(buf, f, col, j.data, jv.data, 0, PLANK_FILTER_NEQ);
			break;
		case PLANK_FILTER_IN:
			for (int i = 0; i < f->nvalues; i++)
			{
				if (i > 0)
					appendStringInfoString(buf, " OR ");
				append_compare(buf, f, col, j.data, jv.data, i, PLANK_FILTER_EQ);
			}
			break;
		case PLANK_FILTER_LIKE:
		case PLANK_FILTER_ILIKE:
			appendStringInfo(buf, "(%s OPERATOR(pg_catalog.#>>) '{}'::pg_catalog.text[]) %s %s",
							 jv.data, sql_operator(f->op),
							 quote_literal_cstr(text_to_cstring(f->pattern)));
			break;
		default:				/* lt, lte, gt, gte */
			if (f->kind == PLANK_KIND_NUMBER)
			{
				char	   *num = DatumGetCString(DirectFunctionCall1(numeric_out,
																	  NumericGetDatum(f->values[0].val.numeric)));

				appendStringInfo(buf, "(%s OPERATOR(pg_catalog.#>>) '{}'::pg_catalog.text[])::pg_catalog.numeric %s %s::pg_catalog.numeric",
								 jv.data, sql_operator(f->op), quote_literal_cstr(num));
			}
			else if (f->kind == PLANK_KIND_TEXT)
				appendStringInfo(buf, "(%s OPERATOR(pg_catalog.#>>) '{}'::pg_catalog.text[]) COLLATE pg_catalog.\"C\" %s %s",
								 jv.data, sql_operator(f->op),
								 quote_literal_cstr(pnstrdup(f->values[0].val.string.val,
															 f->values[0].val.string.len)));
			else
				append_compare(buf, f, col, j.data, jv.data, 0, f->op);
			break;
	}
	appendStringInfoChar(buf, ')');
	pfree(j.data);
	pfree(jv.data);
}

/*
 * plank_filter_describe
 *		A filter as a line of text for plank.subscriptions' filter column:
 *		"column op value" (eq as "=").
 */
void
plank_filter_describe(StringInfo buf, const PlankFilter *f)
{
	appendStringInfo(buf, "%s %s ", f->column, f->op == PLANK_FILTER_EQ ? "=" : op_names[f->op]);
	if (f->op == PLANK_FILTER_IN)
		appendStringInfoChar(buf, '[');
	for (int i = 0; i < f->nvalues; i++)
	{
		Jsonb	   *jb = JsonbValueToJsonb(&f->values[i]);

		if (i > 0)
			appendStringInfoChar(buf, ',');
		(void) JsonbToCString(buf, &jb->root, VARSIZE(jb));
	}
	if (f->op == PLANK_FILTER_IN)
		appendStringInfoChar(buf, ']');
}

/*
 * plank_filter_like
 *		Does value (text in the database encoding) match the pattern of a
 *		like or ilike filter?  PostgreSQL's own LIKE (textlike) and ILIKE
 *		(texticlike): % and _ wildcards, backslash escape.  LIKE runs under
 *		the "C" collation (matching is by characters whatever a
 *		deterministic collation); ILIKE under the database's default
 *		collation, whose lower() folds case (docs "Pattern Matching").  The
 *		pattern was checked by plank_filter_resolve(); raises only
 *		out-of-memory errors.
 */
static bool
plank_filter_like(const PlankFilter *f, text *value)
{
	if (f->op == PLANK_FILTER_LIKE)
		return DatumGetBool(DirectFunctionCall2Coll(textlike, C_COLLATION_OID,
													PointerGetDatum(value),
													PointerGetDatum(f->pattern)));
	return DatumGetBool(DirectFunctionCall2Coll(texticlike, DEFAULT_COLLATION_OID,
												PointerGetDatum(value),
												PointerGetDatum(f->pattern)));
}

/* ---------- matching a change ---------- */

#define MATCH_NO		0
#define MATCH_YES		1
#define MATCH_UNKNOWN	2		/* the row image lacks a filtered column */

/*
 * A row image member's value as the filters read it, decoded once per change
 * however many subscriptions filter on it (PlankPayload.values).
 */
typedef struct MemberValue
{
	bool		have_str;
	bool		have_num;
	char	   *str;			/* de-escaped string; NULL: not one, or unreadable */
	int			strlen;
	Numeric		num;			/* NULL: not a number numeric reads */
	text	   *txt;			/* str as text, for like and ilike */
	bool		have_time;
	bool		time_ok;
	Datum		time;			/* a string read as its column's time type */
} MemberValue;

static MemberValue *
member_value(const PlankPayload *p, int which, int i)
{
	MemberValue *vals = (MemberValue *) p->values[which];

	if (vals == NULL)
	{
		vals = palloc0(Max(1, p->nrows[which]) * sizeof(MemberValue));
		((PlankPayload *) p)->values[which] = vals;
	}
	return &vals[i];
}

/* The member's string, de-escaped, or NULL (not a string, or no form in the database) */
static const char *
value_string(MemberValue *mv, const PlankJsonMember *m, int *len)
{
	if (!mv->have_str)
	{
		mv->have_str = true;
		if (m->type == JSON_TOKEN_STRING)
			mv->str = plank_json_string(m->value, m->valuelen, &mv->strlen);
	}
	*len = mv->strlen;
	return mv->str;
}

/*
 * The member as a numeric: a JSON number, or a string numeric reads ("NaN",
 * "Infinity", as float columns render them); NULL otherwise, and for a
 * number outside numeric's range.
 */
static Numeric
value_numeric(MemberValue *mv, const PlankJsonMember *m)
{
	if (!mv->have_num)
	{
		MemoryContext cxt = CurrentMemoryContext;
		char	   *text = NULL;
		int			len;

		mv->have_num = true;
		if (m->type == JSON_TOKEN_NUMBER)
			text = pnstrdup(m->value, m->valuelen);
		else if (m->type == JSON_TOKEN_STRING && value_string(mv, m, &len) != NULL)
			text = mv->str;
		if (text != NULL)
		{
			PG_TRY();
			{
				mv->num = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(text),
															  ObjectIdGetDatum(InvalidOid),
															  Int32GetDatum(-1)));
			}
			PG_CATCH();
			{
				MemoryContextSwitchTo(cxt);
				FlushErrorState();
				mv->num = NULL;
			}
			PG_END_TRY();
		}
	}
	return mv->num;
}

/*
 * JSON equality of a member's value and a filter's scalar, with jsonb's
 * rules (1 = 1.0, "1" <> 1).  A value that has no jsonb form (a string
 * holding \u0000, a number outside numeric's range) equals no filter value,
 * since every filter value has one.
 */
static bool
member_equals(MemberValue *mv, const PlankJsonMember *m, const JsonbValue *fv)
{
	switch (m->type)
	{
		case JSON_TOKEN_NULL:
			return fv->type == jbvNull;
		case JSON_TOKEN_TRUE:
			return fv->type == jbvBool && fv->val.boolean;
		case JSON_TOKEN_FALSE:
			return fv->type == jbvBool && !fv->val.boolean;
		case JSON_TOKEN_STRING:
			{
				int			len;
				const char *str;

				if (fv->type != jbvString)
					return false;
				str = value_string(mv, m, &len);
				return str != NULL && len == fv->val.string.len &&
					memcmp(str, fv->val.string.val, len) == 0;
			}
		case JSON_TOKEN_NUMBER:
			{
				Numeric		num;

				if (fv->type != jbvNumeric)
					return false;
				num = value_numeric(mv, m);
				return num != NULL &&
					DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(num),
													  NumericGetDatum(fv->val.numeric))) == 0;
			}
		default:
			return false;
	}
}

/*
 * The instant, timestamp or date a member's string holds, read with the
 * type's input function under TimeZone UTC and DateStyle ISO, YMD (the
 * output settings the capture renders with); false when it holds none.
 */
static bool
member_time(MemberValue *mv, const PlankJsonMember *m, PlankFilterKind kind, Datum *out)
{
	MemoryContext cxt = CurrentMemoryContext;
	const char *str;
	int			len;

	if (!mv->have_time)
	{
		mv->have_time = true;
		if ((str = value_string(mv, m, &len)) != NULL)
		{
			PG_TRY();
			{
				mv->time = plank_filter_time_in(kind, str);
				mv->time_ok = true;
			}
			PG_CATCH();
			{
				MemoryContextSwitchTo(cxt);
				FlushErrorState();
				mv->time_ok = false;
			}
			PG_END_TRY();
		}
	}
	*out = mv->time;
	return mv->time_ok;
}

/* Compare a member's time with a filter's i-th bound: -1, 0, 1; -2: no time. */
static int
member_time_cmp(MemberValue *mv, const PlankJsonMember *m, const PlankFilter *f, int i)
{
	Datum		d;

	if (!member_time(mv, m, f->kind, &d))
		return -2;
	if (f->kind == PLANK_KIND_DATE)
		return (DatumGetDateADT(d) > DatumGetDateADT(f->bounds[i])) -
			(DatumGetDateADT(d) < DatumGetDateADT(f->bounds[i]));
	return (DatumGetInt64(d) > DatumGetInt64(f->bounds[i])) -
		(DatumGetInt64(d) < DatumGetInt64(f->bounds[i]));
}

/*
 * Equality of a member's value with a filter's i-th operand: JSON equality,
 * or on a timestamp or date column, for a string operand, the same time.
 */
static bool
member_equals_operand(MemberValue *mv, const PlankJsonMember *m, const PlankFilter *f, int i)
{
	if (f->bounds != NULL && f->values[i].type == jbvString)
		return m->type == JSON_TOKEN_STRING && member_time_cmp(mv, m, f, i) == 0;
	return member_equals(mv, m, &f->values[i]);
}

/*
 * Does a member's value pass one filter?  docs/PROTOCOL.md "Filters": eq,
 * in and is compare JSON values (null equals null); every other operator
 * is false for a null value, as SQL's comparisons are, and for a value it
 * cannot read as the column's kind.
 */
static bool
member_passes(MemberValue *mv, const PlankJsonMember *m, const PlankFilter *f)
{
	int			cmp;

	switch (f->op)
	{
		case PLANK_FILTER_EQ:
		case PLANK_FILTER_IS:
			return member_equals_operand(mv, m, f, 0);
		case PLANK_FILTER_IN:
			for (int i = 0; i < f->nvalues; i++)
				if (member_equals_operand(mv, m, f, i))
					return true;
			return false;
		case PLANK_FILTER_NEQ:
			if (m->type == JSON_TOKEN_NULL)
				return false;
			if (f->bounds != NULL && f->values[0].type == jbvString)
			{
				cmp = m->type == JSON_TOKEN_STRING ? member_time_cmp(mv, m, f, 0) : 1;
				return cmp != 0 && cmp != -2;
			}
			/* a value with no jsonb form is unknown: neither equal nor not */
			if ((m->type == JSON_TOKEN_STRING && value_string(mv, m, &cmp) == NULL) ||
				(m->type == JSON_TOKEN_NUMBER && value_numeric(mv, m) == NULL))
				return false;
			return !member_equals(mv, m, &f->values[0]);
		case PLANK_FILTER_LIKE:
		case PLANK_FILTER_ILIKE:
			{
				const char *str;
				int			len;

				if ((str = value_string(mv, m, &len)) == NULL)
					return false;
				if (mv->txt == NULL)
					mv->txt = cstring_to_text_with_len(str, len);
				return plank_filter_like(f, mv->txt);
			}
		default:
			break;
	}

	/* lt, lte, gt, gte */
	if (m->type == JSON_TOKEN_NULL)
		return false;
	switch (f->kind)
	{
		case PLANK_KIND_NUMBER:
			{
				Numeric		num = value_numeric(mv, m);

				if (num == NULL)
					return false;
				cmp = DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(num),
														NumericGetDatum(f->values[0].val.numeric)));
				break;
			}
		case PLANK_KIND_TEXT:
			{
				const char *str;
				int			len;

				if ((str = value_string(mv, m, &len)) == NULL)
					return false;
				/* byte order, as varstr_cmp() under COLLATE "C" */
				cmp = memcmp(str, f->values[0].val.string.val, Min(len, f->values[0].val.string.len));
				if (cmp == 0)
					cmp = (len > f->values[0].val.string.len) - (len < f->values[0].val.string.len);
				break;
			}
		case PLANK_KIND_TIMESTAMPTZ:
		case PLANK_KIND_TIMESTAMP:
		case PLANK_KIND_DATE:
			if ((cmp = member_time_cmp(mv, m, f, 0)) == -2)
				return false;
			break;
		default:
			return false;
	}
	switch (f->op)
	{
		case PLANK_FILTER_LT:
			return cmp < 0;
		case PLANK_FILTER_LTE:
			return cmp <= 0;
		case PLANK_FILTER_GT:
			return cmp > 0;
		case PLANK_FILTER_GTE:
			return cmp >= 0;
		default:
			return false;
	}
}

/* The index of the member of a row image named like a filter's column, or -1. */
static int
row_member(const PlankJsonMember *row, int n, const char *name, int len)
{
	for (int i = 0; i < n; i++)
	{
		const PlankJsonMember *m = &row[i];
		int			klen;
		char	   *key;

		if (m->keylen == len + 2 && memcmp(m->key + 1, name, len) == 0 && m->key[0] == '"')
			return i;
		if (memchr(m->key, '\\', m->keylen) == NULL)
			continue;
		key = plank_json_string(m->key, m->keylen, &klen);
		if (key != NULL && klen == len && memcmp(key, name, len) == 0)
			return i;
	}
	return -1;
}

/*
 * plank_filter_row_member
 *		The index in p->rows[which] (PLANK_ROW_*) of the member named name
 *		(len bytes, as a filter's column), or -1 when the image is absent or
 *		has no such member.  Never raises but out of memory (53200).
 */
int
plank_filter_row_member(const PlankPayload *p, int which, const char *name, int len)
{
	if (p->rows[which] == NULL)
		return -1;
	return row_member(p->rows[which], p->nrows[which], name, len);
}

/*
 * Compare a row image (NULL when absent) with the filters.  The decoded
 * values are kept with the payload, in its memory context: they live as long
 * as it does, whatever context the caller runs in.
 */
static int
match_image(const PlankSub *sub, const PlankPayload *p, int which)
{
	int			result = MATCH_YES;
	int			i;
	MemoryContext old;

	if (p->rows[which] == NULL)
		return MATCH_UNKNOWN;
	old = MemoryContextSwitchTo(GetMemoryChunkContext((void *) p));
	for (i = 0; i < sub->nfilters; i++)
	{
		const PlankFilter *f = &sub->filters[i];
		int			m = row_member(p->rows[which], p->nrows[which], f->column, f->column_len);

		if (m < 0)
			result = MATCH_UNKNOWN;
		else if (!member_passes(member_value(p, which, m), &p->rows[which][m], f))
		{
			result = MATCH_NO;
			break;
		}
	}
	MemoryContextSwitchTo(old);
	return result;
}

/*
 * plank_event_payload
 *		An event's change payload as members, parsed from its frame the first
 *		time it is needed, in the current memory context.  Raises ERROR
 *		(22P02) when the frame's payload is not a JSON object, which
 *		parse_change() has already ruled out for every change event.
 */
PlankPayload *
plank_event_payload(PlankEvent *ev)
{
	static const char *const row_names[3] = {"new", "old", "key"};
	PlankPayload *p;
	char	   *error;

	if (ev->parsed != NULL)
		return ev->parsed;
	p = palloc0(sizeof(PlankPayload));
	if (!plank_json_members(ev->frame->data + ev->payload_off, ev->payload_len, PG_UTF8,
							&p->members, &p->nmembers, &error))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("plank cannot read the payload of change " UINT64_FORMAT ": %s",
						ev->seq, error)));
	for (int r = 0; r < 3; r++)
		p->row_member[r] = -1;
	for (int i = 0; i < p->nmembers; i++)
	{
		PlankJsonMember *m = &p->members[i];

		if (plank_json_key_is(m, "truncated"))
			p->truncated = true;
		for (int r = 0; r < 3; r++)
			if (p->row_member[r] < 0 && plank_json_key_is(m, row_names[r]))
			{
				p->row_member[r] = i;
				if (m->type == JSON_TOKEN_OBJECT_START &&
					!plank_json_members(m->value, m->valuelen, PG_UTF8,
										&p->rows[r], &p->nrows[r], &error))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
							 errmsg("plank cannot read the row images of change " UINT64_FORMAT ": %s",
									ev->seq, error)));
			}
	}
	ev->parsed = p;
	return p;
}

/*
 * plank_filter_match
 *		Apply a subscription's filters to a change: docs/PROTOCOL.md rules.
 *		new_only: an UPDATE is judged by its new row alone (row-level
 *		security: the role could not see the old one).  May raise ERROR
 *		(out of memory, an unreadable payload): callers in the dispatch path
 *		catch it (plank_conn_undeliverable()).
 */
bool
plank_filter_match(const PlankSub *sub, PlankEvent *ev, bool new_only)
{
	PlankPayload *p;

	if (sub->nfilters == 0 || ev->op == PLANK_OP_TRUNCATE)
		return true;
	p = plank_event_payload(ev);
	if (p->truncated)
		return match_image(sub, p, PLANK_ROW_KEY) != MATCH_NO ||
			(!new_only && match_image(sub, p, PLANK_ROW_OLD) != MATCH_NO);
	switch (ev->op)
	{
		case PLANK_OP_INSERT:
			return match_image(sub, p, PLANK_ROW_NEW) == MATCH_YES;
		case PLANK_OP_UPDATE:
			return match_image(sub, p, PLANK_ROW_NEW) == MATCH_YES ||
				(!new_only && match_image(sub, p, PLANK_ROW_OLD) == MATCH_YES);
		default:
			return match_image(sub, p, PLANK_ROW_OLD) != MATCH_NO;
	}
}
