"""The install routes an operator or a developer takes (issue 16, items 1 and 2): the Debian
package (`make deb`), the wheel (`pip install .`, `pipx install .`) and `make run`.

The package is installed for real, by dpkg with its maintainer scripts, but into a private root:
``dpkg --root=DIR`` keeps its package database in DIR, and ``--force-script-chrootless`` runs
the maintainer scripts with ``DPKG_ROOT=DIR`` (which they honour) instead of chrooting. This
machine's /usr/bin, /etc, /opt and unit directories are never written, an installed boshd is
never clobbered, and parallel test runs do not contend for dpkg's lock. The private database
holds this machine's ``python3`` entry, so the package's ``Depends`` is checked for real.

The installed files then run at the paths the package and its units name: each command runs in
a private mount namespace (``unshare --mount``) in which DIR's /usr/bin, /opt, /etc and
/lib/systemd/system are overlaid, read-only, on this machine's (`in_root`). With
``sandbox=True`` the command also gets what the unit's hardening does to a process, as far as
that can be reproduced without systemd as PID 1: an unprivileged uid without capabilities and
with no_new_privs (DynamicUser=, PrivateUsers=, CapabilityBoundingSet=, NoNewPrivileges=), the
kernel's memory-deny-write-execute (PR_SET_MDWE, what MemoryDenyWriteExecute= asks for) and a
/proc mounted ``hidepid=invisible`` (ProtectProc=invisible).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import USERS
from tests.support.boshclient import BoshClient
from tests.support.daemon import (
    PROJECT_ROOT,
    DaemonProcess,
    daemon_config,
    daemon_env,
    metric_samples,
    to_toml,
)
from tests.support.prosody import PrivateProsody, free_port
from tests.support.stanzas import is_message, message
from tests.support.wsclient import WsClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION: str = PYPROJECT["project"]["version"]
#: The python3 the package's venv is built with (`packaging/deb/build.sh`): major, minor, and
#: the tag of its byte-code files.
_DEB_PYTHON = subprocess.run(
    [
        "/usr/bin/python3",
        "-c",
        "import sys; print(*sys.version_info[:2], sys.implementation.cache_tag)",
    ],
    capture_output=True,
    text=True,
    check=True,
).stdout.split()
PY_MAJOR, PY_MINOR, CACHE_TAG = int(_DEB_PYTHON[0]), int(_DEB_PYTHON[1]), _DEB_PYTHON[2]
PY = f"python{PY_MAJOR}.{PY_MINOR}"
SITE = f"opt/boshd/lib/{PY}/site-packages"
SERVICE = "/lib/systemd/system/boshd.service"
SOCKET = "/lib/systemd/system/boshd.socket"
CONFFILE = "/etc/boshd/boshd.toml"
#: A uid in systemd's DynamicUser= range (61184-65519) that owns nothing on this machine.
DYNAMIC_UID = 61184

# The mount namespace of `in_root`. $1: the private root; $2: 1 for the unit's sandbox; $3: the
# Python program that sets PR_SET_MDWE and execs the command (MDWE survives execve).
_NAMESPACE_SH = r"""
set -eu
root=$1 sandbox=$2 mdwe=$3
shift 3
for dir in /usr/bin /opt /etc /lib/systemd/system; do
    mount -t overlay -o "lowerdir=$root$dir:$dir" boshd-package "$dir"
done
cd /
if [ "$sandbox" = 1 ]; then
    mount -t proc -o hidepid=invisible proc /proc
    exec setpriv --reuid=@UID@ --regid=@UID@ --clear-groups --no-new-privs --inh-caps=-all \
        --bounding-set=-all /usr/bin/python3 -I -c "$mdwe" "$@"
fi
exec "$@"
""".replace("@UID@", str(DYNAMIC_UID))

_MDWE = """\
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3)
    sys.exit(f"PR_SET_MDWE failed, errno {ctypes.get_errno()}")
