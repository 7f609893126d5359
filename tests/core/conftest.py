"""Shared fixtures of the core tests."""
import time

import pytest


class InProc:
    """The result of the CLI entry point run in this process (for refusals: no interpreter start-up):
    ``returncode``, ``stdout``, ``stderr``, ``cpu_s`` (process CPU seconds of the call) and ``err_lines`` (the
    non-empty stderr lines)."""

    def __init__(self, returncode, stdout, stderr, cpu_s):
        self.returncode, self.stdout, self.stderr, self.cpu_s = returncode, stdout, stderr, cpu_s
        self.err_lines = [ln for ln in stderr.splitlines() if ln.strip()]


@pytest.fixture
def cli_inproc(capsys):
    """``cli_inproc(*args) -> InProc``: ``latentgeo ARGS`` through ``latentgeo.cli.main`` in this process."""
    def run(*args):
        from latentgeo.cli import main

        capsys.readouterr()
        t0 = time.process_time()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
            raise SystemExit(0)
        cap = capsys.readouterr()
        return InProc(exc.value.code, cap.out, cap.err, time.process_time() - t0)
    return run
