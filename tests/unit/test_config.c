/*
 * Unit tests for config: defaults, every value type, file and flag errors,
 * precedence and list semantics, resolv.conf, and the print-back round trip.
 * Run from the repository root (the shipped config is read by path).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stubborn/config.h"
#include "stubborn/stamp.h"
#include "stubborn/log.h"
#include "unit.h"

#define MAX_TMP 64
#define MAX_ARGS 128

static char tmp_paths[MAX_TMP][64];
static int n_tmp;
static char err[1200];
static struct config cfg; /* the struct under test; large, so static */

static const char *tmp_file(const char *text);
static void tmp_cleanup(void);
static enum config_outcome load(struct config *c, const char *arg, ...);
static enum config_outcome load_file(
    struct config *c, const char *text, const char **path);
static uint16_t port_of(const struct config_addr *a);
static void assert_same_config(const struct config *a, const struct config *b);
static void assert_same_addr(
    const struct config_addr *a, const struct config_addr *b);
static void round_trip(const struct config *in, struct config *out);
static void put(const char *dir, const char *rel, const char *text);
static Suite *make_suite(void);

/* Writes text to a fresh file that the fixture removes afterwards. */
static const char *
tmp_file(const char *text)
{
	char *path;
	FILE *f;
	int fd;

	ck_assert_int_lt(n_tmp, MAX_TMP);
	path = tmp_paths[n_tmp++];
	snprintf(path, sizeof(tmp_paths[0]), "/tmp/stubborn-test-XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static void
tmp_cleanup(void)
{
	for (int i = 0; i < n_tmp; i++)
		unlink(tmp_paths[i]);
	n_tmp = 0;
}

/* config_load with argv {"stubborn", arg, ...}; the list ends with NULL. */
static enum config_outcome
load(struct config *c, const char *arg, ...)
{
	char *argv[MAX_ARGS];
	int argc = 0;
	va_list ap;

	argv[argc++] = (char *)"stubborn";
	va_start(ap, arg);
	for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) {
		ck_assert_int_lt(argc, MAX_ARGS - 1);
		argv[argc++] = (char *)a;
	}
	va_end(ap);
	argv[argc] = NULL;
	err[0] = '\0';
	return config_load(c, argc, argv, err, sizeof(err));
}

/* Loads text as the config file, with a fixed upstream unless it has one. */
static enum config_outcome
load_file(struct config *c, const char *text, const char **path)
{
	const char *p = tmp_file(text);

	if (path != NULL)
		*path = p;
	if (strstr(text, "upstream =") != NULL ||
	    strstr(text, "resolv-conf") != NULL)
		return load(c, "--config", p, NULL);
	return load(c, "--config", p, "--upstream", "192.0.2.1", NULL);
}

static uint16_t
port_of(const struct config_addr *a)
{
	return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

static void
assert_same_addr(const struct config_addr *a, const struct config_addr *b)
{
	ck_assert_str_eq(a->text, b->text);
	ck_assert_uint_eq(a->len, b->len);
	ck_assert_int_eq(memcmp(&a->ss, &b->ss, a->len), 0);
}

static void
assert_same_upstream(
    const struct config_upstream *a, const struct config_upstream *b)
{
	assert_same_addr(&a->addr, &b->addr);
	ck_assert_int_eq(a->proto, b->proto);
	ck_assert_str_eq(a->name, b->name);
	ck_assert_str_eq(a->text, b->text);
	ck_assert_int_eq(memcmp(a->pk, b->pk, sizeof(a->pk)), 0);
}

/* Every field a config file can carry; not config_file, check_config or
 * where the upstreams came from. */
static void
assert_same_config(const struct config *a, const struct config *b)
{
	ck_assert_uint_eq(a->n_listen, b->n_listen);
	for (size_t i = 0; i < a->n_listen; i++)
		assert_same_addr(&a->listen[i], &b->listen[i]);
	ck_assert_uint_eq(a->n_upstream, b->n_upstream);
	for (size_t i = 0; i < a->n_upstream; i++)
		assert_same_upstream(&a->upstream[i], &b->upstream[i]);
	ck_assert_str_eq(a->resolv_conf, b->resolv_conf);
	ck_assert_uint_eq(a->workers, b->workers);
	ck_assert_int_eq(a->metrics_on, b->metrics_on);
	if (a->metrics_on)
		assert_same_addr(&a->metrics, &b->metrics);
	ck_assert_uint_eq(a->cache_size, b->cache_size);
	ck_assert_int_eq(a->log_level, b->log_level);
	ck_assert_uint_eq(a->min_ttl, b->min_ttl);
	ck_assert_uint_eq(a->max_ttl, b->max_ttl);
	ck_assert_uint_eq(a->max_negative_ttl, b->max_negative_ttl);
	ck_assert_uint_eq(a->edns_buffer_size, b->edns_buffer_size);
	ck_assert_uint_eq(a->upstream_timeout_ms, b->upstream_timeout_ms);
	ck_assert_uint_eq(a->tcp_idle_timeout_ms, b->tcp_idle_timeout_ms);
	ck_assert_uint_eq(a->tcp_max_connections, b->tcp_max_connections);
	ck_assert_uint_eq(a->shutdown_timeout_ms, b->shutdown_timeout_ms);
	ck_assert_uint_eq(a->n_zones, b->n_zones);
	for (size_t i = 0; i < a->n_zones; i++) {
		ck_assert_str_eq(a->zones[i].name, b->zones[i].name);
		ck_assert_uint_eq(
		    a->zones[i].n_upstream, b->zones[i].n_upstream);
		for (size_t j = 0; j < a->zones[i].n_upstream; j++)
			assert_same_upstream(
			    &a->zones[i].upstream[j], &b->zones[i].upstream[j]);
	}
	ck_assert_int_eq(a->policy, b->policy);
	ck_assert_str_eq(a->health_check_name, b->health_check_name);
	ck_assert_uint_eq(a->health_check_type, b->health_check_type);
	ck_assert_uint_eq(a->retry_budget, b->retry_budget);
	ck_assert_uint_eq(a->circuit_failures, b->circuit_failures);
	ck_assert_uint_eq(a->probe_max_interval_ms, b->probe_max_interval_ms);
	ck_assert_int_eq(a->serve_stale, b->serve_stale);
	ck_assert_uint_eq(a->stale_ttl, b->stale_ttl);
	ck_assert_uint_eq(a->stale_max_age, b->stale_max_age);
	ck_assert_uint_eq(a->stale_recheck, b->stale_recheck);
	ck_assert_uint_eq(
	    a->stale_client_timeout_ms, b->stale_client_timeout_ms);
	ck_assert_uint_eq(a->refresh_ahead, b->refresh_ahead);
	ck_assert_uint_eq(a->n_keep_warm, b->n_keep_warm);
	for (size_t i = 0; i < a->n_keep_warm; i++) {
		ck_assert_str_eq(a->keep_warm[i].name, b->keep_warm[i].name);
		ck_assert_uint_eq(a->keep_warm[i].type, b->keep_warm[i].type);
	}
	ck_assert_uint_eq(a->n_stale_on_negative, b->n_stale_on_negative);
	for (size_t i = 0; i < a->n_stale_on_negative; i++)
		ck_assert_str_eq(
		    a->stale_on_negative[i], b->stale_on_negative[i]);
	ck_assert_uint_eq(
	    a->stale_on_negative_window, b->stale_on_negative_window);
	ck_assert_str_eq(a->snapshot, b->snapshot);
	ck_assert_uint_eq(a->snapshot_interval, b->snapshot_interval);
	ck_assert_uint_eq(a->client_qps, b->client_qps);
	ck_assert_uint_eq(a->client_qps_cookie, b->client_qps_cookie);
	ck_assert_uint_eq(a->cache_qps, b->cache_qps);
	ck_assert_uint_eq(a->client_prefix_v4, b->client_prefix_v4);
	ck_assert_uint_eq(a->client_prefix_v6, b->client_prefix_v6);
	ck_assert_int_eq(a->ratelimit_action, b->ratelimit_action);
	ck_assert_uint_eq(a->ratelimit_clients, b->ratelimit_clients);
	ck_assert_uint_eq(a->upstream_qps, b->upstream_qps);
	ck_assert_uint_eq(
	    a->upstream_max_outstanding, b->upstream_max_outstanding);
	ck_assert_uint_eq(a->max_waiters, b->max_waiters);
	ck_assert_uint_eq(a->failure_hold_min, b->failure_hold_min);
	ck_assert_uint_eq(a->failure_hold_max, b->failure_hold_max);
	ck_assert_str_eq(a->control_socket, b->control_socket);
	ck_assert_str_eq(a->user, b->user);
	ck_assert_uint_eq(a->n_allow, b->n_allow);
	for (size_t i = 0; i < a->n_allow; i++) {
		ck_assert_str_eq(a->allow[i].text, b->allow[i].text);
		ck_assert_int_eq(
		    memcmp(a->allow[i].addr, b->allow[i].addr, 16), 0);
	}
	ck_assert_int_eq(a->ratelimit_loopback, b->ratelimit_loopback);
	ck_assert_int_eq(a->log_queries, b->log_queries);
	ck_assert_uint_eq(a->log_queries_sample, b->log_queries_sample);
	ck_assert_int_eq(a->trust_upstream_ad, b->trust_upstream_ad);
	ck_assert_str_eq(a->tls_ca_file, b->tls_ca_file);
	ck_assert_uint_eq(a->dnscrypt_key_lifetime, b->dnscrypt_key_lifetime);
}

START_TEST(test_defaults)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", NULL), CONFIG_RUN);
	ck_assert_str_eq(err, "");
	ck_assert_str_eq(cfg.config_file, "");
	ck_assert_uint_eq(cfg.n_listen, 1);
	ck_assert_str_eq(cfg.listen[0].text, "127.0.0.53:53");
	ck_assert_int_eq(cfg.listen[0].ss.ss_family, AF_INET);
	ck_assert_uint_eq(cfg.listen[0].len, sizeof(struct sockaddr_in));
	ck_assert_uint_eq(cfg.n_upstream, 1);
	ck_assert_str_eq(cfg.upstream[0].text, "192.0.2.1:53");
	ck_assert(!cfg.upstream_from_resolv);
	ck_assert_str_eq(cfg.resolv_conf, "/etc/resolv.conf");
	/* The CPUs it may run on: at most the online ones, at least one. */
	ck_assert_uint_ge(cfg.workers, 1);
	ck_assert_uint_le(cfg.workers, ncpu < 1 ? 1 : ncpu > 64 ? 64 : ncpu);
	ck_assert(!cfg.metrics_on);
	ck_assert_uint_eq(cfg.cache_size, 64ull << 20);
	ck_assert_int_eq(cfg.log_level, LOG_LEVEL_INFO);
	ck_assert_uint_eq(cfg.min_ttl, 0);
	ck_assert_uint_eq(cfg.max_ttl, 86400);
	ck_assert_uint_eq(cfg.max_negative_ttl, 3600);
	ck_assert_uint_eq(cfg.edns_buffer_size, 1232);
	ck_assert_uint_eq(cfg.upstream_timeout_ms, 1000);
	ck_assert_uint_eq(cfg.tcp_idle_timeout_ms, 10000);
	ck_assert_uint_eq(cfg.tcp_max_connections, 150);
	ck_assert_uint_eq(cfg.shutdown_timeout_ms, 2000);
	ck_assert_uint_eq(cfg.n_zones, 0);
	ck_assert_int_eq(cfg.policy, CONFIG_POLICY_FASTEST);
	ck_assert_str_eq(cfg.health_check_name, ".");
	ck_assert_uint_eq(cfg.health_check_type, 2);
	ck_assert_uint_eq(cfg.retry_budget, 10);
	ck_assert_uint_eq(cfg.circuit_failures, 3);
	ck_assert_uint_eq(cfg.probe_max_interval_ms, 8000);
	ck_assert(cfg.serve_stale);
	ck_assert_uint_eq(cfg.stale_ttl, 30);
	ck_assert_uint_eq(cfg.stale_max_age, 86400);
	ck_assert_uint_eq(cfg.stale_recheck, 30);
	ck_assert_uint_eq(cfg.stale_client_timeout_ms, 400);
	ck_assert_uint_eq(cfg.refresh_ahead, 10);
	ck_assert_uint_eq(cfg.n_keep_warm, 0);
	ck_assert_uint_eq(cfg.n_stale_on_negative, 0);
	ck_assert_uint_eq(cfg.stale_on_negative_window, 900);
	ck_assert_str_eq(cfg.snapshot, "");
	ck_assert_uint_eq(cfg.snapshot_interval, 300);
	ck_assert_uint_eq(cfg.client_qps, 200);
	ck_assert_uint_eq(cfg.client_qps_cookie, 1000);
	ck_assert_uint_eq(cfg.cache_qps, 0);
	ck_assert_uint_eq(cfg.client_prefix_v4, 32);
	ck_assert_uint_eq(cfg.client_prefix_v6, 56);
	ck_assert_int_eq(cfg.ratelimit_action, CONFIG_RL_REFUSE);
	ck_assert_uint_eq(cfg.ratelimit_clients, 65536);
	ck_assert_uint_eq(cfg.upstream_qps, 800);
	ck_assert_uint_eq(cfg.upstream_max_outstanding, 256);
	ck_assert_uint_eq(cfg.max_waiters, 256);
	ck_assert_uint_eq(cfg.failure_hold_min, 1);
	ck_assert_uint_eq(cfg.failure_hold_max, 300);
	ck_assert(!cfg.check_config);
}
END_TEST

START_TEST(test_every_type_from_file)
{
	ck_assert_int_eq(load_file(&cfg,
			     "# a comment line\n"
			     "\n"
			     "   listen = 127.0.0.1:5353   # trailing comment\n"
			     "listen=[::1]:5353\n"
			     "upstream = 192.0.2.1\n"
			     "upstream = [2001:db8::1]:5300\n"
			     "resolv-conf = /nonexistent/resolv.conf\n"
			     "workers = 3\n"
			     "metrics = 127.0.0.1:9100\n"
			     "cache-size = 128k\n"
			     "log-level = debug\n"
			     "min-ttl = 5\n"
			     "max-ttl = 600\n"
			     "max-negative-ttl = 0\n"
			     "edns-buffer-size = 4096\n"
			     "upstream-timeout = 50\n"
			     "tcp-idle-timeout = 300000\n"
			     "tcp-max-connections = 100000\n"
			     "forward-zone = cluster.local 10.96.0.10\n"
			     "policy = random\n"
			     "health-check-name = example.com AAAA\n"
			     "retry-budget = 0\n"
			     "circuit-failures = 100\n"
			     "probe-max-interval = 300000\n"
			     "shutdown-timeout = 0\r\n",
			     NULL),
	    CONFIG_RUN);
	ck_assert_str_eq(err, "");
	ck_assert_uint_eq(cfg.n_listen, 2);
	ck_assert_str_eq(cfg.listen[0].text, "127.0.0.1:5353");
	ck_assert_str_eq(cfg.listen[1].text, "[::1]:5353");
	ck_assert_int_eq(cfg.listen[1].ss.ss_family, AF_INET6);
	ck_assert_uint_eq(cfg.n_upstream, 2);
	ck_assert_str_eq(cfg.upstream[0].text, "192.0.2.1:53");
	ck_assert_str_eq(cfg.upstream[1].text, "[2001:db8::1]:5300");
	ck_assert_str_eq(cfg.resolv_conf, "/nonexistent/resolv.conf");
	ck_assert_uint_eq(cfg.workers, 3);
	ck_assert(cfg.metrics_on);
	ck_assert_str_eq(cfg.metrics.text, "127.0.0.1:9100");
	ck_assert_uint_eq(cfg.cache_size, 128 * 1024);
	ck_assert_int_eq(cfg.log_level, LOG_LEVEL_DEBUG);
	ck_assert_uint_eq(cfg.min_ttl, 5);
	ck_assert_uint_eq(cfg.max_ttl, 600);
	ck_assert_uint_eq(cfg.max_negative_ttl, 0);
	ck_assert_uint_eq(cfg.edns_buffer_size, 4096);
	ck_assert_uint_eq(cfg.upstream_timeout_ms, 50);
	ck_assert_uint_eq(cfg.tcp_idle_timeout_ms, 300000);
	ck_assert_uint_eq(cfg.tcp_max_connections, 100000);
	ck_assert_uint_eq(cfg.shutdown_timeout_ms, 0);
	ck_assert_uint_eq(cfg.n_zones, 1);
	ck_assert_str_eq(cfg.zones[0].name, "cluster.local.");
	ck_assert_uint_eq(cfg.zones[0].n_upstream, 1);
	ck_assert_str_eq(cfg.zones[0].upstream[0].text, "10.96.0.10:53");
	ck_assert_int_eq(cfg.policy, CONFIG_POLICY_RANDOM);
	ck_assert_str_eq(cfg.health_check_name, "example.com.");
	ck_assert_uint_eq(cfg.health_check_type, 28);
	ck_assert_uint_eq(cfg.retry_budget, 0);
	ck_assert_uint_eq(cfg.circuit_failures, 100);
	ck_assert_uint_eq(cfg.probe_max_interval_ms, 300000);
}
END_TEST

START_TEST(test_bounds_errors_name_file_and_line)
{
	const char *p;
	char want[256];

	ck_assert_int_eq(load_file(&cfg,
			     "# x\nlisten = 127.0.0.1\n"
			     "max-ttl = 9999999\n",
			     &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:3: bad value for max-ttl: '9999999' (1..604800)", p);
	ck_assert_str_eq(err, want);

	/* A CA file is read when servers are set up: it must be there. */
	ck_assert_int_eq(load_file(&cfg,
			     "upstream = tls://192.0.2.1#dns.example\n"
			     "tls-ca-file = /nonexistent/ca.pem\n",
			     &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:2: bad value for tls-ca-file: '/nonexistent/ca.pem': No such "
	    "file or directory",
	    p);
	ck_assert_str_eq(err, want);

	ck_assert_int_eq(
	    load_file(&cfg, "edns-buffer-size = 511\n", &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:1: bad value for edns-buffer-size: '511' (512..4096)", p);
	ck_assert_str_eq(err, want);

	ck_assert_int_eq(
	    load_file(&cfg, "workers = 65\n", &p), CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err,
	    ":1: bad value for workers: '65' "
	    "(0..64)"));
	ck_assert_int_eq(
	    load_file(&cfg, "upstream-timeout = 49\n", NULL), CONFIG_EXIT_BAD);
	ck_assert_int_eq(load_file(&cfg, "tcp-max-connections = 0\n", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_int_eq(load_file(&cfg, "shutdown-timeout = 60001\n", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_int_eq(
	    load_file(&cfg, "min-ttl = -1\n", NULL), CONFIG_EXIT_BAD);
	ck_assert_int_eq(
	    load_file(&cfg, "max-ttl = 0x10\n", NULL), CONFIG_EXIT_BAD);
	ck_assert_int_eq(
	    load_file(&cfg, "max-ttl = 99999999999999999999999\n", NULL),
	    CONFIG_EXIT_BAD);

	ck_assert_int_eq(
	    load_file(&cfg, "retry-budget = 101\n", &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:1: bad value for retry-budget: '101' (0..100)", p);
	ck_assert_str_eq(err, want);
	ck_assert_int_eq(
	    load_file(&cfg, "circuit-failures = 0\n", &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:1: bad value for circuit-failures: '0' (1..100)", p);
	ck_assert_str_eq(err, want);
	ck_assert_int_eq(
	    load_file(&cfg, "circuit-failures = 101\n", NULL), CONFIG_EXIT_BAD);
	ck_assert_int_eq(
	    load_file(&cfg, "probe-max-interval = 999\n", &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:1: bad value for probe-max-interval: "
	    "'999' (1000..300000)",
	    p);
	ck_assert_str_eq(err, want);
	ck_assert_int_eq(load_file(&cfg, "probe-max-interval = 300001\n", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_int_eq(
	    load_file(&cfg,
		"retry-budget = 100\n"
		"circuit-failures = 1\nprobe-max-interval = 1000\n",
		NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.retry_budget, 100);
	ck_assert_uint_eq(cfg.circuit_failures, 1);
	ck_assert_uint_eq(cfg.probe_max_interval_ms, 1000);

	ck_assert_int_eq(
	    load_file(&cfg, "cache-size = 1k\n", &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:1: bad value for cache-size: '1k' (64k..64G)", p);
	ck_assert_str_eq(err, want);

	ck_assert_int_eq(
	    load_file(&cfg, "log-level = loud\n", &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:1: bad value for log-level: 'loud' "
	    "(error, warn, info or debug)",
	    p);
	ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_file_syntax_errors)
{
	const char *p;
	char want[256];

	ck_assert_int_eq(load_file(&cfg, "\n\n\n\n\n\nlisen = 1.2.3.4\n", &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want), "%s:7: unknown key 'lisen'", p);
	ck_assert_str_eq(err, want);

	ck_assert_int_eq(load_file(&cfg, "max-ttl 300\n", &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:1: missing '=' in 'max-ttl 300' "
	    "(expected key = value)",
	    p);
	ck_assert_str_eq(err, want);

	ck_assert_int_eq(
	    load_file(&cfg, "max-ttl =   # nothing\n", &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want), "%s:1: empty value for max-ttl", p);
	ck_assert_str_eq(err, want);

	ck_assert_int_eq(load_file(&cfg, "= 5\n", &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want), "%s:1: missing key before '='", p);
	ck_assert_str_eq(err, want);

	ck_assert_int_eq(
	    load_file(&cfg, "listen = 1.2.3.999\n", &p), CONFIG_EXIT_BAD);
	snprintf(
	    want, sizeof(want), "%s:1: bad address for listen: '1.2.3.999'", p);
	ck_assert_str_eq(err, want);

	ck_assert_int_eq(
	    load_file(&cfg, "metrics = 127.0.0.1\n", &p), CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err,
	    ":1: bad address for metrics: "
	    "'127.0.0.1' (ADDR:PORT, the port is required)"));
}
END_TEST

START_TEST(test_flag_only_keys_refused_in_file)
{
	static const char *keys[] = {
	    "config", "help", "version", "check-config"};
	char text[64], want[256];
	const char *p;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(text, sizeof(text), "%s = x\n", keys[i]);
		ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
		snprintf(want, sizeof(want),
		    "%s:1: '%s' is a command-line "
		    "flag, not a config key",
		    p, keys[i]);
		ck_assert_str_eq(err, want);
	}
}
END_TEST

START_TEST(test_duplicate_scalar_is_an_error)
{
	const char *p;
	char want[256];

	ck_assert_int_eq(load_file(&cfg,
			     "max-ttl = 300\n# again\n"
			     "max-ttl = 600\n",
			     &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:3: duplicate key 'max-ttl' (first set on line 1)", p);
	ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_flag_errors)
{
	ck_assert_int_eq(load(&cfg, "--foo", NULL), CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "unknown option '--foo'");
	ck_assert_int_eq(load(&cfg, "--foo=1", NULL), CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "unknown option '--foo'");
	ck_assert_int_eq(load(&cfg, "-x", NULL), CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "unknown option '-x'");
	ck_assert_int_eq(load(&cfg, "stray", NULL), CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "unexpected argument 'stray' (options start "
	    "with --)");
	ck_assert_int_eq(
	    load(&cfg, "--max-ttl", "9999999", NULL), CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "--max-ttl: bad value: '9999999' (1..604800)");
	ck_assert_int_eq(load(&cfg, "--listen", NULL), CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "--listen: missing value");
	ck_assert_int_eq(load(&cfg, "--listen=", NULL), CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "--listen: empty value");
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "1.2.3", NULL), CONFIG_EXIT_BAD);
	ck_assert_str_eq(
	    err, "--upstream: bad server: '1.2.3' (not a numeric address)");
	ck_assert_int_eq(
	    load(&cfg, "--check-config=yes", NULL), CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "--check-config: takes no value");
	ck_assert_int_eq(
	    load(&cfg, "--config", "/nonexistent/stubborn.conf", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "cannot open config file "
	    "'/nonexistent/stubborn.conf': No such file or directory");
}
END_TEST

START_TEST(test_equals_form_and_check_config)
{
	ck_assert_int_eq(
	    load(&cfg, "--upstream=192.0.2.7:5300", "--cache-size=1G",
		"--log-level=WARN", "--check-config", NULL),
	    CONFIG_RUN);
	ck_assert_str_eq(cfg.upstream[0].text, "192.0.2.7:5300");
	ck_assert_uint_eq(cfg.cache_size, 1ull << 30);
	ck_assert_int_eq(cfg.log_level, LOG_LEVEL_WARN);
	ck_assert(cfg.check_config);
}
END_TEST

START_TEST(test_flags_override_file_in_any_order)
{
	const char *p = tmp_file("max-ttl = 300\nworkers = 2\n"
				 "upstream = 192.0.2.1\nlog-level = error\n");

	/* The flag comes before --config and still wins. */
	ck_assert_int_eq(
	    load(&cfg, "--max-ttl", "900", "--config", p, "--workers=5", NULL),
	    CONFIG_RUN);
	ck_assert_str_eq(cfg.config_file, p);
	ck_assert_uint_eq(cfg.max_ttl, 900);
	ck_assert_uint_eq(cfg.workers, 5);
	ck_assert_int_eq(cfg.log_level, LOG_LEVEL_ERROR);
	/* A repeated scalar flag: the last one counts. */
	ck_assert_int_eq(
	    load(&cfg, "--config", p, "--workers", "1", "--workers", "4", NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.workers, 4);
}
END_TEST

START_TEST(test_lists_file_appends_flags_replace)
{
	const char *p =
	    tmp_file("listen = 127.0.0.1:5353\n"
		     "listen = 127.0.0.2:5353\n"
		     "upstream = 192.0.2.1\nupstream = 192.0.2.2\n");

	/* The file's listen list replaces the default and appends. */
	ck_assert_int_eq(load(&cfg, "--config", p, NULL), CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_listen, 2);
	ck_assert_str_eq(cfg.listen[0].text, "127.0.0.1:5353");
	ck_assert_str_eq(cfg.listen[1].text, "127.0.0.2:5353");
	ck_assert_uint_eq(cfg.n_upstream, 2);

	/* Flags replace the file's list entirely. */
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.9", "--config", p,
			     "--upstream", "192.0.2.10:5300", NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_upstream, 2);
	ck_assert_str_eq(cfg.upstream[0].text, "192.0.2.9:53");
	ck_assert_str_eq(cfg.upstream[1].text, "192.0.2.10:5300");
	ck_assert_uint_eq(cfg.n_listen, 2);

	ck_assert_int_eq(
	    load(&cfg, "--config", p, "--listen", "[::1]:53", NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_listen, 1);
	ck_assert_str_eq(cfg.listen[0].text, "[::1]:53");
}
END_TEST

START_TEST(test_list_limits_and_duplicates)
{
	char text[2048];
	size_t o = 0;
	const char *p;
	char want[256];

	for (int i = 1; i <= CONFIG_MAX_LISTEN + 1; i++)
		o += (size_t)snprintf(
		    text + o, sizeof(text) - o, "listen = 127.0.1.%d\n", i);
	ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:17: too many values for listen: at most 16", p);
	ck_assert_str_eq(err, want);

	ck_assert_int_eq(load_file(&cfg,
			     "upstream = 192.0.2.1\n"
			     "upstream = 192.0.2.1:53\n",
			     &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:2: duplicate server for upstream: "
	    "'192.0.2.1:53' is already listed",
	    p);
	ck_assert_str_eq(err, want);
	/* Same address, other port: a different server. */
	ck_assert_int_eq(load_file(&cfg,
			     "upstream = 192.0.2.1\n"
			     "upstream = 192.0.2.1:5300\n",
			     NULL),
	    CONFIG_RUN);
}
END_TEST

START_TEST(test_resolv_conf_parsing)
{
	const char *rc = tmp_file("# generated by someone\n"
				  "; another comment style\n"
				  "search example.com\n"
				  "nameserver 192.0.2.53\n"
				  "nameserver\t::1   # trailing\n"
				  "nameserver 192.0.2.53\n"
				  "nameserver 127.0.0.53\n"
				  "nameserver 192.0.2.1:5353\n"
				  "nameserver [::1]:53\n"
				  "nameserver not-an-address\n"
				  "nameservers 192.0.2.99\n"
				  "#nameserver 192.0.2.98\n"
				  "options edns0 trust-ad\n"
				  "nameserver 2001:db8::53");

	ck_assert_int_eq(load(&cfg, "--resolv-conf", rc, NULL), CONFIG_RUN);
	ck_assert(cfg.upstream_from_resolv);
	/* Duplicates once, our own 127.0.0.53:53 dropped, ports refused. */
	ck_assert_uint_eq(cfg.n_upstream, 3);
	ck_assert_str_eq(cfg.upstream[0].text, "192.0.2.53:53");
	ck_assert_str_eq(cfg.upstream[1].text, "[::1]:53");
	ck_assert_str_eq(cfg.upstream[2].text, "[2001:db8::53]:53");

	/* Given upstreams win; resolv.conf is not even read. */
	ck_assert_int_eq(load(&cfg, "--resolv-conf", "/nonexistent",
			     "--upstream", "192.0.2.1", NULL),
	    CONFIG_RUN);
	ck_assert(!cfg.upstream_from_resolv);
}
END_TEST

START_TEST(test_resolv_conf_own_addresses_removed)
{
	const char *rc = tmp_file("nameserver 127.0.0.53\n"
				  "nameserver 127.0.0.1\nnameserver ::1\n");

	/* Same address and port as a listener: ours.  Other port: not. */
	ck_assert_int_eq(load(&cfg, "--resolv-conf", rc, "--listen",
			     "127.0.0.1:5353", "--listen", "[::1]:53", NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_upstream, 2);
	ck_assert_str_eq(cfg.upstream[0].text, "127.0.0.53:53");
	ck_assert_str_eq(cfg.upstream[1].text, "127.0.0.1:53");

	/* A wildcard listener on port 53 catches every loopback address. */
	ck_assert_int_eq(
	    load(&cfg, "--resolv-conf", rc, "--listen", "[::]", NULL),
	    CONFIG_EXIT_BAD);
}
END_TEST

START_TEST(test_resolv_conf_none_left)
{
	const char *rc =
	    tmp_file("# systemd-resolved stub\n"
		     "nameserver 127.0.0.53\noptions edns0 trust-ad\n");
	const char *empty = tmp_file("search example.com\n");
	char want[256];

	ck_assert_int_eq(
	    load(&cfg, "--resolv-conf", rc, NULL), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "no upstream: %s lists only stubborn's "
	    "own addresses; give --upstream",
	    rc);
	ck_assert_str_eq(err, want);

	ck_assert_int_eq(
	    load(&cfg, "--resolv-conf", empty, NULL), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "no upstream: %s lists no nameserver; "
	    "give --upstream",
	    empty);
	ck_assert_str_eq(err, want);

	ck_assert_int_eq(
	    load(&cfg, "--resolv-conf", "/nonexistent/resolv", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "no upstream: cannot read /nonexistent/resolv: "
	    "No such file or directory; give --upstream");
}
END_TEST

START_TEST(test_upstream_loop_refused)
{
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "127.0.0.53", NULL), CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--upstream: upstream 127.0.0.53:53 is one of "
	    "stubborn's own listen addresses; it would query itself");
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "127.0.0.53:5300", NULL), CONFIG_RUN);
}
END_TEST

START_TEST(test_min_ttl_le_max_ttl)
{
	const char *p;
	char want[256];

	ck_assert_int_eq(load_file(&cfg, "max-ttl = 300\nmin-ttl = 600\n", &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:2: min-ttl (600) is greater than max-ttl (300)", p);
	ck_assert_str_eq(err, want);
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--min-ttl",
			     "300", "--max-ttl", "300", NULL),
	    CONFIG_RUN);
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--min-ttl",
			     "301", "--max-ttl", "300", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--min-ttl: min-ttl (301) is greater than "
	    "max-ttl (300)");
}
END_TEST

START_TEST(test_metrics)
{
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--metrics",
			     "[::1]:9100", NULL),
	    CONFIG_RUN);
	ck_assert(cfg.metrics_on);
	ck_assert_str_eq(cfg.metrics.text, "[::1]:9100");
	ck_assert_uint_eq(port_of(&cfg.metrics), 9100);
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--metrics", "::1", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--metrics",
			     "127.0.0.53:53", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--metrics: metrics 127.0.0.53:53 is also a "
	    "listen address");

	/* "off" lets a flag switch off what the file switched on. */
	const char *p = tmp_file("metrics = 127.0.0.1:9100\n"
				 "upstream = 192.0.2.1\n");
	ck_assert_int_eq(load(&cfg, "--config", p, NULL), CONFIG_RUN);
	ck_assert(cfg.metrics_on);
	ck_assert_int_eq(
	    load(&cfg, "--config", p, "--metrics", "off", NULL), CONFIG_RUN);
	ck_assert(!cfg.metrics_on);
}
END_TEST

START_TEST(test_parse_addr_forms)
{
	struct config_addr a;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a.ss;

	ck_assert_int_eq(config_parse_addr("1.2.3.4", 53, &a), 0);
	ck_assert_str_eq(a.text, "1.2.3.4:53");
	ck_assert_int_eq(a.ss.ss_family, AF_INET);
	ck_assert_uint_eq(a.len, sizeof(struct sockaddr_in));
	ck_assert_uint_eq(port_of(&a), 53);

	ck_assert_int_eq(config_parse_addr("1.2.3.4:5353", 53, &a), 0);
	ck_assert_str_eq(a.text, "1.2.3.4:5353");
	ck_assert_uint_eq(port_of(&a), 5353);

	ck_assert_int_eq(config_parse_addr("[::1]:54", 53, &a), 0);
	ck_assert_str_eq(a.text, "[::1]:54");
	ck_assert_int_eq(a.ss.ss_family, AF_INET6);
	ck_assert_uint_eq(a.len, sizeof(struct sockaddr_in6));
	ck_assert_uint_eq(port_of(&a), 54);

	/* A bare IPv6 address has no port: the last group is not one. */
	ck_assert_int_eq(config_parse_addr("2001:db8::53", 53, &a), 0);
	ck_assert_str_eq(a.text, "[2001:db8::53]:53");
	ck_assert_int_eq(config_parse_addr("[::1]", 7, &a), 0);
	ck_assert_str_eq(a.text, "[::1]:7");
	/* Written canonically, so print-back is stable. */
	ck_assert_int_eq(
	    config_parse_addr("[2001:DB8:0::0:1]:65535", 53, &a), 0);
	ck_assert_str_eq(a.text, "[2001:db8::1]:65535");

	ck_assert_int_eq(config_parse_addr("[fe80::1%lo]:53", 53, &a), 0);
	ck_assert_str_eq(a.text, "[fe80::1%lo]:53");
	ck_assert_uint_ne(s6->sin6_scope_id, 0);
	ck_assert_int_eq(config_parse_addr("fe80::1%1", 53, &a), 0);
	ck_assert_uint_eq(s6->sin6_scope_id, 1);
	ck_assert_str_eq(a.text, "[fe80::1%1]:53");
}
END_TEST

START_TEST(test_parse_addr_errors)
{
	static const char *bad[] = {
	    "",
	    "1.2.3",
	    "1.2.3.256",
	    "1.2.3.4:0",
	    "1.2.3.4:65536",
	    "1.2.3.4:",
	    ":53",
	    "1.2.3.4:53x",
	    "1.2.3.4:-1",
	    "[::1",
	    "[::1]x",
	    "[::1]:",
	    "[::1]:0",
	    "[1.2.3.4]:53",
	    "::1]:53",
	    "1.2.3.4%lo",
	    "fe80::1%",
	    "fe80::1%nosuchif0",
	    "fe80::1%0",
	    "example.com",
	    "localhost:53",
	    " 1.2.3.4",
	    "1.2.3.4 ",
	    "[]:53",
	    "::g",
	    "[::1]:99999999999999999999999",
	    "[fe80::1%aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]:53",
	    /* Found by fuzz_config: the kernel maps the alias "lo:1" to
	     * lo, but the text would not parse again. */
	    "fe80::1%lo:1]:9100",
	    "[fe80::1%lo:1]:53",
	};
	struct config_addr a;

	memset(&a, 0x5a, sizeof(a));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(config_parse_addr(bad[i], 53, &a) == -EINVAL,
		    "accepted '%s'", bad[i]);
	/* A refused address leaves *out alone. */
	ck_assert_uint_eq(((unsigned char *)&a)[0], 0x5a);
	ck_assert_int_eq(config_parse_addr(NULL, 53, &a), -EINVAL);
}
END_TEST

START_TEST(test_parse_size)
{
	static const char *bad[] = {"", "k", "1x", "1kk", "1kB", "-1", "+1",
	    " 1", "1 ", "0x10", "18446744073709551616", "17179869184G", "1.5M"};
	uint64_t v;

	ck_assert_int_eq(config_parse_size("0", &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(config_parse_size("65536", &v), 0);
	ck_assert_uint_eq(v, 65536);
	ck_assert_int_eq(config_parse_size("64k", &v), 0);
	ck_assert_uint_eq(v, 64 * 1024);
	ck_assert_int_eq(config_parse_size("64K", &v), 0);
	ck_assert_uint_eq(v, 64 * 1024);
	ck_assert_int_eq(config_parse_size("64M", &v), 0);
	ck_assert_uint_eq(v, 64ull << 20);
	ck_assert_int_eq(config_parse_size("3g", &v), 0);
	ck_assert_uint_eq(v, 3ull << 30);
	ck_assert_int_eq(config_parse_size("17179869183G", &v), 0);
	ck_assert_uint_eq(v, 17179869183ull << 30);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(config_parse_size(bad[i], &v) == -EINVAL,
		    "accepted '%s'", bad[i]);

	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--cache-size", "64G", NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.cache_size, 64ull << 30);
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--cache-size",
			     "65537M", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "--cache-size: bad value: '65537M' (64k..64G)");
}
END_TEST

/* Prints cfg, loads the text back as a config file into *out. */
static void
round_trip(const struct config *in, struct config *out)
{
	static char text[65536];
	size_t n;
	FILE *f = tmpfile();

	ck_assert_ptr_nonnull(f);
	config_print(in, f);
	rewind(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	ck_assert_int_lt(n, sizeof(text) - 1);
	text[n] = '\0';
	ck_assert_int_eq(
	    load(out, "--config", tmp_file(text), NULL), CONFIG_RUN);
}

START_TEST(test_print_round_trip)
{
	static struct config back;

	ck_assert_int_eq(
	    load(&cfg, "--listen", "127.0.0.1:5353", "--listen",
		"[fe80::1%lo]:5353", "--listen", "0.0.0.0:5454", "--allow",
		"10.0.0.0/8", "--allow", "2001:db8::/32", "--upstream",
		"192.0.2.1", "--upstream", "[2001:db8::1]:5300", "--upstream",
		"tls://192.0.2.2#dns.example", "--upstream",
		"tcp://[2001:db8::2]", "--resolv-conf", "/nonexistent",
		"--workers", "7", "--metrics", "127.0.0.1:9100", "--cache-size",
		"3M", "--log-level", "debug", "--min-ttl", "10", "--max-ttl",
		"20", "--max-negative-ttl", "30", "--edns-buffer-size", "1400",
		"--upstream-timeout", "333", "--tcp-idle-timeout", "4444",
		"--tcp-max-connections", "55", "--shutdown-timeout", "666",
		"--forward-zone",
		"Cluster.Local 10.96.0.10 [2001:db8::53]:5300",
		"--forward-zone", "10.in-addr.arpa. 192.0.2.10:53", "--policy",
		"round-robin", "--health-check-name", "x.example TYPE99",
		"--retry-budget", "50", "--circuit-failures", "7",
		"--probe-max-interval", "60000", "--serve-stale", "off",
		"--stale-ttl", "11", "--stale-max-age", "12", "--stale-recheck",
		"13", "--stale-client-timeout", "14", "--refresh-ahead", "15",
		"--keep-warm", "A.Example AAAA", "--keep-warm", ". TYPE999",
		"--stale-on-negative", ".", "--stale-on-negative", "B.example.",
		"--stale-on-negative-window", "16", "--snapshot",
		"/tmp/x y.snap", "--snapshot-interval", "17", "--client-qps",
		"18", "--client-qps-cookie", "19", "--cache-qps", "20",
		"--client-prefix-v4", "21", "--client-prefix-v6", "22",
		"--ratelimit-action", "truncate", "--ratelimit-clients", "230",
		"--upstream-qps", "24", "--upstream-max-outstanding", "25",
		"--max-waiters", "26", "--failure-hold-min", "27",
		"--failure-hold-max", "28", "--control-socket",
		"/run/x/ctl.sock", "--user", "daemon", "--ratelimit-loopback",
		"yes", "--log-queries", "yes", "--log-queries-sample", "29",
		"--trust-upstream-ad", "yes", "--tls-ca-file", "/dev/null",
		"--dnscrypt-key-lifetime", "31", NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_zones, 2);
	ck_assert_uint_eq(cfg.n_allow, 2);
	ck_assert_uint_eq(cfg.n_upstream, 4);
	ck_assert_uint_eq(cfg.n_keep_warm, 2);
	ck_assert_str_eq(cfg.snapshot, "/tmp/x y.snap");
	round_trip(&cfg, &back);
	assert_same_config(&cfg, &back);

	/* Defaults, and upstreams that came from resolv.conf. */
	ck_assert_int_eq(
	    load(&cfg, "--resolv-conf",
		tmp_file("nameserver 192.0.2.53\nnameserver ::1\n"), NULL),
	    CONFIG_RUN);
	ck_assert(cfg.upstream_from_resolv);
	round_trip(&cfg, &back);
	assert_same_config(&cfg, &back);
	ck_assert(!back.upstream_from_resolv);
}
END_TEST

START_TEST(test_print_format)
{
	char text[8192];
	size_t n;
	FILE *f = tmpfile();

	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--upstream",
			     "192.0.2.2", "--workers", "2", NULL),
	    CONFIG_RUN);
	config_print(&cfg, f);
	rewind(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	ck_assert_str_eq(text,
	    "listen = 127.0.0.53:53\n"
	    "upstream = 192.0.2.1:53\n"
	    "upstream = 192.0.2.2:53\n"
	    "resolv-conf = /etc/resolv.conf\n"
	    "workers = 2\n"
	    "metrics = off\n"
	    "cache-size = 67108864\n"
	    "log-level = info\n"
	    "min-ttl = 0\n"
	    "max-ttl = 86400\n"
	    "max-negative-ttl = 3600\n"
	    "edns-buffer-size = 1232\n"
	    "upstream-timeout = 1000\n"
	    "policy = fastest\n"
	    "retry-budget = 10\n"
	    "circuit-failures = 3\n"
	    "health-check-name = . NS\n"
	    "probe-max-interval = 8000\n"
	    "tcp-idle-timeout = 10000\n"
	    "tcp-max-connections = 150\n"
	    "tcp-max-per-client = 25\n"
	    "shutdown-timeout = 2000\n"
	    "upstream-0x20 = no\n"
	    "serve-stale = yes\n"
	    "stale-ttl = 30\n"
	    "stale-max-age = 86400\n"
	    "stale-recheck = 30\n"
	    "stale-client-timeout = 400\n"
	    "refresh-ahead = 10\n"
	    "stale-on-negative-window = 900\n"
	    "# snapshot: none\n"
	    "snapshot-interval = 300\n"
	    "client-qps = 200\n"
	    "client-qps-cookie = 1000\n"
	    "cache-qps = 0\n"
	    "client-prefix-v4 = 32\n"
	    "client-prefix-v6 = 56\n"
	    "ratelimit-action = refuse\n"
	    "ratelimit-clients = 65536\n"
	    "upstream-qps = 800\n"
	    "upstream-max-outstanding = 256\n"
	    "max-waiters = 256\n"
	    "failure-hold-min = 1\n"
	    "failure-hold-max = 300\n"
	    "# control-socket: none\n"
	    "# user: stubborn if that user exists, else nobody\n"
	    "ratelimit-loopback = no\n"
	    "log-queries = no\n"
	    "log-queries-sample = 100\n"
	    "trust-upstream-ad = no\n"
	    "# tls-ca-file: the system's trust store\n"
	    "dnscrypt-key-lifetime = 600\n");

	f = tmpfile();
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--forward-zone",
		"cluster.local 10.96.0.10 10.96.0.11", "--forward-zone",
		"EXAMPLE.org. [2001:db8::1]:5300", "--health-check-name",
		"Probe.Example cname", NULL),
	    CONFIG_RUN);
	config_print(&cfg, f);
	rewind(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	ck_assert_ptr_nonnull(strstr(text,
	    "resolv-conf = /etc/resolv.conf\n"
	    "forward-zone = cluster.local. 10.96.0.10:53 10.96.0.11:53\n"
	    "forward-zone = example.org. [2001:db8::1]:5300\n"
	    "workers = "));
	ck_assert_ptr_nonnull(
	    strstr(text, "\nhealth-check-name = probe.example. CNAME\n"));
}
END_TEST

START_TEST(test_shipped_config_is_the_defaults)
{
	static struct config def;
	const char *rc = tmp_file("nameserver 127.0.0.1\n");

	ck_assert_int_eq(load(&cfg, "--config", "config/stubborn.conf",
			     "--resolv-conf", rc, "--check-config", NULL),
	    CONFIG_RUN);
	ck_assert_msg(err[0] == '\0', "%s", err);
	ck_assert(cfg.check_config);
	ck_assert_int_eq(load(&def, "--resolv-conf", rc, NULL), CONFIG_RUN);
	assert_same_config(&cfg, &def);
	ck_assert_uint_eq(cfg.n_upstream, 1);
	ck_assert_str_eq(cfg.upstream[0].text, "127.0.0.1:53");
}
END_TEST

START_TEST(test_help_and_version)
{
	/* They print to stdout; keep the test log clean, and give stdout
	 * back afterwards for runs without fork (CK_FORK=no). */
	int saved = dup(STDOUT_FILENO), devnull = open("/dev/null", O_WRONLY);

	ck_assert_int_ge(saved, 0);
	ck_assert_int_ge(devnull, 0);
	fflush(stdout);
	dup2(devnull, STDOUT_FILENO);
	close(devnull);
	ck_assert_int_eq(load(&cfg, "--help", NULL), CONFIG_EXIT_OK);
	ck_assert_int_eq(load(&cfg, "--version", NULL), CONFIG_EXIT_OK);
	/* Help wins over a file that would not load. */
	ck_assert_int_eq(load(&cfg, "--config", "/nonexistent", "--help", NULL),
	    CONFIG_EXIT_OK);
	ck_assert_int_eq(load(&cfg, "--help=x", NULL), CONFIG_EXIT_BAD);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
}
END_TEST

START_TEST(test_usage_lists_every_option)
{
	static const char *names[] = {"--config FILE", "--listen ADDR[:PORT]",
	    "--upstream", "--resolv-conf", "--workers", "--metrics",
	    "--cache-size", "--log-level", "--min-ttl", "--max-ttl",
	    "--max-negative-ttl", "--edns-buffer-size", "--upstream-timeout",
	    "--tcp-idle-timeout", "--tcp-max-connections", "--shutdown-timeout",
	    "--forward-zone ZONE SERVER", "--policy",
	    "--health-check-name NAME [TYPE]", "--retry-budget",
	    "--circuit-failures", "--probe-max-interval",
	    "--serve-stale yes|no", "--stale-ttl", "--stale-max-age",
	    "--stale-recheck", "--stale-client-timeout", "--refresh-ahead",
	    "--keep-warm NAME TYPE", "--stale-on-negative ZONE",
	    "--stale-on-negative-window", "--snapshot FILE",
	    "--snapshot-interval", "--client-qps", "--client-qps-cookie",
	    "--cache-qps", "--client-prefix-v4", "--client-prefix-v6",
	    "--ratelimit-action", "--ratelimit-clients", "--upstream-qps",
	    "--upstream-max-outstanding", "--max-waiters", "--failure-hold-min",
	    "--failure-hold-max", "--control-socket PATH", "--user NAME",
	    "--allow PREFIX", "--ratelimit-loopback", "--log-queries",
	    "--log-queries-sample", "--trust-upstream-ad", "--tls-ca-file FILE",
	    "--dnscrypt-key-lifetime", "--check-config", "--help", "--version"};
	static char text[32768];
	size_t n;
	FILE *f = tmpfile();

	config_usage(f);
	rewind(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	ck_assert_int_lt(n, sizeof(text) - 1);
	ck_assert_int_eq(strncmp(text, "usage: stubborn [options]\n", 26), 0);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		ck_assert_msg(
		    strstr(text, names[i]) != NULL, "no %s", names[i]);
	ck_assert_ptr_nonnull(strstr(text, "default 127.0.0.53:53"));
	ck_assert_ptr_nonnull(strstr(text, "(50..30000 ms; default 1000)"));
	ck_assert_ptr_nonnull(strstr(text, "(64k..64G; default 64M)"));
	ck_assert_ptr_nonnull(strstr(text, "(0..100; default 10)"));
	ck_assert_ptr_nonnull(strstr(text, "(1000..300000 ms; default 8000)"));
	ck_assert_ptr_nonnull(strstr(text, "(default fastest)"));
	ck_assert_ptr_nonnull(strstr(text, "(default . NS)"));
	ck_assert_ptr_nonnull(strstr(text, "(default yes)"));
	ck_assert_ptr_nonnull(strstr(text, "(10..1800 ms; default 400)"));
	ck_assert_ptr_nonnull(strstr(text, "(0..604800 s; default 86400)"));
	ck_assert_ptr_nonnull(strstr(text, "(default refuse)"));
	ck_assert_ptr_nonnull(strstr(text, "(1..3600 s; default 300)"));
}
END_TEST

START_TEST(test_nul_byte_and_directory)
{
	char path[] = "/tmp/stubborn-test-XXXXXX";
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "max-ttl = 5\nmin-ttl\0 = 1\n", 25), 25);
	close(fd);
	ck_assert_int_eq(
	    load(&cfg, "--config", path, "--upstream", "192.0.2.1", NULL),
	    CONFIG_EXIT_BAD);
	unlink(path);
	ck_assert_ptr_nonnull(strstr(err, ":2: NUL byte in line"));

	ck_assert_int_eq(
	    load(&cfg, "--config", "/tmp", "--upstream", "192.0.2.1", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "cannot read config file '/tmp': Is a directory");
}
END_TEST

START_TEST(test_forward_zone_forms)
{
	const struct config_zone *z;

	ck_assert_int_eq(
	    load_file(&cfg,
		"forward-zone = cluster.local 10.96.0.10\n"
		"forward-zone =\tSvc.Example.ORG.  10.96.0.10 10.96.0.11:5353\t"
		"[2001:db8::53]   # comment\n"
		"forward-zone = _msdcs.corp-1.example 2001:db8::2\n",
		NULL),
	    CONFIG_RUN);
	ck_assert_str_eq(err, "");
	ck_assert_uint_eq(cfg.n_zones, 3);
	z = &cfg.zones[0];
	ck_assert_str_eq(z->name, "cluster.local.");
	ck_assert_uint_eq(z->n_upstream, 1);
	ck_assert_str_eq(z->upstream[0].text, "10.96.0.10:53");
	ck_assert_uint_eq(port_of(&z->upstream[0].addr), 53);
	z = &cfg.zones[1];
	ck_assert_str_eq(z->name, "svc.example.org.");
	ck_assert_uint_eq(z->n_upstream, 3);
	ck_assert_str_eq(z->upstream[0].text, "10.96.0.10:53");
	ck_assert_str_eq(z->upstream[1].text, "10.96.0.11:5353");
	ck_assert_str_eq(z->upstream[2].text, "[2001:db8::53]:53");
	ck_assert_int_eq(z->upstream[2].addr.ss.ss_family, AF_INET6);
	z = &cfg.zones[2];
	ck_assert_str_eq(z->name, "_msdcs.corp-1.example.");
	ck_assert_str_eq(z->upstream[0].text, "[2001:db8::2]:53");
	/* The global upstreams are untouched. */
	ck_assert_uint_eq(cfg.n_upstream, 1);
	ck_assert_str_eq(cfg.upstream[0].text, "192.0.2.1:53");

	/* A single-label zone, and one at exactly 253 characters with
	 * 63-character labels. */
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--forward-zone",
			     "LAN 192.168.1.1", NULL),
	    CONFIG_RUN);
	ck_assert_str_eq(cfg.zones[0].name, "lan.");
	{
		char val[300], want[300];
		memset(val, 'a', 253);
		val[63] = val[127] = val[191] = '.';
		memcpy(val + 253, ". 192.0.2.9", 12);
		ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1",
				     "--forward-zone", val, NULL),
		    CONFIG_RUN);
		memcpy(want, val, 254);
		want[254] = '\0';
		ck_assert_str_eq(cfg.zones[0].name, want);
		ck_assert_uint_eq(strlen(cfg.zones[0].name), 254);
	}
}
END_TEST

START_TEST(test_forward_zone_errors)
{
	static const struct {
		const char *line;
		const char *want; /* after "file:N: " */
	} bad[] = {
	    {"forward-zone = . 192.0.2.53",
		"bad zone for forward-zone: "
		"'.' (use upstream for the root zone)"},
	    {"forward-zone = cluster.local",
		"missing address for "
		"forward-zone: zone cluster.local. needs at least one "
		"server (ZONE SERVER [SERVER...])"},
	    {"forward-zone = cluster..local 10.96.0.10",
		"bad zone for "
		"forward-zone: 'cluster..local' (empty label)"},
	    {"forward-zone = .local 10.96.0.10",
		"bad zone for "
		"forward-zone: '.local' (empty label)"},
	    {"forward-zone = local.. 10.96.0.10",
		"bad zone for "
		"forward-zone: 'local..' (empty label)"},
	    {"forward-zone = ex*ample 10.96.0.10",
		"bad zone for "
		"forward-zone: 'ex*ample' (labels take letters, digits, "
		"'-' and '_')"},
	    {"forward-zone = ex\\.ample 10.96.0.10",
		"bad zone for "
		"forward-zone: 'ex\\.ample' (labels take letters, digits, "
		"'-' and '_')"},
	    {"forward-zone = 10.96.0.10 cluster.local",
		"bad server for "
		"forward-zone: 'cluster.local' in zone 10.96.0.10. (not a "
		"numeric address)"},
	    {"forward-zone = cluster.local 10.96.0.10 10.96.0.300",
		"bad server for forward-zone: '10.96.0.300' in zone "
		"cluster.local. (not a numeric address)"},
	    {"forward-zone = cluster.local 10.96.0.10,10.96.0.11",
		"bad server for forward-zone: '10.96.0.10,10.96.0.11' "
		"in zone cluster.local. (not a numeric address)"},
	    {"forward-zone = cluster.local 10.96.0.10:0",
		"bad server for "
		"forward-zone: '10.96.0.10:0' in zone cluster.local. (not a "
		"numeric address)"},
	    {"forward-zone = cluster.local 10.96.0.10 10.96.0.10:53",
		"duplicate server for forward-zone: '10.96.0.10:53' is "
		"already listed for cluster.local."},
	};
	char text[320], want[512];
	const char *p;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "# zones\n\n%s\n", bad[i].line);
		ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
		snprintf(want, sizeof(want), "%s:3: %s", p, bad[i].want);
		ck_assert_str_eq(err, want);
	}

	/* Labels of 64 characters and names of 254 are too long. */
	memset(text, 'a', 64);
	snprintf(text + 64, sizeof(text) - 64, " 192.0.2.9");
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--forward-zone", text, NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err,
	    "(label longer than 63 "
	    "characters)"));
	memset(text, 'a', 254);
	text[63] = text[127] = text[191] = '.';
	snprintf(text + 254, sizeof(text) - 254, " 192.0.2.9");
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--forward-zone", text, NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err, "(longer than 253 characters)"));

	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--forward-zone",
			     " \t ", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--forward-zone: bad value: empty (ZONE "
	    "ADDR[:PORT] [ADDR[:PORT]...])");
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--forward-zone",
			     ". 192.0.2.53", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--forward-zone: bad zone: '.' (use upstream "
	    "for the root zone)");
}
END_TEST

START_TEST(test_forward_zone_duplicates_and_limits)
{
	char text[4096], want[256];
	size_t o = 0;
	const char *p;

	/* The same zone twice, however it is spelt. */
	ck_assert_int_eq(load_file(&cfg,
			     "forward-zone = cluster.local 10.96.0.10\n"
			     "forward-zone = example.org 192.0.2.9\n"
			     "forward-zone = Cluster.Local. 10.96.0.11\n",
			     &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:3: duplicate zone for forward-zone: "
	    "'cluster.local.' is already listed",
	    p);
	ck_assert_str_eq(err, want);
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--forward-zone",
			     "a.example 192.0.2.9", "--forward-zone",
			     "A.EXAMPLE. 192.0.2.10", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--forward-zone: duplicate zone: 'a.example.' "
	    "is already listed");
	/* A zone and a zone below it are different zones. */
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--forward-zone",
			     "example 192.0.2.9", "--forward-zone",
			     "a.example 192.0.2.9", NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_zones, 2);

	/* CONFIG_MAX_ZONES zones load; one more is refused on its line. */
	for (int i = 1; i <= CONFIG_MAX_ZONES; i++)
		o += (size_t)snprintf(text + o, sizeof(text) - o,
		    "forward-zone = z%d.example 192.0.2.%d\n", i, i);
	ck_assert_int_eq(load_file(&cfg, text, NULL), CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_zones, CONFIG_MAX_ZONES);
	snprintf(text + o, sizeof(text) - o,
	    "forward-zone = one.more "
	    "192.0.2.200\n");
	ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:%d: too many values for forward-zone: "
	    "at most %d zones",
	    p, CONFIG_MAX_ZONES + 1, CONFIG_MAX_ZONES);
	ck_assert_str_eq(err, want);

	/* CONFIG_MAX_UPSTREAM servers in a zone; one more is refused. */
	o = (size_t)snprintf(text, sizeof(text), "forward-zone = big.example");
	for (int i = 1; i <= CONFIG_MAX_UPSTREAM; i++)
		o += (size_t)snprintf(
		    text + o, sizeof(text) - o, " 192.0.2.%d", i);
	snprintf(text + o, sizeof(text) - o, "\n");
	ck_assert_int_eq(load_file(&cfg, text, NULL), CONFIG_RUN);
	ck_assert_uint_eq(cfg.zones[0].n_upstream, CONFIG_MAX_UPSTREAM);
	snprintf(text + o, sizeof(text) - o, " 192.0.2.200\n");
	ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:1: too many addresses for "
	    "forward-zone: at most %d for zone big.example.",
	    p, CONFIG_MAX_UPSTREAM);
	ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_forward_zone_flags_replace_file)
{
	const char *p = tmp_file("upstream = 192.0.2.1\n"
				 "forward-zone = cluster.local 10.96.0.10\n"
				 "forward-zone = corp.example 192.0.2.10\n");

	ck_assert_int_eq(load(&cfg, "--config", p, NULL), CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_zones, 2);

	/* Flags, before or after --config, replace the file's whole list. */
	ck_assert_int_eq(load(&cfg, "--forward-zone",
			     "other.example "
			     "192.0.2.20",
			     "--config", p,
			     "--forward-zone=cluster.local "
			     "10.96.0.99",
			     NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_zones, 2);
	ck_assert_str_eq(cfg.zones[0].name, "other.example.");
	ck_assert_str_eq(cfg.zones[0].upstream[0].text, "192.0.2.20:53");
	ck_assert_str_eq(cfg.zones[1].name, "cluster.local.");
	ck_assert_str_eq(cfg.zones[1].upstream[0].text, "10.96.0.99:53");
	ck_assert_uint_eq(cfg.zones[1].n_upstream, 1);

	/* Other lists leave the zones alone. */
	ck_assert_int_eq(
	    load(&cfg, "--config", p, "--upstream", "192.0.2.2", NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_zones, 2);
	ck_assert_str_eq(cfg.zones[1].name, "corp.example.");
}
END_TEST

START_TEST(test_forward_zone_loop_refused)
{
	const char *p;
	char want[512];

	ck_assert_int_eq(load_file(&cfg,
			     "forward-zone = cluster.local 10.96.0.10\n"
			     "forward-zone = home.arpa 192.0.2.53 127.0.0.53\n",
			     &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:2: forward-zone home.arpa.: server "
	    "127.0.0.53:53 is one of stubborn's own listen addresses; it "
	    "would query itself",
	    p);
	ck_assert_str_eq(err, want);

	/* A wildcard listener on the port covers the loopback addresses. */
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--listen", "[::]:5353",
		"--allow", "::1", "--forward-zone", "lan 127.0.0.1:5353", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--forward-zone: forward-zone lan.: server "
	    "127.0.0.1:5353 is one of stubborn's own listen addresses; it "
	    "would query itself");
	/* Same address on another port is another server. */
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--forward-zone",
			     "lan 127.0.0.53:5353", NULL),
	    CONFIG_RUN);
}
END_TEST

START_TEST(test_policy)
{
	static const struct {
		const char *text;
		int want;
	} good[] = {
	    {"fastest", CONFIG_POLICY_FASTEST},
	    {"sequential", CONFIG_POLICY_SEQUENTIAL},
	    {"round-robin", CONFIG_POLICY_ROUND_ROBIN},
	    {"random", CONFIG_POLICY_RANDOM},
	    {"Round-Robin", CONFIG_POLICY_ROUND_ROBIN},
	    {"RANDOM", CONFIG_POLICY_RANDOM},
	};
	static const char *bad[] = {
	    "fast", "roundrobin", "round_robin", "fastest ", "0", "1"};
	const char *p;
	char want[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1",
				     "--policy", good[i].text, NULL),
		    CONFIG_RUN);
		ck_assert_int_eq(cfg.policy, good[i].want);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(load(&cfg, "--upstream", "192.0.2.1", "--policy",
				  bad[i], NULL) == CONFIG_EXIT_BAD,
		    "accepted '%s'", bad[i]);
	ck_assert_str_eq(err,
	    "--policy: bad value: '1' (fastest, "
	    "sequential, round-robin or random)");

	ck_assert_int_eq(
	    load_file(&cfg, "\npolicy = best\n", &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:2: bad value for policy: 'best' "
	    "(fastest, sequential, round-robin or random)",
	    p);
	ck_assert_str_eq(err, want);
	ck_assert_int_eq(
	    load_file(&cfg, "policy = random\npolicy = random\n", &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:2: duplicate key 'policy' (first set on line 1)", p);
	ck_assert_str_eq(err, want);
	/* The flag overrides the file. */
	ck_assert_int_eq(load(&cfg, "--config",
			     tmp_file("policy = random\n"
				      "upstream = 192.0.2.1\n"),
			     "--policy", "sequential", NULL),
	    CONFIG_RUN);
	ck_assert_int_eq(cfg.policy, CONFIG_POLICY_SEQUENTIAL);
}
END_TEST

START_TEST(test_health_check_name)
{
	static const struct {
		const char *text;
		const char *name;
		unsigned type;
		const char *printed;
	} good[] = {
	    {". NS", ".", 2, ". NS"},
	    {".", ".", 2, ". NS"},
	    {"example.com", "example.com.", 2, "example.com. NS"},
	    {"Example.COM. a", "example.com.", 1, "example.com. A"},
	    {"x.example\tAAAA", "x.example.", 28, "x.example. AAAA"},
	    {"  x.example   soa  ", "x.example.", 6, "x.example. SOA"},
	    {". cname", ".", 5, ". CNAME"},
	    {". PTR", ".", 12, ". PTR"},
	    {". Mx", ".", 15, ". MX"},
	    {". txt", ".", 16, ". TXT"},
	    {". SRV", ".", 33, ". SRV"},
	    {". ds", ".", 43, ". DS"},
	    {". DNSKEY", ".", 48, ". DNSKEY"},
	    {". TYPE2", ".", 2, ". NS"},
	    {". type28", ".", 28, ". AAAA"},
	    {". TYPE65", ".", 65, ". TYPE65"},
	    {". TYPE065", ".", 65, ". TYPE65"},
	    {". TYPE65535", ".", 65535, ". TYPE65535"},
	    {"_probe.example TYPE1234", "_probe.example.", 1234,
		"_probe.example. TYPE1234"},
	};
	static const struct {
		const char *text;
		const char *want;
	} bad[] = {
	    {"example.com ANY",
		"bad type: 'ANY' (A, NS, AAAA, ... or "
		"TYPEnnn with nnn in 1..65535)"},
	    {". TYPE0",
		"bad type: 'TYPE0' (A, NS, AAAA, ... or TYPEnnn "
		"with nnn in 1..65535)"},
	    {". TYPE65536",
		"bad type: 'TYPE65536' (A, NS, AAAA, ... or "
		"TYPEnnn with nnn in 1..65535)"},
	    {". TYPE",
		"bad type: 'TYPE' (A, NS, AAAA, ... or TYPEnnn "
		"with nnn in 1..65535)"},
	    {". TYPE-1",
		"bad type: 'TYPE-1' (A, NS, AAAA, ... or TYPEnnn "
		"with nnn in 1..65535)"},
	    {". 2",
		"bad type: '2' (A, NS, AAAA, ... or TYPEnnn with nnn "
		"in 1..65535)"},
	    {". NS extra", "bad value: '. NS extra' (NAME [TYPE])"},
	    {"a..b NS", "bad name: 'a..b' (empty label)"},
	    {".. NS", "bad name: '..' (empty label)"},
	    {"a/b",
		"bad name: 'a/b' (labels take letters, digits, '-' "
		"and '_')"},
	    {" ", "bad value: empty (NAME [TYPE])"},
	};
	char text[8192], line[128], want[256];
	const char *p;
	size_t n;
	FILE *f;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ck_assert_msg(
		    load(&cfg, "--upstream", "192.0.2.1", "--health-check-name",
			good[i].text, NULL) == CONFIG_RUN,
		    "refused '%s': %s", good[i].text, err);
		ck_assert_str_eq(cfg.health_check_name, good[i].name);
		ck_assert_uint_eq(cfg.health_check_type, good[i].type);
		f = tmpfile();
		config_print(&cfg, f);
		rewind(f);
		n = fread(text, 1, sizeof(text) - 1, f);
		fclose(f);
		text[n] = '\0';
		snprintf(line, sizeof(line), "\nhealth-check-name = %s\n",
		    good[i].printed);
		ck_assert_msg(strstr(text, line) != NULL, "no '%s'", line);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(
		    load(&cfg, "--upstream", "192.0.2.1", "--health-check-name",
			bad[i].text, NULL) == CONFIG_EXIT_BAD,
		    "accepted '%s'", bad[i].text);
		snprintf(
		    want, sizeof(want), "--health-check-name: %s", bad[i].want);
		ck_assert_str_eq(err, want);
	}
	ck_assert_int_eq(load_file(&cfg, "#\nhealth-check-name = . AXFR\n", &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:2: bad type for health-check-name: "
	    "'AXFR' (A, NS, AAAA, ... or TYPEnnn with nnn in 1..65535)",
	    p);
	ck_assert_str_eq(err, want);
	/* A flag replaces both parts: the type goes back to NS. */
	ck_assert_int_eq(
	    load(&cfg, "--config",
		tmp_file("upstream = "
			 "192.0.2.1\nhealth-check-name = a.example A\n"),
		"--health-check-name", "b.example", NULL),
	    CONFIG_RUN);
	ck_assert_str_eq(cfg.health_check_name, "b.example.");
	ck_assert_uint_eq(cfg.health_check_type, 2);
}
END_TEST

START_TEST(test_print_round_trip_full_zones)
{
	static struct config back;
	static char text[65536];
	size_t o = 0;

	/* Every zone and every server slot used, IPv6 included. */
	for (int i = 0; i < CONFIG_MAX_ZONES; i++) {
		o += (size_t)snprintf(text + o, sizeof(text) - o,
		    "forward-zone = Zone-%d.Example.", i);
		for (int j = 0; j < CONFIG_MAX_UPSTREAM; j++)
			o += (size_t)snprintf(text + o, sizeof(text) - o,
			    j % 2 ? " [2001:db8::%x:%x]:%d" : " 192.0.%d.%d:%d",
			    i, j, 5300 + j);
		o += (size_t)snprintf(text + o, sizeof(text) - o, "\n");
	}
	ck_assert_int_lt(o, sizeof(text) - 1);
	ck_assert_int_eq(load_file(&cfg, text, NULL), CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_zones, CONFIG_MAX_ZONES);
	ck_assert_uint_eq(cfg.zones[31].n_upstream, CONFIG_MAX_UPSTREAM);
	ck_assert_str_eq(cfg.zones[31].name, "zone-31.example.");
	ck_assert_str_eq(
	    cfg.zones[31].upstream[15].text, "[2001:db8::1f:f]:5315");
	{
		FILE *f = tmpfile();
		size_t n;

		ck_assert_ptr_nonnull(f);
		config_print(&cfg, f);
		rewind(f);
		n = fread(text, 1, sizeof(text) - 1, f);
		fclose(f);
		text[n] = '\0';
		ck_assert_int_eq(
		    load(&back, "--config", tmp_file(text), NULL), CONFIG_RUN);
	}
	assert_same_config(&cfg, &back);
}
END_TEST

/* Each new numeric key: both bounds accepted, one past either refused with
 * file:line, and the flag form the same. */
START_TEST(test_stale_and_ratelimit_bounds)
{
	static const struct {
		const char *key;
		unsigned long long min, max;
		size_t off;
	} keys[] = {
#define K(k, lo, hi, f) {k, lo, hi, offsetof(struct config, f)}
	    K("stale-ttl", 1, 3600, stale_ttl),
	    K("stale-max-age", 0, 604800, stale_max_age),
	    K("stale-recheck", 1, 300, stale_recheck),
	    K("stale-client-timeout", 10, 1800, stale_client_timeout_ms),
	    K("refresh-ahead", 0, 50, refresh_ahead),
	    K("stale-on-negative-window", 1, 86400, stale_on_negative_window),
	    K("snapshot-interval", 0, 86400, snapshot_interval),
	    K("client-qps", 1, 1000000, client_qps),
	    K("client-qps-cookie", 1, 1000000, client_qps_cookie),
	    K("cache-qps", 0, 10000000, cache_qps),
	    K("client-prefix-v4", 8, 32, client_prefix_v4),
	    K("client-prefix-v6", 16, 128, client_prefix_v6),
	    K("ratelimit-clients", 64, 10000000, ratelimit_clients),
	    K("upstream-qps", 1, 1000000, upstream_qps),
	    K("upstream-max-outstanding", 1, 100000, upstream_max_outstanding),
	    K("max-waiters", 1, 100000, max_waiters),
	    K("failure-hold-min", 1, 300, failure_hold_min),
	    K("failure-hold-max", 1, 3600, failure_hold_max),
#undef K
	};
	char text[256], want[512], flag[64], val[32];
	const char *p;
	uint32_t got;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		unsigned long long lo = keys[i].min, hi = keys[i].max;

		/* The bounds themselves load (failure-hold-max = 1 needs
		 * failure-hold-min = 1, its default). */
		for (int b = 0; b < 2; b++) {
			snprintf(text, sizeof(text), "%s = %llu\n%s",
			    keys[i].key, b ? hi : lo,
			    strcmp(keys[i].key, "failure-hold-min") == 0
				? "failure-hold-max = 3600\n"
				: "");
			ck_assert_msg(load_file(&cfg, text, NULL) == CONFIG_RUN,
			    "%s: %s", text, err);
			memcpy(&got, (char *)&cfg + keys[i].off, sizeof(got));
			ck_assert_uint_eq(got, b ? hi : lo);
		}
		/* One past the top, on line 3. */
		snprintf(text, sizeof(text), "# bounds\n\n%s = %llu\n",
		    keys[i].key, hi + 1);
		ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
		snprintf(want, sizeof(want),
		    "%s:3: bad value for %s: '%llu' "
		    "(%llu..%llu)",
		    p, keys[i].key, hi + 1, lo, hi);
		ck_assert_str_eq(err, want);
		/* One below the bottom, or a sign when that is 0. */
		if (lo > 0)
			snprintf(val, sizeof(val), "%llu", lo - 1);
		else
			snprintf(val, sizeof(val), "-1");
		snprintf(text, sizeof(text), "%s = %s\n", keys[i].key, val);
		ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
		snprintf(want, sizeof(want),
		    "%s:1: bad value for %s: '%s' "
		    "(%llu..%llu)",
		    p, keys[i].key, val, lo, hi);
		ck_assert_str_eq(err, want);
		/* And as a flag. */
		snprintf(flag, sizeof(flag), "--%s", keys[i].key);
		snprintf(val, sizeof(val), "%llu", hi + 1);
		ck_assert_int_eq(
		    load(&cfg, "--upstream", "192.0.2.1", flag, val, NULL),
		    CONFIG_EXIT_BAD);
		snprintf(want, sizeof(want),
		    "--%s: bad value: '%s' "
		    "(%llu..%llu)",
		    keys[i].key, val, lo, hi);
		ck_assert_str_eq(err, want);
		/* A scalar: a second line is an error. */
		snprintf(text, sizeof(text), "%s = %llu\n%s = %llu\n",
		    keys[i].key, hi, keys[i].key, hi);
		ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
		snprintf(want, sizeof(want),
		    "%s:2: duplicate key '%s' (first "
		    "set on line 1)",
		    p, keys[i].key);
		ck_assert_str_eq(err, want);
		tmp_cleanup();
	}
}
END_TEST

START_TEST(test_stale_and_ratelimit_from_file)
{
	ck_assert_int_eq(load_file(&cfg,
			     "serve-stale = no\n"
			     "stale-ttl = 60\n"
			     "stale-max-age = 3600\n"
			     "stale-recheck = 5\n"
			     "stale-client-timeout = 250\n"
			     "refresh-ahead = 0\n"
			     "keep-warm = Kube-DNS.example A   # comment\n"
			     "keep-warm = kube-dns.example.\taaaa\n"
			     "stale-on-negative = AmazonAWS.com\n"
			     "stale-on-negative-window = 120\n"
			     "snapshot = /var/lib/stubborn/cache.snap\n"
			     "snapshot-interval = 0\n"
			     "client-qps = 50\n"
			     "client-qps-cookie = 60\n"
			     "cache-qps = 70\n"
			     "client-prefix-v4 = 24\n"
			     "client-prefix-v6 = 48\n"
			     "ratelimit-action = drop\n"
			     "ratelimit-clients = 100\n"
			     "upstream-qps = 1000\n"
			     "upstream-max-outstanding = 10\n"
			     "max-waiters = 20\n"
			     "failure-hold-min = 2\n"
			     "failure-hold-max = 2\n",
			     NULL),
	    CONFIG_RUN);
	ck_assert_str_eq(err, "");
	ck_assert(!cfg.serve_stale);
	ck_assert_uint_eq(cfg.stale_ttl, 60);
	ck_assert_uint_eq(cfg.stale_max_age, 3600);
	ck_assert_uint_eq(cfg.stale_recheck, 5);
	ck_assert_uint_eq(cfg.stale_client_timeout_ms, 250);
	ck_assert_uint_eq(cfg.refresh_ahead, 0);
	ck_assert_uint_eq(cfg.n_keep_warm, 2);
	ck_assert_str_eq(cfg.keep_warm[0].name, "kube-dns.example.");
	ck_assert_uint_eq(cfg.keep_warm[0].type, 1);
	ck_assert_str_eq(cfg.keep_warm[1].name, "kube-dns.example.");
	ck_assert_uint_eq(cfg.keep_warm[1].type, 28);
	ck_assert_uint_eq(cfg.n_stale_on_negative, 1);
	ck_assert_str_eq(cfg.stale_on_negative[0], "amazonaws.com.");
	ck_assert_uint_eq(cfg.stale_on_negative_window, 120);
	ck_assert_str_eq(cfg.snapshot, "/var/lib/stubborn/cache.snap");
	ck_assert_uint_eq(cfg.snapshot_interval, 0);
	ck_assert_uint_eq(cfg.client_qps, 50);
	ck_assert_uint_eq(cfg.client_qps_cookie, 60);
	ck_assert_uint_eq(cfg.cache_qps, 70);
	ck_assert_uint_eq(cfg.client_prefix_v4, 24);
	ck_assert_uint_eq(cfg.client_prefix_v6, 48);
	ck_assert_int_eq(cfg.ratelimit_action, CONFIG_RL_DROP);
	ck_assert_uint_eq(cfg.ratelimit_clients, 100);
	ck_assert_uint_eq(cfg.upstream_qps, 1000);
	ck_assert_uint_eq(cfg.upstream_max_outstanding, 10);
	ck_assert_uint_eq(cfg.max_waiters, 20);
	ck_assert_uint_eq(cfg.failure_hold_min, 2);
	ck_assert_uint_eq(cfg.failure_hold_max, 2);
}
END_TEST

START_TEST(test_serve_stale_bool)
{
	static const struct {
		const char *text;
		bool want;
	} good[] = {
	    {"yes", true},
	    {"no", false},
	    {"true", true},
	    {"false", false},
	    {"on", true},
	    {"off", false},
	    {"YES", true},
	    {"No", false},
	    {"True", true},
	    {"FALSE", false},
	    {"On", true},
	    {"oFF", false},
	};
	static const char *bad[] = {"1", "0", "y", "n", "yes please", "enable",
	    "disabled", "nope", "-"};
	char text[128], want[256];
	const char *p;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		/* File, flag with a separate value, and --flag=value. */
		snprintf(
		    text, sizeof(text), "#\nserve-stale = %s\n", good[i].text);
		ck_assert_int_eq(load_file(&cfg, text, NULL), CONFIG_RUN);
		ck_assert_int_eq(cfg.serve_stale, good[i].want);
		ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1",
				     "--serve-stale", good[i].text, NULL),
		    CONFIG_RUN);
		ck_assert_int_eq(cfg.serve_stale, good[i].want);
		snprintf(text, sizeof(text), "--serve-stale=%s", good[i].text);
		ck_assert_int_eq(
		    load(&cfg, "--upstream", "192.0.2.1", text, NULL),
		    CONFIG_RUN);
		ck_assert_int_eq(cfg.serve_stale, good[i].want);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "#\nserve-stale = %s\n", bad[i]);
		ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
		snprintf(want, sizeof(want),
		    "%s:2: bad value for serve-stale: "
		    "'%s' (yes or no)",
		    p, bad[i]);
		ck_assert_str_eq(err, want);
	}
	/* It takes a value, unlike --check-config. */
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--serve-stale", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "--serve-stale: missing value");
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--serve-stale=", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "--serve-stale: empty value");
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--serve-stale",
			     "--check-config", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--serve-stale: bad value: '--check-config' "
	    "(yes or no)");
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--check-config", NULL),
	    CONFIG_RUN);
	ck_assert(cfg.check_config);
	ck_assert(cfg.serve_stale);
	/* The flag overrides the file, both ways. */
	ck_assert_int_eq(
	    load(&cfg, "--serve-stale", "yes", "--config",
		tmp_file("upstream = 192.0.2.1\nserve-stale = no\n"), NULL),
	    CONFIG_RUN);
	ck_assert(cfg.serve_stale);
	ck_assert_int_eq(load(&cfg, "--config",
			     tmp_file("upstream = "
				      "192.0.2.1\nserve-stale = yes\n"),
			     "--serve-stale=false", NULL),
	    CONFIG_RUN);
	ck_assert(!cfg.serve_stale);
}
END_TEST

START_TEST(test_keep_warm)
{
	static const struct {
		const char *text;
		const char *name;
		unsigned type;
		const char *printed;
	} good[] = {
	    {"example.com A", "example.com.", 1, "example.com. A"},
	    {"Example.COM. aaaa", "example.com.", 28, "example.com. AAAA"},
	    {". NS", ".", 2, ". NS"},
	    {"  x.example\tSOA  ", "x.example.", 6, "x.example. SOA"},
	    {"_sip._tcp.example srv", "_sip._tcp.example.", 33,
		"_sip._tcp.example. SRV"},
	    {"x.example TYPE28", "x.example.", 28, "x.example. AAAA"},
	    {"x.example type65", "x.example.", 65, "x.example. TYPE65"},
	    {"x.example TYPE127", "x.example.", 127, "x.example. TYPE127"},
	    {"x.example TYPE256", "x.example.", 256, "x.example. TYPE256"},
	    {"x.example TYPE65535", "x.example.", 65535,
		"x.example. TYPE65535"},
	};
	static const struct {
		const char *text;
		const char *want;
	} bad[] = {
	    {"example.com",
		"missing type: 'example.com.' needs a TYPE "
		"(NAME TYPE, such as A or AAAA)"},
	    {".",
		"missing type: '.' needs a TYPE (NAME TYPE, such as A "
		"or AAAA)"},
	    {"example.com ANY",
		"bad type: 'ANY' (A, NS, AAAA, ... or "
		"TYPEnnn with nnn in 1..65535)"},
	    {"example.com TYPE0",
		"bad type: 'TYPE0' (A, NS, AAAA, ... or "
		"TYPEnnn with nnn in 1..65535)"},
	    {"example.com 1",
		"bad type: '1' (A, NS, AAAA, ... or TYPEnnn "
		"with nnn in 1..65535)"},
	    {"example.com TYPE41",
		"bad type: 'TYPE41' (a meta-type, "
		"never cached)"},
	    {"example.com TYPE128",
		"bad type: 'TYPE128' (a meta-type, "
		"never cached)"},
	    {"example.com TYPE252",
		"bad type: 'TYPE252' (a meta-type, "
		"never cached)"},
	    {"example.com TYPE255",
		"bad type: 'TYPE255' (a meta-type, "
		"never cached)"},
	    {"example.com A AAAA",
		"bad value: 'example.com A AAAA' "
		"(NAME TYPE)"},
	    {"a..b A", "bad name: 'a..b' (empty label)"},
	    {"a/b A",
		"bad name: 'a/b' (labels take letters, digits, '-' "
		"and '_')"},
	    {" \t", "bad value: empty (NAME TYPE)"},
	};
	char text[4096], want[512];
	const char *p;
	size_t o = 0;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ck_assert_msg(
		    load(&cfg, "--upstream", "192.0.2.1", "--keep-warm",
			good[i].text, NULL) == CONFIG_RUN,
		    "refused '%s': %s", good[i].text, err);
		ck_assert_uint_eq(cfg.n_keep_warm, 1);
		ck_assert_str_eq(cfg.keep_warm[0].name, good[i].name);
		ck_assert_uint_eq(cfg.keep_warm[0].type, good[i].type);
		{
			FILE *f = tmpfile();
			char line[128];
			size_t n;

			config_print(&cfg, f);
			rewind(f);
			n = fread(text, 1, sizeof(text) - 1, f);
			fclose(f);
			text[n] = '\0';
			snprintf(line, sizeof(line), "\nkeep-warm = %s\n",
			    good[i].printed);
			ck_assert_msg(
			    strstr(text, line) != NULL, "no '%s'", line);
		}
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(
		    load(&cfg, "--upstream", "192.0.2.1", "--keep-warm",
			bad[i].text, NULL) == CONFIG_EXIT_BAD,
		    "accepted '%s'", bad[i].text);
		snprintf(want, sizeof(want), "--keep-warm: %s", bad[i].want);
		ck_assert_str_eq(err, want);
		/* In a file, a blank value is just "empty value". */
		if (bad[i].text[0] == ' ')
			continue;
		snprintf(
		    text, sizeof(text), "#\n\nkeep-warm = %s\n", bad[i].text);
		ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
		snprintf(want, sizeof(want), "%s:3: %.*s for keep-warm%s", p,
		    (int)strcspn(bad[i].want, ":"), bad[i].want,
		    strchr(bad[i].want, ':'));
		ck_assert_str_eq(err, want);
	}

	/* One name may be kept for several types; the same pair twice, however
	 * it is spelt, is an error on the second line. */
	ck_assert_int_eq(
	    load_file(&cfg,
		"keep-warm = a.example A\n"
		"keep-warm = a.example AAAA\nkeep-warm = b.example A\n",
		NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_keep_warm, 3);
	ck_assert_int_eq(
	    load_file(&cfg,
		"keep-warm = a.example A\n"
		"keep-warm = a.example AAAA\nkeep-warm = A.EXAMPLE. type1\n",
		&p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:3: duplicate value for keep-warm: "
	    "'a.example. A' is already listed",
	    p);
	ck_assert_str_eq(err, want);
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--keep-warm",
		"x.example TYPE99", "--keep-warm", "X.example. type99", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--keep-warm: duplicate value: 'x.example. "
	    "TYPE99' is already listed");

	/* CONFIG_MAX_KEEP_WARM entries load; one more is refused on its
	 * line. */
	for (int i = 1; i <= CONFIG_MAX_KEEP_WARM; i++)
		o += (size_t)snprintf(text + o, sizeof(text) - o,
		    "keep-warm = n%d.example %s\n", i, i % 2 ? "A" : "AAAA");
	ck_assert_int_eq(load_file(&cfg, text, NULL), CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_keep_warm, CONFIG_MAX_KEEP_WARM);
	ck_assert_str_eq(
	    cfg.keep_warm[CONFIG_MAX_KEEP_WARM - 1].name, "n64.example.");
	snprintf(text + o, sizeof(text) - o, "keep-warm = one.more A\n");
	ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:%d: too many values for keep-warm: "
	    "at most %d",
	    p, CONFIG_MAX_KEEP_WARM + 1, CONFIG_MAX_KEEP_WARM);
	ck_assert_str_eq(err, want);
	/* A full list prints back and loads again. */
	ck_assert_int_eq(
	    load_file(&cfg, "keep-warm = x.example A\n", NULL), CONFIG_RUN);
	o = 0;
	for (int i = 1; i <= CONFIG_MAX_KEEP_WARM; i++)
		o += (size_t)snprintf(text + o, sizeof(text) - o,
		    "keep-warm = n%d.example TYPE%d\n", i, 1000 + i);
	ck_assert_int_eq(load_file(&cfg, text, NULL), CONFIG_RUN);
	{
		static struct config back;

		round_trip(&cfg, &back);
		assert_same_config(&cfg, &back);
	}
}
END_TEST

