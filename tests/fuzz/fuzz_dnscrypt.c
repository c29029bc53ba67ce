/*
 * libFuzzer target for dnscrypt, with fixed keys: a provider key, one
 * resolver key per construction and a client key, all derived from
 * constant seeds, so committed seeds can hold correctly signed
 * certificates and correctly sealed responses that mutations then break.
 * The first input byte picks what the rest is:
 *
 *   0  a certificate response, for dnscrypt_cert_choose() (and its answer
 *      records' RDATA for dnscrypt_cert_parse())
 *   1  a DNSCrypt response, for dnscrypt_open() with the fixed nonce, in a
 *      session of either construction (bit 0 of the second byte)
 *   2  a padded plaintext, sealed here as the resolver would, then opened:
 *      the result must agree with a reference unpadding
 *   3  a DNS query, sealed by dnscrypt_seal() over UDP and TCP and opened
 *      here as the resolver would: it must come back byte for byte
 *
 * Results are checked against dnscrypt.h's contracts; ASan/UBSan catch
 * reads and writes out of bounds.
 *
 * Built with -DFUZZ_DNSCRYPT_SEEDS instead, this file is a program that
 * writes the seed corpus into the directory given as its argument.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "stubborn/dnscrypt.h"
#include "stubborn/rng.h"
#include "stubborn/wire.h"

#include "fuzz.h"

#define NOW 1700000000u
#define PROVIDER "2.dnscrypt-cert.fuzz.test"
#define TYPE_TXT 16
#define BUF_MAX 70000

static uint8_t prov_pk[32], prov_sk[64];
static uint8_t res_pk[2][32], res_sk[2][32];
static struct dnscrypt_session sess[2];
static const uint8_t client_nonce[12] = {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7};
static const uint8_t resolver_half[12] = {8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8};

static uint8_t buf[BUF_MAX], buf2[BUF_MAX], buf3[BUF_MAX];

static void init_keys(void);
static size_t make_cert(
    uint8_t *out, uint16_t es, uint32_t serial, uint32_t start, uint32_t end);
static int seal_as_resolver(
    int v, const uint8_t *nonce12, const uint8_t *m, size_t mlen, uint8_t *out);
static int open_as_resolver(
    int v, const uint8_t *q, size_t len, uint8_t *plain, size_t *padded);
static size_t ref_unpad(const uint8_t *m, size_t mlen);
static bool is_cert_error(int r);
static void fuzz_choose(const uint8_t *data, size_t size);
static void fuzz_open(const uint8_t *data, size_t size);
static void fuzz_plaintext(const uint8_t *data, size_t size);
static void fuzz_seal(const uint8_t *data, size_t size);

static void
init_keys(void)
{
	uint8_t seed[32];
	struct dnscrypt_keypair kp;

	CHECK(rng_init() == 0);
	memset(seed, 1, sizeof(seed));
	crypto_sign_seed_keypair(prov_pk, prov_sk, seed);
	for (int v = 0; v < 2; v++) {
		memset(res_sk[v], 2 + v, 32);
		crypto_scalarmult_base(res_pk[v], res_sk[v]);
	}
	memset(kp.sk, 4, 32);
	crypto_scalarmult_base(kp.pk, kp.sk);
	for (int v = 0; v < 2; v++) {
		struct dnscrypt_cert c;
		size_t n =
		    make_cert(buf, (uint16_t)(v + 1), 1, NOW - 1, NOW + 1);

		CHECK(dnscrypt_cert_parse(buf, n, prov_pk, NOW, &c, NULL) == 0);
		CHECK(dnscrypt_session_init(&sess[v], &c, &kp) == 0);
	}
}

/* A signed certificate for resolver key es - 1 (key 0 for others). */
static size_t
make_cert(
    uint8_t *out, uint16_t es, uint32_t serial, uint32_t start, uint32_t end)
{
	const uint8_t *pk = res_pk[es == 2 ? 1 : 0];

	memcpy(out, "DNSC", 4);
	wire_put16(out + 4, es);
	wire_put16(out + 6, 0);
	memcpy(out + 72, pk, 32);
	memcpy(out + 104, pk, 8);
	wire_put32(out + 112, serial);
	wire_put32(out + 116, start);
	wire_put32(out + 120, end);
	crypto_sign_detached(out + 8, NULL, out + 72, 52, prov_sk);
	return 124;
}

