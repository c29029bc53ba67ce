#!/usr/bin/env python3
"""Deployment checks (make check-deploy).

What a user installs and applies must work as written:

- make install / uninstall (into a DESTDIR): files, modes, PREFIX in the
  units, an existing config kept;
- the sysusers file creates the user (systemd-sysusers --root);
- systemd-analyze verify accepts the installed units (the binary path
  substituted by build/stubborn, since the installed path does not exist
  here), and rejects a unit with a mistake in it, so the check can fail;
- the unit carries the settings the README promises (hardening, notify,
  reload, directories), and its socket listens where the config does;
- stubborn --check-config accepts the shipped config and the exact command
  lines of the unit's ExecStart, the DaemonSet's container and the
  sidecar's container.  Paths that exist only on the target are replaced:
  for the unit, every absolute path argument is looked up under the
  DESTDIR install (which stands for the target's root, with the unit's
  StateDirectory and RuntimeDirectory created there); for a container,
  every path under a volume mount is moved to a directory standing for
  that volume (a ConfigMap's files written into it), in the arguments and
  in the config file alike; the image's /usr/local/sbin/stubborn is
  build/stubborn;
- the Kubernetes YAML parses, and the probes ask for the paths, port and
  address the daemon serves with that config (metrics ADDR:PORT, /health,
  /ready); the rolling update can surge and hand over;
- the Containerfile installs what the binary links and the Makefile builds
  with, and names the paths and uid the manifests use;
- stubborn-pod, the DaemonSet's entry point, passes SIGTERM on, passes
  failures on, and stays up after a handover;
- as root: inside a private network and mount namespace (unshare -n -m;
  nothing leaves it), the DaemonSet's init script runs twice, then the
  DaemonSet's and the sidecar's exact command lines start, with the
  upstreams pointed at build/fakeup on 127.0.0.1, the sidecar as uid 10053
  with the pod's sysctl; their probe URLs answer, and so does DNS.

Prints "ok - ...", "not ok - ..." or "SKIP - ..." per check; exits 1 if
any check failed.

Usage: BUILD=build python3 tests/deploy/run.py   (from anywhere)
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD", "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(ROOT, BUILD)
STUBBORN = os.path.join(BUILD, "stubborn")
FAKEUP = os.path.join(BUILD, "fakeup")
K8S = os.path.join(ROOT, "config", "kubernetes")
DAEMONSET = os.path.join(K8S, "stubborn-daemonset.yaml")
SIDECAR = os.path.join(K8S, "stubborn-sidecar.yaml")
WRAPPER = os.path.join(K8S, "stubborn-pod")
CONTAINERFILE = os.path.join(K8S, "Containerfile")
# What the image holds (Containerfile): stubborn at make install's
# PREFIX=/usr/local, and its user.
IMAGE_STUBBORN = "/usr/local/sbin/stubborn"
IMAGE_WRAPPER = "/usr/local/sbin/stubborn-pod"
IMAGE_UID = 10053
RESOLV_LOCAL = os.path.join(ROOT, "tests", "config", "resolv.local")

passed = 0
failed = 0
skipped = 0


def ok(msg):
    global passed
    passed += 1
    print("ok - %s" % msg, flush=True)


def not_ok(msg, detail=None):
    global failed
    failed += 1
    print("not ok - %s" % msg, flush=True)
    if detail:
        for line in str(detail).rstrip().splitlines()[:40]:
            print("    " + line, flush=True)


def skip(msg, why):
    global skipped
    skipped += 1
    print("SKIP - %s: %s" % (msg, why), flush=True)


def check(cond, msg, detail=None):
    if cond:
        ok(msg)
    else:
        not_ok(msg, detail)
    return cond


def run(argv, timeout=60, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, **kw)


# ---- config print-back --------------------------------------------------

def parse_conf(text):
    """key -> [values] of "key = value" lines (a print-back or a file)."""
    conf = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z0-9-]+)\s*=\s*(.*?)\s*$", line)
        if m:
            conf.setdefault(m.group(1), []).append(m.group(2))
    return conf


def check_config(argv, label):
    """Runs argv + --check-config; returns the parsed print-back or None."""
    p = run(argv + ["--check-config"])
    if not check(p.returncode == 0,
                 "%s: --check-config exits 0" % label,
                 "$ %s --check-config\n%s" % (" ".join(shlex.quote(a) for a in argv),
                                               p.stdout)):
        return None
    return parse_conf(p.stdout)


def split_addr(addr):
    """"169.254.20.10:9153" or "[::1]:9153" -> (host, port)."""
    m = re.match(r"^\[(.*)\]:(\d+)$", addr) or re.match(r"^([^:]*):(\d+)$", addr)
    if not m:
        return None, None
    return m.group(1), int(m.group(2))


WILDCARDS = ("0.0.0.0", "::")

# ---- make install ------------------------------------------------------


def make(*args):
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    env.pop("MAKELEVEL", None)
    return run(["make", "-s", "-C", ROOT, "BUILD=" + BUILD] + list(args),
               timeout=300, env=env)


def read_unit(path):
    """[(section, key, value)] of a unit file."""
    out = []
    section = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            k, _, v = line.partition("=")
            out.append((section, k.strip(), v.strip()))
    return out


def unit_values(unit, key):
    return [v for _, k, v in unit if k == key]


def test_install(tmp):
    """Returns the DESTDIR of a PREFIX=/usr/local install, for later checks."""
    dest = os.path.join(tmp, "root")
    p = make("install", "DESTDIR=" + dest)
    if not check(p.returncode == 0, "make install DESTDIR=... exits 0", p.stdout):
        return None
    want = {
        "usr/local/sbin/stubborn": 0o755,
        "usr/local/lib/systemd/system/stubborn.service": 0o644,
        "usr/local/lib/systemd/system/stubborn.socket": 0o644,
        "usr/local/lib/sysusers.d/stubborn.conf": 0o644,
        "etc/stubborn/stubborn.conf": 0o644,
    }
    for rel, mode in sorted(want.items()):
        path = os.path.join(dest, rel)
        if os.path.exists(path):
            got = os.stat(path).st_mode & 0o777
            check(got == mode, "make install: /%s, mode %o" % (rel, mode),
                  "mode is %o" % got)
        else:
            not_ok("make install: /%s, mode %o" % (rel, mode), "missing")
    inst_ctl = os.path.join(dest, "usr/local/sbin/stubborn-ctl")
    check(os.access(inst_ctl, os.X_OK),
          "make install: /usr/local/sbin/stubborn-ctl, next to the daemon")
    with open(os.path.join(ROOT, "config/stubborn.conf")) as a, \
            open(os.path.join(dest, "etc/stubborn/stubborn.conf")) as b:
        check(a.read() == b.read(),
              "make install: /etc/stubborn/stubborn.conf is the shipped config")
    for u in ("stubborn.service", "stubborn.socket"):
        with open(os.path.join(ROOT, "config", u)) as a, \
                open(os.path.join(dest, "usr/local/lib/systemd/system", u)) as b:
            check(a.read() == b.read(),
                  "make install: PREFIX=/usr/local installs %s as shipped" % u)
    # An existing config survives a second install.
    conf = os.path.join(dest, "etc/stubborn/stubborn.conf")
    with open(conf, "a") as f:
        f.write("log-level = debug\n")
    p = make("install", "DESTDIR=" + dest)
    with open(conf) as f:
        kept = f.read().endswith("log-level = debug\n")
    check(p.returncode == 0 and kept,
          "make install again: keeps a changed /etc/stubborn/stubborn.conf", p.stdout)

    # PREFIX reaches ExecStart, and nothing else changes.
    dest2 = os.path.join(tmp, "root-usr")
    p = make("install", "DESTDIR=" + dest2, "PREFIX=/usr")
    unit = os.path.join(dest2, "usr/lib/systemd/system/stubborn.service")
    if check(p.returncode == 0 and os.path.exists(unit)
             and os.path.exists(os.path.join(dest2, "usr/sbin/stubborn"))
             and os.path.exists(os.path.join(dest2, "usr/lib/sysusers.d/stubborn.conf")),
             "make install PREFIX=/usr: /usr/sbin, /usr/lib/systemd/system, "
             "/usr/lib/sysusers.d", p.stdout):
        execs = unit_values(read_unit(unit), "ExecStart")
        check(len(execs) == 1 and execs[0].startswith("/usr/sbin/stubborn "),
              "make install PREFIX=/usr: ExecStart runs /usr/sbin/stubborn", execs)
    # uninstall: everything but the changed config.
    p = make("uninstall", "DESTDIR=" + dest2, "PREFIX=/usr")
    left = []
    for d, _, files in os.walk(dest2):
        left += [os.path.relpath(os.path.join(d, f), dest2) for f in files]
    check(p.returncode == 0 and left == [],
          "make uninstall: removes every installed file (config unchanged)",
          p.stdout + "left: %s" % left)
    p = make("uninstall", "DESTDIR=" + dest)
    left = []
    for d, _, files in os.walk(dest):
        left += [os.path.relpath(os.path.join(d, f), dest) for f in files]
    check(p.returncode == 0 and left == ["etc/stubborn/stubborn.conf"],
          "make uninstall: keeps a changed config, removes the rest",
          p.stdout + "left: %s" % left)
    # A fresh install for the checks that follow.
    shutil.rmtree(dest)
    p = make("install", "DESTDIR=" + dest)
    if not check(p.returncode == 0, "make install into a fresh DESTDIR", p.stdout):
        return None
    return dest


def test_sysusers(tmp, dest):
    if not shutil.which("systemd-sysusers"):
        not_ok("systemd-sysusers is installed (package systemd)")
        return
    sysroot = os.path.join(tmp, "sysusers-root")
    os.makedirs(os.path.join(sysroot, "etc"))
    p = run(["systemd-sysusers", "--root=" + sysroot,
             os.path.join(dest, "usr/local/lib/sysusers.d/stubborn.conf")])
    passwd = ""
    if os.path.exists(os.path.join(sysroot, "etc/passwd")):
        with open(os.path.join(sysroot, "etc/passwd")) as f:
            passwd = f.read()
    m = re.search(r"^stubborn:x:(\d+):(\d+):[^:]*:[^:]*:(\S+)$", passwd, re.M)
    check(p.returncode == 0 and m and int(m.group(1)) < 1000
          and m.group(3).endswith("nologin"),
          "sysusers.d file: systemd-sysusers creates the system user stubborn "
          "(no login)", p.stdout + passwd)


# ---- systemd units ------------------------------------------------------

SERVICE_MUST = {
    "Type": "notify",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
    "User": "stubborn",
    "NoNewPrivileges": "yes",
    "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
    "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "SystemCallFilter": "@system-service",
    "StateDirectory": "stubborn",
    "RuntimeDirectory": "stubborn",
    "RuntimeDirectoryPreserve": "yes",
}


def verify_units(unit_dir, label, expect_clean=True):
    """systemd-analyze verify on stubborn.service and .socket in unit_dir.
    It reports most mistakes (unknown keys, bad values) only as messages and
    exits 0, so any output counts as a finding."""
    p = run(["systemd-analyze", "verify", "--man=no",
             os.path.join(unit_dir, "stubborn.socket"),
             os.path.join(unit_dir, "stubborn.service")])
    clean = p.returncode == 0 and p.stdout.strip() == ""
    if expect_clean:
        check(clean, "%s: systemd-analyze verify reports nothing" % label, p.stdout)
    else:
        check(not clean, "%s: systemd-analyze verify reports it" % label,
              "exit %d, no output" % p.returncode)


def test_units(tmp, dest, dyn):
    if not shutil.which("systemd-analyze"):
        not_ok("systemd-analyze is installed (package systemd)")
        return
    installed = os.path.join(dest, "usr/local/lib/systemd/system")
    # The installed binary path does not exist on this machine: point
    # ExecStart at build/stubborn in a copy of the installed units.
    units = os.path.join(tmp, "units")
    os.makedirs(units)
    for u in ("stubborn.service", "stubborn.socket"):
        with open(os.path.join(installed, u)) as f:
            text = f.read()
        with open(os.path.join(units, u), "w") as f:
            f.write(text.replace("/usr/local/sbin/stubborn", STUBBORN))
    verify_units(units, "installed units, binary path substituted")

    # The same check on units with one mistake each must complain.
    with open(os.path.join(units, "stubborn.service")) as f:
        good = f.read()
    for what, bad in (
            ("a misspelt key", good.replace("ProtectHome=", "ProtectHomes=")),
            ("a bad value", good.replace("ProtectSystem=strict", "ProtectSystem=strictly")),
            ("a missing binary", good.replace(STUBBORN, STUBBORN + "-missing"))):
        broken = os.path.join(tmp, "units-broken")
        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(units, broken)
        with open(os.path.join(broken, "stubborn.service"), "w") as f:
            f.write(bad)
        verify_units(broken, "a service unit with %s" % what, expect_clean=False)

    service = read_unit(os.path.join(installed, "stubborn.service"))
    for key, want in SERVICE_MUST.items():
        got = unit_values(service, key)
        check(want in got, "stubborn.service: %s=%s" % (key, want), "found %s" % got)
    caps = unit_values(service, "CapabilityBoundingSet")
    check(caps == ["CAP_NET_BIND_SERVICE"],
          "stubborn.service: no capability but CAP_NET_BIND_SERVICE", caps)
    check(unit_values(service, "WantedBy") == ["multi-user.target"],
          "stubborn.service: WantedBy=multi-user.target")

    # ExecStart: the installed config, the snapshot in StateDirectory, the
    # control socket in RuntimeDirectory.
    execs = unit_values(service, "ExecStart")
    if not check(len(execs) == 1, "stubborn.service: one ExecStart", execs):
        return
    argv = shlex.split(execs[0])
    check(argv[0] == "/usr/local/sbin/stubborn",
          "stubborn.service: ExecStart runs /usr/local/sbin/stubborn", argv[0])
    check(argv[1:3] == ["--config", "/etc/stubborn/stubborn.conf"],
          "stubborn.service: ExecStart reads /etc/stubborn/stubborn.conf", argv)
    state = "/var/lib/" + unit_values(service, "StateDirectory")[0]
    runtime = "/run/" + unit_values(service, "RuntimeDirectory")[0]
    # The DESTDIR stands for the target's root; systemd would create the
    # unit's directories there.
    for d in (state, runtime):
        os.makedirs(dest + d, exist_ok=True)
    mapped = [STUBBORN] + [dest + a if a.startswith("/") else a for a in argv[1:]]
    conf = check_config(mapped + ["--resolv-conf", RESOLV_LOCAL],
                        "stubborn.service ExecStart (paths under the DESTDIR, "
                        "resolv-conf pinned)")
    if conf is not None:
        snap = conf.get("snapshot", [""])[0]
        sock = conf.get("control-socket", [""])[0]
        check(os.path.dirname(snap) == dest + state,
              "stubborn.service: snapshot in StateDirectory %s" % state, snap)
        check(os.path.dirname(sock) == dest + runtime,
              "stubborn.service: control-socket in RuntimeDirectory %s" % runtime, sock)
        # The socket unit must listen where stubborn's config does.
        socket_unit = read_unit(os.path.join(installed, "stubborn.socket"))
        listens = sorted(conf.get("listen", []))
        for key in ("ListenDatagram", "ListenStream"):
            got = sorted(unit_values(socket_unit, key))
            check(got == listens,
                  "stubborn.socket: %s matches the config's listen %s" % (key, listens),
                  got)
        check(unit_values(socket_unit, "Service") in ([], ["stubborn.service"]),
              "stubborn.socket: activates stubborn.service")
        dyn["unit"] = {
            "argv": mapped,
            "dirs": [dest + state, dest + runtime],
            "snapshot": snap,
            "listen": listens,
            "ambient": unit_values(service, "AmbientCapabilities"),
            "families": unit_values(service, "RestrictAddressFamilies")[0].split(),
            "filter": unit_values(service, "SystemCallFilter"),
        }


# ---- Kubernetes ---------------------------------------------------------

def load_yaml(path, label):
    import yaml
    try:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except Exception as e:  # any parse error is the finding
        not_ok("%s: YAML parses" % label, e)
        return None
    good = all(isinstance(d, dict) and d.get("apiVersion") and d.get("kind")
               and d.get("metadata", {}).get("name") for d in docs)
    check(good and docs, "%s: YAML parses; every document has apiVersion, kind "
          "and metadata.name" % label)
    return docs


def find(docs, kind, name=None):
    for d in docs:
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name):
            return d
    return None


def container_mounts(pod, container, docs, base):
    """mountPath -> a local directory standing for that volume."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {}
    for vm in container.get("volumeMounts", []):
        v = volumes.get(vm["name"])
        if v is None:
            not_ok("%s: volume %s is defined" % (container["name"], vm["name"]))
            continue
        d = os.path.join(base, container["name"] + "-" + vm["name"])
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777 if "emptyDir" in v else 0o755)
        if "configMap" in v:
            cm = find(docs, "ConfigMap", v["configMap"]["name"])
            if cm is None:
                not_ok("%s: ConfigMap %s is in the same file"
                       % (container["name"], v["configMap"]["name"]))
                continue
            for key, val in cm.get("data", {}).items():
                with open(os.path.join(d, key), "w") as f:
                    f.write(val)
        mounts[vm["mountPath"]] = d
    return mounts


