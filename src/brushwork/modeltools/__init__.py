"""modeltools floor (F4): whole-file transforms of models, streamed and atomic.

    merge.merge_checkpoints(MergeRequest(a, b, out, alpha=0.3))   A1111's checkpoint merger
    bake.bake_loras(BakeRequest(model, ((lora, 0.8),), out))      LoRAs baked into a checkpoint
    extract.extract_lora(ExtractRequest(tuned, base, out, RankChoice(32)))
    resize.resize_lora(ResizeRequest(lora, out, RankChoice(8)))
    combine.combine_loras(CombineRequest(((a, 1.0), (b, 0.5)), out))

Inputs are `common.ModelInput`s (a file, its name and hash); `locate.ModelLocator` finds them in
the library and places outputs in its folders. Every output gets its recipe in the file's
metadata and in a `<stem>.json` sidecar (`recipe`). See docs/architecture.md.
"""
