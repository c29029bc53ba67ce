# DNSCrypt test servers for the integration tests (bash), sourced after
# lib.sh.  dnsdist (Debian's package is built with DNSCrypt) serves
# DNSCrypt v2 on 127.0.0.1, UDP and TCP on one port, in front of an
# upstream such as fakeup, with its own provider key and certificates under
# $T_TMP.  It is started and stopped by PID like everything else (T_PIDS),
# never phones home (setSecurityPollSuffix("")), and takes console
# commands on a loopback port with a per-run key.
#
#   dc_available                  0 if dnsdist with DNSCrypt is installed
#   start_dnscrypt NAME UPPORT    start a server in front of 127.0.0.1:UPPORT
#   dc_stamp NAME                 print its sdns:// stamp
#   dc_rotate NAME [drop-old]     new resolver key and certificate
#   dc_console NAME 'lua'         one console command
#   dc_certs NAME                 serials and es-versions it holds
#   stop_dnscrypt NAME            SIGTERM, wait for the exit
#
# Settings read by start_dnscrypt and dc_rotate: DC_ES (es-version of new
# certificates, 1 = X25519-XSalsa20Poly1305, 2 = X25519-XChaCha20Poly1305;
# default 2), DC_VALID_FOR (seconds a new certificate is valid from now;
# default 86400; certificates start 60 s in the past so clocks may differ).
#
# What dnsdist 1.7.3 does that a client must cope with (seen with a test
# client): it answers the certificate query over UDP, but over TCP with an
# empty (zero-length) message, so certificates must be fetched over UDP;
# over UDP it pads a response to a length that may exceed the query's,
# and truncates (TC, header and question only) every answer larger than
# the padded query: a 686-byte answer (fakeup's big-* A) came back whole
# once the client's minimum query length had grown to 704, while big-*
# AAAA (1166 bytes) and big-* TXT (about 3000) need TCP even at the
# largest minimum; a query
# made with a certificate removed by dc_rotate drop-old gets no answer at
# all, over UDP or TCP, so only a timeout tells the client to fetch
# certificates again.
#
# start_dnscrypt sets, for NAME:
#   DC_PORT_NAME      the DNSCrypt port (UDP and TCP) on 127.0.0.1
#   DC_STAMP_NAME     the sdns:// stamp (address 127.0.0.1:PORT)
#   DC_PROVIDER_NAME  the provider name, "2.dnscrypt-cert.NAME.test"
#   DC_PID_NAME       dnsdist's PID
#   DC_SERIAL_NAME    the serial of the newest certificate (1 at start)
#   DC_DIR_NAME       its directory: provider.pub (32 raw bytes),
#                     provider.key, cert-N / key-N per serial, dnsdist.conf,
#                     dnsdist.log

DNSDIST=${DNSDIST:-dnsdist}

# dc_available: dnsdist is installed and reports DNSCrypt support.
dc_available() {
	command -v "$DNSDIST" >/dev/null 2>&1 &&
	    "$DNSDIST" --version 2>/dev/null | grep -qw dnscrypt
}

# dc_now: wall-clock seconds, the clock certificates are written in.
dc_now() { date +%s; }

# dc_var NAME FIELD: the value of DC_FIELD_NAME.
dc_var() { eval "printf '%s' \"\${DC_$2_$1}\""; }

# dc_exchange ES: the dnsdist constant for an es-version.
dc_exchange() {
	case "$1" in
	1) echo DNSCryptExchangeVersion.VERSION1 ;;
	2) echo DNSCryptExchangeVersion.VERSION2 ;;
	*) echo "dc: es-version must be 1 or 2, not '$1'" >&2; return 1 ;;
	esac
}