def map_path(path, mounts):
    for mp in sorted(mounts, key=len, reverse=True):
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            return mounts[mp] + path[len(mp.rstrip("/")):]
    return path


def map_config_files(mounts, container):
    """Rewrites path values in every config file under the mounts."""
    for mp, d in mounts.items():
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if not name.endswith(".conf") or not os.path.isfile(path):
                continue
            with open(path) as f:
                lines = f.read().splitlines()
            out = []
            for line in lines:
                m = re.match(r"^([a-z0-9-]+)(\s*=\s*)(/\S*)\s*$", line)
                if m:
                    line = m.group(1) + m.group(2) + map_path(m.group(3), mounts)
                out.append(line)
            with open(path, "w") as f:
                f.write("\n".join(out) + "\n")


def container_argv(container, mounts, label):
    """The container's stubborn command line, runnable here, and whether it
    goes through stubborn-pod."""
    argv = list(container.get("command", [])) + list(container.get("args", []))
    wrapped = False
    if argv and argv[0] == IMAGE_WRAPPER:
        wrapped = True
        argv = argv[1:]
    if not check(argv and argv[0] == IMAGE_STUBBORN,
                 "%s: runs %s" % (label, IMAGE_STUBBORN), argv):
        return None, wrapped
    return [STUBBORN] + [map_path(a, mounts) for a in argv[1:]], wrapped


