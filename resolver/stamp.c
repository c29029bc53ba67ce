#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "stubborn/stamp.h"

#define STAMP_PREFIX "sdns://"
#define STAMP_KIND_DNSCRYPT 0x01
/* 1 + 8 + 3 length bytes + the fields at their largest. */
#define STAMP_BIN_MAX (12 + STAMP_ADDR_MAX + STAMP_PK_LEN + STAMP_NAME_MAX)

static int read_lp(const uint8_t *bin, size_t len, size_t *off,
    const uint8_t **field, size_t *flen);
static int name_ok(const uint8_t *s, size_t len);
static int addr_ok(const uint8_t *s, size_t len);

/* One length-prefixed field at *off. */
static int
read_lp(const uint8_t *bin, size_t len, size_t *off, const uint8_t **field,
    size_t *flen)
{
	if (*off >= len)
		return -EINVAL;
	*flen = bin[*off];
	if (*flen > len - *off - 1)
		return -EINVAL;
	*field = bin + *off + 1;
	*off += 1 + *flen;
	return 0;
}

/* A provider name goes into a DNS query: plain hostname characters only. */
static int
name_ok(const uint8_t *s, size_t len)
{
	if (len == 0 || s[0] == '.')
		return 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9') || c == '-' || c == '_' ||
			c == '.'))
			return 0;
		if (c == '.' && i + 1 < len && s[i + 1] == '.')
			return 0;
	}
	return 1;
}

/*
 * The address becomes a C string and a log field: no NUL (which would cut
 * it short), no blank, no control byte.  The config layer checks that it
 * is an address.
 */
static int
addr_ok(const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] >= 0x7f)
			return 0;
	return 1;
}

int
stamp_parse_dnscrypt(
    const char *text, struct stamp_dnscrypt *out, const char **why)
{
	uint8_t bin[STAMP_BIN_MAX];
	const uint8_t *f;
	size_t blen, off = 9, flen, tlen;
	const char *b64;

	*why = "not a DNS stamp (sdns://...)";
	if (strncmp(text, STAMP_PREFIX, strlen(STAMP_PREFIX)) != 0)
		return -EINVAL;
	b64 = text + strlen(STAMP_PREFIX);
	tlen = strlen(b64);
	*why = "stamp is not base64url or too long";
	if (tlen == 0 || tlen > (sizeof(bin) * 4 + 2) / 3 ||
	    sodium_base642bin(bin, sizeof(bin), b64, tlen, NULL, &blen, NULL,
		sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
		return -EINVAL;
	*why = "stamp is not of the DNSCrypt kind";
	if (blen < 1 || bin[0] != STAMP_KIND_DNSCRYPT)
		return -EINVAL;
	*why = "stamp is truncated";
	if (blen < 9)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	for (int i = 8; i >= 1; i--)
		out->props = out->props << 8 | bin[i];
	if (read_lp(bin, blen, &off, &f, &flen) != 0)
		return -EINVAL;
	*why = "stamp address is empty or too long";
	if (flen == 0 || flen > STAMP_ADDR_MAX)
		return -EINVAL;
	*why = "stamp address has characters an address cannot hold";
	if (!addr_ok(f, flen))
		return -EINVAL;
	memcpy(out->addr, f, flen);
	out->addr[flen] = '\0';
	*why = "stamp is truncated";
	if (read_lp(bin, blen, &off, &f, &flen) != 0)
		return -EINVAL;
	*why = "stamp provider key is not 32 bytes";
	if (flen != STAMP_PK_LEN)
		return -EINVAL;
	memcpy(out->pk, f, STAMP_PK_LEN);
	*why = "stamp is truncated";
	if (read_lp(bin, blen, &off, &f, &flen) != 0)
		return -EINVAL;
	*why = "stamp provider name is empty or has characters a DNS name "
	       "cannot hold";
	if (!name_ok(f, flen))
		return -EINVAL;
	/* A trailing dot is the same name; the query adds the root itself. */
	if (f[flen - 1] == '.')
		flen--;
	memcpy(out->name, f, flen);
	out->name[flen] = '\0';
	*why = "stamp has bytes after the provider name";
	if (off != blen)
		return -EINVAL;
	*why = NULL;
	return 0;
}

int
stamp_write_dnscrypt(const struct stamp_dnscrypt *st, char *out, size_t cap)
{
	uint8_t bin[STAMP_BIN_MAX];
	size_t alen = strlen(st->addr), nlen = strlen(st->name), n = 0;
	size_t need;

	if (alen > STAMP_ADDR_MAX || nlen > STAMP_NAME_MAX)
		return -EINVAL;
	bin[n++] = STAMP_KIND_DNSCRYPT;
	for (int i = 0; i < 8; i++)
		bin[n++] = (uint8_t)(st->props >> (8 * i));
	bin[n++] = (uint8_t)alen;
	memcpy(bin + n, st->addr, alen);
	n += alen;
	bin[n++] = STAMP_PK_LEN;
	memcpy(bin + n, st->pk, STAMP_PK_LEN);
	n += STAMP_PK_LEN;
	bin[n++] = (uint8_t)nlen;
	memcpy(bin + n, st->name, nlen);
	n += nlen;
	need = strlen(STAMP_PREFIX) +
	    sodium_base64_ENCODED_LEN(
		n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	if (need > cap)
		return -ENOSPC;
	memcpy(out, STAMP_PREFIX, strlen(STAMP_PREFIX));
	sodium_bin2base64(out + strlen(STAMP_PREFIX),
	    cap - strlen(STAMP_PREFIX), bin, n,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return (int)strlen(out);
}
