/*
 * control: the control socket (control-socket), a Unix stream socket the
 * running daemon listens on, served by the main thread, off the query path.
 *
 * Protocol: a client sends one line, "[json ]COMMAND [ARG...]\n" (at most
 * CONTROL_LINE_MAX bytes); the daemon answers with text, whose first line is
 * "ok ..." or "error: ...", or with one JSON object when the line began with
 * "json", then closes the connection.  Commands:
 *   flush NAME [TYPE]   flush-zone ZONE   flush-negative   flush-all
 *   dump [ZONE]   upstreams   stats   reload   log-level LEVEL   stop
 *   handover VERSION    (a successor taking over: see control_takeover)
 * The socket file is mode 0660, owned by the daemon's user and group; a
 * peer whose credentials are neither root nor that user or group is
 * refused as well.
 */
#ifndef STUBBORN_CONTROL_H
#define STUBBORN_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "stubborn/wire.h"

#define CONTROL_LINE_MAX 1024
/* Where the shipped config, the systemd unit and stubborn-ctl put it. */
#define CONTROL_SOCKET_DEFAULT "/run/stubborn/control.sock"
/* Control connections served at once; more are refused. */
#define CONTROL_CONNS_MAX 32
#define CONTROL_HANDOVER_VERSION 1
/* Listening sockets a handover can carry. */
#define CONTROL_MAX_FDS 2100

enum control_cmd {
	CONTROL_FLUSH = 0,  /* name, qtype (0: every type) */
	CONTROL_FLUSH_ZONE, /* name: the zone */
	CONTROL_FLUSH_NEGATIVE,
	CONTROL_FLUSH_ALL,
	CONTROL_DUMP, /* name: the zone (name_len 0: the whole cache) */
	CONTROL_UPSTREAMS,
	CONTROL_STATS,
	CONTROL_RELOAD,
	CONTROL_LOG_LEVEL, /* level */
	CONTROL_STOP,
	CONTROL_HANDOVER, /* version */
};

/* One request, as control_parse reads it. */
struct control_req {
	enum control_cmd cmd;
	bool json;                   /* answer with one JSON object */
	uint8_t name[WIRE_NAME_MAX]; /* lower-case, uncompressed wire form */
	size_t name_len;             /* 0: no name given */
	uint16_t qtype;              /* 0: any type */
	int level;                   /* an enum log_level */
	int version;                 /* the successor's handover version */
	char error[160];             /* why the request was refused */
};

/*
 * Parses one request line: len bytes of line (need not be NUL-terminated,
 * may hold any bytes), the newline left out; a CR before it is ignored.
 * Pure: no allocation, no I/O, no logging.  Returns 0 with *req filled, or
 * -E2BIG (longer than CONTROL_LINE_MAX) or -EINVAL (control bytes, no or an
 * unknown command, the wrong number of arguments, a bad name, type, level
 * or version) with req->error saying why, for the operator.  Either way
 * req->json tells whether the line began with "json", so that an error
 * goes out as JSON too.
 */
int control_parse(const char *line, size_t len, struct control_req *req);

struct event_base;
struct evbuffer;
struct cache;
struct route;
struct config_upstream;
struct control;

/* What the daemon does for the commands that are not about the cache. */
struct control_ops {
	/* Reloads; msg (cap) gets "generation N" or the error (file:line). */
	int (*reload)(void *arg, char *msg, size_t cap);
	/* Drains and exits, as on SIGTERM. */
	void (*stop)(void *arg);
	/* The route new queries use now. */
	struct route *(*route)(void *arg);
	/* The /metrics text. */
	void (*stats)(void *arg, struct evbuffer *out);
	/*
	 * Entries were flushed: the snapshot should follow.  True when a
	 * snapshot is being rewritten (false: none is configured).
	 */
	bool (*flushed)(void *arg);
	/*
	 * A successor asks for the sockets: fills fds (at most max) with the
	 * listening sockets to hand over and returns how many, and writes
	 * the cache somewhere the successor can read (path, "" if none).
	 */
	int (*handover)(void *arg, int *fds, int max, char *path, size_t cap);
	/* The successor serves now: stop reading, drain, exit. */
	void (*handover_done)(void *arg);
	/*
	 * The last transport failure with server u (a TLS certificate that
	 * did not verify, a refused connection...) into buf (cap), "" if
	 * none.  May be NULL.
	 */
	void (*transport_error)(
	    void *arg, const struct config_upstream *u, char *buf, size_t cap);
};

/*
 * Listens on path (an existing file there is replaced), mode 0660 and
 * owned by uid:gid (-1: leave as is).  cache is flushed and dumped; ops
 * and arg do the rest.  NULL with err (errlen) naming the cause.
 */
struct control *control_new(struct event_base *base, const char *path,
    uid_t uid, gid_t gid, struct cache *cache, const struct control_ops *ops,
    void *arg, char *err, size_t errlen);

/*
 * Stops listening and closes every connection; removes the socket file
 * unless a successor took it over.  NULL is fine.
 */
void control_free(struct control *c);

/*
 * The successor's side of a handover, before it serves: connects to the
 * daemon on path, asks for its sockets and its cache.  Returns the number
 * of fds received (into fds, at most max) with *conn the still open
 * control connection and cache_path where the cache was written ("" for
 * none); 0 when no daemon listens there (the file is stale or missing:
 * start normally); or a negative errno with err (errlen) saying why (a
 * daemon is there but the handover failed: do not start beside it).
 */
int control_takeover(const char *path, int *fds, int max, int *conn,
    char *cache_path, size_t cap, char *err, size_t errlen);

/*
 * Tells the old daemon (over conn, from control_takeover) that this one
 * serves now, and closes conn.  Returns 0 or a negative errno.
 */
int control_takeover_done(int conn);

#endif