def check_probes(label, pod, container, conf):
    """The probes ask the daemon's metrics endpoint for /health and /ready."""
    metrics = conf.get("metrics", ["off"])[0]
    mhost, mport = split_addr(metrics)
    if not check(mport is not None, "%s: metrics is ADDR:PORT" % label, metrics):
        return []
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
    urls = []
    for kind, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready"),
                       ("startupProbe", "/ready")):
        probe = container.get(kind)
        if probe is None:
            if kind != "startupProbe":
                not_ok("%s: has a %s" % (label, kind))
            continue
        hg = probe.get("httpGet")
        if not check(hg is not None, "%s: %s is httpGet" % (label, kind), probe):
            continue
        port = hg.get("port")
        port = ports.get(port, port) if isinstance(port, str) else port
        check(hg.get("path") == path, "%s: %s asks for %s" % (label, kind, path),
              hg.get("path"))
        check(port == mport, "%s: %s port %s is the metrics port %d"
              % (label, kind, port, mport))
        host = hg.get("host")
        if host:
            check(host == mhost or mhost in WILDCARDS,
                  "%s: %s host %s is served by metrics = %s" % (label, kind, host, metrics))
        else:
            # kubelet asks the pod's IP (the node's IP with hostNetwork),
            # which only a wildcard metrics address serves.
            check(mhost in WILDCARDS,
                  "%s: %s without host: metrics = %s serves the pod's IP"
                  % (label, kind, metrics))
        urls.append((kind, host, port, hg.get("path")))
    return urls


