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
/* Records of one entry in presentation format, at most. */
#define DUMP_TEXT_MAX (256 * 1024)

struct ctl_conn {
	struct control *c;
	struct ctl_conn *prev, *next;
	struct bufferevent *bev; /* freed by conn_free */
	bool json;
	bool handover;   /* waiting for the successor's "done" */
	bool closing;    /* free once the reply has left */
	bool stop_after; /* then stop the daemon */
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
	int nconns;
	bool handed_over;
};

struct match {
	const struct control_req *req;
};

/* A dump being written: one entry at a time, into out. */
struct dump {
	struct evbuffer *out;
	const struct control_req *req;
	uint8_t *msg; /* a copy of one response, its TTLs made the time left */
	char *text;   /* its records in presentation format */
	bool json;
	size_t count;
	uint64_t now;
};

/* What the entry is: its state and, when held, why and for how long. */
struct entry_state {
	enum { ENTRY_FRESH, ENTRY_STALE, ENTRY_FAILURE } kind;
	const char *state; /* its name */
	const char *held;  /* "" when not held */
	const char *rcode;
	uint64_t ttl_left_s, stale_s, hold_left_s;
};

static void accept_cb(evutil_socket_t fd, short what, void *arg);
static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_free(struct ctl_conn *k);
static void conn_done(struct ctl_conn *k);
static void finish(struct ctl_conn *k, struct evbuffer *out);
static void dispatch(struct ctl_conn *k, const char *line, size_t len);
static void reply_error(struct ctl_conn *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void json_str(struct evbuffer *out, const char *s);
static bool peer_allowed(const struct control *c, int fd);
static void refuse_conn(int fd, const char *why);
static int refuse(struct control_req *req, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int parse_args(struct control_req *req, const char *cmd, char **arg);
static bool match_cb(void *arg, const uint8_t *key, size_t klen, uint8_t rcode,
    bool positive, bool failure);
static void cmd_flush(struct ctl_conn *k, const struct control_req *req);
static void ttls_left(uint8_t *msg, size_t len, bool fresh, uint64_t age_s);
static void entry_state(const struct dump *d, const struct cache_walk_entry *e,
    struct entry_state *st);
static void dump_json(struct dump *d, const struct cache_walk_entry *e,
    const char *name, const char *type, const struct entry_state *st);
static void dump_text(struct dump *d, const struct cache_walk_entry *e,
    const char *name, const char *type, const struct entry_state *st);
static void dump_cb(void *arg, const struct cache_walk_entry *e);
static void cmd_dump(struct ctl_conn *k, const struct control_req *req);
static void ago(char *buf, size_t cap, uint64_t now, uint64_t then);
static void upstream_json(struct evbuffer *out, const char *zone,
    const struct config_upstream *u, const struct upstream_stats *st,
    const char *xerr, uint64_t now);
static void upstream_text(struct evbuffer *out, const struct config_upstream *u,
    const struct upstream_stats *st, const char *xerr, uint64_t now);
static void cmd_upstreams(struct ctl_conn *k);
static bool json_number(const char *s, size_t n);
static const char *label_value(const char *p, char *val, size_t cap);
static bool sample_json(struct evbuffer *obj, const char *p);
static void stats_json(struct evbuffer *out, struct evbuffer *prom);
static void cmd_stats(struct ctl_conn *k);
static void cmd_reload(struct ctl_conn *k);
static void reply_ok(struct ctl_conn *k, const char *json, const char *text);
static void cmd_handover(struct ctl_conn *k, const struct control_req *req);

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

/*
 * Root, the daemon's user or a member of its group: who the file mode
 * admits.  Members are usually so by a supplementary group, which
 * SO_PEERCRED does not carry: SO_PEERGROUPS does (the first 256).
 */
static bool
peer_allowed(const struct control *c, int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	gid_t groups[256];
	gid_t egid = getegid();

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return false;
	if (cr.uid == 0 || cr.uid == geteuid() || cr.gid == egid)
		return true;
	len = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return false;
	for (size_t i = 0; i < len / sizeof(groups[0]); i++)
		if (groups[i] == egid)
			return true;
	return false;
}

/* A short refusal, written without waiting: the peer gets it or not. */
static void
refuse_conn(int fd, const char *why)
{
	char line[160];
	int n = snprintf(line, sizeof(line), "error: %s\n", why);

	(void)send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
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
		refuse_conn(fd,
		    "permission denied (root, the daemon's user "
		    "or its group only)");
		return;
	}
	/* Each connection may hold a whole dump: their number is bounded. */
	if (c->nconns >= CONTROL_CONNS_MAX) {
		log_warn("control",
		    "control connection refused: %d already open",
		    CONTROL_CONNS_MAX);
		refuse_conn(fd, "too many control connections, try again");
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
	c->nconns++;
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
	c->nconns--;
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
		/* No newline yet: wait for it, unless it can no longer come
		 * in time.  The parser refuses what is too long. */
		if (evbuffer_get_length(in) > CONTROL_LINE_MAX)
			dispatch(k,
			    (const char *)evbuffer_pullup(
				in, CONTROL_LINE_MAX + 1),
			    CONTROL_LINE_MAX + 1);
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
	dispatch(k, line, n);
	free(line);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *k = arg;

	if (k->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_done(k);
}

/*
 * The connection is over.  A stop waits until here: once the loop ends,
 * an answer not yet written would be lost.
 */
static void
conn_done(struct ctl_conn *k)
{
	struct control *c = k->c;
	bool stop = k->stop_after;

	conn_free(k);
	if (stop)
		c->ops->stop(c->arg);
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
		conn_done(k);
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
		else if (ch == '\t')
			evbuffer_add(out, "\\t", 2);
		else if (ch == '\n')
			evbuffer_add(out, "\\n", 2);
		else if (ch < 0x20 || ch >= 0x7f)
			evbuffer_add_printf(out, "\\u%04x", ch);
		else
			evbuffer_add(out, s, 1);
	}
	evbuffer_add(out, "\"", 1);
}

/* ---- the request -------------------------------------------------------- */

#define WORDS_MAX 4 /* "flush NAME TYPE" and one too many */

static const struct {
	const char *word;
	enum control_cmd cmd;
	int min, max;      /* arguments */
	const char *usage; /* its arguments, for the error */
} commands[] = {
    {"flush", CONTROL_FLUSH, 1, 2, "NAME [TYPE]"},
    {"flush-zone", CONTROL_FLUSH_ZONE, 1, 1, "ZONE"},
    {"flush-negative", CONTROL_FLUSH_NEGATIVE, 0, 0, ""},
    {"flush-all", CONTROL_FLUSH_ALL, 0, 0, ""},
    {"dump", CONTROL_DUMP, 0, 1, "[ZONE]"},
    {"upstreams", CONTROL_UPSTREAMS, 0, 0, ""},
    {"stats", CONTROL_STATS, 0, 0, ""},
    {"reload", CONTROL_RELOAD, 0, 0, ""},
    {"log-level", CONTROL_LOG_LEVEL, 1, 1, "LEVEL"},
    {"stop", CONTROL_STOP, 0, 0, ""},
    {"handover", CONTROL_HANDOVER, 1, 1, "VERSION"},
};

static int
refuse(struct control_req *req, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(req->error, sizeof(req->error), fmt, ap);
	va_end(ap);
	return rc;
}

static int
parse_args(struct control_req *req, const char *cmd, char **arg)
{
	int n;

	switch (req->cmd) {
	case CONTROL_FLUSH:
	case CONTROL_FLUSH_ZONE:
	case CONTROL_DUMP:
		if (arg[0] == NULL)
			return 0;
		if ((n = wire_name_from_text(arg[0], req->name)) < 0)
			return refuse(req, -EINVAL,
			    "%s: bad domain name '%.64s'", cmd, arg[0]);
		req->name_len = (size_t)n;
		wire_name_lower(req->name, req->name_len);
		if (arg[1] != NULL &&
		    config_parse_qtype(arg[1], &req->qtype) < 0)
			return refuse(req, -EINVAL,
			    "%s: bad type '%.40s' (A, AAAA, ... or TYPEnnn)",
			    cmd, arg[1]);
		return 0;
	case CONTROL_LOG_LEVEL:
		if ((req->level = log_parse_level(arg[0])) < 0)
			return refuse(req, -EINVAL,
			    "log-level: bad level '%.40s' (error, warn, "
			    "info or debug)",
			    arg[0]);
		return 0;
	case CONTROL_HANDOVER:
		if (strspn(arg[0], "0123456789") != strlen(arg[0]) ||
		    strlen(arg[0]) > 6)
			return refuse(req, -EINVAL,
			    "handover: bad version '%.40s'", arg[0]);
		req->version = atoi(arg[0]);
		return 0;
	default:
		return 0;
	}
}

int
control_parse(const char *line, size_t len, struct control_req *req)
{
	char buf[CONTROL_LINE_MAX + 1], *w[WORDS_MAX + 2], *save = NULL;
	int n = 0;

	memset(req, 0, sizeof(*req));
	req->json = len > 4 && memcmp(line, "json", 4) == 0 &&
	    (line[4] == ' ' || line[4] == '\t');
	if (len > CONTROL_LINE_MAX)
		return refuse(req, -E2BIG,
		    "request too long (at most %d bytes)", CONTROL_LINE_MAX);
	if (len > 0 && line[len - 1] == '\r')
		len--;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)line[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return refuse(req, -EINVAL,
			    "control byte 0x%02x in the request", ch);
	}
	memcpy(buf, line, len);
	buf[len] = '\0';
	for (char *t = strtok_r(buf, " \t", &save); t != NULL;
	     t = strtok_r(NULL, " \t", &save)) {
		if (n == WORDS_MAX + 1)
			return refuse(req, -EINVAL, "too many words");
		w[n++] = t;
	}
	if (n > 0 && req->json && strcmp(w[0], "json") == 0)
		memmove(w, w + 1, (size_t)--n * sizeof(w[0]));
	if (n == 0)
		return refuse(req, -EINVAL, "empty request");
	w[n] = NULL;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(w[0], commands[i].word) != 0)
			continue;
		if (n - 1 < commands[i].min || n - 1 > commands[i].max)
			return refuse(req, -EINVAL, "usage: %s%s%s",
			    commands[i].word, commands[i].usage[0] ? " " : "",
			    commands[i].usage);
		req->cmd = commands[i].cmd;
		return parse_args(req, commands[i].word, w + 1);
	}
	return refuse(req, -EINVAL, "unknown command '%.40s'", w[0]);
}