START_TEST(test_keep_warm_flags_replace_file)
{
	const char *p =
	    tmp_file("upstream = 192.0.2.1\n"
		     "keep-warm = a.example A\nkeep-warm = b.example A\n");

	ck_assert_int_eq(load(&cfg, "--config", p, NULL), CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_keep_warm, 2);
	ck_assert_int_eq(
	    load(&cfg, "--keep-warm", "c.example AAAA", "--config", p, NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_keep_warm, 1);
	ck_assert_str_eq(cfg.keep_warm[0].name, "c.example.");
	ck_assert_uint_eq(cfg.keep_warm[0].type, 28);
	/* Other lists leave it alone, and it leaves them alone. */
	ck_assert_int_eq(
	    load(&cfg, "--config", p, "--stale-on-negative", "a.example", NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_keep_warm, 2);
	ck_assert_uint_eq(cfg.n_stale_on_negative, 1);
}
END_TEST

START_TEST(test_stale_on_negative)
{
	static const struct {
		const char *text;
		const char *want;
	} bad[] = {
	    {"a..b", "bad zone: 'a..b' (empty label)"},
	    {"..", "bad zone: '..' (empty label)"},
	    {"a*b",
		"bad zone: 'a*b' (labels take letters, digits, '-' "
		"and '_')"},
	    {"example.com example.org",
		"bad value: 'example.com "
		"example.org' (one ZONE a line)"},
	    {"example.com 192.0.2.1",
		"bad value: 'example.com 192.0.2.1' "
		"(one ZONE a line)"},
	};
	char text[4096], want[512];
	const char *p;
	size_t o = 0;

	ck_assert_int_eq(
	    load_file(&cfg,
		"stale-on-negative = .\n"
		"stale-on-negative = AmazonAWS.COM.\n"
		"stale-on-negative =   dynamodb.us-east-1.amazonaws.com  # x\n"
		"stale-on-negative = lan\n",
		NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_stale_on_negative, 4);
	ck_assert_str_eq(cfg.stale_on_negative[0], ".");
	ck_assert_str_eq(cfg.stale_on_negative[1], "amazonaws.com.");
	ck_assert_str_eq(
	    cfg.stale_on_negative[2], "dynamodb.us-east-1.amazonaws.com.");
	ck_assert_str_eq(cfg.stale_on_negative[3], "lan.");
	{
		static struct config back;

		round_trip(&cfg, &back);
		assert_same_config(&cfg, &back);
	}

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(
		    load(&cfg, "--upstream", "192.0.2.1", "--stale-on-negative",
			bad[i].text, NULL) == CONFIG_EXIT_BAD,
		    "accepted '%s'", bad[i].text);
		snprintf(
		    want, sizeof(want), "--stale-on-negative: %s", bad[i].want);
		ck_assert_str_eq(err, want);
		snprintf(text, sizeof(text), "#\nstale-on-negative = %s\n",
		    bad[i].text);
		ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
		snprintf(want, sizeof(want),
		    "%s:2: %.*s for "
		    "stale-on-negative%s",
		    p, (int)strcspn(bad[i].want, ":"), bad[i].want,
		    strchr(bad[i].want, ':'));
		ck_assert_str_eq(err, want);
	}
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1",
			     "--stale-on-negative", " ", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "--stale-on-negative: bad value: empty (ZONE)");

	/* Duplicates, however spelt; "." twice too. */
	ck_assert_int_eq(load_file(&cfg,
			     "stale-on-negative = example.com\n"
			     "stale-on-negative = a.example.com\n"
			     "stale-on-negative = EXAMPLE.com.\n",
			     &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:3: duplicate zone for "
	    "stale-on-negative: 'example.com.' is already listed",
	    p);
	ck_assert_str_eq(err, want);
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--stale-on-negative", ".",
		"--stale-on-negative", ".", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--stale-on-negative: duplicate zone: '.' is "
	    "already listed");

	/* CONFIG_MAX_ZONES load; one more is refused on its line. */
	for (int i = 1; i <= CONFIG_MAX_ZONES; i++)
		o += (size_t)snprintf(text + o, sizeof(text) - o,
		    "stale-on-negative = z%d.example\n", i);
	ck_assert_int_eq(load_file(&cfg, text, NULL), CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_stale_on_negative, CONFIG_MAX_ZONES);
	snprintf(text + o, sizeof(text) - o, "stale-on-negative = more\n");
	ck_assert_int_eq(load_file(&cfg, text, &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:%d: too many values for "
	    "stale-on-negative: at most %d zones",
	    p, CONFIG_MAX_ZONES + 1, CONFIG_MAX_ZONES);
	ck_assert_str_eq(err, want);

	/* Flags replace the file's list. */
	p = tmp_file("upstream = 192.0.2.1\nstale-on-negative = a.example\n"
		     "stale-on-negative = b.example\n");
	ck_assert_int_eq(
	    load(&cfg, "--config", p, "--stale-on-negative", ".", NULL),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_stale_on_negative, 1);
	ck_assert_str_eq(cfg.stale_on_negative[0], ".");
	ck_assert_int_eq(load(&cfg, "--config", p, NULL), CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_stale_on_negative, 2);
	ck_assert_str_eq(cfg.stale_on_negative[1], "b.example.");
}
END_TEST

START_TEST(test_snapshot)
{
	static char text[8192];
	const char *p;
	size_t n;
	FILE *f;

	/* Off by default; the print-back says so in a comment, since an
	 * empty value is not a value. */
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", NULL), CONFIG_RUN);
	ck_assert_str_eq(cfg.snapshot, "");
	f = tmpfile();
	config_print(&cfg, f);
	rewind(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	ck_assert_ptr_nonnull(strstr(text,
	    "\n# snapshot: none\n"
	    "snapshot-interval = 300\n"));
	ck_assert_ptr_null(strstr(text, "\nsnapshot ="));

	ck_assert_int_eq(
	    load_file(&cfg, "snapshot = /var/lib/stubborn/s\n", NULL),
	    CONFIG_RUN);
	ck_assert_str_eq(cfg.snapshot, "/var/lib/stubborn/s");
	f = tmpfile();
	config_print(&cfg, f);
	rewind(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	ck_assert_ptr_nonnull(strstr(text,
	    "\nsnapshot = /var/lib/stubborn/s\n"
	    "snapshot-interval = 300\n"));
	ck_assert_ptr_null(strstr(text, "# snapshot"));

	/* The flag overrides the file. */
	p = tmp_file("upstream = 192.0.2.1\nsnapshot = /a\n");
	ck_assert_int_eq(
	    load(&cfg, "--snapshot", "/b", "--config", p, NULL), CONFIG_RUN);
	ck_assert_str_eq(cfg.snapshot, "/b");
	ck_assert_int_eq(load_file(&cfg, "snapshot =\n", &p), CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err, ":1: empty value for snapshot"));
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--snapshot=", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err, "--snapshot: empty value");
	/* What the file could not carry is refused, so the print-back
	 * loads again. */
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--snapshot",
			     "/tmp/a#b", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--snapshot: bad value: '/tmp/a#b' (a path here "
	    "cannot hold '#' or control characters)");
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--snapshot",
			     "/tmp/a\nb", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--snapshot",
			     " /tmp/a", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--snapshot: bad value: ' /tmp/a' (blanks at "
	    "either end of a path)");
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--resolv-conf",
			     "/etc/resolv.conf\t", NULL),
	    CONFIG_EXIT_BAD);
	/* Blanks inside are fine; --config is never printed, so anything
	 * goes there. */
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--snapshot",
			     "/tmp/a b", NULL),
	    CONFIG_RUN);
	ck_assert_str_eq(cfg.snapshot, "/tmp/a b");
	ck_assert_int_eq(
	    load(&cfg, "--config", "/nonexistent/a#b", NULL), CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "cannot open config file '/nonexistent/a#b': "
	    "No such file or directory");
	memset(text, 'x', 1100);
	text[0] = '/';
	text[1100] = '\0';
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--snapshot", text, NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--snapshot: bad value: path longer than 1023 "
	    "bytes");
}
END_TEST

