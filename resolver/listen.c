#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "stubborn/cache.h"
#include "stubborn/clock.h"
#include "stubborn/config.h"
#include "stubborn/forward.h"
#include "stubborn/listen.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/ratelimit.h"
#include "stubborn/cookie.h"
#include "stubborn/wire.h"

#define UDP_BATCH 32
#define UDP_BUF 4096        /* larger client queries are not DNS we serve */
#define TCP_MAX_PIPELINE 64 /* queries in flight per connection */

struct udp_sock {
	struct listen *l;
	int fd;
	struct event *ev; /* added by listen_new, freed by close_udp */
};

struct tcp_conn {
	struct listen *l;
	struct tcp_conn *prev, *next;
	struct bufferevent *bev; /* freed by conn_close; NULL once closed */
	struct event *ev_idle;   /* idle timer: armed at accept, after each
				    whole query and after the last reply;
				    freed by conn_close */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	unsigned inflight;  /* queries whose reply is still owed */
	uint64_t active_ms; /* last whole query or reply */
	bool paused;        /* reading stopped at TCP_MAX_PIPELINE */
	bool closing;       /* close once the owed replies are flushed */
};

struct listen {
	struct event_base *base;
	const struct config *cfg;
	struct forward *fwd;
	struct cache *cache;
	struct metrics_worker *met;
	struct udp_sock udp[CONFIG_MAX_LISTEN];
	size_t n_udp;
	struct evconnlistener *tcp[CONFIG_MAX_LISTEN];
	size_t n_tcp;
	struct tcp_conn *conns;
	size_t n_conns;
	struct listen_limits limits;
	bool stopped;
	uint8_t rbuf[UDP_BATCH][UDP_BUF];
	uint8_t out[WIRE_MSG_MAX + 1024];
};

/* Connections of all workers together, against tcp-max-connections. */
static _Atomic unsigned tcp_total;

static int open_socket(const struct config_addr *a, int type, bool reuseport,
    char *err, size_t errlen, int *errnum);
static void udp_read_cb(evutil_socket_t fd, short what, void *arg);
static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg);
static void tcp_read_cb(struct bufferevent *bev, void *arg);
static void tcp_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_close(struct tcp_conn *c);
static void conn_arm_idle(struct tcp_conn *c);
static bool make_room(
    struct listen *l, const struct sockaddr *sa, bool at_total);
static bool same_host(
    const struct sockaddr_storage *a, const struct sockaddr *b);
static void conn_close_when_flushed(struct tcp_conn *c);
static void idle_cb(evutil_socket_t fd, short what, void *arg);
static void flushed_cb(struct bufferevent *bev, void *arg);
static void conn_release(struct tcp_conn *c);
static void udp_reply(
    const struct fwd_client *cl, const uint8_t *msg, size_t len);
static void tcp_reply(
    const struct fwd_client *cl, const uint8_t *msg, size_t len);
static void process(
    struct listen *l, const uint8_t *pkt, size_t len, struct fwd_client *cl);
static void answer_error(struct listen *l, const uint8_t *pkt, size_t len,
    const struct wire_query *q, int rcode, int ede, const char *text,
    struct fwd_client *cl);
static void answer_or_forward(struct listen *l, const uint8_t *pkt, size_t len,
    const struct wire_query *q, const uint8_t *key, size_t klen,
    struct fwd_client *cl);
static void reply_cached(struct listen *l, const uint8_t *pkt,
    const struct wire_query *q, size_t slen, struct fwd_client *cl, int ede);
static void reply_stale(struct listen *l, const uint8_t *pkt,
    const struct wire_query *q, size_t slen, const struct cache_hit *hit,
    struct fwd_client *cl);
static bool client_allowed(struct listen *l, struct ratelimit *rl,
    uint32_t rate, const struct fwd_client *cl, uint64_t now);
static void over_limit(struct listen *l, const uint8_t *pkt, size_t len,
    const struct wire_query *q, struct fwd_client *cl);