def pod_setpriv(pod, container):
    """setpriv arguments giving a process what this container's
    securityContext gives it: uid, gid, supplementary groups, capabilities
    (the bounding set; root gets all of it), no_new_privs."""
    psc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})
    uid = sc.get("runAsUser", psc.get("runAsUser", IMAGE_UID))
    gid = sc.get("runAsGroup", psc.get("runAsGroup", uid))
    groups = psc.get("supplementalGroups", [])
    caps = sc.get("capabilities", {})
    add = ",".join("+" + c.lower() for c in caps.get("add", []))
    bounding = "-all" + ("," + add if add else "") if "ALL" in caps.get("drop", []) \
        else None
    argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid]
    argv.append("--groups=" + ",".join(str(g) for g in groups) if groups
                else "--clear-groups")
    argv.append("--inh-caps=-all")
    if bounding:
        argv.append("--bounding-set=" + bounding)
    if sc.get("allowPrivilegeEscalation") is False:
        argv.append("--no-new-privs")
    return argv


def init_script_address(init):
    script = "\n".join(init.get("args", []) + init.get("command", []))
    m = re.search(r"\baddr=(\S+)", script)
    return m.group(1) if m else None


def test_daemonset(tmp, dyn):
    docs = load_yaml(DAEMONSET, "stubborn-daemonset.yaml")
    if docs is None:
        return
    ds = find(docs, "DaemonSet")
    cm = find(docs, "ConfigMap")
    if not check(ds is not None and cm is not None
                 and "stubborn.conf" in cm.get("data", {}),
                 "stubborn-daemonset.yaml: a DaemonSet and a ConfigMap with stubborn.conf"):
        return
    pod = ds["spec"]["template"]["spec"]
    check(pod.get("hostNetwork") is True, "DaemonSet: hostNetwork")
    ru = ds["spec"].get("updateStrategy", {})
    check(ru.get("type", "RollingUpdate") == "RollingUpdate"
          and ru.get("rollingUpdate", {}).get("maxSurge") == 1
          and ru.get("rollingUpdate", {}).get("maxUnavailable") == 0,
          "DaemonSet: RollingUpdate with maxSurge 1, maxUnavailable 0", ru)
    containers = pod.get("containers", [])
    if not check(len(containers) == 1, "DaemonSet: one container"):
        return
    c = containers[0]
    # Ports of a hostNetwork pod are host ports: the surge pod could not be
    # scheduled beside the old one.
    check(all(not x.get("ports") for x in containers + pod.get("initContainers", [])),
          "DaemonSet: no container declares ports (host ports would block the surge)")
    sel = ds["spec"]["selector"]["matchLabels"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in sel.items()),
          "DaemonSet: the selector matches the pod labels")
    res = c.get("resources", {})
    check(res.get("requests", {}).get("memory") and res.get("limits", {}).get("memory"),
          "DaemonSet: memory request and limit set", res)
    check("cpu" not in res.get("limits", {}), "DaemonSet: no CPU limit", res)

    base = os.path.join(tmp, "daemonset")
    os.makedirs(base)
    mounts = container_mounts(pod, c, docs, base)
    check(mounts.get("/etc/stubborn") is not None,
          "DaemonSet: the ConfigMap is mounted at /etc/stubborn")
    original = parse_conf(cm["data"]["stubborn.conf"])
    map_config_files(mounts, c)
    argv, wrapped = container_argv(c, mounts, "DaemonSet container")
    check(wrapped, "DaemonSet: the container runs stubborn through %s" % IMAGE_WRAPPER)
    if argv is None:
        return
    conf = check_config(argv, "DaemonSet container command line (volumes mapped)")
    if conf is None:
        return
    listen = original.get("listen", [])
    lhost, lport = split_addr(listen[0]) if len(listen) == 1 else (None, None)
    check(lport == 53, "DaemonSet config: one listen address, port 53", listen)
    check(any(v.split()[0].rstrip(".") == "cluster.local"
              for v in original.get("forward-zone", [])),
          "DaemonSet config: forward-zone cluster.local")
    check(original.get("allow"), "DaemonSet config: an allow list (listen is not loopback)")
    check(lhost is not None and (lhost in original.get("allow", []) or
                                 lhost + "/32" in original.get("allow", [])),
          "DaemonSet config: allows the node itself (%s)" % lhost)

    # Handover and warm restarts need their files on the node.
    hostpaths = {}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for vm in c.get("volumeMounts", []):
        if "hostPath" in volumes.get(vm["name"], {}):
            hostpaths[vm["mountPath"]] = volumes[vm["name"]]["hostPath"]["path"]
    for key in ("control-socket", "snapshot"):
        val = original.get(key, [""])[0]
        d = os.path.dirname(val)
        check(d in hostpaths, "DaemonSet: %s %s is on a hostPath volume" % (key, val),
              hostpaths)

    inits = pod.get("initContainers", [])
    init = inits[0] if inits else {}
    caps = init.get("securityContext", {}).get("capabilities", {}).get("add", [])
    check("NET_ADMIN" in caps, "DaemonSet: an init container with NET_ADMIN")
    addr = init_script_address(init)
    check(addr == lhost, "DaemonSet: the init container adds the listen address %s"
          % lhost, addr)
    mhost, mport = split_addr(conf.get("metrics", ["off"])[0])
    check(mhost == lhost, "DaemonSet config: metrics on the listen address %s" % lhost,
          conf.get("metrics"))
    urls = check_probes("DaemonSet", pod, c, conf)
    uid_ok = ("%d:%d" % (IMAGE_UID, IMAGE_UID)) in "\n".join(init.get("args", []))
    check(uid_ok and IMAGE_UID in pod.get("securityContext", {})
          .get("supplementalGroups", []),
          "DaemonSet: directories owned by, and supplementalGroups of, uid %d" % IMAGE_UID)

    dyn["daemonset"] = {
        "argv": argv,
        "wrapped": wrapped,
        "init_script": "\n".join(init.get("args", [])),
        "init_setpriv": pod_setpriv(pod, init),
        "snapshot": conf.get("snapshot", [""])[0],
        "setpriv": pod_setpriv(pod, c),
        "mounts": mounts,
        "listen": lhost,
        "urls": urls,
        "metrics": conf.get("metrics")[0],
    }


