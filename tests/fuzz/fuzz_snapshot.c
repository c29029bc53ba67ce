/*
 * libFuzzer target for snapshot_load.  The input becomes the snapshot file
 * (a temp file named for this process).  An input starting with 'V' is a
 * file body without its checksum: the target appends the right one, so the
 * fuzzer reaches the entry parser instead of stopping at the checksum.
 *
 * Beyond "no crash": a rejected file leaves the cache empty and says why;
 * an accepted one accounts for every entry (loaded + skipped == count),
 * holds only entries whose key is their response's question, all of them
 * fresh or stale, and saves to a file that loads back to as many entries.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "stubborn/cache.h"
#include "stubborn/rng.h"
#include "stubborn/snapshot.h"
#include "stubborn/wire.h"

#include "fuzz.h"

#define NOW_MS ((1ULL << 32) + 3600000ULL)
#define WALL_S 1700000100ULL
#define STALE_MAX 3600
#define MAX_KEYS 512

struct seen {
	size_t n;
	size_t klen[MAX_KEYS];
	uint8_t key[MAX_KEYS][CACHE_KEY_MAX];
	size_t len[MAX_KEYS];
};

static char path[96], path2[96];
static struct seen seen;
static uint8_t out[WIRE_MSG_MAX];

static void cleanup(void);
static void write_file(const char *, const uint8_t *, size_t, bool);
static void walk_cb(void *, const uint8_t *, size_t, const uint8_t *, size_t,
    uint32_t, uint64_t);
static void check_loaded(
    struct cache *, const uint8_t *, size_t, size_t, size_t);

static void
cleanup(void)
{
	unlink(path);
	unlink(path2);
}

/* With sign, appends the BLAKE2b-256 of the bytes, as a writer would. */
static void
write_file(const char *p, const uint8_t *data, size_t size, bool sign)
{
	uint8_t sum[crypto_generichash_BYTES];
	FILE *f = fopen(p, "w");

	if (f == NULL) {
		perror(p);
		abort();
	}
	if (size > 0 && fwrite(data, size, 1, f) != 1)
		abort();
	if (sign) {
		crypto_generichash(sum, sizeof(sum), data, size, NULL, 0);
		if (fwrite(sum, sizeof(sum), 1, f) != 1)
			abort();
	}
	if (fclose(f) != 0)
		abort();
}

/* Runs under a shard lock: checks and records, no cache calls. */
static void
walk_cb(void *arg, const uint8_t *key, size_t klen, const uint8_t *resp,
    size_t len, uint32_t ttl, uint64_t stored_ms)
{
	uint8_t want[CACHE_KEY_MAX];
	struct wire_question q;

	if (ttl == 0 || stored_ms > NOW_MS || klen == 0 || klen > CACHE_KEY_MAX)
		abort();
	if (wire_read_question(resp, len, &q) < 0 || q.name_len + 5 != klen)
		abort();
	cache_make_key(want, resp + q.name_off, q.name_len, q.qtype, q.qclass,
	    key[klen - 1]);
	if (memcmp(want, key, klen) != 0)
		abort();
	if (seen.n < MAX_KEYS) {
		memcpy(seen.key[seen.n], key, klen);
		seen.klen[seen.n] = klen;
		seen.len[seen.n] = len;
		seen.n++;
	}
}

static void
check_loaded(struct cache *c, const uint8_t *file, size_t fsize, size_t loaded,
    size_t skipped)
{
	struct cache_stats st;
	struct cache *c2;
	struct cache_hit hit;
	size_t n, len, loaded2 = 0;
	enum cache_result r;

	/* Accepted files have a whole header. */
	if (fsize < 64 ||
	    loaded + skipped !=
		((uint64_t)wire_u32(file + 24) << 32 | wire_u32(file + 28)))
		abort();
	cache_get_stats(c, &st);
	if (st.entries > loaded)
		abort();
	seen.n = 0;
	cache_walk(c, walk_cb, NULL);
	for (size_t i = 0; i < seen.n; i++) {
		r = cache_lookup(c, seen.key[i], seen.klen[i], NOW_MS, 30, out,
		    sizeof(out), &len, &hit);
		if ((r != CACHE_FRESH && r != CACHE_STALE) ||
		    len != seen.len[i])
			abort();
	}
	if (st.entries == 0)
		return;
	c2 = cache_new(1 << 20, 2, STALE_MAX);
	if (c2 == NULL || snapshot_save(c, path2, NOW_MS, WALL_S, &n) != 0 ||
	    n != st.entries)
		abort();
	if (snapshot_load(c2, path2, NOW_MS, WALL_S, STALE_MAX, &loaded2, NULL,
		NULL, 0) != 0 ||
	    loaded2 != n)
		abort();
	cache_free(c2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *file = data;
	size_t fsize = size, loaded = 99, skipped = 99;
	struct cache_stats st;
	struct cache *c;
	char err[256];
	int rc;

	if (path[0] == '\0') {
		/* tmpfs if there is one: accepted inputs save and fsync. */
		const char *d =
		    access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

		if (rng_init() < 0)
			abort();
		snprintf(path, sizeof(path), "%s/fuzz_snapshot.%d", d,
		    (int)getpid());
		snprintf(path2, sizeof(path2), "%s.save", path);
		atexit(cleanup);
	}
	if (size > 0 && data[0] == 'V') {
		file = data + 1;
		fsize = size - 1;
	}
	write_file(path, file, fsize, file != data);
	if (file != data)
		fsize += crypto_generichash_BYTES;

	c = cache_new(1 << 20, 2, STALE_MAX);
	if (c == NULL)
		abort();
	err[0] = '\0';
	rc = snapshot_load(c, path, NOW_MS, WALL_S, STALE_MAX, &loaded,
	    &skipped, err, sizeof(err));
	if (rc < 0) {
		cache_get_stats(c, &st);
		if (st.entries != 0 || st.stores != 0 || loaded != 0 ||
		    skipped != 0 || err[0] == '\0')
			abort();
	} else {
		/* file: the input; its header is the signed body's header. */
		check_loaded(c, file, fsize, loaded, skipped);
	}
	cache_free(c);
	return 0;
}
