#!/usr/bin/python3
"""Check the output of `kubectl kustomize deploy/k8s` (see kustomize_test.sh).

usage: check_k8s.py RENDERED.yaml

Checks that every object sacgate needs is there and that the manifests agree with the ZPL file
in the ConfigMap: cluster.shards lists exactly the StatefulSet's ordinals, ports match the
Services and probes, file paths point into the mounted volumes. The inter-tier links must use
CURVE: cluster.curve_cert set (cluster.insecure not true), every tier mounting its own Secret
sacgate-curve-TIER as a directory at dirname(cluster.curve_cert) ({role} = TIER) and the Secret
sacgate-curve-public at cluster.curve_public. Every container needs liveness
and readiness probes, a tagged image, resources and a locked-down securityContext.

With SACGATE_BIN set to a built `sacgate`, each tier is also started for 2 s with the rendered
configuration, the environment and arguments of its manifest (endpoints and ports moved to
loopback, cluster.curve_cert to the certificate `sacgate init` writes), and must still be
running then: an unknown key or a bad value makes sacgate exit 2.

Prints one `FAIL: ...` line per problem and exits 1 if there is any.
"""
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import yaml

NAMESPACE = "sacgate"
CONF_KEY = "sacgate.conf"
TIERS = ("store", "router", "frontend", "admin")
# Each tier's own key pair is the Secret sacgate-curve-TIER (README.md), whose keys are the files
# `sacgate init` writes into DIR/curve for it; every tier's public certificate is in
# sacgate-curve-public (DIR/curve/public).
CURVE_PUBLIC_SECRET = "sacgate-curve-public"


def curve_secret(tier):
    return "sacgate-curve-" + tier


def curve_keys(tier):
    return (tier + ".cert", tier + ".cert_secret")

TRUE = ("1", "true", "yes", "on")   # what sacgate's boolean keys accept as true

errors = []


def fail(msg):
    errors.append(msg)


# ---------------------------------------------------------------- ZPL (czmq zconfig) ----------

ZPL_NAME = re.compile(r"[A-Za-z0-9$\-_@.&+/]+")


def parse_zpl(text):
    """Return {"section.key": value} as sacgate reads it; raise ValueError on anything sacgate
    would reject or silently ignore (bad indentation, keys outside a section, deeper nesting,
    duplicates)."""
    out = {}
    section = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        if "\t" in line[: len(line) - len(stripped) + 1]:
            raise ValueError(f"line {lineno}: tab in indentation (ZPL indents with 4 spaces)")
        indent = len(line) - len(stripped)
        if indent % 4:
            raise ValueError(f"line {lineno}: indented {indent} spaces, not a multiple of 4")
        level = indent // 4
        m = ZPL_NAME.match(stripped)
        if not m:
            raise ValueError(f"line {lineno}: no valid name in {line!r}")
        name, rest = m.group(0), stripped[m.end():].lstrip(" ")
        value = None
        if rest.startswith("="):
            rest = rest[1:].lstrip(" ")
            if rest[:1] in ('"', "'"):
                q = rest[0]
                end = rest.find(q, 1)
                if end < 0:
                    raise ValueError(f"line {lineno}: unterminated {q}quoted{q} value")
                value, rest = rest[1:end], rest[end + 1:].lstrip(" ")
                if rest and not rest.startswith("#"):
                    raise ValueError(f"line {lineno}: text after the quoted value: {rest!r}")
            else:
                value = rest.split("#", 1)[0].rstrip(" ")
        elif rest and not rest.startswith("#"):
            raise ValueError(f"line {lineno}: expected '= value' after {name!r}, got {rest!r}")
        if level == 0:
            if value is not None:
                raise ValueError(f"line {lineno}: {name} = ... at column 0 (sacgate reads only section.key)")
            section = name
        elif level == 1:
            if section is None:
                raise ValueError(f"line {lineno}: key {name!r} outside a section")
            key = f"{section}.{name}"
            if key in out:
                raise ValueError(f"line {lineno}: {key} given twice")
            out[key] = "" if value is None else value
        else:
            raise ValueError(f"line {lineno}: nested {level} levels deep (sacgate reads only section.key)")
    return out


