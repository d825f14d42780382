#!/usr/bin/python3
"""Check the output of `kubectl kustomize deploy/k8s/sim` (see kustomize_test.sh --sim).

usage: check_k8s_sim.py [--base BASE_RENDERED.yaml] [--readme README.md] RENDERED.yaml

The simulator overlay is one Indexed Job `sacgate-sim` in the namespace sacgate. Checked:
completionMode Indexed, completions = parallelism = the SLICES env value; restartPolicy Never,
a small backoffLimit, ttlSecondsAfterFinished, no probes; the pod runs sacgate-sim through
`/bin/sh -c` with `--slice "$JOB_COMPLETION_INDEX/$SLICES"` and `--json -`; every key of the
Secret sacgate-sim that the pod mounts or reads is one the README's `kubectl create secret
generic sacgate-sim` command creates; the key seed (key key-seed) is mounted as a file and passed
as `--key-seed-file` pointing into that mount, and no env var (env or envFrom) carries it; a
locked-down securityContext, resources sized for the
slice, the net.ipv4.ip_local_port_range sysctl wide enough for the slice, anti-affinity by
hostname, a tagged image. With --base (the rendered base): the image is the base's, --host and
--port name the frontend Service, --admin the admin Service, no base Service selects the Job's
pods and the base's NetworkPolicies let them in.

The pod's shell step is run here as Kubernetes would run it (its env values, secretKeyRef and
resourceFieldRef emulated, JOB_COMPLETION_INDEX set) with /usr/local/bin/sacgate-sim replaced
by a recorder, and the Secret's mount replaced by a temporary directory holding test values (in
the script, and in the simulator's arguments): once with a stand-in that records its arguments
and environment and prints a summary holding its command line, unredacted (the key seed must be
in neither its arguments, i.e. /proc/<pid>/cmdline, nor its environment nor the log; the summary
line and the exit status must get through), and, with SACGATE_SIM set to a built sacgate-sim,
once per slice with `--dry-run` added and --host moved to 127.0.0.1 (the cluster DNS name does
not resolve here): every flag and value must be one the simulator accepts (it reads the seed
file, the CA and token paths must exist), and
the slices must cover FIRST .. FIRST+DEVICES-1 exactly, each within one pod's ephemeral ports,
open-file limits and memory.

Prints one `FAIL: ...` line per problem and exits 1 if there is any.
"""
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile

import yaml

# the base's checker sits beside this one (Python puts the script's folder on sys.path)
from check_k8s import check_image_and_resources, check_locked_down, get, objects_by_kind_and_name  # noqa: E402

NAMESPACE = "sacgate"
JOB = "sacgate-sim"
SECRET = "sacgate-sim"
SEED_KEY = "key-seed"             # the Secret's key holding the key seed
# What the pod's devices are sized by (README.md "Sizing"; sacgate-sim --help).
SESSIONS_PER_PROCESS = 18000      # one worker process holds at most this many (~20,000 files)
SESSION_BYTES = 13 * 1024         # ~13 KB per idle TLS session
PROCESS_BYTES = 8 * 1024 * 1024   # ~8 MB per worker process
PORT_HEADROOM = 4096              # ephemeral ports left for reconnects (TIME_WAIT), DNS, the import
IMAGE_BINARY = "/usr/local/bin/sacgate-sim"   # where deploy/Dockerfile installs it
MAX_BACKOFF = 6
MIN_TTL = 3600
DRY_RUN_ALL_UP_TO = 100           # run every slice's dry-run up to this many slices
# Test values for the Secret's keys (the recorder maps the mount to files holding them).
TEST_SECRET = {
    "ca.crt": "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n",
    "admin.token": "test-admin-token\n",
    "key-seed": "5eed" * 16,
}

errors = []


def fail(msg):
    errors.append(msg)


def quantity(q):
    """A Kubernetes quantity as a float (bytes, or cores)."""
    s = str(q).strip()
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "m": 1e-3}
    for u in sorted(units, key=len, reverse=True):
        if s.endswith(u):
            return float(s[: -len(u)]) * units[u]
    return float(s)


