"""Tiny taggers built in the tests: ONNX graphs with the WD14 / DeepDanbooru input/output contract
whose scores are known functions of the picture's mean colour, and a random-weight BLIP."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (name, category, weights on the 3 input channels in model order, bias) -> logit
# WD14 models see BGR: channel 0 is blue, 2 is red.
WD14_TAGS: list[tuple[str, int, tuple[float, float, float], float]] = [
    ("general", 9, (0.0, 0.0, 0.0), 2.0),
    ("sensitive", 9, (0.0, 0.0, 0.0), -1.0),
    ("hatsune_miku", 4, (0.0, 6.0, 0.0), -3.0),
    ("long_hair", 0, (0.0, 0.0, 4.0), -2.0),
    ("blue_eyes", 0, (4.0, 0.0, 0.0), -2.0),
    ("^_^", 0, (0.0, 0.0, 0.0), 0.0),
    ("1girl", 0, (0.0, 0.0, 0.0), 1.0),
    ("solo", 0, (0.0, 0.0, 0.0), -0.5),
]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def expected_scores(channel_means: tuple[float, float, float]) -> dict[str, float]:
    """Scores of the WD14 tags for channel means in 0..1, in the model's channel order."""
    return {
        name: sigmoid(sum(w * m for w, m in zip(weights, channel_means, strict=True)) + bias)
        for name, _, weights, bias in WD14_TAGS
    }


def _graph_model(
    side: int, scale: float, with_sigmoid: bool, channels_first: bool
) -> onnx.ModelProto:
    weights = np.array([t[2] for t in WD14_TAGS], dtype=np.float32).T  # [3, tags]
    bias = np.array([t[3] for t in WD14_TAGS], dtype=np.float32)
    shape = ["batch", 3, side, side] if channels_first else ["batch", side, side, 3]
    axes = [2, 3] if channels_first else [1, 2]
    inputs = [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, shape)]
    outputs = [
        helper.make_tensor_value_info("predictions", TensorProto.FLOAT, ["batch", len(WD14_TAGS)])
    ]
    initializers = [
        numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
    ]
    last = "predictions" if not with_sigmoid else "logits"
    nodes = [
        helper.make_node("ReduceMean", ["input_1", "axes"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "weights"], ["product"]),
        helper.make_node("Add", ["product", "bias"], [last]),
    ]
    if with_sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["predictions"]))
    graph = helper.make_graph(nodes, "tiny_tagger", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def build_wd14(
    folder: Path, *, side: int = 32, with_sigmoid: bool = True, channels_first: bool = False
) -> Path:
    """A WD14-style folder: model.onnx (NHWC BGR 0..255 in) + selected_tags.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(_graph_model(side, 1 / 255, with_sigmoid, channels_first), folder / "model.onnx")
    rows = ["tag_id,name,category,count"]
    rows += [f"{1000 + i},{name},{cat},{500 - i}" for i, (name, cat, _, _) in enumerate(WD14_TAGS)]
    (folder / "selected_tags.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


DEEPDANBOORU_NAMES = [
    "rating:safe", "rating:questionable", "hatsune_miku", "blue_theme", "red_theme", "^_^", "1girl", "solo",
]  # fmt: skip


def build_deepdanbooru(folder: Path, *, side: int = 32) -> Path:
    """A DeepDanbooru ONNX export: RGB 0..1 in, same score functions (channel 2 is blue)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(_graph_model(side, 1.0, True, False), folder / "deepdanbooru.onnx")
    (folder / "tags.txt").write_text("\n".join(DEEPDANBOORU_NAMES) + "\n", encoding="utf-8")
    (folder / "tags-character.txt").write_text("hatsune_miku\n", encoding="utf-8")
    return folder


BLIP_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "on", "white",
              "background", "square", "blue", "[DEC]"]  # fmt: skip


def build_blip(folder: Path) -> Path:
    """A random-weight BLIP captioner saved with its processor, as save_pretrained writes it."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(BLIP_VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
              "num_attention_heads": 2}  # fmt: skip
    text = {**layers, "vocab_size": len(BLIP_VOCAB), "max_position_embeddings": 96,
            "bos_token_id": BLIP_VOCAB.index("[DEC]"), "pad_token_id": 0, "sep_token_id": 3,
            "eos_token_id": 3}  # fmt: skip
    vision = {**layers, "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=16)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
