#!/bin/bash
# Hostile and malformed client input over UDP (and a little TCP): every case
# gets the documented reaction (drop, FORMERR, NOTIMP, BADVERS, ...), and a
# normal query right after it must still be answered.
. "$(dirname "$0")/lib.sh"
DNSRAW="python3 $(dirname "$0")/dnsraw.py"

raw() { $DNSRAW --port "$STUB_PORT" --timeout $((3 * SLOW)) "$@"; }
N_PROBE=0
# rawq: for cases that expect no reply at all.  A probe query follows from
# the same socket: "noreply probe=NOERROR" means the case got no reply and
# stubborn answered the next query (no long wait for a timeout).
rawq() {
	N_PROBE=$((N_PROBE + 1))
	$DNSRAW --port "$STUB_PORT" --timeout $((3 * SLOW)) \
	    --probe "probe$N_PROBE.example.com" --grace "$((3 * SLOW))e-1" "$@"
}
# hq ARGS: the hex of the query dnsraw would build.
hq() { $DNSRAW --port 1 --print-query "$@"; }
fld() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n1; }
# rc LINE: the rcode of a dnsraw line, or the whole line ("timeout", ...).
rc() { local v; v=$(fld rcode "$1"); echo "${v:-$1}"; }
rep() { printf "%0$2d" 0 | sed "s/0/$1/g"; }

N_ALIVE=0
# alive "after what": a normal query right after a hostile one is answered.
alive() {
	N_ALIVE=$((N_ALIVE + 1))
	local r
	r=$(raw --name "alive$N_ALIVE.example.com" --id $((N_ALIVE + 100)))
	if [ "$(rc "$r")" = NOERROR ] && [ "$(fld id "$r")" = $((N_ALIVE + 100)) ] &&
	    kill -0 "$STUB_PID" 2>/dev/null; then
		ok "still answering after: $1"
	else
		not_ok "still answering after: $1 (got: $r)"
	fi
}

start_fakeup up
start_stubborn --upstream "127.0.0.1:$FK_PORT_up"

# --- too short, responses ---------------------------------------------------------
r=$(rawq --hex 0102030405)
expect_eq "5-byte packet: dropped (no reply)" "noreply probe=NOERROR" "$r"
alive "5-byte packet"
r=$(rawq --hex '')
expect_eq "empty datagram: dropped" "noreply probe=NOERROR" "$r"
alive "empty datagram"
r=$(rawq --name qr.example.com --flags qr,rd)
expect_eq "QR=1 (a response): dropped" "noreply probe=NOERROR" "$r"
alive "QR=1"

# --- header / question shape ------------------------------------------------------
r=$(raw --hex 'abcd 0100 0000 0000 0000 0000')
expect_eq "header only (QDCOUNT 0): FORMERR" FORMERR "$(rc "$r")"
expect_eq "header only: ID echoed, QR set, no question" "43981 qr,rd,ra 0" \
    "$(fld id "$r") $(fld flags "$r") $(fld qdcount "$r")"
alive "header only"

Q=$(hq --name two.example.com --qdcount 2)
r=$(raw --hex "$Q${Q:24}")
expect_eq "QDCOUNT 2 (two questions): FORMERR" FORMERR "$(rc "$r")"
alive "QDCOUNT 2"
r=$(raw --hex "$Q")
expect_eq "QDCOUNT 2 with one question present: FORMERR" FORMERR "$(rc "$r")"
alive "QDCOUNT 2, one question"

r=$(raw --hex 'ab01 0100 0001 0000 0000 0000 03777777 c00c 0001 0001')
expect_eq "compression pointer in the qname: FORMERR" FORMERR "$(rc "$r")"
alive "compression pointer"
r=$(raw --hex 'ab02 0100 0001 0000 0000 0000 c00c 0001 0001')
expect_eq "pointer loop (name points at itself): FORMERR" FORMERR "$(rc "$r")"
alive "pointer loop"
r=$(raw --hex 'ab03 0100 0001 0000 0000 0000 03777777 c00e 0001 0001')
expect_eq "forward compression pointer: FORMERR" FORMERR "$(rc "$r")"
alive "forward pointer"
r=$(raw --hex "ab04 0100 0001 0000 0000 0000 40$(rep 61 64)00 0001 0001")
expect_eq "label length 64 (0x40 label type): FORMERR" FORMERR "$(rc "$r")"
alive "label > 63"
r=$(raw --hex "ab05 0100 0001 0000 0000 0000 8161 00 0001 0001")
expect_eq "label type 0x80: FORMERR" FORMERR "$(rc "$r")"
alive "label type 0x80"
r=$(raw --hex "ab06 0100 0001 0000 0000 0000 0361616100")
expect_eq "question cut before QTYPE: FORMERR" FORMERR "$(rc "$r")"
alive "question without type/class"
r=$(raw --hex "ab07 0100 0001 0000 0000 0000 056161")
expect_eq "name runs past the end: FORMERR" FORMERR "$(rc "$r")"
alive "name past the end"

