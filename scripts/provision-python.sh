#!/usr/bin/env bash
# Provision CPython 3.13.5 twice: free-threaded (--disable-gil) and with the GIL.
#
# In:  nothing but a C toolchain and the build libraries of CPython.
# Out: two interpreters linked as
#        $CACHE/bin/python3.13t   (free-threaded)
#        $CACHE/bin/python3.13    (with the GIL)
#      where CACHE=${THREADLOADER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/threadloader}.
#
# Idempotent: a second run checks the two links and exits in well under a second.
# An interpreter already on PATH is used when it is exactly 3.13.5 of the right
# flavour. Otherwise both are built from Python-3.13.5.tar.xz, which is verified
# against a pinned SHA-256 before use. The tarball comes from, in order:
#   1. $THREADLOADER_PYTHON_TARBALL (a local file), or one already in the cache;
#   2. the upstream download site;
#   3. Debian's source package python3.13 (suite trixie) through apt-get, with a
#      temporary sources list built from the mirrors this machine's apt already
#      uses (the system's apt configuration is never changed).
set -euo pipefail

readonly VERSION=3.13.5
readonly SHA256=93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640
readonly CACHE="${THREADLOADER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/threadloader}"
readonly BIN="$CACHE/bin"
readonly TARBALL="$CACHE/src/Python-$VERSION.tar.xz"
readonly UPSTREAM_URL="https://www.python.org/ftp/python/$VERSION/Python-$VERSION.tar.xz"
readonly DEBIAN_SUITE=trixie

log() { printf '[provision] %s\n' "$*" >&2; }
die() { printf '[provision] error: %s\n' "$*" >&2; exit 1; }

# interpreter_matches PATH WANT_GIL_DISABLED(0|1): true when PATH is CPython
# $VERSION built with Py_GIL_DISABLED == WANT and has the modules pip needs.
interpreter_matches() {
  local exe=$1 want=$2
  [ -x "$exe" ] || return 1
  "$exe" - "$VERSION" "$want" <<'PY' 2>/dev/null
import platform, sys, sysconfig
version, want = sys.argv[1], int(sys.argv[2])
ok = (platform.python_implementation() == "CPython"
      and platform.python_version() == version
      and int(sysconfig.get_config_var("Py_GIL_DISABLED") or 0) == want)
if ok:
    import ssl, zlib, ctypes, sqlite3, lzma, bz2  # noqa: F401  (pip, tox, numpy need them)
sys.exit(0 if ok else 1)
PY
}

# sha_ok FILE: true when FILE has the pinned SHA-256.
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]; }

# keep_tarball FILE ROUTE: verify FILE and move it into the cache.
keep_tarball() {
  if sha_ok "$1"; then
    mkdir -p "$(dirname "$TARBALL")"
    mv -f "$1" "$TARBALL"
    log "tarball from $2 verified (sha256 $SHA256)"
    return 0
  fi
  log "tarball from $2 does not match the pinned SHA-256; discarded"
  rm -f "$1"
  return 1
}

# apt_mirrors: print the Debian archive URIs this machine's apt sources use
# (one-line *.list and deb822 *.sources files), security archives excluded.
apt_mirrors() {
  local f
  {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      # deb [options] URI suite components...
      sed -E -n 's/^[[:space:]]*deb(-src)?[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+([^[:space:]]+).*/\3 \4/p' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      awk 'BEGIN { RS=""; FS="\n" }
           { uris=""; suites="";
             for (i = 1; i <= NF; i++) {
               if ($i ~ /^URIs:/)   { uris = substr($i, 6) }
               if ($i ~ /^Suites:/) { suites = substr($i, 8) }
             }
             n = split(uris, u, " ");
             split(suites, s, " ");
             for (j = 1; j <= n; j++) if (u[j] != "") print u[j], s[1] }' "$f"
    done
  } | awk '$2 !~ /security/ && $1 !~ /security/ { print $1 }' | awk '!seen[$0]++'
}

