/*
 * stubborn-ctl: the operator's client for the running daemon's control
 * socket (control-socket).  It sends one request line and prints the
 * answer: text as the daemon formats it, or with --json the daemon's one
 * JSON object.
 *
 *   stubborn-ctl [-s SOCKET | -c CONFIG] [--json] [-t SECONDS] COMMAND [ARG...]
 *
 * Exit status: 0 the daemon did it, 1 the daemon answered with an error,
 * 2 bad usage, 3 no daemon reached (no socket, no permission, no complete
 * answer in time).
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/socket.h>
#include <sys/un.h>

#include "stubborn/control.h"

#define EXIT_DAEMON_ERROR 1
#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3
#define TIMEOUT_S 10
/* A reload reads the config and resolv-conf and builds new pools. */
#define RELOAD_TIMEOUT_S 30
/* strlen("{\"ok\":true"): the daemon's JSON starts so, or with false. */
#define JSON_DECIDES 10

struct command {
	const char *name;
	int min, max; /* arguments */
	const char *args;
	const char *help;
};

/* What an operator may ask (the daemon also knows "handover", which is
 * for a successor daemon only). */
static const struct command commands[] = {
    {"flush", 1, 2, "NAME [TYPE]",
	"remove NAME (one TYPE, or every type) from the cache"},
    {"flush-zone", 1, 1, "ZONE", "remove every name at or below ZONE"},
    {"flush-negative", 0, 0, "", "remove NXDOMAIN, NODATA and held failures"},
    {"flush-all", 0, 0, "", "empty the cache"},
    {"dump", 0, 1, "[ZONE]",
	"list cached entries (at or below ZONE) with their records"},
    {"upstreams", 0, 0, "",
	"per zone and server: transport, circuit, RTT, failures"},
    {"stats", 0, 0, "", "the counters of /metrics"},
    {"reload", 0, 0, "", "reload the config file and say whether it loaded"},
    {"log-level", 1, 1, "LEVEL",
	"error, warn, info or debug, until the next reload"},
    {"stop", 0, 0, "", "drain and exit, as on SIGTERM"},
};

static void usage(FILE *f);
static const struct command *find_command(const char *name);
static int build_request(
    char *req, size_t cap, bool json, int argc, char **argv);
static int socket_from_config(const char *file, char *out, size_t cap);
static int connect_socket(const char *path, int timeout_s);
static int decide(const char *first, size_t flen, bool json, FILE **to);
static int read_answer(int fd, bool json, int timeout_s);
static long ms_left(const struct timespec *deadline);

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: stubborn-ctl [-s SOCKET | -c CONFIG] [--json] "
	    "[-t SECONDS] COMMAND [ARG...]\n"
	    "\n"
	    "Talks to a running stubborn over its control socket.\n"
	    "\n"
	    "options:\n"
	    "  -s, --socket SOCKET   the control socket (default %s)\n"
	    "  -c, --config CONFIG   use the control-socket of this config "
	    "file\n"
	    "  -j, --json            answer as one JSON object\n"
	    "  -t, --timeout SECONDS give up after this long (default %d, "
	    "reload %d)\n"
	    "  -h, --help            this text\n"
	    "\n"
	    "commands:\n",
	    CONTROL_SOCKET_DEFAULT, TIMEOUT_S, RELOAD_TIMEOUT_S);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		char left[40];
		snprintf(left, sizeof(left), "%s %s", commands[i].name,
		    commands[i].args);
		fprintf(f, "  %-24s %s\n", left, commands[i].help);
	}
	fprintf(f,
	    "\n"
	    "exit status: 0 done, 1 the daemon answered with an error, 2 bad "
	    "usage,\n"
	    "3 no daemon reached (no socket, no permission, no answer in "
	    "time)\n");
}

static const struct command *
find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/*
 * The request line for the command in argv[0..argc): words without blanks
 * or control bytes, the whole line within CONTROL_LINE_MAX.  Returns 0 or
 * -EINVAL with a message on stderr.
 */