os.execv(sys.argv[1], sys.argv[1:])
"""

# Run inside the sandbox: what the process can see and do.
_SANDBOX_PROBE = """\
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
wx = libc.mmap(None, 4096, 7, 0x22, -1, 0)  # PROT_READ|WRITE|EXEC, MAP_PRIVATE|ANONYMOUS
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({
    "uid": os.getuid(),
    "wx_mapping": wx not in (None, ctypes.c_void_p(-1).value),
    "proc_stat": os.path.exists("/proc/stat"),
    "pid1_visible": os.path.exists("/proc/1"),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "cap_eff": status["CapEff"].strip(),
}))
"""


def _arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def in_root(root: Path, *argv: str, sandbox: bool = False) -> list[str]:
    """`argv` in a mount namespace where the package installed in `root` is at its real paths
    (and, with `sandbox`, under the unit's sandbox as the module docstring says)."""
    for tool in ("unshare", "setpriv", "mount"):
        assert shutil.which(tool), f"{tool} not found: apt package util-linux / mount"
    flag = "1" if sandbox else "0"
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _NAMESPACE_SH,
            "sh", str(root), flag, _MDWE, *argv]  # fmt: skip


def run_in_root(
    root: Path, *argv: str, sandbox: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `argv` as `in_root` does, with the test environment (PYTHONPATH names this
    checkout: the installed launcher must not look at it)."""
    return subprocess.run(
        in_root(root, *argv, sandbox=sandbox),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=daemon_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def unit_command(root: Path, key: str) -> list[str]:
    """The command line of `key` (``ExecStart``, ``ExecStartPre``) in the installed service."""
    text = (root / SERVICE.lstrip("/")).read_text(encoding="utf-8")
    match = re.search(rf"^{key}=(.+)$", text, flags=re.MULTILINE)
    assert match, f"no {key}= in {SERVICE}"
    return shlex.split(match.group(1))


def dpkg(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """dpkg on the private root (its own database and log; maintainer scripts see DPKG_ROOT)."""
    return subprocess.run(
        [
            "dpkg",
            f"--root={root}",
            f"--log={root}/var/log/dpkg.log",
            "--force-script-chrootless",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _metric_families(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def deb() -> Path:
    """`make deb`: the package of this checkout (rebuilt only when a source changed)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "deb"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    path = PROJECT_ROOT / "dist" / f"boshd_{VERSION}_{_arch()}.deb"
    assert path.is_file(), result.stdout
    return path


@pytest.fixture
def root(tmp_path: Path, deb: Path) -> Path:
    """The package installed by dpkg into a private root (see the module docstring)."""
    root = tmp_path / "root"
    admin = root / "var/lib/dpkg"
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True)
    (root / "var/log").mkdir()
    python3 = subprocess.run(
        ["dpkg-query", "--status", "python3"], capture_output=True, text=True, check=True
    ).stdout
    (admin / "status").write_text(python3.rstrip("\n") + "\n\n", encoding="utf-8")
    (admin / "available").touch()
    result = dpkg(root, "--install", str(deb))
    assert result.returncode == 0, result.stdout + result.stderr
    return root


# ===================================================================================== .deb


