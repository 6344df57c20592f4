"""Training on the demo model teaches it: a short textual-inversion run makes the trigger word draw
its shape (loose floors; bench/quality.py measures every trainer on a held-out shape)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from brushwork.core.settings import Settings
from brushwork.demo.dataset import write_dataset
from brushwork.demo.model import demo_model_file
from brushwork.demo.probe import Probe
from brushwork.evaluation.quality import adoption
from brushwork.generation import GenerationRequest, Generator
from brushwork.library.catalog import Library
from brushwork.loading import load_model
from brushwork.training.textual_inversion import EmbeddingTrainingConfig, train_embedding

pytestmark = pytest.mark.skipif(
    not demo_model_file().is_file(), reason="the demo model is not built in this checkout"
)

TRIGGER = "sks"
# A shape the base model can draw but that the trigger word does not name: textual inversion
# finds a word for what the model can already draw. A shape it never saw (heart, cross, crescent)
# is beyond a new word for a model that knows four shapes; bench/quality.py reports that figure.
SHAPE = "star"


def _draw(root: Path, data: Path) -> object:
    library = Library.open(Settings(roots=(root,), data_dir=data))
    generator = Generator(
        load_model(demo_model_file(), device="cpu", precision="fp32"), library=library
    )

    def draw(request: GenerationRequest) -> list[object]:
        return list(generator.generate(request).images)

    return draw


def test_a_short_textual_inversion_run_teaches_the_trigger_its_shape(tmp_path: Path) -> None:
    folder = tmp_path / "concept"
    write_dataset(folder, (SHAPE,), 20, seed=4242, repeats=1, name=TRIGGER, trigger=TRIGGER)
    config = EmbeddingTrainingConfig(
        pretrained_model_name_or_path=str(demo_model_file()),
        train_data_dir=folder,
        output_dir=tmp_path / "run",
        output_name=TRIGGER,
        init_word="shape",
        num_vectors_per_token=2,
        resolution=(64, 64),
        train_batch_size=4,
        template_filename="filewords",
        learning_rate="0.01",
        max_train_steps=100,
        save_every_n_steps=None,
        seed=1,
    )
    embedding = train_embedding(config, demo_model_file()).result.final_file
    probe = Probe.load()
    before_root, after_root = tmp_path / "before", tmp_path / "after"
    for root in (before_root, after_root):
        (root / "embeddings").mkdir(parents=True)
        (root / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(embedding, after_root / "embeddings" / embedding.name)

    before = adoption(_draw(before_root, tmp_path / "d1"), probe, SHAPE, TRIGGER, [0, 1])  # type: ignore[arg-type]
    after = adoption(_draw(after_root, tmp_path / "d2"), probe, SHAPE, TRIGGER, [0, 1])  # type: ignore[arg-type]
    assert before.count == after.count == 8
    # measured: 0 of 8 before, 4 of 8 after (and 3 more probed as the star-like cross)
    assert before.adoption <= 0.125, before.as_dict()
    assert after.adoption >= before.adoption + 0.25, after.as_dict()
