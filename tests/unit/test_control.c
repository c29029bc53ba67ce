/*
 * Unit tests for control: the request parser on its own, then the daemon's
 * side of the socket in this process (a real Unix socket in a mkdtemp
 * directory, the event loop turned by hand, the monotonic clock frozen),
 * so TTLs left and hold times are exact.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "stubborn/cache.h"
#include "stubborn/clock.h"
#include "stubborn/control.h"
#include "stubborn/log.h"
#include "stubborn/wire.h"
#include "unit.h"

#define T0 (1ULL << 33)
#define ANSWER_MAX (1 << 20)

static size_t name_wire(const char *text, uint8_t *out);
static size_t build_a(uint8_t *buf, const char *name, uint32_t ttl);
static void store_a(const char *name, uint32_t ttl, uint64_t now_ms);
static size_t key_for(uint8_t *key, const char *name);
static int parse(const char *line, struct control_req *req);
static char *ask_raw(const char *req, size_t len);
static char *ask(const char *req);
static int stub_reload(void *arg, char *msg, size_t cap);
static void stub_stop(void *arg);
static void stub_stats(void *arg, struct evbuffer *out);
static bool stub_flushed(void *arg);
static void setup(void);
static void teardown(void);
static Suite *make_suite(void);

static char dir[64];
static char sock_path[96];
static struct event_base *base;
static struct cache *cache;
static struct control *ctl;
static int stops;

static const struct control_ops ops = {
    .reload = stub_reload,
    .stop = stub_stop,
    .stats = stub_stats,
    .flushed = stub_flushed,
};

/* "www.example" -> 3www7example0 */
static size_t
name_wire(const char *text, uint8_t *out)
{
	int n = wire_name_from_text(text, out);

	ck_assert_int_gt(n, 0);
	return (size_t)n;
}

/* NOERROR, one A record 192.0.2.1 with ttl for name. */
static size_t
build_a(uint8_t *buf, const char *name, uint32_t ttl)
{
	static const uint8_t hdr[12] = {
	    0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0};
	static const uint8_t rr[] = {0xc0, 0x0c, 0, 1, 0, 1};
	size_t o = sizeof(hdr);

	memcpy(buf, hdr, sizeof(hdr));
	o += name_wire(name, buf + o);
	wire_put16(buf + o, 1);
	wire_put16(buf + o + 2, 1);
	o += 4;
	memcpy(buf + o, rr, sizeof(rr));
	o += sizeof(rr);
	wire_put32(buf + o, ttl);
	wire_put16(buf + o + 4, 4);
	o += 6;
	memcpy(buf + o, "\xc0\x00\x02\x01", 4);
	return o + 4;
}

static size_t
key_for(uint8_t *key, const char *name)
{
	uint8_t qname[WIRE_NAME_MAX];
	size_t n = name_wire(name, qname);

	return cache_make_key(key, qname, n, 1, 1, 0);
}

static void
store_a(const char *name, uint32_t ttl, uint64_t now_ms)
{
	uint8_t key[CACHE_KEY_MAX], resp[512];
	size_t klen = key_for(key, name), len = build_a(resp, name, ttl);

	ck_assert_int_eq(
	    cache_store(cache, key, klen, resp, len, ttl, now_ms), 0);
}

static int
parse(const char *line, struct control_req *req)
{
	return control_parse(line, strlen(line), req);
}

/*
 * Sends req (len bytes) and turns the loop until the daemon side closes;
 * returns the answer (free it).  Bounded: 2000 turns of at most 5 ms.
 */