static int
build_request(char *req, size_t cap, bool json, int argc, char **argv)
{
	const struct command *cmd = find_command(argv[0]);
	size_t o = 0;

	if (cmd == NULL) {
		fprintf(
		    stderr, "stubborn-ctl: unknown command '%s'\n", argv[0]);
		return -EINVAL;
	}
	if (argc - 1 < cmd->min || argc - 1 > cmd->max) {
		fprintf(stderr, "stubborn-ctl: usage: %s %s\n", cmd->name,
		    cmd->args);
		return -EINVAL;
	}
	if (json)
		o += (size_t)snprintf(req, cap, "json ");
	for (int i = 0; i < argc; i++) {
		int n;
		for (const char *p = argv[i]; *p != '\0'; p++) {
			if ((unsigned char)*p <= ' ' || *p == 0x7f) {
				fprintf(stderr,
				    "stubborn-ctl: '%s': blanks and control "
				    "characters cannot be sent\n",
				    argv[i]);
				return -EINVAL;
			}
		}
		n = snprintf(req + o, cap - o, "%s%s", i ? " " : "", argv[i]);
		if (argv[i][0] == '\0' || n < 0 || (size_t)n >= cap - o) {
			fprintf(stderr,
			    "stubborn-ctl: the request would be empty or "
			    "longer than %d bytes\n",
			    CONTROL_LINE_MAX);
			return -EINVAL;
		}
		o += (size_t)n;
	}
	if (o > CONTROL_LINE_MAX) {
		fprintf(stderr,
		    "stubborn-ctl: the request would be longer than %d bytes\n",
		    CONTROL_LINE_MAX);
		return -EINVAL;
	}
	req[o++] = '\n';
	req[o] = '\0';
	return 0;
}

/*
 * The control-socket of a config file (key = value lines, '#' starting a
 * comment at the start of a line or after a blank).  Returns 0, -ENOENT
 * when the file has none, or a negative errno when it cannot be read.
 */
static int
socket_from_config(const char *file, char *out, size_t cap)
{
	FILE *f = fopen(file, "r");
	char line[4096];
	int rc = -ENOENT;

	if (f == NULL)
		return -errno;
	while (fgets(line, sizeof(line), f) != NULL) {
		char *p = line, *key, *val, *end;
		for (char *h = line; (h = strchr(h, '#')) != NULL; h++)
			if (h == line || h[-1] == ' ' || h[-1] == '\t') {
				*h = '\0';
				break;
			}
		p += strspn(p, " \t");
		key = p;
		if ((val = strchr(p, '=')) == NULL)
			continue;
		*val++ = '\0';
		for (end = val - 2; end >= key && (*end == ' ' || *end == '\t');
		     end--)
			*end = '\0';
		if (strcmp(key, "control-socket") != 0)
			continue;
		val += strspn(val, " \t");
		end = val + strlen(val);
		while (end > val &&
		    (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' ||
			end[-1] == '\r'))
			*--end = '\0';
		/* The last one wins, as in the daemon. */
		snprintf(out, cap, "%s", val);
		rc = val[0] != '\0' ? 0 : -ENOENT;
	}
	fclose(f);
	return rc;
}

static int
connect_socket(const char *path, int timeout_s)
{
	struct sockaddr_un sun;
	struct timeval tv = {timeout_s, 0};
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "stubborn-ctl: %s: path too long\n", path);
		return -ENAMETOOLONG;
	}
	memcpy(sun.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "stubborn-ctl: socket: %s\n", strerror(errno));
		return -errno;
	}
	/* A daemon whose backlog is full must not keep us forever. */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
		return fd;
	int e = errno;
	close(fd);
	if (e == ENOENT || e == ECONNREFUSED)
		fprintf(stderr,
		    "stubborn-ctl: cannot connect to %s: %s (is stubborn "
		    "running with control-socket %s?)\n",
		    path, strerror(e), path);
	else if (e == EACCES || e == EPERM)
		fprintf(stderr,
		    "stubborn-ctl: cannot connect to %s: %s (the socket "
		    "admits root, stubborn's user and its group)\n",
		    path, strerror(e));
	else
		fprintf(stderr, "stubborn-ctl: cannot connect to %s: %s\n",
		    path, strerror(e));
	return -e;
}