def test_sidecar(tmp, dyn):
    docs = load_yaml(SIDECAR, "stubborn-sidecar.yaml")
    if docs is None:
        return
    pod = find(docs, "Pod")
    if not check(pod is not None, "stubborn-sidecar.yaml: an example Pod"):
        return
    spec = pod["spec"]
    side = [c for c in spec.get("initContainers", []) + spec.get("containers", [])
            if c["name"] == "stubborn"]
    if not check(len(side) == 1, "sidecar: a container named stubborn"):
        return
    c = side[0]
    base = os.path.join(tmp, "sidecar")
    os.makedirs(base)
    os.chmod(base, 0o755)
    mounts = container_mounts(spec, c, docs, base)
    original = None
    for d in mounts.values():
        if os.path.exists(os.path.join(d, "stubborn.conf")):
            with open(os.path.join(d, "stubborn.conf")) as f:
                original = parse_conf(f.read())
    if not check(original is not None, "sidecar: its config comes from a ConfigMap"):
        return
    map_config_files(mounts, c)
    argv, wrapped = container_argv(c, mounts, "sidecar container")
    if argv is None:
        return
    conf = check_config(argv, "sidecar container command line (volumes mapped)")
    if conf is None:
        return
    listen = original.get("listen", [])
    lhost, lport = split_addr(listen[0]) if len(listen) == 1 else (None, None)
    check(lhost == "127.0.0.53" and lport == 53, "sidecar config: listens on 127.0.0.53:53",
          listen)
    check(spec.get("hostNetwork") is not True, "sidecar: the pod's own network namespace")
    check(spec.get("dnsPolicy") == "None", "sidecar: dnsPolicy None")
    dc = spec.get("dnsConfig", {})
    check(dc.get("nameservers") == [lhost], "sidecar: dnsConfig names only %s" % lhost,
          dc.get("nameservers"))
    opts = {o.get("name"): o.get("value") for o in dc.get("options", [])}
    check(opts.get("ndots") == "5", "sidecar: dnsConfig ndots:5", opts)
    ns = pod["metadata"].get("namespace", "default")
    check(dc.get("searches") == ["%s.svc.cluster.local" % ns, "svc.cluster.local",
                                 "cluster.local"],
          "sidecar: the cluster's search list for namespace %s" % ns, dc.get("searches"))
    zones = [v.split() for v in original.get("forward-zone", [])]
    cluster = [z[1:] for z in zones if z[0].rstrip(".") == "cluster.local"]
    check(cluster and original.get("upstream") == cluster[0],
          "sidecar config: cluster.local and every other name go to the cluster DNS",
          original)
    sc = c.get("securityContext", {})
    sysctls = {s["name"]: s["value"] for s in spec.get("securityContext", {})
               .get("sysctls", [])}
    unpriv = sysctls.get("net.ipv4.ip_unprivileged_port_start")
    check(sc.get("runAsUser") == IMAGE_UID and sc.get("capabilities", {}).get("drop") == ["ALL"]
          and not sc.get("capabilities", {}).get("add")
          and unpriv is not None and int(unpriv) <= lport,
          "sidecar: uid %d, no capabilities, port %d unprivileged by the pod's sysctl"
          % (IMAGE_UID, lport), (sc, sysctls))
    urls = check_probes("sidecar", spec, c, conf)
    dyn["sidecar"] = {
        "argv": argv,
        "setpriv": pod_setpriv(spec, c),
        "snapshot": conf.get("snapshot", [""])[0],
        "mounts": mounts,
        "listen": lhost,
        "urls": urls,
        "unpriv": unpriv,
    }


# ---- Containerfile ------------------------------------------------------

def test_containerfile():
    with open(CONTAINERFILE) as f:
        text = f.read()
    joined = re.sub(r"\\\n", " ", text)
    froms = re.findall(r"^FROM\s+(\S+)", joined, re.M)
    check(len(froms) == 2 and all(re.match(r"^docker\.io/library/debian:bookworm(-slim)?$", x)
                                  for x in froms),
          "Containerfile: a build and a runtime stage, both Debian bookworm", froms)
    installs = [set(m.split()) for m in
                re.findall(r"apt-get install ([^&\n]*)", joined)]
    if not check(len(installs) == 2, "Containerfile: one apt-get install per stage"):
        return
    build_pkgs, run_pkgs = installs
    with open(os.path.join(ROOT, "Makefile")) as f:
        mk = re.sub(r"\\\n", " ", f.read())
    m = re.search(r"^DEPS_BUILD\s*:?=\s*(.*)$", mk, re.M)
    deps = set(m.group(1).split()) if m else set()
    check(deps and deps <= build_pkgs,
          "Containerfile: the build stage installs the Makefile's DEPS_BUILD",
          "missing: %s" % sorted(deps - build_pkgs))
    # The runtime stage must hold every library build/stubborn links.
    p = run(["objdump", "-p", STUBBORN])
    needed = re.findall(r"^\s*NEEDED\s+(\S+)", p.stdout, re.M)
    lib_paths = dict(re.findall(r"^\s*(\S+) => (\S+)", run(["ldd", STUBBORN]).stdout, re.M))
    pkgs = set()
    unknown = []
    for lib in needed:
        path = lib_paths.get(lib)
        q = run(["dpkg", "-S", os.path.realpath(path)]) if path else None
        if q is None or q.returncode != 0:
            q = run(["dpkg", "-S", path]) if path else None
        if q is None or q.returncode != 0:
            unknown.append(lib)
            continue
        pkgs.add(q.stdout.split(":")[0])
    pkgs.discard("libc6")  # in every Debian image
    check(not unknown and pkgs and pkgs <= run_pkgs,
          "Containerfile: the runtime stage installs the libraries stubborn links "
          "(%s)" % " ".join(sorted(pkgs)),
          "missing: %s; not found: %s" % (sorted(pkgs - run_pkgs), unknown))
    check("iproute2" in run_pkgs, "Containerfile: iproute2 for the init container")
    check(re.search(r"--uid %d\b" % IMAGE_UID, joined)
          and re.search(r"--gid %d\b" % IMAGE_UID, joined)
          and re.search(r"useradd .*\bstubborn\s*$", joined, re.M),
          "Containerfile: the user stubborn is uid and gid %d" % IMAGE_UID)
    check("PREFIX=/usr/local" in joined and IMAGE_WRAPPER in joined,
          "Containerfile: stubborn in /usr/local/sbin, stubborn-pod at %s" % IMAGE_WRAPPER)


