/*
 * snapshot: the cache to a file and back (format: include/stubborn/snapshot.h).
 *
 * Saving streams entries from cache_walk() (each shard copied, no lock held
 * while writing) through a small buffer straight
 * into the file, so memory stays flat however big the cache is.  The
 * checksum covers the header, whose entry count is known only after the
 * walk, so it is computed afterwards by reading the file back: that also
 * keeps hashing out of the shard locks.  Loading maps the file read-only
 * and checks all of it before the first cache_store().
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "stubborn/cache.h"
#include "stubborn/snapshot.h"
#include "stubborn/wire.h"

#define SNAP_MAGIC "STUBSNAP"
#define SNAP_MAGIC_LEN 8
#define SNAP_HDR_LEN 32
#define SNAP_ENTRY_HDR_LEN 16
#define SNAP_SUM_LEN crypto_generichash_BYTES /* 32: BLAKE2b-256 */
/* Large enough for any one entry, small enough to flush often. */
#define SNAP_BUF_LEN (256 * 1024)

struct writer {
	int fd;
	uint8_t *buf;
	size_t used;
	uint64_t off; /* bytes handed to the file so far */
	uint64_t count;
	uint64_t now_ms;
	int err; /* first failure, -errno; later writes are skipped */
};

struct snap_entry {
	const uint8_t *key;
	const uint8_t *resp;
	size_t klen;
	size_t len;
	uint32_t ttl;
	uint64_t age_ms;
};

struct snap_file {
	const uint8_t *map;
	size_t size;
	uint64_t wall_s;
	uint64_t count;
};

static void put64(uint8_t *, uint64_t);
static uint64_t get64(const uint8_t *);
static void put_header(uint8_t *, uint64_t, uint64_t);
static int write_all(int, const uint8_t *, size_t);
static int pwrite_all(int, const uint8_t *, size_t, uint64_t);
static void writer_put(struct writer *, const void *, size_t);
static void writer_flush(struct writer *);
static void save_entry_cb(void *, const uint8_t *, size_t, const uint8_t *,
    size_t, uint32_t, uint64_t);
static int save_finish(struct writer *, uint64_t);
static int save_checksum(int, uint8_t *, uint64_t, uint8_t *);
static int sync_dir(const char *);
static void set_err(char *, size_t, const char *, ...)
    __attribute__((format(printf, 3, 4)));
static int map_file(const char *, struct snap_file *, char *, size_t);
static int check_file(struct snap_file *, char *, size_t);
static int check_entries(const struct snap_file *, char *, size_t);
static size_t read_entry(const uint8_t *, size_t, struct snap_entry *);
static bool key_matches(const struct snap_entry *);
static bool entry_stored_ms(
    const struct snap_entry *, uint64_t, uint64_t, uint32_t, uint64_t *);
static int load_entries(struct cache *, const struct snap_file *, uint64_t,
    uint64_t, uint32_t, size_t *, size_t *, char *, size_t);