static long
ms_left(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (deadline->tv_sec - now.tv_sec) * 1000 +
	    (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

/*
 * Where the answer goes, from its first line: an error to stderr, a bare
 * "ok" line not at all.  Returns the exit status it means.
 */
static int
decide(const char *first, size_t flen, bool json, FILE **to)
{
	*to = stdout;
	if (json) {
		fwrite(first, 1, flen, stdout);
		return flen == JSON_DECIDES &&
			strncmp(first, "{\"ok\":true", JSON_DECIDES) == 0
		    ? 0
		    : EXIT_DAEMON_ERROR;
	}
	if (flen == 3 && strncmp(first, "ok\n", 3) == 0)
		return 0;
	if (strncmp(first, "ok ", 3) == 0) {
		fwrite(first, 1, flen, stdout);
		return 0;
	}
	*to = stderr;
	fwrite(first, 1, flen, stderr);
	return EXIT_DAEMON_ERROR;
}

/*
 * Reads the answer until the daemon closes, printing it as it comes (a
 * dump may be large); the first line decides the exit status.
 */
static int
read_answer(int fd, bool json, int timeout_s)
{
	struct timespec deadline;
	char buf[65536], first[CONTROL_LINE_MAX * 2];
	size_t flen = 0;
	bool decided = false;
	int status = EXIT_DAEMON_ERROR;
	FILE *to = stdout;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_s;
	for (;;) {
		struct pollfd pfd = {fd, POLLIN, 0};
		long left = ms_left(&deadline);
		size_t upto;
		ssize_t r;
		char *nl;

		if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
			fprintf(stderr,
			    "stubborn-ctl: no complete answer within %d s\n",
			    timeout_s);
			return EXIT_UNREACHABLE;
		}
		r = read(fd, buf, sizeof(buf));
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		/* A daemon closing with our request unread resets: what it
		 * sent before is the answer. */
		if (r == 0 || (r < 0 && errno == ECONNRESET && flen > 0))
			break;
		if (r < 0) {
			fprintf(stderr,
			    "stubborn-ctl: reading the answer: %s\n",
			    strerror(errno));
			return EXIT_UNREACHABLE;
		}
		if (decided) {
			fwrite(buf, 1, (size_t)r, to);
			continue;
		}
		nl = memchr(buf, '\n', (size_t)r);
		upto = nl ? (size_t)(nl - buf) + 1 : (size_t)r;
		/* JSON is one line, maybe a long one: its start decides. */
		if (json && flen + upto > JSON_DECIDES)
			upto = JSON_DECIDES - flen;
		if (flen + upto >= sizeof(first)) {
			fprintf(stderr, "stubborn-ctl: unexpected answer\n");
			return EXIT_DAEMON_ERROR;
		}
		memcpy(first + flen, buf, upto);
		flen += upto;
		if (nl == NULL && !(json && flen == JSON_DECIDES))
			continue;
		decided = true;
		status = decide(first, flen, json, &to);
		fwrite(buf + upto, 1, (size_t)r - upto, to);
	}
	if (!decided) {
		fwrite(first, 1, flen, stderr);
		fprintf(stderr,
		    "%sstubborn-ctl: the daemon closed the connection without "
		    "a complete answer\n",
		    flen > 0 ? "\n" : "");
		return EXIT_UNREACHABLE;
	}
	fflush(stdout);
	return status;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"config", required_argument, NULL, 'c'},
	    {"json", no_argument, NULL, 'j'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
	char req[CONTROL_LINE_MAX + 16];
	const char *sock = NULL, *config = NULL;
	bool json = false;
	int timeout_s = 0, c, fd, rc;
	size_t len;

	/* "+": options end at the command, whose arguments may start with
	 * a '-' of their own. */
	while ((c = getopt_long(argc, argv, "+s:c:jt:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			sock = optarg;
			break;
		case 'c':
			config = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 't':
			timeout_s = atoi(optarg);
			if (timeout_s < 1 || timeout_s > 86400) {
				fprintf(stderr,
				    "stubborn-ctl: -t: 1 to 86400 seconds\n");
				return EXIT_USAGE;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (sock != NULL && config != NULL) {
		fprintf(stderr, "stubborn-ctl: -s and -c exclude each other\n");
		return EXIT_USAGE;
	}
	if (build_request(
		req, sizeof(req), json, argc - optind, argv + optind) < 0)
		return EXIT_USAGE;
	if (config != NULL) {
		rc = socket_from_config(config, path, sizeof(path));
		if (rc < 0) {
			fprintf(stderr, "stubborn-ctl: %s: %s\n", config,
			    rc == -ENOENT ? "no control-socket set"
					  : strerror(-rc));
			return EXIT_USAGE;
		}
		sock = path;
	}
	if (sock == NULL)
		sock = CONTROL_SOCKET_DEFAULT;
	if (timeout_s == 0)
		timeout_s = strcmp(argv[optind], "reload") == 0
		    ? RELOAD_TIMEOUT_S
		    : TIMEOUT_S;
	signal(SIGPIPE, SIG_IGN);
	if ((fd = connect_socket(sock, timeout_s)) < 0)
		return EXIT_UNREACHABLE;
	len = strlen(req);
	/* A daemon that refuses us says why, and closes: read that. */
	if (write(fd, req, len) != (ssize_t)len && errno != EPIPE &&
	    errno != ECONNRESET) {
		fprintf(stderr, "stubborn-ctl: sending to %s: %s\n", sock,
		    strerror(errno));
		close(fd);
		return EXIT_UNREACHABLE;
	}
	rc = read_answer(fd, json, timeout_s);
	close(fd);
	return rc;
}