/* resolver magic | nonce12 | resolver half | box(m) under session v. */
static int
seal_as_resolver(
    int v, const uint8_t *nonce12, const uint8_t *m, size_t mlen, uint8_t *out)
{
	uint8_t nonce[24];

	memcpy(nonce, nonce12, 12);
	memcpy(nonce + 12, resolver_half, 12);
	memcpy(out, "r6fnvWj8", 8);
	memcpy(out + 8, nonce, 24);
	if (v == 1)
		crypto_box_curve25519xchacha20poly1305_easy_afternm(
		    out + 32, m, mlen, nonce, sess[v].shared);
	else
		crypto_box_easy_afternm(
		    out + 32, m, mlen, nonce, sess[v].shared);
	return (int)(mlen + 48);
}

/* Opens a sealed query with the resolver's secret key.  0 or -1. */
static int
open_as_resolver(
    int v, const uint8_t *q, size_t len, uint8_t *plain, size_t *padded)
{
	uint8_t nonce[24] = {0}, shared[32];
	int r;

	if (len < 68 || memcmp(q, res_pk[v], 8) != 0)
		return -1;
	memcpy(nonce, q + 40, 12);
	if (v == 1)
		r = crypto_box_curve25519xchacha20poly1305_beforenm(
		    shared, q + 8, res_sk[v]);
	else
		r = crypto_box_beforenm(shared, q + 8, res_sk[v]);
	if (r != 0)
		return -1;
	if (v == 1)
		r = crypto_box_curve25519xchacha20poly1305_open_easy_afternm(
		    plain, q + 52, len - 52, nonce, shared);
	else
		r = crypto_box_open_easy_afternm(
		    plain, q + 52, len - 52, nonce, shared);
	*padded = len - 68;
	return r == 0 ? 0 : -1;
}

/* The protocol's padding rule, written plainly: 0 when it is broken. */
static size_t
ref_unpad(const uint8_t *m, size_t mlen)
{
	size_t zeros = 0;

	while (zeros < mlen && m[mlen - 1 - zeros] == 0)
		zeros++;
	if (zeros == mlen || m[mlen - 1 - zeros] != 0x80 || zeros + 1 > 256)
		return 0;
	return mlen - 1 - zeros >= 12 ? mlen - 1 - zeros : 0;
}

static bool
is_cert_error(int r)
{
	return r == -EBADMSG || r == -EMSGSIZE || r == -ENOENT ||
	    r == -EPROTONOSUPPORT || r == -EKEYREJECTED || r == -EKEYEXPIRED;
}

static void
fuzz_choose(const uint8_t *data, size_t size)
{
	static const uint64_t times[] = {NOW, NOW + 86400 * 30, 0};
	struct dnscrypt_cert c;
	struct wire_iter it;
	struct wire_rr rr;
	const char *why;

	for (size_t t = 0; t < sizeof(times) / sizeof(times[0]); t++) {
		int r;

		why = "unset";
		r = dnscrypt_cert_choose(
		    data, size, PROVIDER, prov_pk, times[t], &c, &why);
		if (r == 0) {
			struct dnscrypt_session s;
			struct dnscrypt_keypair kp;

			CHECK(why == NULL);
			CHECK(c.es_version == 1 || c.es_version == 2);
			CHECK(dnscrypt_cert_valid(&c, times[t]));
			CHECK(c.ts_start <= c.ts_end);
			/* Only the fixed resolver keys are ever signed. */
			CHECK(memcmp(c.resolver_pk, res_pk[0], 32) == 0 ||
			    memcmp(c.resolver_pk, res_pk[1], 32) == 0);
			memset(kp.sk, 5, 32);
			crypto_scalarmult_base(kp.pk, kp.sk);
			CHECK(dnscrypt_session_init(&s, &c, &kp) == 0);
			CHECK(dnscrypt_cert_refresh_at(&c, times[t]) >=
			    times[t] + DNSCRYPT_REFRESH_MIN);
		} else {
			CHECK(is_cert_error(r));
			CHECK(why != NULL && why[0] != '\0');
		}
	}
	/* Every record's RDATA as one certificate. */
	if (wire_iter_init(&it, data, size) < 0)
		return;
	while (wire_iter_next(&it, &rr) == 1) {
		int r = dnscrypt_cert_parse(
		    data + rr.rdata_off, rr.rdlen, prov_pk, NOW, &c, &why);
		CHECK(r == 0 || is_cert_error(r));
		if (r == 0)
			CHECK(why == NULL && c.ts_start <= NOW);
	}
}

