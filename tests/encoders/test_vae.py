"""VAE adapters: identity, and a tiny randomly initialised diffusers AutoencoderKL from a local dir."""

from __future__ import annotations

import pytest
import torch

from dit_video.encoders import VAE, DiffusersVAE, IdentityVAE


def test_identity_vae_round_trip():
    vae = IdentityVAE(3)
    x = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    assert isinstance(vae, VAE)
    assert vae.encode(x) is x and vae.decode(x) is x
    assert (vae.scaling_factor, vae.latent_channels, vae.temporal_downsample, vae.spatial_downsample) == (1.0, 3, 1, 1)
    assert vae.latent_shape(x.shape) == (2, 3, 4, 8, 8)
    with pytest.raises(ValueError, match=r"video must be \[B, 3, T, H, W\]"):
        vae.encode(torch.rand(2, 1, 4, 8, 8))


@pytest.fixture(scope="module")
def tiny_autoencoder_dir(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                 up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                 layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16,
                                 scaling_factor=0.5)
    d = tmp_path_factory.mktemp("tiny_vae")
    ae.save_pretrained(d)
    return d, ae.eval()


def test_diffusers_vae_per_frame(tiny_autoencoder_dir):
    path, ae = tiny_autoencoder_dir
    vae = DiffusersVAE.from_local(path, frame_chunk=3)  # chunks that do not divide B*T
    assert vae.per_frame and vae.latent_channels == 4 and vae.scaling_factor == 0.5
    assert vae.spatial_downsample == 2 and vae.temporal_downsample == 1
    video = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    z = vae.encode(video)
    assert z.shape == vae.latent_shape(video.shape) == (2, 4, 4, 8, 8)
    with torch.no_grad():  # frame (b=1, t=2) by hand through the same weights
        ref = ae.encode(video[1:2, :, 2]).latent_dist.mode() * 0.5
    torch.testing.assert_close(z[1:2, :, 2], ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(z[:, :, 0], z[:, :, 1])  # frames are not mixed up / broadcast
    out = vae.decode(z)
    assert out.shape == video.shape and torch.isfinite(out).all()
    with torch.no_grad():
        ref_dec = ae.decode(z[0:1, :, 3] / 0.5).sample
    torch.testing.assert_close(out[0:1, :, 3], ref_dec, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in vae.parameters())


def test_diffusers_vae_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        DiffusersVAE.from_local(tmp_path / "does_not_exist")
    with pytest.raises(FileNotFoundError, match="config.json"):
        DiffusersVAE.from_local(tmp_path)


def test_diffusers_video_vae_runs_on_the_clip(tmp_path):
    """A diffusers *video* VAE (CogVideoX's, tiny and random) plugs in through the same calls, whole clip at once."""
    diffusers = pytest.importorskip("diffusers")
    if not hasattr(diffusers, "AutoencoderKLCogVideoX"):
        pytest.skip("this diffusers has no AutoencoderKLCogVideoX")
    torch.manual_seed(0)
    ae = diffusers.AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 2,
                                          up_block_types=("CogVideoXUpBlock3D",) * 2, block_out_channels=(8, 16),
                                          latent_channels=4, layers_per_block=1, norm_num_groups=4,
                                          temporal_compression_ratio=2, sample_height=8, sample_width=8)
    ae.save_pretrained(tmp_path)
    vae = DiffusersVAE.from_local(tmp_path)
    assert not vae.per_frame and vae.temporal_downsample == 2 and vae.spatial_downsample == 2
    video = torch.rand(1, 3, 5, 8, 8) * 2 - 1
    z = vae.encode(video)
    assert z.shape == vae.latent_shape(video.shape) == (1, 4, 3, 4, 4)  # causal: 1 + (T - 1) / 2 frames
    with torch.no_grad():
        ref = ae.eval().encode(video).latent_dist.mode() * ae.config.scaling_factor
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-5)
    assert vae.decode(z).shape == video.shape


class _Dist:
    def __init__(self, z):
        self.z = z

    def mode(self):
        return self.z


class _Out:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class StubVideoVAE(torch.nn.Module):
    """The diffusers calls a video VAE has (``encode(x).latent_dist``, ``decode(z).sample``, ``config``),
    with Wan-style per-channel ``latents_mean`` / ``latents_std`` and no scaling factor."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))
        self.config = {"in_channels": 3, "latent_channels": 3, "latents_mean": [1.0, -2.0, 0.5],
                       "latents_std": [2.0, 0.5, 4.0], "temporal_compression_ratio": 1, "spatial_compression_ratio": 1}

    def encode(self, x):
        assert x.dim() == 5  # whole clips, not frames
        return _Out(latent_dist=_Dist(x * self.w))

    def decode(self, z):
        return _Out(sample=z / self.w)


def test_per_channel_latent_stats():
    vae = DiffusersVAE(StubVideoVAE())
    assert not vae.per_frame and vae.scaling_factor == 1.0
    video = torch.randn(2, 3, 4, 2, 2)
    z = vae.encode(video)
    mean = torch.tensor([1.0, -2.0, 0.5]).reshape(1, 3, 1, 1, 1)
    std = torch.tensor([2.0, 0.5, 4.0]).reshape(1, 3, 1, 1, 1)
    torch.testing.assert_close(z, (video - mean) / std)
    torch.testing.assert_close(vae.decode(z), video)