START_TEST(test_ratelimit_action)
{
	static const struct {
		const char *text;
		int want;
	} good[] = {
	    {"refuse", CONFIG_RL_REFUSE},
	    {"drop", CONFIG_RL_DROP},
	    {"truncate", CONFIG_RL_TRUNCATE},
	    {"TRUNCATE", CONFIG_RL_TRUNCATE},
	    {"Drop", CONFIG_RL_DROP},
	};
	const char *p;
	char want[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1",
				     "--ratelimit-action", good[i].text, NULL),
		    CONFIG_RUN);
		ck_assert_int_eq(cfg.ratelimit_action, good[i].want);
	}
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1",
			     "--ratelimit-action", "servfail", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--ratelimit-action: bad value: 'servfail' "
	    "(refuse, drop or truncate)");
	ck_assert_int_eq(
	    load_file(&cfg, "\n\nratelimit-action = 1\n", &p), CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:3: bad value for ratelimit-action: "
	    "'1' (refuse, drop or truncate)",
	    p);
	ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_failure_hold_min_le_max)
{
	const char *p;
	char want[256];

	ck_assert_int_eq(load_file(&cfg,
			     "failure-hold-max = 10\n"
			     "failure-hold-min = 11\n",
			     &p),
	    CONFIG_EXIT_BAD);
	snprintf(want, sizeof(want),
	    "%s:2: failure-hold-min (11) is greater "
	    "than failure-hold-max (10)",
	    p);
	ck_assert_str_eq(err, want);
	ck_assert_int_eq(
	    load_file(&cfg, "failure-hold-max = 1\n", NULL), CONFIG_RUN);
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--failure-hold-min", "10",
		"--failure-hold-max", "10", NULL),
	    CONFIG_RUN);
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--failure-hold-min", "11",
		"--failure-hold-max", "10", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_str_eq(err,
	    "--failure-hold-min: failure-hold-min (11) is "
	    "greater than failure-hold-max (10)");
	/* The file's min against a flag's max. */
	ck_assert_int_eq(load(&cfg, "--config",
			     tmp_file("upstream = "
				      "192.0.2.1\nfailure-hold-min = 200\n"),
			     "--failure-hold-max", "100", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err,
	    ":2: failure-hold-min (200) is "
	    "greater than failure-hold-max (100)"));
}
END_TEST