# ---- stubborn-pod -------------------------------------------------------

def wait_exit(proc, seconds):
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def test_wrapper(tmp):
    fake = os.path.join(tmp, "fake-stubborn")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\n"
                "case $1 in\n"
                "fail) exit 3 ;;\n"
                "handover) exit 0 ;;\n"
                "serve) trap 'echo drained >\"$2\"; exit 0' TERM\n"
                "       while :; do sleep 0.05; done ;;\n"
                "esac\n")
    os.chmod(fake, 0o755)
    p = subprocess.Popen(["sh", WRAPPER, fake, "fail"])
    check(wait_exit(p, 10) == 3, "stubborn-pod: passes a failure's exit status on (3)")

    mark = os.path.join(tmp, "drained")
    p = subprocess.Popen(["sh", WRAPPER, fake, "serve", mark])
    time.sleep(0.3)  # let the fake install its SIGTERM handler
    p.send_signal(signal.SIGTERM)
    rc = wait_exit(p, 10)
    check(rc == 0 and os.path.exists(mark),
          "stubborn-pod: SIGTERM reaches stubborn, which drains; exit 0", rc)

    p = subprocess.Popen(["sh", WRAPPER, fake, "handover"], stderr=subprocess.PIPE,
                         text=True)
    # The fake exits at once: still running after a second means it stayed.
    rc = wait_exit(p, 1)
    check(rc is None, "stubborn-pod: after a handover (exit 0, no SIGTERM) stays up")
    if rc is None:
        p.send_signal(signal.SIGTERM)
        rc = wait_exit(p, 10)
        check(rc == 0, "stubborn-pod: then exits 0 on SIGTERM", rc)
    else:
        p.wait()
    p.stderr.close()


# ---- inside a private network and mount namespace -----------------------

def http_get(host, port, path):
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (host, port, path),
                                    timeout=2) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError as e:
        return None, str(e)


def pick_port():
    for _ in range(200):
        port = 20000 + int.from_bytes(os.urandom(2), "big") % 12700
        s1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s2 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s1.bind(("127.0.0.1", port))
            s2.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s1.close()
            s2.close()
    raise RuntimeError("no free port")


def dig(server, name, *extra):
    p = run(["dig", "@" + server, name, "A", "+tries=1", "+time=3"] + list(extra),
            timeout=20)
    m = re.search(r"status: ([A-Z]+)", p.stdout)
    return (m.group(1) if m else None), p.stdout


def wait_until(fn, seconds):
    end = time.monotonic() + seconds
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(0.1)


def probe_all(label, urls, default_host):
    for kind, host, port, path in urls:
        h = host or default_host
        want = 200
        status = wait_until(lambda: http_get(h, port, path)[0] == want, 10)
        check(status, "%s: %s http://%s:%d%s answers 200" % (label, kind, h, port, path),
              http_get(h, port, path))


def stop(proc, label, seconds=10):
    proc.send_signal(signal.SIGTERM)
    rc = wait_exit(proc, seconds)
    if rc is None:
        proc.kill()
        proc.wait()
    check(rc == 0, "%s: exits 0 on SIGTERM" % label, rc)