def k8s_expand(s, env):
    """Kubernetes' $(VAR) expansion of command and args (kubelet, third_party/forked/golang/expansion)."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "$" and i + 1 < len(s):
            nxt = s[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = s.find(")", i + 2)
                if end >= 0:
                    name = s[i + 2:end]
                    out.append(env[name] if name in env else s[i:end + 1])
                    i = end + 1
                    continue
            out.append(s[i:i + 2])
            i += 2
            continue
        out.append(s[i])
        i += 1
    return "".join(out)


def documented_keys(readme):
    """Keys of the Secret sacgate-sim as the README's `kubectl create secret generic` makes it."""
    text = re.sub(r"\\\n", " ", readme)
    keys = None
    for line in text.splitlines():
        if not re.search(r"create\s+secret\s+generic\s+" + re.escape(SECRET) + r"(\s|$)", line):
            continue
        keys = set()
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        for word in words:
            m = re.match(r"--from-(file|literal)=(.*)$", word)
            if not m:
                continue
            kind, rest = m.groups()
            if kind == "literal" or "=" in rest:
                keys.add(rest.split("=", 1)[0])
            else:
                keys.add(os.path.basename(rest))
        break
    return keys


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------- static checks ----------

def find_script(c, where):
    """(index of the script in command, script) of a container that runs `sh -c SCRIPT`."""
    cmd = c.get("command") or []
    for i in range(len(cmd) - 1):
        if str(cmd[i]).endswith("/sh") and cmd[i + 1] == "-c" and i + 2 < len(cmd):
            return i, cmd[i + 2]
    fail(f"{where}: command {cmd} does not run sacgate-sim through `/bin/sh -c SCRIPT` (the env values "
         "must expand)")
    return None, None


