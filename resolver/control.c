#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "stubborn/cache.h"
#include "stubborn/clock.h"
#include "stubborn/config.h"
#include "stubborn/control.h"
#include "stubborn/log.h"
#include "stubborn/msg.h"
#include "stubborn/route.h"
#include "stubborn/upstream.h"
#include "stubborn/wire.h"

/* SCM_RIGHTS carries at most this many descriptors a message (SCM_MAX_FD). */
#define FDS_PER_MSG 250
#define READ_TIMEOUT_S 5
#define WRITE_TIMEOUT_S 30

struct ctl_conn {
	struct control *c;
	struct ctl_conn *prev, *next;
	struct bufferevent *bev; /* freed by conn_free */
	bool json;
	bool handover; /* waiting for the successor's "done" */
	bool closing;  /* free once the reply has left */
};

struct control {
	struct event_base *base;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int fd;
	struct event *ev_accept; /* added by control_new, freed by
				    control_free */
	uid_t uid;
	gid_t gid;
	struct cache *cache;
	const struct control_ops *ops;
	void *arg;
	struct ctl_conn *conns;
	bool handed_over;
};

static void accept_cb(evutil_socket_t fd, short what, void *arg);
static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_free(struct ctl_conn *k);
static void finish(struct ctl_conn *k, struct evbuffer *out);
static void dispatch(struct ctl_conn *k, char *line);
static void reply_error(struct ctl_conn *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void json_str(struct evbuffer *out, const char *s);
static bool peer_allowed(const struct control *c, int fd);

struct control *
control_new(struct event_base *base, const char *path, uid_t uid, gid_t gid,
    struct cache *cache, const struct control_ops *ops, void *arg, char *err,
    size_t errlen)
{
	struct control *c = calloc(1, sizeof(*c));
	struct sockaddr_un sun;

	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "control-socket %s: path too long", path);
		free(c);
		return NULL;
	}
	c->base = base;
	snprintf(c->path, sizeof(c->path), "%s", path);
	c->uid = uid;
	c->gid = gid;
	c->cache = cache;
	c->ops = ops;
	c->arg = arg;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path));
	/* A file left there by a daemon gone (or handing over) is replaced;
	 * a live one was asked first (control_takeover). */
	unlink(path);
	if (c->fd < 0 ||
	    bind(c->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    chmod(path, 0660) < 0 ||
	    ((uid != (uid_t)-1 || gid != (gid_t)-1) &&
		chown(path, uid, gid) < 0) ||
	    listen(c->fd, 16) < 0) {
		snprintf(err, errlen, "control-socket %s: %s", path,
		    strerror(errno));
		control_free(c);
		return NULL;
	}
	c->ev_accept =
	    event_new(base, c->fd, EV_READ | EV_PERSIST, accept_cb, c);
	if (c->ev_accept == NULL || event_add(c->ev_accept, NULL) < 0) {
		snprintf(err, errlen, "out of memory");
		control_free(c);
		return NULL;
	}
	return c;
}

void
control_free(struct control *c)
{
	if (c == NULL)
		return;
	while (c->conns != NULL)
		conn_free(c->conns);
	if (c->ev_accept != NULL)
		event_free(c->ev_accept);
	if (c->fd >= 0) {
		close(c->fd);
		/* The successor's socket has this path now. */
		if (!c->handed_over)
			unlink(c->path);
	}
	free(c);
}

/* Root, the daemon's user or its group: who the file mode admits. */
static bool
peer_allowed(const struct control *c, int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return false;
	return cr.uid == 0 || cr.uid == geteuid() || cr.gid == getegid();
}

