#!/usr/bin/python3
"""Check deploy/Dockerfile by reading it (Docker need not run here).

usage: check_dockerfile.py DOCKERFILE BINARY...

For each BINARY (a built sacgate, sacgate-sim; named by its file name):
- the build stage builds it (`cmake --build ... --target` lists it) and runs its `--help`;
- the runtime stage copies it to /usr/local/bin/NAME and runs `/usr/local/bin/NAME --help`;
- every shared library it links directly (ELF NEEDED, resolved with ldd on this Debian host)
  comes from a package the runtime stage installs (libc6 is in every Debian image), and the
  development package that owns the library's unversioned .so link is installed in the build
  stage (what pkg-config / the linker found here).
Also: tini, which the manifests start (/usr/bin/tini), is installed in the runtime stage.

Prints one `FAIL: ...` line per problem and exits 1 if there is any; exit 77 if this host cannot
tell (no dpkg, no ldd).
"""
import os
import re
import shutil
import subprocess
import sys

errors = []
# In every Debian image (debian:bookworm-slim included) and in build-essential.
BASE_PACKAGES = {"libc6", "libc6-dev", "libgcc-s1", "libstdc++6"}


def fail(msg):
    errors.append(msg)


def stages(text):
    """[(name, [logical instruction lines])] with continuation lines joined and comments dropped."""
    out, cur, buf = [], None, ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line, buf = buf + line, ""
        if re.match(r"FROM\s", line, re.I):
            m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
            cur = (m.group(2) or m.group(1), [])
            out.append(cur)
        if cur is not None:
            cur[1].append(line)
    return out


def apt_packages(lines):
    pkgs = set()
    for line in lines:
        for m in re.finditer(r"apt-get\s+install\s+(.*?)(?:&&|;|$)", line):
            pkgs.update(w for w in m.group(1).split() if not w.startswith("-"))
    return pkgs


def package_of(path, follow=True):
    """The Debian package owning path (its target if follow; /lib and /usr/lib are one on a
    merged-/usr system, but dpkg knows each file under one of them)."""
    p = os.path.realpath(path) if follow else os.path.normpath(path)
    alt = p[4:] if p.startswith("/usr/") else "/usr" + p
    for candidate in (p, alt):
        r = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0].strip()
    return None


def needed(binary):
    """{soname: resolved path} of the libraries the binary links directly."""
    r = subprocess.run(["objdump", "-p", binary], capture_output=True, text=True)
    names = re.findall(r"^\s*NEEDED\s+(\S+)", r.stdout, re.M)
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    paths = dict(re.findall(r"^\s*(\S+) => (/\S+)", r.stdout, re.M))
    return {n: paths.get(n) for n in names}


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    for tool in ("dpkg-query", "ldd", "objdump"):
        if not shutil.which(tool):
            print(f"SKIP: no {tool} on this host")
            return 77
    text = open(sys.argv[1]).read()
    st = stages(text)
    if len(st) < 2:
        print(f"FAIL: {sys.argv[1]}: expected a build and a runtime stage, found {len(st)}")
        return 1
    build, runtime = st[0][1], st[-1][1]
    build_pkgs, run_pkgs = apt_packages(build), apt_packages(runtime)
    build_text, run_text = "\n".join(build), "\n".join(runtime)
    if "tini" not in run_pkgs:
        fail("the runtime stage does not install tini (the manifests start /usr/bin/tini)")
    for binary in sys.argv[2:]:
        name = os.path.basename(binary)
        before = len(errors)
        targets = re.findall(r"cmake\s+--build\s+\S+\s+--target\s+([^&;]*)", build_text)
        if not any(name in t.split() for t in targets):
            fail(f"the build stage does not build --target {name} (cmake --build ... --target {name})")
        if not re.search(r"(^|\s)/build/" + re.escape(name) + r"\s+--help\b", build_text):
            fail(f"the build stage does not smoke-test /build/{name} --help")
        if not re.search(r"^COPY\s+--from=\S+\s+/build/" + re.escape(name) + r"\s+/usr/local/bin/" + re.escape(name)
                         + r"\s*$", run_text, re.M):
            fail(f"the runtime stage does not COPY /build/{name} to /usr/local/bin/{name}")
        if not re.search(r"^RUN\s.*/usr/local/bin/" + re.escape(name) + r"\s+--help\b", run_text, re.M):
            fail(f"the runtime stage does not run /usr/local/bin/{name} --help (fails the build on a missing library)")
        if not os.access(binary, os.X_OK):
            print(f"note: {binary} is not built: its libraries are not checked")
            continue
        for soname, path in needed(binary).items():
            if re.match(r"lib(asan|ubsan|tsan|lsan|hwasan)\.|libclang_rt\.", soname):
                continue   # a sanitizer build (tests/run.sh stage 2); the image is built without
            if not path:
                fail(f"{name}: ldd cannot resolve {soname} on this host")
                continue
            pkg = package_of(path)
            if pkg is None:
                print(f"note: {name}: {path} belongs to no Debian package here; not checked")
                continue
            pkg = pkg.split(",")[0].strip()
            if pkg not in run_pkgs and pkg not in BASE_PACKAGES:
                fail(f"{name} links {soname} from Debian package {pkg}, which the runtime stage does not install")
            dev_link = re.sub(r"\.so\..*$", ".so", path)
            dev = package_of(dev_link, follow=False) if os.path.exists(dev_link) else None
            if dev and dev.split(",")[0].strip() not in build_pkgs | BASE_PACKAGES:
                fail(f"{name} was linked here against {dev_link} from {dev}, which the build stage does not install")
        if len(errors) == before:
            print(f"ok: {name}: built, smoke-tested and installed as /usr/local/bin/{name}; its libraries come from "
                  f"the runtime stage's packages")
    if errors:
        for e in dict.fromkeys(errors):
            print(f"FAIL: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
