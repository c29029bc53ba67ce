#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "stubborn/log.h"

_Atomic int log_level_current = LOG_LEVEL_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void
log_set_level(enum log_level level)
{
	atomic_store_explicit(
	    &log_level_current, (int)level, memory_order_relaxed);
}

int
log_parse_level(const char *s)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]);
	     i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return (int)i;
	if (strcasecmp(s, "warning") == 0)
		return LOG_LEVEL_WARN;
	return -EINVAL;
}

const char *
log_level_name(enum log_level level)
{
	if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
		return "unknown";
	return level_names[level];
}

char *
log_escape(char *dst, size_t cap, const char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (cap == 0)
		return dst;
	for (size_t i = 0; i < len && o + 5 < cap; i++) {
		unsigned char c = (unsigned char)src[i];
		if (c == '"' || c == '\\') {
			dst[o++] = '\\';
			dst[o++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		} else {
			dst[o++] = (char)c;
		}
	}
	dst[o] = '\0';
	return dst;
}

void
log_write(enum log_level level, const char *sub, const char *fmt, ...)
{
	char body[1024], line[1400];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	const char *kv;
	int n;

	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);

	/* The message is the text before the first " key=" pair. */
	kv = NULL;
	for (const char *p = strchr(body, ' '); p != NULL;
	     p = strchr(p + 1, ' ')) {
		const char *q = p + 1;
		while ((*q >= 'a' && *q <= 'z') || *q == '_' ||
		    (*q >= '0' && *q <= '9'))
			q++;
		if (q > p + 1 && *q == '=') {
			kv = p;
			break;
		}
	}

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
	    "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s sub=%s "
	    "msg=\"%.*s\"%s\n",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, ts.tv_nsec / 1000000, log_level_name(level), sub,
	    kv ? (int)(kv - body) : (int)strlen(body), body, kv ? kv : "");
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	/* One write per line keeps lines from different threads whole. */
	(void)!fwrite(line, 1, (size_t)n, stderr);
}
