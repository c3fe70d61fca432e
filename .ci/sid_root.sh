#!/usr/bin/env bash
# Run a command on a Python this machine lacks, from Debian unstable (sid), in a
# root of its own:
#
#     .ci/sid_root.sh 3.14 pytest -m "not e2e" tests/test_pool.py
#     .ci/sid_root.sh 3.15            # a shell there
#
# The command runs in a copy of this checkout, in a virtualenv of that Python
# with `pip install $AIOTHREADS_SID_INSTALL` done there (default: -e . --group test;
# done again only when pyproject.toml, those arguments or the Python change).
#
# The root is built once with debootstrap and kept at $AIOTHREADS_SID_ROOT
# (default /var/cache/aiothreads/sid-root), the mirror taken from this
# machine's own apt sources ($AIOTHREADS_SID_MIRROR overrides it). pip there
# gets this machine's pip configuration, and read-only views of the local
# indexes, wheel directories and files that configuration names. Every mount
# is made in a mount namespace of its own, so none outlives the command, even
# when it is killed. Needs root.
set -euo pipefail

ROOT=${AIOTHREADS_SID_ROOT:-/var/cache/aiothreads/sid-root}
# Build the root with these; a root built from another list is built again.
PACKAGES=python3.14,python3.14-venv,python3.15,python3.15-venv,ca-certificates
MARKER=.aiothreads-sid-root
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
HOME=${HOME:-/root}
INSTALL=${AIOTHREADS_SID_INSTALL:-"-e . --group test"}

die() {
    echo "sid_root: $*" >&2
    exit 1
}

# Mounts at or under a path (to the kernel's view of this namespace).
mounts_under() {
    awk -v root="$1" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo
}

# The Debian archive this machine's apt uses (not its security archive).
mirror() {
    if [ -n "${AIOTHREADS_SID_MIRROR:-}" ]; then
        echo "$AIOTHREADS_SID_MIRROR"
        return
    fi
    {
        sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
        sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
    } | grep -E '^https?://.*/debian/?$' | head -n 1 || true
}

# Build the root beside its place, then move it there: a root is complete or absent.
build_root() {
    command -v debootstrap >/dev/null 2>&1 ||
        die "building $ROOT needs debootstrap (Debian: apt-get install debootstrap)"
    local archive new
    archive=$(mirror)
    [ -n "$archive" ] || die "no Debian archive in /etc/apt/sources*; set AIOTHREADS_SID_MIRROR"
    new="$ROOT.new"
    [ -z "$(mounts_under "$new")" ] || die "$new has mounts on it; unmount them first"
    rm -rf "$new"
    echo "sid_root: building $ROOT from $archive (about 30 s, 340 MB)" >&2
    local started=$SECONDS
    # debootstrap mounts /proc and /sys in the new root while it works: in a
    # namespace of its own, an interrupted build leaves no mount behind.
    if ! unshare --mount --propagation private -- debootstrap --variant=minbase --include="$PACKAGES" sid "$new" "$archive" >"$new.log" 2>&1; then
        tail -n 20 "$new.log" >&2
        die "debootstrap failed (log: $new.log)"
    fi
    rm -f "$new.log"
    echo "$PACKAGES" >"$new/$MARKER"
    if [ -e "$ROOT" ]; then
        [ -z "$(mounts_under "$ROOT")" ] || die "$ROOT has mounts on it; unmount them first"
        rm -rf "$ROOT"
    fi
    mv "$new" "$ROOT"
    echo "sid_root: built in $((SECONDS - started)) s" >&2
}

root_is_built() {
    [ "$(cat "$ROOT/$MARKER" 2>/dev/null)" = "$PACKAGES" ]
}

# Absolute paths named in pip's configuration here (files and PIP_* variables):
# indexes, wheel directories, constraint and certificate files. A local index
# (.../simple) comes with its parent: its pages link to ../../files/.
pip_paths() {
    local name
    {
        for name in /etc/pip.conf "${XDG_CONFIG_DIRS:-/etc/xdg}/pip/pip.conf" \
            "$HOME/.pip/pip.conf" "$HOME/.config/pip/pip.conf" "${PIP_CONFIG_FILE:-}"; do
            [ -f "$name" ] && grep -v -E '^[[:space:]]*([#;]|cache-dir|log)' "$name"
        done
        for name in $(compgen -e | grep '^PIP_' | grep -v -E '^PIP_(CACHE_DIR|LOG|CONFIG_FILE)$'); do
            echo "${!name}"
        done
    } | grep -o -E "(file://)?/[^[:space:]'\",]+" | sed -e 's|^file://||' -e 's|/simple/\?$||' | sort -u
}

