"""Robust per-feature scaling (median / IQR), fitted on training data only and shipped in the manifest.

Median and IQR rather than mean and std: pump windows and exchange glitches are heavy-tailed, and a handful of
them must not set the scale of everything else. Features that are constant over most bars (rush orders on an
illiquid coin are zero almost always) have an IQR of 0; their scale falls back to the mean absolute deviation
from the median, then to 1, so they neither blow up nor vanish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.features.spec import SCALED_CLIP


@dataclass(slots=True)
class RobustScaler:
    """x_scaled = clip((x - center) / scale, -clip, clip); `normal` is the training median (for explanations)."""

    center: np.ndarray
    scale: np.ndarray
    clip: float = SCALED_CLIP

    @classmethod
    def fit(cls, x: np.ndarray, clip: float = SCALED_CLIP, min_scale: float = 1e-6) -> RobustScaler:
        """Fit on rows of `x` [N, F] (or [N, T, F]); NaN rows are ignored per feature."""
        flat = np.asarray(x, dtype=np.float64).reshape(-1, np.asarray(x).shape[-1])
        center = np.nanmedian(flat, axis=0)
        q75, q25 = np.nanpercentile(flat, [75, 25], axis=0)
        iqr = q75 - q25
        mad = np.nanmean(np.abs(flat - center), axis=0)
        scale = np.where(iqr > min_scale, iqr, np.where(mad > min_scale, mad, 1.0))
        return cls(center=center.astype(np.float32), scale=scale.astype(np.float32), clip=clip)

    @property
    def normal(self) -> np.ndarray:
        return self.center

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scale the last axis of `x`; returns float32."""
        z = (np.asarray(x, dtype=np.float32) - self.center) / self.scale
        out: np.ndarray = np.clip(np.nan_to_num(z, nan=0.0), -self.clip, self.clip).astype(np.float32, copy=False)
        return out

    def inverse(self, z: np.ndarray) -> np.ndarray:
        out: np.ndarray = (np.asarray(z, dtype=np.float32) * self.scale + self.center).astype(np.float32, copy=False)
        return out

    def to_manifest(self) -> dict[str, list[float] | float]:
        """The `features` fields of manifest.json (center, scale, normal) plus the clip."""
        return {
            "center": [float(v) for v in self.center],
            "scale": [float(v) for v in self.scale],
            "normal": [float(v) for v in self.center],
            "clip": float(self.clip),
        }

    @classmethod
    def from_manifest(cls, features: dict[str, object]) -> RobustScaler:
        center = features["center"]
        scale = features["scale"]
        assert isinstance(center, Sequence) and isinstance(scale, Sequence)
        clip = features.get("clip", SCALED_CLIP)
        return cls(
            center=np.asarray(center, dtype=np.float32),
            scale=np.asarray(scale, dtype=np.float32),
            clip=float(clip) if isinstance(clip, int | float) else SCALED_CLIP,
        )