L63=$(rep a 63)
L62=$(rep b 62)
L61=$(rep c 61)
r=$(raw --name "$L63.$L63.$L63.$L62")
expect_eq "name of 256 bytes: FORMERR" FORMERR "$(rc "$r")"
alive "name of 256 bytes"
r=$(raw --name "$L63.$L63.$L63.$L63.$L63")
expect_eq "name of 321 bytes: FORMERR" FORMERR "$(rc "$r")"
alive "name of 321 bytes"
r=$(raw --name "$L63.$L63.$L63.$L61")
expect_eq "name of exactly 255 bytes: answered" NOERROR "$(rc "$r")"
expect_eq "name of 255 bytes: forwarded upstream" 1 "$(fk_count up "^udp $L63\\.")"
alive "name of 255 bytes"

r=$(raw --name trailing.example.com --pad 10)
expect_eq "10 junk bytes after the question: FORMERR" FORMERR "$(rc "$r")"
alive "trailing junk"
r=$(raw --name noar.example.com --arcount 1)
expect_eq "ARCOUNT 1 with no record: FORMERR" FORMERR "$(rc "$r")"
alive "ARCOUNT overrun"

# --- opcodes, classes, flags ------------------------------------------------------
r=$(raw --name status.example.com --opcode 2)
expect_eq "opcode 2 (STATUS): NOTIMP" NOTIMP "$(rc "$r")"
expect_eq "opcode 2: opcode echoed" 2 "$(fld opcode "$r")"
r=$(raw --name op15.example.com --opcode 15)
expect_eq "opcode 15: NOTIMP" NOTIMP "$(rc "$r")"
r=$(raw --name notify.example.com --opcode 4)
expect_eq "opcode 4 (NOTIFY): NOTIMP" NOTIMP "$(rc "$r")"
expect_eq "unknown opcodes never reach the upstream" 0 "$(fk_count up 'status\.|op15\.|notify\.')"
alive "opcodes"

r=$(raw --name version.bind --type TXT --class CH)
check "class CH: a reply (forwarded, whatever fakeup says) ($r)" \
    sh -c 'case "$1" in id=*) exit 0;; *) exit 1;; esac' _ "$r"
expect_eq "class CH: question echoed with class 3" 3 "$(fld qclass "$r")"
expect_eq "class CH: forwarded upstream" 1 "$(fk_count up '^udp version\.bind\. TXT ')"
alive "class CH"
r=$(raw --name class254.example.com --class 254)
check "class 254: a reply, not a crash ($r)" \
    sh -c 'case "$1" in id=*) exit 0;; *) exit 1;; esac' _ "$r"
alive "class 254"

r=$(raw --name zflag.example.com --flags rd,z)
expect_eq "Z flag in the query: answered" NOERROR "$(rc "$r")"
expect_eq "Z flag in the query: Z clear in the reply" 0 "$(fld z "$r")"
r=$(raw --name zflag.example.com --flags rd,z)
expect_eq "Z flag, cached answer: Z clear" 0 "$(fld z "$r")"
r=$(raw --name adcd.example.com --flags rd,ad,cd,aa,tc,ra)
expect_eq "AA/TC/RA/AD set in the query: flags qr,rd,ra,cd back" "NOERROR qr,rd,ra,cd" \
    "$(rc "$r") $(fld flags "$r")"
alive "odd header flags"

# --- EDNS -------------------------------------------------------------------------
r=$(raw --name v1.example.com --edns-version 1)
expect_eq "EDNS version 1: BADVERS" BADVERS "$(rc "$r")"
expect_eq "BADVERS carries OPT version 0" "yes 0" "$(fld opt "$r") $(fld ednsver "$r")"
expect_eq "BADVERS: no answer records" 0 "$(fld ancount "$r")"
expect_eq "EDNS version 1 not forwarded" 0 "$(fk_count up '^udp v1\.example\.com')"
r=$(raw --name v1.example.com --edns-version 1 --do --opt-raw 0064000401020304)
expect_eq "EDNS version 1 with DO and an unknown option: BADVERS" BADVERS "$(rc "$r")"
alive "EDNS version 1"

