/*
 * Unit tests for snapshot: files live in a fresh mkdtemp directory per test;
 * time (monotonic and wall) is an argument, so a "reboot" is just a smaller
 * now_ms and a later wall_s.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "stubborn/cache.h"
#include "stubborn/rng.h"
#include "stubborn/snapshot.h"
#include "stubborn/wire.h"
#include "unit.h"

/* clock_now_ms() starts at 2^32: a rebooted host's clock is near that. */
#define T0 ((1ULL << 32) + 86400000ULL)
#define T_BOOT ((1ULL << 32) + 5000ULL)
#define W0 1700000000ULL
#define BIG (1u << 20)
#define HDR_LEN 32
#define SUM_LEN 32
#define FILE_MAX 8192

struct body {
	uint8_t b[FILE_MAX];
	size_t n;
};

static size_t name_wire(const char *, uint8_t *);
static size_t build_a(uint8_t *, const char *, uint16_t, unsigned);
static size_t build_nxdomain(uint8_t *, const char *);
static size_t key_for(uint8_t *, const char *, uint16_t, unsigned);
static struct cache *new_cache(uint64_t, uint32_t);
static void store_a(struct cache *, const char *, unsigned, uint32_t, uint64_t);
static uint64_t cache_entries(struct cache *);
static size_t read_all(const char *, uint8_t *, size_t);
static void write_all(const char *, const uint8_t *, size_t);
static void body_header(struct body *, uint32_t, uint64_t, uint64_t);
static void body_entry(struct body *, const uint8_t *, size_t, const uint8_t *,
    size_t, uint32_t, uint64_t);
static void body_put64(struct body *, uint64_t);
static void write_signed(const char *, const struct body *);
static size_t small_snapshot(const char *, uint8_t *);
static int load(struct cache *, const char *, uint64_t, uint64_t, uint32_t,
    size_t *, size_t *);
static void same_lookup(struct cache *, uint64_t, struct cache *, uint64_t,
    const uint8_t *, size_t, enum cache_result);
static void setup(void);
static void teardown(void);
static Suite *make_suite(void);

static char dir[64];
static char path[128];
static char tmp_path[160];
static char err[256];

/* "www.example" -> 3www7example0 */
static size_t
name_wire(const char *text, uint8_t *out)
{
	size_t o = 0;

	while (*text != '\0') {
		const char *dot = strchr(text, '.');
		size_t l = dot ? (size_t)(dot - text) : strlen(text);

		out[o++] = (uint8_t)l;
		memcpy(out + o, text, l);
		o += l;
		text += l;
		if (*text == '.')
			text++;
	}
	out[o++] = 0;
	return o;
}

/* A response to qname/qtype with n A records (owner: pointer to it). */
static size_t
build_a(uint8_t *m, const char *qname, uint16_t qtype, unsigned n)
{
	size_t o = WIRE_HDR_LEN;

	memset(m, 0, WIRE_HDR_LEN);
	wire_put16(m + 2, WIRE_QR | WIRE_RD | WIRE_RA);
	wire_put16(m + 4, 1);
	wire_put16(m + 6, (uint16_t)n);
	o += name_wire(qname, m + o);
	wire_put16(m + o, qtype);
	wire_put16(m + o + 2, WIRE_CLASS_IN);
	o += 4;
	for (unsigned i = 0; i < n; i++) {
		wire_put16(m + o, 0xc00c);
		wire_put16(m + o + 2, WIRE_TYPE_A);
		wire_put16(m + o + 4, WIRE_CLASS_IN);
		wire_put32(m + o + 6, 1000 + i);
		wire_put16(m + o + 10, 4);
		m[o + 12] = 192;
		m[o + 13] = 0;
		m[o + 14] = 2;
		m[o + 15] = (uint8_t)i;
		o += 16;
	}
	return o;
}

