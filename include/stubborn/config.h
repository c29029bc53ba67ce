/*
 * config: the command line and the config file become one immutable,
 * validated struct config.  One table row per option drives parsing of both,
 * --help, defaults and the print-back of --check-config.
 *
 * File syntax: one "key = value" per line, '#' starts a comment, keys are the
 * long flag names without "--", list-valued keys repeat.  Flags override the
 * file; a list given on the command line replaces the file's list.
 */
#ifndef STUBBORN_CONFIG_H
#define STUBBORN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define CONFIG_MAX_LISTEN 16
#define CONFIG_MAX_UPSTREAM 16
#define CONFIG_MAX_ZONES 32
#define CONFIG_MAX_KEEP_WARM 64
#define CONFIG_MAX_ALLOW 64

struct config_addr {
	struct sockaddr_storage ss; /* AF_INET or AF_INET6, port set */
	socklen_t len;
	char text[64]; /* "127.0.0.1:53" or "[::1]:53" */
};

/* How an upstream is reached. */
#define CONFIG_PROTO_UDP 0      /* ADDR[:PORT]: UDP, TCP when truncated */
#define CONFIG_PROTO_TCP 1      /* tcp://ADDR[:PORT]: TCP only */
#define CONFIG_PROTO_TLS 2      /* tls://ADDR[:PORT]#NAME (RFC 7858) */
#define CONFIG_PROTO_DNSCRYPT 3 /* sdns://... (DNSCrypt v2 stamp) */

/* upstream = ..., and each server of a forward-zone. */
struct config_upstream {
	struct config_addr addr; /* where queries go */
	int proto;               /* CONFIG_PROTO_* */
	/* TLS: the authentication name (SNI, certificate check); DNSCrypt:
	 * the provider name; "" otherwise.  No trailing dot. */
	char name[256];
	uint8_t pk[32]; /* DNSCrypt: the provider's Ed25519 public key */
	uint64_t props; /* DNSCrypt: the stamp's properties */
	char text[400]; /* as written back: "192.0.2.1:53",
			   "tls://192.0.2.1:853#dns.example", "sdns://..." */
};

/* forward-zone = ZONE SERVER [SERVER...] */
struct config_zone {
	char name[256]; /* lower-case, trailing dot: "cluster.local." */
	struct config_upstream upstream[CONFIG_MAX_UPSTREAM];
	size_t n_upstream;
};

/* allow = PREFIX: an address with an optional prefix length. */
struct config_prefix {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network order, bits past the prefix zero */
	unsigned bits;    /* 0..32 or 0..128 */
	char text[64];    /* "10.0.0.0/8", "2001:db8::/32" */
};

/* keep-warm = NAME TYPE */
struct config_name_type {
	char name[256]; /* lower-case, trailing dot */
	uint16_t type;  /* numeric qtype */
};

/* What an over-limit client gets. */
#define CONFIG_RL_REFUSE 0
#define CONFIG_RL_DROP 1
#define CONFIG_RL_TRUNCATE 2

/* Upstream selection policies; values match enum upstream_policy. */
#define CONFIG_POLICY_FASTEST 0
#define CONFIG_POLICY_SEQUENTIAL 1
#define CONFIG_POLICY_ROUND_ROBIN 2
#define CONFIG_POLICY_RANDOM 3

struct config {
	char config_file[1024]; /* "" when none */
	struct config_addr listen[CONFIG_MAX_LISTEN];
	size_t n_listen;
	struct config_upstream upstream[CONFIG_MAX_UPSTREAM];
	size_t n_upstream;
	bool upstream_from_resolv; /* upstreams came from resolv_conf */
	/* resolv_conf named only our own addresses and upstreams came from
	 * CONFIG_RESOLVED_CONF instead (a systemd-resolved host) */
	bool resolv_fallback;
	char resolv_conf[1024];
	unsigned workers; /* >= 1 after config_load */
	bool metrics_on;
	struct config_addr metrics;
	uint64_t cache_size; /* bytes */
	int log_level;       /* enum log_level */
	uint32_t min_ttl;
	uint32_t max_ttl;
	uint32_t max_negative_ttl;
	uint16_t edns_buffer_size;
	uint32_t upstream_timeout_ms;
	uint32_t tcp_idle_timeout_ms;
	uint32_t tcp_max_connections;
	uint32_t tcp_max_per_client; /* connections from one address */
	bool upstream_0x20;          /* random qname case upstream */
	uint32_t shutdown_timeout_ms;
	struct config_zone zones[CONFIG_MAX_ZONES];
	size_t n_zones;
	int policy;                  /* CONFIG_POLICY_* */
	char health_check_name[256]; /* presentation form, trailing dot */
	uint16_t health_check_type;  /* numeric qtype */
	uint32_t retry_budget;       /* percent of queries, 0..100 */
	uint32_t circuit_failures;   /* consecutive failures that open */
	uint32_t probe_max_interval_ms;
	/* serve-stale and the cache across restarts */
	bool serve_stale;
	uint32_t stale_ttl;     /* s, TTL of stale answers */
	uint32_t stale_max_age; /* s, keep expired entries this long */
	uint32_t stale_recheck; /* s, hold a name after a failed refresh */
	uint32_t stale_client_timeout_ms; /* answer stale after this wait */
	uint32_t refresh_ahead;           /* percent of TTL left that triggers a
					     background refresh; 0 = off */
	struct config_name_type keep_warm[CONFIG_MAX_KEEP_WARM];
	size_t n_keep_warm;
	char stale_on_negative[CONFIG_MAX_ZONES][256]; /* zones, trailing dot */
	size_t n_stale_on_negative;
	uint32_t stale_on_negative_window; /* s */
	char snapshot[1024];               /* "" = no snapshot */
	uint32_t snapshot_interval;        /* s */
	/* retry-storm dampening */
	uint32_t client_qps;        /* per client prefix, queries needing
				       upstream; burst 2x */
	uint32_t client_qps_cookie; /* the same for clients with a valid
				       server cookie */
	uint32_t cache_qps;         /* per client prefix, cache hits; 0 = off */
	uint32_t client_prefix_v4;  /* bits */
	uint32_t client_prefix_v6;  /* bits */
	int ratelimit_action;       /* CONFIG_RL_* */
	uint32_t ratelimit_clients; /* client prefixes tracked (memory bound) */
	uint32_t upstream_qps;      /* per upstream server */
	uint32_t upstream_max_outstanding; /* per upstream server */
	uint32_t max_waiters;      /* clients waiting on one in-flight query */
	uint32_t failure_hold_min; /* s, RFC 9520 hold after a failure */
	uint32_t failure_hold_max; /* s */
	/* lifecycle and deployment */
	char control_socket[108]; /* Unix socket path; "" = none */
	char user[64];            /* "" = stubborn if it exists, else nobody */
	struct config_prefix allow[CONFIG_MAX_ALLOW];
	size_t n_allow;
	bool ratelimit_loopback; /* loopback clients get per-client limits */
	bool log_queries;        /* one logfmt line per reply */
	uint32_t log_queries_sample; /* percent of replies logged */
	bool trust_upstream_ad;      /* pass the upstream's AD bit on */
	/* encrypted upstreams */
	char tls_ca_file[1024];         /* "" = the system's trust store */
	uint32_t dnscrypt_key_lifetime; /* s; 0 = a fresh key per query */
	bool check_config;
};

