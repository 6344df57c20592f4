"""Training projects (sd-webui-train-tools style): a prepared dataset with its tag state, and
versions of a LoRA run, each with its resolved options, checkpoints, logs and preview grids.

- `layout`: the folders (`<first library root>/projects/NAME/...`) and names;
- `project.create_project(home, NewProject(...))`, `open_project`, `list_projects`;
- `versions.create_version(project, NewVersion(config_file, parent, overrides))`;
- `train.train_version(project, version, base_model, TrainOptions(...))`;
- `preview.preview_version(project, version, PreviewRequest(...), PreviewRun(...))`: the
  checkpoint x weight grid (`generation.xyz`);
- `best.best_by_quality(..., scorer, ...)` / `best.best_by_loss(...)`: which epoch and weight,
  and why; `shapes_quality.shapes_scorer` measures a shapes-world concept with the demo probe;
- `summary`: the JSON the CLI and the server show.
"""