/* NXDOMAIN with an SOA in the authority section. */
static size_t
build_nxdomain(uint8_t *m, const char *qname)
{
	size_t o = WIRE_HDR_LEN, rdlen_off;

	memset(m, 0, WIRE_HDR_LEN);
	wire_put16(m + 2, WIRE_QR | WIRE_RD | WIRE_RA | WIRE_RCODE_NXDOMAIN);
	wire_put16(m + 4, 1);
	wire_put16(m + 8, 1);
	o += name_wire(qname, m + o);
	wire_put16(m + o, WIRE_TYPE_A);
	wire_put16(m + o + 2, WIRE_CLASS_IN);
	o += 4;
	o += name_wire("example", m + o);
	wire_put16(m + o, WIRE_TYPE_SOA);
	wire_put16(m + o + 2, WIRE_CLASS_IN);
	wire_put32(m + o + 4, 900);
	rdlen_off = o + 8;
	o += 10;
	o += name_wire("ns.example", m + o);
	o += name_wire("hostmaster.example", m + o);
	for (int i = 0; i < 5; i++, o += 4)
		wire_put32(m + o, 1000 + (uint32_t)i);
	wire_put16(m + rdlen_off, (uint16_t)(o - rdlen_off - 2));
	return o;
}

static size_t
key_for(uint8_t *key, const char *qname, uint16_t qtype, unsigned flags)
{
	uint8_t name[WIRE_NAME_MAX];
	size_t nlen = name_wire(qname, name);

	return cache_make_key(key, name, nlen, qtype, WIRE_CLASS_IN, flags);
}

static struct cache *
new_cache(uint64_t max_bytes, uint32_t stale_max_age_s)
{
	struct cache *c;

	ck_assert_int_eq(rng_init(), 0);
	c = cache_new(max_bytes, 4, stale_max_age_s);
	ck_assert_ptr_nonnull(c);
	return c;
}

static void
store_a(struct cache *c, const char *qname, unsigned flags, uint32_t ttl,
    uint64_t stored_ms)
{
	uint8_t resp[512], key[CACHE_KEY_MAX];
	size_t len = build_a(resp, qname, WIRE_TYPE_A, 2);
	size_t klen = key_for(key, qname, WIRE_TYPE_A, flags);

	ck_assert_int_eq(
	    cache_store(c, key, klen, resp, len, ttl, stored_ms), 0);
}

static uint64_t
cache_entries(struct cache *c)
{
	struct cache_stats st;

	cache_get_stats(c, &st);
	return st.entries;
}

static size_t
read_all(const char *p, uint8_t *buf, size_t cap)
{
	int fd = open(p, O_RDONLY);
	ssize_t n;

	ck_assert_int_ge(fd, 0);
	n = read(fd, buf, cap);
	ck_assert_int_gt(n, 0);
	ck_assert_uint_lt((size_t)n, cap);
	close(fd);
	return (size_t)n;
}

static void
write_all(const char *p, const uint8_t *buf, size_t len)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static void
body_header(struct body *b, uint32_t version, uint64_t wall_s, uint64_t count)
{
	b->n = 0;
	memcpy(b->b, "STUBSNAP", 8);
	wire_put32(b->b + 8, version);
	wire_put32(b->b + 12, 0);
	b->n = 16;
	body_put64(b, wall_s);
	body_put64(b, count);
}

static void
body_put64(struct body *b, uint64_t v)
{
	wire_put32(b->b + b->n, (uint32_t)(v >> 32));
	wire_put32(b->b + b->n + 4, (uint32_t)v);
	b->n += 8;
}

static void
body_entry(struct body *b, const uint8_t *key, size_t klen, const uint8_t *resp,
    size_t len, uint32_t ttl, uint64_t age_ms)
{
	ck_assert_uint_lt(b->n + 16 + klen + len, FILE_MAX - SUM_LEN);
	wire_put16(b->b + b->n, (uint16_t)klen);
	wire_put16(b->b + b->n + 2, (uint16_t)len);
	wire_put32(b->b + b->n + 4, ttl);
	b->n += 8;
	body_put64(b, age_ms);
	memcpy(b->b + b->n, key, klen);
	memcpy(b->b + b->n + klen, resp, len);
	b->n += klen + len;
}

