/*
 * stamp: DNS stamps (https://dnscrypt.info/stamps-specifications) of the
 * DNSCrypt kind, "sdns://" followed by the unpadded base64url encoding of
 *
 *   0x01 | props (8 bytes, little-endian) | LP(addr) | LP(pk) | LP(name)
 *
 * where LP(x) is one length byte then x; addr is "IP", "IP:PORT" or
 * "[IPv6]:PORT" (port 443 when none is given), pk the provider's 32-byte
 * Ed25519 public key and name the provider name ("2.dnscrypt-cert.example").
 * Pure: nothing here allocates or logs, and it depends only on libsodium.
 */
#ifndef STUBBORN_STAMP_H
#define STUBBORN_STAMP_H

#include <stddef.h>
#include <stdint.h>

#define STAMP_PK_LEN 32
#define STAMP_NAME_MAX 255
#define STAMP_ADDR_MAX 64
#define STAMP_DEFAULT_PORT 443

/* Stamp properties (the props field). */
#define STAMP_PROP_DNSSEC 0x1
#define STAMP_PROP_NOLOG 0x2
#define STAMP_PROP_NOFILTER 0x4

struct stamp_dnscrypt {
	uint64_t props;
	char addr[STAMP_ADDR_MAX + 1]; /* as written in the stamp */
	uint8_t pk[STAMP_PK_LEN];      /* provider's Ed25519 public key */
	char name[STAMP_NAME_MAX + 1]; /* provider name, without a
					  trailing dot */
};

/*
 * Parses a DNSCrypt stamp (text, NUL-terminated) into *out.  Returns 0, or
 * -EINVAL with a short reason in *why (a static string): not "sdns://", not
 * base64url, another stamp kind, a truncated or overlong field, bytes left
 * over, a key that is not 32 bytes, an empty address or provider name, an
 * address with a byte outside printable ASCII or a blank, or a provider
 * name with characters outside letters, digits, '-', '_' and '.'.
 */
int stamp_parse_dnscrypt(
    const char *text, struct stamp_dnscrypt *out, const char **why);

/*
 * Writes the stamp for *st into out (cap bytes, NUL-terminated).  Returns
 * the length, or -ENOSPC.  For tests and tools: a stamp parsed and written
 * again is the same text.
 */
int stamp_write_dnscrypt(
    const struct stamp_dnscrypt *st, char *out, size_t cap);

#endif
