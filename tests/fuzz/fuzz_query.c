/*
 * libFuzzer target for a client message through the daemon's own query
 * path, with no socket (tests/scenario/harness): pipeline (parse, allow,
 * cache, rate limit), engine (coalescing, the race upstream, the answer
 * stored and replied), reply.  The scripted upstream makes up an answer
 * for whatever question reaches it.  The input is handed in as a UDP
 * datagram (a miss), again (a cache hit), over TCP, and once more after
 * its TTL ran out (stale, with the upstream silent); every reply is checked
 * against what a client must be able to rely on, and a violated invariant
 * aborts.
 *
 * Build: make build-fuzz/fuzz_query
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "stubborn/wire.h"

#include "fuzz.h"

/* Every record parses and the message ends with the last one. */
static bool
walk_clean(const uint8_t *m, size_t len, unsigned *nopt)
{
	struct wire_iter it;
	struct wire_rr rr;
	int r;

	*nopt = 0;
	if (wire_iter_init(&it, m, len) < 0)
		return false;
	while ((r = wire_iter_next(&it, &rr)) == 1)
		*nopt += rr.type == WIRE_TYPE_OPT;
	return r == 0 && it.off == len;
}

/* One reply to the input, sent over TCP (limit 65535) or UDP. */
static void
check_reply(const struct h_reply *rep, const uint8_t *q, size_t qlen,
    const struct wire_query *wq, enum wire_verdict v, bool tcp)
{
	size_t limit = tcp ? WIRE_MSG_MAX : wire_udp_limit(wq, 1232);
	unsigned nopt;
	uint16_t flags;

	if (v == WIRE_DROP) {
		/* Short or QR=1: no reply at all. */
		CHECK(rep->msg == NULL);
		return;
	}
	CHECK(rep->msg != NULL);
	CHECK(rep->len >= WIRE_HDR_LEN && rep->len <= limit);
	CHECK(WIRE_ID(rep->msg) == WIRE_ID(q));
	flags = WIRE_FLAGS(rep->msg);
	CHECK(flags & WIRE_QR);
	CHECK(flags & WIRE_RA);
	CHECK(!(flags & (WIRE_AA | WIRE_AD | WIRE_Z)));
	CHECK((flags & (WIRE_RD | WIRE_CD)) ==
	    (WIRE_FLAGS(q) & (WIRE_RD | WIRE_CD)));
	CHECK(walk_clean(rep->msg, rep->len, &nopt));
	/* An OPT back exactly when the query had one (BADVERS always). */
	CHECK(nopt == ((wq->has_opt || v == WIRE_BADVERS) ? 1u : 0u));
	/* The client's question, letter case and all, when it parsed. */
	if (v == WIRE_ACCEPT ||
	    (wq->q.end > WIRE_HDR_LEN && wq->q.end <= qlen &&
		WIRE_QDCOUNT(rep->msg) == 1)) {
		CHECK(WIRE_QDCOUNT(rep->msg) == 1);
		CHECK(rep->len >= wq->q.end);
		CHECK(memcmp(rep->msg + WIRE_HDR_LEN, q + WIRE_HDR_LEN,
			  wq->q.end - WIRE_HDR_LEN) == 0);
	}
	if (flags & WIRE_TC)
		CHECK(
		    WIRE_ANCOUNT(rep->msg) == 0 && WIRE_NSCOUNT(rep->msg) == 0);
}

/* Feeds data as client "c" and checks every reply that came of it. */
static void
feed(struct harness *h, const uint8_t *data, size_t size, bool tcp)
{
	struct wire_query wq;
	enum wire_verdict v;
	size_t before = h_reply_count(h);

	memset(&wq, 0, sizeof(wq));
	v = wire_parse_query(data, size, &wq);
	h_packet(h, "c", "10.0.0.1", data, size, tcp);
	/* A silent upstream answers nothing: SERVFAIL at its timeout. */
	for (int i = 0; i < 60 && h_reply_count(h) == before; i++)
		h_advance_to(h, h_now(h) + 100);
	/* One reply per message: the answer, an error, or "none". */
	CHECK(h_reply_count(h) == before + 1);
	check_reply(h_reply_at(h, before), data, size, &wq, v, tcp);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char *argv[] = {"fuzz", "--upstream", "192.0.2.1",
	    "--resolv-conf", "/dev/null", "--cache-size", "1M", "--log-level",
	    "error", "--client-qps", "1000000", NULL};
	struct h_rule synth = {.server = "*", .action = H_SYNTH};
	struct h_rule silent = {.server = "*", .action = H_DROP};
	struct harness *h;
	char err[256];

	if (size > 4096)
		return 0;
	h = h_new(11, argv, 1, err, sizeof(err));
	CHECK(h != NULL);
	h_add_rule(h, &synth);
	feed(h, data, size, false); /* a miss, answered from upstream */
	feed(h, data, size, false); /* a hit */
	feed(h, data, size, true);  /* a hit over TCP, no size limit */
	h_add_rule(h, &silent);
	h_advance_to(h, h_now(h) + 400000);
	feed(h, data, size, false); /* stale (or a miss left unanswered) */
	h_advance_to(h, h_now(h) + 5000);
	h_free(h);
	return 0;
}
