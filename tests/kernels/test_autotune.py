"""auto's measured choice (dit_video/kernels/autotune.py): the rule, the layout key, the cache shared by processes, and
that a measurement leaves the caller's state (global RNG, autograd hooks) untouched."""

import subprocess
import sys
import textwrap
import time

import pytest
import torch

from dit_video.kernels import attention, auto_decisions, autotune, dispatch
from dit_video.kernels.dispatch import Impl
from dit_video.kernels.reference import attention_ref


def _slow(seconds):
    def fn(*args, **kwargs):
        time.sleep(seconds)
        return attention_ref(*args, **kwargs)

    fn.__name__ = f"slow_{int(seconds * 1e3)}ms"
    return fn


def _qkv(b=2, length=8, heads=2, dim=8, grad=False):
    return [torch.randn(b, length, heads, dim, requires_grad=grad) for _ in range(3)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "autotune.json"
    monkeypatch.setenv("DIT_VIDEO_AUTOTUNE_CACHE", str(path))
    monkeypatch.setenv("DIT_VIDEO_AUTOTUNE", "on")
    autotune.forget()
    dispatch._CACHE.clear()  # dispatch's per-signature cache would skip the choice
    yield path
    autotune.forget()
    dispatch._CACHE.clear()


def test_a_slower_kernel_loses_to_the_plain_path_and_a_faster_one_wins(cache):
    args = _qkv()
    plain = Impl("attention", "torch", attention_ref, dispatch._always)
    slow = Impl("attention", "cpu", _slow(0.02), dispatch._always)
    assert autotune.choose("attention", [slow, plain], args, {}) is plain
    (d,) = auto_decisions("attention")
    assert d["chosen"] == "torch:attention_ref" and "no kernel beats the plain path" in d["why"]
    assert d["times_ms"]["cpu:slow_20ms"] > 20

    autotune.forget()
    cache.unlink()
    slow_plain = Impl("attention", "torch", _slow(0.02), dispatch._always)
    fast = Impl("attention", "cpu", attention_ref, dispatch._always)
    assert autotune.choose("attention", [fast, slow_plain], args, {}) is fast
    assert "the plain path" in auto_decisions()[0]["why"]


def test_a_near_tie_keeps_the_plain_path():
    plain, kernel = Impl("a", "torch", None, None), Impl("a", "cpu", None, None)
    names = {"torch:None": 1.0, "cpu:None": 0.97}  # 3% faster: inside the margin
    chosen, _ = autotune._decide([kernel, plain], {"cpu:None": names["cpu:None"], "torch:None": names["torch:None"]})
    assert chosen == "torch:None"
    chosen, _ = autotune._decide([kernel, plain], {"cpu:None": 0.9, "torch:None": 1.0})
    assert chosen == "cpu:None"


def test_layout_key_drops_the_batch_dimension_only():
    q2, q4 = torch.randn(2, 8, 2, 8), torch.randn(4, 8, 2, 8)
    assert autotune.layout_key("attention", [q2] * 3, {}) == autotune.layout_key("attention", [q4] * 3, {})
    longer = torch.randn(2, 16, 2, 8)
    assert autotune.layout_key("attention", [q2] * 3, {}) != autotune.layout_key("attention", [longer] * 3, {})
    strided = torch.randn(2, 2, 8, 8).transpose(1, 2)  # same shape, another layout
    assert autotune.layout_key("attention", [q2] * 3, {}) != autotune.layout_key("attention", [strided] * 3, {})
    grad = q2.clone().requires_grad_()
    assert autotune.layout_key("attention", [q2] * 3, {}) != autotune.layout_key("attention", [grad] * 3, {})
    masked = autotune.layout_key("attention", [q2] * 3, {"key_padding_mask": torch.ones(2, 8, dtype=torch.bool)})
    assert masked != autotune.layout_key("attention", [q2] * 3, {})


def test_measuring_leaves_the_global_rng_and_the_callers_saved_tensor_hooks_alone(cache):
    args = _qkv(grad=True)
    impls = [Impl("attention", "cpu", _slow(0.001), dispatch._always),
             Impl("attention", "torch", attention_ref, dispatch._always)]
    packed = []
    state = torch.get_rng_state()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        autotune.choose("attention", impls, args, {})
    assert torch.equal(state, torch.get_rng_state())
    assert packed == []  # the measurement ran fwd+bwd, in its own thread: nothing reached the caller's hooks
    assert all(a.grad is None for a in args)  # on copies


def test_the_file_decides_for_later_processes_without_timing_again(cache, monkeypatch):
    args = _qkv()
    impls = [Impl("attention", "cpu", _slow(0.02), dispatch._always),
             Impl("attention", "torch", attention_ref, dispatch._always)]
    autotune.choose("attention", impls, args, {})
    assert cache.is_file()
    autotune.forget()  # a new process: memory empty, the file stays

    def no_timing(*a, **k):
        raise AssertionError("measured again although the cache file has the decision")

    monkeypatch.setattr(autotune, "measure", no_timing)
    assert autotune.choose("attention", impls, _qkv(b=5), {}).backend == "torch"  # another batch: same layout
    assert autotune.choose("attention", impls, args, {}, tracing=True).backend == "torch"


def test_off_and_tracing_never_time(cache, monkeypatch):
    def no_timing(*a, **k):
        raise AssertionError("timed")

    monkeypatch.setattr(autotune, "measure", no_timing)
    impls = [Impl("attention", "cpu", _slow(0.02), dispatch._always),
             Impl("attention", "torch", attention_ref, dispatch._always)]
    assert autotune.choose("attention", impls, _qkv(), {}, tracing=True) is impls[0]  # no decision: static order
    monkeypatch.setenv("DIT_VIDEO_AUTOTUNE", "off")
    assert autotune.choose("attention", impls, _qkv(), {}) is impls[0]
    assert auto_decisions() == []


_RANK = textwrap.dedent("""
    import json, os, sys, time, torch
    from dit_video.kernels import autotune, dispatch
    from dit_video.kernels.dispatch import Impl
    from dit_video.kernels.reference import attention_ref
    real = autotune.measure
    def counted(*a, **k):
        with open(sys.argv[1], "a") as f:
            f.write(str(os.getpid()) + "\\n")
        time.sleep(0.5)  # the other process arrives while this one measures
        return real(*a, **k)
    autotune.measure = counted
    def slow(*a, **k):
        time.sleep(0.01)
        return attention_ref(*a, **k)
    impls = [Impl("attention", "cpu", slow, dispatch._always),
             Impl("attention", "torch", attention_ref, dispatch._always)]
    q = torch.randn(2, 8, 2, 8)
    print(autotune.choose("attention", impls, [q, q, q], {}).backend)
""")


def test_processes_of_one_host_share_one_measurement(cache, tmp_path):
    log = tmp_path / "measured.log"
    script = tmp_path / "rank.py"
    script.write_text(_RANK)
    procs = [subprocess.Popen([sys.executable, str(script), str(log)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["torch", "torch"]
    assert len(log.read_text().split()) == 1  # the second waited on the lock and read the first's decision


def test_auto_through_dispatch_records_its_choice_and_matches_the_reference(cache):
    q, k, v = (torch.randn(2, 16, 4, 2, 16).transpose(1, 2) for _ in range(3))  # temporal-style strided views
    out = attention(q, k, v)
    torch.testing.assert_close(out, attention_ref(q, k, v), rtol=1e-5, atol=1e-5)
    (d,) = auto_decisions("attention")  # the csrc backend (built in CI) and the reference both serve it
    assert set(d["times_ms"]) == {"cpu:attention", "torch:attention_ref"} and d["chosen"] in d["times_ms"]


def test_a_measurement_that_fails_falls_back_to_the_static_order_without_failing_the_call(cache):
    def broken(*args, **kwargs):
        raise RuntimeError("kernel crashed on the copy")

    impls = [Impl("attention", "cpu", broken, dispatch._always),
             Impl("attention", "torch", attention_ref, dispatch._always)]
    assert autotune.choose("attention", impls, _qkv(), {}) is impls[0]
    (d,) = auto_decisions()
    assert "measurement failed" in d["why"] and "kernel crashed" in d["why"]


def test_an_unwritable_cache_keeps_decisions_in_memory(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the cache's directory cannot be made, whoever runs the test (root included)
    monkeypatch.setenv("DIT_VIDEO_AUTOTUNE_CACHE", str(blocker / "autotune.json"))
    autotune.forget()
    try:
        impls = [Impl("attention", "cpu", _slow(0.02), dispatch._always),
                 Impl("attention", "torch", attention_ref, dispatch._always)]
        with caplog.at_level("WARNING", logger="dit_video.kernels"):
            assert autotune.choose("attention", impls, _qkv(), {}).backend == "torch"  # measured, not crashed
        assert len(auto_decisions()) == 1
        assert "not writable" in caplog.text and "DIT_VIDEO_AUTOTUNE_CACHE" in caplog.text
    finally:
        autotune.forget()
