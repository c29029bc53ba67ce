/*
 * log: leveled logfmt lines on stderr.
 *
 * Output: ts=<RFC3339 UTC> level=<lvl> sub=<subsystem> msg="<text>" plus
 * key=value pairs that the caller writes into the format string.  The macros
 * test the level before evaluating their arguments, so a debug line on the
 * query path costs one branch when debug is off.
 */
#ifndef STUBBORN_LOG_H
#define STUBBORN_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN = 1,
	LOG_LEVEL_INFO = 2,
	LOG_LEVEL_DEBUG = 3,
};

/*
 * The threshold, read by every thread and set by main (a reload, the
 * control socket): relaxed, since a line logged at the old level a moment
 * after the change is harmless.
 */
extern _Atomic int log_level_current;

/* Sets the threshold (any thread); lines above it are not formatted. */
void log_set_level(enum log_level level);

/* Parses "error|warn|info|debug"; returns the level or -EINVAL. */
int log_parse_level(const char *s);

/* Name of a level ("error", ...). */
const char *log_level_name(enum log_level level);

/*
 * Writes one line.  fmt is the message text, optionally followed by
 * " key=value" pairs: everything up to the first " key=" goes inside msg="".
 * Use log_error() and friends rather than calling this directly.
 */
void log_write(enum log_level level, const char *sub, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Copies src into dst (size cap) for use as a logfmt value, escaping quotes,
 * backslashes and non-printable bytes so client-controlled text cannot forge
 * fields or lines.  Returns dst.
 */
char *log_escape(char *dst, size_t cap, const char *src, size_t len);

#define LOG_AT(lvl, sub, ...)                                                  \
	do {                                                                   \
		if ((int)(lvl) <= atomic_load_explicit(&log_level_current,     \
				      memory_order_relaxed))                   \
			log_write((lvl), (sub), __VA_ARGS__);                  \
	} while (0)

#define log_error(sub, ...) LOG_AT(LOG_LEVEL_ERROR, sub, __VA_ARGS__)
#define log_warn(sub, ...) LOG_AT(LOG_LEVEL_WARN, sub, __VA_ARGS__)
#define log_info(sub, ...) LOG_AT(LOG_LEVEL_INFO, sub, __VA_ARGS__)
#define log_debug(sub, ...) LOG_AT(LOG_LEVEL_DEBUG, sub, __VA_ARGS__)

#endif