def check_static(objs, base, readme):
    """Return (job, container, settings) for the run checks, or Nones."""
    for (kind, name), o in objs.items():
        if get(o, "metadata", "namespace") != NAMESPACE:
            fail(f"{kind} {name} is in namespace {get(o, 'metadata', 'namespace')!r}, not {NAMESPACE!r}")
        if kind in ("Namespace", "StatefulSet", "Deployment", "ConfigMap", "Secret"):
            fail(f"the simulator overlay renders {kind} {name}: it must hold only the Job (the base and the "
                 f"Secret {SECRET} are created separately, README.md)")
    job = objs.get(("Job", JOB))
    if job is None:
        fail(f"missing Job {JOB}")
        return None, None, None
    spec = job.get("spec") or {}
    ps = get(spec, "template", "spec", default={}) or {}
    cs = ps.get("containers") or []
    if len(cs) != 1:
        fail(f"Job {JOB}: expected one container, found {len(cs)}")
        if not cs:
            return None, None, None
    c = cs[0]
    where = f"Job {JOB} container {c.get('name')}"
    env = {e.get("name"): e for e in c.get("env") or []}

    def env_value(name):
        e = env.get(name)
        if e is None or "value" not in e:
            fail(f"{where}: env {name} has no value")
            return None
        return str(e["value"])

    def env_int(name):
        v = env_value(name)
        try:
            return int(v) if v is not None else None
        except ValueError:
            fail(f"{where}: env {name} {v!r} is not a whole number")
            return None

    slices, devices, first = env_int("SLICES"), env_int("DEVICES"), env_int("FIRST")
    if slices is not None and slices < 1:
        fail(f"{where}: SLICES {slices} is not positive")
        slices = None

    # --- the Job ---
    if spec.get("completionMode") != "Indexed":
        fail(f"Job {JOB}: completionMode is {spec.get('completionMode')!r}, not Indexed "
             "(the pods get no JOB_COMPLETION_INDEX, so every one would simulate slice ?)")
    for k in ("completions", "parallelism"):
        v = spec.get(k)
        if slices is not None and v != slices:
            fail(f"Job {JOB}: {k} {v} != SLICES {slices}: completions = parallelism = SLICES (one pod per slice, "
                 "all at once)")
    bl = spec.get("backoffLimit")
    if not isinstance(bl, int) or bl > MAX_BACKOFF:
        fail(f"Job {JOB}: backoffLimit {bl!r} is not a small number (at most {MAX_BACKOFF}; the default is 6)")
    ttl = spec.get("ttlSecondsAfterFinished")
    if not isinstance(ttl, int) or ttl < MIN_TTL:
        fail(f"Job {JOB}: ttlSecondsAfterFinished {ttl!r}: keep the finished pods (and their summaries) at least "
             f"{MIN_TTL} s for collect.sh")
    if ps.get("restartPolicy") != "Never":
        fail(f"Job {JOB}: restartPolicy {ps.get('restartPolicy')!r}, not Never (a restarted container would "
             "start its slice again in the same pod, and its first summary would be lost)")
    if ps.get("automountServiceAccountToken") is not False:
        fail(f"Job {JOB}: automountServiceAccountToken is not false")
    labels = get(spec, "template", "metadata", "labels", default={}) or {}

    # --- pod security and sysctl ---
    psc = ps.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    check_locked_down(c, ps, where, fail)
    if (sc.get("runAsUser") or psc.get("runAsUser")) != 10001:
        fail(f"{where}: runAsUser is not 10001 (the image's user)")
    if get(psc, "seccompProfile", "type") != "RuntimeDefault" and get(sc, "seccompProfile", "type") != "RuntimeDefault":
        fail(f"{where}: seccompProfile is not RuntimeDefault")
    port_range = None
    for s in psc.get("sysctls") or []:
        if s.get("name") == "net.ipv4.ip_local_port_range":
            try:
                lo, hi = (int(x) for x in str(s.get("value")).split())
                port_range = hi - lo + 1
            except ValueError:
                fail(f"Job {JOB}: sysctl net.ipv4.ip_local_port_range {s.get('value')!r} is not 'LOW HIGH'")
                port_range = 0
    if port_range is None:
        fail(f"Job {JOB}: no pod sysctl net.ipv4.ip_local_port_range (e.g. \"1024 65535\"): the default range "
             "gives one pod only ~28,000 connections to the frontend Service")

    # --- scheduling, probes, image, resources, mounts ---
    terms = get(ps, "affinity", "podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution", default=[]) or []
    if not any(get(t, "podAffinityTerm", "topologyKey") == "kubernetes.io/hostname" and
               selects(get(t, "podAffinityTerm", "labelSelector", "matchLabels"), labels) for t in terms):
        fail(f"Job {JOB}: no preferred podAntiAffinity by kubernetes.io/hostname against its own pods "
             "(slices should spread over the nodes)")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        if c.get(kind):
            fail(f"{where} has a {kind}: a batch pod needs none (a failing probe would kill a slice)")
    check_image_and_resources(c, where, fail)
    image = c.get("image") or ""
    vols = {v.get("name"): v for v in ps.get("volumes") or []}
    mounts = {}   # mountPath -> files in it, for Secret volumes
    tmp_ok = False
    doc_keys = documented_keys(readme) if readme is not None else set(TEST_SECRET)
    if doc_keys is None:
        fail(f"README.md has no `kubectl create secret generic {SECRET}` command: the Secret is undocumented")
        doc_keys = set()
    for m in c.get("volumeMounts") or []:
        v = vols.get(m.get("name")) or {}
        if m.get("mountPath") == "/tmp" and "emptyDir" in v:
            tmp_ok = True
        if "secret" in v:
            name = get(v, "secret", "secretName")
            if name != SECRET:
                fail(f"{where} mounts Secret {name!r}; the simulator's Secret is {SECRET}")
                continue
            if m.get("readOnly") is not True:
                fail(f"{where}: the mount of Secret {SECRET} is not readOnly")
            if m.get("subPath"):
                fail(f"{where}: Secret {SECRET} is mounted with subPath; mount it as a directory")
            items = get(v, "secret", "items")
            files = {}
            for it in items if items else [{"key": k, "path": k} for k in sorted(doc_keys)]:
                if it.get("key") not in doc_keys:
                    fail(f"{where} mounts key {it.get('key')!r} of Secret {SECRET}, which has no such key "
                         f"(README.md creates {sorted(doc_keys)})")
                files[it.get("path")] = it.get("key")
            mounts[m.get("mountPath").rstrip("/")] = files
            if psc.get("fsGroup") is None and (get(v, "secret", "defaultMode", default=0o644) & 0o004) == 0:
                fail(f"{where}: Secret {SECRET}'s files are owned by root and not world-readable; set the pod's "
                     "securityContext.fsGroup")
    if not tmp_ok:
        fail(f"{where}: no emptyDir mounted at /tmp (the root filesystem is read-only)")
    for name, e in env.items():
        ref = get(e, "valueFrom", "secretKeyRef")
        if ref:
            if ref.get("name") != SECRET:
                fail(f"{where}: env {name} comes from Secret {ref.get('name')!r}, not {SECRET}")
            elif ref.get("key") == SEED_KEY:
                fail(f"{where}: env {name} carries the key seed (key {SEED_KEY} of Secret {SECRET}): it would be in "
                     "the environment of the shell and the simulator (/proc/<pid>/environ); mount the key as a file "
                     "and pass --key-seed-file")
            elif ref.get("key") not in doc_keys:
                fail(f"{where}: env {name} reads key {ref.get('key')!r} of Secret {SECRET}, which has no such key "
                     f"(README.md creates {sorted(doc_keys)})")
    for ef in c.get("envFrom") or []:
        if get(ef, "secretRef", "name") == SECRET:
            fail(f"{where}: envFrom takes every key of Secret {SECRET} into the environment, the key seed "
                 f"({SEED_KEY}) included; mount the Secret instead")
    seed_files = sorted(f"{mp}/{path}" for mp, files in mounts.items() for path, key in files.items()
                        if key == SEED_KEY)
    if not seed_files:
        fail(f"{where}: key {SEED_KEY} of Secret {SECRET} is not mounted: the simulator must read the key seed "
             "from that file (--key-seed-file)")

    # --- the shell step ---
    idx, script = find_script(c, where)
    if script is not None:
        r = subprocess.run(["/bin/sh", "-n", "-c", script], capture_output=True, text=True)
        if r.returncode:
            fail(f"{where}: its /bin/sh -c script does not parse: {r.stderr.strip()}")
        if not re.search(r'--slice[ =]"?\$\{?JOB_COMPLETION_INDEX\}?/\$\{?SLICES\}?"?(\s|$)', script):
            fail(f"{where}: the script does not pass --slice \"$JOB_COMPLETION_INDEX/$SLICES\"")
        if not re.search(r"--json[ =]-(\s|$)", script):
            fail(f"{where}: the script does not pass --json - (collect.sh reads the SACGATE-SIM-SUMMARY line)")
        if script.count(IMAGE_BINARY) != 1:
            fail(f"{where}: the script should run {IMAGE_BINARY} (where the image installs it) exactly once, "
                 f"found {script.count(IMAGE_BINARY)}")
        k8s_env = {n: str(e["value"]) for n, e in env.items() if "value" in e}
        for part in c.get("command") or []:
            if k8s_expand(str(part), k8s_env) != str(part):
                fail(f"{where}: Kubernetes expands $(NAME) or $$ in the command before the shell sees it; "
                     "write ${NAME} instead")
                break
    if "JOB_COMPLETION_INDEX" in env:
        fail(f"{where}: env JOB_COMPLETION_INDEX is set in the manifest; the Job controller sets it (Indexed)")

    # --- against the base ---
    if base is not None:
        fe = base.get(("Deployment", "frontend"))
        if fe and image and get(fe, "spec", "template", "spec", "containers", 0, "image") != image:
            fail(f"{where}: image {image!r} is not the base's "
                 f"{get(fe, 'spec', 'template', 'spec', 'containers', 0, 'image')!r} (keep the tags in step)")
        for (kind, name), o in base.items():
            if kind == "Service" and selects(get(o, "spec", "selector"), labels):
                fail(f"Service {name} of the base selects the simulator's pods (labels {labels}): traffic for "
                     f"{name} would reach them")
    settings = {"slices": slices, "devices": devices, "first": first, "port_range": port_range,
                "mounts": mounts, "seed_files": seed_files, "script_index": idx, "script": script, "labels": labels, "where": where}
    return job, c, settings