static char *
ask_raw(const char *req, size_t len)
{
	struct sockaddr_un sun;
	char *answer = calloc(1, ANSWER_MAX);
	size_t got = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	ck_assert_ptr_nonnull(answer);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	ck_assert_int_eq(write(fd, req, len), (ssize_t)len);
	for (int turn = 0; turn < 2000; turn++) {
		struct pollfd p = {fd, POLLIN, 0};
		ssize_t r;
		event_base_loop(base, EVLOOP_NONBLOCK);
		/* As main does once the loop ends: what was not sent is lost.
		 */
		if (stops > 0 && ctl != NULL) {
			control_free(ctl);
			ctl = NULL;
		}
		/* The wait is for the other end of the socket, this process. */
		if (poll(&p, 1, 5) <= 0)
			continue;
		r = read(fd, answer + got, ANSWER_MAX - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	answer[got] = '\0';
	return answer;
}

static char *
ask(const char *req)
{
	char line[CONTROL_LINE_MAX + 2];

	snprintf(line, sizeof(line), "%s\n", req);
	return ask_raw(line, strlen(line));
}

static int
stub_reload(void *arg, char *msg, size_t cap)
{
	snprintf(msg, cap, "/etc/stubborn/stubborn.conf:2: missing '='");
	return -1;
}

static void
stub_stop(void *arg)
{
	stops++;
	event_base_loopexit(base, NULL);
}

static void
stub_stats(void *arg, struct evbuffer *out)
{
	evbuffer_add_printf(out,
	    "# HELP stubborn_x_total Things.\n"
	    "# TYPE stubborn_x_total counter\n"
	    "stubborn_x_total{result=\"a\\\"b\",kind=\"c\"} 12\n"
	    "stubborn_up 1\n"
	    "stubborn_ratio 0.25\n"
	    "stubborn_odd NaN\n");
}

static bool
stub_flushed(void *arg)
{
	return false;
}

static void
setup(void)
{
	char err[256];

	snprintf(dir, sizeof(dir), "/tmp/test_control.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sock_path, sizeof(sock_path), "%s/c.sock", dir);
	log_set_level(LOG_LEVEL_ERROR);
	clock_set_fake_ms(T0);
	base = event_base_new();
	cache = cache_new(1 << 20, 4, 86400);
	ck_assert_ptr_nonnull(base);
	ck_assert_ptr_nonnull(cache);
	ctl = control_new(base, sock_path, (uid_t)-1, (gid_t)-1, cache, &ops,
	    NULL, err, sizeof(err));
	ck_assert_msg(ctl != NULL, "%s", err);
	stops = 0;
}

static void
teardown(void)
{
	control_free(ctl);
	cache_free(cache);
	event_base_free(base);
	clock_set_fake_ms(0);
	rmdir(dir);
}

START_TEST(parse_accepts)
{
	struct control_req req;
	uint8_t want[WIRE_NAME_MAX];
	size_t wlen = name_wire("www.example.com", want);

	ck_assert_int_eq(parse("flush WWW.Example.COM. aaaa", &req), 0);
	ck_assert_int_eq(req.cmd, CONTROL_FLUSH);
	ck_assert(!req.json);
	ck_assert_uint_eq(req.name_len, wlen);
	ck_assert_mem_eq(req.name, want, wlen);
	ck_assert_uint_eq(req.qtype, 28);

	ck_assert_int_eq(parse("json\tflush-zone  www.example.com\r", &req), 0);
	ck_assert_int_eq(req.cmd, CONTROL_FLUSH_ZONE);
	ck_assert(req.json);
	ck_assert_mem_eq(req.name, want, wlen);

	ck_assert_int_eq(parse("dump", &req), 0);
	ck_assert_int_eq(req.cmd, CONTROL_DUMP);
	ck_assert_uint_eq(req.name_len, 0);
	ck_assert_int_eq(parse("dump .", &req), 0);
	ck_assert_uint_eq(req.name_len, 1);

	ck_assert_int_eq(parse("log-level WARN", &req), 0);
	ck_assert_int_eq(req.level, LOG_LEVEL_WARN);
	ck_assert_int_eq(parse("handover 1", &req), 0);
	ck_assert_int_eq(req.version, 1);
	ck_assert_int_eq(parse("flush x TYPE65", &req), 0);
	ck_assert_uint_eq(req.qtype, 65);
}
END_TEST

START_TEST(parse_refuses)
{
	static const struct {
		const char *line, *error;
	} cases[] = {
	    {"", "empty request"},
	    {"json ", "empty request"},
	    {"json", "unknown command 'json'"},
	    {"flushh x", "unknown command 'flushh'"},
	    {"flush", "usage: flush NAME [TYPE]"},
	    {"flush a A b", "usage: flush NAME [TYPE]"},
	    {"flush-all now", "usage: flush-all"},
	    {"stop now", "usage: stop"},
	    {"log-level", "usage: log-level LEVEL"},
	    {"log-level loud",
		"log-level: bad level 'loud' (error, warn, info "
		"or debug)"},
	    {"flush a..b", "flush: bad domain name 'a..b'"},
	    {"flush a A6X", "flush: bad type 'A6X' (A, AAAA, ... or TYPEnnn)"},
	    {"dump .a", "dump: bad domain name '.a'"},
	    {"handover -1", "handover: bad version '-1'"},
	    {"flush a b c d e f", "too many words"},
	    {"stats\x1b[2J", "control byte 0x1b in the request"},
	    {"stats\r\r", "control byte 0x0d in the request"},
	};
	struct control_req req;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_int_eq(parse(cases[i].line, &req), -EINVAL);
		ck_assert_str_eq(req.error, cases[i].error);
	}
	/* A NUL inside the line is a byte like any other. */
	ck_assert_int_eq(control_parse("stats\0x", 7, &req), -EINVAL);
	ck_assert_str_eq(req.error, "control byte 0x00 in the request");
	/* The JSON flag survives a refusal: the error goes out as JSON. */
	ck_assert_int_eq(parse("json flush", &req), -EINVAL);
	ck_assert(req.json);
}
END_TEST

START_TEST(parse_length)
{
	char line[CONTROL_LINE_MAX + 2];
	struct control_req req;

	memset(line, 'a', sizeof(line));
	memcpy(line, "json flush ", 11);
	/* A name of 255 bytes (its text form is longer) is a name too far. */
	ck_assert_int_eq(
	    control_parse(line, CONTROL_LINE_MAX + 1, &req), -E2BIG);
	ck_assert_str_eq(req.error, "request too long (at most 1024 bytes)");
	ck_assert(req.json);
	ck_assert_int_eq(control_parse(line, CONTROL_LINE_MAX, &req), -EINVAL);
	ck_assert_str_eq(req.error,
	    "flush: bad domain name "
	    "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "'");
}
END_TEST

START_TEST(dump_ttl_left_and_states)
{
	uint8_t key[CACHE_KEY_MAX];
	size_t klen = key_for(key, "held.example");
	char *a;

	store_a("www.example", 300, T0);
	store_a("old.example", 60, T0);
	(void)cache_fail(cache, key, klen, T0 + 100000, 5, 60);
	clock_set_fake_ms(T0 + 100000);
	a = ask("dump");
	ck_assert_msg(strncmp(a, "ok\n", 3) == 0, "%s", a);
	ck_assert_msg(strstr(a,
			  "www.example. A NOERROR fresh ttl-left=200\n"
			  "\twww.example.\t200\tIN\tA\t192.0.2.1\n"),
	    "%s", a);
	/* Stale: its records have no TTL left. */
	ck_assert_msg(strstr(a,
			  "old.example. A NOERROR stale stale-for=40\n"
			  "\told.example.\t0\tIN\tA\t192.0.2.1\n"),
	    "%s", a);
	ck_assert_msg(strstr(a,
			  "held.example. A SERVFAIL failure held=failure "
			  "hold-left=5\n"),
	    "%s", a);
	ck_assert_msg(strstr(a, "# 3 entries\n"), "%s", a);
	free(a);

	a = ask("dump WWW.example.");
	ck_assert_msg(strstr(a, "www.example.") && !strstr(a, "old.example") &&
		strstr(a, "# 1 entry\n"),
	    "%s", a);
	free(a);

	a = ask("json dump www.example");
	ck_assert_msg(strstr(a,
			  "{\"ok\":true,\"entries\":[{\"name\":"
			  "\"www.example.\",\"type\":\"A\",\"rcode\":"
			  "\"NOERROR\",\"do\":false,\"cd\":false,"
			  "\"state\":\"fresh\",\"ttl\":300,"
			  "\"ttl_left\":200,\"stale_s\":0,\"held\":\"\","
			  "\"hold_left_s\":0,\"records\":[\"www.example."
			  "\\t200\\tIN\\tA\\t192.0.2.1\"]}],\"count\":1}\n"),
	    "%s", a);
	free(a);
}
END_TEST

START_TEST(flush_counts_and_zone_is_exact)
{
	const char *in[] = {"zone.test", "a.zone.test", "b.sub.zone.test"};
	const char *out[] = {"notzone.test", "test", "zone.test.other"};
	char *a;

	for (size_t i = 0; i < 3; i++) {
		store_a(in[i], 300, T0);
		store_a(out[i], 300, T0);
	}
	a = ask("flush-zone ZONE.test");
	ck_assert_str_eq(a, "ok 3 entries removed\n");
	free(a);
	a = ask("dump");
	for (size_t i = 0; i < 3; i++) {
		char line[64];
		snprintf(line, sizeof(line), "\n%s. A", in[i]);
		ck_assert_msg(strstr(a, line) == NULL, "%s", a);
		snprintf(line, sizeof(line), "%s. A", out[i]);
		ck_assert_msg(strstr(a, line) != NULL, "%s", a);
	}
	free(a);
	a = ask("flush notzone.test AAAA");
	ck_assert_str_eq(a, "ok 0 entries removed\n");
	free(a);
	a = ask("json flush notzone.test A");
	ck_assert_str_eq(
	    a, "{\"ok\":true,\"removed\":1,\"snapshot_rewritten\":false}\n");
	free(a);
	a = ask("flush-all");
	ck_assert_str_eq(a, "ok 2 entries removed\n");
	free(a);
}
END_TEST

START_TEST(errors_reload_stats_stop)
{
	char big[CONTROL_LINE_MAX + 100];
	char *a;

	a = ask("reload");
	ck_assert_str_eq(a,
	    "error: reload failed, the running configuration stays: "
	    "/etc/stubborn/stubborn.conf:2: missing '='\n");
	free(a);
	a = ask("json frobnicate");
	ck_assert_str_eq(
	    a, "{\"ok\":false,\"error\":\"unknown command 'frobnicate'\"}\n");
	free(a);
	/* No newline, and more than a line may hold: refused at once. */
	memset(big, 'x', sizeof(big));
	a = ask_raw(big, sizeof(big));
	ck_assert_str_eq(a, "error: request too long (at most 1024 bytes)\n");
	free(a);
	a = ask("stats");
	ck_assert_msg(
	    strncmp(a, "ok\n# HELP stubborn_x_total", 26) == 0, "%s", a);
	free(a);
	a = ask("json stats");
	ck_assert_str_eq(a,
	    "{\"ok\":true,\"metrics\":["
	    "{\"name\":\"stubborn_x_total\",\"labels\":{\"result\":\"a\\\"b\","
	    "\"kind\":\"c\"},\"value\":12},"
	    "{\"name\":\"stubborn_up\",\"labels\":{},\"value\":1},"
	    "{\"name\":\"stubborn_ratio\",\"labels\":{},\"value\":0.25},"
	    "{\"name\":\"stubborn_odd\",\"labels\":{},\"value\":\"NaN\"}]}\n");
	free(a);
	a = ask("log-level debug");
	ck_assert_str_eq(a, "ok log-level debug until the next reload\n");
	ck_assert_int_eq(log_level_current, LOG_LEVEL_DEBUG);
	free(a);
	log_set_level(LOG_LEVEL_ERROR);
	ck_assert_int_eq(stops, 0);
	/* The answer is out before the daemon stops. */
	a = ask("stop");
	ck_assert_str_eq(a, "ok draining and exiting\n");
	ck_assert_int_eq(stops, 1);
	free(a);
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("control");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, parse_accepts);
	tcase_add_test(tc, parse_refuses);
	tcase_add_test(tc, parse_length);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, dump_ttl_left_and_states);
	tcase_add_test(tc, flush_counts_and_zone_is_exact);
	tcase_add_test(tc, errors_reload_stats_stop);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
