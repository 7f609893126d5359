"""latentgeo.threads: overrides, validation, the load rule and cgroup quota parsing (no timing)."""
import os

import pytest
import torch

from latentgeo import threads as T
from latentgeo.errors import LatentgeoError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(T.ENV_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def _load(monkeypatch, load1, runnable=0.0, own=0.0):
    monkeypatch.setattr(T.os, "getloadavg", lambda: (load1, load1, load1))
    monkeypatch.setattr(T, "_runnable_others", lambda *a, **k: runnable)
    monkeypatch.setattr(T, "_own_load_share", lambda: own)


def _cores(monkeypatch, n, quota=None):
    monkeypatch.setattr(T, "_affinity", lambda: n)
    monkeypatch.setattr(T.os, "cpu_count", lambda: n)
    monkeypatch.setattr(T, "cgroup_cpu_limit", lambda: quota)


def test_requested_wins_over_env_and_load(monkeypatch):
    _load(monkeypatch, 50.0, 50.0)
    monkeypatch.setenv(T.ENV_VAR, "3")
    assert T.choose_threads(5) == 5
    assert T.thread_choice(2)["source"] == "requested"


@pytest.mark.parametrize("bad", [0, -4, 1.5, "abc", True])
def test_bad_request_is_one_line_error(bad):
    with pytest.raises(LatentgeoError) as e:
        T.choose_threads(bad)
    assert "\n" not in str(e.value) and "positive integer" in str(e.value)


def test_env_override_wins_over_load_and_omp(monkeypatch):
    _load(monkeypatch, 50.0, 50.0)
    monkeypatch.setenv(T.ENV_VAR, " 3 ")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert T.choose_threads() == 3
    assert T.thread_choice()["source"] == T.ENV_VAR


@pytest.mark.parametrize("bad", ["-4", "abc", "0", "2.5"])
def test_env_override_is_validated(monkeypatch, bad):
    monkeypatch.setenv(T.ENV_VAR, bad)
    with pytest.raises(LatentgeoError) as e:
        T.choose_threads()
    msg = str(e.value)
    assert "\n" not in msg and T.ENV_VAR in msg and repr(bad) in msg


def test_omp_num_threads_is_honoured_unless_auto(monkeypatch):
    _cores(monkeypatch, 8)
    _load(monkeypatch, 0.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "2,1")
    assert T.thread_choice() == {"threads": 2, "source": "OMP_NUM_THREADS"}
    monkeypatch.setenv(T.ENV_VAR, "auto")
    assert T.choose_threads() == 8
    monkeypatch.delenv(T.ENV_VAR)
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")  # not ours to reject: ignored, as libgomp does
    assert T.choose_threads() == 8


def test_result_within_usable_cores_on_this_machine():
    n = T.choose_threads()
    assert 1 <= n <= T.usable_cores()
    assert 1 <= T.usable_cores() <= (os.cpu_count() or 1)


def test_no_load_gives_usable_cores(monkeypatch):
    _cores(monkeypatch, 4)
    _load(monkeypatch, 0.0)
    assert T.choose_threads() == 4
    _cores(monkeypatch, 4, quota=2.5)  # quota rounds down
    assert T.choose_threads() == 2


def test_high_load_gives_one(monkeypatch):
    _cores(monkeypatch, 2)
    _load(monkeypatch, 5.0)
    assert T.choose_threads() == 1
    _load(monkeypatch, 0.0, runnable=2.0)  # just-started jobs: the 1-minute average has not caught up yet
    assert T.choose_threads() == 1


def test_own_share_is_not_counted(monkeypatch):
    _cores(monkeypatch, 2)
    _load(monkeypatch, 2.0, own=2.0)  # the load is this process's own threads
    assert T.choose_threads() == 2


@pytest.mark.parametrize("other,expected", [(0.0, 4), (0.2, 4), (0.3, 3), (1.0, 3), (1.3, 2), (2.9, 1), (99, 1)])
def test_auto_rule(other, expected):
    assert T.auto_threads(cores=4, affinity=4, total_cpus=4, other_load=other) == expected


def test_auto_rule_scales_load_to_our_cpus_and_quota():
    # 64-CPU host, half busy, we may use 8 of its CPUs: 4 of ours are taken
    assert T.auto_threads(cores=8, affinity=8, total_cpus=64, other_load=32) == 4
    # 64-CPU host, half busy, no affinity limit but a 4-core quota: plenty of free CPUs, quota binds
    assert T.auto_threads(cores=4, affinity=64, total_cpus=64, other_load=32) == 4


def test_parse_cgroup_v2_cpu_max():
    assert T.parse_cpu_max("max 100000\n") is None
    assert T.parse_cpu_max("200000 100000\n") == 2.0
    assert T.parse_cpu_max("150000 100000") == 1.5
    assert T.parse_cpu_max("") is None and T.parse_cpu_max(None) is None and T.parse_cpu_max("x y") is None


def test_parse_cgroup_v1_cfs_quota():
    assert T.parse_cfs_quota("-1\n", "100000\n") is None
    assert T.parse_cfs_quota("50000\n", "100000\n") == 0.5
    assert T.parse_cfs_quota("300000", "100000") == 3.0
    assert T.parse_cfs_quota(None, None) is None and T.parse_cfs_quota("junk", "100000") is None


def _fake_files(monkeypatch, files):
    monkeypatch.setattr(T, "_read", lambda path: files.get(path))


def test_cgroup_limit_v2_takes_tightest_ancestor(monkeypatch):
    _fake_files(monkeypatch, {"/proc/self/cgroup": "0::/a/b\n",
                              "/sys/fs/cgroup/a/b/cpu.max": "max 100000\n",
                              "/sys/fs/cgroup/a/cpu.max": "150000 100000\n",
                              "/sys/fs/cgroup/cpu.max": "400000 100000\n"})
    assert T.cgroup_cpu_limit() == 1.5


def test_cgroup_limit_v1_and_none(monkeypatch):
    _fake_files(monkeypatch, {"/proc/self/cgroup": "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n",
                              "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
                              "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert T.cgroup_cpu_limit() == 2.0
    _fake_files(monkeypatch, {"/proc/self/cgroup": "1:cpu:/\n0::/\n",
                              "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
                              "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"})
    assert T.cgroup_cpu_limit() is None


def test_usable_cores_honours_quota(monkeypatch):
    monkeypatch.setattr(T, "_affinity", lambda: 8)
    monkeypatch.setattr(T, "cgroup_cpu_limit", lambda: 0.5)
    assert T.usable_cores() == 1
    monkeypatch.setattr(T, "cgroup_cpu_limit", lambda: 3.0)
    assert T.usable_cores() == 3
    monkeypatch.setattr(T, "cgroup_cpu_limit", lambda: None)
    assert T.usable_cores() == 8


def test_apply_threads_sets_torch_and_is_repeatable(monkeypatch):
    calls = []

    def interop(n):  # torch's rule: the inter-op pool can be sized once
        calls.append(n)
        if len(calls) > 1:
            raise RuntimeError("cannot set number of interop threads after parallel work has started")

    monkeypatch.setattr(T.torch, "set_num_interop_threads", interop)
    monkeypatch.setattr(T, "_interop_done", False)
    before = torch.get_num_threads()
    try:
        assert T.apply_threads(1) == 1 and torch.get_num_threads() == 1
        assert T.apply_threads(1) == 1  # second call: the inter-op pool is left alone, no error
        n = T.apply_threads()
        assert torch.get_num_threads() == n and 1 <= n <= T.usable_cores()
        assert calls == [1]
        monkeypatch.setattr(T, "_interop_done", False)
        assert T.apply_threads(2) == 2  # torch refusing the inter-op size is not an error
        assert calls == [1, 2]
    finally:
        torch.set_num_threads(before)


def test_every_cli_command_applies_the_thread_choice(monkeypatch, capsys):
    """The root --threads reaches torch before a command runs (one wrapper around every command)."""
    import torch

    from latentgeo.cli import app, main

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        main(["--threads", "1", "data", "list"])
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("LATENTGEO_THREADS", "2")
        main(["data", "list"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

    def walk(t):
        for info in t.registered_commands:
            yield info
        for g in t.registered_groups:
            yield from walk(g.typer_instance)

    infos = list(walk(app))
    assert len(infos) >= 10 and all(getattr(i.callback, "_latentgeo_threads", False) for i in infos)
