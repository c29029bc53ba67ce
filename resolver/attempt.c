#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "stubborn/attempt.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/msg.h"
#include "stubborn/rng.h"
#include "stubborn/route.h"
#include "stubborn/timer.h"
#include "stubborn/upstream.h"
#include "stubborn/wire.h"
#include "stubborn/xport.h"

#define ATTEMPT_SPARE_MAX 256
#define ATTEMPT_QBYTES (WIRE_HDR_LEN + WIRE_NAME_MAX + 4 + 11)

/*
 * One query to one server.  An attempt outlives its race when another one
 * answered first (race NULL: orphaned) and probes have none: their answer
 * or timeout still tells the pool how the server is doing.
 */
struct attempt {
	struct attempt_ctx *ctx;
	struct race *race;           /* NULL when orphaned or a probe */
	struct attempt *rnext;       /* the race's attempts */
	struct attempt *prev, *next; /* ctx->live */
	struct route *route;         /* a reference: pool lives on */
	struct upstream_pool *pool;
	unsigned up;
	bool probe;
	bool exact_case; /* 0x20: the reply must echo qname exactly */
	bool edns;       /* sends an OPT */
	bool tcp;
	bool in_xport; /* req handed to the transport, not finished */
	uint8_t qname[WIRE_NAME_MAX];
	size_t qname_len;
	uint16_t qtype, qclass, qflags;
	bool do_bit;
	uint32_t timeout_ms;
	uint64_t sent_ms;
	struct timer deadline; /* armed by send, stopped by attempt_free */
	struct xport_req req;
};

#define ATTEMPT_OF(r)                                                          \
	((struct attempt *)((char *)(r)-offsetof(struct attempt, req)))
#define RACE_OF_HEDGE(t)                                                       \
	((struct race *)((char *)(t)-offsetof(struct race, hedge)))
#define ATTEMPT_OF_DEADLINE(t)                                                 \
	((struct attempt *)((char *)(t)-offsetof(struct attempt, deadline)))

static struct attempt *attempt_new(struct attempt_ctx *c, struct route *route,
    struct upstream_pool *pool, unsigned up, const uint8_t *qname,
    size_t qname_len, uint16_t qtype, uint16_t qclass, uint16_t qflags,
    bool do_bit, uint32_t timeout_ms);
static void attempt_free(struct attempt *a);
static int attempt_send(struct attempt *a, uint64_t now);
static void attempt_fail(
    struct attempt *a, enum attempt_fail why, uint64_t now);
static void arm(struct attempt_ctx *c, struct timer *t, uint64_t at);
static bool reply_matches(struct attempt *a, const uint8_t *m, size_t len);
static bool req_done_cb(
    struct xport_req *req, uint8_t *msg, size_t len, int err, uint64_t now);
static void handle_reply(
    struct attempt *a, uint8_t *m, size_t len, uint64_t now);
static void deadline_cb(struct timer *t, uint64_t now);
static void hedge_cb(struct timer *t, uint64_t now);
static int launch(struct race *r, bool retry, uint64_t now);
static enum upstream_outcome outcome_of(enum attempt_fail why);
static void randomize_case(uint8_t *name, size_t len);

void
attempt_ctx_init(struct attempt_ctx *c, struct timer_heap *timers,
    const struct xport *xport, struct metrics_worker *met)
{
	memset(c, 0, sizeof(*c));
	c->timers = timers;
	c->xport = *xport;
	c->met = met;
}

void
attempt_ctx_fini(struct attempt_ctx *c)
{
	while (c->live != NULL)
		attempt_free(c->live);
	while (c->spare != NULL) {
		struct attempt *a = c->spare;
		c->spare = a->next;
		free(a);
	}
	c->n_spare = 0;
}

static void
arm(struct attempt_ctx *c, struct timer *t, uint64_t at)
{
	if (timer_set(c->timers, t, at) == 0 && c->rearm != NULL)
		c->rearm(c->rearm_arg, at);
}