/* issue 11: the four ways to write an upstream, and what each refuses. */
START_TEST(test_upstream_forms)
{
	struct config_upstream u;
	struct stamp_dnscrypt st, back;
	char why[160], stamp[512];
	const char *reason;
	static const char *const bad[][2] = {
	    {"tls://192.0.2.1", "authentication name"},
	    {"tls://192.0.2.1#", "authentication name"},
	    {"tls://dns.example#dns.example", "numeric address"},
	    {"tls://192.0.2.1#bad*name", "host name"},
	    {"tcp://", "numeric address"},
	    {"https://192.0.2.1/dns-query", "unknown scheme"},
	    {"sdns://", "base64url"},
	    {"sdns://!!!", "base64url"},
	    {"sdns://AgcAAAAAAAAAAA", "DNSCrypt kind"},
	    {"sdns://AQ", "truncated"},
	};

	ck_assert_int_eq(
	    config_parse_upstream("192.0.2.1", &u, why, sizeof(why)), 0);
	ck_assert_int_eq(u.proto, CONFIG_PROTO_UDP);
	ck_assert_str_eq(u.text, "192.0.2.1:53");
	ck_assert_int_eq(config_parse_upstream(
			     "tcp://[2001:db8::1]:5300", &u, why, sizeof(why)),
	    0);
	ck_assert_int_eq(u.proto, CONFIG_PROTO_TCP);
	ck_assert_str_eq(u.text, "tcp://[2001:db8::1]:5300");
	ck_assert_int_eq(config_parse_upstream("tls://192.0.2.1#Dns.Example.",
			     &u, why, sizeof(why)),
	    0);
	ck_assert_int_eq(u.proto, CONFIG_PROTO_TLS);
	ck_assert_str_eq(u.name, "dns.example");
	ck_assert_str_eq(u.addr.text, "192.0.2.1:853");
	ck_assert_str_eq(u.text, "tls://192.0.2.1:853#dns.example");
	ck_assert_int_eq(config_parse_upstream("tls://[2001:db8::1]:8853#x.y",
			     &u, why, sizeof(why)),
	    0);
	ck_assert_str_eq(u.addr.text, "[2001:db8::1]:8853");

	/* A stamp written by the stamp module parses back to its fields. */
	memset(&st, 0, sizeof(st));
	st.props = STAMP_PROP_DNSSEC | STAMP_PROP_NOLOG;
	snprintf(st.addr, sizeof(st.addr), "127.0.0.1:8443");
	for (int i = 0; i < 32; i++)
		st.pk[i] = (uint8_t)(i * 7 + 1);
	snprintf(st.name, sizeof(st.name), "2.dnscrypt-cert.example");
	ck_assert_int_gt(stamp_write_dnscrypt(&st, stamp, sizeof(stamp)), 7);
	ck_assert_int_eq(stamp_parse_dnscrypt(stamp, &back, &reason), 0);
	ck_assert_uint_eq(back.props, st.props);
	ck_assert_str_eq(back.addr, st.addr);
	ck_assert_str_eq(back.name, st.name);
	ck_assert_int_eq(memcmp(back.pk, st.pk, 32), 0);
	ck_assert_int_eq(config_parse_upstream(stamp, &u, why, sizeof(why)), 0);
	ck_assert_int_eq(u.proto, CONFIG_PROTO_DNSCRYPT);
	ck_assert_str_eq(u.addr.text, "127.0.0.1:8443");
	ck_assert_str_eq(u.name, "2.dnscrypt-cert.example");
	ck_assert_int_eq(memcmp(u.pk, st.pk, 32), 0);
	ck_assert_str_eq(u.text, stamp);
	/* Without a port the stamp means 443; a host name is refused. */
	snprintf(st.addr, sizeof(st.addr), "[::1]");
	ck_assert_int_gt(stamp_write_dnscrypt(&st, stamp, sizeof(stamp)), 7);
	ck_assert_int_eq(config_parse_upstream(stamp, &u, why, sizeof(why)), 0);
	ck_assert_str_eq(u.addr.text, "[::1]:443");
	snprintf(st.addr, sizeof(st.addr), "dns.example");
	ck_assert_int_gt(stamp_write_dnscrypt(&st, stamp, sizeof(stamp)), 7);
	ck_assert_int_eq(
	    config_parse_upstream(stamp, &u, why, sizeof(why)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(why, "numeric"));
	/* A key of 31 bytes, or a byte after the name, is not a stamp. */
	snprintf(st.addr, sizeof(st.addr), "127.0.0.1");
	ck_assert_int_gt(stamp_write_dnscrypt(&st, stamp, sizeof(stamp)), 7);
	stamp[strlen(stamp) - 2] = '\0';
	ck_assert_int_eq(
	    config_parse_upstream(stamp, &u, why, sizeof(why)), -EINVAL);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(
		    config_parse_upstream(bad[i][0], &u, why, sizeof(why)),
		    -EINVAL);
		ck_assert_msg(
		    strstr(why, bad[i][1]) != NULL, "%s: %s", bad[i][0], why);
	}

	/* '#' after a blank starts a comment; inside a value it does not. */
	ck_assert_int_eq(load_file(&cfg,
			     "upstream = tls://192.0.2.1#dns.example # DoT\n"
			     "forward-zone = lan tls://192.0.2.9#ns.lan "
			     "192.0.2.10#x\n",
			     NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err, "'192.0.2.10#x'"));
	ck_assert_int_eq(load_file(&cfg,
			     "upstream = tls://192.0.2.1#dns.example # DoT\n"
			     "forward-zone = lan tls://192.0.2.9#ns.lan\n",
			     NULL),
	    CONFIG_RUN);
	ck_assert_str_eq(cfg.upstream[0].name, "dns.example");
	ck_assert_int_eq(cfg.zones[0].upstream[0].proto, CONFIG_PROTO_TLS);
	/* The same address over another transport is another server. */
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--upstream",
			     "tcp://192.0.2.1", NULL),
	    CONFIG_RUN);
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "tls://192.0.2.1#a.example", "--upstream",
		"tls://192.0.2.1:853#a.example", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err, "duplicate server"));
}
END_TEST

