/*
 * harness: the daemon's query engine (pipeline, engine, cache, route) with
 * no socket and no real clock.  Upstream servers are scripted: the engine's
 * transport records every query it sends and answers it as the rules say,
 * after the delay they give; clients are labels whose replies are kept;
 * time passes only when the harness is told, and every timer and scripted
 * answer due meanwhile runs in order.  The scenario runner and the fuzz
 * targets drive the engine through this.
 */
#ifndef STUBBORN_TEST_HARNESS_H
#define STUBBORN_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stubborn/client.h"
#include "stubborn/config.h"
#include "stubborn/wire.h"

#define H_MAX_RECORDS 8
#define H_MSG_MAX 65535

/* What a scripted server does with a query that matches a rule. */
enum h_action {
	H_ANSWER = 0, /* NOERROR with the rule's records (none: NODATA) */
	H_NXDOMAIN,   /* with an SOA */
	H_NODATA,     /* NOERROR, no answer, an SOA */
	H_SERVFAIL,
	H_REFUSED,
	H_FORMERR,
	H_TRUNCATE,    /* an empty answer with TC=1 (over UDP only) */
	H_DROP,        /* no answer at all */
	H_UNREACHABLE, /* an ICMP error: the transport reports -ECONNREFUSED */
	H_WRONG_ID,    /* an answer with another message ID (a spoof) */
	H_SYNTH,       /* records made up for the question: A, AAAA, TXT;
			  other types NODATA */
};

struct h_rule {
	char server[400]; /* upstream text ("192.0.2.1:53"), "*": any */
	uint8_t name[WIRE_NAME_MAX]; /* lower-case wire form; len 0: any */
	size_t nlen;
	uint16_t type; /* 0: any */
	enum h_action action;
	char records[H_MAX_RECORDS][256]; /* presentation format */
	size_t nrecords;
	uint32_t delay_ms;
	bool tcp_only; /* the answer only over TCP (UDP gets TC=1) */
	bool ad;       /* the answer has AD set (validated) */
};

/* One query the engine sent upstream. */
struct h_sent {
	uint64_t at; /* ms since the start */
	char server[400];
	uint8_t msg[512];
	size_t len;
	bool tcp;
	bool probe;    /* the health probe's question */
	bool live;     /* still waiting: neither answered nor cancelled */
	bool consumed; /* an expectation matched it */
	void *req;     /* the transport request (identity only) */
};

/* One reply a client got (or "none": the engine said no reply comes). */
struct h_reply {
	char client[32];
	uint64_t at;
	uint8_t *msg; /* NULL: no reply */
	size_t len;
	enum client_source src;
	bool consumed;
};

struct harness;

/*
 * A harness for the configuration argv (as config_load takes it; argv[0]
 * is ignored) with the random stream of seed.  NULL with err filled when
 * the configuration does not load.
 */
struct harness *h_new(
    int argc, char **argv, uint64_t seed, char *err, size_t errlen);
void h_free(struct harness *h);

/* The configuration the engine runs with. */
const struct config *h_config(const struct harness *h);

/* Adds a rule; later rules win over earlier ones for the same query. */
void h_add_rule(struct harness *h, const struct h_rule *r);
void h_clear_rules(struct harness *h);

/* ms since the start. */
uint64_t h_now(const struct harness *h);

/* Lets time pass until ms since the start, running what falls due. */
void h_advance_to(struct harness *h, uint64_t ms);

/*
 * A client query: label names the client (its replies are kept under
 * it), from its address (NULL: 127.0.0.1), for qname/qtype.  flags: the
 * H_Q_* bits.  id 0 picks one.
 */
#define H_Q_DO 0x1
#define H_Q_CD 0x2
#define H_Q_TCP 0x4
#define H_Q_NOEDNS 0x8
#define H_Q_AD 0x10
int h_query(struct harness *h, const char *label, const char *from,
    const char *qname, uint16_t qtype, unsigned flags, uint16_t id);

/* Hands raw bytes to the pipeline as a message from label, over UDP (a
 * datagram) or TCP (one message of a connection). */
void h_packet(struct harness *h, const char *label, const char *from,
    const uint8_t *pkt, size_t len, bool tcp);

/*
 * Delivers raw bytes as the answer to sent query i (its ID is written
 * over the first two bytes unless keep_id), now.  False when that query
 * is no longer waiting.
 */
bool h_answer_raw(
    struct harness *h, size_t i, uint8_t *msg, size_t len, bool keep_id);

size_t h_sent_count(const struct harness *h);
struct h_sent *h_sent_at(struct harness *h, size_t i);
size_t h_reply_count(const struct harness *h);
struct h_reply *h_reply_at(struct harness *h, size_t i);

/* The engine's pieces, for expectations. */
struct cache *h_cache(struct harness *h);
struct route *h_route(struct harness *h);
struct metrics *h_metrics(struct harness *h);

#endif
