#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <sodium.h>

#include "stubborn/cache.h"
#include "stubborn/clock.h"
#include "stubborn/config.h"
#include "stubborn/forward.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/msg.h"
#include "stubborn/rng.h"
#include "stubborn/wire.h"

#define FWD_BUCKETS 4096          /* power of two */
#define FWD_MAX_INFLIGHT 8192     /* per worker */
#define FWD_MAX_WAITERS 256       /* per query */
#define FWD_QBYTES_MAX (WIRE_HDR_LEN + WIRE_NAME_MAX + 4)
#define FWD_BIND_TRIES 8

/* Why the last attempt failed; picks the EDE once every upstream failed. */
enum fail_kind {
	FAIL_NONE = 0,
	FAIL_TIMEOUT,
	FAIL_NETWORK,
	FAIL_RCODE,
	FAIL_MALFORMED,
};

struct fwd_waiter {
	struct fwd_waiter *next;
	struct fwd_client cl;
	struct wire_query q;
	size_t qlen;                       /* header + question bytes */
	uint8_t qbytes[FWD_QBYTES_MAX];
};

struct fwd_query {
	struct forward *f;
	struct fwd_query *hnext;           /* bucket chain */
	struct fwd_query *dead_next;       /* reap list, once finished */
	uint64_t hash;
	uint8_t key[CACHE_KEY_MAX];
	size_t klen;
	uint8_t qname[WIRE_NAME_MAX];      /* lower-cased */
	size_t qname_len;
	uint16_t qtype, qclass, qflags;
	bool do_bit;
	bool cacheable;
	struct fwd_waiter *waiters;
	unsigned nwaiters;

	unsigned up;                       /* index of the current upstream */
	unsigned tried;                    /* upstreams that failed so far */
	bool edns;                         /* current attempt sends OPT */
	bool tcp;                          /* current attempt is over TCP */
	enum fail_kind fail;
	uint16_t id;                       /* ID of the current attempt */
	uint64_t start_ms;

	/*
	 * Event lifetimes: ev_read and bev belong to one attempt and are
	 * freed by attempt_close(); ev_timer lives as long as the query and is
	 * freed by query_free().  Both deletions are idempotent.
	 */
	int fd;
	struct event *ev_read;
	struct bufferevent *bev;
	struct event *ev_timer;
	bool done;
};

struct forward {
	struct event_base *base;
	const struct config *cfg;
	struct cache *cache;
	struct metrics_worker *met;
	struct msg_policy policy;
	unsigned preferred;                /* the upstream that last worked */
	size_t inflight;
	struct fwd_query *buckets[FWD_BUCKETS];
	uint8_t hash_key[crypto_shorthash_KEYBYTES];
	struct fwd_query *dead;
	struct event *ev_reap;
	bool draining;
	void (*drain_done)(void *);
	void *drain_arg;
	struct event *ev_drain;
	uint8_t buf[WIRE_MSG_MAX + 512];   /* scratch for replies */
};

static struct fwd_query *table_find(struct forward *f, uint64_t h,
    const uint8_t *key, size_t klen);
static void table_remove(struct forward *f, struct fwd_query *q);
static int add_waiter(struct fwd_query *q, const uint8_t *query,
    const struct wire_query *wq, const struct fwd_client *cl);
static void attempt_start(struct fwd_query *q);
static void attempt_close(struct fwd_query *q);
static void attempt_fail(struct fwd_query *q, enum fail_kind why);
static int send_udp(struct fwd_query *q);
static int send_tcp(struct fwd_query *q);
static int build_upstream_query(struct fwd_query *q, uint8_t *out, size_t cap);
static bool reply_matches(struct fwd_query *q, const uint8_t *m, size_t len);
static void handle_reply(struct fwd_query *q, uint8_t *m, size_t len);
static void finish_answer(struct fwd_query *q, uint8_t *m, size_t len,
    const struct msg_info *info);