static void
fuzz_open(const uint8_t *data, size_t size)
{
	int v, n, n2;

	if (size < 1)
		return;
	v = data[0] & 1;
	data++;
	size--;
	n = dnscrypt_open(&sess[v], client_nonce, data, size, buf, BUF_MAX);
	CHECK(n >= WIRE_HDR_LEN || n == -EPROTO || n == -ENOMSG ||
	    n == -EBADMSG || n == -EKEYREJECTED);
	if (n >= 0) {
		CHECK(size >= 48 && (size_t)n <= size - 49);
		CHECK(memcmp(data, "r6fnvWj8", 8) == 0);
		CHECK(memcmp(data + 8, client_nonce, 12) == 0);
		CHECK(buf[n] == 0x80);
	}
	/* In place gives the same; a tight buffer -ENOSPC or the same. */
	memcpy(buf2, data, size);
	n2 = dnscrypt_open(&sess[v], client_nonce, buf2, size, buf2, size);
	CHECK(n2 == n);
	if (n >= 0)
		CHECK(memcmp(buf2, buf, (size_t)n) == 0);
	if (size > 48) {
		n2 = dnscrypt_open(
		    &sess[v], client_nonce, data, size, buf3, size - 49);
		CHECK(n2 == -ENOSPC || (n < 0 && n2 == n));
	}
}

static void
fuzz_plaintext(const uint8_t *data, size_t size)
{
	int v, len, n;
	size_t want;

	if (size < 1 || size > 4096)
		return;
	v = data[0] & 1;
	len = seal_as_resolver(v, client_nonce, data + 1, size - 1, buf);
	n = dnscrypt_open(
	    &sess[v], client_nonce, buf, (size_t)len, buf2, BUF_MAX);
	want = ref_unpad(data + 1, size - 1);
	if (want == 0) {
		CHECK(n == -EBADMSG);
		CHECK(sodium_is_zero(buf2, size - 1));
	} else {
		CHECK(n == (int)want);
		CHECK(memcmp(buf2, data + 1, want) == 0);
	}
	/* The other construction's session cannot open it. */
	n = dnscrypt_open(
	    &sess[v ^ 1], client_nonce, buf, (size_t)len, buf2, BUF_MAX);
	CHECK(n == -EKEYREJECTED);
}