static void maybe_refresh(struct listen *l, const uint8_t *pkt,
    const struct wire_query *q, const uint8_t *key, size_t klen,
    const struct cache_hit *hit, uint64_t now);

static int
open_socket(const struct config_addr *a, int type, bool reuseport, char *err,
    size_t errlen, int *errnum)
{
	int one = 1, fd;

	fd = socket(a->ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* Each worker binds its own socket; the kernel spreads the load. */
	if (reuseport &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (type == SOCK_STREAM)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0)
		goto fail;
	if (type == SOCK_STREAM && listen(fd, 256) < 0)
		goto fail;
	return fd;
fail:
	*errnum = errno;
	snprintf(err, errlen, "cannot listen on %s (%s): %s%s", a->text,
	    type == SOCK_STREAM ? "tcp" : "udp", strerror(*errnum),
	    *errnum == EADDRINUSE
		? " (another DNS server holds it; for 127.0.0.53 that is "
		  "usually systemd-resolved's stub listener: set "
		  "DNSStubListener=no in /etc/systemd/resolved.conf)"
		: "");
	if (fd >= 0)
		close(fd);
	return -1;
}

int
listen_probe(const struct config *cfg, char *err, size_t errlen)
{
	int errnum = 0;

	for (size_t i = 0; i < cfg->n_listen; i++) {
		int fd = open_socket(
		    &cfg->listen[i], SOCK_DGRAM, false, err, errlen, &errnum);
		if (fd < 0)
			return -errnum;
		close(fd);
		fd = open_socket(
		    &cfg->listen[i], SOCK_STREAM, false, err, errlen, &errnum);
		if (fd < 0)
			return -errnum;
		close(fd);
	}
	return 0;
}

struct listen *
listen_new(struct event_base *base, const struct config *cfg,
    struct forward *fwd, struct cache *cache, struct metrics_worker *met,
    const struct listen_limits *limits, char *err, size_t errlen, int *errnum)
{
	struct listen *l = calloc(1, sizeof(*l));

	*errnum = ENOMEM;
	if (l == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->base = base;
	l->cfg = cfg;
	l->fwd = fwd;
	l->cache = cache;
	l->met = met;
	if (limits != NULL)
		l->limits = *limits;
	for (size_t i = 0; i < cfg->n_listen; i++) {
		const struct config_addr *a = &cfg->listen[i];
		struct udp_sock *u = &l->udp[l->n_udp];
		int fd = open_socket(a, SOCK_DGRAM, true, err, errlen, errnum);
		if (fd < 0)
			goto fail;
		u->l = l;
		u->fd = fd;
		l->n_udp++;
		u->ev =
		    event_new(base, fd, EV_READ | EV_PERSIST, udp_read_cb, u);
		if (u->ev == NULL || event_add(u->ev, NULL) < 0)
			goto fail_mem;
		fd = open_socket(a, SOCK_STREAM, true, err, errlen, errnum);
		if (fd < 0)
			goto fail;
		l->tcp[l->n_tcp] = evconnlistener_new(
		    base, accept_cb, l, LEV_OPT_CLOSE_ON_FREE, -1, fd);
		if (l->tcp[l->n_tcp] == NULL) {
			close(fd);
			goto fail_mem;
		}
		l->n_tcp++;
	}
	return l;
fail_mem:
	*errnum = ENOMEM;
	snprintf(err, errlen, "out of memory setting up listeners");
fail:
	listen_free(l);
	return NULL;
}

void
listen_stop(struct listen *l)
{
	struct tcp_conn *c, *next;

	if (l->stopped)
		return;
	l->stopped = true;
	for (size_t i = 0; i < l->n_udp; i++) {
		if (l->udp[i].ev) {
			event_free(l->udp[i].ev);
			l->udp[i].ev = NULL;
		}
		close(l->udp[i].fd);
		l->udp[i].fd = -1;
	}
	for (size_t i = 0; i < l->n_tcp; i++) {
		evconnlistener_free(l->tcp[i]);
		l->tcp[i] = NULL;
	}
	l->n_tcp = 0;
	for (c = l->conns; c != NULL; c = next) {
		next = c->next;
		if (c->inflight == 0) {
			conn_close(c);
		} else {
			c->closing = true;
			bufferevent_disable(c->bev, EV_READ);
		}
	}
}

size_t
listen_tcp_open(const struct listen *l)
{
	return l->n_conns;
}

void
listen_free(struct listen *l)
{
	if (l == NULL)
		return;
	listen_stop(l);
	/*
	 * conn_close unlinks each; one still owed replies is freed by its
	 * last reply, and the forwarder (freed first) has given them all.
	 */
	while (l->conns != NULL)
		conn_close(l->conns);
	free(l);
}

static void
udp_reply(const struct fwd_client *cl, const uint8_t *msg, size_t len)
{
	if (msg == NULL)
		return;
	/* A full socket buffer loses this reply; the client will retry. */
	(void)sendto(cl->fd, msg, len, 0, (const struct sockaddr *)&cl->peer,
	    cl->peer_len);
}

static void
udp_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct udp_sock *u = arg;
	struct listen *l = u->l;
	struct mmsghdr mm[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	struct sockaddr_storage peers[UDP_BATCH];
	struct fwd_client cl;
	int n;

	memset(mm, 0, sizeof(mm));
	for (int i = 0; i < UDP_BATCH; i++) {
		iov[i].iov_base = l->rbuf[i];
		iov[i].iov_len = UDP_BUF;
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
		mm[i].msg_hdr.msg_name = &peers[i];
		mm[i].msg_hdr.msg_namelen = sizeof(peers[i]);
	}
	n = recvmmsg(fd, mm, UDP_BATCH, MSG_DONTWAIT, NULL);
	for (int i = 0; i < n; i++) {
		metrics_inc(l->met, MET_QUERIES_UDP);
		if (mm[i].msg_hdr.msg_flags & MSG_TRUNC) {
			metrics_inc(l->met, MET_DROPPED);
			continue;
		}
		memset(&cl, 0, sizeof(cl));
		cl.reply = udp_reply;
		cl.fd = fd;
		memcpy(&cl.peer, &peers[i], mm[i].msg_hdr.msg_namelen);
		cl.peer_len = mm[i].msg_hdr.msg_namelen;
		process(l, l->rbuf[i], mm[i].msg_len, &cl);
	}
}

static void
process(struct listen *l, const uint8_t *pkt, size_t len, struct fwd_client *cl)
{
	struct wire_query q;
	enum wire_verdict v = wire_parse_query(pkt, len, &q);
	uint8_t key[CACHE_KEY_MAX];
	size_t klen;

	cl->max_len = cl->tcp ? WIRE_MSG_MAX
			      : wire_udp_limit(&q, l->cfg->edns_buffer_size);
	switch (v) {
	case WIRE_ACCEPT:
		break;
	case WIRE_DROP:
		metrics_inc(l->met, MET_DROPPED);
		cl->reply(cl, NULL, 0);
		return;
	case WIRE_NOTIMP:
		metrics_inc(l->met, MET_REPLIES_NOTIMP);
		answer_error(l, pkt, len, &q, WIRE_RCODE_NOTIMP, -1, NULL, cl);
		return;
	case WIRE_BADVERS:
		metrics_inc(l->met, MET_REPLIES_BADVERS);
		answer_error(l, pkt, len, &q, WIRE_RCODE_BADVERS, -1, NULL, cl);
		return;
	case WIRE_REFUSED:
		metrics_inc(l->met, MET_REPLIES_REFUSED);
		answer_error(l, pkt, len, &q, WIRE_RCODE_REFUSED,
		    WIRE_EDE_NOT_SUPPORTED, "zone transfers are not served",
		    cl);
		return;
	case WIRE_FORMERR:
	default:
		metrics_inc(l->met, MET_REPLIES_FORMERR);
		answer_error(l, pkt, len, &q, WIRE_RCODE_FORMERR, -1, NULL, cl);
		return;
	}
	klen = cache_make_key(key, pkt + q.q.name_off, q.q.name_len, q.q.qtype,
	    q.q.qclass,
	    (q.do_bit ? CACHE_KEY_DO : 0) |
		((q.flags & WIRE_CD) ? CACHE_KEY_CD : 0));
	answer_or_forward(l, pkt, len, &q, key, klen, cl);
}

/* The cache decides: fresh answer, stale answer, held failure, or upstream. */
static void
answer_or_forward(struct listen *l, const uint8_t *pkt, size_t len,
    const struct wire_query *q, const uint8_t *key, size_t klen,
    struct fwd_client *cl)
{
	const struct config *cfg = l->cfg;
	uint64_t now = clock_now_ms();
	struct cache_hit hit;
	enum cache_result r = CACHE_MISS;
	size_t slen = 0;
	unsigned flags = 0;
	int rc;

	memset(&hit, 0, sizeof(hit));
	/* RFC 8482 ANY is passed through, never answered from the cache. */
	if (q->q.qtype != WIRE_TYPE_ANY)
		r = cache_lookup(l->cache, key, klen, now, cfg->stale_ttl,
		    l->out, WIRE_MSG_MAX, &slen, &hit);
	switch (r) {
	case CACHE_FRESH:
		if (!client_allowed(
			l, l->limits.hit, cfg->cache_qps, cl, now)) {
			over_limit(l, pkt, len, q, cl);
			return;
		}
		metrics_inc(l->met, MET_CACHE_HITS);
		reply_cached(l, pkt, q, slen, cl, -1);
		maybe_refresh(l, pkt, q, key, klen, &hit, now);
		return;
	case CACHE_FAILED:
		/* Resolution failed moments ago (RFC 9520): do not ask again.
		 */
		metrics_inc(l->met, MET_FAILURE_CACHE_HITS);
		answer_error(l, pkt, len, q, WIRE_RCODE_SERVFAIL,
		    WIRE_EDE_CACHED_ERROR, "recent upstream failure", cl);
		return;
	case CACHE_STALE:
		if (!cfg->serve_stale)
			break;
		/* Held after a failed refresh: stale at once (RFC 8767 5). */
		if (hit.hold_until_ms > now) {
			reply_stale(l, pkt, q, slen, &hit, cl);
			return;
		}
		flags = FWD_HAVE_STALE;
		break;
	case CACHE_MISS:
	default:
		break;
	}
	/* Only work that costs upstream queries counts against client-qps. */
	if (!client_allowed(l, l->limits.miss,
		q->has_cookie && cookie_valid_query(q, &cl->peer)
		    ? cfg->client_qps_cookie
		    : cfg->client_qps,
		cl, now)) {
		if (flags == FWD_HAVE_STALE) {
			metrics_inc(l->met, MET_RATELIMITED_STALE);
			reply_stale(l, pkt, q, slen, &hit, cl);
		} else
			over_limit(l, pkt, len, q, cl);
		return;
	}
	metrics_inc(l->met, MET_CACHE_MISSES);
	rc = forward_query(l->fwd, pkt, len, q, key, klen, cl, flags);
	if (rc < 0 && flags == FWD_HAVE_STALE) {
		/* l->out still holds the stale copy the lookup made. */
		reply_stale(l, pkt, q, slen, &hit, cl);
		return;
	}
	if (rc < 0)
		answer_error(l, pkt, len, q, WIRE_RCODE_SERVFAIL,
		    WIRE_EDE_OTHER,
		    rc == -ESHUTDOWN ? "shutting down"
				     : "too many queries in flight",
		    cl);
}

/*
 * The client's token bucket (rate per second, burst twice that); the first
 * time a client goes over, one log line (itself rate-limited).
 */
static bool
client_allowed(struct listen *l, struct ratelimit *rl, uint32_t rate,
    const struct fwd_client *cl, uint64_t now)
{
	static _Atomic uint64_t last_log_ms;
	uint8_t prefix[17];
	size_t plen;
	enum ratelimit_verdict v;
	char addr[INET6_ADDRSTRLEN] = "?";

	if (rl == NULL || rate == 0)
		return true;
	plen = ratelimit_prefix((const struct sockaddr *)&cl->peer,
	    l->cfg->client_prefix_v4, l->cfg->client_prefix_v6, prefix);
	v = ratelimit_check(rl, prefix, plen, rate,
	    rate > UINT32_MAX / 2 ? UINT32_MAX : rate * 2, now);
	if (v == RATELIMIT_PASS)
		return true;
	if (v == RATELIMIT_LIMITED_FIRST) {
		uint64_t last = atomic_load(&last_log_ms);
		if (now >= last + 1000 &&
		    atomic_compare_exchange_strong(&last_log_ms, &last, now)) {
			if (cl->peer.ss_family == AF_INET6)
				inet_ntop(AF_INET6,
				    &((const struct sockaddr_in6 *)&cl->peer)
					 ->sin6_addr,
				    addr, sizeof(addr));
			else
				inet_ntop(AF_INET,
				    &((const struct sockaddr_in *)&cl->peer)
					 ->sin_addr,
				    addr, sizeof(addr));
			log_warn("listen",
			    "client over its query limit client=%s qps=%u "
			    "action=%s",
			    addr, rate,
			    l->cfg->ratelimit_action == CONFIG_RL_DROP ? "drop"
				: l->cfg->ratelimit_action == CONFIG_RL_TRUNCATE
				? "truncate"
				: "refuse");
		}
	}
	return false;
}

/* An over-limit query without a stale answer: refuse, drop or TC=1. */
static void
over_limit(struct listen *l, const uint8_t *pkt, size_t len,
    const struct wire_query *q, struct fwd_client *cl)
{
	int action = l->cfg->ratelimit_action;
	int n;

	if (action == CONFIG_RL_DROP) {
		metrics_inc(l->met, MET_RATELIMITED_DROP);
		cl->reply(cl, NULL, 0);
		return;
	}
	if (action == CONFIG_RL_TRUNCATE && !cl->tcp) {
		/* Genuine clients retry over TCP; spoofed sources cannot. */
		metrics_inc(l->met, MET_RATELIMITED_TRUNCATE);
		n = wire_build_error(l->out, sizeof(l->out), pkt, len, q,
		    WIRE_RCODE_NOERROR, l->cfg->edns_buffer_size, -1, NULL);
		if (n >= 0)
			wire_put16(l->out + 2,
			    (uint16_t)(WIRE_FLAGS(l->out) | WIRE_TC));
		cl->reply(cl, n < 0 ? NULL : l->out, n < 0 ? 0 : (size_t)n);
		return;
	}
	metrics_inc(l->met, MET_RATELIMITED_REFUSE);
	answer_error(l, pkt, len, q, WIRE_RCODE_REFUSED, WIRE_EDE_OTHER,
	    "rate limited", cl);
}

/* Sends the response in l->out (slen bytes), made into this client's reply. */
static void
reply_cached(struct listen *l, const uint8_t *pkt, const struct wire_query *q,
    size_t slen, struct fwd_client *cl, int ede)
{
	int n = wire_make_reply(l->out, slen, sizeof(l->out), cl->max_len, pkt,
	    q, l->cfg->edns_buffer_size, ede, ede >= 0 ? "stale answer" : NULL);

	if (n < 0) {
		cl->reply(cl, NULL, 0);
		return;
	}
	if (WIRE_FLAGS(l->out) & WIRE_TC)
		metrics_inc(l->met, MET_REPLIES_TRUNCATED);
	cl->reply(cl, l->out,
	    cookie_attach(
		l->out, (size_t)n, sizeof(l->out), cl->max_len, q, &cl->peer));
}

static void
reply_stale(struct listen *l, const uint8_t *pkt, const struct wire_query *q,
    size_t slen, const struct cache_hit *hit, struct fwd_client *cl)
{
	metrics_inc(l->met, MET_STALE_ANSWERS);
	reply_cached(l, pkt, q, slen, cl,
	    hit->rcode == WIRE_RCODE_NXDOMAIN ? WIRE_EDE_STALE_NXDOMAIN
					      : WIRE_EDE_STALE);
}

/*
 * Refresh-ahead: a name asked for in the last refresh-ahead percent of its
 * TTL is fetched again in the background, so popular names never expire.
 */
static void
maybe_refresh(struct listen *l, const uint8_t *pkt, const struct wire_query *q,
    const uint8_t *key, size_t klen, const struct cache_hit *hit, uint64_t now)
{
	uint32_t pct = l->cfg->refresh_ahead;

	if (pct == 0 || hit->hold_until_ms > now ||
	    (uint64_t)hit->ttl_left * 100 > (uint64_t)hit->ttl * pct)
		return;
	forward_refresh(l->fwd, key, klen, pkt + q->q.name_off, q->q.name_len,
	    q->q.qtype, q->q.qclass, key[klen - 1]);
}

static void
answer_error(struct listen *l, const uint8_t *pkt, size_t len,
    const struct wire_query *q, int rcode, int ede, const char *text,
    struct fwd_client *cl)
{
	int n = wire_build_error(l->out, sizeof(l->out), pkt, len, q, rcode,
	    l->cfg->edns_buffer_size, ede, text);

	if (rcode == WIRE_RCODE_SERVFAIL)
		metrics_inc(l->met, MET_REPLIES_SERVFAIL);
	/* A malformed cookie is why FORMERR is sent: none goes back then. */
	if (n >= 0 && rcode != WIRE_RCODE_FORMERR)
		n = (int)cookie_attach(l->out, (size_t)n, sizeof(l->out),
		    cl->max_len, q, &cl->peer);
	cl->reply(cl, n < 0 ? NULL : l->out, n < 0 ? 0 : (size_t)n);
}

static bool
same_host(const struct sockaddr_storage *a, const struct sockaddr *b)
{
	if (a->ss_family != b->sa_family)
		return false;
	if (b->sa_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			   &((const struct sockaddr_in6 *)b)->sin6_addr,
			   16) == 0;
	return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
	    ((const struct sockaddr_in *)b)->sin_addr.s_addr;
}

/*
 * At a limit, the longest-idle connection with nothing in flight (of this
 * client, or of anyone when the total is reached) is closed to admit the
 * new one (RFC 7766 6.2.3), so idle connections cannot lock others out.
 * Per client, each worker allows its share of tcp-max-per-client.  False
 * when nothing could be closed: the new connection is refused.
 */
static bool
make_room(struct listen *l, const struct sockaddr *sa, bool at_total)
{
	unsigned workers = l->cfg->workers ? l->cfg->workers : 1;
	unsigned share = (l->cfg->tcp_max_per_client + workers - 1) / workers;
	struct tcp_conn *idlest = NULL, *idlest_own = NULL;
	unsigned own = 0;

	for (struct tcp_conn *c = l->conns; c != NULL; c = c->next) {
		bool mine = same_host(&c->peer, sa);
		own += mine;
		if (c->inflight > 0 || c->closing)
			continue;
		if (idlest == NULL || c->active_ms < idlest->active_ms)
			idlest = c;
		if (mine &&
		    (idlest_own == NULL ||
			c->active_ms < idlest_own->active_ms))
			idlest_own = c;
	}
	if (own >= (share ? share : 1)) {
		if (idlest_own == NULL)
			return false;
		metrics_inc(l->met, MET_TCP_IDLE_CLOSED);
		conn_close(idlest_own);
		return true;
	}
	if (at_total) {
		if (idlest == NULL)
			return false;
		metrics_inc(l->met, MET_TCP_IDLE_CLOSED);
		conn_close(idlest);
	}
	return true;
}

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct listen *l = arg;
	struct tcp_conn *c;
	struct timeval idle;
	unsigned workers = l->cfg->workers ? l->cfg->workers : 1;
	/*
	 * Each worker keeps to its share of the total, so a worker at the
	 * total always has connections of its own to make room with.
	 */
	bool at_total =
	    atomic_load(&tcp_total) >= l->cfg->tcp_max_connections ||
	    l->n_conns >= (l->cfg->tcp_max_connections + workers - 1) / workers;

	if (l->stopped || !make_room(l, sa, at_total)) {
		metrics_inc(l->met, MET_TCP_REJECTED);
		close(fd);
		return;
	}
	/*
	 * The total is shared by the workers: another worker's connections
	 * may fill it while this one had nothing idle to close.
	 */
	if (atomic_fetch_add(&tcp_total, 1) + 1 > l->cfg->tcp_max_connections) {
		atomic_fetch_sub(&tcp_total, 1);
		metrics_inc(l->met, MET_TCP_REJECTED);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c != NULL) {
		c->bev =
		    bufferevent_socket_new(l->base, fd, BEV_OPT_CLOSE_ON_FREE);
		c->ev_idle = evtimer_new(l->base, idle_cb, c);
	}
	if (c == NULL || c->bev == NULL || c->ev_idle == NULL) {
		atomic_fetch_sub(&tcp_total, 1);
		if (c == NULL || c->bev == NULL)
			close(fd);
		if (c != NULL) {
			if (c->bev)
				bufferevent_free(c->bev);
			if (c->ev_idle)
				event_free(c->ev_idle);
			free(c);
		}
		return;
	}
	c->l = l;
	c->active_ms = clock_now_ms();
	memcpy(&c->peer, sa, (size_t)salen);
	c->peer_len = (socklen_t)salen;
	metrics_inc(l->met, MET_TCP_ACCEPTED);
	c->next = l->conns;
	if (l->conns)
		l->conns->prev = c;
	l->conns = c;
	l->n_conns++;
	idle.tv_sec = l->cfg->tcp_idle_timeout_ms / 1000;
	idle.tv_usec = (l->cfg->tcp_idle_timeout_ms % 1000) * 1000;
	/*
	 * A reader too slow to take its answers within the idle time is cut
	 * off; the idle timer itself is ours, because only whole messages
	 * count as activity (RFC 7766 6.2.3), not a byte trickled now and then.
	 */
	bufferevent_set_timeouts(c->bev, NULL, &idle);
	bufferevent_setcb(c->bev, tcp_read_cb, NULL, tcp_event_cb, c);
	bufferevent_enable(c->bev, EV_READ);
	conn_arm_idle(c);
}

static void
conn_arm_idle(struct tcp_conn *c)
{
	struct timeval idle;
	uint32_t ms = c->l->cfg->tcp_idle_timeout_ms;

	idle.tv_sec = ms / 1000;
	idle.tv_usec = (ms % 1000) * 1000;
	evtimer_add(c->ev_idle, &idle);
}

static void
idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tcp_conn *c = arg;

	/* Waiting for our own upstream is not the client being idle. */
	if (c->inflight > 0) {
		conn_arm_idle(c);
		return;
	}
	metrics_inc(c->l->met, MET_TCP_IDLE_CLOSED);
	conn_close(c);
}

