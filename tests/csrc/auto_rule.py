"""What ``auto`` chose for a call, checked against its rule instead of against a timing.

Which backend wins a tiny layout is a coin toss between two microsecond calls, and differs by machine; what must
hold everywhere is that the compiled kernel was a timed candidate and that the choice follows the rule of
dit_video/kernels/autotune.py on the times it measured (a kernel displaces the plain path only at <= MARGIN
times its median)."""

from dit_video.kernels import autotune, resolve


def auto_choice(op: str, *args, **kwargs) -> str:
    """The backend ``auto`` resolves for this call, after checking the decision against the rule."""
    chosen = resolve(op, "auto", *args, **kwargs).backend
    key = autotune.layout_key(op, args, kwargs)
    got = next(d for d in autotune.decisions(op) if d["layout"] == key)
    times = got["times_ms"]
    assert any(n.startswith("cpu:") for n in times), f"the cpu kernel was not a candidate: {got}"
    base = next(n for n in times if n.startswith(autotune.BASELINE + ":"))
    best = min(times, key=times.get)
    want = best if best != base and times[best] <= autotune.MARGIN * times[base] else base
    assert got["chosen"] == want and chosen == want.split(":")[0], got
    return chosen