static void
fuzz_seal(const uint8_t *data, size_t size)
{
	static uint8_t plain[BUF_MAX];
	uint8_t nonce[12];
	size_t padded, min_len;
	int v, n;

	if (size < 1 + WIRE_HDR_LEN || size > 4096)
		return;
	v = data[0] & 1;
	min_len = DNSCRYPT_MIN_UDP_LEN + 64 * (size_t)((data[0] >> 1) % 16);
	data++;
	size--;
	for (int tcp = 0; tcp < 2; tcp++) {
		n = dnscrypt_seal(
		    &sess[v], data, size, tcp, min_len, buf, BUF_MAX, nonce);
		if (!tcp && min_len > DNSCRYPT_MAX_UDP_LEN) {
			CHECK(n == -EINVAL);
			continue;
		}
		CHECK(n > 0);
		CHECK(memcmp(buf + 40, nonce, 12) == 0);
		CHECK(open_as_resolver(v, buf, (size_t)n, plain, &padded) == 0);
		CHECK(padded % 64 == 0 && padded > size);
		CHECK(memcmp(plain, data, size) == 0);
		CHECK(plain[size] == 0x80);
		CHECK(sodium_is_zero(plain + size + 1, padded - size - 1));
		if (tcp)
			CHECK(padded - size <= 256);
		else
			CHECK(padded >= min_len &&
			    (padded == min_len || padded - size <= 64));
		/* A response with that nonce opens; with another it does not.
		 */
		n = seal_as_resolver(v, nonce, plain, size + 1, buf2);
		CHECK(dnscrypt_open(&sess[v], nonce, buf2, (size_t)n, buf3,
			  BUF_MAX) == (int)size);
		CHECK(memcmp(buf3, data, size) == 0);
		CHECK(dnscrypt_open(&sess[v], client_nonce, buf2, (size_t)n,
			  buf3, BUF_MAX) ==
		    (memcmp(nonce, client_nonce, 12) == 0 ? (int)size
							  : -ENOMSG));
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;

	if (!ready) {
		init_keys();
		ready = true;
	}
	if (size < 1 || size > WIRE_MSG_MAX)
		return 0;
	switch (data[0] % 4) {
	case 0:
		fuzz_choose(data + 1, size - 1);
		break;
	case 1:
		fuzz_open(data + 1, size - 1);
		break;
	case 2:
		fuzz_plaintext(data + 1, size - 1);
		break;
	case 3:
		fuzz_seal(data + 1, size - 1);
		break;
	}
	return 0;
}

#ifdef FUZZ_DNSCRYPT_SEEDS
/* The seed corpus: mode byte, then what that mode takes. */
static void write_seed(const char *dir, const char *name, uint8_t mode,
    const uint8_t *d, size_t n);
static size_t cert_answer(uint8_t *out, const uint16_t *es,
    const uint32_t *serial, const uint32_t *end, size_t count);
int main(int argc, char **argv);

static void
write_seed(
    const char *dir, const char *name, uint8_t mode, const uint8_t *d, size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	CHECK(f != NULL);
	CHECK(fwrite(&mode, 1, 1, f) == 1);
	CHECK(fwrite(d, 1, n, f) == n);
	CHECK(fclose(f) == 0);
}

/* A response to the certificate query with count TXT certificates. */
static size_t
cert_answer(uint8_t *out, const uint16_t *es, const uint32_t *serial,
    const uint32_t *end, size_t count)
{
	int n = dnscrypt_cert_query(out, BUF_MAX, 0x1234, PROVIDER);
	size_t len;

	CHECK(n > 0);
	len = (size_t)n - 11; /* without the OPT */
	wire_put16(out + 2, WIRE_QR | WIRE_RD | WIRE_RA);
	wire_put16(out + 6, (uint16_t)count);
	wire_put16(out + 10, 0);
	for (size_t i = 0; i < count; i++) {
		wire_put16(out + len, 0xc00c);
		wire_put16(out + len + 2, TYPE_TXT);
		wire_put16(out + len + 4, WIRE_CLASS_IN);
		wire_put32(out + len + 6, 3600);
		wire_put16(out + len + 10, 125);
		out[len + 12] = 124;
		make_cert(out + len + 13, es[i], serial[i], NOW - 100, end[i]);
		len += 13 + 124;
	}
	return len;
}

int
main(int argc, char **argv)
{
	static const uint16_t es[] = {1, 2, 2, 1};
	static const uint32_t serial[] = {1, 1, 7, 9};
	static const uint32_t end[] = {
	    NOW + 3600, NOW + 3600, NOW + 86400, NOW - 1};
	uint8_t m[512];
	size_t n, qlen;
	int r;

	CHECK(argc == 2);
	init_keys();
	n = cert_answer(buf, es, serial, end, 4);
	write_seed(argv[1], "certs_four.bin", 0, buf, n);
	n = cert_answer(buf, es + 1, serial + 1, end + 1, 1);
	write_seed(argv[1], "certs_one_v2.bin", 0, buf, n);
	n = cert_answer(buf, es + 3, serial + 3, end + 3, 1);
	write_seed(argv[1], "certs_expired.bin", 0, buf, n);

	/* A response (an A query echoed back, padded) for each session. */
	r = wire_build_query(m, sizeof(m), 0x4242, WIRE_RD,
	    (const uint8_t *)"\3www\7example\3com", 17, 1, 1, 1232, false);
	CHECK(r > 0);
	qlen = (size_t)r;
	m[2] |= 0x80;
	m[qlen] = 0x80;
	memset(m + qlen + 1, 0, 128 - qlen - 1);
	for (int v = 0; v < 2; v++) {
		buf2[0] = (uint8_t)v;
		r = seal_as_resolver(v, client_nonce, m, 128, buf2 + 1);
		write_seed(argv[1], v ? "response_v2.bin" : "response_v1.bin",
		    1, buf2, (size_t)r + 1);
	}
	buf2[0] = 0;
	memcpy(buf2 + 1, m, 128);
	write_seed(argv[1], "plaintext.bin", 2, buf2, 129);
	buf2[0] = 3;
	memcpy(buf2 + 1, m, qlen);
	buf2[1 + 2] &= 0x7f;
	write_seed(argv[1], "query.bin", 3, buf2, qlen + 1);
	return 0;
}
#endif
