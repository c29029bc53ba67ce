#include <errno.h>
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "stubborn/cache.h"
#include "stubborn/config.h"
#include "stubborn/cookie.h"
#include "stubborn/engine.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/pipeline.h"
#include "stubborn/ratelimit.h"
#include "stubborn/reply.h"
#include "stubborn/route.h"
#include "stubborn/upstream.h"
#include "stubborn/wire.h"

struct pipeline {
	struct engine *engine;
	struct cache *cache;
	struct metrics_worker *met;
	struct pipeline_limits limits;
	uint8_t out[WIRE_MSG_MAX + 1024];
};

/* One query on its way through; the steps share it. */
struct job {
	struct pipeline *p;
	const struct config *cfg;
	const uint8_t *pkt;
	size_t len;
	struct wire_query q;
	struct client *cl;
	uint64_t now;
	uint32_t now_s;
	uint8_t key[CACHE_KEY_MAX]; /* the question's */
	size_t klen;
	uint8_t skey[CACHE_KEY_MAX]; /* where a stale answer lives */
	size_t sklen;
	struct cache_hit hit;
	size_t slen; /* bytes of the cached copy in p->out */
};

static bool parse(struct job *j);
static bool acl_allows(struct job *j);
static void answer_or_forward(struct job *j);
static enum cache_result lookup(struct job *j);
static bool hold_stands(struct job *j);
static void forward(struct job *j, unsigned flags);
static bool client_allowed(struct job *j, struct ratelimit *rl, uint32_t rate);
static void over_limit(struct job *j);
static void reply_cached(struct job *j, int ede, enum client_source src);
static void reply_stale(struct job *j);
static void answer_error(struct job *j, int rcode, int ede, const char *text);
static void maybe_refresh(struct job *j);
static void to_of(const struct job *j, struct reply_to *to);

struct pipeline *
pipeline_new(struct engine *engine, struct cache *cache,
    struct metrics_worker *met, const struct pipeline_limits *limits)
{
	struct pipeline *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->engine = engine;
	p->cache = cache;
	p->met = met;
	if (limits != NULL)
		p->limits = *limits;
	return p;
}

void
pipeline_free(struct pipeline *p)
{
	free(p);
}

void
pipeline_process(struct pipeline *p, const uint8_t *pkt, size_t len,
    struct client *cl, uint64_t now, uint32_t now_s)
{
	struct job j;

	j.p = p;
	j.cfg = &engine_route(p->engine)->cfg;
	j.pkt = pkt;
	j.len = len;
	j.cl = cl;
	j.now = now;
	j.now_s = now_s;
	if (!parse(&j) || !acl_allows(&j))
		return;
	j.klen = cache_make_key(j.key, pkt + j.q.q.name_off, j.q.q.name_len,
	    j.q.q.qtype, j.q.q.qclass,
	    (j.q.do_bit ? CACHE_KEY_DO : 0) |
		((j.q.flags & WIRE_CD) ? CACHE_KEY_CD : 0));
	answer_or_forward(&j);
}

static void
to_of(const struct job *j, struct reply_to *to)
{
	to->query = j->pkt;
	to->qlen = j->len;
	to->q = &j->q;
	to->limit = j->cl->max_len;
	to->peer = &j->cl->peer;
	to->edns_size = j->cfg->edns_buffer_size;
	to->now_s = j->now_s;
}

/* Malformed or unsupported queries get the RFCs' answer here. */
static bool
parse(struct job *j)
{
	struct metrics_worker *met = j->p->met;
	enum wire_verdict v = wire_parse_query(j->pkt, j->len, &j->q);

	j->cl->max_len = j->cl->tcp
	    ? WIRE_MSG_MAX
	    : wire_udp_limit(&j->q, j->cfg->edns_buffer_size);
	switch (v) {
	case WIRE_ACCEPT:
		return true;
	case WIRE_DROP:
		metrics_inc(met, MET_DROPPED);
		j->cl->reply(j->cl, NULL, 0, CLIENT_SRC_ERROR);
		return false;
	case WIRE_NOTIMP:
		metrics_inc(met, MET_REPLIES_NOTIMP);
		answer_error(j, WIRE_RCODE_NOTIMP, -1, NULL);
		return false;
	case WIRE_BADVERS:
		metrics_inc(met, MET_REPLIES_BADVERS);
		answer_error(j, WIRE_RCODE_BADVERS, -1, NULL);
		return false;
	case WIRE_REFUSED:
		metrics_inc(met, MET_REPLIES_REFUSED);
		answer_error(j, WIRE_RCODE_REFUSED, WIRE_EDE_NOT_SUPPORTED,
		    "zone transfers are not served");
		return false;
	case WIRE_FORMERR:
	default:
		metrics_inc(met, MET_REPLIES_FORMERR);
		answer_error(j, WIRE_RCODE_FORMERR, -1, NULL);
		return false;
	}
}