/* Writes the body plus a correct checksum: only the structure is wrong. */
static void
write_signed(const char *p, const struct body *b)
{
	uint8_t file[FILE_MAX];

	memcpy(file, b->b, b->n);
	crypto_generichash(file + b->n, SUM_LEN, b->b, b->n, NULL, 0);
	write_all(p, file, b->n + SUM_LEN);
}

/* Saves a two-entry cache to p and returns the file's bytes in buf. */
static size_t
small_snapshot(const char *p, uint8_t *buf)
{
	struct cache *c = new_cache(BIG, 3600);
	size_t n = 0;

	store_a(c, "a.example", 0, 300, T0 - 1000);
	store_a(c, "b.example", CACHE_KEY_DO, 60, T0);
	ck_assert_int_eq(snapshot_save(c, p, T0, W0, &n), 0);
	ck_assert_uint_eq(n, 2);
	cache_free(c);
	return read_all(p, buf, FILE_MAX);
}

static int
load(struct cache *c, const char *p, uint64_t now_ms, uint64_t wall_s,
    uint32_t stale_max_age_s, size_t *loaded, size_t *skipped)
{
	err[0] = '\0';
	return snapshot_load(c, p, now_ms, wall_s, stale_max_age_s, loaded,
	    skipped, err, sizeof(err));
}

/* Both caches answer key alike (a and b at their own times). */
static void
same_lookup(struct cache *a, uint64_t a_ms, struct cache *b, uint64_t b_ms,
    const uint8_t *key, size_t klen, enum cache_result want)
{
	uint8_t out_a[1024], out_b[1024];
	size_t len_a = 0, len_b = 0;
	struct cache_hit hit_a, hit_b;

	ck_assert_int_eq(cache_lookup(a, key, klen, a_ms, 30, out_a,
			     sizeof(out_a), &len_a, &hit_a),
	    want);
	ck_assert_int_eq(cache_lookup(b, key, klen, b_ms, 30, out_b,
			     sizeof(out_b), &len_b, &hit_b),
	    want);
	ck_assert_uint_eq(len_a, len_b);
	ck_assert_mem_eq(out_a, out_b, len_a);
	ck_assert_uint_eq(hit_a.ttl, hit_b.ttl);
	ck_assert_uint_eq(hit_a.ttl_left, hit_b.ttl_left);
	ck_assert_uint_eq(hit_a.stale_s, hit_b.stale_s);
	ck_assert_uint_eq(hit_a.rcode, hit_b.rcode);
	ck_assert_int_eq(hit_a.positive, hit_b.positive);
}

static void
setup(void)
{
	strcpy(dir, "/tmp/test_snapshot.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/cache.snap", dir);
	snprintf(tmp_path, sizeof(tmp_path), "%s.tmp", path);
}

static void
teardown(void)
{
	char p[512];
	struct dirent *de;
	DIR *d = opendir(dir);

	if (d == NULL)
		return;
	chmod(dir, 0700);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (unlink(p) < 0)
			rmdir(p);
	}
	closedir(d);
	rmdir(dir);
}