/* Where systemd-resolved lists the real upstreams. */
#define CONFIG_RESOLVED_CONF "/run/systemd/resolve/resolv.conf"

/* What main should do after config_load(). */
enum config_outcome {
	CONFIG_RUN = 0,  /* start serving (or check: see check_config) */
	CONFIG_EXIT_OK,  /* --help or --version was printed to stdout */
	CONFIG_EXIT_BAD, /* err holds "file:line: problem" or "--flag: ..." */
};

/*
 * Fills *cfg from defaults, then the file named by --config (if any), then
 * the remaining flags.  When no upstream is configured, reads nameserver
 * lines from resolv_conf (default /etc/resolv.conf) on port 53, minus the
 * listen addresses; none left is an error.  err (errlen bytes) receives one
 * line naming the problem.  argv is not modified.
 */
enum config_outcome config_load(
    struct config *cfg, int argc, char **argv, char *err, size_t errlen);

/*
 * Parses "ADDR", "ADDR:PORT", "[V6]:PORT" or a bare IPv6 address into *out,
 * using default_port when none is given.  Returns 0 or -EINVAL.
 */
int config_parse_addr(
    const char *s, uint16_t default_port, struct config_addr *out);

/*
 * Parses an upstream server: "ADDR[:PORT]" (port 53), "tcp://ADDR[:PORT]"
 * (53), "tls://ADDR[:PORT]#NAME" (853) or a DNSCrypt stamp "sdns://...".
 * Returns 0, or -EINVAL with a short reason in why (whylen bytes).
 */
int config_parse_upstream(
    const char *s, struct config_upstream *out, char *why, size_t whylen);

/*
 * Parses "ADDR" or "ADDR/BITS" (IPv4 or IPv6) into *out.  Returns 0 or
 * -EINVAL (bad address, bits beyond the family's length, host bits set).
 */
int config_parse_prefix(const char *s, struct config_prefix *out);

/* True when addr (AF_INET or AF_INET6) lies within p. */
bool config_prefix_match(
    const struct config_prefix *p, const struct sockaddr *addr);

/* "AAAA", "ns", "TYPE65" (RFC 3597) into a qtype.  Returns 0 or -EINVAL. */
int config_parse_qtype(const char *s, uint16_t *out);

/* A qtype's mnemonic, or TYPEnnn, into buf. */
void config_qtype_text(uint16_t type, char *buf, size_t len);

/* True for 0.0.0.0 and [::]. */
bool config_addr_is_wildcard(const struct config_addr *a);

/* "0.2.0": the version --version prints without its name. */
const char *config_version(void);

/*
 * The CPU quota of the cgroups this process is in, as whole CPUs rounded
 * up, or 0 when none is set.  proc_cgroup is in /proc/self/cgroup's
 * format, proc_mounts in /proc/self/mounts's (where the hierarchies are).
 * cgroup v2 (cpu.max) and v1 (cpu.cfs_quota_us); the smallest along each
 * path up to its hierarchy's root counts.
 */
unsigned long config_cgroup_cpus(
    const char *proc_cgroup, const char *proc_mounts);

/* True for 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8. */
bool config_addr_is_loopback(const struct sockaddr *addr);

/*
 * Parses a byte count with an optional k/M/G suffix (powers of 1024).
 * Returns 0 or -EINVAL.
 */
int config_parse_size(const char *s, uint64_t *out);

/* Writes the effective configuration in config-file syntax, one key a line. */
void config_print(const struct config *cfg, FILE *f);

/* Writes the --help text (every option, its default and meaning). */
void config_usage(FILE *f);

#endif