Q=$(hq --name twoopt.example.com --edns --arcount 2)
r=$(raw --hex "${Q}00002904d0000000000000")
expect_eq "two OPT records: FORMERR" FORMERR "$(rc "$r")"
alive "two OPTs"
r=$(raw --name optan.example.com --edns --ancount 1 --arcount 0)
expect_eq "OPT in the answer section: FORMERR" FORMERR "$(rc "$r")"
alive "OPT in answer"
r=$(raw --name optns.example.com --edns --nscount 1 --arcount 0)
expect_eq "OPT in the authority section: FORMERR" FORMERR "$(rc "$r")"
alive "OPT in authority"
Q=$(hq --name optowner.example.com --arcount 1)
r=$(raw --hex "${Q}0161000029 04d0 00000000 0000")
expect_eq "OPT with a non-root owner: FORMERR" FORMERR "$(rc "$r")"
alive "OPT owner"
r=$(raw --name badopt.example.com --opt-raw 000a00100102)
expect_eq "option length past the OPT RDATA: FORMERR" FORMERR "$(rc "$r")"
r=$(raw --name badopt2.example.com --opt-raw 000a00)
expect_eq "OPT RDATA with a cut option header: FORMERR" FORMERR "$(rc "$r")"
alive "bad option length"
r=$(raw --name cookie7.example.com --opt-raw 000a000701020304050607)
expect_eq "cookie of 7 bytes: FORMERR" FORMERR "$(rc "$r")"
r=$(raw --name cookie12.example.com --opt-raw "000a000c$(rep 11 12)")
expect_eq "cookie of 12 bytes: FORMERR" FORMERR "$(rc "$r")"
r=$(raw --name cookie41.example.com --opt-raw "000a0029$(rep 22 41)")
expect_eq "cookie of 41 bytes: FORMERR" FORMERR "$(rc "$r")"
r=$(raw --name cookie8.example.com --opt-raw 000a00080102030405060708)
expect_eq "client cookie of 8 bytes: NOERROR" NOERROR "$(rc "$r")"
alive "cookie lengths"
r=$(raw --name opt100.example.com --opt-raw 0064000401020304)
expect_eq "unknown EDNS option 100: NOERROR" NOERROR "$(rc "$r")"
check "unknown EDNS option 100: not echoed (opts=$(fld opts "$r"))" \
    sh -c 'case ",$1," in *,100,*) exit 1;; *) exit 0;; esac' _ "$(fld opts "$r")"
r=$(raw --name ednsflag.example.com --opt-flags 0x0040)
expect_eq "unknown EDNS flag 0x0040: NOERROR" NOERROR "$(rc "$r")"
expect_eq "unknown EDNS flag: not echoed" 0x0000 "$(fld ednsflags "$r")"
r=$(raw --name do.example.com --do)
expect_eq "DO=1: echoed" "NOERROR 1" "$(rc "$r") $(fld do "$r")"
r=$(raw --name small.example.com --bufsize 100)
expect_eq "EDNS size 100 (read as 512): small answer fits" "NOERROR 1" "$(rc "$r") $(fld ancount "$r")"
expect_eq "EDNS size 100: our OPT offers 1232" 1232 "$(fld udpsize "$r")"
r=$(raw --name big.example.com --type A --bufsize 100)
expect_eq "EDNS size 100: a 680-byte answer is truncated" "qr,tc,rd,ra 0" "$(fld flags "$r") $(fld ancount "$r")"
alive "EDNS options"

# --- sizes and noise ----------------------------------------------------------------
r=$(rawq --name oversized.example.com --pad 4950)
expect_eq "5000-byte UDP query: dropped" "noreply probe=NOERROR" "$r"
alive "5000-byte query"
r=$(raw --tcp --name oversized-tcp.example.com --pad 4950)
expect_eq "5000-byte TCP query (junk after the question): FORMERR" FORMERR "$(rc "$r")"
alive "5000-byte TCP query"

n=$([ -n "$VALGRIND" ] && echo 50 || echo 200)
r=$($DNSRAW --port "$STUB_PORT" --garbage "$n" --seed 7 --timeout "$((5 * SLOW))e-1")
check "$n random datagrams sent ($r)" sh -c 'case "$1" in sent=*) exit 0;; *) exit 1;; esac' _ "$r"
alive "$n random datagrams"
r=$($DNSRAW --port "$STUB_PORT" --garbage "$n" --seed 8 --timeout "$((5 * SLOW))e-1")
alive "$n more random datagrams"

# --- exact echo of ID and question bytes -----------------------------------------------
Q=$(hq --name wWw.ExAmPlE.CoM --id 0xa5a5)
r=$(raw --hex "$Q")
expect_eq "mixed case: ID echoed" 42405 "$(fld id "$r")"
expect_eq "mixed case: question bytes echoed exactly" "${Q:24:34}" "$(fld qname_hex "$r")"
expect_eq "mixed case: answer" NOERROR "$(rc "$r")"
Q=$(hq --name WWW.example.COM --id 0x0001)
r=$(raw --hex "$Q")
expect_eq "cached, other case: question bytes echoed exactly" "${Q:24:34}" "$(fld qname_hex "$r")"
expect_eq "cached, other case: ID echoed" 1 "$(fld id "$r")"
expect_eq "mixed case: upstream asked once" 1 "$(fk_count up '^udp www\.example\.com\. A ')"
r=$(raw --name 'A-B_c.Example.com' --id 0xffff)
expect_eq "underscore and hyphen, ID 0xffff: echoed" "65535 A-B_c.Example.com." "$(fld id "$r") $(fld qname "$r")"
r=$(raw --hex "$(hq --name x.example.com --id 0)" --tcp)
expect_eq "ID 0 over TCP: echoed" "0 NOERROR" "$(fld id "$r") $(rc "$r")"
alive "echo checks"

stop_stubborn
t_done