static void finish_servfail(struct fwd_query *q);
static void query_finish(struct fwd_query *q);
static struct fwd_waiter *query_detach(struct fwd_query *q);
static void free_waiters(struct fwd_waiter *w);
static void query_free(struct fwd_query *q);
static void udp_read_cb(evutil_socket_t fd, short what, void *arg);
static void timeout_cb(evutil_socket_t fd, short what, void *arg);
static void tcp_read_cb(struct bufferevent *bev, void *arg);
static void tcp_event_cb(struct bufferevent *bev, short what, void *arg);
static void reap_cb(evutil_socket_t fd, short what, void *arg);
static void drain_cb(evutil_socket_t fd, short what, void *arg);
static void check_drained(struct forward *f);

struct forward *
forward_new(struct event_base *base, const struct config *cfg,
    struct cache *cache, struct metrics_worker *met)
{
	struct forward *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return NULL;
	f->base = base;
	f->cfg = cfg;
	f->cache = cache;
	f->met = met;
	f->policy.min_ttl = cfg->min_ttl;
	f->policy.max_ttl = cfg->max_ttl;
	f->policy.max_negative_ttl = cfg->max_negative_ttl;
	rng_bytes(f->hash_key, sizeof(f->hash_key));
	f->ev_reap = event_new(base, -1, 0, reap_cb, f);
	f->ev_drain = event_new(base, -1, 0, drain_cb, f);
	if (f->ev_reap == NULL || f->ev_drain == NULL) {
		forward_free(f);
		return NULL;
	}
	return f;
}

void
forward_free(struct forward *f)
{
	if (f == NULL)
		return;
	for (size_t b = 0; b < FWD_BUCKETS; b++) {
		while (f->buckets[b] != NULL) {
			struct fwd_query *q = f->buckets[b];
			query_finish(q);
		}
	}
	reap_cb(-1, 0, f);
	if (f->ev_reap)
		event_free(f->ev_reap);
	if (f->ev_drain)
		event_free(f->ev_drain);
	free(f);
}

size_t
forward_inflight(const struct forward *f)
{
	return f->inflight;
}

void
forward_drain(struct forward *f, void (*done)(void *arg), void *arg)
{
	f->draining = true;
	f->drain_done = done;
	f->drain_arg = arg;
	check_drained(f);
}

static void
check_drained(struct forward *f)
{
	if (f->draining && f->inflight == 0 && f->drain_done != NULL)
		event_active(f->ev_drain, 0, 0);
}

static void
drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct forward *f = arg;
	void (*done)(void *) = f->drain_done;

	f->drain_done = NULL;
	if (done)
		done(f->drain_arg);
}

static struct fwd_query *
table_find(struct forward *f, uint64_t h, const uint8_t *key, size_t klen)
{
	for (struct fwd_query *q = f->buckets[h & (FWD_BUCKETS - 1)]; q;
	    q = q->hnext)
		if (q->hash == h && q->klen == klen &&
		    memcmp(q->key, key, klen) == 0)
			return q;
	return NULL;
}

static void
table_remove(struct forward *f, struct fwd_query *q)
{
	struct fwd_query **pp = &f->buckets[q->hash & (FWD_BUCKETS - 1)];

	for (; *pp != NULL; pp = &(*pp)->hnext) {
		if (*pp == q) {
			*pp = q->hnext;
			q->hnext = NULL;
			f->inflight--;
			return;
		}
	}
}

