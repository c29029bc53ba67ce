/*
 * config: one table row per option drives the file parser, the flag parser,
 * --help, the defaults and the print-back, so an option is one row and one
 * struct field instead of a checklist of places to keep in step.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>

#include "stubborn/config.h"
#include "stubborn/log.h"
#include "stubborn/stamp.h"

#define CONFIG_VERSION "0.2.0"
#define CONFIG_VERSION_TEXT "stubborn " CONFIG_VERSION
#define CONFIG_MAX_WORKERS 64
/* Interface names in a scope id.  The kernel resolves "lo:1" (an alias) and
 * names with ']' to an index too, but those would not survive print-back. */
#define SCOPE_CHARS                                                            \
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

enum opt_type {
	OPT_UINT,          /* decimal in min..max */
	OPT_SIZE,          /* bytes, optional k/M/G suffix, in min..max */
	OPT_ADDR_LIST,     /* ADDR[:PORT], repeatable */
	OPT_UPSTREAM_LIST, /* upstream server (config_parse_upstream),
			      repeatable */
	OPT_PREFIX_LIST,   /* ADDR[/BITS], repeatable */
	OPT_ADDR,          /* ADDR:PORT or "off" */
	OPT_ZONE_LIST,     /* ZONE ADDR[:PORT] [ADDR[:PORT]...], repeatable */
	OPT_LEVEL,         /* error|warn|info|debug */
	OPT_CHOICE,        /* one of choices[], stored as its index in an int */
	OPT_QNAME,         /* NAME [TYPE]: name here, qtype (uint16_t) at aux */
	OPT_QNAME_LIST,    /* NAME TYPE, repeatable (struct config_name_type) */
	OPT_NAME_LIST,     /* ZONE, repeatable; "." allowed (char[256] each) */
	OPT_PATH,          /* any non-empty string that fits the field */
	OPT_OPT_PATH,      /* OPT_PATH whose default is "" (off); printed as a
			      comment then, since "" cannot be a value */
	OPT_YESNO,         /* yes|no (true|false, on|off) into a bool */
	OPT_BOOL,          /* flag without a value */
	OPT_HELP,
	OPT_VERSION,
};

/* Where an option may be given. */
#define OPT_FLAG 0x1
#define OPT_FILE 0x2
#define OPT_BOTH (OPT_FLAG | OPT_FILE)

struct opt {
	const char *name; /* flag without "--", and the file key */
	enum opt_type type;
	unsigned where;      /* OPT_FLAG and/or OPT_FILE */
	const char *metavar; /* shown by --help */
	const char *def;     /* default, written as a user would; NULL: none */
	uint64_t min, max;   /* OPT_UINT, OPT_SIZE */
	const char *unit;    /* "s" or "ms" for --help; NULL: none */
	uint16_t port;       /* default port of addresses; 0: required */
	size_t off;          /* the field in struct config */
	size_t size;         /* its size in bytes */
	size_t aux;          /* lists: the count; OPT_ADDR: on flag;
				OPT_QNAME: the qtype */
	size_t max_n;        /* lists: capacity */
	const char *empty;   /* OPT_OPT_PATH: what "" means, for print-back */
	bool must_read;      /* paths: a file that must be readable now */
	const char *const *choices; /* OPT_CHOICE: names, indexed by value */
	size_t n_choices;
	const char *help;
};

#define FIELD_SIZE(f) sizeof(((struct config *)0)->f)
#define FIELD(f) .off = offsetof(struct config, f), .size = FIELD_SIZE(f)
/* A list field (an array) and its count; the capacity is the array's. */
#define LIST(f, n)                                                             \
	FIELD(f), .aux = offsetof(struct config, n),                           \
		  .max_n = FIELD_SIZE(f) / sizeof(((struct config *)0)->f[0])
#define CHOICES(a) .choices = (a), .n_choices = sizeof(a) / sizeof((a)[0])

/* Indexed by CONFIG_POLICY_*. */
static const char *const policy_names[] = {
    [CONFIG_POLICY_FASTEST] = "fastest",
    [CONFIG_POLICY_SEQUENTIAL] = "sequential",
    [CONFIG_POLICY_ROUND_ROBIN] = "round-robin",
    [CONFIG_POLICY_RANDOM] = "random",
};

/* Indexed by CONFIG_RL_*. */
static const char *const rl_action_names[] = {
    [CONFIG_RL_REFUSE] = "refuse",
    [CONFIG_RL_DROP] = "drop",
    [CONFIG_RL_TRUNCATE] = "truncate",
};

/* Query types known by name; any other is written TYPEnnn (RFC 3597). */
static const struct {
	const char *name;
	uint16_t type;
} qtypes[] = {
    {"A", 1},
    {"NS", 2},
    {"CNAME", 5},
    {"SOA", 6},
    {"PTR", 12},
    {"MX", 15},
    {"TXT", 16},
    {"AAAA", 28},
    {"SRV", 33},
    {"DS", 43},
    {"DNSKEY", 48},
};

#define N_QTYPES (sizeof(qtypes) / sizeof(qtypes[0]))
/* Presentation names without the trailing dot, as RFC 1035 bounds them
 * (255 bytes in wire form). */
#define NAME_MAX_TEXT 253
#define LABEL_MAX 63