def admits(policies, target_labels, source_labels, port):
    """Whether the NetworkPolicies that select target_labels admit source pods (same namespace) on port."""
    applicable = [p for p in policies if "Ingress" in (get(p, "spec", "policyTypes", default=["Ingress"]) or [])
                  and (get(p, "spec", "podSelector", "matchLabels", default={}) or {}).items() <= target_labels.items()]
    if not applicable:
        return True
    for p in applicable:
        for rule in get(p, "spec", "ingress", default=[]) or []:
            ports = rule.get("ports") or []
            if ports and not any(q.get("port") == port for q in ports):
                continue
            froms = rule.get("from") or []
            if not froms:
                return True
            for f in froms:
                if "namespaceSelector" in f or "ipBlock" in f:
                    continue
                sel = get(f, "podSelector", "matchLabels", default={}) or {}
                if sel.items() <= source_labels.items():
                    return True
    return False


def check_args(argv, settings, base, env):
    """The simulator's argv (one slice) against the manifest's Secret mounts and the base."""
    where = settings["where"]
    args = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            args[k] = v
        elif a.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            args[a] = argv[i + 1]
            i += 1
        elif a.startswith("--"):
            args[a] = ""
        i += 1
    for a in argv:
        v = a.split("=", 1)[1] if a.startswith("--") and "=" in a else a
        for mpath, files in settings["mounts"].items():
            if v.startswith(mpath + "/") and v[len(mpath) + 1:] not in files:
                fail(f"{where}: the simulator reads {v}, but the Secret mount {mpath} has only {sorted(files)}")
    for k in ("--cafile", "--token-file"):
        if k in args and not any(args[k].startswith(m + "/") for m in settings["mounts"]):
            fail(f"{where}: {k} {args[k]} is not in the mount of Secret {SECRET}")
    if "--key-seed" in args:
        fail(f"{where}: the simulator gets --key-seed on its command line (/proc/<pid>/cmdline shows it to whoever "
             f"can see the process): pass --key-seed-file with the mounted key {SEED_KEY} of Secret {SECRET}")
    if "--key-seed-file" not in args:
        fail(f"{where}: the simulator gets no --key-seed-file: every device key would come from the public default "
             "seed")
    elif args["--key-seed-file"] not in settings["seed_files"]:
        fail(f"{where}: --key-seed-file {args['--key-seed-file']!r} is not the mounted key {SEED_KEY} of Secret "
             f"{SECRET} ({', '.join(settings['seed_files']) or 'not mounted'})")
    if args.get("--json") != "-":
        fail(f"{where}: the simulator does not get --json - (collect.sh reads the SACGATE-SIM-SUMMARY line)")
    if base is None:
        return
    host = args.get("--host", "")
    fsvc = base.get(("Service", "frontend"))
    names = {f"frontend.{NAMESPACE}.svc.cluster.local", f"frontend.{NAMESPACE}.svc", f"frontend.{NAMESPACE}"}
    if host not in names:
        fail(f"{where}: --host {host!r} does not name the frontend Service of the base ({sorted(names)[0]})")
    ports = [p.get("port") for p in get(fsvc, "spec", "ports", default=[]) or []] if fsvc else []
    try:
        port = int(args.get("--port", "8883"))
    except ValueError:
        port = None
    if fsvc and port not in ports:
        fail(f"{where}: --port {args.get('--port')} is not a port of the frontend Service ({ports})")
    if fsvc and port is not None and port in ports:
        tp = [p.get("targetPort") for p in fsvc["spec"]["ports"] if p.get("port") == port][0]
        fe_labels = get(base.get(("Deployment", "frontend")), "spec", "template", "metadata", "labels", default={}) or {}
        fe_c = get(base.get(("Deployment", "frontend")), "spec", "template", "spec", "containers", 0, default={}) or {}
        cport = next((q.get("containerPort") for q in fe_c.get("ports") or [] if q.get("name") == tp), tp)
        pols = [o for (k, n), o in base.items() if k == "NetworkPolicy"]
        if not admits(pols, fe_labels, settings["labels"], cport):
            fail(f"the base's NetworkPolicies do not admit the simulator's pods to the frontends' port {cport}")
    admin = args.get("--admin", "")
    m = re.match(r"https?://([^/:]+)(?::(\d+))?/?$", admin)
    asvc = base.get(("Service", "admin"))
    if not m or m.group(1) not in {f"admin.{NAMESPACE}", f"admin.{NAMESPACE}.svc", f"admin.{NAMESPACE}.svc.cluster.local"}:
        fail(f"{where}: --admin {admin!r} is not the admin Service of the base (http://admin.{NAMESPACE}:8080)")
    elif asvc:
        aport = int(m.group(2) or 80)
        svc_ports = [p.get("port") for p in get(asvc, "spec", "ports", default=[]) or []]
        if aport not in svc_ports:
            fail(f"{where}: --admin port {aport} is not a port of the admin Service ({svc_ports})")
        else:
            ad = base.get(("Deployment", "admin"))
            tp = [p.get("targetPort", aport) for p in asvc["spec"]["ports"] if p.get("port") == aport][0]
            ac = get(ad, "spec", "template", "spec", "containers", 0, default={}) or {}
            cport = next((q.get("containerPort") for q in ac.get("ports") or [] if q.get("name") == tp), tp)
            pols = [o for (k, n), o in base.items() if k == "NetworkPolicy"]
            if ad and not admits(pols, get(ad, "spec", "template", "metadata", "labels", default={}) or {},
                                 settings["labels"], cport):
                fail(f"the base's NetworkPolicies do not admit the simulator's pods to the admin's port {cport}")