# ---------------------------------------------------------------- helpers ----------

def get(obj, *path, default=None):
    for p in path:
        if isinstance(obj, dict):
            obj = obj.get(p)
        elif isinstance(obj, list) and isinstance(p, int) and -len(obj) <= p < len(obj):
            obj = obj[p]
        else:
            return default
        if obj is None:
            return default
    return obj


def check_image_and_resources(c, where, fail):
    """A container runs a tagged image and sets cpu and memory requests and limits."""
    image = c.get("image") or ""
    if not image:
        fail(f"{where} has no image")
    elif "@" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
        fail(f"{where}: image {image!r} has no fixed tag (set images: in kustomization.yaml)")
    for part in ("requests", "limits"):
        res = get(c, "resources", part, default={}) or {}
        if "cpu" not in res or "memory" not in res:
            fail(f"{where}: resources.{part} needs cpu and memory")


def check_locked_down(c, ps, where, fail):
    """A container runs as non-root, cannot escalate, drops every capability, and cannot write
    its root filesystem (pod or container securityContext)."""
    sc = c.get("securityContext") or {}
    psc = ps.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        fail(f"{where}: runAsNonRoot is not set")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in (get(sc, "capabilities", "drop", default=[]) or []):
        fail(f"{where}: capabilities do not drop ALL")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(f"{where}: readOnlyRootFilesystem is not true")


def endpoint_port(ep):
    m = re.search(r":(\d+)$", ep or "")
    return int(m.group(1)) if m else None


def pod_spec(w):
    return get(w, "spec", "template", "spec", default={})


def containers(w):
    return get(w, "spec", "template", "spec", "containers", default=[])


def container_port(c, ref):
    """containerPort that a Service targetPort / probe port (name or number) resolves to."""
    for p in c.get("ports", []) or []:
        if isinstance(ref, str) and p.get("name") == ref:
            return p.get("containerPort")
        if isinstance(ref, int) and p.get("containerPort") == ref:
            return ref
    return ref if isinstance(ref, int) else None


def probe_port(c, kind):
    ref = get(c, kind, "httpGet", "port")
    return container_port(c, ref) if ref is not None else None


def mount_of(w, c, volume_pred):
    """(mountPath, subPath, volume) of the first mount of c whose volume satisfies volume_pred."""
    vols = {v.get("name"): v for v in pod_spec(w).get("volumes", []) or []}
    for vct in get(w, "spec", "volumeClaimTemplates", default=[]) or []:
        vols.setdefault(get(vct, "metadata", "name"), {"name": get(vct, "metadata", "name"), "pvc": True})
    for m in c.get("volumeMounts", []) or []:
        v = vols.get(m.get("name"))
        if v is not None and volume_pred(v):
            return m.get("mountPath"), m.get("subPath"), v
    return None, None, None


def under(path, directory):
    return bool(path and directory) and path.startswith(directory.rstrip("/") + "/")


def env_of(c):
    return {e.get("name"): e for e in c.get("env", []) or []}


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------- checks ----------

def objects_by_kind_and_name(docs, fail):
    """{(kind, name): object} of rendered documents; anything that is not a Kubernetes object fails."""
    objs = {}
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d:
            fail(f"rendered output has a document that is not a Kubernetes object: {str(d)[:80]!r}")
            continue
        objs.setdefault((d["kind"], get(d, "metadata", "name")), d)
    return objs