static int
add_waiter(struct fwd_query *q, const uint8_t *query,
    const struct wire_query *wq, const struct fwd_client *cl)
{
	struct fwd_waiter *w;

	/*
	 * A client repeating its own query (same transport, address and ID)
	 * is already waiting: the retry costs nothing, and it gets one reply.
	 */
	for (w = q->waiters; w != NULL; w = w->next) {
		if (w->q.id == wq->id && w->cl.tcp == cl->tcp &&
		    w->cl.conn == cl->conn && w->cl.peer_len == cl->peer_len &&
		    memcmp(&w->cl.peer, &cl->peer, cl->peer_len) == 0)
			return -EALREADY;
	}
	if (q->nwaiters >= FWD_MAX_WAITERS || wq->q.end > FWD_QBYTES_MAX)
		return -EBUSY;
	w = malloc(sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	w->cl = *cl;
	w->q = *wq;
	w->qlen = wq->q.end;
	memcpy(w->qbytes, query, w->qlen);
	w->next = q->waiters;
	q->waiters = w;
	q->nwaiters++;
	return 0;
}

int
forward_query(struct forward *f, const uint8_t *query, size_t len,
    const struct wire_query *wq, const uint8_t *key, size_t klen,
    const struct fwd_client *cl)
{
	uint64_t h;
	struct fwd_query *q;
	int r;

	(void)len;
	if (f->draining)
		return -ESHUTDOWN;
	if (klen > CACHE_KEY_MAX || wq->q.name_len > WIRE_NAME_MAX)
		return -EINVAL;
	crypto_shorthash((unsigned char *)&h, key, klen, f->hash_key);
	q = table_find(f, h, key, klen);
	if (q != NULL) {
		r = add_waiter(q, query, wq, cl);
		if (r == -EALREADY) {
			cl->reply(cl, NULL, 0);
			return 0;
		}
		if (r == 0)
			metrics_inc(f->met, MET_COALESCED);
		return r;
	}
	if (f->inflight >= FWD_MAX_INFLIGHT) {
		metrics_inc(f->met, MET_INFLIGHT_OVERFLOW);
		return -EBUSY;
	}
	q = calloc(1, sizeof(*q));
	if (q == NULL)
		return -ENOMEM;
	q->f = f;
	q->fd = -1;
	q->hash = h;
	memcpy(q->key, key, klen);
	q->klen = klen;
	memcpy(q->qname, query + wq->q.name_off, wq->q.name_len);
	q->qname_len = wq->q.name_len;
	wire_name_lower(q->qname, q->qname_len);
	q->qtype = wq->q.qtype;
	q->qclass = wq->q.qclass;
	q->qflags = wq->flags & WIRE_CD;
	q->do_bit = wq->do_bit;
	/* RFC 8482 answers to ANY differ by server and moment: not cached. */
	q->cacheable = wq->q.qtype != WIRE_TYPE_ANY;
	q->ev_timer = evtimer_new(f->base, timeout_cb, q);
	if (q->ev_timer == NULL || add_waiter(q, query, wq, cl) < 0) {
		if (q->ev_timer)
			event_free(q->ev_timer);
		free(q);
		return -ENOMEM;
	}
	q->hnext = f->buckets[h & (FWD_BUCKETS - 1)];
	f->buckets[h & (FWD_BUCKETS - 1)] = q;
	f->inflight++;
	q->up = f->preferred % (unsigned)f->cfg->n_upstream;
	q->edns = true;
	q->start_ms = clock_now_ms();
	attempt_start(q);
	return 0;
}

static int
build_upstream_query(struct fwd_query *q, uint8_t *out, size_t cap)
{
	q->id = rng_id();
	return wire_build_query(out, cap, q->id, WIRE_RD | q->qflags, q->qname,
	    q->qname_len, q->qtype, q->qclass,
	    q->edns ? q->f->cfg->edns_buffer_size : 0, q->do_bit);
}

static void
attempt_start(struct fwd_query *q)
{
	int r = q->tcp ? send_tcp(q) : send_udp(q);
	struct timeval tv;
	uint32_t ms = q->f->cfg->upstream_timeout_ms;

	if (r < 0) {
		attempt_fail(q, FAIL_NETWORK);
		return;
	}
	metrics_inc(q->f->met, MET_UPSTREAM_QUERIES);
	/* TCP needs a handshake and usually carries a big answer. */
	if (q->tcp)
		ms *= 2;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(q->ev_timer, &tv);
}

static int
send_udp(struct fwd_query *q)
{
	const struct config_addr *up = &q->f->cfg->upstream[q->up];
	uint8_t pkt[FWD_QBYTES_MAX + 64];
	int n, fd, r = -1;

	fd = socket(up->ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A random source port (RFC 5452 9.2); the kernel's pick if all busy. */
	for (int i = 0; i < FWD_BIND_TRIES && r < 0; i++) {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		ss.ss_family = up->ss.ss_family;
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = htons(rng_port());
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = htons(rng_port());
		r = bind(fd, (struct sockaddr *)&ss, up->len);
	}
	/* connect() makes the kernel drop datagrams from any other source. */
	if (connect(fd, (const struct sockaddr *)&up->ss, up->len) < 0)
		goto fail;
	n = build_upstream_query(q, pkt, sizeof(pkt));
	if (n < 0 || send(fd, pkt, (size_t)n, 0) != n)
		goto fail;
	q->fd = fd;
	q->ev_read = event_new(q->f->base, fd, EV_READ | EV_PERSIST, udp_read_cb, q);
	if (q->ev_read == NULL || event_add(q->ev_read, NULL) < 0)
		goto fail_ev;
	return 0;
fail_ev:
	q->fd = -1;
	if (q->ev_read) {
		event_free(q->ev_read);
		q->ev_read = NULL;
	}
fail:
	r = -errno;
	close(fd);
	return r < 0 ? r : -EIO;
}

static int
send_tcp(struct fwd_query *q)
{
	const struct config_addr *up = &q->f->cfg->upstream[q->up];
	uint8_t pkt[FWD_QBYTES_MAX + 64 + 2];
	int n;

	q->bev = bufferevent_socket_new(q->f->base, -1,
	    BEV_OPT_CLOSE_ON_FREE);
	if (q->bev == NULL)
		return -ENOMEM;
	n = build_upstream_query(q, pkt + 2, sizeof(pkt) - 2);
	if (n < 0)
		return n;
	wire_put16(pkt, (uint16_t)n);
	bufferevent_setcb(q->bev, tcp_read_cb, NULL, tcp_event_cb, q);
	/* Length and message in one write (RFC 7766 8). */
	if (bufferevent_write(q->bev, pkt, (size_t)n + 2) < 0 ||
	    bufferevent_socket_connect(q->bev,
		(const struct sockaddr *)&up->ss, (int)up->len) < 0)
		return -ECONNREFUSED;
	bufferevent_enable(q->bev, EV_READ | EV_WRITE);
	return 0;
}

static void
attempt_close(struct fwd_query *q)
{
	if (q->ev_read != NULL) {
		event_free(q->ev_read);
		q->ev_read = NULL;
	}
	if (q->fd >= 0) {
		close(q->fd);
		q->fd = -1;
	}
	if (q->bev != NULL) {
		bufferevent_free(q->bev);
		q->bev = NULL;
	}
	if (q->ev_timer != NULL)
		evtimer_del(q->ev_timer);
}

static void
attempt_fail(struct fwd_query *q, enum fail_kind why)
{
	struct forward *f = q->f;
	size_t n = f->cfg->n_upstream;
	char name[WIRE_NAME_MAX * 4 + 8];
	static const char *const why_text[] = {"none", "timeout",
	    "network", "rcode", "malformed"};

	attempt_close(q);
	q->fail = why;
	q->tried++;
	log_debug("forward", "upstream attempt failed up=%s reason=%s qname=\"%s\"",
	    f->cfg->upstream[q->up].text, why_text[why],
	    wire_name_text(q->qname, q->qname_len, name, sizeof(name)));
	if (q->tried >= n) {
		finish_servfail(q);
		return;
	}
	q->up = (q->up + 1) % (unsigned)n;
	q->edns = true;
	q->tcp = false;
	attempt_start(q);
}

static bool
reply_matches(struct fwd_query *q, const uint8_t *m, size_t len)
{
	struct wire_question wq;

	if (len < WIRE_HDR_LEN || WIRE_ID(m) != q->id ||
	    !(WIRE_FLAGS(m) & WIRE_QR))
		return false;
	/* FORMERR may come without the question (RFC 6891 7). */
	if (WIRE_QDCOUNT(m) == 0 && WIRE_RCODE(WIRE_FLAGS(m)) == WIRE_RCODE_FORMERR)
		return true;
	if (WIRE_QDCOUNT(m) != 1 || wire_read_question(m, len, &wq) < 0)
		return false;
	return wq.qtype == q->qtype && wq.qclass == q->qclass &&
	    wire_name_equal(m + wq.name_off, wq.name_len, q->qname,
		q->qname_len);
}

static void
udp_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fwd_query *q = arg;
	uint8_t *m = q->f->buf;
	ssize_t n;

	for (int i = 0; i < 16; i++) {
		n = recv(fd, m, WIRE_MSG_MAX, 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			/* ICMP port or host unreachable: fail now, not at RTO. */
			metrics_inc(q->f->met, MET_UPSTREAM_ERRORS);
			attempt_fail(q, FAIL_NETWORK);
			return;
		}
		if (!reply_matches(q, m, (size_t)n)) {
			metrics_inc(q->f->met, MET_UPSTREAM_MISMATCHED);
			continue;
		}
		handle_reply(q, m, (size_t)n);
		return;
	}
}

static void
tcp_read_cb(struct bufferevent *bev, void *arg)
{
	struct fwd_query *q = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	uint8_t lenb[2];
	size_t mlen;

	for (;;) {
		if (evbuffer_copyout(in, lenb, 2) < 2)
			return;
		mlen = wire_u16(lenb);
		if (evbuffer_get_length(in) < mlen + 2)
			return;
		evbuffer_drain(in, 2);
		evbuffer_remove(in, q->f->buf, mlen);
		if (reply_matches(q, q->f->buf, mlen)) {
			handle_reply(q, q->f->buf, mlen);
			return;
		}
		metrics_inc(q->f->met, MET_UPSTREAM_MISMATCHED);
	}
}

static void
tcp_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct fwd_query *q = arg;

	if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
		metrics_inc(q->f->met, MET_UPSTREAM_ERRORS);
		attempt_fail(q, FAIL_NETWORK);
	}
}

