/*
 * libFuzzer target for the path an upstream answer takes through the
 * daemon's own engine (tests/scenario/harness): the transport hands it to
 * the attempt (ID and question matched, classified, TC and FORMERR
 * fallbacks, error RCODEs failing the server), the engine stores it and
 * answers every client waiting on the question: several clients of one
 * in-flight query, with other IDs, letter case and EDNS sizes (UDP 512,
 * UDP 1232, TCP).  Then the cache serves it fresh and, with the upstream
 * silent, stale.  Every reply is checked against what a client must be
 * able to rely on; a violated invariant aborts.
 *
 * The clients ask the answer's own question (as an upstream would be
 * asked it); an answer whose question does not parse is paired with a
 * fixed one and must only be survived.
 *
 * Build: make build-fuzz/fuzz_msg
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "stubborn/wire.h"

#include "fuzz.h"

struct asked {
	const char *label;
	uint16_t id;
	unsigned flags;
	size_t limit;
	int variant; /* 0: as given, 1: upper case, 2: mixed */
};

static const struct asked clients[] = {
    {"udp", 0x1111, 0, 1232, 0},
    {"small", 0x2222, H_Q_NOEDNS, 512, 1},
    {"tcp", 0x3333, H_Q_TCP, WIRE_MSG_MAX, 2},
};
#define NCLIENTS (sizeof(clients) / sizeof(clients[0]))

static void
recase(char *name, int variant)
{
	for (size_t i = 0; name[i] != '\0'; i++) {
		char c = name[i];
		if (variant == 1 && c >= 'a' && c <= 'z')
			name[i] = (char)(c - 32);
		else if (variant == 2 && (i & 1) && c >= 'a' && c <= 'z')
			name[i] = (char)(c - 32);
	}
}

static bool
walk_clean(const uint8_t *m, size_t len)
{
	struct wire_iter it;
	struct wire_rr rr;
	int r;

	if (wire_iter_init(&it, m, len) < 0)
		return false;
	while ((r = wire_iter_next(&it, &rr)) == 1)
		;
	return r == 0 && it.off == len;
}

/* The reply to client c: its ID, its question, within its limit. */
static void
check_reply(const struct h_reply *rep, const struct asked *c, const char *qname,
    uint16_t qtype)
{
	uint8_t name[WIRE_NAME_MAX];
	struct wire_question q;
	uint16_t flags;
	int n = wire_name_from_text(qname, name);

	if (rep->msg == NULL)
		return; /* "no reply" is an outcome the engine may choose */
	CHECK(rep->len <= c->limit);
	CHECK(rep->len >= WIRE_HDR_LEN);
	CHECK(WIRE_ID(rep->msg) == c->id);
	flags = WIRE_FLAGS(rep->msg);
	CHECK(flags & WIRE_QR);
	CHECK(flags & WIRE_RA);
	CHECK(!(flags & (WIRE_AA | WIRE_AD | WIRE_Z)));
	CHECK(walk_clean(rep->msg, rep->len));
	CHECK(wire_read_question(rep->msg, rep->len, &q) == 0);
	CHECK(q.qtype == qtype);
	/* Exactly the bytes the client sent, letter case included. */
	CHECK(n > 0 && q.name_len == (size_t)n &&
	    memcmp(rep->msg + q.name_off, name, (size_t)n) == 0);
	/* A client without EDNS gets no OPT; one with EDNS gets ours. */
	if (flags & WIRE_TC)
		CHECK(
		    WIRE_ANCOUNT(rep->msg) == 0 && WIRE_NSCOUNT(rep->msg) == 0);
}

/* Every client has exactly one reply since mark, each checked. */
static void
check_all(struct harness *h, size_t mark, char names[][WIRE_NAME_MAX * 4 + 8],
    uint16_t qtype, bool strict)
{
	for (size_t k = 0; k < NCLIENTS; k++) {
		size_t got = 0;
		for (size_t i = mark; i < h_reply_count(h); i++) {
			struct h_reply *rep = h_reply_at(h, i);
			if (strcmp(rep->client, clients[k].label) != 0)
				continue;
			got++;
			if (strict)
				check_reply(rep, &clients[k], names[k], qtype);
		}
		CHECK(got == 1);
	}
}

static void
ask_all(struct harness *h, char names[][WIRE_NAME_MAX * 4 + 8], uint16_t qtype)
{
	for (size_t k = 0; k < NCLIENTS; k++)
		CHECK(h_query(h, clients[k].label, "10.0.0.1", names[k], qtype,
			  clients[k].flags, clients[k].id) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char *argv[] = {"fuzz", "--upstream", "192.0.2.1",
	    "--resolv-conf", "/dev/null", "--cache-size", "1M", "--log-level",
	    "error", "--client-qps", "1000000", NULL};
	static uint8_t msg[WIRE_MSG_MAX];
	char names[NCLIENTS][WIRE_NAME_MAX * 4 + 8],
	    text[WIRE_NAME_MAX * 4 + 8];
	struct harness *h;
	struct wire_question q;
	uint16_t qtype = WIRE_TYPE_A;
	bool strict = false;
	size_t mark, sent;
	char err[256];

	if (size < 2 || size > sizeof(msg))
		return 0;
	h = h_new(11, argv, 1, err, sizeof(err));
	CHECK(h != NULL);
	snprintf(text, sizeof(text), "fuzz.example.");
	if (wire_read_question(data, size, &q) == 0 &&
	    q.qtype != WIRE_TYPE_AXFR && q.qtype != WIRE_TYPE_IXFR &&
	    q.qtype != WIRE_TYPE_OPT && q.qclass == WIRE_CLASS_IN) {
		wire_name_text(
		    data + q.name_off, q.name_len, text, sizeof(text));
		qtype = q.qtype;
		strict = true;
	}
	for (size_t k = 0; k < NCLIENTS; k++) {
		snprintf(names[k], sizeof(names[k]), "%s", text);
		recase(names[k], clients[k].variant);
	}
	mark = h_reply_count(h);
	ask_all(h, names, qtype);
	/* Every query the engine sends (the first, a retry over TCP or
	 * without EDNS) gets the input as its answer, under its own ID. */
	for (sent = 0; sent < 4 && sent < h_sent_count(h); sent++) {
		memcpy(msg, data, size);
		h_answer_raw(h, sent, msg, size, false);
	}
	h_advance_to(h, h_now(h) + 3000);
	check_all(h, mark, names, qtype, strict);
	/* From the cache, if it went there; or from upstream, now silent. */
	mark = h_reply_count(h);
	ask_all(h, names, qtype);
	h_advance_to(h, h_now(h) + 3000);
	check_all(h, mark, names, qtype, strict);
	/* Expired: stale, or a failure. */
	h_advance_to(h, h_now(h) + 700000);
	mark = h_reply_count(h);
	ask_all(h, names, qtype);
	h_advance_to(h, h_now(h) + 3000);
	check_all(h, mark, names, qtype, strict);
	h_free(h);
	return 0;
}