/* ---- the cache: flush and dump -------------------------------------- */

static bool
match_cb(void *arg, const uint8_t *key, size_t klen, uint8_t rcode,
    bool positive, bool failure)
{
	const struct control_req *req = ((const struct match *)arg)->req;
	size_t nlen = klen - 5;
	uint16_t type = wire_u16(key + nlen);

	switch (req->cmd) {
	case CONTROL_FLUSH_ALL:
		return true;
	case CONTROL_FLUSH_NEGATIVE:
		return failure || rcode == WIRE_RCODE_NXDOMAIN ||
		    (rcode == WIRE_RCODE_NOERROR && !positive);
	case CONTROL_FLUSH_ZONE:
		return wire_name_in_zone(key, nlen, req->name, req->name_len);
	default:
		/* The name's NXDOMAIN (kept under qtype 0) answers every
		 * type: it goes with any of them. */
		return nlen == req->name_len &&
		    memcmp(key, req->name, nlen) == 0 &&
		    (req->qtype == 0 || type == req->qtype || type == 0);
	}
}

static void
cmd_flush(struct ctl_conn *k, const struct control_req *req)
{
	static const char *const what[] = {[CONTROL_FLUSH] = "flush",
	    [CONTROL_FLUSH_ZONE] = "flush-zone",
	    [CONTROL_FLUSH_NEGATIVE] = "flush-negative",
	    [CONTROL_FLUSH_ALL] = "flush-all"};
	struct match m = {req};
	struct evbuffer *out;
	bool saving;
	size_t gone;

	gone = cache_remove_if(k->c->cache, match_cb, &m);
	log_info("control", "cache flushed command=%s entries=%zu",
	    what[req->cmd], gone);
	/* The snapshot must not bring them back at the next start. */
	saving = gone > 0 && k->c->ops->flushed != NULL &&
	    k->c->ops->flushed(k->c->arg);
	if ((out = evbuffer_new()) == NULL) {
		conn_free(k);
		return;
	}
	if (k->json)
		evbuffer_add_printf(out,
		    "{\"ok\":true,\"removed\":%zu,\"snapshot_rewritten\":%s}\n",
		    gone, saving ? "true" : "false");
	else
		evbuffer_add_printf(out, "ok %zu %s removed%s\n", gone,
		    gone == 1 ? "entry" : "entries",
		    saving ? "; snapshot being rewritten" : "");
	finish(k, out);
}