def check(docs):
    objs = objects_by_kind_and_name(docs, fail)

    def need(kind, name, what=""):
        o = objs.get((kind, name))
        if o is None:
            fail(f"missing {kind} {name}{what}")
        return o

    # Namespace
    need("Namespace", NAMESPACE)
    for (kind, name), o in objs.items():
        if kind != "Namespace" and get(o, "metadata", "namespace") != NAMESPACE:
            fail(f"{kind} {name} is in namespace {get(o, 'metadata', 'namespace')!r}, not {NAMESPACE!r}")

    # ConfigMap with sacgate.conf
    cms = [o for (k, n), o in objs.items() if k == "ConfigMap" and CONF_KEY in (o.get("data") or {})]
    conf, cm_name = None, None
    if len(cms) != 1:
        fail(f"expected exactly one ConfigMap with a {CONF_KEY} key, found {len(cms)}")
    else:
        cm_name = get(cms[0], "metadata", "name")
        if not cm_name.startswith("sacgate-config"):
            fail(f"ConfigMap {cm_name} holds {CONF_KEY}; expected the generated sacgate-config-<hash>")
        try:
            conf = parse_zpl(cms[0]["data"][CONF_KEY])
        except ValueError as e:
            fail(f"ConfigMap {cm_name}: {CONF_KEY} is not valid ZPL: {e}")

    sts = need("StatefulSet", "store")
    deps = {t: need("Deployment", t) for t in ("router", "frontend", "admin")}
    workloads = dict(deps, store=sts)
    svcs = {t: need("Service", t) for t in TIERS}

    # --- StatefulSet store ---
    replicas = None
    if sts:
        replicas = get(sts, "spec", "replicas", default=1)
        if not isinstance(replicas, int) or replicas < 1:
            fail(f"StatefulSet store: replicas {replicas!r} is not a positive integer")
            replicas = None
        if get(sts, "spec", "serviceName") != "store":
            fail(f"StatefulSet store: serviceName is {get(sts, 'spec', 'serviceName')!r}, not the headless Service 'store'")
        if get(sts, "spec", "podManagementPolicy") != "Parallel":
            fail("StatefulSet store: podManagementPolicy is not Parallel")
        vcts = get(sts, "spec", "volumeClaimTemplates", default=[]) or []
        data = [v for v in vcts if get(v, "metadata", "name") == "data"]
        if not data:
            fail("StatefulSet store has no volumeClaimTemplate 'data' (every shard needs its own volume)")
        else:
            if "ReadWriteOnce" not in (get(data[0], "spec", "accessModes", default=[]) or []):
                fail("StatefulSet store: volumeClaimTemplate data is not ReadWriteOnce")
            if not get(data[0], "spec", "resources", "requests", "storage"):
                fail("StatefulSet store: volumeClaimTemplate data requests no storage size")
        # RocksDB's LOG off the data volume: a full volume must never meet a log write
        c0 = (containers(sts) or [{}])[0]
        log_dir = get(env_of(c0).get("SACGATE_STORE_LOG_DIR"), "value")
        mounts = {get(m, "mountPath"): get(m, "name") for m in (get(c0, "volumeMounts", default=[]) or [])}
        empty = {get(v, "name") for v in (get(sts, "spec", "template", "spec", "volumes", default=[]) or [])
                 if isinstance(get(v, "emptyDir"), dict) and get(v, "emptyDir", "sizeLimit")}
        if not log_dir:
            fail("StatefulSet store: SACGATE_STORE_LOG_DIR is not set (RocksDB's LOG would share the data volume)")
        elif mounts.get(log_dir) not in empty:
            fail(f"StatefulSet store: SACGATE_STORE_LOG_DIR {log_dir!r} is not the mount of a size-limited emptyDir")

    # --- Services ---
    def svc_ports(s):
        return {p.get("port"): p for p in get(s, "spec", "ports", default=[]) or []}

    expect_ports = {"store": [9200], "router": [9100], "frontend": [8883, 443], "admin": [8080]}
    for t, s in svcs.items():
        if not s:
            continue
        ports = svc_ports(s)
        for p in expect_ports[t]:
            if p not in ports:
                fail(f"Service {t} has no port {p} (has {sorted(ports)})")
        typ = get(s, "spec", "type", default="ClusterIP")
        if t == "store":
            if get(s, "spec", "clusterIP") != "None":
                fail("Service store is not headless (clusterIP: None), so {pod}.store names do not resolve")
        elif t == "frontend":
            if typ != "LoadBalancer":
                fail(f"Service frontend is type {typ}, not LoadBalancer")
        elif typ != "ClusterIP":
            fail(f"Service {t} is type {typ}, not ClusterIP (cluster-internal)")
        w = workloads.get(t)
        if w:
            labels = get(w, "spec", "template", "metadata", "labels", default={}) or {}
            if not selects(get(s, "spec", "selector"), labels):
                fail(f"Service {t}'s selector {get(s, 'spec', 'selector')} does not select the {t} pods ({labels})")
            c0 = (containers(w) or [{}])[0]
            for p in ports.values():
                tp = p.get("targetPort", p.get("port"))
                if container_port(c0, tp) is None:
                    fail(f"Service {t} port {p.get('port')}: targetPort {tp!r} is no port of container {c0.get('name')}")

    # --- every workload and container ---
    for t, w in workloads.items():
        if not w:
            continue
        labels = get(w, "spec", "template", "metadata", "labels", default={}) or {}
        if not selects(get(w, "spec", "selector", "matchLabels"), labels):
            fail(f"{w['kind']} {t}: selector does not match its pod template labels")
        ps = pod_spec(w)
        cs = containers(w)
        if not cs:
            fail(f"{w['kind']} {t} has no containers")
        for c in cs + (ps.get("initContainers") or []):
            where = f"{w['kind']} {t} container {c.get('name')}"
            init = c in (ps.get("initContainers") or [])
            if not init:
                for kind in ("livenessProbe", "readinessProbe"):
                    if not c.get(kind):
                        fail(f"{where} has no {kind}")
            check_image_and_resources(c, where, fail)
            check_locked_down(c, ps, where, fail)
            cmd = c.get("command") or []
            if len(cmd) >= 3 and cmd[0].endswith("sh") and cmd[1] == "-c":
                r = subprocess.run(["/bin/sh", "-n", "-c", cmd[2]], capture_output=True, text=True)
                if r.returncode:
                    fail(f"{where}: its /bin/sh -c script does not parse: {r.stderr.strip()}")

        c = (cs or [{}])[0]
        args = c.get("args") or []
        if not args or args[0] != t:
            fail(f"{w['kind']} {t}: container args should start with the subcommand {t!r}, got {args}")
        # The configuration file: --config points at sacgate.conf in the mounted ConfigMap.
        cfg_path = None
        if "--config" in args and args.index("--config") + 1 < len(args):
            cfg_path = args[args.index("--config") + 1]
        mpath, subpath, _ = mount_of(w, c, lambda v: get(v, "configMap", "name") == cm_name)
        if cm_name and mpath is None:
            fail(f"{w['kind']} {t} does not mount the ConfigMap {cm_name}")
        elif cm_name:
            want = mpath if subpath else mpath.rstrip("/") + "/" + CONF_KEY
            if cfg_path != want:
                fail(f"{w['kind']} {t}: --config is {cfg_path!r}, but the ConfigMap's {CONF_KEY} is at {want}")

    # --- names from the pod name ---
    name_env = {"store": "SACGATE_STORE_NAME", "router": "SACGATE_ROUTER_NAME", "frontend": "SACGATE_FRONTEND_NAME"}
    for t, var in name_env.items():
        w = workloads.get(t)
        if not w:
            continue
        e = env_of((containers(w) or [{}])[0]).get(var)
        if get(e, "valueFrom", "fieldRef", "fieldPath") != "metadata.name":
            fail(f"{w['kind']} {t}: env {var} must come from fieldRef metadata.name (unique per pod)")

    if conf is None:
        return objs, conf

    def key(k):
        if k not in conf:
            fail(f"{CONF_KEY}: {k} is not set")
        return conf.get(k)

    # --- cluster.shards = the StatefulSet's ordinals ---
    shards = [s.strip() for s in (key("cluster.shards") or "").split(",") if s.strip()]
    if replicas is not None:
        want = [f"store-{i}" for i in range(replicas)]
        if shards != want:
            fail(f"{CONF_KEY}: cluster.shards is {','.join(shards)!r} but StatefulSet store has {replicas} "
                 f"replicas: it must list exactly {','.join(want)!r}, in order")
    if any("=" in s for s in shards):
        fail(f"{CONF_KEY}: cluster.shards has name=endpoint pairs; use names and cluster.shard_endpoint")

    sts_c = (containers(sts) or [{}])[0] if sts else {}
    tmpl = key("cluster.shard_endpoint") or ""
    want_tmpl = "tcp://{name}.store:9200"
    if tmpl != want_tmpl:
        fail(f"{CONF_KEY}: cluster.shard_endpoint is {tmpl!r}, expected {want_tmpl!r} (pod DNS names of the headless Service store)")
    ssvc = svcs.get("store")
    if sts and ssvc and 9200 in svc_ports(ssvc):
        tp = container_port(sts_c, svc_ports(ssvc)[9200].get("targetPort", 9200))
        if endpoint_port(key("store.bind")) != tp:
            fail(f"{CONF_KEY}: store.bind {conf.get('store.bind')!r} does not listen on the port the Service store targets ({tp})")
    data_mount, _, _ = mount_of(sts, sts_c, lambda v: v.get("pvc")) if sts else (None, None, None)
    if sts and data_mount != "/var/lib/sacgate":
        fail(f"StatefulSet store: volume data is mounted at {data_mount!r}, not /var/lib/sacgate")
    dd = key("store.data_dir")
    if data_mount and dd != data_mount and not under(dd, data_mount):
        fail(f"{CONF_KEY}: store.data_dir {dd!r} is not on the volume mounted at {data_mount}")

    # routers
    rsvc = svcs.get("router")
    rport = 9100
    routers = key("cluster.routers") or ""
    if routers != f"tcp://router:{rport}":
        fail(f"{CONF_KEY}: cluster.routers is {routers!r}, expected 'tcp://router:{rport}' (the router Service)")
    rdep = workloads.get("router")
    if rdep and rsvc:
        tp = container_port((containers(rdep) or [{}])[0], svc_ports(rsvc).get(rport, {}).get("targetPort", rport))
        if endpoint_port(key("router.bind")) != tp:
            fail(f"{CONF_KEY}: router.bind {conf.get('router.bind')!r} does not listen on the port the Service router targets ({tp})")

    # health port = probe port of store/router/frontend
    hp = key("health.port")
    for t in ("store", "router", "frontend"):
        w = workloads.get(t)
        if not w:
            continue
        c = (containers(w) or [{}])[0]
        for kind in ("livenessProbe", "readinessProbe"):
            pp = probe_port(c, kind)
            if pp is not None and str(pp) != str(hp):
                fail(f"{w['kind']} {t}: {kind} uses port {pp}, but health.port is {hp}")
    if key("health.bind") not in ("0.0.0.0", "::"):
        fail(f"{CONF_KEY}: health.bind {conf.get('health.bind')!r} is not reachable by the kubelet; use 0.0.0.0")

    # frontend ports and TLS files
    fe, fsvc = workloads.get("frontend"), svcs.get("frontend")
    if fe and fsvc:
        c = (containers(fe) or [{}])[0]
        for svc_port, k in ((8883, "frontend.mqtt_port"), (443, "frontend.ws_port")):
            p = svc_ports(fsvc).get(svc_port)
            if p and str(container_port(c, p.get("targetPort", svc_port))) != str(key(k)):
                fail(f"Service frontend port {svc_port} targets {container_port(c, p.get('targetPort', svc_port))}, but {k} is {conf.get(k)}")
        tls_mount, _, v = mount_of(fe, c, lambda v: get(v, "secret", "secretName") == "sacgate-tls")
        if tls_mount != "/etc/sacgate/tls":
            fail(f"Deployment frontend: Secret sacgate-tls is mounted at {tls_mount!r}, not /etc/sacgate/tls")
        else:
            for k in ("frontend.cert", "frontend.key"):
                if not under(key(k), tls_mount):
                    fail(f"{CONF_KEY}: {k} {conf.get(k)!r} is not in the Secret mount {tls_mount}")
        # session-ticket keys: one Secret for every frontend pod, mounted as a directory
        tk = conf.get("frontend.ticket_keys")
        if tk:
            tk_mount, tk_sub, v = mount_of(fe, c, lambda v: get(v, "secret", "secretName") == "sacgate-ticket-keys")
            if not tk_mount:
                fail(f"{CONF_KEY}: frontend.ticket_keys is {tk!r} but Deployment frontend does not mount the Secret "
                     "sacgate-ticket-keys: its pods would not start")
            elif tk_sub:
                fail("Deployment frontend: Secret sacgate-ticket-keys is mounted with a subPath, which never sees a "
                     "rotated key file; mount it as a directory")
            elif not under(tk, tk_mount):
                fail(f"{CONF_KEY}: frontend.ticket_keys {tk!r} is not in the Secret mount {tk_mount}")
    if key("frontend.bind") not in ("0.0.0.0", "::"):
        fail(f"{CONF_KEY}: frontend.bind {conf.get('frontend.bind')!r} is not reachable from the Service")

    # admin port, bind, tokens
    adm, asvc = workloads.get("admin"), svcs.get("admin")
    if adm:
        c = (containers(adm) or [{}])[0]
        for kind in ("livenessProbe", "readinessProbe"):
            pp = probe_port(c, kind)
            if str(pp) != str(key("admin.port")):
                fail(f"Deployment admin: {kind} uses port {pp}, but admin.port is {conf.get('admin.port')}")
        paths = {k: get(c, k, "httpGet", "path") for k in ("livenessProbe", "readinessProbe")}
        if paths != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
            fail(f"Deployment admin: probes should be liveness /healthz and readiness /readyz, are {paths}")
        if asvc:
            p = svc_ports(asvc).get(8080, {})
            if str(container_port(c, p.get("targetPort", 8080))) != str(conf.get("admin.port")):
                fail(f"Service admin targets port {container_port(c, p.get('targetPort', 8080))}, but admin.port is {conf.get('admin.port')}")
        tok_mount, tok_sub, v = mount_of(adm, c, lambda v: get(v, "secret", "secretName") == "sacgate-tokens")
        tokens = key("admin.tokens")
        if tok_mount is None:
            fail("Deployment admin does not mount the Secret sacgate-tokens")
        elif tok_sub:
            if tokens != tok_mount:
                fail(f"{CONF_KEY}: admin.tokens {tokens!r} is not the subPath mount {tok_mount}")
        elif not under(tokens, tok_mount) or "/" in tokens[len(tok_mount.rstrip('/')) + 1:]:
            fail(f"{CONF_KEY}: admin.tokens {tokens!r} must be a file directly in the Secret mount {tok_mount} (it is a directory)")
    if key("admin.bind") not in ("0.0.0.0", "::"):
        fail(f"{CONF_KEY}: admin.bind {conf.get('admin.bind')!r} is not reachable from the Service; use 0.0.0.0")

    check_curve(workloads, conf)
    return objs, conf


