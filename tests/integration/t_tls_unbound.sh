#!/bin/bash
# The DNS-over-TLS test fixtures of lib_tls.sh, checked with kdig: the
# certificates are what they claim (valid, wrong name, expired, unknown CA)
# and Unbound serves DNS-over-TLS on its port, forwarding to fakeup.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_tls.sh"

verifies() { openssl verify -CAfile "$TLS_CA" "$1" >/dev/null 2>&1; }

check "openssl makes the test CA and certificates" tls_make_certs
check "the valid certificate verifies against the test CA" verifies "$TLS_OK"
expect_match "the expired certificate is expired" "certificate has expired" \
    "$(openssl verify -CAfile "$TLS_CA" "$TLS_EXPIRED" 2>&1)"
expect_match "the other CA's certificate has an unknown issuer" \
    "unable to get local issuer" \
    "$(openssl verify -CAfile "$TLS_CA" "$TLS_OTHER_CA_CERT" 2>&1)"
expect_match "the wrong-name certificate names another host" \
    "DNS:wrong\.$TLS_NAME" \
    "$(openssl x509 -in "$TLS_WRONG_NAME" -noout -ext subjectAltName)"

start_fakeup up || { not_ok "fakeup starts"; t_done; }
start_unbound_tls ok "$FK_PORT_up" || { not_ok "unbound starts"; t_done; }
start_unbound_tls exp "$FK_PORT_up" "$TLS_EXPIRED" ||
	{ not_ok "unbound starts"; t_done; }
start_unbound_tls oca "$FK_PORT_up" "$TLS_OTHER_CA_CERT" ||
	{ not_ok "unbound starts"; t_done; }

check "kdig gets NOERROR through Unbound over TLS" tls_check_unbound ok
out=$(kdig_tls "$UB_PORT_ok" www.test A)
expect_match "the answer came over TLS" "TLS session \(TLS1\.[23]\)" "$out"
expect_match "the answer came from fakeup" "www\.test\..*IN[[:space:]]+A" "$out"
check "Unbound serves no clear-text DNS on its TLS port" \
    bash -c "! dig @127.0.0.1 -p $UB_PORT_ok +tcp +tries=1 +time=2 \
	tls-plain.test A >/dev/null"
expect_match "kdig rejects the wrong name" "handshake failed" \
    "$(TLS_NAME=wrong.test kdig_tls "$UB_PORT_ok" www.test A)"
expect_match "kdig rejects the expired certificate" "handshake failed" \
    "$(kdig_tls "$UB_PORT_exp" www.test A)"
expect_match "kdig rejects the unknown CA" "handshake failed" \
    "$(kdig_tls "$UB_PORT_oca" www.test A)"
t_done
