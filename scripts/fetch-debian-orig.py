#!/usr/bin/env python3
"""Fetches and unpacks Debian's upstream kernel tarball (linux_X.Y.Z.orig.tar.xz) for a series,
verified against the SHA-256 in the suite's Sources index, and prints the unpacked tree.

Usage: scripts/fetch-debian-orig.py SERIES DIR [--version V [--sha256 HEX]] [--suite S] [--mirror URL]
  SERIES  e.g. 6.12: the newest linux_6.12.*.orig.tar.xz the suite's Sources lists
  --version V   exactly linux_V.orig.tar.xz (CI pins one, so its build cache stays warm)
  --sha256 HEX  its SHA-256, used when the Sources index no longer lists V (and checked
                against the index when it does)
  DIR     cache directory: Sources-<suite>.xz (re-checked after a day), the tarball, and the
          unpacked tree linux-X.Y.Z/ (unpacked once, then left alone: treat it as read-only)

The orig tarball is upstream's tree (Debian's patches are separate), so e.g. Yama's
ptrace_scope defaults to upstream's 1. Exit 2 with one line on any failure.
"""
import argparse
import hashlib
import lzma
import os
import re
import sys
import tarfile
import time
import urllib.request

DAY = 86400


def die(msg):
    print(f"fetch-debian-orig: error: {msg}", file=sys.stderr)
    sys.exit(2)


def download(url, dest):
    tmp = dest + ".part"
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            while True:
                b = r.read(1 << 20)
                if not b:
                    break
                f.write(b)
    except OSError as e:
        die(f"cannot download {url}: {e} (check the network, or pass --mirror URL)")
    os.replace(tmp, dest)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def version_key(v):
    return [int(x) for x in re.findall(r"\d+", v)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("series")
    ap.add_argument("dir")
    ap.add_argument("--version")
    ap.add_argument("--sha256")
    ap.add_argument("--suite", default="trixie")
    ap.add_argument("--mirror", default=os.environ.get("PVMTEST_MIRROR", "http://deb.debian.org/debian"))
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    sources = os.path.join(a.dir, f"Sources-{a.suite}.xz")
    if not os.path.exists(sources) or time.time() - os.path.getmtime(sources) > DAY:
        download(f"{a.mirror}/dists/{a.suite}/main/source/Sources.xz", sources)
    # Stanzas of package "linux": the orig tarball's name and SHA-256 under Checksums-Sha256.
    pat = re.compile(r"^ ([0-9a-f]{64}) (\d+) (linux_(" + re.escape(a.series) + r"\.\d+)\.orig\.tar\.xz)$")
    found = {}
    try:
        with lzma.open(sources, "rt", encoding="utf-8", errors="replace") as f:
            pkg = None
            in_sha = False
            for line in f:
                line = line.rstrip("\n")
                if line.startswith("Package: "):
                    pkg = line[9:].strip()
                    in_sha = False
                elif line.startswith("Checksums-Sha256:"):
                    in_sha = True
                elif not line.startswith(" "):
                    in_sha = False
                elif in_sha and pkg == "linux":
                    m = pat.match(line)
                    if m:
                        found[m.group(4)] = (m.group(1), int(m.group(2)), m.group(3))
    except (OSError, EOFError, lzma.LZMAError) as e:
        os.remove(sources)
        die(f"{sources}: {e} (removed; run again)")
    if a.version:
        name = f"linux_{a.version}.orig.tar.xz"
        if a.version in found:
            if a.sha256 and a.sha256 != found[a.version][0]:
                die(f"{name}: --sha256 {a.sha256} is not {found[a.version][0]} from {a.suite}'s Sources")
            found = {a.version: found[a.version]}
        elif a.sha256:
            found = {a.version: (a.sha256, None, name)}
        else:
            die(f"{a.suite}'s Sources does not list {name} (give its --sha256, or drop --version)")
    if not found:
        die(f"{a.suite}'s Sources lists no linux_{a.series}.*.orig.tar.xz (pick another --suite or series)")
    version = max(found, key=version_key)
    digest, size, name = found[version]
    tarball = os.path.join(a.dir, name)
    if not os.path.exists(tarball) or sha256(tarball) != digest:
        download(f"{a.mirror}/pool/main/l/linux/{name}", tarball)
        got = sha256(tarball)
        if got != digest or (size is not None and os.path.getsize(tarball) != size):
            os.remove(tarball)
            die(f"{name}: SHA-256 {got} is not {digest} from {a.suite}'s Sources (removed; run again)")
    tree = os.path.join(a.dir, f"linux-{version}")
    if not os.path.isfile(os.path.join(tree, "Makefile")):
        part = tree + ".part"
        if os.path.exists(part):
            import shutil

            shutil.rmtree(part)
        os.makedirs(part)
        with tarfile.open(tarball) as t:
            t.extractall(part, filter="tar") if hasattr(tarfile, "data_filter") else t.extractall(part)
        top = os.listdir(part)
        if len(top) != 1:
            die(f"{name}: expected one top directory, found {top}")
        os.replace(os.path.join(part, top[0]), tree)
        os.rmdir(part)
    print(tree)


if __name__ == "__main__":
    main()