# dc_make_stamp ADDR PUBKEYFILE PROVIDER: the sdns:// stamp (DNSCrypt kind,
# no properties), built with coreutils only.
dc_make_stamp() {
	local addr=$1 pk=$2 name=$3
	[ "$(wc -c <"$pk")" -eq 32 ] || { echo "dc: $pk is not a 32-byte key" >&2; return 1; }
	{
		printf '\001\000\000\000\000\000\000\000\000'
		printf '%b%s' "\\0$(printf '%03o' "${#addr}")" "$addr"
		printf '\040'; cat "$pk"
		printf '%b%s' "\\0$(printf '%03o' "${#name}")" "$name"
	} | base64 -w0 | tr '+/' '-_' | tr -d '=' | sed 's/^/sdns:\/\//'
}

# start_dnscrypt NAME UPPORT: provider keys, certificate serial 1, and
# dnsdist serving DNSCrypt for provider 2.dnscrypt-cert.NAME.test on a port
# it picks, forwarding to 127.0.0.1:UPPORT (over UDP, and TCP for TCP
# clients).  Sets the DC_*_NAME variables above and prints nothing; returns
# 1 (with dnsdist's log on stdout) if the server did not come up.
start_dnscrypt() {
	local name=$1 upport=$2 dir port ctl key provider now es pid
	es=${DC_ES:-2}
	dc_exchange "$es" >/dev/null || return 1
	dir="$T_TMP/dc-$name"
	mkdir -p "$dir"
	provider="2.dnscrypt-cert.$name.test"
	now=$(dc_now)
	# These functions run only while the configuration is read, so a
	# --check-config pass is a way to call them offline.
	cat >"$dir/gen.conf" <<-EOF
	setSecurityPollSuffix("")
	generateDNSCryptProviderKeys("$dir/provider.pub", "$dir/provider.key")
	generateDNSCryptCertificate("$dir/provider.key", "$dir/cert-1", "$dir/key-1", 1, $((now - 60)), $((now + ${DC_VALID_FOR:-86400})), $(dc_exchange "$es"))
	EOF
	if ! "$DNSDIST" -C "$dir/gen.conf" --check-config >"$dir/gen.log" 2>&1 ||
	    [ ! -s "$dir/cert-1" ]; then
		echo "dnsdist could not make DNSCrypt keys:"; cat "$dir/gen.log"
		return 1
	fi
	port=$(pick_port); ctl=$(pick_port)
	key=$(head -c 32 /dev/urandom | base64 -w0)
	# setUp(): the backend is always "up", so dnsdist sends it no health
	# checks that would show in fakeup's query log and counters.
	cat >"$dir/dnsdist.conf" <<-EOF
	setSecurityPollSuffix("")
	-- Room for bursts: the benchmark floods it, and a full buffer drops
	-- queries silently (they would show as the forwarder's timeouts).
	setUDPSocketBufferSizes(4194304, 4194304)
	controlSocket("127.0.0.1:$ctl")
	setKey("$key")
	newServer{address="127.0.0.1:$upport"}:setUp()
	addDNSCryptBind("127.0.0.1:$port", "$provider", "$dir/cert-1", "$dir/key-1")
	EOF
	"$DNSDIST" -C "$dir/dnsdist.conf" --supervised --disable-syslog \
	    >"$dir/dnsdist.log" 2>&1 &
	pid=$!
	T_PIDS="$T_PIDS $pid"
	eval "DC_PORT_$name=$port DC_PID_$name=$pid DC_SERIAL_$name=1"
	eval "DC_DIR_$name=\$dir DC_PROVIDER_$name=\$provider"
	eval "DC_STAMP_$name=\$(dc_make_stamp 127.0.0.1:$port \"\$dir/provider.pub\" \"\$provider\")"
	if ! wait_dns 127.0.0.1 "$port" "$pid" || ! dc_wait_console "$name"; then
		echo "dnsdist $name did not start:"; cat "$dir/dnsdist.log"
		return 1
	fi
}

# dc_wait_console NAME: waits until the console answers (up to 5 s).
dc_wait_console() {
	for _ in $(seq 1 $((50 * SLOW))); do
		dc_console "$1" 'showVersion()' >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# dc_stamp NAME: prints the server's stamp.
dc_stamp() { dc_var "$1" STAMP; echo; }

# dc_console NAME 'lua': runs one console command and prints its output;
# fails when the console cannot be reached or the command raised an error
# (dnsdist's client exits 0 either way, so its output is checked).
dc_console() {
	local dir out
	dir=$(dc_var "$1" DIR)
	out=$(timeout 10 "$DNSDIST" -C "$dir/dnsdist.conf" -c -e "$2" 2>&1) || {
		printf '%s\n' "$out"; return 1; }
	printf '%s\n' "$out"
	case "$out" in *"Error"* | *"Fatal"* | *"Connection refused"*) return 1 ;; esac
	return 0
}

# dc_certs NAME: one line "SERIAL ES active|inactive" per certificate
# dnsdist holds.
dc_certs() {
	# The console prints what the command returns (print() would go to
	# dnsdist's own log).
	dc_console "$1" '(function() local t = {}; for _, p in ipairs(getDNSCryptBind(0):getCertificatePairs()) do local c = p:getCertificate(); table.insert(t, c:getSerial() .. " " .. string.byte(c:getEsVersion(), 2) .. (p:isActive() and " active" or " inactive")) end; return table.concat(t, "\n") end)()'
}

# dc_rotate NAME [drop-old]: what a provider does when it rotates: a new
# resolver key pair and a certificate with the next serial (DC_ES,
# DC_VALID_FOR), signed by the same provider key and loaded into the
# running server; the previous certificate is no longer advertised but
# still answers queries made with it, or, with drop-old, is removed, so
# those queries go unanswered.  The stamp does not change.  Sets
# DC_SERIAL_NAME.
dc_rotate() {
	local name=$1 mode=${2:-} dir old new now es
	dir=$(dc_var "$name" DIR); old=$(dc_var "$name" SERIAL)
	new=$((old + 1)); now=$(dc_now); es=${DC_ES:-2}
	dc_exchange "$es" >/dev/null || return 1
	if ! { dc_console "$name" "generateDNSCryptCertificate('$dir/provider.key', '$dir/cert-$new', '$dir/key-$new', $new, $((now - 60)), $((now + ${DC_VALID_FOR:-86400})), $(dc_exchange "$es"))" >/dev/null &&
	    dc_console "$name" "getDNSCryptBind(0):loadNewCertificate('$dir/cert-$new', '$dir/key-$new')" >/dev/null &&
	    dc_console "$name" "getDNSCryptBind(0):markInactive($old)" >/dev/null; }; then
		echo "dc_rotate $name: failed"; return 1
	fi
	if [ "$mode" = drop-old ]; then
		dc_console "$name" "getDNSCryptBind(0):removeInactiveCertificate($old)" >/dev/null || {
			echo "dc_rotate $name: could not remove serial $old"; return 1; }
	fi
	eval "DC_SERIAL_$name=$new"
}

# stop_dnscrypt NAME: SIGTERM and wait (at most 5 s) for dnsdist to exit;
# WAIT_RC is then 143, dnsdist ending by the signal (lib.sh's wait_pid).
stop_dnscrypt() {
	local pid
	pid=$(dc_var "$1" PID)
	kill -TERM "$pid" 2>/dev/null
	wait_pid "$pid" 5
}