static void
timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fwd_query *q = arg;

	metrics_inc(q->f->met, MET_UPSTREAM_TIMEOUTS);
	attempt_fail(q, FAIL_TIMEOUT);
}

static void
handle_reply(struct fwd_query *q, uint8_t *m, size_t len)
{
	struct forward *f = q->f;
	struct msg_info info;

	if (msg_classify(m, len, &f->policy, &info) < 0) {
		metrics_inc(f->met, MET_UPSTREAM_MALFORMED);
		attempt_fail(q, FAIL_MALFORMED);
		return;
	}
	if (info.tc && !q->tcp) {
		metrics_inc(f->met, MET_UPSTREAM_TCP_FALLBACKS);
		attempt_close(q);
		q->tcp = true;
		attempt_start(q);
		return;
	}
	if (info.kind == MSG_FORMERR && q->edns) {
		/* An old server that rejects EDNS: ask it again without. */
		metrics_inc(f->met, MET_UPSTREAM_EDNS_FALLBACKS);
		attempt_close(q);
		q->edns = false;
		attempt_start(q);
		return;
	}
	if (info.kind == MSG_SERVFAIL || info.kind == MSG_REFUSED ||
	    info.kind == MSG_FORMERR) {
		metrics_inc(f->met, MET_UPSTREAM_ERRORS);
		attempt_fail(q, FAIL_RCODE);
		return;
	}
	metrics_inc(f->met, MET_UPSTREAM_ANSWERS);
	f->preferred = q->up;
	finish_answer(q, m, len, &info);
}