# ---------------------------------------------------------------- running the shell step ----------

RECORDER = r'''#!/usr/bin/python3
# Stands in for /usr/local/bin/sacgate-sim in the pod's script (check_k8s_sim.py).
import json, os, sys
cfg = json.load(open(os.environ["SIM_TEST_CFG"]))
argv = sys.argv[1:]
with open(os.environ["SIM_TEST_ARGV"], "w") as f:
    json.dump({"argv": argv, "env": dict(os.environ)}, f)
if cfg["mode"] == "echo":
    # The command line as it is (the real simulator redacts secret flag values in its summary;
    # this stand-in does not, so a seed passed on the command line shows here too).
    print("sacgate-sim: args " + " ".join(argv), file=sys.stderr)
    print("SACGATE-SIM-SUMMARY " + json.dumps({"tool": "sacgate-sim", "command": " ".join(argv)}))
    sys.exit(3)
out, host_next = [], False
for a in argv:
    if host_next:
        a, host_next = "127.0.0.1", False
    elif a == "--host":
        host_next = True
    elif a.startswith("--host="):
        a = "--host=127.0.0.1"
    for src, dst in cfg["mounts"].items():
        if a.startswith(src + "/"):
            a = dst + a[len(src):]
        elif a.startswith("--") and "=" in a and a.split("=", 1)[1].startswith(src + "/"):
            k, v = a.split("=", 1)
            a = k + "=" + dst + v[len(src):]
    out.append(a)
os.execv(cfg["sim"], [cfg["sim"]] + out + ["--dry-run"])
'''