/* Every record's TTL as a client would count it down now (0 once stale). */
static void
ttls_left(uint8_t *msg, size_t len, bool fresh, uint64_t age_s)
{
	struct wire_iter it;
	struct wire_rr rr;

	if (wire_iter_init(&it, msg, len) < 0)
		return;
	while (wire_iter_next(&it, &rr) == 1) {
		if (rr.type == WIRE_TYPE_OPT)
			continue;
		wire_put32(msg + rr.type_off + 4,
		    fresh && rr.ttl > age_s ? (uint32_t)(rr.ttl - age_s) : 0);
	}
}

static void
entry_state(const struct dump *d, const struct cache_walk_entry *e,
    struct entry_state *st)
{
	uint64_t age_ms = d->now > e->stored_ms ? d->now - e->stored_ms : 0;
	uint64_t life_ms = (uint64_t)e->ttl * 1000;
	unsigned rcode = e->len >= WIRE_HDR_LEN
	    ? WIRE_RCODE(WIRE_FLAGS(e->resp))
	    : WIRE_RCODE_SERVFAIL;

	memset(st, 0, sizeof(*st));
	st->rcode = rcode == WIRE_RCODE_NOERROR ? "NOERROR"
	    : rcode == WIRE_RCODE_NXDOMAIN      ? "NXDOMAIN"
	    : rcode == WIRE_RCODE_SERVFAIL      ? "SERVFAIL"
						: "OTHER";
	if (e->len == 0) {
		st->kind = ENTRY_FAILURE;
		st->state = "failure";
	} else if (age_ms < life_ms) {
		st->kind = ENTRY_FRESH;
		st->state = "fresh";
		st->ttl_left_s = (life_ms - age_ms) / 1000;
	} else {
		st->kind = ENTRY_STALE;
		st->state = "stale";
		st->stale_s = (age_ms - life_ms) / 1000;
	}
	st->held = "";
	if (e->hold_until_ms > d->now) {
		st->hold_left_s = (e->hold_until_ms - d->now + 999) / 1000;
		st->held = e->len == 0 ? "failure"
		    : e->neg_since_ms  ? "negative-guard"
				       : "stale-recheck";
	} else if (e->neg_since_ms) {
		st->held = "negative-guard";
	}
}