static struct attempt *
attempt_new(struct attempt_ctx *c, struct route *route,
    struct upstream_pool *pool, unsigned up, const uint8_t *qname,
    size_t qname_len, uint16_t qtype, uint16_t qclass, uint16_t qflags,
    bool do_bit, uint32_t timeout_ms)
{
	struct attempt *a = c->spare;

	if (a != NULL) {
		c->spare = a->next;
		c->n_spare--;
	} else if ((a = malloc(sizeof(*a))) == NULL) {
		return NULL;
	}
	memset(a, 0, offsetof(struct attempt, qname));
	a->ctx = c;
	a->route = route;
	route_ref(route);
	a->pool = pool;
	a->up = up;
	a->edns = true;
	memcpy(a->qname, qname, qname_len);
	a->qname_len = qname_len;
	a->qtype = qtype;
	a->qclass = qclass;
	a->qflags = qflags;
	a->do_bit = do_bit;
	a->timeout_ms = timeout_ms;
	timer_init(&a->deadline, deadline_cb);
	memset(&a->req, 0, sizeof(a->req));
	a->req.done = req_done_cb;
	a->req.srv = upstream_addr(pool, up);
	/* A server reached over a stream only is never asked over UDP. */
	a->tcp = a->req.srv->proto == CONFIG_PROTO_TCP ||
	    a->req.srv->proto == CONFIG_PROTO_TLS;
	if (route->cfg.upstream_0x20) {
		/*
		 * Random letter case (draft-vixie-dnsext-dns0x20): a spoofer
		 * must guess it as well as the ID and port.
		 */
		randomize_case(a->qname, a->qname_len);
		a->exact_case = true;
	}
	a->next = c->live;
	if (c->live)
		c->live->prev = a;
	c->live = a;
	c->n_live++;
	return a;
}

/* Unlinks a from its race (if any) and its ctx, and frees it. */
static void
attempt_free(struct attempt *a)
{
	struct attempt_ctx *c = a->ctx;

	if (a->in_xport) {
		c->xport.ops->cancel(c->xport.ctx, &a->req);
		a->in_xport = false;
	}
	timer_stop(c->timers, &a->deadline);
	if (a->race != NULL) {
		struct attempt **pp = &a->race->attempts;
		for (; *pp != NULL; pp = &(*pp)->rnext)
			if (*pp == a) {
				*pp = a->rnext;
				break;
			}
		a->race->active--;
	}
	if (a->prev)
		a->prev->next = a->next;
	else
		c->live = a->next;
	if (a->next)
		a->next->prev = a->prev;
	c->n_live--;
	route_unref(a->route);
	if (c->n_spare < ATTEMPT_SPARE_MAX) {
		a->next = c->spare;
		c->spare = a;
		c->n_spare++;
	} else {
		free(a);
	}
}

static void
randomize_case(uint8_t *name, size_t len)
{
	uint8_t bits[WIRE_NAME_MAX / 8 + 1];
	size_t off = 0;

	rng_bytes(bits, sizeof(bits));
	while (off < len && name[off] != 0) {
		size_t l = name[off];
		for (size_t i = off + 1; i <= off + l && i < len; i++) {
			uint8_t ch = name[i];
			if (((ch >= 'a' && ch <= 'z') ||
				(ch >= 'A' && ch <= 'Z')) &&
			    (bits[i / 8] >> (i % 8)) & 1)
				name[i] = (uint8_t)(ch ^ 0x20);
		}
		off += l + 1;
	}
}