class Runner:
    def __init__(self, c, settings, tmp, sim):
        self.c, self.s, self.tmp, self.sim = c, settings, tmp, sim
        self.where = settings["where"]
        cmd = c.get("command") or []
        self.script = settings["script"].replace(IMAGE_BINARY, os.path.join(tmp, "sacgate-sim"))
        self.extra = [str(a) for a in cmd[settings["script_index"] + 3:]] + [str(a) for a in c.get("args") or []]
        with open(os.path.join(tmp, "sacgate-sim"), "w") as f:
            f.write(RECORDER)
        os.chmod(os.path.join(tmp, "sacgate-sim"), 0o755)
        self.mounts = {}
        for n, (mpath, files) in enumerate(settings["mounts"].items()):
            d = os.path.join(tmp, f"mount{n}")
            os.makedirs(d)
            for path, key in files.items():
                with open(os.path.join(d, path), "w") as f:
                    f.write(TEST_SECRET.get(key, "test\n"))
            self.mounts[mpath] = d
            # The script reads the mounted files too (the seed's length): point it at the copies.
            self.script = self.script.replace(mpath + "/", d + "/")
        self.env = self.pod_env()
        # The kubelet expands $(NAME) in the command before the shell runs it.
        self.script = k8s_expand(self.script, self.env)

    def pod_env(self):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.tmp, "TMPDIR": self.tmp}
        for e in self.c.get("env") or []:
            name = e.get("name")
            if "value" in e:
                env[name] = str(e["value"])
                continue
            vf = e.get("valueFrom") or {}
            if "secretKeyRef" in vf:
                env[name] = TEST_SECRET.get(vf["secretKeyRef"].get("key"), "test")
            elif "resourceFieldRef" in vf:
                ref = vf["resourceFieldRef"]
                part, kind = ref.get("resource", "").split(".", 1) if "." in ref.get("resource", "") else ("", "")
                q = get(self.c, "resources", part, kind)
                if q is None:
                    fail(f"{self.where}: env {name} reads {ref.get('resource')}, which is not set")
                    q = "1"
                env[name] = str(max(1, math.ceil(quantity(q) / quantity(ref.get("divisor", "1")))))
            elif "fieldRef" in vf:
                path = vf["fieldRef"].get("fieldPath", "")
                env[name] = {"metadata.name": f"{JOB}-0-x2x9k", "metadata.namespace": NAMESPACE,
                             "spec.nodeName": "node-a", "status.podIP": "192.0.2.10"}.get(path, "")
                if "job-completion-index" in path:
                    env[name] = "0"
            else:
                fail(f"{self.where}: cannot emulate env {name} {vf} (teach check_k8s_sim.py)")
        return env

    def run(self, index, mode):
        argv_file = os.path.join(self.tmp, f"argv-{mode}-{index}.json")
        cfg_file = os.path.join(self.tmp, f"cfg-{mode}.json")
        with open(cfg_file, "w") as f:
            json.dump({"mode": mode, "sim": self.sim or "", "mounts": self.mounts}, f)
        env = dict(self.env, JOB_COMPLETION_INDEX=str(index), SIM_TEST_CFG=cfg_file, SIM_TEST_ARGV=argv_file)
        try:
            r = subprocess.run(["/bin/sh", "-c", self.script] + self.extra, env=env, capture_output=True,
                               text=True, timeout=30, cwd=self.tmp)
        except subprocess.TimeoutExpired:
            fail(f"{self.where}: the pod's script (slice {index}) did not end within 30 s")
            return None, "", None
        argv = sim_env = None
        if os.path.exists(argv_file):
            with open(argv_file) as f:
                rec = json.load(f)
            # Back to the paths of the manifest (the script ran with the copies of the mounts).
            argv = [self.unmount(a) for a in rec["argv"]]
            sim_env = rec["env"]
        self.sim_env = sim_env
        return r.returncode, r.stdout + r.stderr, argv

    def unmount(self, a):
        for mpath, d in self.mounts.items():
            if a.startswith(d + "/"):
                return mpath + a[len(d):]
            if a.startswith("--") and "=" in a and a.split("=", 1)[1].startswith(d + "/"):
                k, v = a.split("=", 1)
                return k + "=" + mpath + v[len(d):]
        return a