static void
dump_json(struct dump *d, const struct cache_walk_entry *e, const char *name,
    const char *type, const struct entry_state *st)
{
	uint8_t flags = e->key[e->klen - 1];
	char *line, *save = NULL;

	evbuffer_add_printf(d->out, "%s{\"name\":", d->count ? "," : "");
	json_str(d->out, name);
	evbuffer_add_printf(d->out,
	    ",\"type\":\"%s\",\"rcode\":\"%s\",\"do\":%s,\"cd\":%s,"
	    "\"state\":\"%s\",\"ttl\":%u,\"ttl_left\":%llu,\"stale_s\":%llu,"
	    "\"held\":\"%s\",\"hold_left_s\":%llu,\"records\":[",
	    type, st->rcode, (flags & CACHE_KEY_DO) ? "true" : "false",
	    (flags & CACHE_KEY_CD) ? "true" : "false", st->state, e->ttl,
	    (unsigned long long)st->ttl_left_s, (unsigned long long)st->stale_s,
	    st->held, (unsigned long long)st->hold_left_s);
	for (line = strtok_r(d->text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		if (line != d->text)
			evbuffer_add(d->out, ",", 1);
		json_str(d->out, line);
	}
	evbuffer_add_printf(d->out, "]}");
}

static void
dump_text(struct dump *d, const struct cache_walk_entry *e, const char *name,
    const char *type, const struct entry_state *st)
{
	uint8_t flags = e->key[e->klen - 1];
	char *line, *save = NULL;

	evbuffer_add_printf(d->out, "%s %s%s%s %s %s", name, type,
	    (flags & CACHE_KEY_DO) ? " do" : "",
	    (flags & CACHE_KEY_CD) ? " cd" : "", st->rcode, st->state);
	if (st->kind == ENTRY_FRESH)
		evbuffer_add_printf(d->out, " ttl-left=%llu",
		    (unsigned long long)st->ttl_left_s);
	else if (st->kind == ENTRY_STALE)
		evbuffer_add_printf(
		    d->out, " stale-for=%llu", (unsigned long long)st->stale_s);
	if (st->held[0] != '\0')
		evbuffer_add_printf(d->out, " held=%s", st->held);
	if (st->hold_left_s > 0)
		evbuffer_add_printf(d->out, " hold-left=%llu",
		    (unsigned long long)st->hold_left_s);
	evbuffer_add_printf(d->out, "\n");
	for (line = strtok_r(d->text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save))
		evbuffer_add_printf(d->out, "\t%s\n", line);
}

static void
dump_cb(void *arg, const struct cache_walk_entry *e)
{
	struct dump *d = arg;
	char name[WIRE_NAME_MAX * 4 + 8], type[16];
	size_t nlen = e->klen - 5;
	uint16_t qtype = wire_u16(e->key + nlen);
	struct entry_state st;

	if (d->req->name_len > 0 &&
	    !wire_name_in_zone(e->key, nlen, d->req->name, d->req->name_len))
		return;
	entry_state(d, e, &st);
	wire_name_text(e->key, nlen, name, sizeof(name));
	if (qtype == 0)
		snprintf(type, sizeof(type), "*");
	else
		config_qtype_text(qtype, type, sizeof(type));
	d->text[0] = '\0';
	if (e->len > 0) {
		memcpy(d->msg, e->resp, e->len);
		ttls_left(d->msg, e->len, st.kind == ENTRY_FRESH,
		    d->now > e->stored_ms ? (d->now - e->stored_ms) / 1000 : 0);
		if (msg_records_text(d->msg, e->len, d->text, DUMP_TEXT_MAX) <
		    0)
			d->text[0] = '\0';
	}
	if (d->json)
		dump_json(d, e, name, type, &st);
	else
		dump_text(d, e, name, type, &st);
	d->count++;
}

static void
cmd_dump(struct ctl_conn *k, const struct control_req *req)
{
	struct dump d;

	memset(&d, 0, sizeof(d));
	d.req = req;
	d.json = k->json;
	d.now = clock_now_ms();
	d.out = evbuffer_new();
	d.msg = malloc(UINT16_MAX);
	d.text = malloc(DUMP_TEXT_MAX);
	if (d.out == NULL || d.msg == NULL || d.text == NULL) {
		free(d.msg);
		free(d.text);
		if (d.out != NULL)
			evbuffer_free(d.out);
		reply_error(k, "out of memory");
		return;
	}
	if (d.json)
		evbuffer_add_printf(d.out, "{\"ok\":true,\"entries\":[");
	else
		evbuffer_add_printf(d.out, "ok\n");
	cache_walk_full(k->c->cache, dump_cb, &d);
	if (d.json)
		evbuffer_add_printf(d.out, "],\"count\":%zu}\n", d.count);
	else
		evbuffer_add_printf(d.out, "# %zu %s\n", d.count,
		    d.count == 1 ? "entry" : "entries");
	free(d.msg);
	free(d.text);
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
upstream_json(struct evbuffer *out, const char *zone,
    const struct config_upstream *u, const struct upstream_stats *st,
    const char *xerr, uint64_t now)
{
	json_str(out, zone);
	evbuffer_add_printf(out, ",\"server\":");
	json_str(out, u->text);
	evbuffer_add_printf(out,
	    ",\"transport\":\"%s\",\"circuit\":\"%s\",\"srtt_ms\":%.3f,"
	    "\"rttvar_ms\":%.3f,\"rto_ms\":%u,\"outstanding\":%u,"
	    "\"rate_tokens\":%u,\"budget_tokens\":%u,\"queries\":%llu,"
	    "\"answers\":%llu,\"timeouts\":%llu,\"errors\":%llu,"
	    "\"last_success_ms_ago\":%lld,\"last_failure_ms_ago\":%lld,"
	    "\"last_failure\":",
	    protos[u->proto & 3], upstream_circuit_name(st->circuit),
	    st->srtt_us / 1e3, st->rttvar_us / 1e3, st->rto_ms, st->outstanding,
	    st->rate_tokens, st->budget_tokens, (unsigned long long)st->queries,
	    (unsigned long long)st->answers, (unsigned long long)st->timeouts,
	    (unsigned long long)st->errors,
	    st->last_ok_ms ? (long long)(now - st->last_ok_ms) : -1LL,
	    st->last_fail_ms ? (long long)(now - st->last_fail_ms) : -1LL);
	json_str(out, st->last_fail);
	evbuffer_add_printf(out, ",\"transport_error\":");
	json_str(out, xerr);
	evbuffer_add(out, "}", 1);
}

static void
upstream_text(struct evbuffer *out, const struct config_upstream *u,
    const struct upstream_stats *st, const char *xerr, uint64_t now)
{
	char ok[32], bad[32];

	ago(ok, sizeof(ok), now, st->last_ok_ms);
	ago(bad, sizeof(bad), now, st->last_fail_ms);
	evbuffer_add_printf(out,
	    "  %s %s circuit=%s srtt=%.1fms rttvar=%.1fms rto=%ums "
	    "outstanding=%u rate-left=%u budget-left=%u queries=%llu "
	    "answers=%llu timeouts=%llu errors=%llu last-success=%s "
	    "last-failure=%s%s%s%s%s%s\n",
	    u->text, protos[u->proto & 3], upstream_circuit_name(st->circuit),
	    st->srtt_us / 1e3, st->rttvar_us / 1e3, st->rto_ms, st->outstanding,
	    st->rate_tokens, st->budget_tokens, (unsigned long long)st->queries,
	    (unsigned long long)st->answers, (unsigned long long)st->timeouts,
	    (unsigned long long)st->errors, ok, bad,
	    st->last_fail[0] ? " reason=" : "", st->last_fail,
	    xerr[0] ? " transport-error=\"" : "", xerr, xerr[0] ? "\"" : "");
}

static void
cmd_upstreams(struct ctl_conn *k)
{
	struct route *r = k->c->ops->route(k->c->arg);
	struct evbuffer *out = evbuffer_new();
	uint64_t now = clock_now_ms();
	char zone[WIRE_NAME_MAX * 4 + 8];
	bool first = true;

	if (out == NULL) {
		conn_free(k);
		return;
	}
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
			char xerr[200] = "";
			upstream_get_stats(pool, i, &st);
			if (k->c->ops->transport_error != NULL)
				k->c->ops->transport_error(
				    k->c->arg, u, xerr, sizeof(xerr));
			if (k->json) {
				evbuffer_add_printf(
				    out, "%s{\"zone\":", first ? "" : ",");
				upstream_json(out, zone, u, &st, xerr, now);
			} else {
				upstream_text(out, u, &st, xerr, now);
			}
			first = false;
		}
	}
	if (k->json)
		evbuffer_add_printf(out, "]}\n");
	finish(k, out);
}

