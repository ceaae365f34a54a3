"""Training the RMAD model in the paper's order, seeded, writing config, data fingerprints and curves.

1. Conditional GAN on the scarce anomalous windows (beside normal ones as the other class); synthetic anomalies
   (class 1) join the training set. FID is reported in the discriminator's feature space and in the VAE latent.
2. Multi-domain VAE on normal + augmented windows: the normal windows are reconstructed (L1 + KL); the anomalous
   ones, real and synthetic, enter through an outlier-exposure hinge that keeps their reconstruction error above
   the normal windows' (a VAE that learned to reconstruct anomalies would stop flagging them).
3. Transformer-clustering: a warm-up on reconstruction, k-means on the window embeddings to initialise the K
   centres, then reconstruction + clustering (IDEC-style compactness with the centres as parameters, and MLP_k
   fitted to the distance-based assignment) + outlier exposure.
4. Branch statistics (median, IQR) on held-out normal training windows, baked into the fusion gate; then the gate
   is fitted on the labelled validation split (class-weighted BCE on the fused score).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.rmad.config import RMADConfig
from models.rmad.gan import disc_feature_fid, feature_matching_loss, frechet_distance, train_gan
from models.rmad.model import OUTPUT_NAMES, RMAD, inference_parameters
from models.rmad.vae import vae_loss

log = logging.getLogger(__name__)

CLUSTER_WEIGHT = 0.1  # IDEC's gamma: compactness weight next to the reconstruction loss


def fingerprint_array(x: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and bytes: identifies the exact training input."""
    h = hashlib.sha256()
    h.update(f"{x.shape}|{x.dtype}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


@dataclass
class Trained:
    """A trained model with everything export and scoring need."""

    cfg: RMADConfig
    model: RMAD
    centres: np.ndarray  # [K, D] float32
    ref_latents: np.ndarray  # [M, Z] float32
    branch_stats: dict[str, list[float]]  # {"loc": [3], "scale": [3]} for (md, trans, clust)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    fid: dict[str, float] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def score(self, x: np.ndarray, batch: int = 1024) -> dict[str, np.ndarray]:
        """Score windows [N, T, F]: a dict with every ONNX output name -> numpy array."""
        self.model.eval()
        c, r = _tensor(self.centres), _tensor(self.ref_latents)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUT_NAMES}
        for i in range(0, len(x), batch):
            outs = self.model(_tensor(x[i : i + batch]), c, r)
            for k, v in zip(OUTPUT_NAMES, outs, strict=True):
                parts[k].append(v.numpy())
        if not len(x):
            return {k: np.zeros((0,), np.float32) for k in OUTPUT_NAMES}
        return {k: np.concatenate(v) for k, v in parts.items()}

    def save(self, out_dir: str | Path) -> Path:
        """Write state dict + arrays + config, loadable with Trained.load (torch side; export is separate)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), out / "model.pt")
        np.save(out / "centres.npy", self.centres.astype(np.float32))
        np.save(out / "ref_latents.npy", self.ref_latents.astype(np.float32))
        meta = {
            "config": self.cfg.to_dict(),
            "branch_stats": self.branch_stats,
            "fid": self.fid,
            "fingerprints": self.fingerprints,
            "info": self.info,
        }
        (out / "trained.json").write_text(json.dumps(meta, indent=2, default=str))
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> Trained:
        out = Path(out_dir)
        meta = json.loads((out / "trained.json").read_text())
        cfg = RMADConfig.from_dict(meta["config"])
        model = RMAD(cfg)
        model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
        model.eval()
        curves_path = out / "curves.json"
        curves = json.loads(curves_path.read_text()) if curves_path.exists() else {}
        return cls(
            cfg=cfg,
            model=model,
            centres=np.load(out / "centres.npy"),
            ref_latents=np.load(out / "ref_latents.npy"),
            branch_stats=meta["branch_stats"],
            curves=curves,
            fid=meta.get("fid", {}),
            fingerprints=meta.get("fingerprints", {}),
            info=meta.get("info", {}),
        )


def _epoch_indices(n: int, cfg: RMADConfig, rng: np.random.Generator) -> np.ndarray:
    idx = rng.permutation(n)
    if cfg.max_train_windows is not None:
        idx = idx[: cfg.max_train_windows]
    return idx


def _hinge(s_anom: torch.Tensor, s_norm: torch.Tensor, margin: float) -> torch.Tensor:
    """Outlier exposure: anomalous scores should exceed (1 + margin) x the batch's mean normal score.

    The hinge is on the log ratio, so its pull fades as anomalous scores grow: a plain difference kept pushing
    them apart without bound and dragged the normal scores along (a runaway seen in the clustering branch).
    """
    ratio = torch.log(s_anom + 1e-8) - torch.log(s_norm.mean().detach() + 1e-8)
    return F.relu(np.log1p(margin) - ratio).mean()


def _train_vae(
    cfg: RMADConfig,
    model: RMAD,
    xn: torch.Tensor,
    xa: torch.Tensor,
    rng: np.random.Generator,
    say: Callable[[str], None],
) -> dict[str, list[float]]:
    assert model.vae is not None
    vae = model.vae
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    curves: dict[str, list[float]] = {"vae_rec": [], "vae_kl": [], "vae_oe": []}
    na = max(1, cfg.batch_size // 4)
    for ep in range(cfg.vae_epochs):
        vae.train()
        idx = _epoch_indices(len(xn), cfg, rng)
        sums, steps = np.zeros(3), 0
        for i in range(0, len(idx), cfg.batch_size):
            xb = xn[idx[i : i + cfg.batch_size]]
            rec, kl, loss = vae_loss(vae, xb, cfg.kl_weight)
            oe = torch.zeros(())
            if len(xa):
                ra, _, _ = vae_loss(vae, xa[rng.integers(0, len(xa), na)], cfg.kl_weight)
                oe = _hinge(ra, rec, cfg.outlier_margin)
                loss = loss + cfg.outlier_weight * oe
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sums += (rec.mean().item(), kl.mean().item(), oe.item())
            steps += 1
        for k, v in zip(curves, sums / max(steps, 1), strict=True):
            curves[k].append(float(v))
        say(f"vae epoch {ep + 1}/{cfg.vae_epochs}: rec {curves['vae_rec'][-1]:.4f} kl {curves['vae_kl'][-1]:.3f}")
    vae.eval()
    return curves


@torch.no_grad()
def _embeddings(model: RMAD, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    assert model.tc is not None
    model.tc.eval()
    return torch.cat([model.tc.embed(model.tc.encode(x[i : i + batch])) for i in range(0, len(x), batch)])


def _kmeans(e: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    k_eff = min(k, len(e))
    centres = KMeans(n_clusters=k_eff, n_init=4, random_state=seed).fit(e).cluster_centers_
    if k_eff < k:  # fewer windows than centres: repeat with a little jitter
        extra = centres[np.arange(k - k_eff) % k_eff] + 1e-3 * np.random.default_rng(seed).standard_normal(
            (k - k_eff, e.shape[1])
        )
        centres = np.concatenate([centres, extra])
    return np.asarray(centres, dtype=np.float32)


def _train_tc(
    cfg: RMADConfig,
    model: RMAD,
    xn: torch.Tensor,
    xa: torch.Tensor,
    rng: np.random.Generator,
    say: Callable[[str], None],
) -> tuple[np.ndarray, dict[str, list[float]]]:
    assert model.tc is not None
    tc = model.tc
    centres = torch.nn.Parameter(torch.zeros(cfg.K, cfg.emb_dim))
    opt = torch.optim.Adam(tc.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    curves: dict[str, list[float]] = {"tc_rec": [], "tc_emb_rec": [], "tc_clust": [], "tc_oe": []}
    na = max(1, cfg.batch_size // 4)
    total = cfg.trans_warmup_epochs + cfg.trans_epochs

    def losses(
        x: torch.Tensor, clustering: bool, anomalous: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(uniform L1 [B], L1 as s_trans aggregates it [B], embedding L1 [B], s_clust [B], KL(q || P(k|X)) [B])."""
        # anomalous windows push their embeddings away from the centres, never the centres away from them
        mu = centres.detach() if anomalous else centres
        g = tc.encode(x)
        if cfg.use_trans:
            abs_err = (tc.reconstruct(g) - x).abs()
            rec, rec_score = abs_err.mean((1, 2)), (abs_err * tc.time_w).sum(1).mean(1)
        else:
            rec = rec_score = torch.zeros(len(x))
        e = tc.embed(g)
        emb_rec = (tc.emb_decoder(e).view_as(x) - x).abs().mean((1, 2))
        if clustering and cfg.use_clust:
            post, prior = tc.assignment(g, e, mu)
            s_c = ((e - post @ mu) ** 2).sum(1)
            d2 = ((e.unsqueeze(1) - mu.unsqueeze(0)) ** 2).sum(2)
            q = torch.softmax(-0.5 * d2 / cfg.cluster_temp, dim=1).detach()
            kl_k = (q * (torch.log(q + 1e-8) - torch.log(prior + 1e-8))).sum(1)
        else:
            s_c = kl_k = torch.zeros(len(x))
        return rec, rec_score, emb_rec, s_c, kl_k

    for ep in range(total):
        clustering = ep >= cfg.trans_warmup_epochs
        if ep == cfg.trans_warmup_epochs and cfg.use_clust:
            sub = xn[rng.permutation(len(xn))[:8192]]
            with torch.no_grad():
                centres.copy_(torch.from_numpy(_kmeans(_embeddings(model, sub).numpy(), cfg.K, cfg.seed)))
            opt.add_param_group({"params": [centres], "weight_decay": 0.0})
            say(f"tc: k-means initialised {cfg.K} centres on {len(sub)} embeddings")
        tc.train()
        idx = _epoch_indices(len(xn), cfg, rng)
        sums, steps = np.zeros(4), 0
        for i in range(0, len(idx), cfg.batch_size):
            xb = xn[idx[i : i + cfg.batch_size]]
            rec, rec_score, emb_rec, s_c, kl_k = losses(xb, clustering)
            loss = rec.mean() + emb_rec.mean() + CLUSTER_WEIGHT * s_c.mean() + kl_k.mean()
            oe = torch.zeros(())
            if len(xa):
                _, ra, _, sa, _ = losses(xa[rng.integers(0, len(xa), na)], clustering, anomalous=True)
                if cfg.use_trans:
                    oe = oe + _hinge(ra, rec_score, cfg.outlier_margin)
                if clustering and cfg.use_clust:
                    oe = oe + _hinge(sa, s_c, cfg.outlier_margin)
                loss = loss + cfg.outlier_weight * oe
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sums += (rec.mean().item(), emb_rec.mean().item(), s_c.mean().item(), oe.item())
            steps += 1
        for k, v in zip(curves, sums / max(steps, 1), strict=True):
            curves[k].append(float(v))
        say(
            f"tc epoch {ep + 1}/{total}: rec {curves['tc_rec'][-1]:.4f} emb_rec {curves['tc_emb_rec'][-1]:.4f} "
            f"clust {curves['tc_clust'][-1]:.4f}"
        )
    tc.eval()
    if not cfg.use_clust:  # centres still travel with the model (the runtime's online updates use the embedding)
        sub = xn[rng.permutation(len(xn))[:8192]]
        centres.data.copy_(torch.from_numpy(_kmeans(_embeddings(model, sub).numpy(), cfg.K, cfg.seed)))
    return centres.detach().numpy().astype(np.float32).copy(), curves