static void
tcp_read_cb(struct bufferevent *bev, void *arg)
{
	struct tcp_conn *c = arg;
	struct listen *l = c->l;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct fwd_client cl;
	uint8_t lenb[2];
	uint8_t *msg;
	size_t mlen;

	while (c->bev != NULL && !l->stopped && !c->closing) {
		if (c->inflight >= TCP_MAX_PIPELINE) {
			/* Back-pressure: the rest waits in the socket buffer.
			 */
			bufferevent_disable(bev, EV_READ);
			c->paused = true;
			return;
		}
		if (evbuffer_copyout(in, lenb, 2) < 2)
			return;
		mlen = wire_u16(lenb);
		if (evbuffer_get_length(in) < mlen + 2)
			return;
		evbuffer_drain(in, 2);
		msg = evbuffer_pullup(in, (ssize_t)mlen);
		if (msg == NULL && mlen > 0) {
			conn_close(c);
			return;
		}
		metrics_inc(l->met, MET_QUERIES_TCP);
		c->active_ms = clock_now_ms();
		conn_arm_idle(c);
		memset(&cl, 0, sizeof(cl));
		cl.reply = tcp_reply;
		cl.tcp = true;
		cl.conn = c;
		cl.fd = -1;
		memcpy(&cl.peer, &c->peer, c->peer_len);
		cl.peer_len = c->peer_len;
		c->inflight++;
		process(l, msg ? msg : lenb, mlen, &cl);
		if (c->bev != NULL)
			evbuffer_drain(in, mlen);
	}
}