/*
 * Loopback clients are always served; others only when allow lists them
 * (without a list every listen address is loopback, which config
 * enforces, so nobody else can reach us).
 */
static bool
acl_allows(struct job *j)
{
	const struct config *cfg = j->cfg;
	const struct sockaddr *peer = (const struct sockaddr *)&j->cl->peer;

	if (cfg->n_allow == 0 || config_addr_is_loopback(peer))
		return true;
	for (size_t i = 0; i < cfg->n_allow; i++)
		if (config_prefix_match(&cfg->allow[i], peer))
			return true;
	metrics_inc(j->p->met, MET_REFUSED_ACL);
	metrics_inc(j->p->met, MET_REPLIES_REFUSED);
	answer_error(
	    j, WIRE_RCODE_REFUSED, WIRE_EDE_PROHIBITED, "client not allowed");
	return false;
}

/*
 * The question's own entry, else, for NXDOMAIN, the name's (RFC 2308 5: a
 * name that does not exist has no type either).  The copy lands in p->out.
 */
static enum cache_result
lookup(struct job *j)
{
	const struct config *cfg = j->cfg;
	enum cache_result r = CACHE_MISS;

	memcpy(j->skey, j->key, j->klen);
	j->sklen = j->klen;
	memset(&j->hit, 0, sizeof(j->hit));
	/* RFC 8482 ANY is passed through, never answered from the cache. */
	if (j->q.q.qtype == WIRE_TYPE_ANY)
		return CACHE_MISS;
	r = cache_lookup(j->p->cache, j->key, j->klen, j->now, cfg->stale_ttl,
	    j->p->out, WIRE_MSG_MAX, &j->slen, &j->hit);
	if (r != CACHE_MISS)
		return r;
	j->sklen = cache_make_key(j->skey, j->pkt + j->q.q.name_off,
	    j->q.q.name_len, 0, j->q.q.qclass, j->key[j->klen - 1]);
	r = cache_lookup(j->p->cache, j->skey, j->sklen, j->now, cfg->stale_ttl,
	    j->p->out, WIRE_MSG_MAX, &j->slen, &j->hit);
	if ((r == CACHE_FRESH || r == CACHE_STALE) &&
	    j->hit.rcode == WIRE_RCODE_NXDOMAIN)
		return r;
	memcpy(j->skey, j->key, j->klen);
	j->sklen = j->klen;
	memset(&j->hit, 0, sizeof(j->hit));
	return CACHE_MISS;
}

/*
 * A hold (stale-recheck, RFC 9520) placed while the upstreams were down
 * ends when one of them comes back: recovery is noticed as fast as failure.
 */
static bool
hold_stands(struct job *j)
{
	struct upstream_pool *pool;

	if (j->hit.hold_until_ms <= j->now)
		return false;
	pool = route_pool_for(engine_route(j->p->engine),
	    j->pkt + j->q.q.name_off, j->q.q.name_len);
	return j->hit.hold_since_ms >= upstream_recovered_ms(pool);
}

