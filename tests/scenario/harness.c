#include <errno.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "harness.h"
#include "stubborn/cache.h"
#include "stubborn/clock.h"
#include "stubborn/cookie.h"
#include "stubborn/engine.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/pipeline.h"
#include "stubborn/ratelimit.h"
#include "stubborn/rng.h"
#include "stubborn/route.h"
#include "stubborn/xport.h"

/* The harness's clock starts here, so nothing sits at or near zero. */
#define H_T0 (1ull << 40)
#define H_MAX_RULES 128

/* A scripted answer on its way. */
struct h_event {
	uint64_t at;
	size_t sent; /* index in sent */
	uint8_t *msg;
	size_t len;
	int err;
};

struct h_client {
	struct client cl;
	char label[32];
};

struct harness {
	struct config cfg;
	struct cache *cache;
	struct route *route;
	struct metrics *metrics;
	struct engine *engine;
	struct pipeline *pipeline;
	struct pipeline_limits limits;
	uint64_t now; /* absolute, on the engine's clock */
	struct h_rule rules[H_MAX_RULES];
	size_t nrules;
	struct h_sent *sent;
	size_t nsent, capsent;
	struct h_reply *replies;
	size_t nreplies, capreplies;
	struct h_event *events;
	size_t nevents, capevents;
	struct h_client *clients[4096]; /* every query's client, freed at end */
	size_t nclients;
};

static int x_send(
    void *ctx, struct xport_req *r, const uint8_t *msg, size_t len);
static void x_cancel(void *ctx, struct xport_req *r);
static void rearm(void *arg, uint64_t at);
static void reply_cb(const struct client *cl, const uint8_t *msg, size_t len,
    enum client_source src);
static const struct h_rule *rule_for(
    struct harness *h, const char *server, const uint8_t *msg, size_t len);
static int build_answer(const struct h_rule *r, const uint8_t *q, size_t qlen,
    bool tcp, uint8_t **out, size_t *outlen);
static void schedule(struct harness *h, size_t sent, uint64_t at, uint8_t *msg,
    size_t len, int err);
static struct h_client *client_new(
    struct harness *h, const char *label, const char *from, bool tcp);

static const struct xport_ops ops = {x_send, x_cancel};

static struct harness *current; /* the client callbacks find it here */

struct harness *
h_new(int argc, char **argv, uint64_t seed, char *err, size_t errlen)
{
	struct harness *h = calloc(1, sizeof(*h));
	struct engine_env env;
	uint8_t key[16];

	if (h == NULL)
		return NULL;
	if (config_load(&h->cfg, argc, argv, err, errlen) != CONFIG_RUN) {
		free(h);
		return NULL;
	}
	log_set_level((enum log_level)h->cfg.log_level);
	rng_init();
	rng_seed_for_tests(seed);
	cookie_init();
	h->now = H_T0;
	clock_set_fake_ms(h->now);
	h->cache = cache_new(h->cfg.cache_size, 4,
	    h->cfg.serve_stale ? h->cfg.stale_max_age : 0);
	h->metrics = metrics_new(1);
	h->route = route_new(&h->cfg, NULL, 1, err, errlen);
	rng_bytes(key, sizeof(key));
	h->limits.miss = ratelimit_new(h->cfg.ratelimit_clients, key);
	h->limits.hit = ratelimit_new(h->cfg.ratelimit_clients, key);
	if (h->cache == NULL || h->metrics == NULL || h->route == NULL ||
	    h->limits.miss == NULL || h->limits.hit == NULL) {
		h_free(h);
		return NULL;
	}
	memset(&env, 0, sizeof(env));
	env.cache = h->cache;
	env.met = metrics_worker(h->metrics, 0);
	env.xport.ops = &ops;
	env.xport.ctx = h;
	env.prober = true;
	env.rearm = rearm;
	env.rearm_arg = h;
	h->engine = engine_new(&env, h->route, h->now);
	h->pipeline = h->engine
	    ? pipeline_new(h->engine, h->cache, env.met, &h->limits)
	    : NULL;
	if (h->pipeline == NULL) {
		h_free(h);
		return NULL;
	}
	return h;
}

