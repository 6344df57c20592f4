"""Low-rank factors of weight differences: SVD, the rank to keep, and LoRA modules from them.

A matrix ΔW [out, in·k·k] with singular values S is best approximated at rank r (in the
Frobenius norm, Eckart–Young) by its first r singular triplets; the LoRA is then
``up = U_r · diag(S_r)`` and ``down = V_rᵀ`` (kohya's split, training.md 5.1). The share of
ΔW's norm the rank-r approximation keeps is ``sqrt(Σ S_r² / Σ S²)`` (kohya's `fro_retained`).

The rank is `dim`, or per layer by one of kohya `resize_lora.py`'s dynamic methods, capped at
`dim`:

* ``sv_ratio`` X: keep the singular values larger than S_max / X;
* ``sv_fro`` X: the smallest rank whose retained Frobenius share is at least X;
* ``sv_cumulative`` X: the smallest rank whose share of Σ S is at least X.

A full ΔW is factorised through the eigendecomposition of its smaller Gram matrix and a small
float64 SVD of ΔW projected on the subspace found (a full SVD of a 10240×1280 layer is several
times slower on a CPU). A product ``up @ down`` (a LoRA
already) is factorised through two thin QR decompositions and the SVD of an r×r matrix, never
forming the [out, in] product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from brushwork.core.errors import ConfigError
from brushwork.formats.lora import LoraModule

DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")


@dataclass(frozen=True)
class RankChoice:
    """How many ranks to keep: at most `dim`, and by `dynamic` per layer when given."""

    dim: int
    dynamic: str | None = None
    dynamic_value: float | None = None

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ConfigError(f"the rank must be at least 1, not {self.dim}")
        if self.dynamic is None:
            return
        if self.dynamic not in DYNAMIC_METHODS:
            raise ConfigError(
                f"unknown dynamic method {self.dynamic!r}",
                hint=f"use one of {', '.join(DYNAMIC_METHODS)}",
            )
        value = self.dynamic_value
        if value is None or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{self.dynamic} needs a positive value, not {value}")
        if self.dynamic in ("sv_fro", "sv_cumulative") and value > 1:
            raise ConfigError(f"{self.dynamic} takes a share between 0 and 1, not {value}")

    @property
    def label(self) -> str:
        if self.dynamic is None:
            return str(self.dim)
        return f"{self.dynamic} {self.dynamic_value} (at most {self.dim})"

    def rank_for(self, singular_values: torch.Tensor) -> int:
        """The rank to keep for these singular values (descending), between 1 and len(S)."""
        s = singular_values.double()
        count = int(s.numel())
        rank = min(self.dim, count)
        if self.dynamic is None or count == 0 or float(s[0]) == 0.0:
            return max(1, rank)
        value = float(self.dynamic_value or 0.0)
        if self.dynamic == "sv_ratio":
            chosen = int((s > s[0] / value).sum())
        elif self.dynamic == "sv_fro":
            share = torch.cumsum(s.pow(2), 0) / s.pow(2).sum()
            chosen = int(torch.searchsorted(share, torch.tensor(value**2, dtype=s.dtype))) + 1
        else:
            share = torch.cumsum(s, 0) / s.sum()
            chosen = int(torch.searchsorted(share, torch.tensor(value, dtype=s.dtype))) + 1
        return max(1, min(chosen, rank))


@dataclass(frozen=True)
class Factors:
    """ΔW ≈ up @ down at rank `rank`; `singular_values` are all of ΔW's."""

    up: torch.Tensor  # [out, rank]
    down: torch.Tensor  # [rank, in·k·k]
    singular_values: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def fro_retained(self) -> float:
        """The share of ΔW's Frobenius norm the factors keep (1.0 for a zero ΔW)."""
        squares = self.singular_values.double().pow(2)
        total = float(squares.sum())
        return 1.0 if total == 0 else math.sqrt(float(squares[: self.rank].sum()) / total)

    @property
    def sum_retained(self) -> float:
        s = self.singular_values.double()
        total = float(s.sum())
        return 1.0 if total == 0 else float(s[: self.rank].sum()) / total


