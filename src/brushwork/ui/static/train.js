// The Train tab: a LoRA run from a dataset folder (sd-scripts option names), kohya's step
// arithmetic before starting, then live progress, the loss curve, files and sample images.
import {$, sd, bw, element, fill, on, debounce} from "./api.js";
import {followProgress, showGrid} from "./xyz.js";
import {requestBody} from "./generate.js";

const POLL_MS = 500;
const FIELDS = [
  // [id, sd-scripts option, label, type, default, extra attributes]
  ["output-name", "output_name", "Output name", "text", "my-lora"],
  ["resolution", "resolution", "Resolution", "number", 512, {min: 64, step: 8}],
  ["batch", "train_batch_size", "Batch size", "number", 1, {min: 1}],
  ["epochs", "max_train_epochs", "Epochs", "number", 10, {min: 1}],
  ["steps", "max_train_steps", "Max steps (when no epochs)", "number", "", {min: 1}],
  ["dim", "network_dim", "Network dim", "number", 8, {min: 1}],
  ["alpha", "network_alpha", "Network alpha", "number", 4, {min: 0, step: "any"}],
  ["lr", "learning_rate", "Learning rate", "number", 0.0001, {min: 0, step: "any"}],
  ["save-every", "save_every_n_epochs", "Save every N epochs", "number", 1, {min: 1}],
  ["sample-every", "sample_every_n_epochs", "Sample every N epochs", "number", "", {min: 1}],
  ["seed", "seed", "Seed", "number", 42, {min: 0}],
];
const SELECTS = [
  ["optimizer", "optimizer_type", "Optimizer", ["AdamW", "AdamW8bit", "Lion", "Prodigy",
    "Adafactor"]],
  ["scheduler", "lr_scheduler", "LR scheduler", ["constant", "cosine", "linear",
    "constant_with_warmup", "cosine_with_restarts", "polynomial"]],
  ["precision", "mixed_precision", "Mixed precision", ["no", "bf16", "fp16"]],
];
let current = null;
let lastRun = null;

function build() {
  const inputs = FIELDS.map(([id, , label, type, value, extra = {}]) => element("label", {},
    [label, element("input", {id: `train-${id}`, type, value, ...extra})]));
  const selects = SELECTS.map(([id, , label, options]) => element("label", {}, [label,
    element("select", {id: `train-${id}`}, options.map((o) => element("option", {text: o})))]));
  const form = element("div", {class: "panel form"}, [
    element("div", {class: "row"}, [
      element("label", {}, ["Dataset", element("select", {id: "train-dataset"})]),
      element("label", {}, ["Base model", element("select", {id: "train-base"})]),
    ]),
    element("div", {id: "train-dataset-info", class: "hint"}),
    element("div", {class: "row wrap"}, [...inputs, ...selects]),
    element("label", {}, ["Sample prompts (kohya syntax: prompt --w 512 --h 512 --s 20 --d 1)",
      element("textarea", {id: "train-prompts", rows: 2})]),
    element("label", {}, ["More sd-scripts options (key = value per line)",
      element("textarea", {id: "train-extra", rows: 2, placeholder: "noise_offset = 0.05"})]),
    element("pre", {id: "train-plan", class: "plan"}),
    element("div", {class: "row"}, [
      element("button", {id: "train-start", type: "button", class: "primary", text: "Train"}),
      element("button", {id: "train-interrupt", type: "button", text: "Interrupt", disabled: true}),
    ]),
    element("div", {id: "train-error", role: "alert", class: "error"}),
  ]);
  const output = element("div", {class: "panel output"}, [
    element("progress", {id: "train-progress", max: 1, value: 0}),
    element("div", {id: "train-status", role: "status"}),
    chart(),
    element("h3", {text: "Files"}),
    element("ul", {id: "train-files"}),
    element("h3", {text: "Samples per epoch"}),
    element("div", {id: "train-samples"}),
    element("h3", {text: "Epoch x strength grid"}),
    element("div", {class: "row"}, [
      element("label", {class: "grow"}, ["Prompt", element("input", {id: "grid-prompt"})]),
      element("label", {}, ["Strengths",
        element("input", {id: "grid-strengths", value: "0.4,0.6,0.8,1.0"})]),
      element("button", {id: "grid-generate", type: "button", text: "Draw grid", disabled: true}),
    ]),
    element("p", {class: "hint", text: "Rows: the run's epoch files, then the final one; "
      + "columns: LoRA strengths; the txt2img tab's sampler, steps, CFG, seed and size."}),
    element("progress", {id: "grid-progress", max: 1, value: 0}),
    element("div", {id: "grid-progress-text", role: "status"}),
    element("div", {id: "grid-error", role: "alert", class: "error"}),
    element("div", {id: "grid-images", class: "thumbs"}),
    element("pre", {id: "grid-infotext"}),
  ]);
  $("tab-train").append(element("div", {class: "split"}, [form, output]));
}

