/*
 * The scenario runner: reads the scenario files (.scn, the format is in
 * tests/scenario/README.md) and plays each against the engine through the
 * harness, with a clock of its own: no socket, no sleep, the same result
 * on every run.  Prints one "ok - FILE:LINE: ..." or "not ok - ..." line
 * per expectation and exits non-zero when any failed.
 *
 * Usage: scenario FILE...
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ldns/ldns.h>

#include "harness.h"
#include "stubborn/cache.h"
#include "stubborn/metrics.h"
#include "stubborn/route.h"
#include "stubborn/upstream.h"

#define MAX_WORDS 48
#define MAX_ARGS 256

struct run {
	const char *file;
	unsigned line;
	struct harness *h;
	char *argv[MAX_ARGS];
	int argc;
	uint64_t seed;
	bool probes;           /* health probes count for "expect sent" */
	uint64_t last_sent_at; /* of the last query "expect sent" matched */
	size_t next_sent;
	unsigned passed, failed;
};

static int ede_of(const uint8_t *m, size_t len);
static void ok(struct run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void not_ok(struct run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
ok(struct run *r, const char *fmt, ...)
{
	va_list ap;

	printf("ok - %s:%u: ", r->file, r->line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	r->passed++;
}

static void
not_ok(struct run *r, const char *fmt, ...)
{
	va_list ap;

	printf("not ok - %s:%u: ", r->file, r->line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	r->failed++;
}

/* Splits a line into words; "quoted text" is one word. */
static int
split(char *s, char **w)
{
	int n = 0;

	while (*s != '\0' && n < MAX_WORDS) {
		while (isspace((unsigned char)*s))
			s++;
		if (*s == '\0' || *s == '#')
			break;
		if (*s == '"') {
			w[n++] = ++s;
			while (*s != '\0' && *s != '"')
				s++;
		} else {
			w[n++] = s;
			while (*s != '\0' && !isspace((unsigned char)*s))
				s++;
		}
		if (*s != '\0')
			*s++ = '\0';
	}
	return n;
}

/* "1500", "1500ms", "1.5s", "2m": milliseconds. */
static int
parse_time(const char *s, uint64_t *ms)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || v < 0)
		return -EINVAL;
	if (*end == '\0' || strcmp(end, "ms") == 0)
		*ms = (uint64_t)(v + 0.5);
	else if (strcmp(end, "s") == 0)
		*ms = (uint64_t)(v * 1000 + 0.5);
	else if (strcmp(end, "m") == 0)
		*ms = (uint64_t)(v * 60000 + 0.5);
	else
		return -EINVAL;
	return 0;
}

static int
parse_type(const char *s, uint16_t *t)
{
	ldns_rr_type rt;

	if (strcmp(s, "*") == 0) {
		*t = 0;
		return 0;
	}
	rt = ldns_get_rr_type_by_name(s);
	if (rt == 0)
		return -EINVAL;
	*t = (uint16_t)rt;
	return 0;
}

/* "192.0.2.1" or "192.0.2.1:53" as the upstream's text, or "*". */
static int
server_text(const char *s, char *out, size_t cap)
{
	struct config_upstream u;
	char why[128];

	if (strcmp(s, "*") == 0) {
		snprintf(out, cap, "*");
		return 0;
	}
	if (config_parse_upstream(s, &u, why, sizeof(why)) != 0)
		return -EINVAL;
	snprintf(out, cap, "%s", u.text);
	return 0;
}

static bool
start(struct run *r)
{
	char err[512];

	if (r->h != NULL)
		return true;
	r->h = h_new(r->argc, r->argv, r->seed, err, sizeof(err));
	if (r->h == NULL) {
		not_ok(r, "the configuration loads: %s", err);
		return false;
	}
	return true;
}

/* Optional "at T" / "between A B" in w[i..]; true when the time fits. */
static bool
time_fits(char **w, int n, uint64_t t, char *why, size_t cap)
{
	uint64_t a, b;

	for (int i = 0; i < n; i++) {
		if (strcmp(w[i], "at") == 0 && i + 1 < n &&
		    parse_time(w[i + 1], &a) == 0 && t != a) {
			snprintf(why, cap, "at %llu ms, not %llu",
			    (unsigned long long)t, (unsigned long long)a);
			return false;
		}
		if (strcmp(w[i], "between") == 0 && i + 2 < n &&
		    parse_time(w[i + 1], &a) == 0 &&
		    parse_time(w[i + 2], &b) == 0 && (t < a || t > b)) {
			snprintf(why, cap, "at %llu ms, not in %llu..%llu",
			    (unsigned long long)t, (unsigned long long)a,
			    (unsigned long long)b);
			return false;
		}
	}
	return true;
}

static void
cmd_upstream(struct run *r, char **w, int n)
{
	struct h_rule rule;
	static const struct {
		const char *word;
		enum h_action a;
	} actions[] = {{"answer", H_ANSWER}, {"nxdomain", H_NXDOMAIN},
	    {"nodata", H_NODATA}, {"servfail", H_SERVFAIL},
	    {"refused", H_REFUSED}, {"formerr", H_FORMERR},
	    {"truncate", H_TRUNCATE}, {"drop", H_DROP},
	    {"unreachable", H_UNREACHABLE}, {"wrong-id", H_WRONG_ID},
	    {"synth", H_SYNTH}};
	int i;
	bool found = false;

	memset(&rule, 0, sizeof(rule));
	if (n < 5 || server_text(w[1], rule.server, sizeof(rule.server)) < 0 ||
	    parse_type(w[3], &rule.type) < 0) {
		not_ok(r, "bad upstream line");
		return;
	}
	if (strcmp(w[2], "*") != 0) {
		int len = wire_name_from_text(w[2], rule.name);
		if (len < 0) {
			not_ok(r, "bad name %s", w[2]);
			return;
		}
		rule.nlen = (size_t)len;
	}
	for (size_t k = 0; k < sizeof(actions) / sizeof(actions[0]); k++)
		if (strcmp(w[4], actions[k].word) == 0) {
			rule.action = actions[k].a;
			found = true;
		}
	if (!found) {
		not_ok(r, "unknown action %s", w[4]);
		return;
	}
	for (i = 5; i < n; i++) {
		uint64_t ms;
		if (strcmp(w[i], "delay") == 0 && i + 1 < n &&
		    parse_time(w[i + 1], &ms) == 0) {
			rule.delay_ms = (uint32_t)ms;
			i++;
		} else if (strcmp(w[i], "tcp-only") == 0) {
			rule.tcp_only = true;
		} else if (strcmp(w[i], "ad") == 0) {
			rule.ad = true;
		} else if (rule.nrecords < H_MAX_RECORDS) {
			snprintf(rule.records[rule.nrecords++],
			    sizeof(rule.records[0]), "%s", w[i]);
		}
	}
	h_add_rule(r->h, &rule);
}

static void
cmd_query(struct run *r, char **w, int n)
{
	uint16_t type, id = 0;
	unsigned flags = 0;
	const char *from = NULL;

	if (n < 4 || parse_type(w[3], &type) < 0 || type == 0) {
		not_ok(r, "bad query line");
		return;
	}
	for (int i = 4; i < n; i++) {
		if (strcmp(w[i], "from") == 0 && i + 1 < n)
			from = w[++i];
		else if (strcmp(w[i], "do") == 0)
			flags |= H_Q_DO;
		else if (strcmp(w[i], "cd") == 0)
			flags |= H_Q_CD;
		else if (strcmp(w[i], "ad") == 0)
			flags |= H_Q_AD;
		else if (strcmp(w[i], "tcp") == 0)
			flags |= H_Q_TCP;
		else if (strcmp(w[i], "noedns") == 0)
			flags |= H_Q_NOEDNS;
		else if (strcmp(w[i], "id") == 0 && i + 1 < n)
			id = (uint16_t)strtoul(w[++i], NULL, 0);
	}
	if (h_query(r->h, w[1], from, w[2], type, flags, id) < 0)
		not_ok(r, "query %s %s could not be made", w[2], w[3]);
	/* What is due now (answers without delay) happens now. */
	h_advance_to(r->h, h_now(r->h));
}

/*
 * load LABEL N RATE NAMEFMT TYPE: N queries, RATE a second, the i-th for
 * NAMEFMT with %d replaced by i (1..N) from client LABEL-i; time passes
 * as they go out.
 */
static void
cmd_load(struct run *r, char **w, int n)
{
	unsigned long count, rate;
	uint16_t type;
	uint64_t t0;
	char name[300], label[32];
	const char *pct;

	if (n < 6 || (count = strtoul(w[2], NULL, 10)) == 0 ||
	    (rate = strtoul(w[3], NULL, 10)) == 0 ||
	    (pct = strstr(w[4], "%d")) == NULL || parse_type(w[5], &type) < 0 ||
	    type == 0 || count > 100000) {
		not_ok(r, "bad load line");
		return;
	}
	t0 = h_now(r->h);
	for (unsigned long i = 1; i <= count; i++) {
		h_advance_to(r->h, t0 + (i - 1) * 1000 / rate);
		snprintf(name, sizeof(name), "%.*s%lu%s", (int)(pct - w[4]),
		    w[4], i, pct + 2);
		snprintf(label, sizeof(label), "%s-%lu", w[1], i);
		if (h_query(r->h, label, NULL, name, type, 0, 0) < 0) {
			not_ok(r, "load query %s could not be made", name);
			return;
		}
		h_advance_to(r->h, h_now(r->h));
	}
}

/* The next upstream query an expectation has not looked at yet. */
static struct h_sent *
next_sent(struct run *r)
{
	struct h_sent *s;

	while ((s = h_sent_at(r->h, r->next_sent)) != NULL) {
		r->next_sent++;
		if (s->probe && !r->probes)
			continue;
		return s;
	}
	return NULL;
}

static void
expect_sent(struct run *r, char **w, int n)
{
	char server[400], why[128] = "", qn[WIRE_NAME_MAX * 4 + 8];
	uint8_t name[WIRE_NAME_MAX];
	uint16_t type;
	struct h_sent *s;
	struct wire_question q;
	int len;
	bool tcp = false;

	if (n < 5 || server_text(w[2], server, sizeof(server)) < 0 ||
	    parse_type(w[4], &type) < 0 ||
	    (len = wire_name_from_text(w[3], name)) < 0) {
		not_ok(r, "bad expect sent line");
		return;
	}
	for (int i = 5; i < n; i++)
		tcp = tcp || strcmp(w[i], "tcp") == 0;
	s = next_sent(r);
	if (s == NULL) {
		not_ok(r, "sent %s %s %s: nothing more was sent", w[2], w[3],
		    w[4]);
		return;
	}
	if (wire_read_question(s->msg, s->len, &q) < 0) {
		not_ok(r, "sent: an unparsable query");
		return;
	}
	wire_name_text(s->msg + q.name_off, q.name_len, qn, sizeof(qn));
	if ((strcmp(server, "*") != 0 && strcmp(server, s->server) != 0) ||
	    !wire_name_equal(
		s->msg + q.name_off, q.name_len, name, (size_t)len) ||
	    (type != 0 && type != q.qtype) || tcp != s->tcp) {
		not_ok(r, "sent %s %s %s%s: got %s %s type %u%s at %llu ms",
		    w[2], w[3], w[4], tcp ? " tcp" : "", s->server, qn,
		    (unsigned)q.qtype, s->tcp ? " tcp" : "",
		    (unsigned long long)s->at);
		return;
	}
	if (!time_fits(w + 5, n - 5, s->at, why, sizeof(why))) {
		not_ok(r, "sent %s %s %s: %s", w[2], w[3], w[4], why);
		return;
	}
	/* "gap A B": the time since the query matched before. */
	for (int i = 5; i + 2 < n; i++) {
		uint64_t a, b, gap = s->at - r->last_sent_at;
		if (strcmp(w[i], "gap") == 0 && parse_time(w[i + 1], &a) == 0 &&
		    parse_time(w[i + 2], &b) == 0 && (gap < a || gap > b)) {
			not_ok(r,
			    "sent %s %s %s: %llu ms after the last one, "
			    "not %llu..%llu",
			    w[2], w[3], w[4], (unsigned long long)gap,
			    (unsigned long long)a, (unsigned long long)b);
			return;
		}
	}
	r->last_sent_at = s->at;
	s->consumed = true;
	ok(r, "sent %s %s %s at %llu ms", s->server, qn, w[4],
	    (unsigned long long)s->at);
}

/*
 * expect share SERVER LO HI: of the queries sent and not yet looked at
 * (probes aside), the percent that went to SERVER lies in LO..HI.
 * "expect skip-sent" then marks them all looked at.
 */
static void
expect_share(struct run *r, char **w, int n)
{
	char server[400];
	unsigned long all = 0, to = 0;
	double lo, hi, pct;

	if (n < 5 || server_text(w[2], server, sizeof(server)) < 0) {
		not_ok(r, "bad expect share line");
		return;
	}
	lo = strtod(w[3], NULL);
	hi = strtod(w[4], NULL);
	for (size_t i = r->next_sent; i < h_sent_count(r->h); i++) {
		struct h_sent *s = h_sent_at(r->h, i);
		if (s->probe && !r->probes)
			continue;
		all++;
		to += strcmp(s->server, server) == 0;
	}
	pct = all ? 100.0 * (double)to / (double)all : 0;
	if (all > 0 && pct >= lo && pct <= hi)
		ok(r, "%s got %.1f%% of %lu queries", server, pct, all);
	else
		not_ok(r, "%s got %.1f%% of %lu queries, not %g..%g%%", server,
		    pct, all, lo, hi);
}

static void
skip_sent(struct run *r)
{
	r->next_sent = h_sent_count(r->h);
}

/*
 * expect replies LABEL RCODE [ede N] [count N]: every client LABEL-i (of
 * a load) got one reply with that rcode (and EDE), at least count of them;
 * consumes them.
 */
static void
expect_replies(struct run *r, char **w, int n)
{
	size_t plen, got = 0, bad = 0, want = 0;
	int ede = -2;
	char first_bad[160] = "";

	if (n < 4) {
		not_ok(r, "bad expect replies line");
		return;
	}
	for (int i = 4; i + 1 < n; i++) {
		if (strcmp(w[i], "ede") == 0)
			ede = atoi(w[i + 1]);
		else if (strcmp(w[i], "count") == 0)
			want = strtoul(w[i + 1], NULL, 10);
	}
	plen = strlen(w[2]);
	for (size_t i = 0; i < h_reply_count(r->h); i++) {
		struct h_reply *rep = h_reply_at(r->h, i);
		ldns_pkt *p = NULL;
		const ldns_lookup_table *rc;
		bool good;
		if (rep->consumed || strncmp(rep->client, w[2], plen) != 0 ||
		    rep->client[plen] != '-')
			continue;
		rep->consumed = true;
		got++;
		good = rep->msg != NULL &&
		    ldns_wire2pkt(&p, rep->msg, rep->len) == LDNS_STATUS_OK &&
		    (rc = ldns_lookup_by_id(
			 ldns_rcodes, ldns_pkt_get_rcode(p))) != NULL &&
		    strcasecmp(rc->name, w[3]) == 0 &&
		    (ede == -2 || ede_of(rep->msg, rep->len) == ede);
		if (!good && bad++ == 0)
			snprintf(first_bad, sizeof(first_bad), "%s at %llu ms",
			    rep->client, (unsigned long long)rep->at);
		ldns_pkt_free(p);
	}
	if (bad == 0 && got >= want && got > 0)
		ok(r, "%zu replies to %s, all %s", got, w[2], w[3]);
	else
		not_ok(r, "replies to %s %s: %zu of %zu differ (first: %s)%s",
		    w[2], w[3], bad, got, first_bad,
		    got < want ? ", too few" : "");
}

static void
expect_nothing_sent(struct run *r)
{
	struct h_sent *s = next_sent(r);
	struct wire_question q;
	char qn[WIRE_NAME_MAX * 4 + 8] = "?";

	if (s == NULL) {
		ok(r, "nothing else sent upstream");
		return;
	}
	if (wire_read_question(s->msg, s->len, &q) == 0)
		wire_name_text(s->msg + q.name_off, q.name_len, qn, sizeof(qn));
	not_ok(r, "nothing else sent upstream: %s %s type %u at %llu ms",
	    s->server, qn, (unsigned)q.qtype, (unsigned long long)s->at);
}

static struct h_reply *
next_reply(struct run *r, const char *client)
{
	for (size_t i = 0; i < h_reply_count(r->h); i++) {
		struct h_reply *rep = h_reply_at(r->h, i);
		if (!rep->consumed && strcmp(rep->client, client) == 0)
			return rep;
	}
	return NULL;
}

/* The EDE code of the reply's OPT, or -1. */
static int
ede_of(const uint8_t *m, size_t len)
{
	struct wire_iter it;
	struct wire_rr rr;

	if (wire_iter_init(&it, m, len) < 0)
		return -1;
	while (wire_iter_next(&it, &rr) == 1) {
		size_t o = rr.rdata_off, end = rr.rdata_off + rr.rdlen;
		if (rr.type != WIRE_TYPE_OPT)
			continue;
		while (o + 4 <= end) {
			uint16_t code = wire_u16(m + o),
				 olen = wire_u16(m + o + 2);
			if (code == WIRE_OPT_EDE && olen >= 2 &&
			    o + 4 + olen <= end)
				return wire_u16(m + o + 4);
			o += 4u + olen;
		}
	}
	return -1;
}

static const char *const src_names[] = {"cache", "upstream", "stale", "error"};

/* Every answer-section RR in canonical text, lower-cased. */
static bool
answer_has(ldns_pkt *p, const char *want)
{
	ldns_rr *rr = NULL;
	char *w, *g;
	bool found = false;

	if (ldns_rr_new_frm_str(&rr, want, 0, NULL, NULL) != LDNS_STATUS_OK)
		return false;
	w = ldns_rr2str(rr);
	for (size_t i = 0; w && i < ldns_rr_list_rr_count(ldns_pkt_answer(p));
	     i++) {
		g = ldns_rr2str(ldns_rr_list_rr(ldns_pkt_answer(p), i));
		if (g != NULL && strcasecmp(g, w) == 0)
			found = true;
		free(g);
	}
	free(w);
	ldns_rr_free(rr);
	return found;
}

static void
expect_reply(struct run *r, char **w, int n)
{
	struct h_reply *rep = next_reply(r, w[2]);
	char why[256] = "";
	ldns_pkt *p = NULL;
	int rcode, ede;

	if (n < 4) {
		not_ok(r, "bad expect reply line");
		return;
	}
	if (rep == NULL) {
		not_ok(r, "reply to %s %s: none yet", w[2], w[3]);
		return;
	}
	rep->consumed = true;
	if (rep->msg == NULL) {
		not_ok(r, "reply to %s %s: told no reply comes", w[2], w[3]);
		return;
	}
	if (ldns_wire2pkt(&p, rep->msg, rep->len) != LDNS_STATUS_OK) {
		not_ok(r, "reply to %s: does not parse", w[2]);
		return;
	}
	rcode = ldns_pkt_get_rcode(p);
	if (strcasecmp(ldns_lookup_by_id(ldns_rcodes, rcode)
		    ? ldns_lookup_by_id(ldns_rcodes, rcode)->name
		    : "?",
		w[3]) != 0)
		snprintf(why, sizeof(why), "rcode %s",
		    ldns_lookup_by_id(ldns_rcodes, rcode)
			? ldns_lookup_by_id(ldns_rcodes, rcode)->name
			: "?");
	ede = ede_of(rep->msg, rep->len);
	for (int i = 4; i < n && why[0] == '\0'; i++) {
		if (strcmp(w[i], "ede") == 0 && i + 1 < n) {
			if (ede != atoi(w[++i]))
				snprintf(why, sizeof(why), "EDE %d", ede);
		} else if (strcmp(w[i], "noede") == 0) {
			if (ede >= 0)
				snprintf(why, sizeof(why), "EDE %d", ede);
		} else if (strcmp(w[i], "ttl") == 0 && i + 1 < n) {
			uint32_t t = (uint32_t)strtoul(w[++i], NULL, 10);
			ldns_rr_list *all = ldns_pkt_all_noquestion(p);
			for (size_t k = 0; k < ldns_rr_list_rr_count(all);
			     k++) {
				ldns_rr *rr = ldns_rr_list_rr(all, k);
				if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_OPT &&
				    ldns_rr_ttl(rr) != t)
					snprintf(why, sizeof(why),
					    "a record with TTL %u",
					    ldns_rr_ttl(rr));
			}
			ldns_rr_list_deep_free(all);
		} else if (strcmp(w[i], "ad") == 0) {
			if (!ldns_pkt_ad(p))
				snprintf(why, sizeof(why), "AD clear");
		} else if (strcmp(w[i], "noad") == 0) {
			if (ldns_pkt_ad(p))
				snprintf(why, sizeof(why), "AD set");
		} else if (strcmp(w[i], "tc") == 0) {
			if (!ldns_pkt_tc(p))
				snprintf(why, sizeof(why), "TC clear");
		} else if (strcmp(w[i], "records") == 0 && i + 1 < n) {
			size_t k = strtoul(w[++i], NULL, 10);
			if (ldns_pkt_ancount(p) != k)
				snprintf(why, sizeof(why), "%u answer records",
				    ldns_pkt_ancount(p));
		} else if (strcmp(w[i], "source") == 0 && i + 1 < n) {
			if ((unsigned)rep->src >= 4 ||
			    strcmp(src_names[rep->src], w[++i]) != 0)
				snprintf(why, sizeof(why), "source %s",
				    (unsigned)rep->src < 4 ? src_names[rep->src]
							   : "?");
		} else if (strcmp(w[i], "answer") == 0) {
			while (i + 1 < n && strchr(w[i + 1], ' ') != NULL) {
				if (!answer_has(p, w[++i]))
					snprintf(why, sizeof(why),
					    "no record \"%s\"", w[i]);
			}
		} else if (strcmp(w[i], "at") == 0 ||
		    strcmp(w[i], "between") == 0) {
			int k = strcmp(w[i], "at") == 0 ? 2 : 3;
			if (!time_fits(w + i, n - i < k ? n - i : k, rep->at,
				why, sizeof(why)))
				break;
			i += k - 1;
		}
	}
	if (why[0] != '\0') {
		char *text = ldns_pkt2str(p);
		not_ok(r, "reply to %s %s: %s (at %llu ms)", w[2], w[3], why,
		    (unsigned long long)rep->at);
		if (text != NULL)
			printf("# %s\n", text);
		free(text);
	} else {
		ok(r, "reply to %s %s at %llu ms", w[2], w[3],
		    (unsigned long long)rep->at);
	}
	ldns_pkt_free(p);
}

static void
expect_no_reply(struct run *r, char **w, int n)
{
	struct h_reply *rep = n > 2 ? next_reply(r, w[2]) : NULL;

	if (rep == NULL)
		ok(r, "no reply to %s yet", n > 2 ? w[2] : "?");
	else
		not_ok(r, "no reply to %s yet: one came at %llu ms", w[2],
		    (unsigned long long)rep->at);
}

static void
expect_dropped(struct run *r, char **w, int n)
{
	struct h_reply *rep = n > 2 ? next_reply(r, w[2]) : NULL;

	if (rep != NULL && rep->msg == NULL) {
		rep->consumed = true;
		ok(r, "%s told no reply comes", w[2]);
	} else {
		not_ok(r, "%s told no reply comes: %s", n > 2 ? w[2] : "?",
		    rep ? "it got one" : "nothing yet");
	}
}

static void
expect_circuit(struct run *r, char **w, int n)
{
	struct route *rt = h_route(r->h);
	char server[400];

	if (n < 4 || server_text(w[2], server, sizeof(server)) < 0) {
		not_ok(r, "bad expect circuit line");
		return;
	}
	for (size_t z = 0; z < rt->nzones; z++) {
		struct upstream_pool *pool = rt->zones[z].pool;
		for (unsigned i = 0; i < upstream_count(pool); i++) {
			struct upstream_stats st;
			if (strcmp(upstream_addr(pool, i)->text, server) != 0)
				continue;
			upstream_get_stats(pool, i, &st);
			if (strcmp(upstream_circuit_name(st.circuit), w[3]) ==
			    0)
				ok(r, "circuit of %s %s", server, w[3]);
			else
				not_ok(r, "circuit of %s %s: %s", server, w[3],
				    upstream_circuit_name(st.circuit));
			return;
		}
	}
	not_ok(r, "circuit of %s: no such server", server);
}

static void
expect_cache(struct run *r, char **w, int n)
{
	static const char *const states[] = {
	    "miss", "fresh", "stale", "failed"};
	uint8_t name[WIRE_NAME_MAX], key[CACHE_KEY_MAX];
	uint16_t type;
	int len;
	size_t klen;
	enum cache_result res;
	struct cache_hit hit;
	unsigned flags = 0;

	if (n < 5 || (len = wire_name_from_text(w[2], name)) < 0 ||
	    parse_type(w[3], &type) < 0) {
		not_ok(r, "bad expect cache line");
		return;
	}
	for (int i = 5; i < n; i++)
		if (strcmp(w[i], "do") == 0)
			flags |= CACHE_KEY_DO;
	klen =
	    cache_make_key(key, name, (size_t)len, type, WIRE_CLASS_IN, flags);
	res = cache_lookup(h_cache(r->h), key, klen, (1ull << 40) + h_now(r->h),
	    30, NULL, 0, NULL, &hit);
	if (strcmp(states[res], w[4]) == 0)
		ok(r, "cache %s %s %s", w[2], w[3], w[4]);
	else
		not_ok(r, "cache %s %s %s: %s", w[2], w[3], w[4], states[res]);
}

static void
expect_counter(struct run *r, char **w, int n)
{
	int c = n > 3 ? metrics_counter_by_name(w[2]) : -1;
	uint64_t v, want;
	const char *op = "==", *num;

	if (c < 0) {
		not_ok(r, "no counter %s", n > 2 ? w[2] : "?");
		return;
	}
	num = w[3];
	if ((strcmp(w[3], ">=") == 0 || strcmp(w[3], "<=") == 0) && n > 4) {
		op = w[3];
		num = w[4];
	}
	want = strtoull(num, NULL, 10);
	v = metrics_sum(h_metrics(r->h), (enum metrics_counter)c);
	if ((strcmp(op, "==") == 0 && v == want) ||
	    (strcmp(op, ">=") == 0 && v >= want) ||
	    (strcmp(op, "<=") == 0 && v <= want))
		ok(r, "%s %s %llu", w[2], op, (unsigned long long)want);
	else
		not_ok(r, "%s %s %llu: %llu", w[2], op,
		    (unsigned long long)want, (unsigned long long)v);
}

static void
step(struct run *r, char **w, int n)
{
	uint64_t ms;

	if (strcmp(w[0], "config") == 0) {
		if (r->h != NULL || n < 2 || r->argc + n > MAX_ARGS - 1) {
			not_ok(r, "config lines come before the first step");
			return;
		}
		r->argv[r->argc] = malloc(strlen(w[1]) + 3);
		sprintf(r->argv[r->argc++], "--%s", w[1]);
		if (n > 2) {
			/* The rest is one value: "forward-zone = a b c". */
			size_t need = 1;
			char *v;
			for (int i = 2; i < n; i++)
				need += strlen(w[i]) + 1;
			v = calloc(1, need);
			for (int i = 2; i < n; i++) {
				strcat(v, w[i]);
				if (i + 1 < n)
					strcat(v, " ");
			}
			r->argv[r->argc++] = v;
		}
		return;
	}
	if (strcmp(w[0], "seed") == 0 && n > 1) {
		r->seed = strtoull(w[1], NULL, 10);
		return;
	}
	if (strcmp(w[0], "probes") == 0 && n > 1) {
		r->probes = strcmp(w[1], "expect") == 0;
		return;
	}
	if (!start(r))
		return;
	if (strcmp(w[0], "at") == 0 && n > 1 && parse_time(w[1], &ms) == 0) {
		if (ms < h_now(r->h))
			not_ok(r, "time runs forward only (now %llu ms)",
			    (unsigned long long)h_now(r->h));
		h_advance_to(r->h, ms);
	} else if (strcmp(w[0], "pass") == 0 && n > 1 &&
	    parse_time(w[1], &ms) == 0) {
		h_advance_to(r->h, h_now(r->h) + ms);
	} else if (strcmp(w[0], "upstream") == 0) {
		cmd_upstream(r, w, n);
	} else if (strcmp(w[0], "upstream-clear") == 0) {
		h_clear_rules(r->h);
	} else if (strcmp(w[0], "query") == 0) {
		cmd_query(r, w, n);
	} else if (strcmp(w[0], "load") == 0) {
		cmd_load(r, w, n);
	} else if (strcmp(w[0], "expect") == 0 && n > 1) {
		if (strcmp(w[1], "sent") == 0)
			expect_sent(r, w, n);
		else if (strcmp(w[1], "nothing-sent") == 0)
			expect_nothing_sent(r);
		else if (strcmp(w[1], "reply") == 0)
			expect_reply(r, w, n);
		else if (strcmp(w[1], "no-reply") == 0)
			expect_no_reply(r, w, n);
		else if (strcmp(w[1], "dropped") == 0)
			expect_dropped(r, w, n);
		else if (strcmp(w[1], "circuit") == 0)
			expect_circuit(r, w, n);
		else if (strcmp(w[1], "cache") == 0)
			expect_cache(r, w, n);
		else if (strcmp(w[1], "counter") == 0)
			expect_counter(r, w, n);
		else if (strcmp(w[1], "share") == 0)
			expect_share(r, w, n);
		else if (strcmp(w[1], "skip-sent") == 0)
			skip_sent(r);
		else if (strcmp(w[1], "replies") == 0)
			expect_replies(r, w, n);
		else
			not_ok(r, "unknown expectation %s", w[1]);
	} else {
		not_ok(r, "unknown step %s", w[0]);
	}
}

static int
run_file(const char *path, unsigned *passed, unsigned *failed)
{
	struct run r;
	char line[4096], *w[MAX_WORDS];
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		printf("not ok - %s: cannot open: %s\n", path, strerror(errno));
		(*failed)++;
		return -1;
	}
	memset(&r, 0, sizeof(r));
	r.file = path;
	r.seed = 1;
	r.argv[r.argc++] = strdup("scenario");
	/* Nothing of the host's leaks in: a scenario names its upstreams. */
	r.argv[r.argc++] = strdup("--resolv-conf");
	r.argv[r.argc++] = strdup("/dev/null");
	r.argv[r.argc++] = strdup("--workers");
	r.argv[r.argc++] = strdup("1");
	r.argv[r.argc++] = strdup("--log-level");
	r.argv[r.argc++] = strdup("error");
	while (fgets(line, sizeof(line), f) != NULL) {
		int n;
		r.line++;
		n = split(line, w);
		if (n > 0)
			step(&r, w, n);
	}
	fclose(f);
	if (r.h == NULL && r.failed == 0)
		start(&r);
	h_free(r.h);
	for (int i = 0; i < r.argc; i++)
		free(r.argv[i]);
	printf("# %s: %u passed, %u failed\n", path, r.passed, r.failed);
	*passed += r.passed;
	*failed += r.failed;
	return 0;
}

int
main(int argc, char **argv)
{
	unsigned passed = 0, failed = 0;

	for (int i = 1; i < argc; i++)
		run_file(argv[i], &passed, &failed);
	printf("scenarios: %d files, %u passed, %u failed\n", argc - 1, passed,
	    failed);
	return failed == 0 && passed > 0 ? 0 : 1;
}