def _clamped(up: torch.Tensor, down: torch.Tensor, quantile: float) -> tuple[torch.Tensor, ...]:
    """kohya's outlier clamp: both factors to the `quantile` of their joint absolute values."""
    values = torch.cat([up.flatten(), down.flatten()]).abs()
    if values.numel() > 2**24:  # torch.quantile's limit; a sample is as good for a threshold
        values = values[torch.randperm(values.numel(), generator=torch.Generator())[: 2**24]]
    high = float(torch.quantile(values, quantile))
    return up.clamp(-high, high), down.clamp(-high, high)


def _top_eigenpairs(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, at least 0) and eigenvectors of a symmetric matrix."""
    values, vectors = torch.linalg.eigh(gram)
    return values.flip(0).clamp_min(0), vectors.flip(1)


def factorize(
    matrix: torch.Tensor, choice: RankChoice, *, clamp_quantile: float | None = None
) -> Factors:
    """The best rank-`choice` factors of a 2-D matrix ΔW [m, n].

    The leading singular subspace comes from the eigendecomposition of the smaller Gram matrix
    (ΔWᵀΔW or ΔWΔWᵀ, float32); ΔW is then projected onto it and the small projection
    decomposed in float64. The product ``up @ down`` is ΔW's exact projection onto that
    subspace, so an error in the subspace costs only second order: the same factors as a full
    SVD to float32 precision, several times faster on a CPU for a UNet's tall and wide layers.
    """
    d = matrix.float()
    tall = d.shape[0] >= d.shape[1]
    eigenvalues, vectors = _top_eigenpairs(d.T @ d if tall else d @ d.T)
    singular = eigenvalues.sqrt()
    rank = choice.rank_for(singular)
    basis, d64 = vectors[:, :rank].double(), d.double()
    if tall:  # basis ≈ V_r: ΔW V_r = u s vh, so ΔW V_r V_rᵀ = (u s)(vh V_rᵀ)
        u, s, vh = torch.linalg.svd(d64 @ basis, full_matrices=False)
        up, down = u * s, vh @ basis.T
    else:  # basis ≈ U_r: U_rᵀ ΔW = u s vh, so U_r U_rᵀ ΔW = (U_r u s) vh
        u, s, vh = torch.linalg.svd(basis.T @ d64, full_matrices=False)
        up, down = basis @ (u * s), vh
    up, down = up.float(), down.float()
    if clamp_quantile is not None and clamp_quantile < 1.0:
        up, down = _clamped(up, down, clamp_quantile)
    singular = torch.cat([s.float(), singular[rank:]])
    return Factors(up.contiguous(), down.contiguous(), singular)


def factorize_product(up: torch.Tensor, down: torch.Tensor, choice: RankChoice) -> Factors:
    """The best rank-`choice` factors of ``up @ down`` ([out, r] @ [r, n]) without forming it."""
    q_up, r_up = torch.linalg.qr(up.float())
    q_down, r_down = torch.linalg.qr(down.float().T)
    u, s, vh = torch.linalg.svd(r_up @ r_down.T, full_matrices=False)
    rank = choice.rank_for(s)
    new_up = (q_up @ u[:, :rank]) * s[:rank]
    new_down = vh[:rank] @ q_down.T
    return Factors(new_up.contiguous(), new_down.contiguous(), s)


def lora_module(
    target: str, factors: Factors, layer_shape: tuple[int, ...], alpha: float
) -> LoraModule:
    """A kohya LoRA module from factors, shaped for a layer of weight shape `layer_shape`
    (Linear [out, in]; Conv2d [out, in, kh, kw], whose `up` becomes [out, r, 1, 1])."""
    rank = factors.rank
    down = factors.down.reshape(rank, *layer_shape[1:])
    up = factors.up if len(layer_shape) == 2 else factors.up.reshape(layer_shape[0], rank, 1, 1)
    return LoraModule.lora(target, down.contiguous(), up.contiguous(), alpha)


def is_conv_kernel(layer_shape: tuple[int, ...]) -> bool:
    """A convolution with a kernel larger than 1x1 (kohya's `conv_dim` layers)."""
    return len(layer_shape) == 4 and tuple(layer_shape[2:]) != (1, 1)