function chart() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.id = "train-loss";
  svg.setAttribute("viewBox", "0 0 600 240");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "loss curve");
  for (const name of ["axis", "loss", "average"]) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("class", name);
    svg.append(line);
  }
  for (const [name, x, y, anchor] of [["high", 36, 14, "end"], ["low", 36, 222, "end"],
    ["steps", 590, 236, "end"], ["legend", 48, 14, "start"]]) {
    const text = document.createElementNS("http://www.w3.org/2000/svg", "text");
    text.setAttribute("class", name);
    text.setAttribute("x", x);
    text.setAttribute("y", y);
    text.setAttribute("text-anchor", anchor);
    svg.append(text);
  }
  return svg;
}

function drawLoss(losses, total) {
  if (!losses.length) return;
  const svg = $("train-loss");
  const values = losses.flatMap((r) => [r.loss, r.average_loss]).filter(Number.isFinite);
  const low = Math.min(...values);
  const high = Math.max(...values);
  const x = (step) => 40 + (step / Math.max(total, 1)) * 550;
  const y = (v) => 220 - ((v - low) / Math.max(high - low, 1e-9)) * 200;
  const points = (key) => losses.map((r) => `${x(r.step).toFixed(1)},${y(r[key]).toFixed(1)}`)
    .join(" ");
  svg.querySelector(".axis").setAttribute("points", "40,10 40,220 590,220");
  svg.querySelector(".loss").setAttribute("points", points("loss"));
  svg.querySelector(".average").setAttribute("points", points("average_loss"));
  svg.querySelector(".high").textContent = high.toPrecision(3);
  svg.querySelector(".low").textContent = low.toPrecision(3);
  svg.querySelector(".steps").textContent = `step ${losses[losses.length - 1].step} of ${total}`;
  svg.querySelector(".legend").textContent = "loss (grey), average loss (blue)";
  svg.dataset.points = String(losses.length);
  svg.dataset.range = `${low.toFixed(4)}–${high.toFixed(4)}`;
}

function options() {
  const values = {};
  for (const [id, key, , type] of FIELDS) {
    const raw = $(`train-${id}`).value.trim();
    if (raw !== "") values[key] = type === "number" ? Number(raw) : raw;
  }
  for (const [id, key] of SELECTS) values[key] = $(`train-${id}`).value;
  if (values.max_train_epochs) delete values.max_train_steps;
  values.train_data_dir = $("train-dataset").value;
  values.pretrained_model_name_or_path = $("train-base").value;
  const prompts = $("train-prompts").value.trim();
  if (prompts) values.sample_prompts_text = prompts;
  else delete values.sample_every_n_epochs;
  for (const line of $("train-extra").value.split("\n")) {
    const [key, ...rest] = line.split("=");
    if (!key.trim() || !rest.length) continue;
    const raw = rest.join("=").trim();
    try { values[key.trim()] = JSON.parse(raw); } catch (error) { values[key.trim()] = raw; }
  }
  return values;
}

const checkPlan = debounce(async () => {
  try {
    const plan = await bw("train/lora/plan", options());
    $("train-plan").textContent = plan.plan + (plan.warnings.length
      ? "\n\n" + plan.warnings.map((w) => "warning: " + w).join("\n") : "")
      + `\n\noutput: ${plan.output_dir}`;
    $("train-error").textContent = "";
  } catch (error) {
    $("train-plan").textContent = "";
    $("train-error").textContent = error.message;
  }
}, 400);

