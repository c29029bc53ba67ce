/*
 * client: who asked a query, as the listener knows it, and how a reply gets
 * back to it.  The engine keeps a copy per waiting client and calls reply
 * exactly once for each query it accepted.
 */
#ifndef STUBBORN_CLIENT_H
#define STUBBORN_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* Where a reply came from, for the latency histogram and the query log. */
enum client_source {
	CLIENT_SRC_CACHE = 0, /* a fresh cache hit */
	CLIENT_SRC_UPSTREAM,  /* an upstream answer, just now */
	CLIENT_SRC_STALE,     /* an expired answer (RFC 8767) */
	CLIENT_SRC_ERROR,     /* SERVFAIL, REFUSED, FORMERR, ... made here */
	CLIENT_SRC_COUNT
};

struct client;

/*
 * Delivers msg (len bytes) to the client, or (msg NULL) tells its owner
 * that no reply will come.
 */
typedef void (*client_reply_fn)(const struct client *cl, const uint8_t *msg,
    size_t len, enum client_source src);

struct client {
	client_reply_fn reply;
	size_t max_len;               /* reply size limit (UDP: its size) */
	int fd;                       /* UDP: the socket it came in on */
	struct sockaddr_storage peer; /* its address */
	socklen_t peer_len;
	/* UDP on a wildcard address: the address it asked and the interface,
	 * so the reply leaves from there (family 0: not known, not needed) */
	struct {
		int family;
		unsigned ifindex;
		union {
			struct in_addr v4;
			struct in6_addr v6;
		} a;
	} dst;
	void *conn; /* the listener's socket (UDP) or
		       connection (TCP) */
	bool tcp;
	uint64_t start_us; /* when the query arrived (clock_now_us) */
};

#endif