static void
accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct control *c = arg;
	struct ctl_conn *k;
	struct timeval rt = {READ_TIMEOUT_S, 0}, wt = {WRITE_TIMEOUT_S, 0};
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (!peer_allowed(c, fd)) {
		log_warn("control", "control connection refused: credentials");
		close(fd);
		return;
	}
	k = calloc(1, sizeof(*k));
	if (k == NULL ||
	    (k->bev = bufferevent_socket_new(
		 c->base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		free(k);
		close(fd);
		return;
	}
	k->c = c;
	k->next = c->conns;
	if (c->conns)
		c->conns->prev = k;
	c->conns = k;
	/* A slow or silent client is cut off; the daemon never waits on it. */
	bufferevent_set_timeouts(k->bev, &rt, &wt);
	bufferevent_setcb(k->bev, read_cb, write_cb, event_cb, k);
	bufferevent_enable(k->bev, EV_READ | EV_WRITE);
}

static void
conn_free(struct ctl_conn *k)
{
	struct control *c = k->c;

	if (k->handover && !c->handed_over)
		log_warn("control",
		    "handover abandoned by the successor; still serving");
	bufferevent_free(k->bev);
	if (k->prev)
		k->prev->next = k->next;
	else
		c->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	free(k);
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *k = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n;
	char *line;

	if (k->closing)
		return;
	line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF);
	if (line == NULL) {
		if (evbuffer_get_length(in) > CONTROL_LINE_MAX) {
			log_warn("control",
			    "control request over %d bytes refused",
			    CONTROL_LINE_MAX);
			reply_error(k, "request too long (at most %d bytes)",
			    CONTROL_LINE_MAX);
		}
		return;
	}
	if (k->handover) {
		if (strcmp(line, "done") == 0) {
			k->c->handed_over = true;
			k->handover = false;
			log_info("control",
			    "successor serves; draining and exiting");
			k->c->ops->handover_done(k->c->arg);
		}
		free(line);
		return;
	}
	if (n > CONTROL_LINE_MAX) {
		log_warn("control", "control request over %d bytes refused",
		    CONTROL_LINE_MAX);
		reply_error(
		    k, "request too long (at most %d bytes)", CONTROL_LINE_MAX);
	} else {
		dispatch(k, line);
	}
	free(line);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *k = arg;

	if (k->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(k);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_conn *k = arg;

	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
		/* A successor that waits for the cache may take its time. */
		if ((what & BEV_EVENT_TIMEOUT) && k->handover &&
		    !(what & BEV_EVENT_EOF)) {
			bufferevent_enable(bev, EV_READ);
			return;
		}
		conn_free(k);
	}
}

/* Sends out and closes once it has left. */
static void
finish(struct ctl_conn *k, struct evbuffer *out)
{
	k->closing = true;
	bufferevent_disable(k->bev, EV_READ);
	bufferevent_write_buffer(k->bev, out);
	evbuffer_free(out);
	write_cb(k->bev, k);
}