START_TEST(test_roundtrip)
{
	struct cache *c = new_cache(BIG, 3600), *c2 = new_cache(BIG, 3600);
	uint8_t resp[512], key[5][CACHE_KEY_MAX];
	size_t klen[5], len, n = 0, loaded = 0, skipped = 9;
	uint8_t out[512];
	struct cache_hit hit;

	store_a(c, "www.example", 0, 300, T0 - 10000);
	klen[0] = key_for(key[0], "www.example", WIRE_TYPE_A, 0);
	len = build_nxdomain(resp, "nx.example");
	klen[1] = key_for(key[1], "nx.example", WIRE_TYPE_A, 0);
	ck_assert_int_eq(
	    cache_store(c, key[1], klen[1], resp, len, 60, T0 - 50000), 0);
	store_a(c, "cd.example", CACHE_KEY_CD | CACHE_KEY_DO, 3600, T0);
	klen[2] = key_for(
	    key[2], "cd.example", WIRE_TYPE_A, CACHE_KEY_CD | CACHE_KEY_DO);
	/* The key is lower-cased, the stored question keeps its case. */
	store_a(c, "Mixed.EXAMPLE", 0, 120, T0 - 1);
	klen[3] = key_for(key[3], "mixed.example", WIRE_TYPE_A, 0);
	/* Failure entries carry no data and are not saved. */
	klen[4] = key_for(key[4], "fail.example", WIRE_TYPE_A, 0);
	ck_assert_uint_gt(cache_fail(c, key[4], klen[4], T0, 5, 60), 0);

	ck_assert_int_eq(snapshot_save(c, path, T0, W0, &n), 0);
	ck_assert_uint_eq(n, 4);
	/* Rebooted 100 s later: a new monotonic clock, the wall clock on. */
	ck_assert_int_eq(
	    load(c2, path, T_BOOT, W0 + 100, 3600, &loaded, &skipped), 0);
	ck_assert_str_eq(err, "");
	ck_assert_uint_eq(loaded, 4);
	ck_assert_uint_eq(skipped, 0);
	ck_assert_uint_eq(cache_entries(c2), 4);

	same_lookup(c, T0 + 100000, c2, T_BOOT, key[0], klen[0], CACHE_FRESH);
	same_lookup(c, T0 + 100000, c2, T_BOOT, key[1], klen[1], CACHE_STALE);
	same_lookup(c, T0 + 100000, c2, T_BOOT, key[2], klen[2], CACHE_FRESH);
	same_lookup(c, T0 + 100000, c2, T_BOOT, key[3], klen[3], CACHE_FRESH);
	ck_assert_int_eq(cache_lookup(c2, key[0], klen[0], T_BOOT, 30, out,
			     sizeof(out), &len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.ttl_left, 300 - 110);
	ck_assert_int_eq(cache_lookup(c2, key[1], klen[1], T_BOOT, 30, out,
			     sizeof(out), &len, &hit),
	    CACHE_STALE);
	ck_assert_uint_eq(hit.stale_s, 150 - 60);
	ck_assert_uint_eq(hit.rcode, WIRE_RCODE_NXDOMAIN);
	ck_assert_int_eq(cache_lookup(c2, key[2], klen[2], T_BOOT, 30, out,
			     sizeof(out), &len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.ttl_left, 3600 - 100);
	ck_assert_int_eq(cache_lookup(c2, key[4], klen[4], T_BOOT, 30, out,
			     sizeof(out), &len, &hit),
	    CACHE_MISS);
	/* They keep ageing on the new clock like any other entry. */
	ck_assert_int_eq(cache_lookup(c2, key[0], klen[0], T_BOOT + 190000, 30,
			     out, sizeof(out), &len, &hit),
	    CACHE_STALE);
	cache_free(c);
	cache_free(c2);
}
END_TEST

START_TEST(test_hand_built_file_loads)
{
	struct cache *c = new_cache(BIG, 3600);
	uint8_t resp[512], key[CACHE_KEY_MAX], out[512];
	size_t len = build_a(resp, "hand.example", WIRE_TYPE_A, 1), outlen;
	size_t klen = key_for(key, "hand.example", WIRE_TYPE_A, 0);
	size_t loaded = 0, skipped = 0;
	struct cache_hit hit;
	struct body b;

	/* The format exactly as the header documents it, no snapshot_save. */
	body_header(&b, 1, W0, 1);
	body_entry(&b, key, klen, resp, len, 600, 30000);
	write_signed(path, &b);
	ck_assert_int_eq(
	    load(c, path, T0, W0 + 70, 3600, &loaded, &skipped), 0);
	ck_assert_uint_eq(loaded, 1);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0, 30, out, sizeof(out), &outlen, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.ttl_left, 500);
	ck_assert_uint_eq(outlen, len);
	/* A wall clock set back since the save counts as no time passed. */
	cache_free(c);
	c = new_cache(BIG, 3600);
	ck_assert_int_eq(
	    load(c, path, T0, W0 - 5000, 3600, &loaded, &skipped), 0);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0, 30, out, sizeof(out), &outlen, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.ttl_left, 570);
	cache_free(c);
}
END_TEST

