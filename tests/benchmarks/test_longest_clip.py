"""benchmarks/longest_clip.py: the frame search, and one real probe in a child process under a cap."""

import pytest

from benchmarks import longest_clip


@pytest.mark.parametrize("limit", [3, 16, 37, 100])
def test_search_finds_the_most_frames_that_fit(monkeypatch, limit):
    seen = []

    def fake(model, recompute, frames, cap, layers, threads):
        seen.append(frames)
        return {"fits": frames <= limit, "frames": frames}

    monkeypatch.setattr(longest_clip, "probe", fake)
    got, probes = longest_clip.longest("videodit", "none", 1 << 30, 1, 1, 4, lambda r: None)
    assert got == limit // 4 * 4  # the largest multiple of the step that fits
    assert len(probes) == len(seen) <= 12


def test_a_probe_over_the_cap_is_stopped_and_one_under_it_reports_its_peak():
    big = longest_clip.probe("videodit", "norms", 4, 1 << 40, 1, 1)  # no cap to speak of
    assert big["fits"] and big["peak_rss"] > 0 and big["step_s"] > 0
    small = longest_clip.probe("videodit", "norms", 4, big["peak_rss"] // 4, 1, 1)  # below what it needs
    assert not small["fits"] and small["rss_at_kill"] > big["peak_rss"] // 4