static void
reply_error(struct ctl_conn *k, const char *fmt, ...)
{
	struct evbuffer *out = evbuffer_new();
	char msg[512];
	va_list ap;

	if (out == NULL) {
		conn_free(k);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (k->json) {
		evbuffer_add_printf(out, "{\"ok\":false,\"error\":");
		json_str(out, msg);
		evbuffer_add_printf(out, "}\n");
	} else {
		evbuffer_add_printf(out, "error: %s\n", msg);
	}
	finish(k, out);
}

static void
json_str(struct evbuffer *out, const char *s)
{
	evbuffer_add(out, "\"", 1);
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			evbuffer_add_printf(out, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			evbuffer_add_printf(out, "\\u%04x", ch);
		else
			evbuffer_add(out, s, 1);
	}
	evbuffer_add(out, "\"", 1);
}

/* ---- the cache: flush and dump -------------------------------------- */

struct match {
	uint8_t name[WIRE_NAME_MAX]; /* lower-case wire form */
	size_t len;
	uint16_t type; /* 0: any */
	bool zone;     /* name and below */
	bool negative; /* NXDOMAIN, NODATA, held failures */
	bool all;
};

static bool
match_cb(void *arg, const uint8_t *key, size_t klen, uint8_t rcode,
    bool positive, bool failure)
{
	const struct match *m = arg;
	size_t nlen = klen - 5;
	uint16_t type = wire_u16(key + nlen);

	if (m->all)
		return true;
	if (m->negative)
		return failure || rcode == WIRE_RCODE_NXDOMAIN ||
		    (rcode == WIRE_RCODE_NOERROR && !positive);
	if (m->zone)
		return wire_name_in_zone(key, nlen, m->name, m->len);
	/* The name's NXDOMAIN (kept under qtype 0) answers every type: it
	 * goes with any of them. */
	return nlen == m->len && memcmp(key, m->name, nlen) == 0 &&
	    (m->type == 0 || type == m->type || type == 0);
}

static int
parse_name(const char *text, struct match *m)
{
	int n = wire_name_from_text(text, m->name);

	if (n < 0)
		return -EINVAL;
	m->len = (size_t)n;
	wire_name_lower(m->name, m->len);
	return 0;
}

static void
cmd_flush(struct ctl_conn *k, const char *what, char **w, int n)
{
	struct match m;
	struct evbuffer *out;
	size_t gone;

	memset(&m, 0, sizeof(m));
	if (strcmp(what, "flush-all") == 0) {
		m.all = true;
	} else if (strcmp(what, "flush-negative") == 0) {
		m.negative = true;
	} else if (n < 1 || parse_name(w[0], &m) < 0) {
		reply_error(k, "%s needs a domain name", what);
		return;
	} else if (strcmp(what, "flush-zone") == 0) {
		m.zone = true;
	} else if (n > 1 && config_parse_qtype(w[1], &m.type) < 0) {
		reply_error(
		    k, "bad type '%.40s' (A, AAAA, ... or TYPEnnn)", w[1]);
		return;
	}
	gone = cache_remove_if(k->c->cache, match_cb, &m);
	log_info("control", "cache flushed command=%s entries=%zu", what, gone);
	if (gone > 0 && k->c->ops->flushed != NULL)
		k->c->ops->flushed(k->c->arg);
	if ((out = evbuffer_new()) == NULL)
		return;
	if (k->json)
		evbuffer_add_printf(
		    out, "{\"ok\":true,\"removed\":%zu}\n", gone);
	else
		evbuffer_add_printf(out, "ok %zu entries removed\n", gone);
	finish(k, out);
}

struct dump {
	struct evbuffer *out;
	const struct match *zone; /* NULL: all */
	bool json;
	size_t count;
	uint64_t now;
};

static void
dump_cb(void *arg, const struct cache_walk_entry *e)
{
	struct dump *d = arg;
	char name[WIRE_NAME_MAX * 4 + 8], type[16], recs[8192];
	size_t nlen = e->klen - 5;
	uint16_t qtype = wire_u16(e->key + nlen);
	uint8_t flags = e->key[e->klen - 1];
	uint64_t age_ms = d->now > e->stored_ms ? d->now - e->stored_ms : 0;
	uint64_t life_ms = (uint64_t)e->ttl * 1000;
	bool fresh = age_ms < life_ms;
	const char *held = e->neg_since_ms ? "negative-guard"
	    : e->hold_until_ms > d->now    ? "stale-recheck"
					   : "";
	char *line, *save = NULL;
	unsigned rcode = WIRE_RCODE(WIRE_FLAGS(e->resp));

	if (d->zone != NULL &&
	    !wire_name_in_zone(e->key, nlen, d->zone->name, d->zone->len))
		return;
	wire_name_text(e->key, nlen, name, sizeof(name));
	if (qtype == 0)
		snprintf(type, sizeof(type), "*");
	else
		config_qtype_text(qtype, type, sizeof(type));
	if (msg_records_text(e->resp, e->len, recs, sizeof(recs)) < 0)
		recs[0] = '\0';
	if (d->json) {
		evbuffer_add_printf(
		    d->out, "%s{\"name\":", d->count ? "," : "");
		json_str(d->out, name);
		evbuffer_add_printf(d->out,
		    ",\"type\":\"%s\",\"rcode\":%u,\"do\":%s,\"cd\":%s,"
		    "\"state\":\"%s\",\"ttl\":%u,\"ttl_left\":%llu,"
		    "\"stale_s\":%llu,\"held\":\"%s\",\"records\":[",
		    type, rcode, (flags & CACHE_KEY_DO) ? "true" : "false",
		    (flags & CACHE_KEY_CD) ? "true" : "false",
		    fresh ? "fresh" : "stale", e->ttl,
		    (unsigned long long)(fresh ? (life_ms - age_ms) / 1000 : 0),
		    (unsigned long long)(fresh ? 0 : (age_ms - life_ms) / 1000),
		    held);
		for (line = strtok_r(recs, "\n", &save); line != NULL;
		     line = strtok_r(NULL, "\n", &save)) {
			if (line != recs)
				evbuffer_add(d->out, ",", 1);
			json_str(d->out, line);
		}
		evbuffer_add_printf(d->out, "]}");
	} else {
		evbuffer_add_printf(d->out, "%s %s%s%s %s", name, type,
		    (flags & CACHE_KEY_DO) ? " do" : "",
		    (flags & CACHE_KEY_CD) ? " cd" : "",
		    rcode == WIRE_RCODE_NXDOMAIN ? "NXDOMAIN"
			: rcode == 0             ? "NOERROR"
						 : "OTHER");
		if (fresh)
			evbuffer_add_printf(d->out, " fresh ttl-left=%llu",
			    (unsigned long long)((life_ms - age_ms) / 1000));
		else
			evbuffer_add_printf(d->out, " stale stale-for=%llu",
			    (unsigned long long)((age_ms - life_ms) / 1000));
		if (held[0] != '\0')
			evbuffer_add_printf(d->out, " held=%s", held);
		evbuffer_add_printf(d->out, "\n");
		for (line = strtok_r(recs, "\n", &save); line != NULL;
		     line = strtok_r(NULL, "\n", &save))
			evbuffer_add_printf(d->out, "\t%s\n", line);
	}
	d->count++;
}

static void
cmd_dump(struct ctl_conn *k, char **w, int n)
{
	struct match zone;
	struct dump d;

	memset(&d, 0, sizeof(d));
	if (n > 0) {
		memset(&zone, 0, sizeof(zone));
		if (parse_name(w[0], &zone) < 0) {
			reply_error(k, "bad zone '%.100s'", w[0]);
			return;
		}
		d.zone = &zone;
	}
	if ((d.out = evbuffer_new()) == NULL)
		return;
	d.json = k->json;
	d.now = clock_now_ms();
	if (d.json)
		evbuffer_add_printf(d.out, "{\"ok\":true,\"entries\":[");
	else
		evbuffer_add_printf(d.out, "ok\n");
	cache_walk_full(k->c->cache, dump_cb, &d);
	if (d.json)
		evbuffer_add_printf(d.out, "],\"count\":%zu}\n", d.count);
	else
		evbuffer_add_printf(d.out, "# %zu entries\n", d.count);
	finish(k, d.out);
}

/* ---- the rest -------------------------------------------------------- */

static const char *const protos[] = {"udp", "tcp", "tls", "dnscrypt"};

static void
ago(char *buf, size_t cap, uint64_t now, uint64_t then)
{
	if (then == 0)
		snprintf(buf, cap, "never");
	else
		snprintf(buf, cap, "%.1fs-ago", (double)(now - then) / 1e3);
}

static void
cmd_upstreams(struct ctl_conn *k)
{
	struct route *r = k->c->ops->route(k->c->arg);
	struct evbuffer *out = evbuffer_new();
	uint64_t now = clock_now_ms();
	char zone[WIRE_NAME_MAX * 4 + 8], ok[32], bad[32];
	bool first = true;

	if (out == NULL)
		return;
	evbuffer_add_printf(
	    out, k->json ? "{\"ok\":true,\"servers\":[" : "ok\n");
	for (size_t z = 0; z < r->nzones; z++) {
		struct upstream_pool *pool = r->zones[z].pool;
		wire_name_text(
		    r->zones[z].name, r->zones[z].len, zone, sizeof(zone));
		if (!k->json)
			evbuffer_add_printf(out, "zone %s\n", zone);
		for (unsigned i = 0; i < upstream_count(pool); i++) {
			const struct config_upstream *u =
			    upstream_addr(pool, i);
			struct upstream_stats st;
			upstream_get_stats(pool, i, &st);
			ago(ok, sizeof(ok), now, st.last_ok_ms);
			ago(bad, sizeof(bad), now, st.last_fail_ms);
			if (k->json) {
				evbuffer_add_printf(
				    out, "%s{\"zone\":", first ? "" : ",");
				json_str(out, zone);
				evbuffer_add_printf(out, ",\"server\":");
				json_str(out, u->text);
				evbuffer_add_printf(out,
				    ",\"transport\":\"%s\",\"circuit\":\"%s\","
				    "\"srtt_ms\":%.3f,\"rttvar_ms\":%.3f,"
				    "\"rto_ms\":%u,\"outstanding\":%u,"
				    "\"rate_tokens\":%u,\"budget_tokens\":%u,"
				    "\"queries\":%llu,\"answers\":%llu,"
				    "\"last_success_ms_ago\":%lld,"
				    "\"last_failure_ms_ago\":%lld,"
				    "\"last_failure\":\"%s\"}",
				    protos[u->proto & 3],
				    upstream_circuit_name(st.circuit),
				    st.srtt_us / 1e3, st.rttvar_us / 1e3,
				    st.rto_ms, st.outstanding, st.rate_tokens,
				    st.budget_tokens,
				    (unsigned long long)st.queries,
				    (unsigned long long)st.answers,
				    st.last_ok_ms
					? (long long)(now - st.last_ok_ms)
					: -1LL,
				    st.last_fail_ms
					? (long long)(now - st.last_fail_ms)
					: -1LL,
				    st.last_fail);
			} else {
				evbuffer_add_printf(out,
				    "  %s %s circuit=%s srtt=%.1fms "
				    "rttvar=%.1fms rto=%ums outstanding=%u "
				    "rate-left=%u budget-left=%u queries=%llu "
				    "answers=%llu last-success=%s "
				    "last-failure=%s%s%s\n",
				    u->text, protos[u->proto & 3],
				    upstream_circuit_name(st.circuit),
				    st.srtt_us / 1e3, st.rttvar_us / 1e3,
				    st.rto_ms, st.outstanding, st.rate_tokens,
				    st.budget_tokens,
				    (unsigned long long)st.queries,
				    (unsigned long long)st.answers, ok, bad,
				    st.last_fail[0] ? " reason=" : "",
				    st.last_fail);
			}
			first = false;
		}
	}
	if (k->json)
		evbuffer_add_printf(out, "]}\n");
	finish(k, out);
}

static void
cmd_handover(struct ctl_conn *k, char **w, int n)
{
	static int fds[CONTROL_MAX_FDS];
	char path[512] = "", line[640];
	struct msghdr mh;
	struct iovec iov;
	int fd = bufferevent_getfd(k->bev), count, sent = 0;
	union {
		char buf[CMSG_SPACE(sizeof(int) * FDS_PER_MSG)];
		struct cmsghdr align;
	} ctl;

	if (n < 1 || atoi(w[0]) != CONTROL_HANDOVER_VERSION) {
		reply_error(k, "handover version %d expected",
		    CONTROL_HANDOVER_VERSION);
		return;
	}
	count = k->c->ops->handover(
	    k->c->arg, fds, CONTROL_MAX_FDS, path, sizeof(path));
	if (count < 0) {
		reply_error(k, "handover impossible: %s", strerror(-count));
		return;
	}
	snprintf(line, sizeof(line), "ok handover fds=%d cache=%s\n", count,
	    path[0] ? path : "-");
	/* The line with the first descriptors, then "+" with the rest. */
	do {
		int chunk =
		    count - sent > FDS_PER_MSG ? FDS_PER_MSG : count - sent;
		memset(&mh, 0, sizeof(mh));
		iov.iov_base = sent == 0 ? line : "+";
		iov.iov_len = sent == 0 ? strlen(line) : 1;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		if (chunk > 0) {
			struct cmsghdr *cm;
			memset(&ctl, 0, sizeof(ctl));
			mh.msg_control = ctl.buf;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * chunk);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int) * chunk);
			memcpy(CMSG_DATA(cm), fds + sent, sizeof(int) * chunk);
		}
		if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0) {
			log_warn("control", "handover failed error=\"%s\"",
			    strerror(errno));
			conn_free(k);
			return;
		}
		sent += chunk;
	} while (sent < count);
	log_info("control",
	    "sockets handed to a successor fds=%d cache=%s; serving until it "
	    "says it serves",
	    count, path[0] ? path : "-");
	k->handover = true;
}

