/*
 * udpecho: the ceiling of the benchmark.  It answers every UDP datagram
 * with the same bytes and the QR bit set, so a DNS load generator counts a
 * response, and does nothing else: one recvfrom and one sendto per packet
 * on one socket, in one thread.  Whatever rate it reaches under a CPU
 * quota is the most any DNS server can reach with the same load generator
 * and the same per-packet system calls.  With --threads N, N threads each
 * serve a socket of their own (SO_REUSEPORT spreads the clients over them,
 * as over the workers of a server): the ceiling of N workers.
 *
 *   udpecho --listen ADDR:PORT [--threads N] [--pidfile FILE]
 *
 * ADDR must be a loopback address (127.0.0.0/8 or ::1, IPv6 written
 * [::1]): a tool that answers anything must not be reachable from outside.
 * SIGTERM or SIGINT ends it with status 0; bad usage exits 2.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* Larger than any DNS message over UDP, so nothing is truncated. */
#define PKT_MAX 65535
#define DNS_FLAGS_OFF 2
#define DNS_QR 0x80
#define THREADS_MAX 64

static volatile sig_atomic_t stop;

static void usage(void);
static int parse_addr(
    const char *s, struct sockaddr_storage *ss, socklen_t *len);
static int write_pidfile(const char *path);
static int open_socket(
    const struct sockaddr_storage *ss, socklen_t len, bool reuseport);
static void stop_cb(int sig);
static int serve(int fd, unsigned char *buf);
static void *serve_thread(void *arg);
static int serve_one(const struct sockaddr_storage *ss, socklen_t len,
    const char *listen_s, const char *pidfile);

static void
usage(void)
{
	fprintf(stderr,
	    "usage: udpecho --listen ADDR:PORT [--threads N] "
	    "[--pidfile FILE]\n");
	exit(2);
}

/* Accepts 127.x.y.z:PORT and [::1]:PORT only; -EINVAL otherwise. */
static int
parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, colon - s);
	host[colon - s] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || port < 1 || port > 65535)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[') {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
		size_t n = strlen(host);

		if (n < 3 || host[n - 1] != ']')
			return -EINVAL;
		host[n - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1 ||
		    !IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
			return -EINVAL;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*a6);
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &a4->sin_addr) != 1 ||
		    (ntohl(a4->sin_addr.s_addr) >> 24) != 127)
			return -EINVAL;
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*len = sizeof(*a4);
	}
	return 0;
}

/* Written via a rename, so the file exists only once the socket is bound. */
static int
write_pidfile(const char *path)
{
	char tmp[PATH_MAX];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "w");
	if (f == NULL)
		return -errno;
	fprintf(f, "%ld\n", (long)getpid());
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		return -errno;
	return 0;
}

/* A bound UDP socket, or -errno. */
static int
open_socket(const struct sockaddr_storage *ss, socklen_t len, bool reuseport)
{
	int one = 1, fd = socket(ss->ss_family, SOCK_DGRAM, 0);

	if (fd < 0)
		return -errno;
	if ((reuseport &&
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) !=
		    0) ||
	    bind(fd, (const struct sockaddr *)ss, len) != 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static void
stop_cb(int sig)
{
	(void)sig;
	stop = 1;
}

/*
 * Echoes on fd until a signal sets stop (never, in the threads of
 * --threads, which block the signals): 0 then, a negative errno on failure.
 */
static int
serve(int fd, unsigned char *buf)
{
	struct sockaddr_storage from;
	socklen_t flen;
	ssize_t n;

	while (!stop) {
		flen = sizeof(from);
		n = recvfrom(
		    fd, buf, PKT_MAX, 0, (struct sockaddr *)&from, &flen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		/* Too short to be a DNS header: no reply a client would count.
		 */
		if (n <= DNS_FLAGS_OFF)
			continue;
		buf[DNS_FLAGS_OFF] |= DNS_QR;
		/* A full send buffer loses this reply, as a busy server would.
		 */
		(void)sendto(
		    fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen);
	}
	return 0;
}

/* A thread of --threads (arg: its socket); an error ends the process. */
static void *
serve_thread(void *arg)
{
	unsigned char *buf = malloc(PKT_MAX);
	int rc;

	if (buf == NULL) {
		fprintf(stderr, "udpecho: out of memory\n");
		exit(1);
	}
	rc = serve((int)(intptr_t)arg, buf);
	fprintf(stderr, "udpecho: %s\n", strerror(-rc));
	exit(1);
}

/*
 * One thread serves in the main thread, as it always did: a process with
 * more threads pays for cancellation points in every recvfrom and sendto
 * (about 100 instructions a packet), which the one-thread ceiling must not.
 */
static int
serve_one(const struct sockaddr_storage *ss, socklen_t len,
    const char *listen_s, const char *pidfile)
{
	static unsigned char buf[PKT_MAX];
	struct sigaction sa;
	int fd = open_socket(ss, len, false), rc;

	if (fd < 0) {
		fprintf(stderr, "udpecho: %s: %s\n", listen_s, strerror(-fd));
		exit(2);
	}
	/* No SA_RESTART: a signal must interrupt recvfrom so the loop ends. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = stop_cb;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (pidfile != NULL && (rc = write_pidfile(pidfile)) != 0) {
		fprintf(stderr, "udpecho: pidfile %s: %s\n", pidfile,
		    strerror(-rc));
		exit(2);
	}
	rc = serve(fd, buf);
	if (pidfile != NULL)
		unlink(pidfile);
	close(fd);
	if (rc != 0) {
		fprintf(stderr, "udpecho: %s\n", strerror(-rc));
		return 1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"threads", required_argument, NULL, 't'},
	    {"pidfile", required_argument, NULL, 'p'},
	    {NULL, 0, NULL, 0},
	};
	struct sockaddr_storage ss;
	const char *listen_s = NULL, *pidfile = NULL;
	pthread_t tid;
	sigset_t sigs;
	socklen_t len = 0;
	long threads = 1;
	char *end;
	int c, fd, rc, sig;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen_s = optarg;
			break;
		case 't':
			errno = 0;
			threads = strtol(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || threads < 1 ||
			    threads > THREADS_MAX)
				usage();
			break;
		case 'p':
			pidfile = optarg;
			break;
		default:
			usage();
		}
	}
	if (listen_s == NULL || optind != argc)
		usage();
	if (parse_addr(listen_s, &ss, &len) != 0) {
		fprintf(stderr, "udpecho: %s: not a loopback ADDR:PORT\n",
		    listen_s);
		exit(2);
	}
	if (threads == 1)
		return serve_one(&ss, len, listen_s, pidfile);
	/* The serving threads never see SIGTERM or SIGINT: this thread waits
	 * for them and ends the process. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	for (long i = 0; i < threads; i++) {
		fd = open_socket(&ss, len, true);
		if (fd < 0) {
			fprintf(stderr, "udpecho: %s: %s\n", listen_s,
			    strerror(-fd));
			exit(2);
		}
		if ((rc = pthread_create(&tid, NULL, serve_thread,
			 (void *)(intptr_t)fd)) != 0) {
			fprintf(stderr, "udpecho: thread: %s\n", strerror(rc));
			exit(1);
		}
		pthread_detach(tid);
	}
	if (pidfile != NULL && (rc = write_pidfile(pidfile)) != 0) {
		fprintf(stderr, "udpecho: pidfile %s: %s\n", pidfile,
		    strerror(-rc));
		exit(2);
	}
	sigwait(&sigs, &sig);
	if (pidfile != NULL)
		unlink(pidfile);
	return 0;
}