fetch_from_debian() {
  command -v apt-get >/dev/null || { log "apt-get not found: Debian route unavailable"; return 1; }
  local mirrors work keyring mirror opts
  mirrors=$(apt_mirrors)
  [ -n "$mirrors" ] || { log "no Debian mirror found in this machine's apt sources"; return 1; }
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  work=$(mktemp -d)
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  for mirror in $mirrors; do
    log "trying Debian source package python3.13 ($DEBIAN_SUITE) from the apt mirror $mirror"
    rm -rf "$work"/*
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/dl"
    if [ -f "$keyring" ]; then
      echo "deb-src [signed-by=$keyring] $mirror $DEBIAN_SUITE main" >"$work/sources.list"
    else
      echo "deb-src $mirror $DEBIAN_SUITE main" >"$work/sources.list"
    fi
    opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -q)
    if ! apt-get "${opts[@]}" update >"$work/update.log" 2>&1; then
      log "apt-get update against $mirror failed: $(tail -n 1 "$work/update.log")"
      continue
    fi
    if ! (cd "$work/dl" && apt-get "${opts[@]}" source --download-only "python3.13=$VERSION*" \
            >"$work/source.log" 2>&1 || apt-get "${opts[@]}" source --download-only python3.13 \
            >>"$work/source.log" 2>&1); then
      log "apt-get source failed: $(tail -n 1 "$work/source.log")"
      continue
    fi
    if [ -f "$work/dl/python3.13_$VERSION.orig.tar.xz" ] \
        && keep_tarball "$work/dl/python3.13_$VERSION.orig.tar.xz" "Debian ($DEBIAN_SUITE)"; then
      return 0
    fi
    log "Debian's python3.13 source package has no python3.13_$VERSION.orig.tar.xz"
  done
  return 1
}

fetch_tarball() {
  sha_ok "$TARBALL" && return 0
  mkdir -p "$(dirname "$TARBALL")"
  if [ -n "${THREADLOADER_PYTHON_TARBALL:-}" ]; then
    cp "$THREADLOADER_PYTHON_TARBALL" "$TARBALL.part"
    keep_tarball "$TARBALL.part" "\$THREADLOADER_PYTHON_TARBALL" && return 0
  fi
  if command -v curl >/dev/null; then
    log "trying the upstream download site"
    if curl -fsSL --connect-timeout 10 --max-time 300 -o "$TARBALL.part" "$UPSTREAM_URL" 2>/dev/null; then
      keep_tarball "$TARBALL.part" "upstream" && return 0
    else
      rm -f "$TARBALL.part"
      log "upstream download site not reachable"
    fi
  fi
  fetch_from_debian && return 0
  die "no route produced Python-$VERSION.tar.xz (sha256 $SHA256).
  Tried: \$THREADLOADER_PYTHON_TARBALL (unset or wrong file), the upstream download site
  (needs curl and internet), Debian's source package python3.13 from $DEBIAN_SUITE (needs
  apt-get and a Debian mirror in /etc/apt/sources.list*). Download the tarball by hand
  and set THREADLOADER_PYTHON_TARBALL=/path/to/Python-$VERSION.tar.xz."
}

check_build_tools() {
  local missing=() tool
  for tool in cc make tar xz sha256sum; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing build tools: ${missing[*]} (Debian: apt-get install build-essential xz-utils)"
}

# build FLAVOUR(ft|gil) PREFIX
build() {
  local flavour=$1 prefix=$2 src jobs flags=()
  check_build_tools
  fetch_tarball
  [ "$flavour" = ft ] && flags+=(--disable-gil)
  jobs=$(nproc 2>/dev/null || echo 2)
  src=$(mktemp -d "$CACHE/build-$flavour.XXXXXX")
  trap 'rm -rf "$src"; trap - RETURN' RETURN
  log "building CPython $VERSION ($flavour) into $prefix; log: $CACHE/build-$flavour.log"
  tar -xJf "$TARBALL" -C "$src" --strip-components=1
  rm -rf "$prefix"
  if ! (cd "$src" \
        && ./configure --prefix="$prefix" "${flags[@]}" --with-ensurepip=install \
        && make -j"$jobs" \
        && make install) >"$CACHE/build-$flavour.log" 2>&1; then
    die "building CPython $VERSION ($flavour) failed; see $CACHE/build-$flavour.log
  (Debian build libraries: apt-get install build-essential libssl-dev zlib1g-dev libbz2-dev
   liblzma-dev libsqlite3-dev libffi-dev libreadline-dev uuid-dev)"
  fi
}

# provide LINK_NAME WANT_GIL_DISABLED FLAVOUR
provide() {
  local name=$1 want=$2 flavour=$3 found prefix exe
  if interpreter_matches "$BIN/$name" "$want"; then
    log "$name ready: $(readlink -f "$BIN/$name")"
    return 0
  fi
  found=$(command -v "$name" 2>/dev/null || true)
  if [ -n "$found" ] && interpreter_matches "$found" "$want"; then
    exe=$(readlink -f "$found")
    log "$name: using the matching interpreter already installed at $exe"
  else
    prefix="$CACHE/cpython-$VERSION-$flavour"
    exe="$prefix/bin/$name"
    interpreter_matches "$exe" "$want" || build "$flavour" "$prefix"
    interpreter_matches "$exe" "$want" \
      || die "$exe was built but is not CPython $VERSION ($flavour) with ssl, zlib, ctypes, sqlite3, lzma and bz2; see $CACHE/build-$flavour.log"
  fi
  mkdir -p "$BIN"
  ln -sfn "$exe" "$BIN/$name"
  log "$name ready: $exe"
}

main() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.provision.lock"
  flock 9  # one provisioning at a time; a second caller waits, then finds the links ready
  provide python3.13t 1 ft
  provide python3.13 0 gil
}

main "$@"
