#!/usr/bin/env bash
# Build the boshd Debian package: `packaging/deb/build.sh OUT.deb` (what `make deb` runs).
#
# Layout of the package:
#   /opt/boshd/                     boshd and its runtime dependencies in a virtualenv of
#                                   Debian's own python3 (so it needs nothing but python3)
#   /usr/bin/boshd                  launcher: /opt/boshd/bin/python3 -I, then boshd.cli.main
#   /etc/boshd/boshd.toml           conffile (conf/boshd.toml)
#   /lib/systemd/system/boshd.{service,socket}
#   /usr/share/doc/boshd/           README, docs/*.md, examples/ (boshd.toml, credentials.conf)
#
# The virtualenv is built in a staging directory and used from /opt/boshd: that works because
# a venv finds itself through bin/../pyvenv.cfg and bin/python3 is a symlink to /usr/bin/python3;
# only the console scripts and activate scripts name the staging path, and they are not shipped.
# Everything is byte-compiled for its installed path, since /opt is read-only for the service
# (ProtectSystem=strict) and Python could not write its caches there.
set -euo pipefail

out=${1:?usage: build.sh OUT.deb}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
python=${DEB_PYTHON:-/usr/bin/python3}
maintainer=${DEB_MAINTAINER:-boshd maintainers <root@localhost>}

cd "$top"
"$python" -c 'import ensurepip, venv' 2>/dev/null \
    || { echo "build.sh: $python cannot create virtualenvs: apt package python3-venv" >&2; exit 1; }
read -r version pymajor pyminor < <("$python" - <<'PY'
import sys, tomllib
with open("pyproject.toml", "rb") as f:
    print(tomllib.load(f)["project"]["version"], *sys.version_info[:2])
PY
)
arch=$(dpkg --print-architecture)

work=$(mktemp -d "${TMPDIR:-/tmp}/boshd-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
venv=$root/opt/boshd

# A clean copy of what the wheel is built from: setuptools builds in the source tree and its
# build/ directory could carry files that were deleted since.
mkdir -p "$work/src"
tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md boshd schemas \
    | tar -x -C "$work/src"

echo "build.sh: boshd $version and its dependencies into /opt/boshd (python $pymajor.$pyminor)"
"$python" -m venv "$venv"
"$venv/bin/python3" -m pip install --quiet --no-compile --disable-pip-version-check "$work/src"
"$venv/bin/python3" -m pip uninstall --quiet --yes pip setuptools
find "$venv/bin" -mindepth 1 ! -name 'python*' -delete
sed -i "s|^command = .*|command = $python -m venv /opt/boshd|" "$venv/pyvenv.cfg"
# direct_url.json would name the build directory the package was installed from.
for dist_info in "$venv"/lib/python*/site-packages/boshd-*.dist-info; do
    rm "$dist_info/direct_url.json"
    sed -i '/direct_url\.json/d' "$dist_info/RECORD"
done
find "$venv" -name __pycache__ -prune -exec rm -rf {} +
"$python" -m compileall -q -j 0 -s "$root" -p / "$venv/lib" >/dev/null

install -D -m 0755 "$here/boshd" "$root/usr/bin/boshd"
install -D -m 0644 conf/boshd.toml "$root/etc/boshd/boshd.toml"
install -D -m 0644 -t "$root/lib/systemd/system" systemd/boshd.service systemd/boshd.socket
doc=$root/usr/share/doc/boshd
install -D -m 0644 -t "$doc" README.md docs/*.md "$here/copyright"
install -D -m 0644 -t "$doc/examples" conf/boshd.toml "$here/credentials.conf"

mkdir "$root/DEBIAN"
install -m 0755 -t "$root/DEBIAN" "$here/postinst" "$here/prerm" "$here/postrm"
echo /etc/boshd/boshd.toml >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
cat >"$root/DEBIAN/control" <<EOF
Package: boshd
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: python3 (>= $pymajor.$pyminor), python3 (<< $pymajor.$((pyminor + 1)))
Section: net
Priority: optional
Description: XMPP connection manager: BOSH and WebSocket to TCP XMPP servers
 boshd lets web chat clients reach ordinary XMPP servers: it serves BOSH
 (XEP-0124/0206) and XMPP over WebSocket (RFC 7395) and bridges each session to
 the server's client port, with STARTTLS and certificate checks.
 .
 boshd and the Python libraries it runs on are in /opt/boshd, a virtualenv of
 the system's python3. The service is installed but neither enabled nor
 started: edit /etc/boshd/boshd.toml, then systemctl enable --now boshd.
EOF

mkdir -p "$(dirname "$out")"
# zstd: a second to compress instead of twenty for xz; dpkg reads it since Debian 12.
dpkg-deb --root-owner-group -Zzstd --build "$root" "$out.tmp" >/dev/null
mv "$out.tmp" "$out"
echo "build.sh: $out"
