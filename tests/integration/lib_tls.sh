# DNS-over-TLS helpers for the integration tests (bash), sourced after
# lib.sh: a test CA and server certificates made with the openssl command,
# and Unbound from Debian serving DNS-over-TLS on a 127.0.0.1 port, forwarding
# to an upstream the test started (build/fakeup).  Everything lives in $T_TMP
# and stops with lib.sh's cleanup (by PID).
#
#   tls_make_certs [NAME]      CA + certificates; sets TLS_DIR, TLS_NAME,
#                              TLS_CA, TLS_OTHER_CA, TLS_KEY and the
#                              certificates TLS_OK, TLS_WRONG_NAME,
#                              TLS_EXPIRED, TLS_OTHER_CA_CERT
#   start_unbound_tls ID UPPORT [CERT] [CONF_LINE...]
#                              Unbound on 127.0.0.1:UB_PORT_ID (TLS only)
#   kdig_tls PORT QNAME QTYPE [kdig options]
#   tls_check_unbound ID       kdig through Unbound's TLS port: 0 if NOERROR
#
# Unbound runs with no remote control, no trust anchor, no root hints in use
# (everything is forwarded) and nothing else that would reach beyond
# 127.0.0.1.

TLS_NAME=${TLS_NAME:-dns.test}

# tls_make_certs [NAME]: a CA, a second CA nobody trusts, one server key and
# four certificates for it: valid for NAME, valid for "wrong.$NAME",
# expired (2020), and valid for NAME but signed by the other CA.
tls_make_certs() {
	TLS_NAME=${1:-$TLS_NAME}
	TLS_DIR="$T_TMP/tls"
	mkdir -p "$TLS_DIR/newcerts" || return 1
	: >"$TLS_DIR/index.txt"
	echo 1000 >"$TLS_DIR/serial"
	cat >"$TLS_DIR/openssl.cnf" <<EOF
[ca]
default_ca = test_ca
[test_ca]
dir = $TLS_DIR
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
default_md = sha256
policy = any_cn
unique_subject = no
email_in_dn = no
[any_cn]
commonName = supplied
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = \${ENV::TLS_SAN}
EOF
	local cnf="$TLS_DIR/openssl.cnf" ca
	for ca in ca other-ca; do
		# The config names TLS_SAN, so it must be set for every use.
		TLS_SAN=DNS:unused openssl req -config "$cnf" -x509 -new -newkey ec \
		    -pkeyopt ec_paramgen_curve:P-256 -nodes \
		    -keyout "$TLS_DIR/$ca.key" -out "$TLS_DIR/$ca.pem" \
		    -subj "/CN=stubborn test $ca" -days 30 \
		    -extensions ca_ext 2>>"$TLS_DIR/openssl.log" || return 1
	done
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
	    -out "$TLS_DIR/server.key" 2>>"$TLS_DIR/openssl.log" || return 1
	TLS_CA="$TLS_DIR/ca.pem"
	TLS_OTHER_CA="$TLS_DIR/other-ca.pem"
	TLS_KEY="$TLS_DIR/server.key"
	_tls_sign ok ca "$TLS_NAME" -days 7 || return 1
	_tls_sign wrong-name ca "wrong.$TLS_NAME" -days 7 || return 1
	_tls_sign expired ca "$TLS_NAME" \
	    -startdate 20200101000000Z -enddate 20200102000000Z || return 1
	_tls_sign other-ca other-ca "$TLS_NAME" -days 7 || return 1
	TLS_OK="$TLS_DIR/srv-ok.pem"
	TLS_WRONG_NAME="$TLS_DIR/srv-wrong-name.pem"
	TLS_EXPIRED="$TLS_DIR/srv-expired.pem"
	TLS_OTHER_CA_CERT="$TLS_DIR/srv-other-ca.pem"
}