static void
dispatch(struct ctl_conn *k, char *line)
{
	struct control *c = k->c;
	char *w[8], *save = NULL, msg[1200];
	int n = 0;
	struct evbuffer *out;

	for (char *t = strtok_r(line, " \t", &save); t != NULL && n < 8;
	     t = strtok_r(NULL, " \t", &save))
		w[n++] = t;
	if (n > 0 && strcmp(w[0], "json") == 0) {
		k->json = true;
		memmove(w, w + 1, (size_t)--n * sizeof(w[0]));
	}
	if (n == 0) {
		reply_error(k, "empty request");
		return;
	}
	if (strcmp(w[0], "flush") == 0 || strcmp(w[0], "flush-zone") == 0 ||
	    strcmp(w[0], "flush-negative") == 0 ||
	    strcmp(w[0], "flush-all") == 0) {
		cmd_flush(k, w[0], w + 1, n - 1);
	} else if (strcmp(w[0], "dump") == 0) {
		cmd_dump(k, w + 1, n - 1);
	} else if (strcmp(w[0], "upstreams") == 0) {
		cmd_upstreams(k);
	} else if (strcmp(w[0], "stats") == 0) {
		if ((out = evbuffer_new()) == NULL)
			return;
		if (!k->json)
			evbuffer_add_printf(out, "ok\n");
		c->ops->stats(c->arg, out);
		finish(k, out);
	} else if (strcmp(w[0], "reload") == 0) {
		int rc = c->ops->reload(c->arg, msg, sizeof(msg));
		if (rc < 0) {
			reply_error(k, "%s", msg);
			return;
		}
		if ((out = evbuffer_new()) == NULL)
			return;
		if (k->json) {
			evbuffer_add_printf(out, "{\"ok\":true,\"result\":");
			json_str(out, msg);
			evbuffer_add_printf(out, "}\n");
		} else {
			evbuffer_add_printf(out, "ok reloaded %s\n", msg);
		}
		finish(k, out);
	} else if (strcmp(w[0], "log-level") == 0 && n > 1) {
		int lvl = log_parse_level(w[1]);
		if (lvl < 0) {
			reply_error(k,
			    "bad level '%.40s' (error, warn, info or "
			    "debug)",
			    w[1]);
			return;
		}
		log_set_level((enum log_level)lvl);
		if ((out = evbuffer_new()) == NULL)
			return;
		evbuffer_add_printf(out,
		    k->json ? "{\"ok\":true,\"log_level\":\"%s\"}\n"
			    : "ok log-level %s until the next reload\n",
		    log_level_name((enum log_level)lvl));
		finish(k, out);
	} else if (strcmp(w[0], "stop") == 0) {
		if ((out = evbuffer_new()) == NULL)
			return;
		evbuffer_add_printf(out,
		    k->json ? "{\"ok\":true}\n" : "ok draining and exiting\n");
		finish(k, out);
		c->ops->stop(c->arg);
	} else if (strcmp(w[0], "handover") == 0) {
		cmd_handover(k, w + 1, n - 1);
	} else {
		log_warn("control", "unknown control command refused");
		reply_error(k, "unknown command '%.40s'", w[0]);
	}
}

