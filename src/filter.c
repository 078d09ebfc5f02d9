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

#include "worker.h"

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
			if (n == cap)
			{
				cap = cap ? cap * 2 : 8;
				out = out ? repalloc(out, cap * sizeof(PlankFilter)) : palloc(cap * sizeof(PlankFilter));
			}
			memset(&out[n], 0, sizeof(PlankFilter));
			out[n].column = column;
			out[n].column_len = strlen(column);
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
			if (n == cap)
			{
				cap = cap ? cap * 2 : 8;
				out = out ? repalloc(out, cap * sizeof(PlankFilter)) : palloc(cap * sizeof(PlankFilter));
			}
			memset(&out[n], 0, sizeof(PlankFilter));
			out[n].column = column;
			out[n].column_len = strlen(column);
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
Datum
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
bool
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