/* Sends (or sends again, after TC or FORMERR) with a fresh ID. */
static int
attempt_send(struct attempt *a, uint64_t now)
{
	struct attempt_ctx *c = a->ctx;
	uint8_t pkt[ATTEMPT_QBYTES];
	uint32_t ms = a->timeout_ms;
	int n, r;

	if (a->in_xport) {
		c->xport.ops->cancel(c->xport.ctx, &a->req);
		a->in_xport = false;
	}
	a->req.id = rng_id();
	a->req.tcp = a->tcp;
	/* AD in a query asks for the AD bit back (RFC 6840 5.7). */
	n = wire_build_query(pkt, sizeof(pkt), a->req.id,
	    WIRE_RD | a->qflags |
		(a->route->cfg.trust_upstream_ad ? WIRE_AD : 0),
	    a->qname, a->qname_len, a->qtype, a->qclass,
	    a->edns ? a->route->cfg.edns_buffer_size : 0, a->do_bit);
	if (n < 0)
		return n;
	a->sent_ms = now;
	r = c->xport.ops->send(c->xport.ctx, &a->req, pkt, (size_t)n);
	if (r < 0)
		return r;
	a->in_xport = true;
	metrics_inc(c->met, MET_UPSTREAM_QUERIES);
	/* A stream needs a handshake and usually carries a big answer. */
	if (a->tcp)
		ms *= 2;
	arm(c, &a->deadline, now + ms);
	return 0;
}

static enum upstream_outcome
outcome_of(enum attempt_fail why)
{
	switch (why) {
	case ATTEMPT_FAIL_TIMEOUT:
		return UPSTREAM_TIMEOUT;
	case ATTEMPT_FAIL_NETWORK:
		return UPSTREAM_REFUSED_NET;
	case ATTEMPT_FAIL_RCODE:
		return UPSTREAM_RCODE;
	default:
		return UPSTREAM_MALFORMED;
	}
}

/*
 * The attempt failed: the pool learns it, and a race left with nothing in
 * flight tries the next server (within the budget) or gives up.
 */
static void
attempt_fail(struct attempt *a, enum attempt_fail why, uint64_t now)
{
	struct race *r = a->race;
	char name[WIRE_NAME_MAX * 4 + 8];
	static const char *const why_text[] = {"none", "timeout", "network",
	    "rcode", "malformed", "all-down", "shed"};

	log_debug("attempt",
	    "upstream attempt failed up=%s reason=%s qname=\"%s\" probe=%d",
	    a->req.srv->text, why_text[why],
	    wire_name_text(a->qname, a->qname_len, name, sizeof(name)),
	    (int)a->probe);
	upstream_done(a->pool, a->up, outcome_of(why), 0, a->probe, now);
	attempt_free(a);
	if (r == NULL || !r->running)
		return;
	r->fail = why;
	if (r->active > 0)
		return;
	timer_stop(r->ctx->timers, &r->hedge);
	if (launch(r, true, now) < 0) {
		r->running = false;
		r->on_fail(r, r->fail, now);
	}
}

static bool
reply_matches(struct attempt *a, const uint8_t *m, size_t len)
{
	struct wire_question wq;

	if (len < WIRE_HDR_LEN || WIRE_ID(m) != a->req.id ||
	    !(WIRE_FLAGS(m) & WIRE_QR))
		return false;
	/* FORMERR may come without the question (RFC 6891 7). */
	if (WIRE_QDCOUNT(m) == 0 &&
	    WIRE_RCODE(WIRE_FLAGS(m)) == WIRE_RCODE_FORMERR)
		return true;
	if (WIRE_QDCOUNT(m) != 1 || wire_read_question(m, len, &wq) < 0)
		return false;
	if (wq.qtype != a->qtype || wq.qclass != a->qclass)
		return false;
	if (a->exact_case)
		return wq.name_len == a->qname_len &&
		    memcmp(m + wq.name_off, a->qname, a->qname_len) == 0;
	return wire_name_equal(
	    m + wq.name_off, wq.name_len, a->qname, a->qname_len);
}

static bool
req_done_cb(
    struct xport_req *req, uint8_t *msg, size_t len, int err, uint64_t now)
{
	struct attempt *a = ATTEMPT_OF(req);