void
h_free(struct harness *h)
{
	if (h == NULL)
		return;
	current = h;
	engine_free(h->engine);
	pipeline_free(h->pipeline);
	route_unref(h->route);
	metrics_free(h->metrics);
	cache_free(h->cache);
	ratelimit_free(h->limits.miss);
	ratelimit_free(h->limits.hit);
	for (size_t i = 0; i < h->nevents; i++)
		free(h->events[i].msg);
	for (size_t i = 0; i < h->nreplies; i++)
		free(h->replies[i].msg);
	for (size_t i = 0; i < h->nclients; i++)
		free(h->clients[i]);
	free(h->events);
	free(h->replies);
	free(h->sent);
	clock_set_fake_ms(0);
	current = NULL;
	free(h);
}

const struct config *
h_config(const struct harness *h)
{
	return &h->cfg;
}

struct cache *
h_cache(struct harness *h)
{
	return h->cache;
}

struct route *
h_route(struct harness *h)
{
	return h->route;
}

struct metrics *
h_metrics(struct harness *h)
{
	return h->metrics;
}

void
h_add_rule(struct harness *h, const struct h_rule *r)
{
	if (h->nrules < H_MAX_RULES)
		h->rules[h->nrules++] = *r;
}

void
h_clear_rules(struct harness *h)
{
	h->nrules = 0;
}

uint64_t
h_now(const struct harness *h)
{
	return h->now - H_T0;
}

size_t
h_sent_count(const struct harness *h)
{
	return h->nsent;
}

struct h_sent *
h_sent_at(struct harness *h, size_t i)
{
	return i < h->nsent ? &h->sent[i] : NULL;
}

size_t
h_reply_count(const struct harness *h)
{
	return h->nreplies;
}

struct h_reply *
h_reply_at(struct harness *h, size_t i)
{
	return i < h->nreplies ? &h->replies[i] : NULL;
}

/* The engine's timers are in its own heap; the harness asks for them. */
static void
rearm(void *arg, uint64_t at)
{
	(void)arg;
	(void)at;
}

static void
schedule(struct harness *h, size_t sent, uint64_t at, uint8_t *msg, size_t len,
    int err)
{
	struct h_event *e;

	if (h->nevents == h->capevents) {
		size_t cap = h->capevents ? h->capevents * 2 : 64;
		struct h_event *v = realloc(h->events, cap * sizeof(*v));
		if (v == NULL) {
			free(msg);
			return;
		}
		h->events = v;
		h->capevents = cap;
	}
	e = &h->events[h->nevents++];
	e->at = at;
	e->sent = sent;
	e->msg = msg;
	e->len = len;
	e->err = err;
}

/* Delivers event i (removed from the list first). */
static void
deliver(struct harness *h, size_t i)
{
	struct h_event e = h->events[i];
	struct h_sent *s = &h->sent[e.sent];
	struct xport_req *r = s->req;

	h->events[i] = h->events[--h->nevents];
	if (s->live) {
		s->live = false;
		if (e.msg == NULL) {
			r->done(r, NULL, 0, e.err, h->now);
		} else if (!r->done(r, e.msg, e.len, 0, h->now)) {
			/* Not its answer (a spoof): it waits on. */
			s->live = true;
		}
	}
	free(e.msg);
}