DRY = re.compile(r"devices (\d+)\.\.(-?\d+) \(slice (\d+)/(\d+) of (\d+) from (\d+)\), .*?(\d+) processes x (\d+) "
                 r"threads, rate ([0-9.]+)/s")


def run_checks(job, c, settings, base, sim):
    where = settings["where"]
    slices, devices, first = settings["slices"], settings["devices"], settings["first"]
    if settings["script"] is None or slices is None:
        return
    tmp = tempfile.mkdtemp(prefix="sacgate-sim-deploy-")
    try:
        runner = Runner(c, settings, tmp, sim)
        seed = TEST_SECRET[SEED_KEY].strip()
        # 1. the key seed stays off the simulator's command line, out of its environment and out of
        #    the log; the summary line and the exit status get through
        rc, out, argv = runner.run(0, "echo")
        if argv is None:
            fail(f"{where}: the pod's script never ran {IMAGE_BINARY} (exit {rc}):\n    " +
                 out.strip()[-800:].replace("\n", "\n    "))
            return
        if any(seed in a for a in argv):
            fail(f"{where}: the key seed is on the simulator's command line (/proc/<pid>/cmdline): pass "
                 f"--key-seed-file with the mounted key {SEED_KEY} instead")
        leaked = sorted(k for k, v in (runner.sim_env or {}).items() if seed in v)
        if leaked:
            fail(f"{where}: the key seed is in the simulator's environment ({', '.join(leaked)}; "
                 "/proc/<pid>/environ): read it from the mounted file with --key-seed-file only")
        if seed in out:
            fail(f"{where}: the key seed reaches the pod's log")
        if not any(l.startswith("SACGATE-SIM-SUMMARY {") for l in out.splitlines()):
            fail(f"{where}: the simulator's SACGATE-SIM-SUMMARY line does not reach the pod's log:\n    " +
                 out.strip()[-800:].replace("\n", "\n    "))
        if rc != 3:
            fail(f"{where}: the pod's script exits {rc} when the simulator exits 3 (a failed slice must fail its pod)")
        check_args(argv, settings, base, runner.env)
        if not sim:
            print("note: SACGATE_SIM not set: the pod's command line was not checked with sacgate-sim --dry-run")
            return
        # 2. every slice (or a sample) through the real simulator's --dry-run
        indices = list(range(slices)) if slices <= DRY_RUN_ALL_UP_TO else sorted({0, 1, slices // 2, slices - 1})
        ranges = []
        for i in indices:
            rc, out, argv = runner.run(i, "dry")
            if rc != 0:
                fail(f"{where}: slice {i}: sacgate-sim rejects the pod's command line (exit {rc}):\n    "
                     + out.strip()[-800:].replace("\n", "\n    ") +
                     ("\n    argv: " + " ".join(shlex.quote(a) for a in argv) if argv else ""))
                return
            m = DRY.search(out)
            if not m:
                fail(f"{where}: slice {i}: no 'devices A..B (slice I/N of TOTAL from FIRST)' in the dry-run output: "
                     + out.strip()[-400:])
                return
            a, b, si, sn, total, frm, procs, threads = (int(x) for x in m.groups()[:8])
            rate = float(m.group(9))
            if (si, sn) != (i, slices):
                fail(f"{where}: pod {i} simulates slice {si}/{sn}, not {i}/{slices}")
            if devices is not None and total != devices:
                fail(f"{where}: slice {i} is cut from {total} devices, but DEVICES is {devices}")
            if first is not None and frm != first:
                fail(f"{where}: slice {i} starts the range at {frm}, but FIRST is {first}")
            n = b - a + 1
            ranges.append((i, a, b))
            if n > procs * SESSIONS_PER_PROCESS:
                fail(f"{where}: slice {i}: {n} devices in {procs} worker processes is more than "
                     f"{SESSIONS_PER_PROCESS} per worker process (~20,000 open files each)")
            if settings["port_range"] is not None and n + PORT_HEADROOM > settings["port_range"]:
                fail(f"{where}: slice {i}: {n} devices need {n} ephemeral ports (+{PORT_HEADROOM} spare), but "
                     f"net.ipv4.ip_local_port_range gives {settings['port_range']}: use more SLICES")
            need = n * SESSION_BYTES + procs * PROCESS_BYTES
            req = get(c, "resources", "requests", "memory")
            lim = get(c, "resources", "limits", "memory")
            if req is not None and quantity(req) < need:
                fail(f"{where}: slice {i}: requests.memory {req} is below the ~{need >> 20} MiB that {n} devices "
                     f"in {procs} processes need")
            if lim is not None and quantity(lim) < need * 1.25:
                fail(f"{where}: slice {i}: limits.memory {lim} leaves less than 25% headroom over the "
                     f"~{need >> 20} MiB that {n} devices in {procs} processes need")
            total_rate = runner.env.get("RATE")
            if total_rate and total_rate.isdigit() and abs(rate * slices - int(total_rate)) > max(1, slices):
                fail(f"{where}: slice {i} ramps at {rate}/s; {slices} slices make {rate * slices:.0f}/s, not RATE "
                     f"{total_rate}")
        # the slices run cover FIRST .. FIRST+DEVICES-1 exactly, in order, without gaps or overlaps
        if devices is not None and first is not None and ranges:
            for (i, a, b), (j, a2, b2) in zip(ranges, ranges[1:]):
                if j == i + 1 and a2 != b + 1:
                    fail(f"{where}: slices {i} ({a}..{b}) and {j} ({a2}..{b2}) are not contiguous")
            if ranges[0][0] == 0 and ranges[0][1] != first:
                fail(f"{where}: slice 0 starts at device {ranges[0][1]}, not FIRST {first}")
            if ranges[-1][0] == slices - 1 and ranges[-1][2] != first + devices - 1:
                fail(f"{where}: slice {slices - 1} ends at device {ranges[-1][2]}, not {first + devices - 1}")
            covered = sum(b - a + 1 for _, a, b in ranges)
            if len(ranges) == slices and covered != devices:
                fail(f"{where}: the {slices} slices cover {covered} devices, not DEVICES {devices}")
            for i, a, b in ranges:
                want_a = first + i * devices // slices
                want_b = first + (i + 1) * devices // slices - 1
                if (a, b) != (want_a, want_b):
                    fail(f"{where}: slice {i} is {a}..{b}, expected {want_a}..{want_b}")
            sizes = sorted({b - a + 1 for _, a, b in ranges})
            print(f"ok: sacgate-sim --dry-run accepts the pod's command line for slices "
                  f"{'0..' + str(slices - 1) if len(ranges) == slices else ','.join(str(r[0]) for r in ranges)} "
                  f"of {slices}: devices {first}..{first + devices - 1} covered exactly, "
                  f"{'/'.join(map(str, sizes))} per pod")
    finally:
        subprocess.run(["rm", "-rf", tmp])


def load(path):
    with open(path) as f:
        try:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            print(f"FAIL: {path} is not YAML: {e}")
            sys.exit(1)
    return objects_by_kind_and_name(docs, fail)


def main():
    args = sys.argv[1:]
    base_path = readme_path = None
    while len(args) > 1 and args[0] in ("--base", "--readme"):
        if args[0] == "--base":
            base_path = args[1]
        else:
            readme_path = args[1]
        args = args[2:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    objs = load(args[0])
    base = load(base_path) if base_path else None
    readme = open(readme_path).read() if readme_path else None
    job, c, settings = check_static(objs, base, readme)
    sim = os.environ.get("SACGATE_SIM")
    if sim and not os.access(sim, os.X_OK):
        print(f"note: SACGATE_SIM={sim} is not an executable: the command line is not checked with --dry-run")
        sim = None
    if job is not None and settings is not None:
        run_checks(job, c, settings, base, sim)
    if errors:
        unique = list(dict.fromkeys(errors))
        for e in unique:
            print(f"FAIL: {e}")
        print(f"{len(unique)} problem(s) in the rendered simulator overlay")
        return 1
    print(f"ok: {len(objs)} object(s) ({', '.join(sorted(f'{k}/{n}' for k, n in objs))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
