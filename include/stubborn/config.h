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

struct config_addr {
	struct sockaddr_storage ss;  /* AF_INET or AF_INET6, port set */
	socklen_t len;
	char text[64];               /* "127.0.0.1:53" or "[::1]:53" */
};

struct config {
	char config_file[1024];      /* "" when none */
	struct config_addr listen[CONFIG_MAX_LISTEN];
	size_t n_listen;
	struct config_addr upstream[CONFIG_MAX_UPSTREAM];
	size_t n_upstream;
	bool upstream_from_resolv;   /* upstreams came from resolv_conf */
	char resolv_conf[1024];
	unsigned workers;            /* >= 1 after config_load */
	bool metrics_on;
	struct config_addr metrics;
	uint64_t cache_size;         /* bytes */
	int log_level;               /* enum log_level */
	uint32_t min_ttl;
	uint32_t max_ttl;
	uint32_t max_negative_ttl;
	uint16_t edns_buffer_size;
	uint32_t upstream_timeout_ms;
	uint32_t tcp_idle_timeout_ms;
	uint32_t tcp_max_connections;
	uint32_t shutdown_timeout_ms;
	bool check_config;
};

/* What main should do after config_load(). */
enum config_outcome {
	CONFIG_RUN = 0,       /* start serving (or check: see check_config) */
	CONFIG_EXIT_OK,       /* --help or --version was printed to stdout */
	CONFIG_EXIT_BAD,      /* err holds "file:line: problem" or "--flag: ..." */
};

/*
 * Fills *cfg from defaults, then the file named by --config (if any), then
 * the remaining flags.  When no upstream is configured, reads nameserver
 * lines from resolv_conf (default /etc/resolv.conf) on port 53, minus the
 * listen addresses; none left is an error.  err (errlen bytes) receives one
 * line naming the problem.  argv is not modified.
 */
enum config_outcome
config_load(struct config *cfg, int argc, char **argv, char *err, size_t errlen);

/*
 * Parses "ADDR", "ADDR:PORT", "[V6]:PORT" or a bare IPv6 address into *out,
 * using default_port when none is given.  Returns 0 or -EINVAL.
 */
int
config_parse_addr(const char *s, uint16_t default_port, struct config_addr *out);

/*
 * Parses a byte count with an optional k/M/G suffix (powers of 1024).
 * Returns 0 or -EINVAL.
 */
int
config_parse_size(const char *s, uint64_t *out);

/* Writes the effective configuration in config-file syntax, one key a line. */
void
config_print(const struct config *cfg, FILE *f);

/* Writes the --help text (every option, its default and meaning). */
void
config_usage(FILE *f);

#endif
