#!/bin/sh
# LineGuard device install step (the recipe's install lifecycle runs it: sh install-device.sh
# <work dir> <artifact dir>). The nucleus runs install at every start (nucleus
# lifecycle/GenericExternalService.java, Lifecycle.java), so a finished install is recognised by
# its marker and skipped; a device without the Python the bundled wheels were built for gets one
# line naming what it needs, instead of a pip error far down the log.
set -eu
work="$1"
artifact="$2"
runtime="$artifact/device-runtime.txt"
[ -r "$runtime" ] || { echo "lineguard install: $runtime is missing (a broken artifact)" >&2; exit 1; }
want_python=$(sed -n 's/^python=//p' "$runtime")
want_arch=$(sed -n 's/^arch=//p' "$runtime")
digest=$(sed -n 's/^digest=//p' "$runtime")
arch=$(uname -m)
if [ "$arch" != "$want_arch" ]; then
    echo "lineguard install: this artifact's wheels are for $want_arch, this device is $arch (build it with --arch $arch)" >&2
    exit 1
fi
python=""
found=""
for candidate in "python$want_python" python3; do
    if command -v "$candidate" >/dev/null 2>&1; then
        version=$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
        found="$found $candidate=$version"
        if [ "$version" = "$want_python" ]; then
            python=$(command -v "$candidate")
            break
        fi
    fi
done
if [ -z "$python" ]; then
    echo "lineguard install: needs Python $want_python with venv (python$want_python or python3 $want_python on PATH; found:${found:- none}); on Debian/Ubuntu: apt-get install python$want_python python$want_python-venv" >&2
    exit 1
fi
marker="$work/venv/.lineguard-installed"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$digest" ] && [ -x "$work/venv/bin/python" ]; then
    echo "lineguard install: already installed ($digest); nothing to do"
    exit 0
fi
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "lineguard install: $python has no venv/ensurepip module; on Debian/Ubuntu: apt-get install python$want_python-venv" >&2
    exit 1
fi
rm -rf "$work/venv"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check --no-index \
    --find-links "$artifact/wheels" -r "$artifact/requirements-device.txt"
echo "$digest" > "$marker"
echo "lineguard install: installed with $python into $work/venv ($digest)"