static void
finish_answer(struct fwd_query *q, uint8_t *m, size_t len,
    const struct msg_info *info)
{
	struct forward *f = q->f;
	uint8_t ext;
	int n = wire_strip_opt(m, len, &ext);
	uint8_t *out = f->buf + WIRE_MSG_MAX / 2;
	struct fwd_waiter *ws;

	/* The client sees the TTLs that later cache hits count down from. */
	if (n < 0 || (info->cacheable && wire_set_ttls(m, (size_t)n,
						info->ttl) < 0)) {
		metrics_inc(f->met, MET_UPSTREAM_MALFORMED);
		attempt_fail(q, FAIL_MALFORMED);
		return;
	}
	attempt_close(q);
	/* TC over TCP would be a lie we must not cache. */
	if (q->cacheable && info->cacheable && !info->tc)
		cache_store(f->cache, q->key, q->klen, m, (size_t)n, info->ttl,
		    clock_now_ms());
	if ((size_t)n > WIRE_MSG_MAX / 2 - 1024) {
		/* Too big for the second half of buf: move to the heap. */
		out = malloc((size_t)n + 1024);
		if (out == NULL) {
			finish_servfail(q);
			return;
		}
	}
	/*
	 * Detached first: a reply may let a TCP client send more queries at
	 * once, and those must not join a query that is already answered.
	 */
	ws = query_detach(q);
	for (struct fwd_waiter *w = ws; w != NULL; w = w->next) {
		int r;
		memcpy(out, m, (size_t)n);
		r = wire_make_reply(out, (size_t)n, (size_t)n + 1024, w->cl.max_len,
		    w->qbytes, &w->q, f->cfg->edns_buffer_size, -1, NULL);
		if (r >= 0 && (WIRE_FLAGS(out) & WIRE_TC))
			metrics_inc(f->met, MET_REPLIES_TRUNCATED);
		w->cl.reply(&w->cl, r < 0 ? NULL : out, r < 0 ? 0 : (size_t)r);
		w->cl.reply = NULL;
	}
	if (out != f->buf + WIRE_MSG_MAX / 2)
		free(out);
	free_waiters(ws);
}