void
h_advance_to(struct harness *h, uint64_t ms)
{
	uint64_t target = H_T0 + ms;

	current = h;
	for (;;) {
		uint64_t next = engine_next_timer(h->engine);
		size_t ev = SIZE_MAX;
		for (size_t i = 0; i < h->nevents; i++)
			if (h->events[i].at <= target &&
			    (ev == SIZE_MAX ||
				h->events[i].at < h->events[ev].at))
				ev = i;
		if (ev != SIZE_MAX && h->events[ev].at <= next) {
			if (h->events[ev].at > h->now)
				h->now = h->events[ev].at;
			clock_set_fake_ms(h->now);
			deliver(h, ev);
			continue;
		}
		if (next == UINT64_MAX || next > target)
			break;
		if (next > h->now)
			h->now = next;
		clock_set_fake_ms(h->now);
		engine_run_timers(h->engine, h->now);
	}
	if (target > h->now)
		h->now = target;
	clock_set_fake_ms(h->now);
}

static int
x_send(void *ctx, struct xport_req *r, const uint8_t *msg, size_t len)
{
	struct harness *h = ctx;
	const struct route *rt = engine_route(h->engine);
	struct h_sent *s;
	const struct h_rule *rule;
	struct wire_question q;
	size_t idx;

	if (h->nsent == h->capsent) {
		size_t cap = h->capsent ? h->capsent * 2 : 64;
		struct h_sent *v = realloc(h->sent, cap * sizeof(*v));
		if (v == NULL)
			return -ENOMEM;
		h->sent = v;
		h->capsent = cap;
	}
	if (len > sizeof(s->msg))
		return -EMSGSIZE;
	idx = h->nsent++;
	s = &h->sent[idx];
	memset(s, 0, sizeof(*s));
	s->at = h->now - H_T0;
	snprintf(s->server, sizeof(s->server), "%s", r->srv->text);
	memcpy(s->msg, msg, len);
	s->len = len;
	s->tcp = r->tcp;
	s->live = true;
	s->req = r;
	if (wire_read_question(msg, len, &q) == 0)
		s->probe = q.qtype == rt->probe.type &&
		    wire_name_equal(msg + q.name_off, q.name_len,
			rt->probe.name, rt->probe.len);
	if (getenv("H_TRACE"))
		fprintf(stderr, "trace: sent at %llu %s\n",
		    (unsigned long long)s->at, s->probe ? "probe" : "");
	rule = rule_for(h, s->server, msg, len);
	if (rule == NULL || rule->action == H_DROP)
		return 0;
	if (rule->action == H_UNREACHABLE) {
		schedule(
		    h, idx, h->now + rule->delay_ms, NULL, 0, -ECONNREFUSED);
		return 0;
	}
	{
		uint8_t *out = NULL;
		size_t olen = 0;
		if (build_answer(rule, msg, len, r->tcp, &out, &olen) == 0)
			schedule(h, idx, h->now + rule->delay_ms, out, olen, 0);
	}
	return 0;
}

static void
x_cancel(void *ctx, struct xport_req *r)
{
	struct harness *h = ctx;

	for (size_t i = h->nsent; i-- > 0;)
		if (h->sent[i].req == r && h->sent[i].live) {
			h->sent[i].live = false;
			return;
		}
}

static const struct h_rule *
rule_for(struct harness *h, const char *server, const uint8_t *msg, size_t len)
{
	struct wire_question q;

	if (wire_read_question(msg, len, &q) < 0)
		return NULL;
	for (size_t i = h->nrules; i-- > 0;) {
		const struct h_rule *r = &h->rules[i];
		if (strcmp(r->server, "*") != 0 &&
		    strcmp(r->server, server) != 0)
			continue;
		if (r->type != 0 && r->type != q.qtype)
			continue;
		if (r->nlen != 0 &&
		    !wire_name_equal(
			msg + q.name_off, q.name_len, r->name, r->nlen))
			continue;
		return r;
	}
	return NULL;
}

/* The zone of a negative answer's SOA: the query name minus a label. */
static ldns_rr *
soa_for(const ldns_rdf *qname)
{
	char *owner;
	char text[600];
	ldns_rr *rr = NULL;
	ldns_rdf *parent = ldns_dname_left_chop(qname);

	owner = ldns_rdf2str(parent ? parent : qname);
	snprintf(text, sizeof(text),
	    "%s 300 IN SOA ns.harness. hostmaster.harness. 1 3600 600 86400 60",
	    owner);
	if (ldns_rr_new_frm_str(&rr, text, 0, NULL, NULL) != LDNS_STATUS_OK)
		rr = NULL;
	free(owner);
	ldns_rdf_deep_free(parent);
	return rr;
}