function showSamples(samples) {
  const byLabel = new Map();
  for (const item of samples) {
    if (!byLabel.has(item.label)) byLabel.set(item.label, []);
    byLabel.get(item.label).push(item);
  }
  $("train-samples").replaceChildren(...[...byLabel].map(([label, items]) => element("div",
    {class: "sample-row", "data-label": label}, [
      element("span", {text: label.startsWith("e") ? `epoch ${Number(label.slice(1))}`
        : `step ${Number(label)}`}),
      ...items.map((item) => element("img", {src: item.url, alt: item.file, title: item.file})),
    ])));
}

async function follow(id) {
  let losses = [];
  for (;;) {
    const since = losses.length ? losses[losses.length - 1].step : 0;
    const run = await bw(`train/${id}?since=${since}`);
    losses = losses.concat(run.losses);
    const p = run.progress;
    drawLoss(losses, p.total);
    $("train-progress").value = p.fraction;
    const loss = p.average_loss !== undefined ? `, loss ${p.average_loss.toFixed(4)}` : "";
    const epoch = p.epoch ? `, epoch ${p.epoch}/${p.epochs}` : "";
    $("train-status").textContent = run.state === "queued" ? "waiting in the queue…"
      : `${run.state}: step ${p.step}/${p.total}${epoch}${loss}`
        + (run.state === "running" ? `, ETA ${p.eta_s.toFixed(0)} s` : "");
    $("train-files").replaceChildren(...run.saved.map((name) => element("li", {text: name})));
    showSamples(run.samples);
    if (!["queued", "running"].includes(run.state)) {
      if (run.error) $("train-error").textContent = run.error;
      return run;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function start() {
  $("train-error").textContent = "";
  $("train-start").disabled = true;
  try {
    const job = await bw("train/lora", options());
    current = job.id;
    $("train-interrupt").disabled = false;
    $("grid-generate").disabled = true;
    const run = await follow(job.id);
    lastRun = job.id;
    $("grid-generate").disabled = run.saved.length === 0;
    if (!$("grid-prompt").value) {
      $("grid-prompt").value = $("train-prompts").value.split("\n")[0].split(" --")[0].trim();
    }
  } catch (error) {
    $("train-error").textContent = error.message;
  } finally {
    current = null;
    $("train-start").disabled = false;
    $("train-interrupt").disabled = true;
  }
}

async function loadChoices() {
  const [found, models, settings] = await Promise.all([bw("datasets"), sd("sd-models"),
    sd("options")]);
  fill($("train-dataset"), found.datasets.map((d) => d.name));
  fill($("train-base"), models.map((m) => m.title), settings.sd_model_checkpoint);
  const describe = () => {
    const chosen = found.datasets.find((d) => d.name === $("train-dataset").value);
    $("train-dataset-info").textContent = chosen
      ? chosen.subsets.map((s) => `${s.folder}: ${s.images} images x ${s.repeats ?? "?"} repeats`)
        .join("; ") : `no dataset folders in ${found.datasets_dir}`;
  };
  $("train-dataset").onchange = () => { describe(); checkPlan(); };
  describe();
  checkPlan();
}

async function drawGrid() {
  $("grid-error").textContent = "";
  $("grid-generate").disabled = true;
  try {
    const body = {...requestBody("txt2img"), prompt: $("grid-prompt").value,
      strengths: $("grid-strengths").value};
    const reply = await followProgress("grid", () => bw(`train/${lastRun}/grid`, body));
    showGrid("grid", reply);
    $("grid-progress").value = 1;
  } catch (error) {
    $("grid-error").textContent = error.message;
  } finally {
    $("grid-generate").disabled = false;
  }
}

export function setUpTraining() {
  build();
  $("grid-generate").addEventListener("click", drawGrid);
  $("train-start").addEventListener("click", start);
  $("train-interrupt").addEventListener("click", () => current && bw(`jobs/${current}/cancel`, {}));
  $("tab-train").addEventListener("input", (event) => {
    if (event.target.closest(".form")) checkPlan();
  });
  on("tab", (name) => { if (name === "train") loadChoices().catch((error) => {
    $("train-error").textContent = error.message;
  }); });
}