def check_curve(workloads, conf):
    """Inter-tier links: CURVE on, every tier mounts its own key pair where curve_cert names it
    ({role} = the tier) and the public certificates where curve_public names them."""
    if conf.get("cluster.insecure", "false").lower() in TRUE:
        fail(f"{CONF_KEY}: cluster.insecure is {conf['cluster.insecure']!r}: the inter-tier links would be "
             "plaintext; set cluster.curve_cert and remove cluster.insecure")
    cert = conf.get("cluster.curve_cert", "")
    if not cert:
        fail(f"{CONF_KEY}: cluster.curve_cert is not set: no tier starts without the CURVE certificate "
             "(\"/etc/sacgate/curve/{role}.cert\" from the Secret sacgate-curve-{role})")
        return
    if not cert.startswith("/"):
        fail(f"{CONF_KEY}: cluster.curve_cert {cert!r} is not an absolute path")
        return
    public = conf.get("cluster.curve_public", "")
    if not public.startswith("/"):
        fail(f"{CONF_KEY}: cluster.curve_public {public!r} is not an absolute path (the mount of the Secret "
             f"{CURVE_PUBLIC_SECRET})")
    for t in TIERS:
        w = workloads.get(t)
        if not w:
            continue
        CURVE_SECRET = curve_secret(t)
        cert_dir, cert_file = os.path.split(cert.replace("{role}", t))
        c = (containers(w) or [{}])[0]
        where = f"{w['kind']} {t}"
        ppath, psub, _ = mount_of(w, c, lambda v: get(v, "secret", "secretName") == CURVE_PUBLIC_SECRET)
        if public.startswith("/") and (ppath is None or psub or ppath.rstrip("/") != public.rstrip("/")):
            fail(f"{where} does not mount the Secret {CURVE_PUBLIC_SECRET} as a directory at {public} "
                 "(cluster.curve_public): it would not know its peers' keys")
        mpath, subpath, v = mount_of(w, c, lambda v: get(v, "secret", "secretName") == CURVE_SECRET)
        if mpath is None:
            fail(f"{where} does not mount the Secret {CURVE_SECRET} (cluster.curve_cert is {cert}): its pods would not start")
            continue
        if subpath:
            fail(f"{where}: Secret {CURVE_SECRET} is mounted with subPath {subpath!r}; mount it as a directory "
                 f"(the ZAP handler reads the certificates of {cert_dir}, and a subPath never sees a rotated Secret)")
            continue
        if mpath.rstrip("/") != cert_dir:
            fail(f"{where}: Secret {CURVE_SECRET} is mounted at {mpath!r}, but cluster.curve_cert {cert!r} "
                 f"needs it at {cert_dir}")
            continue
        m = [m for m in c.get("volumeMounts", []) or [] if m.get("name") == v.get("name")][0]
        if m.get("readOnly") is not True:
            fail(f"{where}: the mount of Secret {CURVE_SECRET} at {mpath} is not readOnly")
        # Files in the mount: the Secret's keys, or the paths its items map them to.
        items = get(v, "secret", "items")
        files = [i.get("path") for i in items] if items else list(curve_keys(t))
        for f in (cert_file, cert_file + "_secret"):
            if f not in files:
                fail(f"{where}: Secret {CURVE_SECRET} mounted at {mpath} has no file {f} "
                     f"(cluster.curve_cert {cert!r} needs {cert_file} and {cert_file}_secret; it holds {files})")
        # Secret files belong to root: the non-root user reads them through the pod's fsGroup.
        psc = pod_spec(w).get("securityContext") or {}
        if psc.get("fsGroup") is None and (get(v, "secret", "defaultMode", default=0o644) & 0o004) == 0:
            fail(f"{where}: Secret {CURVE_SECRET}'s files are owned by root and not world-readable; set the pod's "
                 f"securityContext.fsGroup so uid {psc.get('runAsUser')} can read {cert_file}_secret")


