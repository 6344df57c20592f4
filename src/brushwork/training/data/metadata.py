"""Dataset facts in the shapes kohya writes into LoRA metadata (`ss_*` keys)."""

from __future__ import annotations

from typing import Any

from brushwork.training.data.captions import tag_list
from brushwork.training.data.scan import DatasetPart


def tag_frequency_of(parts: list[DatasetPart]) -> dict[str, dict[str, int]]:
    """`ss_tag_frequency`: {folder name: {tag: count}}; tags split on ",", lower-cased,
    counted once per occurrence in each image's caption (kohya `set_tag_frequency`)."""
    merged: dict[str, dict[str, int]] = {}
    for part in parts:
        for folder, captions in part.captions.items():
            counts = merged.setdefault(folder, {})
            for caption in captions:
                for tag in tag_list(caption):
                    counts[tag] = counts.get(tag, 0) + 1
    return merged


def dataset_dirs_of(parts: list[DatasetPart], *, reg: bool) -> dict[str, dict[str, int]]:
    """`ss_dataset_dirs` (or `ss_reg_dataset_dirs`): {folder name: {n_repeats, img_count}}."""
    dirs: dict[str, dict[str, int]] = {}
    for part in parts:
        for subset, count in zip(part.subsets, part.subset_image_counts, strict=True):
            if subset.is_reg == reg:
                dirs[subset.image_dir.name] = {"n_repeats": subset.num_repeats, "img_count": count}
    return dirs


def bucket_info_of(part: DatasetPart) -> dict[str, Any]:
    """`ss_bucket_info`: {"buckets": {"0": {"resolution": [w, h], "count": n}, ...},
    "mean_img_ar_error": x}; counts include repeats and balanced reg images."""
    buckets = {
        str(i): {"resolution": [bucket[0], bucket[1]], "count": len(members)}
        for i, (bucket, members) in enumerate(part.buckets.items())
    }
    return {"buckets": buckets, "mean_img_ar_error": part.mean_ar_error}


def _subset_metadata(part: DatasetPart) -> list[dict[str, Any]]:
    entries = []
    for subset, count in zip(part.subsets, part.subset_image_counts, strict=True):
        entries.append(
            {
                "img_count": count,
                "num_repeats": subset.num_repeats,
                "color_aug": False,
                "flip_aug": subset.flip_aug,
                "random_crop": subset.random_crop,
                "shuffle_caption": subset.shuffle_caption,
                "keep_tokens": subset.keep_tokens,
                "keep_tokens_separator": subset.keep_tokens_separator,
                "secondary_separator": subset.secondary_separator,
                "enable_wildcard": subset.enable_wildcard,
                "caption_prefix": subset.caption_prefix,
                "caption_suffix": subset.caption_suffix,
                "image_dir": subset.image_dir.name,
                "class_tokens": subset.class_tokens,
                "is_reg": subset.is_reg,
            }
        )
    return entries


def datasets_metadata_of(parts: list[DatasetPart]) -> list[dict[str, Any]]:
    """`ss_datasets`: one dict per dataset, with its subsets (image_dir as a folder name)."""
    result = []
    for part in parts:
        spec = part.spec
        result.append(
            {
                "is_dreambooth": True,
                "batch_size_per_device": spec.batch_size,
                "num_train_images": part.num_train_images,
                "num_reg_images": part.num_reg_images,
                "resolution": list(spec.resolution),
                "enable_bucket": spec.enable_bucket,
                "min_bucket_reso": spec.min_bucket_reso,
                "max_bucket_reso": spec.max_bucket_reso,
                "tag_frequency": tag_frequency_of([part]),
                "bucket_info": bucket_info_of(part) if spec.enable_bucket else None,
                "subsets": _subset_metadata(part),
            }
        )
    return result
