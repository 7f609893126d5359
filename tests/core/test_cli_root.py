"""The CLI root: version, help, and the one-line error contract (run as a subprocess, as a user would)."""
import subprocess
import sys

from latentgeo import __version__


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "latentgeo", *args], capture_output=True, text=True, timeout=120)


def test_version_and_help():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"latentgeo {__version__}"
    r = _cli("--help")
    assert r.returncode == 0 and "train" in r.stdout


def test_unknown_command_is_one_line_error():
    r = _cli("no-such-command")
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
