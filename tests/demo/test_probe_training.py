"""Pieces of probe training: degradation like a diffusion model's output, shapeless pictures."""

from __future__ import annotations

import torch

from brushwork.demo.probe import ProbeConfig
from brushwork.demo.probe_training import (
    ProbeTraining,
    all_kinds_specs,
    degrade,
    evaluate,
    labels,
    render_batch,
    shapeless_batch,
    train_probe,
)


def test_degrade_is_seeded_keeps_the_range_and_changes_pixels() -> None:
    images = render_batch(all_kinds_specs(0, 8)).float() / 255
    first = degrade(images, torch.Generator().manual_seed(1))
    again = degrade(images, torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert first.shape == images.shape
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert float((first - images).abs().mean()) > 0.005


def test_shapeless_pictures_are_labelled_only_where_plain() -> None:
    config = ProbeConfig()
    images, backgrounds = shapeless_batch(6, 32, torch.Generator().manual_seed(0), config)
    assert images.shape == (6, 3, 32, 32)
    for index in range(6):
        flat = images[index].flatten(1)
        is_plain = bool((flat.max(dim=1).values - flat.min(dim=1).values).max() < 1e-6)
        assert is_plain == (int(backgrounds[index]) >= 0)


def test_labels_follow_the_class_order_of_the_config() -> None:
    specs = all_kinds_specs(3, 5)
    config = ProbeConfig()
    for head, values in labels(specs, config).items():
        assert [config.classes[head][i] for i in values.tolist()] == [
            getattr(s, head) for s in specs
        ]


def test_a_short_training_run_learns_the_background_colour() -> None:
    settings = ProbeTraining(
        train_images=256, steps=30, batch_size=16, outliers_per_batch=4, learning_rate=1e-2
    )
    probe = train_probe(settings)
    specs = all_kinds_specs(99, 64)
    result = evaluate(probe, specs, render_batch(specs).float() / 255)
    assert result.count == 64
    assert result.per_head["background"] > 0.5  # chance is 1 in 8
