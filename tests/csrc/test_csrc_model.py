"""A tiny VideoDiT forward + backward with the compiled ``cpu`` backend equals the ``torch`` backend."""

import torch

from dit_video import VideoDiT, VideoDiTConfig


def test_tiny_videodit_cpu_backend_matches_torch(csrc):
    cfg = VideoDiTConfig.from_preset("tiny", depth=2, hidden_size=32, num_heads=2, sample_size=[8, 8])
    model = VideoDiT(cfg)
    with torch.no_grad():  # DiT init zeroes the gates and the output: randomise so every op matters
        for p in model.parameters():
            p.normal_(0, 0.2)
    x = torch.randn(2, cfg.in_channels, cfg.num_frames, 8, 8)
    t = torch.rand(2) * 1000

    def run(backend):
        model.set_backend(backend)
        model.zero_grad()
        out = model(x, t)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out_c, grads_c = run("cpu")
    out_t, grads_t = run("torch")
    torch.testing.assert_close(out_c, out_t, atol=2e-5, rtol=1e-4)
    assert grads_c.keys() == grads_t.keys() and grads_c
    for n in grads_t:
        torch.testing.assert_close(grads_c[n], grads_t[n], atol=5e-5, rtol=1e-3, msg=n)