def test_package_fields_and_layout(deb: Path) -> None:
    """Issue 16 item 1: the .deb is `boshd` for this architecture, depends on the python3 minor
    version its venv was built with, lists /etc/boshd/boshd.toml as its only conffile, and
    ships /usr/bin/boshd, both units, the docs and /opt/boshd with the schemas, everything
    root-owned and byte-compiled, and no installer or console script naming the build path."""
    fields = subprocess.run(
        ["dpkg-deb", "--field", str(deb), "Package", "Version", "Architecture", "Depends"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    control = dict(line.split(": ", 1) for line in fields.splitlines())
    major, minor = PY_MAJOR, PY_MINOR
    assert control == {
        "Package": "boshd",
        "Version": VERSION,
        "Architecture": _arch(),
        "Depends": f"python3 (>= {major}.{minor}), python3 (<< {major}.{minor + 1})",
    }
    conffiles = subprocess.run(
        ["dpkg-deb", "--info", str(deb), "conffiles"], capture_output=True, text=True, check=True
    ).stdout
    assert conffiles.split() == [CONFFILE]

    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    entries: dict[str, tuple[str, str]] = {}
    for line in listing.splitlines():
        mode, owner, _size, _date, _time, name, *_link = line.split()
        entries[name.removeprefix("./").rstrip("/")] = (mode, owner)
    assert {owner for _mode, owner in entries.values()} == {"root/root"}
    assert entries["usr/bin/boshd"][0] == "-rwxr-xr-x"
    for path in (
        CONFFILE,
        SERVICE,
        SOCKET,
        "/usr/share/doc/boshd/README.md",
        "/usr/share/doc/boshd/configuration.md",
        "/usr/share/doc/boshd/deployment.md",
        "/usr/share/doc/boshd/copyright",
        "/usr/share/doc/boshd/examples/credentials.conf",
        f"/{SITE}/boshd/py.typed",
        f"/{SITE}/boshd/schemas/httpbind.xsd",
        f"/{SITE}/boshd/schemas/xbosh.xsd",
        f"/{SITE}/boshd/schemas/xml.xsd",
    ):
        assert entries.get(path.lstrip("/"), ("", ""))[0] == "-rw-r--r--", path
    bin_dir = {name for name in entries if name.startswith("opt/boshd/bin/")}
    assert bin_dir == {f"opt/boshd/bin/{n}" for n in ("python", "python3", PY)}
    assert not [name for name in entries if re.match(rf"{SITE}/(pip|setuptools)\b", name)]
    tag = CACHE_TAG
    sources = [name for name in entries if name.startswith("opt/") and name.endswith(".py")]
    assert len(sources) > 100
    uncompiled = [
        name
        for name in sources
        if f"{os.path.dirname(name)}/__pycache__/{Path(name).stem}.{tag}.pyc" not in entries
    ]
    assert uncompiled == []


def test_dpkg_installs_with_its_conffile_and_verifies(root: Path) -> None:
    """Issue 16 item 1: dpkg installs the package (its Depends met by this machine's python3),
    records /etc/boshd/boshd.toml as a conffile, `dpkg --verify` finds every file as shipped,
    and no installed file names the directory the package was built in."""
    status = dpkg(root, "--status", "boshd")
    assert status.returncode == 0, status.stderr
    assert "Status: install ok installed" in status.stdout
    assert re.search(rf"^Conffiles:\n {re.escape(CONFFILE)} [0-9a-f]{{32}}$", status.stdout, re.M)
    verify = dpkg(root, "--verify", "boshd")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout == ""
    named = [
        path
        for top in ("opt", "usr", "etc", "lib")
        for path in (root / top).rglob("*")
        if path.is_file() and not path.is_symlink() and b"/boshd-deb." in path.read_bytes()
    ]
    assert named == []


def test_installed_boshd_checks_the_shipped_config(root: Path) -> None:
    """Issue 16 item 1: the installed /usr/bin/boshd prints the version, `check-config` accepts
    the shipped /etc/boshd/boshd.toml (its default path, and the unit's ExecStartPre line), and
    it runs the code in /opt/boshd with the schemas inside, whatever PYTHONPATH says."""
    version = run_in_root(root, "/usr/bin/boshd", "version")
    assert (version.returncode, version.stdout) == (0, f"boshd {VERSION}\n"), version.stderr
    default = run_in_root(root, "/usr/bin/boshd", "check-config")
    assert (default.returncode, default.stdout) == (0, f"{CONFFILE}: OK\n"), default.stderr
    pre = unit_command(root, "ExecStartPre")
    assert pre == ["/usr/bin/boshd", "check-config", "--config", CONFFILE]
    checked = run_in_root(root, *pre)
    assert checked.returncode == 0, checked.stderr
    launcher = (root / "usr/bin/boshd").read_text(encoding="utf-8")
    assert launcher.startswith("#!/opt/boshd/bin/python3 -I\n")
    where = run_in_root(
        root,
        "/opt/boshd/bin/python3",
        "-I",
        "-c",
        "import boshd; from boshd.wire.schema import default_schema_dir as d;"
        " print(boshd.__file__); print(d())",
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.splitlines() == [
        f"/{SITE}/boshd/__init__.py",
        f"/{SITE}/boshd/schemas",
    ]


def test_installed_units_verify(root: Path) -> None:
    """Issue 16 item 1: `systemd-analyze verify` accepts the installed boshd.service and
    boshd.socket exactly as installed (ExecStart=/usr/bin/boshd exists), also with the
    documented LoadCredential= drop-in from /usr/share/doc/boshd/examples in place."""
    verify = run_in_root(root, "systemd-analyze", "verify", SERVICE, SOCKET)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout + verify.stderr == ""

    dropin = root / "etc/systemd/system/boshd.service.d/credentials.conf"
    dropin.parent.mkdir(parents=True)
    shutil.copy(root / "usr/share/doc/boshd/examples/credentials.conf", dropin)
    with_dropin = run_in_root(root, "systemd-analyze", "verify", SERVICE)
    assert with_dropin.returncode == 0, with_dropin.stderr
    assert with_dropin.stdout + with_dropin.stderr == ""
    # The drop-in is read: a broken line in it is reported.
    dropin.write_text("[Service]\nLoadCredential=\nNoSuchSetting=1\n", encoding="utf-8")
    broken = run_in_root(root, "systemd-analyze", "verify", SERVICE)
    assert "NoSuchSetting" in broken.stderr


async def test_installed_daemon_serves_under_the_units_sandbox(
    root: Path, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """Issue 16 item 1: the installed unit's ExecStartPre and ExecStart, run as an unprivileged
    uid without capabilities, with memory-deny-write-execute and /proc showing only its own
    processes (the unit's new PrivateUsers=, MemoryDenyWriteExecute=, ProtectProc=), log in
    over BOSH and WebSocket to the test Prosody, exchange messages, expose
    every metric family the unsandboxed daemon does, and drain on SIGTERM with status 0."""
    probe = run_in_root(root, "/opt/boshd/bin/python3", "-I", "-c", _SANDBOX_PROBE, sandbox=True)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == (
        f'{{"uid": {DYNAMIC_UID}, "wx_mapping": false, "proc_stat": true, '
        f'"pid1_visible": false, "no_new_privs": "1", "cap_eff": "0000000000000000"}}'
    )

    config = daemon_config({prosody.domain: prosody.c2s_port})
    (root / CONFFILE.lstrip("/")).write_text(to_toml(config), encoding="utf-8")
    pre = run_in_root(root, *unit_command(root, "ExecStartPre"), sandbox=True)
    assert pre.returncode == 0, pre.stderr
    start = unit_command(root, "ExecStart")
    assert start == ["/usr/bin/boshd", "run", "--config", CONFFILE]
    sandboxed = DaemonProcess(
        tmp_path / "sandboxed", config, wrapper=in_root(root, sandbox=True), command=start[:1]
    )
    plain = DaemonProcess(
        tmp_path / "plain",
        daemon_config({prosody.domain: prosody.c2s_port}),
        wrapper=in_root(root),
        command=start[:1],
    )
    try:
        sandboxed.spawn(*start[1:])
        plain.spawn()
        await sandboxed.wait_ready(timeout=30)
        await plain.wait_ready(timeout=30)
        async with aiohttp.ClientSession() as http:
            families = []
            for daemon in (sandboxed, plain):
                async with http.get(f"{daemon.base_url}/metrics") as resp:
                    families.append(_metric_families(await resp.text()))
        assert families[0] == families[1]
        async with (
            BoshClient(sandboxed.bosh_url, prosody.domain, wait=10) as bosh,
            WsClient(sandboxed.ws_url, prosody.domain) as ws,
        ):
            await bosh.login("alice", USERS["alice"], "PLAIN")
            await ws.login("bob", USERS["bob"], "PLAIN")
            assert bosh.jid is not None
            assert ws.jid is not None
            await bosh.send(message(ws.jid, "from the package"))
            await ws.wait_for(is_message(body="from the package"), timeout=5)
            await ws.send(message(bosh.jid, "and back"))
            await bosh.wait_for(is_message(body="and back"), timeout=5)
            await bosh.terminate()
        async with aiohttp.ClientSession() as http:
            samples = await metric_samples(http, sandboxed.base_url)
            counted = [
                value
                for key, value in samples.items()
                if key.startswith("boshd_sessions_") and 'transport="bosh"' in key
            ]
            assert counted
            assert max(counted) >= 1
        sandboxed.send_signal(signal.SIGTERM)
        assert await sandboxed.wait_exit(15) == 0, sandboxed.log_tail()
        assert "boshd stopped" in sandboxed.log_text()
        assert "Traceback" not in sandboxed.log_text()
    finally:
        await sandboxed.aclose()
        await plain.aclose()


def test_conffile_kept_on_reinstall_and_purge_removes_everything(root: Path, deb: Path) -> None:
    """Issue 16 item 1: an operator's edit of /etc/boshd/boshd.toml survives reinstalling the
    package (no prompt, no .dpkg-* copies); `dpkg --purge` removes every file, the conffile and
    the links `systemctl enable` made, through the maintainer scripts honouring DPKG_ROOT."""
    conffile = root / CONFFILE.lstrip("/")
    edited = conffile.read_text(encoding="utf-8") + "# edited by the operator\n"
    conffile.write_text(edited, encoding="utf-8")
    again = dpkg(root, "--install", str(deb))
    assert again.returncode == 0, again.stdout + again.stderr
    assert conffile.read_text(encoding="utf-8") == edited
    assert sorted(p.name for p in conffile.parent.iterdir()) == ["boshd.toml"]

    wants = {
        root / "etc/systemd/system/multi-user.target.wants/boshd.service": SERVICE,
        root / "etc/systemd/system/sockets.target.wants/boshd.socket": SOCKET,
    }
    for link, target in wants.items():
        link.parent.mkdir(parents=True)
        link.symlink_to(target)
    purge = dpkg(root, "--purge", "boshd")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert dpkg(root, "--status", "boshd").returncode != 0
    for gone in ("usr/bin/boshd", "opt/boshd", "etc/boshd", SERVICE, SOCKET, "usr/share/doc/boshd"):
        assert not (root / gone.lstrip("/")).exists(), gone
    assert not [link for link in wants if link.is_symlink()]


# ==================================================================================== wheel


def test_wheel_carries_the_schemas_and_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    """Issue 16 item 1: `pip wheel .` gives a wheel with the XSDs, py.typed and the `boshd`
    console script; installed with its dependencies into a fresh virtualenv (what `pip install`
    and `pipx install` do) it runs `version` and `check-config` and loads its schemas from
    inside the installed package, from a directory that is not the checkout."""
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), "."],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("boshd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"boshd-{VERSION}.dist-info/entry_points.txt").decode()
    for name in ("httpbind.xsd", "xbosh.xsd", "xml.xsd"):
        assert f"boshd/schemas/{name}" in names
    assert "boshd/py.typed" in names
    assert "boshd = boshd.cli:main" in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in daemon_env().items() if k != "PYTHONPATH"}
    installed = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr

    def boshd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin/boshd"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
            check=False,
        )

    assert boshd("version").stdout == f"boshd {VERSION}\n"
    checked = boshd("check-config", "--config", str(PROJECT_ROOT / "conf/boshd.toml"))
    assert checked.returncode == 0, checked.stderr
    schema = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "from boshd.wire.schema import default_body_schema, default_schema_dir;"
            " default_body_schema(); print(default_schema_dir())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert schema.returncode == 0, schema.stderr
    site = subprocess.run(
        [str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert schema.stdout.strip() == f"{site}/boshd/schemas"


# ================================================================================= make run


def _names(requirements: list[str]) -> set[str]:
    """Normalised distribution names of requirement strings."""
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match, requirement
        names.add(re.sub(r"[-_.]+", "-", match.group(0)).lower())
    return names


@contextlib.contextmanager
def _make_run(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` (a `make run`) in its own process group, logging to `log`; on exit send the
    group SIGINT, as Ctrl-C in a terminal does (make waits, boshd drains), wait for it, and
    SIGKILL whatever is left. (SIGTERM would reach boshd twice: make forwards it.)"""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env=daemon_env(),
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            proc.poll()
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(encoding="utf-8", errors="replace")
        if "boshd ready" in text:
            return text
        assert proc.poll() is None, f"make run exited {proc.returncode}:\n{text}"
        assert time.monotonic() < deadline, f"no 'boshd ready' in {timeout} s:\n{text}"
        time.sleep(0.05)


def _wait_stopped(log: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while "boshd stopped" not in (text := log.read_text(encoding="utf-8", errors="replace")):
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    return text


def test_make_run_installs_runtime_only_and_restarts_offline(tmp_path: Path) -> None:
    """Issue 16 item 2: `make run` on a new venv installs boshd with its runtime dependencies
    and none of the test tools, serves, and a second `make run` reuses the venv without pip,
    in a network namespace with nothing but loopback."""
    assert shutil.which("ip"), "ip not found: apt package iproute2"
    venv = tmp_path / "venv"
    config = tmp_path / "boshd.toml"
    config.write_text(to_toml(daemon_config({"localhost": free_port()})), encoding="utf-8")
    make = ["make", "--no-print-directory", "run", f"VENV={venv}", f"CONFIG={config}"]

    first_log = tmp_path / "first.log"
    with _make_run(make, first_log) as proc:
        first = _wait_ready(proc, first_log, timeout=600)
    _wait_stopped(first_log)

    listed = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = _names(listed.split())
    runtime = _names(PYPROJECT["project"]["dependencies"])
    test_tools = _names(PYPROJECT["project"]["optional-dependencies"]["test"])
    assert runtime <= installed
    assert "boshd" in installed
    assert not installed & test_tools, installed & test_tools
    assert "pip install --quiet -e ." in first

    second_log = tmp_path / "second.log"
    offline = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    with _make_run([*offline, *make], second_log) as proc:
        second = _wait_ready(proc, second_log, timeout=60)
    _wait_stopped(second_log)
    assert "pip" not in second
    assert "venv" not in second.replace(str(venv), "")