START_TEST(test_past_stale_max_age_skipped)
{
	struct cache *c = new_cache(BIG, 100), *c2 = new_cache(BIG, 100);
	uint8_t key[CACHE_KEY_MAX], out[512];
	size_t klen = key_for(key, "keep.example", WIRE_TYPE_A, 0), len;
	size_t loaded = 0, skipped = 0;
	struct cache_hit hit;

	/* ttl 60 + stale 100: usable while younger than 160 s. */
	store_a(c, "keep.example", 0, 60, T0);
	store_a(c, "drop.example", 0, 60, T0 - 1000);
	store_a(c, "gone.example", 0, 60, T0 - 500000);
	ck_assert_int_eq(snapshot_save(c, path, T0, W0, NULL), 0);
	ck_assert_int_eq(
	    load(c2, path, T_BOOT, W0 + 159, 100, &loaded, &skipped), 0);
	ck_assert_uint_eq(loaded, 1);
	ck_assert_uint_eq(skipped, 2);
	ck_assert_uint_eq(cache_entries(c2), 1);
	ck_assert_int_eq(cache_lookup(c2, key, klen, T_BOOT, 30, out,
			     sizeof(out), &len, &hit),
	    CACHE_STALE);
	ck_assert_uint_eq(hit.stale_s, 99);
	cache_free(c);
	cache_free(c2);
}
END_TEST

START_TEST(test_age_beyond_clock_skipped)
{
	struct cache *c = new_cache(BIG, 86400), *c2 = new_cache(BIG, 86400);
	size_t loaded = 9, skipped = 0;

	store_a(c, "old.example", 0, 86400, T0 - 10000);
	ck_assert_int_eq(snapshot_save(c, path, T0, W0, NULL), 0);
	/* now_ms - age would underflow: skip rather than wrap. */
	ck_assert_int_eq(load(c2, path, 9999, W0, 86400, &loaded, &skipped), 0);
	ck_assert_uint_eq(loaded, 0);
	ck_assert_uint_eq(skipped, 1);
	ck_assert_int_eq(
	    load(c2, path, 10000, W0, 86400, &loaded, &skipped), 0);
	ck_assert_uint_eq(loaded, 1);
	/* Two loads, two stores, one key. */
	ck_assert_uint_eq(cache_entries(c2), 1);
	cache_free(c);
	cache_free(c2);
}
END_TEST

START_TEST(test_missing_and_empty_file)
{
	struct cache *c = new_cache(BIG, 3600);
	size_t loaded = 9, skipped = 9;

	ck_assert_int_eq(
	    load(c, path, T0, W0, 3600, &loaded, &skipped), -ENOENT);
	ck_assert_str_ne(err, "");
	ck_assert_uint_eq(loaded, 0);
	ck_assert_uint_eq(skipped, 0);
	write_all(path, (const uint8_t *)"", 0);
	ck_assert_int_eq(
	    load(c, path, T0, W0, 3600, &loaded, &skipped), -EBADMSG);
	ck_assert_str_eq(err, "empty file");
	/* A directory is no snapshot either; err may be NULL. */
	ck_assert_int_eq(
	    snapshot_load(c, dir, T0, W0, 3600, NULL, NULL, NULL, 0), -EBADMSG);
	ck_assert_uint_eq(cache_entries(c), 0);
	cache_free(c);
}
END_TEST