static int
build_answer(const struct h_rule *r, const uint8_t *q, size_t qlen, bool tcp,
    uint8_t **out, size_t *outlen)
{
	ldns_pkt *p = NULL;
	ldns_status st;
	ldns_rr *question;
	int rc = -EINVAL;

	if (ldns_wire2pkt(&p, q, qlen) != LDNS_STATUS_OK)
		return -EINVAL;
	question = ldns_rr_list_rr(ldns_pkt_question(p), 0);
	ldns_pkt_set_qr(p, true);
	ldns_pkt_set_ra(p, true);
	ldns_pkt_set_aa(p, true);
	switch (r->action) {
	case H_NXDOMAIN:
		ldns_pkt_set_rcode(p, LDNS_RCODE_NXDOMAIN);
		/* fall through */
	case H_NODATA: {
		ldns_rr *soa = soa_for(ldns_rr_owner(question));
		if (soa != NULL)
			ldns_pkt_push_rr(p, LDNS_SECTION_AUTHORITY, soa);
		break;
	}
	case H_SERVFAIL:
		ldns_pkt_set_rcode(p, LDNS_RCODE_SERVFAIL);
		break;
	case H_REFUSED:
		ldns_pkt_set_rcode(p, LDNS_RCODE_REFUSED);
		break;
	case H_FORMERR:
		ldns_pkt_set_rcode(p, LDNS_RCODE_FORMERR);
		break;
	case H_TRUNCATE:
		ldns_pkt_set_tc(p, true);
		break;
	case H_SYNTH: {
		ldns_rr_type t = ldns_rr_get_type(question);
		const char *data = t == LDNS_RR_TYPE_A ? "A 192.0.2.53"
		    : t == LDNS_RR_TYPE_AAAA           ? "AAAA 2001:db8::53"
		    : t == LDNS_RR_TYPE_TXT            ? "TXT \"synthesized\""
						       : NULL;
		char *owner = ldns_rdf2str(ldns_rr_owner(question)), text[600];
		ldns_rr *rr = NULL;
		if (data != NULL && owner != NULL) {
			snprintf(
			    text, sizeof(text), "%s 300 IN %s", owner, data);
			if (ldns_rr_new_frm_str(&rr, text, 0, NULL, NULL) !=
			    LDNS_STATUS_OK)
				rr = NULL;
		}
		free(owner);
		if (rr == NULL)
			rr = soa_for(ldns_rr_owner(question));
		if (rr != NULL)
			ldns_pkt_push_rr(p,
			    ldns_rr_get_type(rr) == LDNS_RR_TYPE_SOA
				? LDNS_SECTION_AUTHORITY
				: LDNS_SECTION_ANSWER,
			    rr);
		break;
	}
	default:
		if (r->tcp_only && !tcp) {
			ldns_pkt_set_tc(p, true);
			break;
		}
		for (size_t i = 0; i < r->nrecords; i++) {
			ldns_rr *rr = NULL;
			if (ldns_rr_new_frm_str(&rr, r->records[i], 0, NULL,
				NULL) != LDNS_STATUS_OK)
				goto out;
			ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr);
		}
		break;
	}
	if (r->ad)
		ldns_pkt_set_ad(p, true);
	if (r->action == H_WRONG_ID)
		ldns_pkt_set_id(p, (uint16_t)(ldns_pkt_id(p) ^ 0x5a5a));
	st = ldns_pkt2wire(out, p, outlen);
	rc = st == LDNS_STATUS_OK ? 0 : -EINVAL;
out:
	ldns_pkt_free(p);
	return rc;
}