static void
tcp_reply(const struct fwd_client *cl, const uint8_t *msg, size_t len)
{
	struct tcp_conn *c = cl->conn;
	uint8_t lenb[2];

	if (msg != NULL && c->bev != NULL) {
		struct evbuffer *out = bufferevent_get_output(c->bev);
		wire_put16(lenb, (uint16_t)len);
		evbuffer_add(out, lenb, 2);
		evbuffer_add(out, msg, len);
	}
	conn_release(c);
}

/* One owed reply was sent (or will never come). */
static void
conn_release(struct tcp_conn *c)
{
	struct listen *l = c->l;

	c->inflight--;
	if (c->bev == NULL) {
		if (c->inflight == 0)
			free(c);
		return;
	}
	if ((l->stopped || c->closing) && c->inflight == 0) {
		conn_close_when_flushed(c);
		return;
	}
	if (c->inflight == 0) {
		c->active_ms = clock_now_ms();
		conn_arm_idle(c);
	}
	if (c->paused && c->inflight < TCP_MAX_PIPELINE / 2) {
		c->paused = false;
		bufferevent_enable(c->bev, EV_READ);
		/*
		 * Queries already buffered raise no new read event; deferred,
		 * so the forwarder is not re-entered from inside a reply.
		 */
		bufferevent_trigger(c->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	}
}

/* Stops reading and closes as soon as everything written has left. */
static void
conn_close_when_flushed(struct tcp_conn *c)
{
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		conn_close(c);
		return;
	}
	bufferevent_setcb(c->bev, NULL, flushed_cb, tcp_event_cb, c);
}

static void
flushed_cb(struct bufferevent *bev, void *arg)
{
	struct tcp_conn *c = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_close(c);
}

static void
tcp_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tcp_conn *c = arg;

	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
	    c->inflight > 0) {
		/* A half-closed client still gets the answers it asked for. */
		c->closing = true;
		bufferevent_disable(bev, EV_READ);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		metrics_inc(c->l->met, MET_TCP_IDLE_CLOSED);
	conn_close(c);
}

/*
 * Closes the socket at once; the struct lives on while the forwarder still
 * owes it replies (conn_release frees it then).
 */
static void
conn_close(struct tcp_conn *c)
{
	struct listen *l = c->l;

	if (c->bev == NULL)
		return;
	bufferevent_free(c->bev);
	c->bev = NULL;
	event_free(c->ev_idle);
	c->ev_idle = NULL;
	atomic_fetch_sub(&tcp_total, 1);
	if (c->prev)
		c->prev->next = c->next;
	else
		l->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	l->n_conns--;
	if (c->inflight == 0)
		free(c);
}