def inside(state_file):
    """Runs in a private network and mount namespace, as root."""
    with open(state_file) as f:
        st = json.load(f)
    tmp = st["tmp"]
    procs = []
    try:
        run(["ip", "link", "set", "lo", "up"])
        others = [l for l in run(["ip", "-o", "link", "show"]).stdout.splitlines()
                  if not re.match(r"^\d+: lo:", l)]
        if not check(not others, "namespace: a private network namespace with only lo",
                     others):
            return
        # The image's user: stubborn is uid and gid 10053 here as there.
        for name, line in (("passwd", "stubborn:x:%d:%d:stubborn:/nonexistent:"
                            "/usr/sbin/nologin\n" % (IMAGE_UID, IMAGE_UID)),
                           ("group", "stubborn:x:%d:\n" % IMAGE_UID)):
            copy = os.path.join(tmp, name)
            with open("/etc/" + name) as f:
                text = f.read()
            text = "".join(l for l in text.splitlines(True) if not l.startswith("stubborn:"))
            with open(copy, "w") as f:
                f.write(text + line)
            os.chmod(copy, 0o644)
            run(["mount", "--bind", copy, "/etc/" + name])

        up_port = pick_port()
        fk = subprocess.Popen([FAKEUP, "--listen", "127.0.0.1:%d" % up_port,
                               "--pidfile", os.path.join(tmp, "fakeup.pid")])
        procs.append(fk)
        if not check(wait_until(lambda: os.path.exists(os.path.join(tmp, "fakeup.pid")), 5),
                     "namespace: build/fakeup serves on 127.0.0.1:%d" % up_port):
            return
        upstream = "127.0.0.1:%d" % up_port
        # Flags override the config: the cluster DNS becomes fakeup.
        redirect = ["--upstream", upstream, "--forward-zone", "cluster.local " + upstream]

        unit = st.get("unit")
        if unit:
            unit_inside(unit, tmp, redirect, procs)
        ds = st.get("daemonset")
        if ds:
            daemonset_inside(ds, tmp, redirect, procs)
        sc = st.get("sidecar")
        if sc:
            sidecar_inside(sc, tmp, redirect, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                if wait_exit(p, 5) is None:
                    p.kill()
                    p.wait()


def syscall_set(groups):
    """The system calls a SystemCallFilter= allow list admits."""
    names = set()
    todo = list(groups)
    seen = set()
    while todo:
        g = todo.pop()
        if g in seen:
            continue
        seen.add(g)
        out = run(["systemd-analyze", "syscall-filter", g]).stdout
        for line in out.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or line == g:
                continue
            for word in line.split():
                if word.startswith("@"):
                    todo.append(word)
                else:
                    names.add(word)
    return names


def stubborn_binary(tmp):
    """A copy of build/stubborn that every user can run."""
    binary = os.path.join(tmp, "stubborn")
    if not os.path.exists(binary):
        shutil.copy(STUBBORN, binary)
        os.chmod(binary, 0o755)
    return binary


def unit_inside(unit, tmp, redirect, procs):
    """The unit's ExecStart as systemd runs it: as the user stubborn, with
    the unit's ambient capabilities and no new privileges, its directories
    owned by that user.  strace records what the sandbox settings (which
    need systemd to apply) would have to allow."""
    if not shutil.which("strace"):
        not_ok("strace is installed")
        return
    for d in unit["dirs"]:
        os.chown(d, IMAGE_UID, IMAGE_UID)
        os.chmod(d, 0o750)
    caps = ",".join("+" + c.lower().replace("cap_", "")
                    for a in unit["ambient"] for c in a.split())
    binary = stubborn_binary(tmp)
    host, port = split_addr(unit["listen"][0])

    def start(trace):
        argv = ["strace", "-f", "-qq", "-o", trace,
                "setpriv", "--reuid=%d" % IMAGE_UID, "--regid=%d" % IMAGE_UID,
                "--init-groups", "--no-new-privs", "--inh-caps=" + caps,
                "--ambient-caps=" + caps, "--bounding-set=-all," + caps,
                binary] + unit["argv"][1:] + redirect
        log = open(trace + ".log", "w")
        p = subprocess.Popen(argv, stderr=log)
        log.close()
        procs.append(p)
        status = wait_until(lambda: dig(host, "www.example.com")[0], 10)
        # strace's child is setpriv, which became stubborn.
        kids = run(["pgrep", "-P", str(p.pid)]).stdout.split()
        return p, (int(kids[0]) if kids else None), status

    def finish(p):
        if p.poll() is None:
            p.kill()
        p.wait()
        procs.remove(p)

    # Serve, then SIGTERM.
    trace1 = os.path.join(tmp, "unit1.strace")
    p, pid, status = start(trace1)
    check(status == "NOERROR" and pid,
          "stubborn.service ExecStart, as user stubborn with ambient %s: answers on %s"
          % (" ".join(unit["ambient"]), unit["listen"][0]),
          dig(host, "www.example.com")[1] + open(trace1 + ".log").read())
    check(dig(host, "www.example.com", "+tcp")[0] == "NOERROR",
          "stubborn.service ExecStart: answers over TCP")
    if pid:
        os.kill(pid, signal.SIGTERM)
    rc = wait_exit(p, 15)
    finish(p)
    check(rc == 0, "stubborn.service: SIGTERM, exit 0", rc)
    check(os.path.exists(unit["snapshot"]),
          "stubborn.service: the snapshot is written in the StateDirectory")

    # ExecReload: SIGHUP, then it must still answer.
    trace2 = os.path.join(tmp, "unit2.strace")
    p, pid, status = start(trace2)
    if check(status == "NOERROR" and pid, "stubborn.service: started again"):
        os.kill(pid, signal.SIGHUP)
        time.sleep(0.5)  # a reload is not observable from outside; give it time
        alive = p.poll() is None
        check(alive and dig(host, "www2.example.com")[0] == "NOERROR",
              "stubborn.service ExecReload (SIGHUP): keeps running and answering",
              "exit status %s" % p.poll())
        if alive:
            os.kill(pid, signal.SIGTERM)
            wait_exit(p, 15)
    finish(p)

    lines = []
    for trace in (trace1, trace2):
        with open(trace) as f:
            t = f.read().splitlines()
        # Only stubborn's own calls: from its execve on.
        start_at = next((i for i, l in enumerate(t) if 'execve("%s"' % binary in l), None)
        if check(start_at is not None, "strace saw stubborn start (%s)"
                 % os.path.basename(trace)):
            lines += t[start_at + 1:]
    used = set()
    for l in lines:
        m = re.match(r"^\d+\s+([a-z_0-9]+)\(", l)
        if m:
            used.add(m.group(1))
    allowed = syscall_set(unit["filter"])
    check(used and used <= allowed,
          "stubborn.service: SystemCallFilter=%s admits every call stubborn made (%d)"
          % (" ".join(unit["filter"]), len(used)),
          "not admitted: %s" % sorted(used - allowed))
    wx = [l for l in lines if "PROT_WRITE|PROT_EXEC" in l]
    check(not wx, "stubborn.service: MemoryDenyWriteExecute (no writable and "
          "executable mapping)", wx[:5])
    fams = set(re.findall(r"\bsocket\((AF_[A-Z0-9]+)", "\n".join(lines)))
    check(fams and fams <= set(unit["families"]),
          "stubborn.service: RestrictAddressFamilies=%s admits its sockets (%s)"
          % (" ".join(unit["families"]), " ".join(sorted(fams))), fams)


def daemonset_inside(ds, tmp, redirect, procs):
    # The init script, with its paths moved to the volumes' directories.
    script = ds["init_script"]
    for mp, d in ds["mounts"].items():
        script = re.sub(re.escape(mp) + r"(?![\w.-])", d, script)
    # It runs as root on this machine: it must not touch the real paths.
    left = [mp for mp in ds["mounts"] if re.search(re.escape(mp) + r"(?![\w.-])", script)]
    if not check(not left, "DaemonSet init script: its paths are all volume mounts",
                 "not mounted: %s" % left):
        return
    env = dict(os.environ)
    probe = run(["ip", "link", "add", "stubborn-probe0", "type", "dummy"])
    if probe.returncode == 0:
        run(["ip", "link", "del", "stubborn-probe0"])
        how = ""
    else:
        # This kernel has no dummy driver (the nodes' kernels do): ip gets
        # a bridge, which holds an address the same way, in its place.
        shim = os.path.join(tmp, "shim")
        os.makedirs(shim, exist_ok=True)
        real_ip = shutil.which("ip")
        with open(os.path.join(shim, "ip"), "w") as f:
            f.write('#!/bin/sh\nn=$#\nfor a in "$@"; do\n'
                    '\t[ "$a" = dummy ] && a=bridge\n'
                    '\tset -- "$@" "$a"\ndone\nshift "$n"\n'
                    'exec %s "$@"\n' % real_ip)
        os.chmod(os.path.join(shim, "ip"), 0o755)
        env["PATH"] = shim + ":" + env["PATH"]
        how = " (no dummy driver in this kernel: a bridge in its place)"
    for attempt in ("first", "second"):
        # With the init container's uid and capabilities.
        p = run(ds["init_setpriv"] + ["sh", "-c", script], env=env)
        check(p.returncode == 0, "DaemonSet init script: %s run exits 0%s" % (attempt, how),
              p.stdout)
    addrs = run(["ip", "-o", "-4", "address", "show"]).stdout
    check(addrs.count(" %s/32 " % ds["listen"]) == 1,
          "DaemonSet init script: %s/32 on the node, once" % ds["listen"], addrs)
    for mp, d in ds["mounts"].items():
        if mp == "/etc/stubborn":
            continue
        s = os.stat(d)
        check(s.st_uid == IMAGE_UID and s.st_gid == IMAGE_UID and s.st_mode & 0o777 == 0o770,
              "DaemonSet init script: %s owned by %d:%d, mode 0770" % (mp, IMAGE_UID, IMAGE_UID),
              "%d:%d %o" % (s.st_uid, s.st_gid, s.st_mode & 0o777))

    # With the container's uid, groups and capabilities (root with only
    # NET_BIND_SERVICE, SETUID, SETGID and KILL: no CAP_DAC_OVERRIDE).
    argv = [stubborn_binary(tmp)] + ds["argv"][1:] + redirect
    if ds["wrapped"]:
        argv = ["sh", WRAPPER] + argv
    argv = ds["setpriv"] + argv
    log = open(os.path.join(tmp, "daemonset.log"), "w")
    p = subprocess.Popen(argv, stderr=log)
    procs.append(p)
    host = ds["listen"]
    status = wait_until(lambda: dig(host, "svc1.shop.svc.cluster.local")[0], 10)
    check(status == "NOERROR",
          "DaemonSet: stubborn, with the container's privileges (%s), answers on %s:53 "
          "(cluster.local)" % (" ".join(ds["setpriv"][1:]), host),
          dig(host, "svc1.shop.svc.cluster.local")[1] + open(log.name).read())
    check(dig(host, "api.example.com")[0] == "NOERROR",
          "DaemonSet: answers other names on %s:53" % host)
    check(dig(host, "api.example.com", "+tcp")[0] == "NOERROR",
          "DaemonSet: answers over TCP on %s:53" % host)
    # A pod: an address of the pod network as the source.
    pod_ip = "10.244.1.7"
    run(["ip", "address", "add", pod_ip + "/32", "dev", "lo"])
    check(dig(host, "api.example.com", "-b", pod_ip)[0] == "NOERROR",
          "DaemonSet: answers a client in the pod network (%s)" % pod_ip)
    probe_all("DaemonSet", ds["urls"], host)
    mhost, mport = split_addr(ds["metrics"])
    st, body = http_get(mhost, mport, "/metrics")
    check(st == 200 and "stubborn_" in body, "DaemonSet: /metrics on %s" % ds["metrics"])
    st, _ = http_get(mhost, mport, "/no-such-path")
    check(st == 404, "DaemonSet: an unknown path is 404 (the 200s mean something)", st)
    stop(p, "DaemonSet container (stubborn-pod and stubborn)")
    log.close()
    procs.remove(p)
    snap = ds["snapshot"]
    check(os.path.exists(snap), "DaemonSet: the snapshot is written on the hostPath (%s)"
          % snap, open(log.name).read())


def sidecar_inside(sc, tmp, redirect, procs):
    # The pod's sysctl, in this private network namespace.
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start", "w") as f:
        f.write(sc["unpriv"])
    binary = stubborn_binary(tmp)
    argv = sc["setpriv"] + [binary] + sc["argv"][1:] + redirect
    log = open(os.path.join(tmp, "sidecar.log"), "w")
    p = subprocess.Popen(argv, stderr=log)
    procs.append(p)
    host = sc["listen"]
    status = wait_until(lambda: dig(host, "svc1.shop.svc.cluster.local")[0], 10)
    check(status == "NOERROR",
          "sidecar: stubborn as uid %d without capabilities answers on %s:53"
          % (IMAGE_UID, host),
          dig(host, "svc1.shop.svc.cluster.local")[1] + open(log.name).read())
    # kubelet asks the pod's IP; 127.0.0.1 stands for it here.
    probe_all("sidecar", sc["urls"], "127.0.0.1")
    stop(p, "sidecar container")
    log.close()
    procs.remove(p)
    check(os.path.exists(sc["snapshot"]), "sidecar: the snapshot is written in its emptyDir",
          open(log.name).read())


def test_dynamic(tmp, dyn):
    if os.geteuid() != 0:
        skip("DaemonSet and sidecar started in a private namespace", "needs root")
        return
    if not shutil.which("unshare") or not shutil.which("dig") or not shutil.which("setpriv"):
        not_ok("unshare, setpriv (util-linux) and dig (bind9-dnsutils) are installed")
        return
    os.chmod(tmp, 0o755)
    state = os.path.join(tmp, "state.json")
    dyn["tmp"] = tmp
    with open(state, "w") as f:
        json.dump(dyn, f)
    counts = os.path.join(tmp, "counts.json")
    p = subprocess.run(["unshare", "-n", "-m", sys.executable, os.path.abspath(__file__),
                        "--inside", state, counts], timeout=300)
    global passed, failed, skipped
    try:
        with open(counts) as f:
            c = json.load(f)
        passed += c["passed"]
        failed += c["failed"]
        skipped += c["skipped"]
    except OSError:
        not_ok("the checks inside the namespace ran", "exit %d" % p.returncode)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--inside":
        try:
            inside(sys.argv[2])
        finally:
            with open(sys.argv[3], "w") as f:
                json.dump({"passed": passed, "failed": failed, "skipped": skipped}, f)
        return 0
    try:
        import yaml  # noqa: F401
    except ImportError:
        not_ok("python3-yaml is installed")
        return 1
    for path in (STUBBORN, FAKEUP):
        if not os.access(path, os.X_OK):
            print("tests/deploy/run.py: %s is missing; run make first" % path,
                  file=sys.stderr)
            return 1
    tmp = tempfile.mkdtemp(prefix="stubborn-deploy.")
    try:
        check_config([STUBBORN, "--config", os.path.join(ROOT, "config/stubborn.conf"),
                      "--resolv-conf", RESOLV_LOCAL], "shipped config/stubborn.conf")
        dyn = {}
        dest = test_install(tmp)
        if dest:
            test_sysusers(tmp, dest)
            test_units(tmp, dest, dyn)
        test_daemonset(tmp, dyn)
        test_sidecar(tmp, dyn)
        test_containerfile()
        test_wrapper(tmp)
        test_dynamic(tmp, dyn)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("# deploy: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