	if (msg == NULL) {
		a->in_xport = false;
		metrics_inc(a->ctx->met, MET_UPSTREAM_ERRORS);
		attempt_fail(a,
		    err == -EPROTO ? ATTEMPT_FAIL_MALFORMED
				   : ATTEMPT_FAIL_NETWORK,
		    now);
		return true;
	}
	if (!reply_matches(a, msg, len)) {
		metrics_inc(a->ctx->met, MET_UPSTREAM_MISMATCHED);
		return false;
	}
	a->in_xport = false;
	handle_reply(a, msg, len, now);
	return true;
}

static void
handle_reply(struct attempt *a, uint8_t *m, size_t len, uint64_t now)
{
	struct attempt_ctx *c = a->ctx;
	struct race *r = a->race;
	struct msg_info info;
	struct msg_policy pol = {a->route->cfg.min_ttl, a->route->cfg.max_ttl,
	    a->route->cfg.max_negative_ttl};
	uint32_t rtt = (uint32_t)(now - a->sent_ms);

	if (msg_classify(m, len, &pol, &info) < 0) {
		metrics_inc(c->met, MET_UPSTREAM_MALFORMED);
		attempt_fail(a, ATTEMPT_FAIL_MALFORMED, now);
		return;
	}
	if (a->probe) {
		/*
		 * Any well-formed reply shows the server is alive (a REFUSED
		 * for the root is policy, not sickness), except SERVFAIL: a
		 * server failing every query would otherwise flap back in.
		 */
		if (info.kind == MSG_SERVFAIL) {
			attempt_fail(a, ATTEMPT_FAIL_RCODE, now);
			return;
		}
		upstream_done(a->pool, a->up, UPSTREAM_OK, rtt, true, now);
		attempt_free(a);
		return;
	}
	if (info.tc && !a->tcp) {
		metrics_inc(c->met, MET_UPSTREAM_TCP_FALLBACKS);
		a->tcp = true;
		if (attempt_send(a, now) < 0)
			attempt_fail(a, ATTEMPT_FAIL_NETWORK, now);
		return;
	}
	if (info.kind == MSG_FORMERR && a->edns) {
		/* An old server that rejects EDNS: ask it again without. */
		metrics_inc(c->met, MET_UPSTREAM_EDNS_FALLBACKS);
		a->edns = false;
		if (attempt_send(a, now) < 0)
			attempt_fail(a, ATTEMPT_FAIL_NETWORK, now);
		return;
	}
	/*
	 * Error RCODEs, extended RCODEs (the OPT carrying them is per hop and
	 * stripped: BADVERS would reach the client as NOERROR) and answers
	 * without a question (nothing to answer a client with) all fail this
	 * server, and the race moves on.
	 */
	if (info.kind == MSG_SERVFAIL || info.kind == MSG_REFUSED ||
	    info.kind == MSG_FORMERR || info.rcode > 15) {
		metrics_inc(c->met, MET_UPSTREAM_ERRORS);
		attempt_fail(a, ATTEMPT_FAIL_RCODE, now);
		return;
	}
	if (WIRE_QDCOUNT(m) != 1) {
		metrics_inc(c->met, MET_UPSTREAM_MALFORMED);
		attempt_fail(a, ATTEMPT_FAIL_MALFORMED, now);
		return;
	}
	metrics_inc(c->met, MET_UPSTREAM_ANSWERS);
	upstream_done(a->pool, a->up, UPSTREAM_OK, rtt, false, now);
	if (r == NULL || !r->running) {
		/* A late answer to a hedged query: measured, then dropped. */
		attempt_free(a);
		return;
	}
	race_stop(r);
	r->on_answer(r, m, len, &info, now);
	attempt_free(a);
}

static void
deadline_cb(struct timer *t, uint64_t now)
{
	struct attempt *a = ATTEMPT_OF_DEADLINE(t);

	metrics_inc(a->ctx->met, MET_UPSTREAM_TIMEOUTS);
	attempt_fail(a, ATTEMPT_FAIL_TIMEOUT, now);
}

