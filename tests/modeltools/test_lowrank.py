"""Rank choices (kohya's dynamic methods) and the factorisations behind extract and resize."""

from __future__ import annotations

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.formats.checkpoint import checkpoint_to_ldm
from brushwork.modeltools.blocks import BlockWeights, block_labels
from brushwork.modeltools.lowrank import RankChoice, factorize, factorize_product
from brushwork.testing.factory import build_meta_components, components_checkpoint

SINGULAR = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5])


@pytest.mark.parametrize(
    ("choice", "rank"),
    [
        (RankChoice(3), 3),
        (RankChoice(9), 5),  # never more than the matrix has
        (RankChoice(8, "sv_ratio", 4.0), 2),  # keep S > 10 / 4
        (RankChoice(8, "sv_ratio", 100.0), 5),
        (RankChoice(1, "sv_ratio", 100.0), 1),  # dim caps the dynamic choice
        (RankChoice(8, "sv_fro", 0.95), 2),  # sqrt((100 + 25) / 130.25) = 0.98
        (RankChoice(8, "sv_fro", 0.99), 3),
        (RankChoice(8, "sv_cumulative", 0.8), 2),  # (10 + 5) / 18.5 = 0.81
        (RankChoice(8, "sv_cumulative", 0.9), 3),
    ],
)
def test_rank_choices_follow_kohyas_dynamic_methods(choice: RankChoice, rank: int) -> None:
    assert choice.rank_for(SINGULAR) == rank


@pytest.mark.parametrize(
    ("dim", "method", "value"),
    [(0, None, None), (4, "sv_max", 1.0), (4, "sv_fro", 1.5), (4, "sv_ratio", None)],
)
def test_bad_rank_choices_are_refused(dim: int, method: str | None, value: float | None) -> None:
    with pytest.raises(ConfigError):
        RankChoice(dim, method, value)


def test_the_product_factorisation_equals_the_full_svd() -> None:
    generator = torch.Generator().manual_seed(0)
    up, down = torch.randn(40, 16, generator=generator), torch.randn(16, 30, generator=generator)
    full = factorize(up @ down, RankChoice(5))
    product = factorize_product(up, down, RankChoice(5))
    torch.testing.assert_close(product.up @ product.down, full.up @ full.down, rtol=1e-4, atol=1e-4)
    assert product.fro_retained == pytest.approx(full.fro_retained, abs=1e-6)


def test_the_clamp_limits_outliers() -> None:
    matrix = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    matrix[0, 0] = 1000.0
    clamped = factorize(matrix, RankChoice(4), clamp_quantile=0.9)
    plain = factorize(matrix, RankChoice(4))
    assert clamped.up.abs().max() < plain.up.abs().max()


@pytest.mark.parametrize(("family", "count"), [("sd1", 25), ("sd2", 25), ("sdxl", 19)])
def test_real_models_have_the_block_counts_merge_tools_use(family: str, count: int) -> None:
    keys = checkpoint_to_ldm(components_checkpoint(build_meta_components(family)))
    labels = block_labels(keys)
    assert len(labels) == count
    assert labels[0] == "IN00" and labels[count // 2] == "M00" and labels[-1].startswith("OUT")
    weights = BlockWeights.from_values([0.5] + [1.0] * count, labels, 0.3)
    assert weights.base == 0.5
    assert weights.alpha_for("model.diffusion_model.middle_block.1.norm.weight") == 1.0
    assert weights.alpha_for("model.diffusion_model.time_embed.0.weight") == 0.5


@pytest.mark.parametrize("shape", [(60, 20), (20, 60), (32, 32)])
def test_factorize_gives_the_truncated_svd(shape: tuple[int, int]) -> None:
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    factors = factorize(matrix, RankChoice(6))
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    best = (u[:, :6] * s[:6]) @ vh[:6]
    torch.testing.assert_close((factors.up @ factors.down).double(), best, rtol=0, atol=1e-5)
    kept = factors.singular_values.double()
    torch.testing.assert_close(kept[:6], s[:6], rtol=1e-5, atol=0)  # from the projection
    torch.testing.assert_close(kept, s, rtol=0, atol=1e-5 * float(s[0]))  # the rest, from eigh
    # kohya's split: the singular values live in `up`, `down` has orthonormal rows
    torch.testing.assert_close(factors.down @ factors.down.T, torch.eye(6), rtol=0, atol=1e-5)
