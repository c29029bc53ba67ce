#!/bin/sh
# Installs the Debian packages named as arguments that are not installed yet.
# Server packages (nsd, unbound) must not start themselves and take port 53,
# so installation runs under a policy-rc.d that forbids starting services.
missing=""
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=sudo
	else
		echo "install-deps: missing packages:$missing (run as root or install them)" >&2
		exit 1
	fi
fi
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
	$SUDO chmod +x "$policy"
	created=1
fi
export DEBIAN_FRONTEND=noninteractive
{ $SUDO apt-get update -qq || true; } &&
	$SUDO apt-get install -y -qq --no-install-recommends $missing
rc=$?
[ -n "$created" ] && $SUDO rm -f "$policy"
exit $rc
