"""Training data: kohya folder layouts and dataset configs, captions, aspect-ratio buckets,
latent caching, a deterministic resumable batch order, and kohya's step arithmetic."""

from brushwork.training.data.buckets import BucketSelector, make_bucket_resolutions
from brushwork.training.data.captions import process_caption
from brushwork.training.data.config import DatasetConfig, load_dataset_config, load_dataset_toml
from brushwork.training.data.dataset import Batch, TrainingDataset
from brushwork.training.data.plan import StepPlan, format_step_plan, step_plan
from brushwork.training.data.spec import (
    DatasetSpec,
    SubsetSpec,
    dreambooth_subsets,
    parse_folder_name,
    skipped_folders,
)

__all__ = [
    "Batch",
    "BucketSelector",
    "DatasetConfig",
    "DatasetSpec",
    "StepPlan",
    "SubsetSpec",
    "TrainingDataset",
    "dreambooth_subsets",
    "format_step_plan",
    "load_dataset_config",
    "load_dataset_toml",
    "make_bucket_resolutions",
    "parse_folder_name",
    "process_caption",
    "skipped_folders",
    "step_plan",
]