/* issue 10: allow lists, and listening beyond loopback needs one. */
START_TEST(test_allow)
{
	struct config_prefix p;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	const char *path;

	ck_assert_int_eq(config_parse_prefix("10.0.0.0/8", &p), 0);
	ck_assert_str_eq(p.text, "10.0.0.0/8");
	ck_assert_int_eq(config_parse_prefix("192.0.2.7", &p), 0);
	ck_assert_str_eq(p.text, "192.0.2.7/32");
	ck_assert_int_eq(config_parse_prefix("2001:DB8::/32", &p), 0);
	ck_assert_str_eq(p.text, "2001:db8::/32");
	ck_assert_int_eq(config_parse_prefix("0.0.0.0/0", &p), 0);
	ck_assert_int_eq(config_parse_prefix("10.1.2.3/8", &p), -EINVAL);
	ck_assert_int_eq(config_parse_prefix("10.0.0.0/33", &p), -EINVAL);
	ck_assert_int_eq(config_parse_prefix("10.0.0.0/", &p), -EINVAL);
	ck_assert_int_eq(config_parse_prefix("/8", &p), -EINVAL);
	ck_assert_int_eq(config_parse_prefix("host.example", &p), -EINVAL);
	ck_assert_int_eq(config_parse_prefix("::/129", &p), -EINVAL);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	inet_pton(AF_INET, "10.200.3.4", &sin.sin_addr);
	ck_assert_int_eq(config_parse_prefix("10.192.0.0/10", &p), 0);
	ck_assert(config_prefix_match(&p, (struct sockaddr *)&sin));
	inet_pton(AF_INET, "10.128.3.4", &sin.sin_addr);
	ck_assert(!config_prefix_match(&p, (struct sockaddr *)&sin));
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	/* A v4 client on a v6 socket matches v4 prefixes. */
	inet_pton(AF_INET6, "::ffff:10.200.3.4", &sin6.sin6_addr);
	ck_assert(config_prefix_match(&p, (struct sockaddr *)&sin6));
	ck_assert_int_eq(config_parse_prefix("2001:db8:8000::/33", &p), 0);
	inet_pton(AF_INET6, "2001:db8:8001::1", &sin6.sin6_addr);
	ck_assert(config_prefix_match(&p, (struct sockaddr *)&sin6));
	inet_pton(AF_INET6, "2001:db8:7fff::1", &sin6.sin6_addr);
	ck_assert(!config_prefix_match(&p, (struct sockaddr *)&sin6));
	ck_assert(!config_prefix_match(&p, (struct sockaddr *)&sin));

	inet_pton(AF_INET, "127.9.9.9", &sin.sin_addr);
	ck_assert(config_addr_is_loopback((struct sockaddr *)&sin));
	inet_pton(AF_INET6, "::1", &sin6.sin6_addr);
	ck_assert(config_addr_is_loopback((struct sockaddr *)&sin6));
	inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6.sin6_addr);
	ck_assert(config_addr_is_loopback((struct sockaddr *)&sin6));
	inet_pton(AF_INET6, "::2", &sin6.sin6_addr);
	ck_assert(!config_addr_is_loopback((struct sockaddr *)&sin6));

	/* Loopback listening needs no list; anything else does. */
	ck_assert_int_eq(load(&cfg, "--upstream", "192.0.2.1", "--listen",
			     "127.0.0.1:53", "--listen", "[::1]:53", NULL),
	    CONFIG_RUN);
	ck_assert_int_eq(load_file(&cfg,
			     "upstream = 192.0.2.1\n"
			     "listen = 127.0.0.53\n"
			     "listen = 169.254.20.10\n",
			     &path),
	    CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err, ":3: listen 169.254.20.10:53"));
	ck_assert_ptr_nonnull(strstr(err, "allow"));
	ck_assert_int_eq(
	    load(&cfg, "--upstream", "192.0.2.1", "--listen", "0.0.0.0", NULL),
	    CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err, "--listen: listen 0.0.0.0:53"));
	ck_assert_int_eq(load_file(&cfg,
			     "upstream = 192.0.2.1\n"
			     "listen = 169.254.20.10\n"
			     "allow = 10.0.0.0/8\n"
			     "allow = fd00::/8\n",
			     &path),
	    CONFIG_RUN);
	ck_assert_uint_eq(cfg.n_allow, 2);
	ck_assert_int_eq(load_file(&cfg,
			     "upstream = 192.0.2.1\n"
			     "allow = 10.0.0.0/8\n"
			     "allow = 10.0.0.0/8\n",
			     &path),
	    CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err, ":3: duplicate prefix for allow"));
	ck_assert_int_eq(
	    load_file(&cfg, "allow = 10.1.0.0/8\n", &path), CONFIG_EXIT_BAD);
	ck_assert_ptr_nonnull(strstr(err, ":1: bad prefix for allow"));
}
END_TEST