bool
h_answer_raw(
    struct harness *h, size_t i, uint8_t *msg, size_t len, bool keep_id)
{
	struct h_sent *s = h_sent_at(h, i);
	struct xport_req *r;

	current = h;
	if (s == NULL || !s->live)
		return false;
	r = s->req;
	if (!keep_id && len >= 2)
		wire_put16(msg, WIRE_ID(s->msg));
	s->live = false;
	if (!r->done(r, msg, len, 0, h->now))
		s->live = true;
	return true;
}

static void
reply_cb(const struct client *cl, const uint8_t *msg, size_t len,
    enum client_source src)
{
	/* The engine keeps copies of struct client; fd leads back. */
	struct harness *h = current;
	const struct h_client *c = h->clients[cl->fd];
	struct h_reply *r;

	if (h->nreplies == h->capreplies) {
		size_t cap = h->capreplies ? h->capreplies * 2 : 64;
		struct h_reply *v = realloc(h->replies, cap * sizeof(*v));
		if (v == NULL)
			return;
		h->replies = v;
		h->capreplies = cap;
	}
	r = &h->replies[h->nreplies++];
	memset(r, 0, sizeof(*r));
	snprintf(r->client, sizeof(r->client), "%s", c->label);
	r->at = h->now - H_T0;
	r->src = src;
	if (msg != NULL && (r->msg = malloc(len)) != NULL) {
		memcpy(r->msg, msg, len);
		r->len = len;
	}
}

static struct h_client *
client_new(struct harness *h, const char *label, const char *from, bool tcp)
{
	struct h_client *c;
	struct config_addr a;

	if (h->nclients >= sizeof(h->clients) / sizeof(h->clients[0]))
		return NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	if (config_parse_addr(from ? from : "127.0.0.1", 40000, &a) != 0) {
		free(c);
		return NULL;
	}
	c->cl.reply = reply_cb;
	/* Like a listener's socket: every UDP client of the harness shares
	 * one (a retry is recognised by address and ID), a TCP client has a
	 * connection of its own.  fd is the client's index. */
	c->cl.fd = (int)h->nclients;
	memcpy(&c->cl.peer, &a.ss, a.len);
	c->cl.peer_len = a.len;
	c->cl.tcp = tcp;
	c->cl.conn = tcp ? (void *)c : (void *)h;
	c->cl.start_us = h->now * 1000;
	snprintf(c->label, sizeof(c->label), "%s", label);
	h->clients[h->nclients++] = c;
	return c;
}

void
h_packet(struct harness *h, const char *label, const char *from,
    const uint8_t *pkt, size_t len, bool tcp)
{
	struct h_client *c = client_new(h, label, from, tcp);

	current = h;
	if (c == NULL)
		return;
	pipeline_process(
	    h->pipeline, pkt, len, &c->cl, h->now, (uint32_t)clock_wall_s());
}

int
h_query(struct harness *h, const char *label, const char *from,
    const char *qname, uint16_t qtype, unsigned flags, uint16_t id)
{
	uint8_t name[WIRE_NAME_MAX], pkt[512];
	int n = wire_name_from_text(qname, name), len;
	struct h_client *c;

	if (n < 0)
		return -EINVAL;
	len = wire_build_query(pkt, sizeof(pkt), id ? id : rng_id(),
	    WIRE_RD | ((flags & H_Q_CD) ? WIRE_CD : 0) |
		((flags & H_Q_AD) ? WIRE_AD : 0),
	    name, (size_t)n, qtype, WIRE_CLASS_IN,
	    (flags & H_Q_NOEDNS) ? 0 : 1232, (flags & H_Q_DO) != 0);
	if (len < 0)
		return len;
	c = client_new(h, label, from, (flags & H_Q_TCP) != 0);
	if (c == NULL)
		return -ENOMEM;
	current = h;
	pipeline_process(h->pipeline, pkt, (size_t)len, &c->cl, h->now,
	    (uint32_t)clock_wall_s());
	return 0;
}