/* A sample value JSON can carry as a number (not NaN, +Inf, 0x...). */
static bool
json_number(const char *s, size_t n)
{
	size_t i = 0, digits = 0;

	if (i < n && s[i] == '-')
		i++;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		digits++;
	if (digits == 0 || (digits > 1 && s[i - digits] == '0'))
		return false;
	if (i < n && s[i] == '.') {
		for (digits = 0, i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
			digits++;
		if (digits == 0)
			return false;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
			digits++;
		if (digits == 0)
			return false;
	}
	return i == n;
}

/*
 * A label value of the exposition format (after its opening quote) into
 * val, its escapes (\\, \" and \n) undone.  Returns what follows the
 * closing quote, or NULL.
 */
static const char *
label_value(const char *p, char *val, size_t cap)
{
	size_t o = 0;

	for (; *p != '"'; p++) {
		char ch = *p;
		if (ch == '\0' || o + 1 >= cap)
			return NULL;
		if (ch == '\\') {
			ch = *++p;
			if (ch == '\0')
				return NULL;
			if (ch == 'n')
				ch = '\n';
		}
		val[o++] = ch;
	}
	val[o] = '\0';
	return p + 1;
}

/*
 * One sample line of the exposition format, name{k="v",...} value, as a
 * JSON object into obj; false for a line that is not one.
 */
static bool
sample_json(struct evbuffer *obj, const char *p)
{
	char name[128], val[512];
	size_t n = strcspn(p, "{ ");

	if (n == 0 || n >= sizeof(name))
		return false;
	memcpy(name, p, n);
	name[n] = '\0';
	p += n;
	evbuffer_add_printf(obj, "{\"name\":");
	json_str(obj, name);
	evbuffer_add_printf(obj, ",\"labels\":{");
	if (*p == '{') {
		bool first = true;
		for (p++; *p != '}'; p += *p == ',') {
			n = strcspn(p, "=");
			if (p[n] != '=' || p[n + 1] != '"' || n == 0 ||
			    n >= sizeof(name))
				return false;
			memcpy(name, p, n);
			name[n] = '\0';
			if ((p = label_value(p + n + 2, val, sizeof(val))) ==
			    NULL)
				return false;
			if (!first)
				evbuffer_add(obj, ",", 1);
			first = false;
			json_str(obj, name);
			evbuffer_add(obj, ":", 1);
			json_str(obj, val);
		}
		p++;
	}
	p += strspn(p, " ");
	n = strcspn(p, " ");
	if (n == 0 || n >= sizeof(val))
		return false;
	evbuffer_add_printf(obj, "},\"value\":");
	if (json_number(p, n)) {
		evbuffer_add(obj, p, n);
	} else {
		snprintf(val, sizeof(val), "%.*s", (int)n, p);
		json_str(obj, val);
	}
	evbuffer_add(obj, "}", 1);
	return true;
}

/* The /metrics text (prom) as {"ok":true,"metrics":[...]}. */
static void
stats_json(struct evbuffer *out, struct evbuffer *prom)
{
	struct evbuffer *obj = evbuffer_new();
	size_t n, count = 0;
	char *line;

	evbuffer_add_printf(out, "{\"ok\":true,\"metrics\":[");
	while (obj != NULL &&
	    (line = evbuffer_readln(prom, &n, EVBUFFER_EOL_LF)) != NULL) {
		if (line[0] != '#' && line[0] != '\0' &&
		    sample_json(obj, line)) {
			if (count++ > 0)
				evbuffer_add(out, ",", 1);
			evbuffer_add_buffer(out, obj);
		}
		evbuffer_drain(obj, evbuffer_get_length(obj));
		free(line);
	}
	evbuffer_add_printf(out, "]}\n");
	if (obj != NULL)
		evbuffer_free(obj);
}

static void
cmd_stats(struct ctl_conn *k)
{
	struct evbuffer *out = evbuffer_new(), *prom = evbuffer_new();

	if (out == NULL || prom == NULL) {
		if (out != NULL)
			evbuffer_free(out);
		if (prom != NULL)
			evbuffer_free(prom);
		conn_free(k);
		return;
	}
	k->c->ops->stats(k->c->arg, prom);
	if (k->json) {
		stats_json(out, prom);
	} else {
		evbuffer_add_printf(out, "ok\n");
		evbuffer_add_buffer(out, prom);
	}
	evbuffer_free(prom);
	finish(k, out);
}

static void
cmd_reload(struct ctl_conn *k)
{
	char msg[1200];
	struct evbuffer *out;

	/* Synchronous: the answer says whether the new config is in use. */
	if (k->c->ops->reload(k->c->arg, msg, sizeof(msg)) < 0) {
		reply_error(k,
		    "reload failed, the running configuration stays: %s", msg);
		return;
	}
	if ((out = evbuffer_new()) == NULL) {
		conn_free(k);
		return;
	}
	if (k->json) {
		evbuffer_add_printf(out, "{\"ok\":true,\"result\":");
		json_str(out, msg);
		evbuffer_add_printf(out, "}\n");
	} else {
		evbuffer_add_printf(out, "ok reloaded, %s\n", msg);
	}
	finish(k, out);
}

static void
reply_ok(struct ctl_conn *k, const char *json, const char *text)
{
	struct evbuffer *out = evbuffer_new();

	if (out == NULL) {
		conn_done(k);
		return;
	}
	evbuffer_add_printf(out, "%s\n", k->json ? json : text);
	finish(k, out);
}

static void
cmd_handover(struct ctl_conn *k, const struct control_req *req)
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

	if (req->version != CONTROL_HANDOVER_VERSION) {
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

/* Answers one request line (len bytes, without its newline). */
static void
dispatch(struct ctl_conn *k, const char *line, size_t len)
{
	struct control_req req;
	char esc[256], text[80];

	if (control_parse(line, len, &req) < 0) {
		k->json = req.json;
		log_warn("control", "control request refused error=\"%s\"",
		    log_escape(esc, sizeof(esc), req.error, strlen(req.error)));
		reply_error(k, "%s", req.error);
		return;
	}
	k->json = req.json;
	switch (req.cmd) {
	case CONTROL_FLUSH:
	case CONTROL_FLUSH_ZONE:
	case CONTROL_FLUSH_NEGATIVE:
	case CONTROL_FLUSH_ALL:
		cmd_flush(k, &req);
		break;
	case CONTROL_DUMP:
		cmd_dump(k, &req);
		break;
	case CONTROL_UPSTREAMS:
		cmd_upstreams(k);
		break;
	case CONTROL_STATS:
		cmd_stats(k);
		break;
	case CONTROL_RELOAD:
		cmd_reload(k);
		break;
	case CONTROL_LOG_LEVEL:
		log_set_level((enum log_level)req.level);
		log_info("control", "log level set level=%s",
		    log_level_name((enum log_level)req.level));
		snprintf(esc, sizeof(esc), "{\"ok\":true,\"log_level\":\"%s\"}",
		    log_level_name((enum log_level)req.level));
		snprintf(text, sizeof(text),
		    "ok log-level %s until the next reload",
		    log_level_name((enum log_level)req.level));
		reply_ok(k, esc, text);
		break;
	case CONTROL_STOP:
		k->stop_after = true;
		reply_ok(k, "{\"ok\":true}", "ok draining and exiting");
		break;
	case CONTROL_HANDOVER:
		cmd_handover(k, &req);
		break;
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