START_TEST(test_every_prefix_rejected)
{
	struct cache *c = new_cache(BIG, 3600);
	uint8_t file[FILE_MAX];
	size_t size = small_snapshot(path, file), loaded;
	char prefix[192];

	snprintf(prefix, sizeof(prefix), "%s/prefix", dir);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, &loaded, NULL), 0);
	ck_assert_uint_eq(loaded, 2);
	cache_free(c);
	c = new_cache(BIG, 3600);
	for (size_t n = 0; n < size; n++) {
		write_all(prefix, file, n);
		ck_assert_int_eq(
		    load(c, prefix, T0, W0, 3600, &loaded, NULL), -EBADMSG);
		ck_assert_str_ne(err, "");
		ck_assert_uint_eq(loaded, 0);
		ck_assert_uint_eq(cache_entries(c), 0);
	}
	cache_free(c);
}
END_TEST

START_TEST(test_every_bit_flip_rejected)
{
	struct cache *c = new_cache(BIG, 3600);
	uint8_t file[FILE_MAX];
	size_t size = small_snapshot(path, file);
	int rc;

	for (size_t bit = 0; bit < size * 8; bit++) {
		file[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		write_all(path, file, size);
		rc = load(c, path, T0, W0, 3600, NULL, NULL);
		/* Bits of the version field say "another version". */
		ck_assert_int_eq(
		    rc, bit / 8 >= 8 && bit / 8 < 12 ? -EPROTO : -EBADMSG);
		ck_assert_uint_eq(cache_entries(c), 0);
		file[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	cache_free(c);
}
END_TEST

START_TEST(test_wrong_magic_and_version)
{
	struct cache *c = new_cache(BIG, 3600);
	uint8_t file[FILE_MAX];
	size_t size = small_snapshot(path, file);
	struct body b;

	memcpy(file, "STUBSNAQ", 8);
	write_all(path, file, size);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "magic"));
	write_all(path, (const uint8_t *)"#!/bin/sh\necho hi\n", 18);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EBADMSG);
	/* A future version, checksum and all, is refused as such. */
	body_header(&b, 2, W0, 0);
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EPROTO);
	ck_assert_ptr_nonnull(strstr(err, "version 2"));
	body_header(&b, 0, W0, 0);
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EPROTO);
	/* The reserved field is 0 in version 1. */
	body_header(&b, 1, W0, 0);
	wire_put32(b.b + 12, 1);
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EBADMSG);
	ck_assert_uint_eq(cache_entries(c), 0);
	cache_free(c);
}
END_TEST

START_TEST(test_count_mismatch)
{
	struct cache *c = new_cache(BIG, 3600);
	uint8_t resp[512], key[CACHE_KEY_MAX];
	size_t len = build_a(resp, "n.example", WIRE_TYPE_A, 1);
	size_t klen = key_for(key, "n.example", WIRE_TYPE_A, 0);
	struct body b;

	/* One entry more than the header says: trailing bytes. */
	body_header(&b, 1, W0, 1);
	body_entry(&b, key, klen, resp, len, 60, 0);
	body_entry(&b, key, klen, resp, len, 60, 0);
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "after"));
	/* One fewer: the last entry runs into the checksum. */
	body_header(&b, 1, W0, 3);
	body_entry(&b, key, klen, resp, len, 60, 0);
	body_entry(&b, key, klen, resp, len, 60, 0);
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EBADMSG);
	/* A count no file could hold. */
	body_header(&b, 1, W0, UINT64_MAX);
	body_entry(&b, key, klen, resp, len, 60, 0);
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EBADMSG);
	ck_assert_uint_eq(cache_entries(c), 0);
	cache_free(c);
}
END_TEST

