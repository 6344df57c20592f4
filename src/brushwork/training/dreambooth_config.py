"""DreamBooth options: sd-scripts' `train_db.py` names, plus the class-image options of
diffusers' `train_dreambooth.py` and the WebUI's DreamBooth extension.

A DreamBooth run is a full fine-tune of the UNet (and, for the first steps or all of them, the
text encoder) on kohya folders: instance images in `train_data_dir/<repeats>_<token> <class>`,
class ("regularisation") images in `reg_data_dir/<repeats>_<class>`. Prior preservation is
kohya's: class images are samples of the same batches whose loss counts `prior_loss_weight`
times.

Beyond `TrainingOptions` (see `config.py`):

* `learning_rate` defaults to sd-scripts' 2e-6 (a full fine-tune value);
  `learning_rate_te` is the text encoder's own rate (unset: `learning_rate`);
* `train_text_encoder` (default true) and `stop_text_encoder_training` N: the text encoder
  trains for the first N steps only; -1 (or 0) means never, as in sd-scripts;
* `save_model_as` `safetensors` (default) or `ckpt`: an A1111 single-file checkpoint;
* `num_class_images` (diffusers; 0 = off): when `reg_data_dir` holds fewer class images than
  this for a class, the missing ones are generated with the base model first, from
  `class_prompt` (default: the instance folder's class word, `10_sks dog` -> `dog`), with
  `class_negative_prompt`, `class_infer_steps`, `class_guidance_scale` (the extension's names),
  `sample_sampler` and `sample_batch_size` images at a time (diffusers' name).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from brushwork.training.config import TrainingOptions


class DreamBoothTrainingConfig(TrainingOptions):
    """Every option of a DreamBooth run (see the module docstring)."""

    learning_rate: float = Field(2e-6, ge=0)
    learning_rate_te: float | None = Field(None, ge=0)
    train_text_encoder: bool = True
    stop_text_encoder_training: int | None = Field(None, ge=-1)
    save_model_as: Literal["safetensors", "ckpt"] = "safetensors"
    # class images (prior preservation)
    class_prompt: str | None = None
    num_class_images: int = Field(0, ge=0)
    class_negative_prompt: str = ""
    class_infer_steps: int = Field(40, ge=1, le=1000)
    class_guidance_scale: float = Field(7.5, ge=0)
    sample_batch_size: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _dreambooth_consistent(self) -> DreamBoothTrainingConfig:
        if self.num_class_images and self.reg_data_dir is None:
            raise ValueError(
                "num_class_images needs reg_data_dir: the folder the class images are kept in"
            )
        if self.num_class_images and self.dataset_config is not None:
            raise ValueError(
                "num_class_images works with train_data_dir/reg_data_dir folders, not "
                "dataset_config; generate the class images into a folder of the dataset instead"
            )
        if self.class_prompt is not None and not self.class_prompt.strip():
            raise ValueError("class_prompt is empty")
        return self

    @property
    def trains_text_encoder(self) -> bool:
        """Whether the text encoder trains at all (sd-scripts: -1 never; 0 stops at once)."""
        return self.train_text_encoder and self.stop_text_encoder_training not in (-1, 0)

    @property
    def text_encoder_steps(self) -> int | None:
        """Train the text encoder for the first N steps (None: all of them)."""
        if not self.trains_text_encoder:
            return 0
        return self.stop_text_encoder_training

    @property
    def effective_text_encoder_lr(self) -> float:
        return self.learning_rate if self.learning_rate_te is None else self.learning_rate_te
