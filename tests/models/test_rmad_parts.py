"""Shapes and behaviour of each RMAD part: GAN, multi-domain VAE + KDE, Transformer-clustering, fusion, ablations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.rmad.config import ABLATIONS, RMADConfig
from models.rmad.gan import (
    Discriminator,
    Generator,
    disc_feature_fid,
    feature_matching_loss,
    frechet_distance,
    train_gan,
)
from models.rmad.model import RMAD, inference_parameters
from models.rmad.vae import FreqEncoder, MultiDomainVAE, vae_loss

T, F = 16, 4


@pytest.fixture(autouse=True)
def one_thread() -> object:
    """Small nets on a shared 2-core machine run fastest single-threaded (no spinning against other work)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_cfg(**kw: object) -> RMADConfig:
    base: dict[str, object] = {
        "n_features": F,
        "window": T,
        "gan_hidden": (64, 128, 128),
        "disc_hidden": (128, 64),
        "data_hidden": (64, 64, 32),
        "rho_dim": 8,
        "n_heads": 4,
        "ffn_dim": 64,
        "cluster_hidden": (40, 32),
        "emb_dim": 16,
        "K": 4,
        "time_fc": 64,
        "dec_hidden": (64, 64),
        "threads": 1,
    }
    base.update(kw)
    return RMADConfig(**base)  # type: ignore[arg-type]