int
snapshot_save(struct cache *c, const char *path, uint64_t now_ms,
    uint64_t wall_s, size_t *count)
{
	char tmp[PATH_MAX];
	struct writer w;
	uint8_t hdr[SNAP_HDR_LEN];
	int rc;

	if (count != NULL)
		*count = 0;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	memset(&w, 0, sizeof(w));
	w.now_ms = now_ms;
	w.buf = malloc(SNAP_BUF_LEN);
	if (w.buf == NULL)
		return -ENOMEM;
	/*
	 * 0600: the cache tells which names this host looked up.  Read too:
	 * the checksum is computed from what was written.
	 */
	w.fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (w.fd < 0) {
		rc = -errno;
		goto free_buf;
	}
	/* A placeholder: the count is rewritten once the walk is over. */
	put_header(hdr, wall_s, 0);
	writer_put(&w, hdr, sizeof(hdr));
	/* A shard that could not be copied would be missing: keep the old
	 * file rather than write an incomplete one. */
	if (cache_walk(c, save_entry_cb, &w) < 0 && w.err == 0)
		w.err = -ENOMEM;
	writer_flush(&w);
	rc = w.err != 0 ? w.err : save_finish(&w, wall_s);
	if (close(w.fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0) {
		(void)unlink(tmp);
		goto free_buf;
	}
	rc = sync_dir(path);
	if (rc == 0 && count != NULL)
		*count = (size_t)w.count;
free_buf:
	free(w.buf);
	return rc;
}

int
snapshot_load(struct cache *c, const char *path, uint64_t now_ms,
    uint64_t wall_s, uint32_t stale_max_age_s, size_t *loaded, size_t *skipped,
    char *err, size_t errlen)
{
	struct snap_file f;
	size_t nloaded = 0, nskipped = 0;
	int rc;

	set_err(err, errlen, "%s", "");
	rc = map_file(path, &f, err, errlen);
	if (rc < 0)
		goto out;
	rc = check_file(&f, err, errlen);
	if (rc == 0)
		rc = load_entries(c, &f, now_ms, wall_s, stale_max_age_s,
		    &nloaded, &nskipped, err, errlen);
	(void)munmap((void *)f.map, f.size);
out:
	if (loaded != NULL)
		*loaded = nloaded;
	if (skipped != NULL)
		*skipped = nskipped;
	return rc;
}

static void
put64(uint8_t *p, uint64_t v)
{
	wire_put32(p, (uint32_t)(v >> 32));
	wire_put32(p + 4, (uint32_t)v);
}

static uint64_t
get64(const uint8_t *p)
{
	return (uint64_t)wire_u32(p) << 32 | wire_u32(p + 4);
}

static void
put_header(uint8_t *hdr, uint64_t wall_s, uint64_t count)
{
	memcpy(hdr, SNAP_MAGIC, SNAP_MAGIC_LEN);
	wire_put32(hdr + 8, SNAPSHOT_VERSION);
	wire_put32(hdr + 12, 0);
	put64(hdr + 16, wall_s);
	put64(hdr + 24, count);
}

static int
write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t r = write(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int
pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
	while (n > 0) {
		ssize_t r = pwrite(fd, p, n, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static void
writer_put(struct writer *w, const void *p, size_t n)
{
	if (w->err != 0)
		return;
	if (w->used + n > SNAP_BUF_LEN)
		writer_flush(w);
	if (w->err != 0)
		return;
	/* n <= SNAP_ENTRY_HDR_LEN + CACHE_KEY_MAX + 65535 < SNAP_BUF_LEN. */
	memcpy(w->buf + w->used, p, n);
	w->used += n;
}

static void
writer_flush(struct writer *w)
{
	if (w->err == 0 && w->used > 0)
		w->err = write_all(w->fd, w->buf, w->used);
	w->off += w->used;
	w->used = 0;
}

/* Runs under a shard lock: copies into the buffer, no hashing. */
static void
save_entry_cb(void *arg, const uint8_t *key, size_t klen, const uint8_t *resp,
    size_t len, uint32_t ttl, uint64_t stored_ms)
{
	struct writer *w = arg;
	uint8_t hdr[SNAP_ENTRY_HDR_LEN];
	/* Another worker's clock read may be a little ahead of ours. */
	uint64_t age_ms = w->now_ms > stored_ms ? w->now_ms - stored_ms : 0;

	if (klen == 0 || klen > CACHE_KEY_MAX || len > WIRE_MSG_MAX)
		return;
	wire_put16(hdr, (uint16_t)klen);
	wire_put16(hdr + 2, (uint16_t)len);
	wire_put32(hdr + 4, ttl);
	put64(hdr + 8, age_ms);
	writer_put(w, hdr, sizeof(hdr));
	writer_put(w, key, klen);
	writer_put(w, resp, len);
	w->count++;
}

/* Header with the real count, checksum, then the data on disk. */
static int
save_finish(struct writer *w, uint64_t wall_s)
{
	uint8_t hdr[SNAP_HDR_LEN], sum[SNAP_SUM_LEN];
	int rc;

	put_header(hdr, wall_s, w->count);
	rc = pwrite_all(w->fd, hdr, sizeof(hdr), 0);
	if (rc == 0)
		rc = save_checksum(w->fd, w->buf, w->off, sum);
	if (rc == 0)
		rc = pwrite_all(w->fd, sum, sizeof(sum), w->off);
	if (rc == 0 && fsync(w->fd) < 0)
		rc = -errno;
	return rc;
}

/* Hashes the first size bytes of fd, reading through buf (SNAP_BUF_LEN). */
static int
save_checksum(int fd, uint8_t *buf, uint64_t size, uint8_t *sum)
{
	crypto_generichash_state st;
	uint64_t off = 0;

	crypto_generichash_init(&st, NULL, 0, SNAP_SUM_LEN);
	while (off < size) {
		size_t want = size - off < SNAP_BUF_LEN ? (size_t)(size - off)
							: SNAP_BUF_LEN;
		ssize_t r = pread(fd, buf, want, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO; /* someone truncated our file */
		crypto_generichash_update(&st, buf, (size_t)r);
		off += (uint64_t)r;
	}
	crypto_generichash_final(&st, sum, SNAP_SUM_LEN);
	return 0;
}

/* Makes the rename itself durable. */
static int
sync_dir(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	int fd, rc = 0;

	if (slash == NULL)
		strcpy(dir, ".");
	else if (slash == path)
		strcpy(dir, "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Some file systems cannot sync a directory; nothing more to do. */
	if (fsync(fd) < 0 && errno != EINVAL)
		rc = -errno;
	close(fd);
	return rc;
}

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int
map_file(const char *path, struct snap_file *f, char *err, size_t errlen)
{
	struct stat sb;
	void *map;
	int fd, rc;

	memset(f, 0, sizeof(*f));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		set_err(err, errlen, "cannot open: %s", strerror(-rc));
		return rc;
	}
	if (fstat(fd, &sb) < 0) {
		rc = -errno;
		set_err(err, errlen, "cannot stat: %s", strerror(-rc));
		goto close_fd;
	}
	rc = -EBADMSG;
	if (!S_ISREG(sb.st_mode)) {
		set_err(err, errlen, "not a regular file");
		goto close_fd;
	}
	if (sb.st_size == 0) {
		set_err(err, errlen, "empty file");
		goto close_fd;
	}
	if ((uint64_t)sb.st_size > SIZE_MAX) {
		rc = -EFBIG;
		set_err(err, errlen, "file too large to map");
		goto close_fd;
	}
	map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		rc = -errno;
		set_err(err, errlen, "cannot map: %s", strerror(-rc));
		goto close_fd;
	}
	/* Read front to back twice (checksum, entries): let readahead work. */
	(void)madvise(map, (size_t)sb.st_size, MADV_SEQUENTIAL);
	f->map = map;
	f->size = (size_t)sb.st_size;
	rc = 0;
close_fd:
	close(fd);
	return rc;
}

/* Everything but the entries' contents: those are judged one by one. */
static int
check_file(struct snap_file *f, char *err, size_t errlen)
{
	uint8_t sum[SNAP_SUM_LEN];
	uint32_t version;

	if (f->size < SNAP_MAGIC_LEN ||
	    memcmp(f->map, SNAP_MAGIC, SNAP_MAGIC_LEN) != 0) {
		set_err(err, errlen, "not a snapshot file (bad magic)");
		return -EBADMSG;
	}
	if (f->size < SNAP_HDR_LEN + SNAP_SUM_LEN) {
		set_err(err, errlen, "truncated: %zu bytes", f->size);
		return -EBADMSG;
	}
	/* Before the checksum: another version may sum differently. */
	version = wire_u32(f->map + 8);
	if (version != SNAPSHOT_VERSION) {
		set_err(err, errlen, "unsupported version %u (expected %u)",
		    version, SNAPSHOT_VERSION);
		return -EPROTO;
	}
	crypto_generichash(
	    sum, sizeof(sum), f->map, f->size - SNAP_SUM_LEN, NULL, 0);
	if (memcmp(sum, f->map + f->size - SNAP_SUM_LEN, SNAP_SUM_LEN) != 0) {
		set_err(err, errlen, "bad checksum (truncated or corrupt)");
		return -EBADMSG;
	}
	if (wire_u32(f->map + 12) != 0) {
		set_err(err, errlen, "reserved header field is not 0");
		return -EBADMSG;
	}
	f->wall_s = get64(f->map + 16);
	f->count = get64(f->map + 24);
	return check_entries(f, err, errlen);
}

/*
 * A good checksum only says the bytes are what some writer wrote: the
 * lengths must still add up exactly, or nothing is loaded.
 */
static int
check_entries(const struct snap_file *f, char *err, size_t errlen)
{
	size_t off = SNAP_HDR_LEN, end = f->size - SNAP_SUM_LEN, n;
	struct snap_entry e;
	uint64_t i;

	for (i = 0; i < f->count; i++) {
		n = read_entry(f->map + off, end - off, &e);
		if (n == 0) {
			set_err(err, errlen,
			    "entry %" PRIu64 " at offset %zu "
			    "overruns the file or has a bad key length",
			    i, off);
			return -EBADMSG;
		}
		off += n;
	}
	if (off != end) {
		set_err(err, errlen,
		    "%zu bytes after the %" PRIu64 " entries the header counts",
		    end - off, f->count);
		return -EBADMSG;
	}
	return 0;
}

/*
 * Reads the entry at p, with left bytes before the checksum.  Returns its
 * size, or 0 when a length is out of bounds.
 */
static size_t
read_entry(const uint8_t *p, size_t left, struct snap_entry *e)
{
	if (left < SNAP_ENTRY_HDR_LEN)
		return 0;
	e->klen = wire_u16(p);
	e->len = wire_u16(p + 2);
	e->ttl = wire_u32(p + 4);
	e->age_ms = get64(p + 8);
	if (e->klen == 0 || e->klen > CACHE_KEY_MAX ||
	    e->klen > left - SNAP_ENTRY_HDR_LEN ||
	    e->len > left - SNAP_ENTRY_HDR_LEN - e->klen)
		return 0;
	e->key = p + SNAP_ENTRY_HDR_LEN;
	e->resp = e->key + e->klen;
	return SNAP_ENTRY_HDR_LEN + e->klen + e->len;
}

/*
 * The key must be the one cache_make_key() gives for the response's own
 * question, or a lookup for one name could be answered with another's data.
 */
static bool
key_matches(const struct snap_entry *e)
{
	uint8_t want[CACHE_KEY_MAX];
	struct wire_question q;

	if (wire_read_question(e->resp, e->len, &q) < 0 ||
	    q.name_len > WIRE_NAME_MAX || e->klen != q.name_len + 5)
		return false;
	(void)cache_make_key(want, e->resp + q.name_off, q.name_len, q.qtype,
	    q.qclass, e->key[e->klen - 1]);
	if (memcmp(want, e->key, e->klen) == 0)
		return true;
	/* An NXDOMAIN is kept for its name, every type (qtype 0). */
	(void)cache_make_key(want, e->resp + q.name_off, q.name_len, 0,
	    q.qclass, e->key[e->klen - 1]);
	return WIRE_RCODE(WIRE_FLAGS(e->resp)) == WIRE_RCODE_NXDOMAIN &&
	    memcmp(want, e->key, e->klen) == 0;
}

/*
 * When the entry would have been stored on today's monotonic clock, or
 * false if it is too old to keep (or older than the clock itself).
 */
static bool
entry_stored_ms(const struct snap_entry *e, uint64_t now_ms, uint64_t gap_s,
    uint32_t stale_max_age_s, uint64_t *stored_ms)
{
	uint64_t life_ms = ((uint64_t)e->ttl + stale_max_age_s) * 1000;
	uint64_t age_ms;

	if (gap_s > UINT64_MAX / 1000 || e->age_ms > UINT64_MAX - gap_s * 1000)
		return false;
	age_ms = e->age_ms + gap_s * 1000;
	if (age_ms >= life_ms || age_ms > now_ms)
		return false;
	*stored_ms = now_ms - age_ms;
	return true;
}

static int
load_entries(struct cache *c, const struct snap_file *f, uint64_t now_ms,
    uint64_t wall_s, uint32_t stale_max_age_s, size_t *loaded, size_t *skipped,
    char *err, size_t errlen)
{
	/* A clock set back since the save: the file is not from the future. */
	uint64_t gap_s = wall_s > f->wall_s ? wall_s - f->wall_s : 0;
	size_t off = SNAP_HDR_LEN, end = f->size - SNAP_SUM_LEN;
	struct snap_entry e;
	uint64_t stored_ms;
	int rc;

	/* check_entries() has bounded every entry. */
	for (uint64_t i = 0; i < f->count; i++) {
		off += read_entry(f->map + off, end - off, &e);
		if (!key_matches(&e) ||
		    !entry_stored_ms(
			&e, now_ms, gap_s, stale_max_age_s, &stored_ms)) {
			(*skipped)++;
			continue;
		}
		/* Answers fetched since start-up are newer: keep them. */
		rc = cache_store_new(
		    c, e.key, e.klen, e.resp, e.len, e.ttl, stored_ms);
		if (rc == -ENOMEM) {
			set_err(err, errlen, "out of memory after %zu entries",
			    *loaded);
			return rc;
		}
		if (rc < 0)
			(*skipped)++;
		else
			(*loaded)++;
	}
	return 0;
}