START_TEST(test_length_overrun)
{
	struct cache *c = new_cache(BIG, 3600);
	uint8_t resp[512], key[CACHE_KEY_MAX + 64];
	size_t len = build_a(resp, "o.example", WIRE_TYPE_A, 1);
	size_t klen = key_for(key, "o.example", WIRE_TYPE_A, 0);
	struct body b;

	/* A good entry first: it must not be stored either. */
	body_header(&b, 1, W0, 2);
	body_entry(&b, key, klen, resp, len, 60, 0);
	body_entry(&b, key, klen, resp, len, 60, 0);
	/* len one past the end of the entries. */
	wire_put16(b.b + b.n - len - klen - 16 + 2, (uint16_t)(len + 1));
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "entry 1"));
	/* len that would reach into the checksum and beyond. */
	wire_put16(b.b + b.n - len - klen - 16 + 2, 0xffff);
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EBADMSG);
	/* klen past CACHE_KEY_MAX, with the bytes really there. */
	memset(key, 'k', sizeof(key));
	body_header(&b, 1, W0, 1);
	body_entry(&b, key, CACHE_KEY_MAX + 1, resp, len, 60, 0);
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EBADMSG);
	/* klen 0, and a klen within bounds but past the end. */
	body_header(&b, 1, W0, 1);
	body_entry(&b, key, 0, resp, len, 60, 0);
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EBADMSG);
	body_header(&b, 1, W0, 1);
	body_entry(&b, key, 10, resp, 0, 60, 0);
	wire_put16(b.b + HDR_LEN, 200);
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, NULL, NULL), -EBADMSG);
	ck_assert_uint_eq(cache_entries(c), 0);
	cache_free(c);
}
END_TEST

START_TEST(test_key_question_mismatch_skipped)
{
	struct cache *c = new_cache(BIG, 3600);
	uint8_t resp[512], bad[512], key[CACHE_KEY_MAX], k2[CACHE_KEY_MAX];
	size_t len = build_a(resp, "Good.Example", WIRE_TYPE_A, 1), blen, k2len;
	size_t klen = key_for(key, "good.example", WIRE_TYPE_A, CACHE_KEY_DO);
	size_t loaded = 0, skipped = 0;
	struct body b;

	body_header(&b, 1, W0, 7);
	body_entry(&b, key, klen, resp, len, 60, 0);
	/* Another name's key. */
	k2len = key_for(k2, "evil.example", WIRE_TYPE_A, 0);
	body_entry(&b, k2, k2len, resp, len, 60, 0);
	/* Right name, wrong qtype. */
	k2len = key_for(k2, "good.example", WIRE_TYPE_AAAA, 0);
	body_entry(&b, k2, k2len, resp, len, 60, 0);
	/* Right key but a case-folded byte left upper-case. */
	k2len = key_for(k2, "good.example", WIRE_TYPE_A, 0);
	k2[1] = 'G';
	body_entry(&b, k2, k2len, resp, len, 60, 0);
	/* A response that does not parse, and one with TTL 0. */
	memcpy(bad, resp, len);
	blen = len - 3;
	body_entry(&b, key, klen, bad, blen, 60, 0);
	body_entry(&b, key, klen, resp, len, 0, 0);
	/* A response with no question to match the key against. */
	wire_put16(bad + 4, 0);
	body_entry(&b, key, klen, bad, len, 60, 0);
	write_signed(path, &b);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, &loaded, &skipped), 0);
	ck_assert_uint_eq(loaded, 1);
	ck_assert_uint_eq(skipped, 6);
	ck_assert_uint_eq(cache_entries(c), 1);
	ck_assert(cache_remove(c, key, klen));
	cache_free(c);
}
END_TEST