/* ---- the successor's side -------------------------------------------- */

int
control_takeover(const char *path, int *fds, int max, int *conn,
    char *cache_path, size_t cap, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	struct timeval tv = {30, 0};
	char line[700];
	size_t got = 0;
	int fd, nfds = 0, want = -1;
	char req[32];

	*conn = -1;
	cache_path[0] = '\0';
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path))
		return 0;
	memcpy(sun.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;
		close(fd);
		/* Nobody there: a stale file or none at all. */
		if (e == ENOENT || e == ECONNREFUSED)
			return 0;
		snprintf(
		    err, errlen, "control-socket %s: %s", path, strerror(e));
		return -e;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	snprintf(req, sizeof(req), "handover %d\n", CONTROL_HANDOVER_VERSION);
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		goto io;
	while (want < 0 || nfds < want) {
		union {
			char buf[CMSG_SPACE(sizeof(int) * FDS_PER_MSG)];
			struct cmsghdr align;
		} ctl;
		char data[700];
		struct iovec iov = {data, want < 0 ? sizeof(data) - 1 : 1};
		struct msghdr mh;
		ssize_t r;

		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		if (r <= 0)
			goto io;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm != NULL;
		     cm = CMSG_NXTHDR(&mh, cm)) {
			int k;
			if (cm->cmsg_level != SOL_SOCKET ||
			    cm->cmsg_type != SCM_RIGHTS)
				continue;
			k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < k; i++) {
				int one;
				memcpy(&one, CMSG_DATA(cm) + i * sizeof(int),
				    sizeof(int));
				if (nfds < max)
					fds[nfds++] = one;
				else
					close(one);
			}
		}
		if (want < 0) {
			char *nl;
			if (got + (size_t)r >= sizeof(line))
				goto io;
			memcpy(line + got, data, (size_t)r);
			got += (size_t)r;
			line[got] = '\0';
			if ((nl = strchr(line, '\n')) == NULL)
				continue;
			*nl = '\0';
			if (strncmp(line, "ok handover ", 12) != 0 ||
			    sscanf(line + 12, "fds=%d cache=%511s", &want,
				cache_path) != 2 ||
			    want < 0) {
				snprintf(err, errlen,
				    "the running daemon refused the handover: "
				    "%.200s",
				    line);
				goto fail;
			}
			if (strcmp(cache_path, "-") == 0)
				cache_path[0] = '\0';
			(void)cap;
		}
	}
	*conn = fd;
	return nfds;
io:
	snprintf(err, errlen, "handover over %s broke off: %s", path,
	    errno ? strerror(errno) : "connection closed");
fail:
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	close(fd);
	return -EPROTO;
}

int
control_takeover_done(int conn)
{
	int rc = write(conn, "done\n", 5) == 5 ? 0 : -errno;

	close(conn);
	return rc;
}