# Copy what pip and the resolver need, and this checkout, into the root.
furnish() {
    local version=$1 source=$2 name
    cp -L --remove-destination /etc/resolv.conf "$ROOT/etc/resolv.conf"
    cp -L "${SSL_CERT_FILE:-$CA_BUNDLE}" "$ROOT$CA_BUNDLE"
    rm -rf "$ROOT/etc/pip.conf" "$ROOT/etc/xdg/pip" "$ROOT/root/.pip" "$ROOT/root/.config/pip"
    for name in /etc/pip.conf "${XDG_CONFIG_DIRS:-/etc/xdg}/pip" "$HOME/.pip" "$HOME/.config/pip"; do
        if [ -e "$name" ]; then
            local target="$ROOT${name/#$HOME//root}"
            mkdir -p "$(dirname "$target")"
            cp -rL "$name" "$target"
        fi
    done
    if [ -n "${PIP_CONFIG_FILE:-}" ] && [ -f "$PIP_CONFIG_FILE" ]; then
        mkdir -p "$ROOT$(dirname "$PIP_CONFIG_FILE")"
        cp -L "$PIP_CONFIG_FILE" "$ROOT$PIP_CONFIG_FILE"
    fi
    # The files a checkout has, less what .gitignore names.
    local copy="$ROOT/aiothreads/$version/src"
    rm -rf "$copy"
    mkdir -p "$copy"
    tar -C "$source" --exclude-vcs --exclude-vcs-ignores --exclude=__pycache__ \
        --exclude=./.venv --exclude=./.nox -cf - . | tar -C "$copy" -xf -
}

# What runs in the root: the virtualenv, then the command.
# shellcheck disable=SC2016  # expanded in the root
IN_ROOT='
set -eu
version=$1
install=$2
shift 2
venv=/aiothreads/$version/venv
cd "/aiothreads/$version/src"
[ -x "$venv/bin/python" ] || "python$version" -m venv "$venv"
wanted="$("$venv/bin/python" -VV) $(sha256sum pyproject.toml) $install"
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$wanted" ]; then
    "$venv/bin/pip" install --quiet --upgrade "pip>=25.1" # for --group
    # $install is split into arguments on purpose.
    "$venv/bin/pip" install --quiet $install
    echo "$wanted" >"$venv/.installed"
fi
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
[ "$#" -gt 0 ] || set -- bash
exec "$@"
'

# In a mount namespace of its own: mount, then run in the root.
enter() {
    local version=$1 path
    shift
    mount -t proc proc "$ROOT/proc"
    mount -t tmpfs -o mode=1777 shm "$ROOT/dev/shm"
    while read -r path; do
        [ -e "$path" ] || continue
        if [ -d "$path" ]; then
            mkdir -p "$ROOT$path"
        else
            mkdir -p "$ROOT$(dirname "$path")"
            [ -e "$ROOT$path" ] || touch "$ROOT$path"
        fi
        mount --bind -o ro "$path" "$ROOT$path"
    done < <(pip_paths)
    local environment=(PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 "TERM=${TERM:-dumb}")
    local name
    for name in $(compgen -e | grep -E '^(CI|NO_COLOR|FORCE_COLOR|COLUMNS|PIP_.*|AIOTHREADS_.*|PYTEST_.*|HYPOTHESIS_.*|PYTHON(HASHSEED|DEVMODE|WARNINGS|FAULTHANDLER|ASYNCIODEBUG|TRACEMALLOC)|[a-z]+_proxy|[A-Z]+_PROXY)$' |
        grep -v '^AIOTHREADS_SID_'); do
        environment+=("$name=${!name}")
    done
    exec chroot "$ROOT" /usr/bin/env -i "${environment[@]}" /bin/sh -c "$IN_ROOT" sh "$version" "$INSTALL" "$@"
}

main() {
    if [ "${1:-}" = --enter ]; then
        shift
        enter "$@"
    fi
    [ "$#" -ge 1 ] || die "usage: $0 PYTHON_VERSION [COMMAND...]"
    local version=$1
    shift
    case ",$PACKAGES," in
    *",python$version,"*) ;;
    *) die "the root has no Python $version (it has: $PACKAGES)" ;;
    esac
    [ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot and mounts)"
    local source
    source=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

    mkdir -p "$(dirname "$ROOT")"
    # Runs share the root; a build has it to itself. Each Python's copy of the
    # checkout and virtualenv serve one run at a time. The locks are held until
    # the command ends (its process inherits them).
    exec 8>"$ROOT.lock"
    flock -s 8
    if ! root_is_built; then
        flock -x 8
        root_is_built || build_root
        flock -s 8
    fi
    exec 9>"$ROOT.$version.lock"
    flock -n 9 || {
        echo "sid_root: waiting for another run on Python $version" >&2
        flock 9
    }
    furnish "$version" "$source"
    exec unshare --mount --propagation private -- bash "$source/.ci/sid_root.sh" --enter "$version" "$@"
}

main "$@"