/* The cache decides: fresh answer, stale answer, held failure, or upstream. */
static void
answer_or_forward(struct job *j)
{
	const struct config *cfg = j->cfg;

	switch (lookup(j)) {
	case CACHE_FRESH:
		if (!client_allowed(j, j->p->limits.hit, cfg->cache_qps)) {
			over_limit(j);
			return;
		}
		metrics_inc(j->p->met, MET_CACHE_HITS);
		reply_cached(j, -1, CLIENT_SRC_CACHE);
		maybe_refresh(j);
		return;
	case CACHE_FAILED:
		/* Resolution failed moments ago (RFC 9520): do not ask again.
		 */
		if (hold_stands(j)) {
			metrics_inc(j->p->met, MET_FAILURE_CACHE_HITS);
			answer_error(j, WIRE_RCODE_SERVFAIL,
			    WIRE_EDE_CACHED_ERROR, "recent upstream failure");
			return;
		}
		forward(j, 0);
		return;
	case CACHE_STALE:
		if (!cfg->serve_stale) {
			forward(j, 0);
			return;
		}
		/* Held after a failed refresh: stale at once (RFC 8767 5). */
		if (hold_stands(j)) {
			reply_stale(j);
			return;
		}
		forward(j, ENGINE_HAVE_STALE);
		return;
	case CACHE_MISS:
	default:
		forward(j, 0);
		return;
	}
}

/* Only work that costs upstream queries counts against client-qps. */
static void
forward(struct job *j, unsigned flags)
{
	const struct config *cfg = j->cfg;
	bool cookie = j->q.has_cookie &&
	    cookie_valid_query(&j->q, &j->cl->peer, j->now_s);
	int rc;

	if (!client_allowed(j, j->p->limits.miss,
		cookie ? cfg->client_qps_cookie : cfg->client_qps)) {
		if (flags & ENGINE_HAVE_STALE) {
			metrics_inc(j->p->met, MET_RATELIMITED_STALE);
			reply_stale(j);
		} else {
			over_limit(j);
		}
		return;
	}
	metrics_inc(j->p->met, MET_CACHE_MISSES);
	rc = engine_query(j->p->engine, j->pkt, &j->q, j->key, j->klen, j->skey,
	    j->sklen, j->cl, flags, j->now);
	if (rc < 0 && (flags & ENGINE_HAVE_STALE)) {
		/* p->out still holds the stale copy the lookup made. */
		reply_stale(j);
		return;
	}
	if (rc < 0)
		answer_error(j, WIRE_RCODE_SERVFAIL, WIRE_EDE_OTHER,
		    rc == -ESHUTDOWN ? "shutting down"
				     : "too many queries in flight");
}

/*
 * The client's token bucket (rate per second, burst twice that); the first
 * time a client goes over, one log line (itself rate-limited).  Loopback
 * clients are one machine's programs sharing 127.0.0.1, not one client:
 * unlimited unless ratelimit-loopback (the upstream budget still holds).
 */
static bool
client_allowed(struct job *j, struct ratelimit *rl, uint32_t rate)
{
	static _Atomic uint64_t last_log_ms;
	const struct config *cfg = j->cfg;
	const struct sockaddr *peer = (const struct sockaddr *)&j->cl->peer;
	uint8_t prefix[17];
	size_t plen;
	enum ratelimit_verdict v;
	char addr[INET6_ADDRSTRLEN] = "?";
	uint64_t last;

	if (rl == NULL || rate == 0 ||
	    (!cfg->ratelimit_loopback && config_addr_is_loopback(peer)))
		return true;
	plen = ratelimit_prefix(
	    peer, cfg->client_prefix_v4, cfg->client_prefix_v6, prefix);
	v = ratelimit_check(rl, prefix, plen, rate,
	    rate > UINT32_MAX / 2 ? UINT32_MAX : rate * 2, j->now);
	if (v == RATELIMIT_PASS)
		return true;
	last = atomic_load(&last_log_ms);
	if (v == RATELIMIT_LIMITED_FIRST && j->now >= last + 1000 &&
	    atomic_compare_exchange_strong(&last_log_ms, &last, j->now)) {
		if (peer->sa_family == AF_INET6)
			inet_ntop(AF_INET6,
			    &((const struct sockaddr_in6 *)peer)->sin6_addr,
			    addr, sizeof(addr));
		else
			inet_ntop(AF_INET,
			    &((const struct sockaddr_in *)peer)->sin_addr, addr,
			    sizeof(addr));
		log_warn("pipeline",
		    "client over its query limit client=%s qps=%u action=%s",
		    addr, rate,
		    cfg->ratelimit_action == CONFIG_RL_DROP ? "drop"
			: cfg->ratelimit_action == CONFIG_RL_TRUNCATE
			? "truncate"
			: "refuse");
	}
	return false;
}