static const struct opt opts[] = {
    {
	.name = "config",
	.type = OPT_PATH,
	.where = OPT_FLAG,
	.metavar = "FILE",
	FIELD(config_file),
	.help = "read settings from FILE; command-line flags override it",
    },
    {
	.name = "listen",
	.type = OPT_ADDR_LIST,
	.where = OPT_BOTH,
	.metavar = "ADDR[:PORT]",
	.def = "127.0.0.53:53",
	.port = 53,
	LIST(listen, n_listen),
	.help = "answer DNS queries on this address, UDP and TCP "
		"(repeatable; IPv6 as [::1]:53)",
    },
    {
	.name = "upstream",
	.type = OPT_UPSTREAM_LIST,
	.where = OPT_BOTH,
	.metavar = "SERVER",
	.port = 53,
	LIST(upstream, n_upstream),
	.help = "forward queries to this server: ADDR[:PORT] (UDP, TCP "
		"when truncated), tcp://ADDR[:PORT], tls://ADDR[:PORT]#NAME "
		"(DNS-over-TLS, port 853) or sdns://... (a DNSCrypt stamp); "
		"repeatable; default: the nameservers of resolv-conf minus "
		"stubborn's own addresses",
    },
    {
	.name = "resolv-conf",
	.type = OPT_PATH,
	.where = OPT_BOTH,
	.metavar = "FILE",
	.def = "/etc/resolv.conf",
	FIELD(resolv_conf),
	.help = "take upstreams from this file's nameserver lines when "
		"none is given",
    },
    {
	.name = "forward-zone",
	.type = OPT_ZONE_LIST,
	.where = OPT_BOTH,
	.metavar = "ZONE SERVER...",
	.port = 53,
	LIST(zones, n_zones),
	.help = "send queries for ZONE and names below it to these "
		"servers (written as for upstream) instead of the upstreams; "
		"repeatable; one quoted argument on the command line",
    },
    {
	.name = "workers",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "N",
	.def = "0",
	.min = 0,
	.max = CONFIG_MAX_WORKERS,
	FIELD(workers),
	.help = "threads serving queries, each with its own sockets; "
		"0 means one per CPU this process may use (affinity and "
		"cgroup CPU quota)",
    },
    {
	.name = "metrics",
	.type = OPT_ADDR,
	.where = OPT_BOTH,
	.metavar = "ADDR:PORT",
	.def = "off",
	.port = 0,
	FIELD(metrics),
	.aux = offsetof(struct config, metrics_on),
	.help = "serve /metrics, /health and /ready over HTTP here, "
		"or off",
    },
    {
	.name = "cache-size",
	.type = OPT_SIZE,
	.where = OPT_BOTH,
	.metavar = "BYTES",
	.def = "64M",
	.min = 64ull << 10,
	.max = 64ull << 30,
	FIELD(cache_size),
	.help = "memory for cached answers; suffixes k, M, G are "
		"powers of 1024",
    },
    {
	.name = "log-level",
	.type = OPT_LEVEL,
	.where = OPT_BOTH,
	.metavar = "LEVEL",
	.def = "info",
	FIELD(log_level),
	.help = "least severe lines logged: error, warn, info or debug",
    },
    {
	.name = "min-ttl",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "SECONDS",
	.def = "0",
	.min = 0,
	.max = 86400,
	.unit = "s",
	FIELD(min_ttl),
	.help = "keep answers cached at least this long, even when "
		"their TTL is shorter",
    },
    {
	.name = "max-ttl",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "SECONDS",
	.def = "86400",
	.min = 1,
	.max = 604800,
	.unit = "s",
	FIELD(max_ttl),
	.help = "keep answers cached at most this long, even when "
		"their TTL is longer",
    },
    {
	.name = "max-negative-ttl",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "SECONDS",
	.def = "3600",
	.min = 0,
	.max = 86400,
	.unit = "s",
	FIELD(max_negative_ttl),
	.help = "keep NXDOMAIN and NODATA answers cached at most "
		"this long",
    },
    {
	.name = "edns-buffer-size",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "BYTES",
	.def = "1232",
	.min = 512,
	.max = 4096,
	FIELD(edns_buffer_size),
	.help = "largest UDP answer offered to upstreams and clients; "
		"1232 avoids IP fragmentation",
    },
    {
	.name = "upstream-timeout",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "MS",
	.def = "1000",
	.min = 50,
	.max = 30000,
	.unit = "ms",
	FIELD(upstream_timeout_ms),
	.help = "wait this long for one upstream before trying the next",
    },
    {
	.name = "policy",
	.type = OPT_CHOICE,
	.where = OPT_BOTH,
	.metavar = "POLICY",
	.def = "fastest",
	FIELD(policy),
	CHOICES(policy_names),
	.help = "how an upstream is chosen among the healthy ones: "
		"fastest, sequential (in the order given), round-robin "
		"or random",
    },
    {
	.name = "retry-budget",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "PERCENT",
	.def = "10",
	.min = 0,
	.max = 100,
	FIELD(retry_budget),
	.help = "hedged queries and retries allowed per 100 upstream "
		"queries, on top of a small per-second floor",
    },
    {
	.name = "circuit-failures",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "N",
	.def = "3",
	.min = 1,
	.max = 100,
	FIELD(circuit_failures),
	.help = "consecutive failures that open an upstream's circuit: "
		"it is then left out and only probed until it answers",
    },
    {
	.name = "health-check-name",
	.type = OPT_QNAME,
	.where = OPT_BOTH,
	.metavar = "NAME [TYPE]",
	.def = ". NS",
	FIELD(health_check_name),
	.aux = offsetof(struct config, health_check_type),
	.help = "the query that health probes send to upstreams; TYPE "
		"is a mnemonic such as A or NS, or TYPEnnn (NS when "
		"omitted)",
    },
    {
	.name = "probe-max-interval",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "MS",
	.def = "8000",
	.min = 1000,
	.max = 300000,
	.unit = "ms",
	FIELD(probe_max_interval_ms),
	.help = "ceiling of the backoff between health probes of an "
		"upstream whose circuit is open",
    },
    {
	.name = "tcp-idle-timeout",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "MS",
	.def = "10000",
	.min = 100,
	.max = 300000,
	.unit = "ms",
	FIELD(tcp_idle_timeout_ms),
	.help = "close a client TCP connection that sent nothing for "
		"this long",
    },
    {
	.name = "tcp-max-connections",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "N",
	.def = "150",
	.min = 1,
	.max = 100000,
	FIELD(tcp_max_connections),
	.help = "most client TCP connections kept open at once",
    },
    {
	.name = "tcp-max-per-client",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "N",
	.def = "25",
	.min = 1,
	.max = 100000,
	FIELD(tcp_max_per_client),
	.help = "most TCP connections from one client address (RFC 9210); "
		"at the limit its longest-idle connection makes room",
    },
    {
	.name = "shutdown-timeout",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "MS",
	.def = "2000",
	.min = 0,
	.max = 60000,
	.unit = "ms",
	FIELD(shutdown_timeout_ms),
	.help = "on SIGTERM or SIGINT, let in-flight queries finish for "
		"at most this long before exiting",
    },
    {
	.name = "upstream-0x20",
	.type = OPT_YESNO,
	.where = OPT_BOTH,
	.metavar = "yes|no",
	.def = "no",
	FIELD(upstream_0x20),
	.help = "send upstream queries with random letter case and accept "
		"only answers that echo it exactly (anti-spoofing)",
    },
    {
	.name = "serve-stale",
	.type = OPT_YESNO,
	.where = OPT_BOTH,
	.metavar = "yes|no",
	.def = "yes",
	FIELD(serve_stale),
	.help = "answer from expired cache entries when the upstreams "
		"fail or are slow (RFC 8767)",
    },
    {
	.name = "stale-ttl",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "SECONDS",
	.def = "30",
	.min = 1,
	.max = 3600,
	.unit = "s",
	FIELD(stale_ttl),
	.help = "TTL given to stale answers",
    },
    {
	.name = "stale-max-age",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "SECONDS",
	.def = "86400",
	.min = 0,
	.max = 604800,
	.unit = "s",
	FIELD(stale_max_age),
	.help = "keep expired entries this long past their TTL for "
		"serving stale",
    },
    {
	.name = "stale-recheck",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "SECONDS",
	.def = "30",
	.min = 1,
	.max = 300,
	.unit = "s",
	FIELD(stale_recheck),
	.help = "after a failed refresh, answer stale at once for this "
		"long before asking upstream again",
    },
    {
	.name = "stale-client-timeout",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "MS",
	.def = "400",
	.min = 10,
	.max = 1800,
	.unit = "ms",
	FIELD(stale_client_timeout_ms),
	.help = "answer stale when the upstream has not answered after "
		"this long; resolution goes on in the background",
    },
    {
	.name = "refresh-ahead",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "PERCENT",
	.def = "10",
	.min = 0,
	.max = 50,
	FIELD(refresh_ahead),
	.help = "refresh an entry in the background when a client asks "
		"for it with less than this percent of its TTL left; "
		"0 is off",
    },
    {
	.name = "keep-warm",
	.type = OPT_QNAME_LIST,
	.where = OPT_BOTH,
	.metavar = "NAME TYPE",
	LIST(keep_warm, n_keep_warm),
	.help = "keep this name and type cached, refreshing it before it "
		"expires even when nobody asks (repeatable; one quoted "
		"argument on the command line)",
    },
    {
	.name = "stale-on-negative",
	.type = OPT_NAME_LIST,
	.where = OPT_BOTH,
	.metavar = "ZONE",
	LIST(stale_on_negative, n_stale_on_negative),
	.help = "for names in ZONE (\".\": all), keep answering the last "
		"positive answer when the upstream turns to NXDOMAIN or "
		"NODATA (repeatable; deviates from RFC 8767)",
    },
    {
	.name = "stale-on-negative-window",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "SECONDS",
	.def = "900",
	.min = 1,
	.max = 86400,
	.unit = "s",
	FIELD(stale_on_negative_window),
	.help = "how long stale-on-negative keeps the positive answer "
		"after the first negative one",
    },
    {
	.name = "snapshot",
	.type = OPT_OPT_PATH,
	.where = OPT_BOTH,
	.metavar = "FILE",
	FIELD(snapshot),
	.empty = "none",
	.help = "save the cache to FILE and load it at start, so that a "
		"restart keeps answering (default: none, no snapshot)",
    },
    {
	.name = "snapshot-interval",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "SECONDS",
	.def = "300",
	.min = 0,
	.max = 86400,
	.unit = "s",
	FIELD(snapshot_interval),
	.help = "save the snapshot this often; 0 saves only at shutdown",
    },
    {
	.name = "client-qps",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "QPS",
	.def = "200",
	.min = 1,
	.max = 1000000,
	FIELD(client_qps),
	.help = "queries a second, per client prefix, that may go "
		"upstream (cache misses); bursts of twice that",
    },
    {
	.name = "client-qps-cookie",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "QPS",
	.def = "1000",
	.min = 1,
	.max = 1000000,
	FIELD(client_qps_cookie),
	.help = "client-qps for clients that return a valid server "
		"cookie (they cannot spoof their address)",
    },
    {
	.name = "cache-qps",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "QPS",
	.def = "0",
	.min = 0,
	.max = 10000000,
	FIELD(cache_qps),
	.help = "queries a second, per client prefix, answered from the "
		"cache; 0 is unlimited",
    },
    {
	.name = "client-prefix-v4",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "BITS",
	.def = "32",
	.min = 8,
	.max = 32,
	FIELD(client_prefix_v4),
	.help = "IPv4 clients in one prefix of this length share their "
		"rate limits",
    },
    {
	.name = "client-prefix-v6",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "BITS",
	.def = "56",
	.min = 16,
	.max = 128,
	FIELD(client_prefix_v6),
	.help = "IPv6 clients in one prefix of this length share their "
		"rate limits",
    },
    {
	.name = "ratelimit-action",
	.type = OPT_CHOICE,
	.where = OPT_BOTH,
	.metavar = "ACTION",
	.def = "refuse",
	FIELD(ratelimit_action),
	CHOICES(rl_action_names),
	.help = "what an over-limit client gets: refuse (REFUSED), drop "
		"(no answer) or truncate (TC=1, retry over TCP)",
    },
    {
	.name = "ratelimit-clients",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "N",
	.def = "65536",
	.min = 64,
	.max = 10000000,
	FIELD(ratelimit_clients),
	.help = "client prefixes tracked for rate limiting; bounds "
		"its memory",
    },
    {
	.name = "upstream-qps",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "QPS",
	.def = "800",
	.min = 1,
	.max = 1000000,
	FIELD(upstream_qps),
	.help = "queries a second sent to one upstream server, under the "
		"AWS VPC resolver's 1024 packets a second per interface",
    },
    {
	.name = "upstream-max-outstanding",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "N",
	.def = "256",
	.min = 1,
	.max = 100000,
	FIELD(upstream_max_outstanding),
	.help = "queries awaiting an answer from one upstream server at "
		"once",
    },
    {
	.name = "max-waiters",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "N",
	.def = "256",
	.min = 1,
	.max = 100000,
	FIELD(max_waiters),
	.help = "clients waiting on one in-flight upstream query; more "
		"get stale or SERVFAIL",
    },
    {
	.name = "failure-hold-min",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "SECONDS",
	.def = "1",
	.min = 1,
	.max = 300,
	.unit = "s",
	FIELD(failure_hold_min),
	.help = "after a query fails at every upstream, send it nowhere "
		"for this long at first (RFC 9520)",
    },
    {
	.name = "failure-hold-max",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "SECONDS",
	.def = "300",
	.min = 1,
	.max = 3600,
	.unit = "s",
	FIELD(failure_hold_max),
	.help = "the hold doubles on each further failure up to this",
    },
    {
	.name = "control-socket",
	.type = OPT_OPT_PATH,
	.where = OPT_BOTH,
	.metavar = "PATH",
	FIELD(control_socket),
	.empty = "none",
	.help = "listen for control commands (stubborn-ctl) on this Unix "
		"socket; a second stubborn started with the same path takes "
		"over the sockets and the cache of the running one "
		"(default: none)",
    },
    {
	.name = "user",
	.type = OPT_OPT_PATH,
	.where = OPT_BOTH,
	.metavar = "NAME",
	FIELD(user),
	.empty = "stubborn if that user exists, else nobody",
	.help = "after binding, run as this user, without capabilities; "
		"root keeps root (default: stubborn if that user exists, "
		"else nobody)",
    },
    {
	.name = "allow",
	.type = OPT_PREFIX_LIST,
	.where = OPT_BOTH,
	.metavar = "PREFIX",
	LIST(allow, n_allow),
	.help = "answer clients in this prefix (ADDR or ADDR/BITS, IPv4 or "
		"IPv6; repeatable); others get REFUSED.  Loopback clients "
		"are always answered; required when a listen address is "
		"not loopback",
    },
    {
	.name = "ratelimit-loopback",
	.type = OPT_YESNO,
	.where = OPT_BOTH,
	.metavar = "yes|no",
	.def = "no",
	FIELD(ratelimit_loopback),
	.help = "apply client-qps and cache-qps to loopback clients too; "
		"off, every local program shares 127.0.0.1 and only the "
		"upstream budget bounds them",
    },
    {
	.name = "log-queries",
	.type = OPT_YESNO,
	.where = OPT_BOTH,
	.metavar = "yes|no",
	.def = "no",
	FIELD(log_queries),
	.help = "log one line per reply (client, name, type, rcode, "
		"source, duration), for debugging",
    },
    {
	.name = "log-queries-sample",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "PERCENT",
	.def = "100",
	.min = 1,
	.max = 100,
	FIELD(log_queries_sample),
	.help = "with log-queries, log this percent of the replies, "
		"chosen at random",
    },
    {
	.name = "trust-upstream-ad",
	.type = OPT_YESNO,
	.where = OPT_BOTH,
	.metavar = "yes|no",
	.def = "no",
	FIELD(trust_upstream_ad),
	.help = "pass the upstream's AD (authenticated data) bit to "
		"clients that ask with DO or AD; only for a validating "
		"upstream on a trusted path",
    },
    {
	.name = "tls-ca-file",
	.type = OPT_OPT_PATH,
	.where = OPT_BOTH,
	.metavar = "FILE",
	FIELD(tls_ca_file),
	.empty = "the system's trust store",
	.must_read = true,
	.help = "verify DNS-over-TLS upstreams against the CA "
		"certificates in this PEM file (default: the system's "
		"trust store)",
    },
    {
	.name = "dnscrypt-key-lifetime",
	.type = OPT_UINT,
	.where = OPT_BOTH,
	.metavar = "SECONDS",
	.def = "600",
	.min = 0,
	.max = 86400,
	.unit = "s",
	FIELD(dnscrypt_key_lifetime),
	.help = "use one DNSCrypt client key pair this long; 0 makes a "
		"fresh one per query",
    },
    {
	.name = "check-config",
	.type = OPT_BOOL,
	.where = OPT_FLAG,
	FIELD(check_config),
	.help = "validate the configuration, print it in config-file "
		"syntax and exit",
    },
    {
	.name = "help",
	.type = OPT_HELP,
	.where = OPT_FLAG,
	.help = "print this text and exit",
    },
    {
	.name = "version",
	.type = OPT_VERSION,
	.where = OPT_FLAG,
	.help = "print the version and exit",
    },
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

/* Why a value was refused: "bad value" + "'99' (1..10)". */
struct why {
	const char *kind;
	char detail[192];
};

/* Where each option's value came from, for messages about combinations. */
#define ORIGIN_DEFAULT 0
#define ORIGIN_FLAG (-1)
#define MAX2(a, b) ((a) > (b) ? (a) : (b))
#define LIST_MAX                                                               \
	MAX2(MAX2(MAX2(CONFIG_MAX_LISTEN, CONFIG_MAX_UPSTREAM),                \
		 CONFIG_MAX_ZONES),                                            \
	    CONFIG_MAX_KEEP_WARM)
#define NO_ITEM ((size_t)-1)

struct loader {
	char *err;
	size_t errlen;
	const char *file;   /* the config file, for "file:line:" */
	int origin[N_OPTS]; /* ORIGIN_*, or the file line that set it */
	int item_line[N_OPTS][LIST_MAX]; /* file line of each list entry */
	bool flagged[N_OPTS];            /* given on the command line */
};

static int fail(struct loader *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int refuse(struct why *why, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const struct opt *opt_find(const char *name, size_t len);
static size_t opt_index(const char *name);
static void *field(const struct opt *o, struct config *cfg);
static const void *cfield(const struct opt *o, const struct config *cfg);
static uint64_t uint_get(const struct opt *o, const struct config *cfg);
static void uint_put(const struct opt *o, struct config *cfg, uint64_t v);
static int parse_digits(const char **sp, uint64_t *out);
static int parse_uint(const char *s, uint64_t *out);
static int parse_v4(const char *host, uint16_t port, struct config_addr *a);
static int parse_v6(const char *host, uint16_t port, struct config_addr *a);
static bool addr_same(const struct config_addr *a, const struct config_addr *b);
static bool addr_is_loopback(const struct config_addr *a);
static bool addr_is_wildcard(const struct config_addr *a);
static bool addr_is_own(const struct config *cfg, const struct config_addr *a);
static void size_text(uint64_t v, char *buf, size_t len);
static int opt_set(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_uint(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_size(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_list(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_addr(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_upstream_list(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_prefix_list(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static bool upstream_same(
    const struct config_upstream *a, const struct config_upstream *b);
static void upstream_plain(
    struct config_upstream *u, const struct config_addr *a);
static unsigned usable_cpus(void);
static const char *next_word(const char **sp, size_t *len);
static const char *name_parse(const char *s, size_t len, char *out);
static int qtype_parse(const char *s, size_t len, uint16_t *out);
static void qtype_text(uint16_t type, char *buf, size_t len);
static int set_zone(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_choice(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_qname(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_qname_list(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_name_list(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_yesno(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static int set_path(
    const struct opt *o, struct config *cfg, const char *val, struct why *why);
static bool opt_is_list(const struct opt *o);
static void opt_copy(
    const struct opt *o, struct config *dst, const struct config *src);
static int set_defaults(struct loader *ld, struct config *cfg);
static int parse_argv(struct loader *ld, struct config *fl, int argc,
    char **argv, enum config_outcome *done);
static int parse_flag(struct loader *ld, struct config *fl, int argc,
    char **argv, int *i, enum config_outcome *done);
static int parse_file(struct loader *ld, struct config *cfg);
static int parse_line(
    struct loader *ld, struct config *cfg, unsigned lineno, char *line);
static char *trim(char *s);
static void origin_prefix(
    const struct loader *ld, size_t idx, size_t item, char *buf, size_t len);
static int finish(struct loader *ld, struct config *cfg);
static int check_upstreams(struct loader *ld, struct config *cfg);
static int check_zones(struct loader *ld, const struct config *cfg);
static int load_resolv(struct loader *ld, struct config *cfg);
static int read_resolv(const char *path, struct config *cfg);
static int resolv_line(char *line, struct config_addr *a);
static void usage_line(const struct opt *o, FILE *f);

static int
fail(struct loader *ld, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ld->err, ld->errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int
refuse(struct why *why, const char *kind, const char *fmt, ...)
{
	va_list ap;

	why->kind = kind;
	va_start(ap, fmt);
	vsnprintf(why->detail, sizeof(why->detail), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static const struct opt *
opt_find(const char *name, size_t len)
{
	for (size_t i = 0; i < N_OPTS; i++)
		if (strlen(opts[i].name) == len &&
		    memcmp(opts[i].name, name, len) == 0)
			return &opts[i];
	return NULL;
}

/* Row of an option the code itself names; the name is always there. */
static size_t
opt_index(const char *name)
{
	return (size_t)(opt_find(name, strlen(name)) - opts);
}

static void *
field(const struct opt *o, struct config *cfg)
{
	return (char *)cfg + o->off;
}

static const void *
cfield(const struct opt *o, const struct config *cfg)
{
	return (const char *)cfg + o->off;
}

/* The uint fields have different widths; the table knows each one. */
static uint64_t
uint_get(const struct opt *o, const struct config *cfg)
{
	const void *p = cfield(o, cfg);

	switch (o->size) {
	case 2:
		return *(const uint16_t *)p;
	case 4:
		return *(const uint32_t *)p;
	default:
		return *(const uint64_t *)p;
	}
}

static void
uint_put(const struct opt *o, struct config *cfg, uint64_t v)
{
	void *p = field(o, cfg);

	switch (o->size) {
	case 2:
		*(uint16_t *)p = (uint16_t)v;
		break;
	case 4:
		*(uint32_t *)p = (uint32_t)v;
		break;
	default:
		*(uint64_t *)p = v;
		break;
	}
}

/* strtoull would accept "-1", " 7" and "0x10"; config values are plainer. */
static int
parse_digits(const char **sp, uint64_t *out)
{
	const char *s = *sp;
	uint64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*sp = s;
	*out = v;
	return 0;
}

static int
parse_uint(const char *s, uint64_t *out)
{
	if (parse_digits(&s, out) != 0 || *s != '\0')
		return -EINVAL;
	return 0;
}

int
config_parse_size(const char *s, uint64_t *out)
{
	uint64_t v;
	unsigned shift = 0;

	if (s == NULL || parse_digits(&s, &v) != 0)
		return -EINVAL;
	switch (*s) {
	case '\0':
		break;
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	default:
		return -EINVAL;
	}
	if (shift != 0 && s[1] != '\0')
		return -EINVAL;
	if (v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = v << shift;
	return 0;
}

int
config_parse_addr(const char *s, uint16_t default_port, struct config_addr *out)
{
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 1];
	struct config_addr a;
	const char *h, *hend, *port = NULL, *colon;
	uint64_t p = default_port;
	bool v6;
	int rc;

	if (s == NULL || out == NULL)
		return -EINVAL;
	if (s[0] == '[') {
		h = s + 1;
		hend = strchr(h, ']');
		if (hend == NULL)
			return -EINVAL;
		if (hend[1] == ':')
			port = hend + 2;
		else if (hend[1] != '\0')
			return -EINVAL;
		v6 = true;
	} else {
		/* One colon separates a port; more make a bare IPv6 address. */
		h = s;
		colon = strchr(s, ':');
		if (colon != NULL && strchr(colon + 1, ':') == NULL) {
			hend = colon;
			port = colon + 1;
			v6 = false;
		} else {
			hend = s + strlen(s);
			v6 = colon != NULL;
		}
	}
	if (hend == h || (size_t)(hend - h) >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, (size_t)(hend - h));
	host[hend - h] = '\0';
	if (port != NULL && (parse_uint(port, &p) != 0 || p < 1 || p > 65535))
		return -EINVAL;

	memset(&a, 0, sizeof(a));
	rc = v6 ? parse_v6(host, (uint16_t)p, &a)
		: parse_v4(host, (uint16_t)p, &a);
	if (rc != 0)
		return rc;
	*out = a;
	return 0;
}

static int
parse_v4(const char *host, uint16_t port, struct config_addr *a)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
	char buf[INET_ADDRSTRLEN];

	if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		return -EINVAL;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	a->len = sizeof(*sin);
	inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
	snprintf(a->text, sizeof(a->text), "%s:%u", buf, (unsigned)port);
	return 0;
}

static int
parse_v6(const char *host, uint16_t port, struct config_addr *a)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
	char addr[INET6_ADDRSTRLEN + IF_NAMESIZE + 1], buf[INET6_ADDRSTRLEN];
	char *scope;
	uint64_t id = 0;
	int n;

	snprintf(addr, sizeof(addr), "%s", host);
	scope = strchr(addr, '%');
	if (scope != NULL) {
		*scope++ = '\0';
		if (*scope == '\0')
			return -EINVAL;
		/* An interface name or index; if_nametoindex asks the kernel,
		 * never DNS. */
		if (isdigit((unsigned char)*scope)) {
			if (parse_uint(scope, &id) != 0 || id == 0 ||
			    id > UINT32_MAX)
				return -EINVAL;
		} else if (strlen(scope) >= IF_NAMESIZE ||
		    scope[strspn(scope, SCOPE_CHARS)] != '\0' ||
		    (id = if_nametoindex(scope)) == 0) {
			return -EINVAL;
		}
	}
	if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) != 1)
		return -EINVAL;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	sin6->sin6_scope_id = (uint32_t)id;
	a->len = sizeof(*sin6);
	inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
	n = snprintf(a->text, sizeof(a->text), "[%s%s%s]:%u", buf,
	    scope ? "%" : "", scope ? scope : "", (unsigned)port);
	if (n < 0 || (size_t)n >= sizeof(a->text))
		return -EINVAL;
	return 0;
}

static bool
addr_same(const struct config_addr *a, const struct config_addr *b)
{
	const struct sockaddr_in *a4, *b4;
	const struct sockaddr_in6 *a6, *b6;

	if (a->ss.ss_family != b->ss.ss_family)
		return false;
	if (a->ss.ss_family == AF_INET) {
		a4 = (const struct sockaddr_in *)&a->ss;
		b4 = (const struct sockaddr_in *)&b->ss;
		return a4->sin_port == b4->sin_port &&
		    a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	}
	a6 = (const struct sockaddr_in6 *)&a->ss;
	b6 = (const struct sockaddr_in6 *)&b->ss;
	return a6->sin6_port == b6->sin6_port &&
	    a6->sin6_scope_id == b6->sin6_scope_id &&
	    memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof(a6->sin6_addr)) == 0;
}

static bool
addr_is_loopback(const struct config_addr *a)
{
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&a->ss;

	if (a->ss.ss_family == AF_INET)
		return (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
	return IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
}

int
config_parse_qtype(const char *s, uint16_t *out)
{
	return qtype_parse(s, strlen(s), out);
}

void
config_qtype_text(uint16_t type, char *buf, size_t len)
{
	qtype_text(type, buf, len);
}

const char *
config_version(void)
{
	return CONFIG_VERSION;
}

bool
config_addr_is_wildcard(const struct config_addr *a)
{
	return addr_is_wildcard(a);
}

static bool
addr_is_wildcard(const struct config_addr *a)
{
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&a->ss;

	if (a->ss.ss_family == AF_INET)
		return a4->sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr);
}

/*
 * Would queries sent to a come back to us?  Equal address and port, or a
 * loopback address on the port of a wildcard listener (0.0.0.0 / [::], which
 * on Linux also covers IPv4 unless v6only), since that is a loop as well.
 */
static bool
addr_is_own(const struct config *cfg, const struct config_addr *a)
{
	const struct config_addr *l;
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in *l4;

	for (size_t i = 0; i < cfg->n_listen; i++) {
		l = &cfg->listen[i];
		if (addr_same(l, a))
			return true;
		/* sin_port sits at the same offset in both families. */
		l4 = (const struct sockaddr_in *)&l->ss;
		if (addr_is_wildcard(l) && l4->sin_port == a4->sin_port &&
		    addr_is_loopback(a) &&
		    (l->ss.ss_family == a->ss.ss_family ||
			l->ss.ss_family == AF_INET6))
			return true;
	}
	return false;
}

/* Bounds in --help and messages read better as "64k" than as 65536. */
static void
size_text(uint64_t v, char *buf, size_t len)
{
	static const char suffix[] = "GMk";

	for (unsigned i = 0; i < 3; i++) {
		unsigned shift = 30 - 10 * i;
		if (v != 0 && v % (1ull << shift) == 0) {
			snprintf(buf, len, "%llu%c",
			    (unsigned long long)(v >> shift), suffix[i]);
			return;
		}
	}
	snprintf(buf, len, "%llu", (unsigned long long)v);
}

static int
set_uint(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	uint64_t v;

	if (parse_uint(val, &v) != 0 || v < o->min || v > o->max)
		return refuse(why, "bad value", "'%.100s' (%llu..%llu)", val,
		    (unsigned long long)o->min, (unsigned long long)o->max);
	uint_put(o, cfg, v);
	return 0;
}

static int
set_size(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	char lo[24], hi[24];
	uint64_t v;

	if (config_parse_size(val, &v) != 0 || v < o->min || v > o->max) {
		size_text(o->min, lo, sizeof(lo));
		size_text(o->max, hi, sizeof(hi));
		return refuse(
		    why, "bad value", "'%.100s' (%s..%s)", val, lo, hi);
	}
	uint_put(o, cfg, v);
	return 0;
}

static int
set_list(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	struct config_addr *list = field(o, cfg);
	size_t *n = (size_t *)((char *)cfg + o->aux);
	struct config_addr a;

	if (config_parse_addr(val, o->port, &a) != 0)
		return refuse(why, "bad address", "'%.100s'", val);
	/* A repeated listen address would bind twice; a repeated upstream
	 * would skew selection.  Either is a typo worth reporting. */
	for (size_t i = 0; i < *n; i++)
		if (addr_same(&list[i], &a))
			return refuse(why, "duplicate address",
			    "'%.100s' is already listed", val);
	if (*n >= o->max_n)
		return refuse(why, "too many values", "at most %zu", o->max_n);
	list[(*n)++] = a;
	return 0;
}

static int
set_addr(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	bool *on = (bool *)((char *)cfg + o->aux);
	struct config_addr a;
	uint16_t port;

	if (strcmp(val, "off") == 0) {
		*on = false;
		memset(field(o, cfg), 0, o->size);
		return 0;
	}
	if (config_parse_addr(val, o->port, &a) != 0)
		return refuse(why, "bad address", "'%.100s'", val);
	port = ntohs(((struct sockaddr_in *)&a.ss)->sin_port);
	if (port == 0)
		return refuse(why, "bad address",
		    "'%.100s' (ADDR:PORT, the port is required)", val);
	*on = true;
	memcpy(field(o, cfg), &a, sizeof(a));
	return 0;
}

/*
 * "tls://ADDR[:PORT]#NAME", "tcp://ADDR[:PORT]", "sdns://..." or a plain
 * address.  The scheme decides the transport; everything after it is
 * parsed as for a plain address, so IPv6 and scope ids work the same way.
 */
int
config_parse_upstream(
    const char *s, struct config_upstream *out, char *why, size_t whylen)
{
	struct config_upstream u;
	struct stamp_dnscrypt st;
	char host[128];
	const char *hash, *reason;
	size_t hlen;

	memset(&u, 0, sizeof(u));
	if (strncmp(s, "sdns://", 7) == 0) {
		if (strlen(s) >= sizeof(u.text)) {
			snprintf(why, whylen,
			    "stamp longer than %zu characters",
			    sizeof(u.text) - 1);
			return -EINVAL;
		}
		if (stamp_parse_dnscrypt(s, &st, &reason) != 0) {
			snprintf(why, whylen, "%s", reason);
			return -EINVAL;
		}
		if (config_parse_addr(st.addr, STAMP_DEFAULT_PORT, &u.addr) !=
		    0) {
			snprintf(why, whylen,
			    "stamp address '%.64s' is not a numeric address",
			    st.addr);
			return -EINVAL;
		}
		u.proto = CONFIG_PROTO_DNSCRYPT;
		memcpy(u.pk, st.pk, sizeof(u.pk));
		u.props = st.props;
		snprintf(u.name, sizeof(u.name), "%s", st.name);
		snprintf(u.text, sizeof(u.text), "%s", s);
		*out = u;
		return 0;
	}
	if (strncmp(s, "tls://", 6) == 0) {
		s += 6;
		hash = strchr(s, '#');
		if (hash == NULL || hash[1] == '\0') {
			snprintf(why, whylen,
			    "tls:// needs the server's authentication name: "
			    "tls://ADDR[:PORT]#NAME");
			return -EINVAL;
		}
		hlen = (size_t)(hash - s);
		if (hlen == 0 || hlen >= sizeof(host) ||
		    name_parse(hash + 1, strlen(hash + 1), u.name) != NULL ||
		    strcmp(u.name, ".") == 0) {
			snprintf(why, whylen,
			    "tls://ADDR[:PORT]#NAME with a "
			    "numeric address and a host name");
			return -EINVAL;
		}
		/* name_parse adds the root's dot; certificates name hosts
		 * without it. */
		u.name[strlen(u.name) - 1] = '\0';
		memcpy(host, s, hlen);
		host[hlen] = '\0';
		if (config_parse_addr(host, 853, &u.addr) != 0) {
			snprintf(why, whylen,
			    "tls://ADDR[:PORT]#NAME with a "
			    "numeric address");
			return -EINVAL;
		}
		u.proto = CONFIG_PROTO_TLS;
		snprintf(
		    u.text, sizeof(u.text), "tls://%s#%s", u.addr.text, u.name);
		*out = u;
		return 0;
	}
	if (strncmp(s, "tcp://", 6) == 0) {
		if (config_parse_addr(s + 6, 53, &u.addr) != 0) {
			snprintf(why, whylen,
			    "tcp://ADDR[:PORT] with a "
			    "numeric address");
			return -EINVAL;
		}
		u.proto = CONFIG_PROTO_TCP;
		snprintf(u.text, sizeof(u.text), "tcp://%s", u.addr.text);
		*out = u;
		return 0;
	}
	if (strstr(s, "://") != NULL) {
		snprintf(why, whylen,
		    "unknown scheme (ADDR[:PORT], tcp://, tls:// or sdns://)");
		return -EINVAL;
	}
	if (config_parse_addr(s, 53, &u.addr) != 0) {
		snprintf(why, whylen, "not a numeric address");
		return -EINVAL;
	}
	upstream_plain(out, &u.addr);
	return 0;
}

static void
upstream_plain(struct config_upstream *u, const struct config_addr *a)
{
	memset(u, 0, sizeof(*u));
	u->addr = *a;
	u->proto = CONFIG_PROTO_UDP;
	snprintf(u->text, sizeof(u->text), "%s", a->text);
}

/* The same server reached the same way (a TLS name or a key differs: not). */
static bool
upstream_same(const struct config_upstream *a, const struct config_upstream *b)
{
	return a->proto == b->proto && addr_same(&a->addr, &b->addr) &&
	    strcmp(a->name, b->name) == 0 &&
	    memcmp(a->pk, b->pk, sizeof(a->pk)) == 0;
}

static int
set_upstream_list(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	struct config_upstream *list = field(o, cfg), u;
	size_t *n = (size_t *)((char *)cfg + o->aux);
	char reason[160];

	if (config_parse_upstream(val, &u, reason, sizeof(reason)) != 0)
		return refuse(why, "bad server", "'%.100s' (%s)", val, reason);
	for (size_t i = 0; i < *n; i++)
		if (upstream_same(&list[i], &u))
			return refuse(why, "duplicate server",
			    "'%.100s' is already listed", val);
	if (*n >= o->max_n)
		return refuse(why, "too many values", "at most %zu", o->max_n);
	list[(*n)++] = u;
	return 0;
}

int
config_parse_prefix(const char *s, struct config_prefix *out)
{
	char host[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
	struct config_prefix p;
	uint64_t bits;
	unsigned max, nbytes;

	memset(&p, 0, sizeof(p));
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, p.addr) == 1) {
		p.family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, host, p.addr) == 1) {
		p.family = AF_INET6;
		max = 128;
	} else {
		return -EINVAL;
	}
	bits = max;
	if (slash != NULL && (parse_uint(slash + 1, &bits) != 0 || bits > max))
		return -EINVAL;
	p.bits = (unsigned)bits;
	/* Host bits set ("10.1.2.3/8") usually mean a typo in the length. */
	nbytes = max / 8;
	for (unsigned i = 0; i < nbytes; i++) {
		unsigned keep = p.bits > i * 8 ? p.bits - i * 8 : 0;
		uint8_t mask = keep >= 8 ? 0xff : (uint8_t)(0xff << (8 - keep));
		if (p.addr[i] & ~mask)
			return -EINVAL;
	}
	inet_ntop(p.family, p.addr, host, sizeof(host));
	snprintf(p.text, sizeof(p.text), "%s/%u", host, p.bits);
	*out = p;
	return 0;
}

bool
config_prefix_match(const struct config_prefix *p, const struct sockaddr *addr)
{
	const uint8_t *a;
	uint8_t mapped[4];
	unsigned full = p->bits / 8, rest = p->bits % 8;

	if (addr->sa_family == AF_INET) {
		a = (const uint8_t *)&((const struct sockaddr_in *)addr)
			->sin_addr;
	} else {
		a = (const uint8_t *)&((const struct sockaddr_in6 *)addr)
			->sin6_addr;
		/* A v4 client on a dual-stack socket looks like ::ffff:a.b.c.d.
		 */
		if (p->family == AF_INET &&
		    IN6_IS_ADDR_V4MAPPED(
			&((const struct sockaddr_in6 *)addr)->sin6_addr)) {
			memcpy(mapped, a + 12, 4);
			a = mapped;
		} else if (p->family != AF_INET6) {
			return false;
		}
	}
	if (p->family == AF_INET6 && addr->sa_family != AF_INET6)
		return false;
	if (memcmp(a, p->addr, full) != 0)
		return false;
	return rest == 0 ||
	    ((a[full] ^ p->addr[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

bool
config_addr_is_loopback(const struct sockaddr *addr)
{
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)addr;

	if (addr->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)addr)
				  ->sin_addr.s_addr) >>
			   24) == 127;
	if (addr->sa_family != AF_INET6)
		return false;
	return IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr) ||
	    (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr) &&
		a6->sin6_addr.s6_addr[12] == 127);
}

static int
set_prefix_list(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	struct config_prefix *list = field(o, cfg), p;
	size_t *n = (size_t *)((char *)cfg + o->aux);

	if (config_parse_prefix(val, &p) != 0)
		return refuse(why, "bad prefix",
		    "'%.100s' (ADDR or ADDR/BITS, no host bits set)", val);
	for (size_t i = 0; i < *n; i++)
		if (strcmp(list[i].text, p.text) == 0)
			return refuse(why, "duplicate prefix",
			    "'%.100s' is already listed", val);
	if (*n >= o->max_n)
		return refuse(why, "too many values", "at most %zu", o->max_n);
	list[(*n)++] = p;
	return 0;
}

/* The next run of non-blanks in *sp, its length in *len; NULL at the end. */
static const char *
next_word(const char **sp, size_t *len)
{
	const char *s = *sp, *w;

	while (isspace((unsigned char)*s))
		s++;
	if (*s == '\0') {
		*sp = s;
		return NULL;
	}
	w = s;
	while (*s != '\0' && !isspace((unsigned char)*s))
		s++;
	*len = (size_t)(s - w);
	*sp = s;
	return w;
}

/*
 * A domain name in presentation form, s[0..len), with or without its
 * trailing dot, into out (at least NAME_MAX_TEXT + 2 bytes) lower-cased and
 * with the dot; "." is the root.  No escapes: labels of letters, digits,
 * '-' and '_' cover zones and probe names, and keep the print-back plain.
 * Returns NULL, or why the name is refused.
 */
static const char *
name_parse(const char *s, size_t len, char *out)
{
	size_t label = 0, o = 0;
	unsigned char c;

	if (len == 1 && s[0] == '.') {
		memcpy(out, ".", 2);
		return NULL;
	}
	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len > NAME_MAX_TEXT)
		return "longer than 253 characters";
	for (size_t i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0)
				return "empty label";
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_') {
			if (++label > LABEL_MAX)
				return "label longer than 63 characters";
			if (c >= 'A' && c <= 'Z')
				c = (unsigned char)(c - 'A' + 'a');
		} else {
			return "labels take letters, digits, '-' and '_'";
		}
		out[o++] = (char)c;
	}
	if (label == 0)
		return "empty label";
	out[o++] = '.';
	out[o] = '\0';
	return NULL;
}

/* "AAAA", "ns", "TYPE65" (RFC 3597) into a qtype 1..65535. */
static int
qtype_parse(const char *s, size_t len, uint16_t *out)
{
	char buf[16];
	uint64_t v;

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	for (size_t i = 0; i < N_QTYPES; i++)
		if (strcasecmp(buf, qtypes[i].name) == 0) {
			*out = qtypes[i].type;
			return 0;
		}
	if (strncasecmp(buf, "TYPE", 4) != 0 || parse_uint(buf + 4, &v) != 0 ||
	    v < 1 || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

static void
qtype_text(uint16_t type, char *buf, size_t len)
{
	for (size_t i = 0; i < N_QTYPES; i++)
		if (qtypes[i].type == type) {
			snprintf(buf, len, "%s", qtypes[i].name);
			return;
		}
	snprintf(buf, len, "TYPE%u", (unsigned)type);
}

static int
set_zone(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	struct config_zone *zones = field(o, cfg), z;
	size_t *n = (size_t *)((char *)cfg + o->aux), len;
	char addr[sizeof(z.upstream[0].text)], bad[160];
	const char *w, *reason;
	struct config_upstream a;

	memset(&z, 0, sizeof(z));
	if ((w = next_word(&val, &len)) == NULL)
		return refuse(why, "bad value",
		    "empty (ZONE ADDR[:PORT] [ADDR[:PORT]...])");
	if ((reason = name_parse(w, len, z.name)) != NULL)
		return refuse(why, "bad zone", "'%.*s' (%s)",
		    (int)(len > 100 ? 100 : len), w, reason);
	if (strcmp(z.name, ".") == 0)
		return refuse(
		    why, "bad zone", "'.' (use upstream for the root zone)");
	for (size_t i = 0; i < *n; i++)
		if (strcmp(zones[i].name, z.name) == 0)
			return refuse(why, "duplicate zone",
			    "'%.100s' is already listed", z.name);
	if (*n >= o->max_n)
		return refuse(
		    why, "too many values", "at most %zu zones", o->max_n);
	while ((w = next_word(&val, &len)) != NULL) {
		if (len < sizeof(addr)) {
			memcpy(addr, w, len);
			addr[len] = '\0';
		}
		if (len >= sizeof(addr))
			return refuse(why, "bad server",
			    "'%.100s...' in zone "
			    "%.100s (too long)",
			    w, z.name);
		if (config_parse_upstream(addr, &a, bad, sizeof(bad)) != 0)
			return refuse(why, "bad server",
			    "'%.*s' in zone %.100s (%s)",
			    (int)(len > 100 ? 100 : len), w, z.name, bad);
		for (size_t i = 0; i < z.n_upstream; i++)
			if (upstream_same(&z.upstream[i], &a))
				return refuse(why, "duplicate server",
				    "'%.100s' is already listed for %.100s",
				    addr, z.name);
		if (z.n_upstream >= CONFIG_MAX_UPSTREAM)
			return refuse(why, "too many addresses",
			    "at most %d for zone %.100s", CONFIG_MAX_UPSTREAM,
			    z.name);
		z.upstream[z.n_upstream++] = a;
	}
	if (z.n_upstream == 0)
		return refuse(why, "missing address",
		    "zone %.100s needs at least one server (ZONE SERVER "
		    "[SERVER...])",
		    z.name);
	zones[(*n)++] = z;
	return 0;
}

static int
set_choice(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	char list[128];
	size_t used = 0;

	for (size_t i = 0; i < o->n_choices; i++)
		if (strcasecmp(val, o->choices[i]) == 0) {
			*(int *)field(o, cfg) = (int)i;
			return 0;
		}
	for (size_t i = 0; i < o->n_choices && used < sizeof(list); i++)
		used +=
		    (size_t)snprintf(list + used, sizeof(list) - used, "%s%s",
			i == 0                      ? ""
			    : i + 1 == o->n_choices ? " or "
						    : ", ",
			o->choices[i]);
	return refuse(why, "bad value", "'%.100s' (%s)", val, list);
}

static int
set_qname(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	char name[NAME_MAX_TEXT + 2];
	const char *w, *t, *reason, *rest = val;
	size_t len, tlen;
	uint16_t type = 2; /* NS */

	if ((w = next_word(&rest, &len)) == NULL)
		return refuse(why, "bad value", "empty (NAME [TYPE])");
	if ((reason = name_parse(w, len, name)) != NULL)
		return refuse(why, "bad name", "'%.*s' (%s)",
		    (int)(len > 100 ? 100 : len), w, reason);
	if ((t = next_word(&rest, &tlen)) != NULL &&
	    qtype_parse(t, tlen, &type) != 0)
		return refuse(why, "bad type",
		    "'%.*s' (A, NS, AAAA, ... or "
		    "TYPEnnn with nnn in 1..65535)",
		    (int)(tlen > 100 ? 100 : tlen), t);
	if (t != NULL && next_word(&rest, &tlen) != NULL)
		return refuse(why, "bad value", "'%.100s' (NAME [TYPE])", val);
	memcpy(field(o, cfg), name, strlen(name) + 1);
	*(uint16_t *)((char *)cfg + o->aux) = type;
	return 0;
}

/*
 * keep-warm = NAME TYPE.  The type is required: a name kept warm for a
 * type nobody asks would only cost upstream queries.  Meta-types (OPT,
 * 128..255: TSIG, AXFR, ANY, ...; RFC 6895 section 3.1) have no cacheable
 * answer, so they are refused.
 */
static int
set_qname_list(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	struct config_name_type *list = field(o, cfg), nt;
	size_t *n = (size_t *)((char *)cfg + o->aux), len, tlen;
	const char *w, *t, *reason, *rest = val;
	char type[16];

	memset(&nt, 0, sizeof(nt));
	if ((w = next_word(&rest, &len)) == NULL)
		return refuse(why, "bad value", "empty (NAME TYPE)");
	if ((reason = name_parse(w, len, nt.name)) != NULL)
		return refuse(why, "bad name", "'%.*s' (%s)",
		    (int)(len > 100 ? 100 : len), w, reason);
	if ((t = next_word(&rest, &tlen)) == NULL)
		return refuse(why, "missing type",
		    "'%.100s' needs a TYPE "
		    "(NAME TYPE, such as A or AAAA)",
		    nt.name);
	if (qtype_parse(t, tlen, &nt.type) != 0)
		return refuse(why, "bad type",
		    "'%.*s' (A, NS, AAAA, ... or "
		    "TYPEnnn with nnn in 1..65535)",
		    (int)(tlen > 100 ? 100 : tlen), t);
	if (nt.type == 41 || (nt.type >= 128 && nt.type <= 255))
		return refuse(why, "bad type",
		    "'%.*s' (a meta-type, never "
		    "cached)",
		    (int)(tlen > 100 ? 100 : tlen), t);
	if (next_word(&rest, &tlen) != NULL)
		return refuse(why, "bad value", "'%.100s' (NAME TYPE)", val);
	for (size_t i = 0; i < *n; i++)
		if (list[i].type == nt.type &&
		    strcmp(list[i].name, nt.name) == 0) {
			qtype_text(nt.type, type, sizeof(type));
			return refuse(why, "duplicate value",
			    "'%.100s %s' is already listed", nt.name, type);
		}
	if (*n >= o->max_n)
		return refuse(why, "too many values", "at most %zu", o->max_n);
	list[(*n)++] = nt;
	return 0;
}

/* stale-on-negative = ZONE: one name a line, "." meaning every name. */
static int
set_name_list(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	char(*list)[256] = field(o, cfg), name[NAME_MAX_TEXT + 2];
	size_t *n = (size_t *)((char *)cfg + o->aux), len;
	const char *w, *reason, *rest = val;

	if ((w = next_word(&rest, &len)) == NULL)
		return refuse(why, "bad value", "empty (ZONE)");
	if ((reason = name_parse(w, len, name)) != NULL)
		return refuse(why, "bad zone", "'%.*s' (%s)",
		    (int)(len > 100 ? 100 : len), w, reason);
	if (next_word(&rest, &len) != NULL)
		return refuse(
		    why, "bad value", "'%.100s' (one ZONE a line)", val);
	for (size_t i = 0; i < *n; i++)
		if (strcmp(list[i], name) == 0)
			return refuse(why, "duplicate zone",
			    "'%.100s' is already listed", name);
	if (*n >= o->max_n)
		return refuse(
		    why, "too many values", "at most %zu zones", o->max_n);
	memcpy(list[(*n)++], name, strlen(name) + 1);
	return 0;
}

/* The usual spellings of a yes/no switch; printed back as yes or no. */
static int
set_yesno(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	static const char *const yes[] = {"yes", "true", "on"};
	static const char *const no[] = {"no", "false", "off"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(val, yes[i]) == 0) {
			*(bool *)field(o, cfg) = true;
			return 0;
		}
		if (strcasecmp(val, no[i]) == 0) {
			*(bool *)field(o, cfg) = false;
			return 0;
		}
	}
	return refuse(why, "bad value", "'%.100s' (yes or no)", val);
}

/*
 * A path that the config file could also carry, so that the print-back
 * loads again: no '#' (a comment there), no control characters (a line
 * break), no blanks at either end (trimmed there).
 */
static int
set_path(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	size_t len = strlen(val);

	if (len >= o->size)
		return refuse(why, "bad value", "path longer than %zu bytes",
		    o->size - 1);
	if (o->where & OPT_FILE) {
		for (size_t i = 0; i < len; i++)
			if (val[i] == '#' || iscntrl((unsigned char)val[i]))
				return refuse(why, "bad value",
				    "'%.100s' "
				    "(a path here cannot hold '#' or control "
				    "characters)",
				    val);
		if (len > 0 &&
		    (isspace((unsigned char)val[0]) ||
			isspace((unsigned char)val[len - 1])))
			return refuse(why, "bad value",
			    "'%.100s' (blanks at "
			    "either end of a path)",
			    val);
	}
	/*
	 * A file read when servers are set up: its error belongs here, with
	 * the line that names it, not in a log line after start.
	 */
	if (o->must_read && len > 0) {
		FILE *f = fopen(val, "r");
		if (f == NULL)
			return refuse(why, "bad value", "'%.100s': %s", val,
			    strerror(errno));
		fclose(f);
	}
	memcpy(field(o, cfg), val, len + 1);
	return 0;
}

static bool
opt_is_list(const struct opt *o)
{
	return o->type == OPT_ADDR_LIST || o->type == OPT_ZONE_LIST ||
	    o->type == OPT_QNAME_LIST || o->type == OPT_NAME_LIST ||
	    o->type == OPT_UPSTREAM_LIST || o->type == OPT_PREFIX_LIST;
}

static int
opt_set(
    const struct opt *o, struct config *cfg, const char *val, struct why *why)
{
	int lvl;

	switch (o->type) {
	case OPT_UINT:
		return set_uint(o, cfg, val, why);
	case OPT_SIZE:
		return set_size(o, cfg, val, why);
	case OPT_ADDR_LIST:
		return set_list(o, cfg, val, why);
	case OPT_UPSTREAM_LIST:
		return set_upstream_list(o, cfg, val, why);
	case OPT_PREFIX_LIST:
		return set_prefix_list(o, cfg, val, why);
	case OPT_ADDR:
		return set_addr(o, cfg, val, why);
	case OPT_ZONE_LIST:
		return set_zone(o, cfg, val, why);
	case OPT_CHOICE:
		return set_choice(o, cfg, val, why);
	case OPT_QNAME:
		return set_qname(o, cfg, val, why);
	case OPT_QNAME_LIST:
		return set_qname_list(o, cfg, val, why);
	case OPT_NAME_LIST:
		return set_name_list(o, cfg, val, why);
	case OPT_YESNO:
		return set_yesno(o, cfg, val, why);
	case OPT_LEVEL:
		if ((lvl = log_parse_level(val)) < 0)
			return refuse(why, "bad value",
			    "'%.100s' (error, warn, info or debug)", val);
		*(int *)field(o, cfg) = lvl;
		return 0;
	case OPT_PATH:
	case OPT_OPT_PATH:
		return set_path(o, cfg, val, why);
	case OPT_BOOL:
		*(bool *)field(o, cfg) = true;
		return 0;
	case OPT_HELP:
	case OPT_VERSION:
		break;
	}
	return 0;
}

/* Moves one option's value, list count or on-flag included, between structs. */
static void
opt_copy(const struct opt *o, struct config *dst, const struct config *src)
{
	if (o->size == 0)
		return;
	memcpy(field(o, dst), cfield(o, src), o->size);
	if (opt_is_list(o))
		memcpy((char *)dst + o->aux, (const char *)src + o->aux,
		    sizeof(size_t));
	else if (o->type == OPT_ADDR)
		memcpy((char *)dst + o->aux, (const char *)src + o->aux,
		    sizeof(bool));
	else if (o->type == OPT_QNAME)
		memcpy((char *)dst + o->aux, (const char *)src + o->aux,
		    sizeof(uint16_t));
}

/* Defaults go through the parser, so the table's text is the only copy. */
static int
set_defaults(struct loader *ld, struct config *cfg)
{
	struct why why;

	for (size_t i = 0; i < N_OPTS; i++) {
		/* item_line has room for LIST_MAX entries a list. */
		if (opt_is_list(&opts[i]) && opts[i].max_n > LIST_MAX)
			return fail(ld,
			    "internal: %s holds more than "
			    "LIST_MAX values",
			    opts[i].name);
		if (opts[i].def == NULL)
			continue;
		if (opt_set(&opts[i], cfg, opts[i].def, &why) != 0)
			return fail(ld, "internal: bad default for %s: %s",
			    opts[i].name, why.detail);
	}
	return 0;
}

static int
parse_argv(struct loader *ld, struct config *fl, int argc, char **argv,
    enum config_outcome *done)
{
	int rc;

	for (int i = 1; i < argc; i++) {
		rc = parse_flag(ld, fl, argc, argv, &i, done);
		if (rc != 0 || *done != CONFIG_RUN)
			return rc;
	}
	return 0;
}

static int
parse_flag(struct loader *ld, struct config *fl, int argc, char **argv, int *i,
    enum config_outcome *done)
{
	const char *arg = argv[*i], *name, *eq, *val;
	const struct opt *o;
	struct why why;
	size_t len;

	if (arg[0] != '-')
		return fail(ld,
		    "unexpected argument '%s' (options start "
		    "with --)",
		    arg);
	if (arg[1] != '-' || arg[2] == '\0')
		return fail(ld, "unknown option '%s'", arg);
	name = arg + 2;
	eq = strchr(name, '=');
	len = eq ? (size_t)(eq - name) : strlen(name);
	o = opt_find(name, len);
	if (o == NULL || !(o->where & OPT_FLAG))
		return fail(ld, "unknown option '--%.*s'", (int)len, name);

	if (o->type == OPT_BOOL || o->type == OPT_HELP ||
	    o->type == OPT_VERSION) {
		if (eq != NULL)
			return fail(ld, "--%s: takes no value", o->name);
		if (o->type == OPT_HELP) {
			config_usage(stdout);
			*done = CONFIG_EXIT_OK;
			return 0;
		}
		if (o->type == OPT_VERSION) {
			printf("%s\n", CONFIG_VERSION_TEXT);
			*done = CONFIG_EXIT_OK;
			return 0;
		}
		val = "";
	} else if (eq != NULL) {
		val = eq + 1;
	} else if (*i + 1 < argc) {
		val = argv[++*i];
	} else {
		return fail(ld, "--%s: missing value", o->name);
	}
	if (*val == '\0' && o->type != OPT_BOOL)
		return fail(ld, "--%s: empty value", o->name);
	if (opt_set(o, fl, val, &why) != 0)
		return fail(ld, "--%s: %s: %s", o->name, why.kind, why.detail);
	ld->flagged[o - opts] = true;
	return 0;
}

static char *
trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int
parse_line(struct loader *ld, struct config *cfg, unsigned lineno, char *line)
{
	const struct opt *o;
	char *s, *eq, *key, *val, *hash;
	struct why why;
	size_t idx;

	/* A comment starts at a '#' that begins the line or follows a blank:
	 * "tls://192.0.2.1#dns.example" holds one that does not. */
	for (hash = line; (hash = strchr(hash, '#')) != NULL; hash++)
		if (hash == line || isspace((unsigned char)hash[-1])) {
			*hash = '\0';
			break;
		}
	s = trim(line);
	if (*s == '\0')
		return 0;
	if ((eq = strchr(s, '=')) == NULL)
		return fail(ld,
		    "%s:%u: missing '=' in '%.100s' (expected "
		    "key = value)",
		    ld->file, lineno, s);
	*eq = '\0';
	key = trim(s);
	val = trim(eq + 1);
	if (*key == '\0')
		return fail(
		    ld, "%s:%u: missing key before '='", ld->file, lineno);
	o = opt_find(key, strlen(key));
	if (o == NULL)
		return fail(
		    ld, "%s:%u: unknown key '%.100s'", ld->file, lineno, key);
	if (!(o->where & OPT_FILE))
		return fail(ld,
		    "%s:%u: '%s' is a command-line flag, not a "
		    "config key",
		    ld->file, lineno, o->name);
	if (*val == '\0')
		return fail(
		    ld, "%s:%u: empty value for %s", ld->file, lineno, o->name);
	idx = (size_t)(o - opts);
	/* Only lists repeat; a second scalar is most likely an edit that
	 * forgot the first, and silently picking one hides that. */
	if (!opt_is_list(o) && ld->origin[idx] > 0)
		return fail(ld,
		    "%s:%u: duplicate key '%s' (first set on "
		    "line %d)",
		    ld->file, lineno, o->name, ld->origin[idx]);
	/* The file's list replaces the default list, then appends. */
	if (opt_is_list(o) && ld->origin[idx] == ORIGIN_DEFAULT)
		*(size_t *)((char *)cfg + o->aux) = 0;
	if (opt_set(o, cfg, val, &why) != 0)
		return fail(ld, "%s:%u: %s for %s: %s", ld->file, lineno,
		    why.kind, o->name, why.detail);
	ld->origin[idx] = (int)lineno;
	if (opt_is_list(o))
		ld->item_line[idx][*(size_t *)((char *)cfg + o->aux) - 1] =
		    (int)lineno;
	return 0;
}

static int
parse_file(struct loader *ld, struct config *cfg)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	unsigned lineno = 0;
	FILE *f;
	int rc = 0;

	if ((f = fopen(ld->file, "r")) == NULL)
		return fail(ld, "cannot open config file '%s': %s", ld->file,
		    strerror(errno));
	errno = 0;
	while ((n = getline(&line, &cap, f)) != -1) {
		lineno++;
		if (memchr(line, '\0', (size_t)n) != NULL) {
			rc = fail(
			    ld, "%s:%u: NUL byte in line", ld->file, lineno);
			goto out;
		}
		if ((rc = parse_line(ld, cfg, lineno, line)) != 0)
			goto out;
		errno = 0;
	}
	if (ferror(f))
		rc = fail(ld, "cannot read config file '%s': %s", ld->file,
		    strerror(errno ? errno : EIO));
out:
	free(line);
	fclose(f);
	return rc;
}

/*
 * "file:line: " or "--name: " for where an option (or one entry of a list)
 * was set, or "" for a default, so that messages about combinations point
 * at a line as the syntax errors do.
 */
static void
origin_prefix(
    const struct loader *ld, size_t idx, size_t item, char *buf, size_t len)
{
	int line = ld->origin[idx];

	if (line > 0 && item != NO_ITEM)
		line = ld->item_line[idx][item];
	if (line == ORIGIN_FLAG)
		snprintf(buf, len, "--%s: ", opts[idx].name);
	else if (line > 0)
		snprintf(buf, len, "%s:%d: ", ld->file, line);
	else
		buf[0] = '\0';
}

static int
finish(struct loader *ld, struct config *cfg)
{
	char where[1100];
	size_t idx;

	if (cfg->workers == 0)
		cfg->workers = usable_cpus();
	/* An address others can reach, answered for anyone, is an open
	 * resolver: the operator must say whom it serves. */
	for (size_t i = 0; i < cfg->n_listen && cfg->n_allow == 0; i++) {
		if (addr_is_loopback(&cfg->listen[i]))
			continue;
		origin_prefix(ld, opt_index("listen"), i, where, sizeof(where));
		return fail(ld,
		    "%slisten %s is not a loopback address: give allow = "
		    "PREFIX for the clients it serves (an open resolver "
		    "otherwise)",
		    where, cfg->listen[i].text);
	}
	if (cfg->min_ttl > cfg->max_ttl) {
		idx = opt_index("min-ttl");
		if (ld->origin[idx] == ORIGIN_DEFAULT)
			idx = opt_index("max-ttl");
		origin_prefix(ld, idx, NO_ITEM, where, sizeof(where));
		return fail(ld, "%smin-ttl (%u) is greater than max-ttl (%u)",
		    where, (unsigned)cfg->min_ttl, (unsigned)cfg->max_ttl);
	}
	if (cfg->failure_hold_min > cfg->failure_hold_max) {
		idx = opt_index("failure-hold-min");
		if (ld->origin[idx] == ORIGIN_DEFAULT)
			idx = opt_index("failure-hold-max");
		origin_prefix(ld, idx, NO_ITEM, where, sizeof(where));
		return fail(ld,
		    "%sfailure-hold-min (%u) is greater than "
		    "failure-hold-max (%u)",
		    where, (unsigned)cfg->failure_hold_min,
		    (unsigned)cfg->failure_hold_max);
	}
	if (cfg->metrics_on) {
		for (size_t i = 0; i < cfg->n_listen; i++)
			if (addr_same(&cfg->metrics, &cfg->listen[i])) {
				origin_prefix(ld, opt_index("metrics"), NO_ITEM,
				    where, sizeof(where));
				return fail(ld,
				    "%smetrics %s is also a listen "
				    "address",
				    where, cfg->metrics.text);
			}
	}
	if (check_zones(ld, cfg) != 0)
		return -EINVAL;
	return check_upstreams(ld, cfg);
}

/*
 * Reads dir/name's first line into the numbers a, b (b may be NULL: one
 * number): how many were read (cgroup v2's "max PERIOD" reads as 0: no
 * quota), -1 when the file is missing.
 */
static int
read_numbers(const char *dir, const char *name, long long *a, long long *b)
{
	char path[8300], line[128];
	int n = 0;
	FILE *f;

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >=
		(int)sizeof(path) ||
	    (f = fopen(path, "r")) == NULL)
		return -1;
	if (fgets(line, sizeof(line), f) != NULL)
		n = b == NULL ? sscanf(line, "%lld", a)
			      : sscanf(line, "%lld %lld", a, b);
	fclose(f);
	return n < 0 ? 0 : n;
}

/*
 * Whole CPUs (rounded up) that the quota files in dir allow, or 0 when they
 * set none: cgroup v2's cpu.max ("max PERIOD" or "QUOTA PERIOD"), else
 * cgroup v1's cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us.
 */
static unsigned long
quota_cpus_in(const char *dir)
{
	long long quota = -1, period = 0;
	int n = read_numbers(dir, "cpu.max", &quota, &period);

	if (n < 0) {
		if (read_numbers(dir, "cpu.cfs_quota_us", &quota, NULL) != 1 ||
		    read_numbers(dir, "cpu.cfs_period_us", &period, NULL) != 1)
			return 0;
	} else if (n != 2) {
		return 0;
	}
	if (quota <= 0 || period <= 0)
		return 0;
	return (unsigned long)((quota + period - 1) / period);
}

/*
 * The smallest quota from the cgroup directory mount+path up to mount
 * itself: a quota on a parent (a slice, a pod) binds its children too.
 */
static unsigned long
quota_cpus_walk(const char *mount, const char *cgpath)
{
	char dir[8192], rel[4096];
	unsigned long best = 0, q;
	char *slash;

	if (snprintf(rel, sizeof(rel), "%s", cgpath) >= (int)sizeof(rel))
		return 0;
	for (;;) {
		if (snprintf(dir, sizeof(dir), "%s%s", mount,
			strcmp(rel, "/") == 0 ? "" : rel) >= (int)sizeof(dir))
			return best;
		q = quota_cpus_in(dir);
		if (q > 0 && (best == 0 || q < best))
			best = q;
		slash = strrchr(rel, '/');
		if (slash == NULL || slash == rel)
			break;
		*slash = '\0';
	}
	/* Not yet at the mount itself (the path had one component). */
	if (strcmp(rel, "/") != 0) {
		q = quota_cpus_in(mount);
		if (q > 0 && (best == 0 || q < best))
			best = q;
	}
	return best;
}

/* Whether the comma-separated list has the item. */
static bool
list_has(const char *list, const char *item)
{
	size_t n = strlen(item);

	for (const char *p = list; p != NULL && *p != '\0';) {
		if (strncmp(p, item, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			return true;
		p = strchr(p, ',');
		if (p != NULL)
			p++;
	}
	return false;
}

unsigned long
config_cgroup_cpus(const char *proc_cgroup, const char *proc_mounts)
{
	char line[4096], v1[1024] = "", v2[1024] = "";
	char dev[256], dir[1024], type[64], mopts[1024];
	unsigned long best = 0, q;
	FILE *f = fopen(proc_mounts, "r");

	if (f == NULL)
		return 0;
	/* Where the v2 hierarchy and the v1 hierarchy with "cpu" are. */
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "%255s %1023s %63s %1023s", dev, dir, type,
			mopts) != 4)
			continue;
		if (strcmp(type, "cgroup2") == 0 && v2[0] == '\0')
			snprintf(v2, sizeof(v2), "%s", dir);
		else if (strcmp(type, "cgroup") == 0 && v1[0] == '\0' &&
		    list_has(mopts, "cpu"))
			snprintf(v1, sizeof(v1), "%s", dir);
	}
	fclose(f);
	f = fopen(proc_cgroup, "r");
	if (f == NULL)
		return 0;
	/* Lines are "ID:CONTROLLERS:PATH"; v2's has ID 0 and no controllers. */
	while (fgets(line, sizeof(line), f) != NULL) {
		char *c1 = strchr(line, ':'), *c2, *nl;
		const char *mount;

		if (c1 == NULL || (c2 = strchr(c1 + 1, ':')) == NULL)
			continue;
		*c2 = '\0';
		if ((nl = strchr(c2 + 1, '\n')) != NULL)
			*nl = '\0';
		if (c2[1] != '/')
			continue;
		if (c1[1] == '\0')
			mount = v2;
		else if (list_has(c1 + 1, "cpu"))
			mount = v1;
		else
			continue;
		if (mount[0] == '\0')
			continue;
		q = quota_cpus_walk(mount, c2 + 1);
		if (q > 0 && (best == 0 || q < best))
			best = q;
	}
	fclose(f);
	return best;
}

/*
 * The CPUs this process may run on (its affinity mask), bounded by its
 * cgroup's CPU quota: a pod limited to one CPU on a 64-core node must not
 * start 64 threads that the quota then throttles.
 */
static unsigned
usable_cpus(void)
{
	cpu_set_t set;
	long n = 0;
	unsigned long q;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	if (n < 1)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	q = config_cgroup_cpus("/proc/self/cgroup", "/proc/self/mounts");
	if (q >= 1 && (long)q < n)
		n = (long)q;
	if (n < 1)
		n = 1;
	return n > CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS : (unsigned)n;
}

/* A zone's server on a listen address would loop, as an upstream would. */
static int
check_zones(struct loader *ld, const struct config *cfg)
{
	const struct config_zone *z;
	char where[1100];

	for (size_t i = 0; i < cfg->n_zones; i++) {
		z = &cfg->zones[i];
		for (size_t j = 0; j < z->n_upstream; j++) {
			if (!addr_is_own(cfg, &z->upstream[j].addr))
				continue;
			origin_prefix(ld, opt_index("forward-zone"), i, where,
			    sizeof(where));
			return fail(ld,
			    "%sforward-zone %s: server %s is one of "
			    "stubborn's own listen addresses; it would query "
			    "itself",
			    where, z->name, z->upstream[j].text);
		}
	}
	return 0;
}

static int
check_upstreams(struct loader *ld, struct config *cfg)
{
	char where[1100];

	if (cfg->n_upstream == 0)
		return load_resolv(ld, cfg);
	/* Configured on purpose, so a loop is a mistake to report rather
	 * than an entry to drop quietly. */
	for (size_t i = 0; i < cfg->n_upstream; i++) {
		if (!addr_is_own(cfg, &cfg->upstream[i].addr))
			continue;
		origin_prefix(
		    ld, opt_index("upstream"), i, where, sizeof(where));
		return fail(ld,
		    "%supstream %s is one of stubborn's own listen "
		    "addresses; it would query itself",
		    where, cfg->upstream[i].text);
	}
	return 0;
}

/*
 * Parses a resolv.conf line the way glibc does: "nameserver" then one
 * address, no port; anything after it on the line is ignored.  Returns 1
 * and fills *a for a usable nameserver line, else 0.
 */
static int
resolv_line(char *line, struct config_addr *a)
{
	char *p = line, *tok;

	while (*p == ' ' || *p == '\t')
		p++;
	if (strncmp(p, "nameserver", 10) != 0 ||
	    (p[10] != ' ' && p[10] != '\t'))
		return 0;
	p += 10;
	while (*p == ' ' || *p == '\t')
		p++;
	tok = p;
	p += strcspn(p, " \t\r\n#;");
	*p = '\0';
	/* resolv.conf has no ports: "1.2.3.4:53" and "[::1]:53" are not
	 * addresses to glibc, so they are not to us either. */
	if (*tok == '\0' || strchr(tok, '[') != NULL)
		return 0;
	if (config_parse_addr(tok, 53, a) != 0)
		return 0;
	if (a->ss.ss_family == AF_INET && strchr(tok, ':') != NULL)
		return 0;
	return 1;
}

/*
 * Adds the nameservers of path that are not our own addresses.  Returns
 * how many nameserver lines it found, or -errno when it cannot be read.
 */
static int
read_resolv(const char *path, struct config *cfg)
{
	struct config_addr a;
	struct config_upstream u;
	char *line = NULL;
	size_t cap = 0;
	int found = 0;
	bool dup;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL)
		return -errno;
	while (getline(&line, &cap, f) != -1) {
		if (!resolv_line(line, &a))
			continue;
		found++;
		if (addr_is_own(cfg, &a))
			continue;
		upstream_plain(&u, &a);
		dup = false;
		for (size_t i = 0; i < cfg->n_upstream; i++)
			dup = dup || upstream_same(&cfg->upstream[i], &u);
		if (!dup && cfg->n_upstream < CONFIG_MAX_UPSTREAM)
			cfg->upstream[cfg->n_upstream++] = u;
	}
	free(line);
	fclose(f);
	return found;
}

static int
load_resolv(struct loader *ld, struct config *cfg)
{
	int found = read_resolv(cfg->resolv_conf, cfg);

	if (found < 0)
		return fail(ld,
		    "no upstream: cannot read %s: %s; give "
		    "--upstream",
		    cfg->resolv_conf, strerror(-found));
	if (cfg->n_upstream == 0 && found == 0)
		return fail(ld,
		    "no upstream: %s lists no nameserver; give "
		    "--upstream",
		    cfg->resolv_conf);
	/*
	 * A systemd-resolved host names only its stub, 127.0.0.53, which is
	 * us once DNSStubListener=no: resolved keeps the real servers in its
	 * own file.  Only for the default file: one named on purpose is used
	 * as it is.
	 */
	if (cfg->n_upstream == 0 &&
	    ld->origin[opt_index("resolv-conf")] == ORIGIN_DEFAULT &&
	    read_resolv(CONFIG_RESOLVED_CONF, cfg) > 0 && cfg->n_upstream > 0) {
		snprintf(cfg->resolv_conf, sizeof(cfg->resolv_conf), "%s",
		    CONFIG_RESOLVED_CONF);
		cfg->resolv_fallback = true;
	}
	if (cfg->n_upstream == 0)
		return fail(ld,
		    "no upstream: %s lists only stubborn's own "
		    "addresses; give --upstream",
		    cfg->resolv_conf);
	cfg->upstream_from_resolv = true;
	return 0;
}

enum config_outcome
config_load(struct config *cfg, int argc, char **argv, char *err, size_t errlen)
{
	struct config fl; /* what the flags said, applied over the file */
	enum config_outcome done = CONFIG_RUN;
	struct loader ld;
	char dummy[1];

	memset(&ld, 0, sizeof(ld));
	ld.err = err != NULL && errlen > 0 ? err : dummy;
	ld.errlen = err != NULL && errlen > 0 ? errlen : sizeof(dummy);
	ld.err[0] = '\0';
	memset(cfg, 0, sizeof(*cfg));
	memset(&fl, 0, sizeof(fl));

	if (set_defaults(&ld, cfg) != 0)
		return CONFIG_EXIT_BAD;
	/* Flags first: --help must work with a broken file, and --config
	 * names the file to read. */
	if (parse_argv(&ld, &fl, argc, argv, &done) != 0)
		return CONFIG_EXIT_BAD;
	if (done != CONFIG_RUN)
		return done;
	if (fl.config_file[0] != '\0') {
		memcpy(
		    cfg->config_file, fl.config_file, sizeof(fl.config_file));
		ld.file = cfg->config_file;
		if (parse_file(&ld, cfg) != 0)
			return CONFIG_EXIT_BAD;
	}
	/* Then flags again, over the file, whatever their order in argv. */
	for (size_t i = 0; i < N_OPTS; i++) {
		if (!ld.flagged[i])
			continue;
		opt_copy(&opts[i], cfg, &fl);
		ld.origin[i] = ORIGIN_FLAG;
	}
	if (finish(&ld, cfg) != 0)
		return CONFIG_EXIT_BAD;
	return CONFIG_RUN;
}

void
config_print(const struct config *cfg, FILE *f)
{
	const struct config_addr *list;
	const struct config_upstream *ups;
	const struct config_prefix *prefixes;
	const struct config_zone *zones;
	const struct config_name_type *nts;
	const char(*names)[256];
	const struct opt *o;
	char type[16];
	size_t n;

	for (size_t i = 0; i < N_OPTS; i++) {
		o = &opts[i];
		if (!(o->where & OPT_FILE))
			continue;
		switch (o->type) {
		case OPT_UINT:
		case OPT_SIZE:
			fprintf(f, "%s = %llu\n", o->name,
			    (unsigned long long)uint_get(o, cfg));
			break;
		case OPT_ADDR_LIST:
			list = cfield(o, cfg);
			n = *(const size_t *)((const char *)cfg + o->aux);
			for (size_t j = 0; j < n; j++)
				fprintf(f, "%s = %s\n", o->name, list[j].text);
			break;
		case OPT_UPSTREAM_LIST:
			ups = cfield(o, cfg);
			n = *(const size_t *)((const char *)cfg + o->aux);
			if (cfg->upstream_from_resolv)
				fprintf(f, "# upstream: from %s\n",
				    cfg->resolv_conf);
			for (size_t j = 0; j < n; j++)
				fprintf(f, "%s = %s\n", o->name, ups[j].text);
			break;
		case OPT_PREFIX_LIST:
			prefixes = cfield(o, cfg);
			n = *(const size_t *)((const char *)cfg + o->aux);
			for (size_t j = 0; j < n; j++)
				fprintf(
				    f, "%s = %s\n", o->name, prefixes[j].text);
			break;
		case OPT_ADDR:
			fprintf(f, "%s = %s\n", o->name,
			    *(const bool *)((const char *)cfg + o->aux)
				? ((const struct config_addr *)cfield(o, cfg))
				      ->text
				: "off");
			break;
		case OPT_ZONE_LIST:
			zones = cfield(o, cfg);
			n = *(const size_t *)((const char *)cfg + o->aux);
			for (size_t j = 0; j < n; j++) {
				fprintf(f, "%s = %s", o->name, zones[j].name);
				for (size_t k = 0; k < zones[j].n_upstream; k++)
					fprintf(f, " %s",
					    zones[j].upstream[k].text);
				fputc('\n', f);
			}
			break;
		case OPT_LEVEL:
			fprintf(f, "%s = %s\n", o->name,
			    log_level_name(*(const int *)cfield(o, cfg)));
			break;
		case OPT_CHOICE:
			fprintf(f, "%s = %s\n", o->name,
			    o->choices[*(const int *)cfield(o, cfg)]);
			break;
		case OPT_QNAME:
			qtype_text(
			    *(const uint16_t *)((const char *)cfg + o->aux),
			    type, sizeof(type));
			fprintf(f, "%s = %s %s\n", o->name,
			    (const char *)cfield(o, cfg), type);
			break;
		case OPT_QNAME_LIST:
			nts = cfield(o, cfg);
			n = *(const size_t *)((const char *)cfg + o->aux);
			for (size_t j = 0; j < n; j++) {
				qtype_text(nts[j].type, type, sizeof(type));
				fprintf(f, "%s = %s %s\n", o->name, nts[j].name,
				    type);
			}
			break;
		case OPT_NAME_LIST:
			names = cfield(o, cfg);
			n = *(const size_t *)((const char *)cfg + o->aux);
			for (size_t j = 0; j < n; j++)
				fprintf(f, "%s = %s\n", o->name, names[j]);
			break;
		case OPT_YESNO:
			fprintf(f, "%s = %s\n", o->name,
			    *(const bool *)cfield(o, cfg) ? "yes" : "no");
			break;
		case OPT_OPT_PATH:
			/* "" is no value to write; a comment says so. */
			if (*(const char *)cfield(o, cfg) == '\0') {
				fprintf(f, "# %s: %s\n", o->name,
				    o->empty ? o->empty : "none");
				break;
			}
			/* fall through */
		case OPT_PATH:
			fprintf(f, "%s = %s\n", o->name,
			    (const char *)cfield(o, cfg));
			break;
		case OPT_BOOL:
		case OPT_HELP:
		case OPT_VERSION:
			break;
		}
	}
}

static void
usage_line(const struct opt *o, FILE *f)
{
	char flag[48], lo[24], hi[24];
	const char *unit = o->unit ? o->unit : "";

	snprintf(flag, sizeof(flag), "--%s%s%s", o->name, o->metavar ? " " : "",
	    o->metavar ? o->metavar : "");
	fprintf(f, "  %-32s %s", flag, o->help);
	switch (o->type) {
	case OPT_UINT:
		fprintf(f, " (%llu..%llu%s%s; default %s)",
		    (unsigned long long)o->min, (unsigned long long)o->max,
		    *unit ? " " : "", unit, o->def);
		break;
	case OPT_SIZE:
		size_text(o->min, lo, sizeof(lo));
		size_text(o->max, hi, sizeof(hi));
		fprintf(f, " (%s..%s; default %s)", lo, hi, o->def);
		break;
	default:
		if (o->def != NULL)
			fprintf(f, " (default %s)", o->def);
		break;
	}
	fputc('\n', f);
}

void
config_usage(FILE *f)
{
	fprintf(f, "usage: stubborn [options]\n");
	for (size_t i = 0; i < N_OPTS; i++)
		usage_line(&opts[i], f);
	fprintf(f,
	    "Flags take --name VALUE or --name=VALUE.  In the config "
	    "file every option\nexcept --config, --check-config, --help and "
	    "--version is a line \"name = value\";\nlist options repeat, and "
	    "flags override the file.\n");
}