# _tls_sign OUT CA NAME [openssl ca date options]: $TLS_DIR/srv-OUT.pem
# for server.key, CN and DNS SAN NAME, signed by CA.
_tls_sign() {
	local out=srv-$1 ca=$2 name=$3
	shift 3
	TLS_SAN="DNS:$name" openssl req -config "$TLS_DIR/openssl.cnf" -new \
	    -key "$TLS_DIR/server.key" -subj "/CN=$name" \
	    -out "$TLS_DIR/$out.csr" 2>>"$TLS_DIR/openssl.log" || return 1
	TLS_SAN="DNS:$name" openssl ca -config "$TLS_DIR/openssl.cnf" -batch \
	    -notext -cert "$TLS_DIR/$ca.pem" -keyfile "$TLS_DIR/$ca.key" \
	    -extensions server_ext -in "$TLS_DIR/$out.csr" \
	    -out "$TLS_DIR/$out.pem" "$@" >>"$TLS_DIR/openssl.log" 2>&1
}

# Waits until 127.0.0.1:port listens on TCP (a TLS port has no UDP side).
wait_tcp() {
	local port=$1 pid=${2:-} tries=$((50 * SLOW))
	for _ in $(seq 1 "$tries"); do
		ss -Hlnt "src 127.0.0.1:$port" | grep -q . && return 0
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
		sleep 0.1
	done
	return 1
}

# start_unbound_tls ID UPPORT [CERT] [CONF_LINE...]: Unbound serving only
# DNS-over-TLS on 127.0.0.1:UB_PORT_ID with CERT (default $TLS_OK) and
# $TLS_KEY, forwarding every name to 127.0.0.1:UPPORT; "test." is not the
# special-use zone Unbound would answer itself.  CONF_LINEs are added to the
# server: clause (e.g. "edns-tcp-keepalive: yes").  Sets UB_PORT_ID,
# UB_PID_ID, UB_LOG_ID.
start_unbound_tls() {
	local id=$1 upport=$2 cert=${3:-$TLS_OK} port dir line
	shift 2
	[ $# -gt 0 ] && shift
	port=$(pick_port) || return 1
	dir="$T_TMP/unbound-$id"
	mkdir -p "$dir" || return 1
	{
		cat <<EOF
server:
	interface: 127.0.0.1@$port
	tls-port: $port
	tls-service-key: "$TLS_KEY"
	tls-service-pem: "$cert"
	do-ip6: no
	do-udp: no
	do-daemonize: no
	username: ""
	chroot: ""
	directory: "$dir"
	pidfile: "$dir/unbound.pid"
	use-syslog: no
	logfile: ""
	verbosity: 1
	num-threads: 1
	module-config: "iterator"
	do-not-query-localhost: no
	access-control: 127.0.0.0/8 allow
	local-zone: "test." nodefault
	qname-minimisation: no
	prefetch: no
EOF
		for line in "$@"; do printf '\t%s\n' "$line"; done
		cat <<EOF
remote-control:
	control-enable: no
forward-zone:
	name: "."
	forward-addr: 127.0.0.1@$upport
EOF
	} >"$dir/unbound.conf"
	unbound -d -c "$dir/unbound.conf" 2>"$dir/log" &
	T_PIDS="$T_PIDS $!"
	eval "UB_PORT_$id=$port UB_PID_$id=$! UB_LOG_$id=$dir/log"
	wait_tcp "$port" $! || {
		echo "unbound $id did not start:"
		cat "$dir/log"
		return 1
	}
}

# kdig_tls PORT QNAME QTYPE [kdig options]: one query over TLS to
# 127.0.0.1:PORT, authenticating $TLS_NAME against $TLS_CA.
kdig_tls() {
	local port=$1 n=$2 t=$3
	shift 3
	kdig @127.0.0.1 -p "$port" +tls-ca="$TLS_CA" \
	    +tls-hostname="$TLS_NAME" +time=$((3 * SLOW)) +retry=0 \
	    "$n" "$t" "$@" 2>&1
}

# tls_check_unbound ID: a query through Unbound's TLS port answers NOERROR.
tls_check_unbound() {
	local port
	eval "port=\$UB_PORT_$1"
	kdig_tls "$port" "tls-check.test" A | grep -q 'status: NOERROR'
}