/*
 * Starts one more attempt on the best server not yet asked.  Retries and
 * hedges (retry) spend the pool's retry budget.  Returns 0, or why none
 * could start: UPSTREAM_NONE_USABLE, UPSTREAM_NONE_BUDGET (the servers'
 * rate budget), -ENOBUFS (retry budget spent), -ENOMEM.  A send that fails
 * at once counts as a failed attempt (and may start the next one).
 */
static int
launch(struct race *r, bool retry, uint64_t now)
{
	struct attempt_ctx *c = r->ctx;
	struct attempt *a;
	bool explore;
	int up;
	uint32_t rto;

	up = upstream_pick(
	    r->pool, r->tried, now, rng_uniform(UINT32_MAX), r->prio, &explore);
	if (up < 0)
		return up;
	if (retry && !upstream_budget_take(r->pool, now))
		return -ENOBUFS;
	if (!retry)
		upstream_budget_earn(r->pool);
	a = attempt_new(c, r->route, r->pool, (unsigned)up, r->qname,
	    r->qname_len, r->qtype, r->qclass, r->qflags, r->do_bit,
	    r->cfg->upstream_timeout_ms);
	if (a == NULL)
		return -ENOMEM;
	a->race = r;
	a->rnext = r->attempts;
	r->attempts = a;
	r->active++;
	r->tried |= 1u << up;
	upstream_sent(r->pool, a->up, now);
	/*
	 * An exploring pick is hedged at the best server's RTO, so trying a
	 * slower server costs the client almost nothing.
	 */
	rto =
	    explore ? upstream_best_rto(r->pool) : upstream_rto(r->pool, a->up);
	if (!retry)
		r->first_rto = rto;
	if (upstream_count(r->pool) > 1)
		arm(c, &r->hedge, now + rto);
	if (attempt_send(a, now) < 0) {
		metrics_inc(c->met, MET_UPSTREAM_ERRORS);
		attempt_fail(a, ATTEMPT_FAIL_NETWORK, now);
	}
	return 0;
}

static void
hedge_cb(struct timer *t, uint64_t now)
{
	struct race *r = RACE_OF_HEDGE(t);

	if (!r->running)
		return;
	/* No answer within the RTO: ask the next server as well. */
	(void)launch(r, true, now);
}

int
race_start(struct race *r, uint64_t now)
{
	int rc;

	r->attempts = NULL;
	r->active = 0;
	r->tried = 0;
	r->fail = ATTEMPT_FAIL_NONE;
	r->first_rto = 0;
	timer_init(&r->hedge, hedge_cb);
	r->running = true;
	rc = launch(r, false, now);
	if (rc < 0) {
		r->running = false;
		return rc;
	}
	return 0;
}

void
race_stop(struct race *r)
{
	if (!r->running && r->attempts == NULL)
		return;
	r->running = false;
	timer_stop(r->ctx->timers, &r->hedge);
	while (r->attempts != NULL) {
		struct attempt *a = r->attempts;
		r->attempts = a->rnext;
		a->rnext = NULL;
		a->race = NULL;
	}
	r->active = 0;
}

int
attempt_probe(struct attempt_ctx *c, struct route *route,
    struct upstream_pool *pool, unsigned idx, const struct route_name *probe,
    uint64_t now)
{
	struct attempt *a = attempt_new(c, route, pool, idx, probe->name,
	    probe->len, probe->type, WIRE_CLASS_IN, 0, false,
	    route->cfg.upstream_timeout_ms);

	if (a == NULL) {
		upstream_done(pool, idx, UPSTREAM_MALFORMED, 0, true, now);
		return -ENOMEM;
	}
	a->probe = true;
	if (attempt_send(a, now) < 0) {
		attempt_fail(a, ATTEMPT_FAIL_NETWORK, now);
		return -ECONNREFUSED;
	}
	return 0;
}