/* An over-limit query without a stale answer: refuse, drop or TC=1. */
static void
over_limit(struct job *j)
{
	struct reply_to to;
	int n;

	switch (j->cfg->ratelimit_action) {
	case CONFIG_RL_DROP:
		metrics_inc(j->p->met, MET_RATELIMITED_DROP);
		j->cl->reply(j->cl, NULL, 0, CLIENT_SRC_ERROR);
		return;
	case CONFIG_RL_TRUNCATE:
		/* Genuine clients retry over TCP; spoofed sources cannot. */
		if (j->cl->tcp)
			break;
		metrics_inc(j->p->met, MET_RATELIMITED_TRUNCATE);
		to_of(j, &to);
		n = reply_truncated(j->p->out, sizeof(j->p->out), &to);
		j->cl->reply(j->cl, n < 0 ? NULL : j->p->out,
		    n < 0 ? 0 : (size_t)n, CLIENT_SRC_ERROR);
		return;
	default:
		break;
	}
	metrics_inc(j->p->met, MET_RATELIMITED_REFUSE);
	metrics_inc(j->p->met, MET_REPLIES_REFUSED);
	answer_error(j, WIRE_RCODE_REFUSED, WIRE_EDE_OTHER, "rate limited");
}

/* Sends the response in p->out (j->slen bytes), made into this reply. */
static void
reply_cached(struct job *j, int ede, enum client_source src)
{
	const struct config *cfg = j->cfg;
	struct reply_to to;
	int n;

	to_of(j, &to);
	n = reply_answer(j->p->out, j->slen, sizeof(j->p->out), &to, ede,
	    ede >= 0 ? "stale answer" : NULL,
	    cfg->trust_upstream_ad && (j->q.do_bit || (j->q.flags & WIRE_AD)));
	if (n < 0) {
		j->cl->reply(j->cl, NULL, 0, CLIENT_SRC_ERROR);
		return;
	}
	if (WIRE_FLAGS(j->p->out) & WIRE_TC)
		metrics_inc(j->p->met, MET_REPLIES_TRUNCATED);
	j->cl->reply(j->cl, j->p->out, (size_t)n, src);
}

static void
reply_stale(struct job *j)
{
	metrics_inc(j->p->met, MET_STALE_ANSWERS);
	metrics_stale(j->p->met, j->now_s, j->hit.stale_s);
	reply_cached(j,
	    j->hit.rcode == WIRE_RCODE_NXDOMAIN ? WIRE_EDE_STALE_NXDOMAIN
						: WIRE_EDE_STALE,
	    CLIENT_SRC_STALE);
}

/*
 * Refresh-ahead: a name asked for in the last refresh-ahead percent of its
 * TTL is fetched again in the background, so popular names never expire.
 */
static void
maybe_refresh(struct job *j)
{
	uint32_t pct = j->cfg->refresh_ahead;

	if (pct == 0 || j->hit.hold_until_ms > j->now ||
	    (uint64_t)j->hit.ttl_left * 100 > (uint64_t)j->hit.ttl * pct)
		return;
	engine_refresh(j->p->engine, j->key, j->klen, j->pkt + j->q.q.name_off,
	    j->q.q.name_len, j->q.q.qtype, j->q.q.qclass, j->key[j->klen - 1],
	    j->now);
}

static void
answer_error(struct job *j, int rcode, int ede, const char *text)
{
	struct reply_to to;
	int n;

	to_of(j, &to);
	n = reply_error(j->p->out, sizeof(j->p->out), &to, rcode, ede, text);
	if (rcode == WIRE_RCODE_SERVFAIL)
		metrics_inc(j->p->met, MET_REPLIES_SERVFAIL);
	j->cl->reply(j->cl, n < 0 ? NULL : j->p->out, n < 0 ? 0 : (size_t)n,
	    CLIENT_SRC_ERROR);
}