# ---------------------------------------------------------------- the real binary ----------

def run_tiers(binary, objs, conf_text):
    """Start every tier as its manifest does (config, env, args), on loopback, for 2 s."""
    tmp = tempfile.mkdtemp(prefix="sacgate-deploy-")
    conf_path = os.path.join(tmp, CONF_KEY)
    with open(conf_path, "w") as f:
        f.write(conf_text)
    r = subprocess.run([binary, "init", "--data-dir", os.path.join(tmp, "pki")], capture_output=True, text=True)
    if r.returncode:
        fail(f"{binary} init failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        return
    pki = os.path.join(tmp, "pki")
    nowhere = "tcp://127.0.0.1:9"   # nothing listens: the tiers only have to start
    local = {
        "store": ["--set", "store.bind=tcp://127.0.0.1:*", "--set", f"store.data_dir={tmp}/store",
                  "--set", f"cluster.shard_endpoint={nowhere}"],
        "router": ["--set", "router.bind=tcp://127.0.0.1:*", "--set", f"cluster.shard_endpoint={nowhere}"],
        "frontend": ["--set", "frontend.bind=127.0.0.1", "--set", "frontend.mqtt_port=0",
                     "--set", "frontend.ws_port=0", "--set", f"frontend.cert={pki}/server.crt",
                     "--set", f"frontend.key={pki}/server.key", "--set", f"frontend.ticket_keys={pki}/ticket.keys",
                     "--set", f"cluster.routers={nowhere}"],
        "admin": ["--set", "admin.bind=127.0.0.1", "--set", "admin.port=0",
                  "--set", f"admin.tokens={pki}/tokens", "--set", f"cluster.routers={nowhere}"],
    }
    procs = {}
    for t in TIERS:
        w = objs.get(("StatefulSet" if t == "store" else "Deployment", t))
        if not w:
            continue
        c = (containers(w) or [{}])[0]
        args = list(c.get("args") or [])
        if "--config" in args and args.index("--config") + 1 < len(args):
            args[args.index("--config") + 1] = conf_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("SACGATE_")}
        for name, e in env_of(c).items():
            if "value" in e:
                env[name] = str(e["value"])
            elif get(e, "valueFrom", "fieldRef", "fieldPath") == "metadata.name":
                env[name] = f"{t}-0" if t == "store" else f"{t}-6d9f7c5b8-x2x9k"
            elif get(e, "valueFrom", "resourceFieldRef", "resource") in ("limits.cpu", "requests.cpu"):
                # The kubelet rounds up to whole divisors (divisor 1 = whole CPUs).
                part = get(e, "valueFrom", "resourceFieldRef", "resource").split(".")[0]
                q = str(get(c, "resources", part, "cpu", default="1"))
                millis = float(q[:-1]) if q.endswith("m") else float(q) * 1000
                env[name] = str(max(1, math.ceil(millis / 1000)))
            else:
                fail(f"{t}: cannot emulate env {name} {e.get('valueFrom')} (teach check_k8s.py)")
        argv = [binary] + args + ["--set", "health.port=0", "--set", f"cluster.curve_cert={pki}/curve/{{role}}.cert",
                                "--set", f"cluster.curve_public={pki}/curve/public"] + local[t]
        procs[t] = (subprocess.Popen(argv, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True), argv, env)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and all(p.poll() is None for p, _, _ in procs.values()):
        time.sleep(0.05)
    for t, (p, argv, env) in procs.items():
        shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k.startswith("SACGATE_"))
        if p.poll() is not None:
            out = p.stdout.read().strip()
            fail(f"sacgate {t} exited with {p.returncode} within 2 s when started as its manifest says:\n"
                 f"    {shown} {' '.join(shlex.quote(a) for a in argv)}\n    " + out[-800:].replace("\n", "\n    "))
            continue
        p.send_signal(signal.SIGTERM)
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            fail(f"sacgate {t} did not stop within 10 s of SIGTERM")
        # The links must really be CURVE (sg_curve logs event=enabled at info).
        if "event=links.plaintext" in out:
            fail(f"sacgate {t} runs its inter-tier links in plaintext (cluster.insecure)")
        elif "comp=curve event=enabled" not in out and re.search(r"level=(debug|info) ", out):
            fail(f"sacgate {t} did not log comp=curve event=enabled: CURVE is not on")
        print(f"ok: sacgate {t} ran 2 s with the rendered {CONF_KEY} and CURVE ({shown}), then stopped on SIGTERM")
    subprocess.run(["rm", "-rf", tmp])


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        try:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            print(f"FAIL: rendered output is not YAML: {e}")
            return 1
    objs, conf = check(docs)
    binary = os.environ.get("SACGATE_BIN")
    if binary and os.access(binary, os.X_OK) and conf is not None:
        cm = [o for (k, n), o in objs.items() if k == "ConfigMap" and CONF_KEY in (o.get("data") or {})][0]
        run_tiers(binary, objs, cm["data"][CONF_KEY])
    elif binary:
        print(f"note: SACGATE_BIN={binary} is not an executable (or no config): tiers not started")
    else:
        print("note: SACGATE_BIN not set: tiers not started with the rendered configuration")
    if errors:
        unique = list(dict.fromkeys(errors))
        for e in unique:
            print(f"FAIL: {e}")
        print(f"{len(unique)} problem(s) in the rendered manifests")
        return 1
    kinds = sorted(f"{k}/{n}" for k, n in objs)
    print(f"ok: {len(objs)} objects ({', '.join(kinds)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