/* Writes text to dir/rel, making the directories on the way. */
static void
put(const char *dir, const char *rel, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	for (char *p = path + strlen(dir) + 1; (p = strchr(p, '/')) != NULL;
	     p++) {
		*p = '\0';
		ck_assert(mkdir(path, 0700) == 0 || errno == EEXIST);
		*p = '/';
	}
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

/*
 * workers = 0 counts the cgroup's CPU quota: cgroup v2's cpu.max and v1's
 * CFS files, found through the mount table, the smallest along the path
 * (a pod's quota binds its container), rounded up to whole CPUs.
 */
START_TEST(test_cgroup_cpus)
{
	char root[] = "/tmp/stubborn-cg-XXXXXX", cg[600], mounts[600], cmd[700];

	ck_assert_ptr_nonnull(mkdtemp(root));
	snprintf(cg, sizeof(cg), "%s/cgroup", root);
	snprintf(mounts, sizeof(mounts), "%s/mounts", root);

	/* v2: the pod's 1.5 CPUs bind the container under it (no quota). */
	snprintf(cmd, sizeof(cmd),
	    "proc /proc proc rw 0 0\n"
	    "cgroup2 %s/v2 cgroup2 rw,nosuid,nodev 0 0\n",
	    root);
	put(root, "mounts", cmd);
	put(root, "cgroup", "0::/kubepods/pod1/ctr\n");
	put(root, "v2/cpu.max", "max 100000\n");
	put(root, "v2/kubepods/pod1/cpu.max", "150000 100000\n");
	put(root, "v2/kubepods/pod1/ctr/cpu.max", "max 100000\n");
	ck_assert_uint_eq(config_cgroup_cpus(cg, mounts), 2);
	/* A tighter quota deeper down wins. */
	put(root, "v2/kubepods/pod1/ctr/cpu.max", "25000 100000\n");
	ck_assert_uint_eq(config_cgroup_cpus(cg, mounts), 1);
	/* No quota anywhere: 0, the affinity mask decides. */
	put(root, "v2/kubepods/pod1/ctr/cpu.max", "max 100000\n");
	put(root, "v2/kubepods/pod1/cpu.max", "max 100000\n");
	ck_assert_uint_eq(config_cgroup_cpus(cg, mounts), 0);

	/* v1 (cpu bound to v1, as on hybrid hosts): CFS quota 3.2 CPUs on
	 * the slice, none on the service. */
	snprintf(cmd, sizeof(cmd),
	    "cgroup2 %s/unified cgroup2 rw 0 0\n"
	    "cgroup %s/mem cgroup rw,memory 0 0\n"
	    "cgroup %s/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n",
	    root, root, root);
	put(root, "mounts", cmd);
	put(root, "cgroup",
	    "4:memory:/system.slice/stubborn.service\n"
	    "2:cpu,cpuacct:/system.slice/stubborn.service\n"
	    "0::/system.slice/stubborn.service\n");
	put(root, "mem/system.slice/cpu.cfs_quota_us", "50000\n");
	put(root, "mem/system.slice/cpu.cfs_period_us", "100000\n");
	put(root, "cpu,cpuacct/system.slice/cpu.cfs_quota_us", "320000\n");
	put(root, "cpu,cpuacct/system.slice/cpu.cfs_period_us", "100000\n");
	put(root, "cpu,cpuacct/system.slice/stubborn.service/cpu.cfs_quota_us",
	    "-1\n");
	put(root, "cpu,cpuacct/system.slice/stubborn.service/cpu.cfs_period_us",
	    "100000\n");
	ck_assert_uint_eq(config_cgroup_cpus(cg, mounts), 4);
	/* The memory controller's files are not a CPU quota; -1 is none. */
	put(root, "cpu,cpuacct/system.slice/cpu.cfs_quota_us", "-1\n");
	ck_assert_uint_eq(config_cgroup_cpus(cg, mounts), 0);

	/* Garbage and missing files are no quota, never a crash. */
	put(root, "cpu,cpuacct/system.slice/cpu.cfs_quota_us", "lots\n");
	ck_assert_uint_eq(config_cgroup_cpus(cg, mounts), 0);
	put(root, "cgroup", "garbage\n::\n7:cpu:relative\n");
	ck_assert_uint_eq(config_cgroup_cpus(cg, mounts), 0);
	snprintf(cmd, sizeof(cmd), "%s/nothing", root);
	ck_assert_uint_eq(config_cgroup_cpus(cmd, mounts), 0);
	ck_assert_uint_eq(config_cgroup_cpus(cg, cmd), 0);

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, NULL, tmp_cleanup);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_every_type_from_file);
	tcase_add_test(tc, test_bounds_errors_name_file_and_line);
	tcase_add_test(tc, test_file_syntax_errors);
	tcase_add_test(tc, test_flag_only_keys_refused_in_file);
	tcase_add_test(tc, test_duplicate_scalar_is_an_error);
	tcase_add_test(tc, test_flag_errors);
	tcase_add_test(tc, test_equals_form_and_check_config);
	tcase_add_test(tc, test_flags_override_file_in_any_order);
	tcase_add_test(tc, test_lists_file_appends_flags_replace);
	tcase_add_test(tc, test_list_limits_and_duplicates);
	tcase_add_test(tc, test_resolv_conf_parsing);
	tcase_add_test(tc, test_resolv_conf_own_addresses_removed);
	tcase_add_test(tc, test_resolv_conf_none_left);
	tcase_add_test(tc, test_upstream_loop_refused);
	tcase_add_test(tc, test_min_ttl_le_max_ttl);
	tcase_add_test(tc, test_metrics);
	tcase_add_test(tc, test_parse_addr_forms);
	tcase_add_test(tc, test_parse_addr_errors);
	tcase_add_test(tc, test_parse_size);
	tcase_add_test(tc, test_print_round_trip);
	tcase_add_test(tc, test_print_format);
	tcase_add_test(tc, test_shipped_config_is_the_defaults);
	tcase_add_test(tc, test_help_and_version);
	tcase_add_test(tc, test_usage_lists_every_option);
	tcase_add_test(tc, test_nul_byte_and_directory);
	tcase_add_test(tc, test_forward_zone_forms);
	tcase_add_test(tc, test_forward_zone_errors);
	tcase_add_test(tc, test_forward_zone_duplicates_and_limits);
	tcase_add_test(tc, test_forward_zone_flags_replace_file);
	tcase_add_test(tc, test_forward_zone_loop_refused);
	tcase_add_test(tc, test_policy);
	tcase_add_test(tc, test_health_check_name);
	tcase_add_test(tc, test_print_round_trip_full_zones);
	tcase_add_test(tc, test_stale_and_ratelimit_bounds);
	tcase_add_test(tc, test_stale_and_ratelimit_from_file);
	tcase_add_test(tc, test_serve_stale_bool);
	tcase_add_test(tc, test_keep_warm);
	tcase_add_test(tc, test_keep_warm_flags_replace_file);
	tcase_add_test(tc, test_stale_on_negative);
	tcase_add_test(tc, test_snapshot);
	tcase_add_test(tc, test_ratelimit_action);
	tcase_add_test(tc, test_failure_hold_min_le_max);
	tcase_add_test(tc, test_upstream_forms);
	tcase_add_test(tc, test_allow);
	tcase_add_test(tc, test_cgroup_cpus);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