static void
finish_servfail(struct fwd_query *q)
{
	struct forward *f = q->f;
	int ede = q->fail == FAIL_NETWORK ? WIRE_EDE_NETWORK_ERROR :
					    WIRE_EDE_NO_REACHABLE_AUTHORITY;
	const char *text = q->fail == FAIL_TIMEOUT ?
	    "no upstream answered in time" :
	    q->fail == FAIL_NETWORK ? "upstream unreachable" :
				      "every upstream failed";
	char name[WIRE_NAME_MAX * 4 + 8];
	struct fwd_waiter *ws;

	attempt_close(q);
	log_debug("forward", "servfail qname=\"%s\" qtype=%u",
	    wire_name_text(q->qname, q->qname_len, name, sizeof(name)),
	    q->qtype);
	ws = query_detach(q);
	for (struct fwd_waiter *w = ws; w != NULL; w = w->next) {
		int r = wire_build_error(f->buf, sizeof(f->buf), w->qbytes,
		    w->qlen, &w->q, WIRE_RCODE_SERVFAIL,
		    f->cfg->edns_buffer_size, ede, text);
		metrics_inc(f->met, MET_REPLIES_SERVFAIL);
		w->cl.reply(&w->cl, r < 0 ? NULL : f->buf, r < 0 ? 0 : (size_t)r);
		w->cl.reply = NULL;
	}
	free_waiters(ws);
}

/* Finishes q and hands its waiters to the caller, who answers them. */
static struct fwd_waiter *
query_detach(struct fwd_query *q)
{
	struct fwd_waiter *ws = q->waiters;

	q->waiters = NULL;
	q->nwaiters = 0;
	query_finish(q);
	return ws;
}

static void
free_waiters(struct fwd_waiter *w)
{
	struct fwd_waiter *next;

	for (; w != NULL; w = next) {
		next = w->next;
		/* A waiter never answered is told so, exactly once. */
		if (w->cl.reply != NULL)
			w->cl.reply(&w->cl, NULL, 0);
		free(w);
	}
}

/* Takes q out of the table and queues it for freeing outside its callbacks. */
static void
query_finish(struct fwd_query *q)
{
	struct forward *f = q->f;

	if (q->done)
		return;
	q->done = true;
	attempt_close(q);
	table_remove(f, q);
	q->dead_next = f->dead;
	f->dead = q;
	event_active(f->ev_reap, 0, 0);
	check_drained(f);
}

static void
query_free(struct fwd_query *q)
{
	attempt_close(q);
	if (q->ev_timer != NULL) {
		event_free(q->ev_timer);
		q->ev_timer = NULL;
	}
	free_waiters(q->waiters);
	free(q);
}

static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct forward *f = arg;

	while (f->dead != NULL) {
		struct fwd_query *q = f->dead;
		f->dead = q->dead_next;
		query_free(q);
	}
}