@torch.no_grad()
def _raw_scores(model: RMAD, x: torch.Tensor, c: torch.Tensor, r: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        s_md, s_tr, s_cl, _, _ = model.branch_scores(x[i : i + batch], c, r)
        out.append(torch.stack([s_md, s_tr, s_cl], 1))
    return torch.cat(out) if out else torch.zeros(0, 3)


def _fit_gate(
    cfg: RMADConfig, model: RMAD, raw: torch.Tensor, y: np.ndarray, say: Callable[[str], None]
) -> dict[str, list[float]]:
    """Fit the gating MLP (and a logistic calibration a*fused+b used only for the loss) on the validation split."""
    curves: dict[str, list[float]] = {"gate_bce": []}
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
    n_pos = float(yt.sum())
    if not cfg.use_gate or n_pos == 0 or n_pos == len(yt):
        say("gate: not fitted (disabled, or the validation split has a single class); equal weights")
        return curves
    gate = model.fusion
    a = torch.nn.Parameter(torch.tensor(0.0))
    b = torch.nn.Parameter(torch.tensor(0.0))
    opt = torch.optim.Adam([*gate.net.parameters(), a, b], lr=cfg.lr_gate)
    pos_weight = torch.tensor((len(yt) - n_pos) / n_pos)
    gate.train()
    for _ in range(cfg.gate_epochs):
        fused, _ = gate(raw)
        logits = F.softplus(a) * fused + b
        loss = F.binary_cross_entropy_with_logits(logits, yt, pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        curves["gate_bce"].append(float(loss.item()))
    gate.eval()
    say(f"gate: fitted on {len(yt)} validation windows ({int(n_pos)} anomalous), bce {curves['gate_bce'][-1]:.4f}")
    return curves


def plot_curves(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in curves if any(curves[s].values())]
    if not stages:
        return
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.5), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        for name, vals in curves[stage].items():
            if vals:
                ax.plot(np.arange(1, len(vals) + 1), vals, label=name)
        ax.set_title(stage)
        ax.set_xlabel("epoch" if stage != "gate" else "step")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def fit(
    cfg: RMADConfig,
    X_normal: np.ndarray,
    X_anom: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    out_dir: str | Path | None = None,
    *,
    data_fingerprints: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Trained:
    """Train every part in the paper's order. Arrays are [N, T, F] float (already scaled); y_val is 0/1 per window.

    out_dir (when given) receives config.json, fingerprints.json, curves.json, curves.png and the torch state
    (Trained.save). data_fingerprints (e.g. sha256 of source files) are recorded beside the array fingerprints.
    """
    say = progress or log.info
    shape = (cfg.window, cfg.n_features)
    X_anom = np.asarray(X_anom).reshape(-1, *shape) if np.asarray(X_anom).size == 0 else X_anom
    X_val = np.asarray(X_val).reshape(-1, *shape) if np.asarray(X_val).size == 0 else X_val
    for name, arr in (("X_normal", X_normal), ("X_anom", X_anom), ("X_val", X_val)):
        if arr.ndim != 3 or tuple(arr.shape[1:]) != shape:
            raise ValueError(f"{name} has shape {arr.shape}, expected [N, {shape[0]}, {shape[1]}]")
    if len(X_val) != len(y_val):
        raise ValueError(f"X_val has {len(X_val)} windows but y_val {len(y_val)} labels")
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _fit(cfg, X_normal, X_anom, X_val, np.asarray(y_val), out_dir, data_fingerprints, say)
    finally:
        torch.set_num_threads(threads_before)


def _fit(
    cfg: RMADConfig,
    X_normal: np.ndarray,
    X_anom: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    out_dir: str | Path | None,
    data_fingerprints: dict[str, str] | None,
    say: Callable[[str], None],
) -> Trained:
    t0 = time.monotonic()
    shape = (cfg.window, cfg.n_features)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    fingerprints = {
        "X_normal": fingerprint_array(X_normal),
        "X_anom": fingerprint_array(X_anom),
        "X_val": fingerprint_array(X_val),
        "y_val": fingerprint_array(np.asarray(y_val)),
        **(data_fingerprints or {}),
    }
    # hold back a slice of normal windows for branch statistics (scores on training windows are optimistic)
    perm = rng.permutation(len(X_normal))
    n_cal = min(4096, max(1, len(X_normal) // 10)) if len(X_normal) > 20 else 0
    cal_idx, train_idx = perm[:n_cal], perm[n_cal:]
    xn = _tensor(X_normal[np.sort(train_idx)])
    xcal = _tensor(X_normal[np.sort(cal_idx)]) if n_cal else xn
    xa_real = _tensor(X_anom)
    curves: dict[str, dict[str, list[float]]] = {}
    fid: dict[str, float] = {}
    info: dict[str, Any] = {"n_normal": len(xn), "n_calibration": len(xcal), "n_anom_real": len(xa_real)}

    # 1. GAN
    xa = xa_real
    synth = torch.zeros(0, *shape)
    if cfg.use_gan and len(xa_real) >= 2:
        gen, disc, curves["gan"] = train_gan(cfg, xn.numpy(), xa_real.numpy(), rng)
        n_syn = int(min(cfg.synth_max, max(1, round(cfg.synth_multiplier * len(xa_real)))))
        synth = gen.sample(n_syn, 1, torch.Generator().manual_seed(cfg.seed))
        xa = torch.cat([xa_real, synth])
        fid["disc_features"] = disc_feature_fid(gen, disc, xa_real.numpy())
        fid["feature_matching"] = feature_matching_loss(gen, disc, xa_real.numpy())
        info["n_synthetic"] = n_syn
        say(f"gan: {cfg.gan_epochs} epochs, {n_syn} synthetic anomalies, FID(disc features) {fid['disc_features']:.3f}")
    model = RMAD(cfg)

    # 2. VAE
    ref = torch.zeros(cfg.n_ref_latents if cfg.use_vae else 1, cfg.latent_dim)
    if model.vae is not None:
        curves["vae"] = _train_vae(cfg, model, xn, xa, rng, say)
        with torch.no_grad():
            ref_idx = rng.permutation(len(xn))[: cfg.n_ref_latents]
            ref = model.vae.encode(xn[np.sort(ref_idx)])[0]
            if len(synth) >= 2 and len(xa_real) >= 2:
                mu_real = model.vae.encode(xa_real)[0].numpy()
                mu_syn = model.vae.encode(synth)[0].numpy()
                fid["vae_latent"] = frechet_distance(mu_real, mu_syn)
                fid["vae_latent_normal_vs_real_anom"] = frechet_distance(ref.numpy(), mu_real)

    # 3. Transformer-clustering
    centres = np.zeros((cfg.K, cfg.emb_dim), np.float32)
    if model.tc is not None:
        centres, curves["tc"] = _train_tc(cfg, model, xn, xa, rng, say)
    c_t = torch.from_numpy(centres)

    # 4. Branch statistics, then the fusion gate on the validation split
    raw_cal = _raw_scores(model, xcal, c_t, ref).numpy()
    loc = np.median(raw_cal, 0)
    q75, q25 = np.percentile(raw_cal, [75, 25], axis=0)
    scale = (q75 - q25) / 1.349
    scale = np.where(scale > 1e-8, scale, np.maximum(raw_cal.std(0), 1e-6))
    mask = np.array(cfg.branches, dtype=bool)
    loc, scale = np.where(mask, loc, 0.0), np.where(mask, scale, 1.0)
    model.fusion.loc.copy_(torch.from_numpy(loc.astype(np.float32)))
    model.fusion.scale.copy_(torch.from_numpy(scale.astype(np.float32)))
    branch_stats = {"loc": [float(v) for v in loc], "scale": [float(v) for v in scale]}
    if len(X_val):
        raw_val = _raw_scores(model, _tensor(X_val), c_t, ref)
        curves["gate"] = _fit_gate(cfg, model, raw_val, np.asarray(y_val), say)
    model.eval()
    info["inference_parameters"] = inference_parameters(model)
    info["train_seconds"] = round(time.monotonic() - t0, 1)
    trained = Trained(
        cfg=cfg,
        model=model,
        centres=centres,
        ref_latents=ref.numpy().astype(np.float32),
        branch_stats=branch_stats,
        curves=curves,
        fid=fid,
        fingerprints=fingerprints,
        info=info,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
        (out / "fingerprints.json").write_text(json.dumps(fingerprints, indent=2))
        (out / "curves.json").write_text(json.dumps(curves, indent=2))
        plot_curves(curves, out / "curves.png")
        trained.save(out)
    say(f"fit done in {info['train_seconds']} s")
    return trained