def normal_windows(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random walks: structured, so a model can learn them and tell them from noise."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal((n, T, F)) * 0.3, axis=1)
    return (x - x.mean(1, keepdims=True)).astype(np.float32)


def anomalous_windows(n: int, seed: int = 1) -> np.ndarray:
    """A pump: a sharp rise in every feature over the last quarter of the window."""
    x = normal_windows(n, seed)
    x[:, -T // 4 :, :] += np.linspace(0, 4, T // 4, dtype=np.float32)[None, :, None]
    return x


def test_paper_sized_model_shapes_and_size() -> None:
    cfg = RMADConfig(n_features=23, window=64)
    model = RMAD(cfg).eval()
    assert cfg.token_dim == 160
    with torch.no_grad():
        outs = model(torch.randn(3, 64, 23), torch.randn(8, 64), torch.randn(10, 32))
    shapes = [tuple(o.shape) for o in outs]
    assert shapes == [(3,), (3,), (3,), (3,), (3, 3), (3, 23), (3, 64)]
    assert 1.0e6 < inference_parameters(model) < 2.5e6


def test_generator_and_discriminator_follow_the_paper() -> None:
    cfg = RMADConfig(n_features=F, window=T)
    gen, disc = Generator(cfg), Discriminator(cfg)
    widths = [b.fc.out_features for b in gen.blocks] + [gen.out.out_features]
    assert widths == [256, 512, 512, T * F]
    assert gen.blocks[0].fc.in_features == cfg.noise_dim + cfg.n_classes  # condition concatenated to z
    assert [layer.out_features for layer in disc.layers] + [disc.out.out_features] == [512, 256, 1]
    assert all(hasattr(layer, "parametrizations") for layer in [*disc.layers, disc.out])  # spectral norm
    x = gen(torch.randn(5, cfg.noise_dim), torch.ones(5, dtype=torch.long))
    assert x.shape == (5, T * F)
    logit, feat = disc(x, torch.ones(5, dtype=torch.long))
    assert logit.shape == (5,) and feat.shape == (5, 256)


def test_gan_training_reduces_feature_matching_loss_and_fid() -> None:
    torch.manual_seed(0)
    cfg = small_cfg(gan_epochs=200)
    xn, xa = normal_windows(256), anomalous_windows(64)
    fresh = Generator(cfg)
    gen, disc, curves = train_gan(cfg, xn, xa, np.random.default_rng(0))
    assert len(curves["gan_fm"]) == 200
    # judged by the trained discriminator's features: the trained generator matches real anomalies far better
    assert feature_matching_loss(gen, disc, xa) < 0.5 * feature_matching_loss(fresh, disc, xa)
    assert disc_feature_fid(gen, disc, xa) < disc_feature_fid(fresh, disc, xa)
    # synthetic anomalies carry the pump shape: the last quarter sits above the start
    synth = gen.sample(256).numpy()
    assert (synth[:, -2:, :].mean() - synth[:, :4, :].mean()) > 1.0


def test_frechet_distance_is_zero_for_same_set_and_grows_with_shift() -> None:
    a = np.random.default_rng(0).standard_normal((500, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-3)


def test_dft_magnitudes_match_rfft() -> None:
    cfg = small_cfg()
    enc = FreqEncoder(cfg)
    x = torch.randn(3, T, F)
    ref = torch.fft.rfft(x.transpose(1, 2), dim=-1).abs() / np.sqrt(T)
    torch.testing.assert_close(enc.magnitudes(x), ref, atol=1e-5, rtol=1e-4)


def test_vae_architecture_and_gate() -> None:
    cfg = RMADConfig(n_features=23, window=64)
    vae = MultiDomainVAE(cfg).eval()
    convs = [m for m in vae.time.conv if isinstance(m, torch.nn.Conv1d)]  # type: ignore[union-attr]
    assert [c.kernel_size[0] for c in convs] == [5, 3, 3, 3]
    assert [c.out_channels for c in convs] == [32, 64, 64, 128]
    lin = [m.out_features for m in vae.freq.mlp if isinstance(m, torch.nn.Linear)]  # type: ignore[union-attr]
    assert lin == [128, 64, 32]
    mu, logvar, alpha = vae.encode(torch.randn(4, 64, 23))
    assert mu.shape == logvar.shape == (4, 32) and alpha.shape == (4, 1)
    assert bool(((alpha > 0) & (alpha < 1)).all())
    only_time = MultiDomainVAE(RMADConfig(n_features=23, window=64, vae_domains="time"))
    assert only_time.freq is None and only_time.gate is None


def test_kde_density_normaliser_and_out_of_distribution_windows() -> None:
    torch.manual_seed(0)
    cfg = small_cfg()
    vae = MultiDomainVAE(cfg)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    xn = torch.from_numpy(normal_windows(512))
    for _ in range(60):
        _, _, loss = vae_loss(vae, xn[torch.randint(0, len(xn), (64,))], cfg.kl_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        ref = vae.encode(xn[:256])[0]
        # the 1/M normaliser: duplicating every reference latent leaves the density unchanged
        z = vae.encode(xn[256:300])[0]
        torch.testing.assert_close(vae.kde_log_density(z, ref), vae.kde_log_density(z, torch.cat([ref, ref])))
        # a single reference at z itself gives the Gaussian's peak density
        peak = vae.kde_log_density(z[:1], z[:1])
        assert float(peak) == pytest.approx(-0.5 * cfg.latent_dim * np.log(2 * np.pi), rel=1e-5)
        s_in, err_in, _ = vae.score(xn[300:400], ref)
        ood = torch.from_numpy(anomalous_windows(100)) * 3.0
        s_out, _err_out, _ = vae.score(ood, ref)
        nll_in = -vae.kde_log_density(vae.encode(xn[300:400])[0], ref)
        nll_out = -vae.kde_log_density(vae.encode(ood)[0], ref)
    assert float(nll_out.mean()) > float(nll_in.mean())
    assert float(s_out.mean()) > float(s_in.mean())
    assert err_in.shape == (100, F)


def test_transformer_clustering_structure_and_score() -> None:
    cfg = RMADConfig(n_features=23, window=64)
    model = RMAD(cfg).eval()
    tc = model.tc
    assert tc is not None
    assert [m.out_features for m in tc.mlp_data if isinstance(m, torch.nn.Linear)] == [256, 256, 128]
    assert tc.mlp_rho[-2].out_features == 32
    assert len(tc.layers) == 2 and tc.layers[0].attn.heads == 8 and tc.layers[0].ff1.out_features == 512
    assert [m.out_features for m in tc.cluster_head if isinstance(m, torch.nn.Linear)] == [160, 128, 64]
    x = torch.randn(5, 64, 23)
    with torch.no_grad():
        g = tc.encode(x)
        e = tc.embed(g)
        post, prior = tc.assignment(g, e, torch.randn(8, 64))
        assert g.shape == (5, 160) and e.shape == (5, 64)
        torch.testing.assert_close(post.sum(1), torch.ones(5))
        torch.testing.assert_close(prior.sum(1), torch.ones(5))
        # an embedding sitting on a centre scores ~0; far from all centres scores high
        centres = torch.randn(8, 64)
        centres[0] = e[0]
        far = centres + 100.0
        assert float(tc.cluster_score(g[:1], e[:1], centres)) < float(tc.cluster_score(g[:1], e[:1], far))
        # the score is sum_k P(z|X,k) mu_k's residual, so it moves with the centres input
        s1 = model(x, centres, torch.randn(4, 32))[3]
        s2 = model(x, centres * 2.0, torch.randn(4, 32))[3]
    assert not torch.allclose(s1, s2)


def test_fusion_weights_sum_to_one_and_gate_responds() -> None:
    torch.manual_seed(0)
    cfg = small_cfg()
    model = RMAD(cfg).eval()
    with torch.no_grad():
        model.fusion.net[2].weight.normal_(0.0, 0.05)
        w = model(torch.randn(20, T, F), torch.randn(cfg.K, cfg.emb_dim), torch.randn(30, cfg.latent_dim))[4]
    torch.testing.assert_close(w.sum(1), torch.ones(20))
    assert float(w.std(0).max()) > 0  # per-window weights, not a constant


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_ablation_flags_remove_their_branch(ablation: str) -> None:
    torch.manual_seed(0)
    cfg = RMADConfig.ablation(small_cfg(), ablation)
    model = RMAD(cfg).eval()
    with torch.no_grad():
        model.fusion.net[2].weight.normal_(0.0, 0.05)
        _fused, s_md, s_trans, s_clust, w, ferr, emb = model(
            torch.randn(6, T, F), torch.randn(cfg.K, cfg.emb_dim), torch.randn(30, cfg.latent_dim)
        )
    torch.testing.assert_close(w.sum(1), torch.ones(6))
    assert ferr.shape == (6, F) and emb.shape == (6, cfg.emb_dim)
    if ablation == "no_vae":
        assert model.vae is None and bool((s_md == 0).all()) and bool((w[:, 0] == 0).all())
    if ablation == "no_trans":
        assert model.tc is not None and len(model.tc.layers) == 0
        assert bool((s_trans == 0).all()) and bool((w[:, 1] == 0).all())
    if ablation == "no_clust":
        assert bool((s_clust == 0).all()) and bool((w[:, 2] == 0).all())
    if ablation == "no_gate":
        torch.testing.assert_close(w, torch.full_like(w, 1 / 3))
    if ablation in ("full", "no_gan"):
        assert bool((w > 0).all()) and float(w.std(0).max()) > 0
    if ablation == "no_gan":
        assert not cfg.use_gan


def test_config_roundtrip_and_validation() -> None:
    cfg = small_cfg(K=5)
    again = RMADConfig.from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(ValueError):
        RMADConfig(n_features=4, window=10, patch=3)
    with pytest.raises(ValueError):
        RMADConfig.ablation(cfg, "no_such")


def test_recency_weighting_of_reconstruction_scores() -> None:
    from models.rmad.vae import time_weights

    uniform = time_weights(small_cfg())
    torch.testing.assert_close(uniform, torch.full((T, 1), 1.0 / T))
    w = time_weights(small_cfg(recency_halflife=2.0))
    assert float(w.sum()) == pytest.approx(1.0) and bool((w[1:] > w[:-1]).all())
    assert float(w[-1] / w[-3]) == pytest.approx(2.0)
    # with a zero decoder the reconstruction error is |x|: a spike in the last bars must outscore the same spike in
    # the first bars under recency weighting, and tie under the paper's plain mean
    for halflife, later_wins in ((None, False), (2.0, True)):
        model = RMAD(small_cfg(recency_halflife=halflife)).eval()
        assert model.tc is not None
        with torch.no_grad():
            model.tc.decoder.weight.zero_()
            model.tc.decoder.bias.zero_()
            x = torch.zeros(2, T, F)
            x[0, :2] = 5.0
            x[1, -2:] = 5.0
            s_trans = model(x, torch.zeros(4, 16), torch.zeros(3, 32))[2]
        if later_wins:
            assert float(s_trans[1]) > 5 * float(s_trans[0])
        else:
            assert float(s_trans[1]) == pytest.approx(float(s_trans[0]))


def test_gan_standardise_reaches_the_scale_of_large_anomalies() -> None:
    """Anomalies 10x the normal scale: a standardised GAN samples near that scale, the plain one stays near unit."""
    xn = normal_windows(256)
    xa = anomalous_windows(64) * 10.0
    stds = {}
    for flag in (False, True):
        torch.manual_seed(0)
        gen, _, _ = train_gan(small_cfg(gan_epochs=20, gan_standardise=flag), xn, xa, np.random.default_rng(0))
        stds[flag] = float(gen.sample(512).numpy().std())
    real = float(xa.std())
    assert abs(np.log(stds[True] / real)) < abs(np.log(stds[False] / real))
    assert stds[True] > 3.0 * stds[False]