START_TEST(test_save_atomic_replaces)
{
	struct cache *c = new_cache(BIG, 3600), *c2 = new_cache(BIG, 3600);
	size_t n = 0, loaded = 0;
	struct stat sb;

	/* An old snapshot and a leftover temporary from a crashed save. */
	write_all(path, (const uint8_t *)"old junk", 8);
	write_all(tmp_path, (const uint8_t *)"half a save", 11);
	store_a(c, "x.example", 0, 60, T0);
	ck_assert_int_eq(snapshot_save(c, path, T0, W0, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(stat(tmp_path, &sb), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_mode & 0777, 0600);
	ck_assert_int_eq(load(c2, path, T0, W0, 3600, &loaded, NULL), 0);
	ck_assert_uint_eq(loaded, 1);
	/* Saving an empty cache replaces it again, with a valid file. */
	cache_free(c);
	c = new_cache(BIG, 3600);
	ck_assert_int_eq(snapshot_save(c, path, T0, W0, &n), 0);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_size, HDR_LEN + SUM_LEN);
	ck_assert_int_eq(load(c, path, T0, W0, 3600, &loaded, NULL), 0);
	ck_assert_uint_eq(loaded, 0);
	ck_assert_int_eq(stat(tmp_path, &sb), -1);
	cache_free(c);
	cache_free(c2);
}
END_TEST

START_TEST(test_save_unwritable)
{
	struct cache *c = new_cache(BIG, 3600);
	char p[256];
	size_t n = 7;

	store_a(c, "x.example", 0, 60, T0);
	snprintf(p, sizeof(p), "%s/no/such/dir/snap", dir);
	ck_assert_int_eq(snapshot_save(c, p, T0, W0, &n), -ENOENT);
	ck_assert_uint_eq(n, 0);
	/* A parent that is a file. */
	write_all(path, (const uint8_t *)"x", 1);
	snprintf(p, sizeof(p), "%s/snap", path);
	ck_assert_int_eq(snapshot_save(c, p, T0, W0, &n), -ENOTDIR);
	/* Where the temporary file cannot be made, path is left as it was. */
	snprintf(p, sizeof(p), "%s/snap.tmp", dir);
	ck_assert_int_eq(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/snap", dir);
	write_all(p, (const uint8_t *)"keep", 4);
	ck_assert_int_eq(snapshot_save(c, p, T0, W0, &n), -EISDIR);
	ck_assert_uint_eq(read_all(p, (uint8_t[16]){0}, 16), 4);
	/* Permissions do not stop root, so only when not root. */
	if (geteuid() != 0) {
		ck_assert_int_eq(chmod(dir, 0500), 0);
		snprintf(p, sizeof(p), "%s/other", dir);
		ck_assert_int_eq(snapshot_save(c, p, T0, W0, &n), -EACCES);
		ck_assert_int_eq(chmod(dir, 0700), 0);
	}
	cache_free(c);
}
END_TEST

START_TEST(test_many_entries_and_lru_order)
{
	struct cache *c = new_cache(8u << 20, 3600);
	struct cache *small = new_cache(64u << 10, 3600);
	size_t n = 0, loaded = 0, skipped = 0;
	struct cache_stats st;
	char name[64];

	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "host%d.example", i);
		store_a(c, name, (unsigned)i & 3, 300 + (uint32_t)i,
		    T0 - (uint64_t)i);
	}
	ck_assert_int_eq(snapshot_save(c, path, T0, W0, &n), 0);
	ck_assert_uint_eq(n, 5000);
	/* Into a cache too small for all: it keeps what fits, no error. */
	ck_assert_int_eq(
	    load(small, path, T_BOOT, W0 + 1, 3600, &loaded, &skipped), 0);
	ck_assert_uint_eq(loaded, 5000);
	ck_assert_uint_eq(skipped, 0);
	cache_get_stats(small, &st);
	ck_assert_uint_gt(st.evictions, 0);
	ck_assert_uint_gt(st.entries, 0);
	ck_assert_uint_lt(st.entries, 5000);
	cache_free(c);
	cache_free(small);
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("snapshot");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_hand_built_file_loads);
	tcase_add_test(tc, test_past_stale_max_age_skipped);
	tcase_add_test(tc, test_age_beyond_clock_skipped);
	tcase_add_test(tc, test_missing_and_empty_file);
	tcase_add_test(tc, test_every_prefix_rejected);
	tcase_add_test(tc, test_every_bit_flip_rejected);
	tcase_add_test(tc, test_wrong_magic_and_version);
	tcase_add_test(tc, test_count_mismatch);
	tcase_add_test(tc, test_length_overrun);
	tcase_add_test(tc, test_key_question_mismatch_skipped);
	tcase_add_test(tc, test_save_atomic_replaces);
	tcase_add_test(tc, test_save_unwritable);
	tcase_add_test(tc, test_many_entries_and_lru_order);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
