// The txt2img and img2img tabs: one form builder, the request body, live progress with the
// preview image, results with their infotext, seed dice and recycle, hires fix.
import {$, sd, element, fill, emit, on, showTab} from "./api.js";
import {networksPanel} from "./networks.js";
import {initAndMask} from "./inpaint.js";

const PROGRESS_MS = 300;

function field(mode, name, label, attributes) {
  return element("label", {}, [label, element("input", {id: `${mode}-${name}`, ...attributes})]);
}

function number(mode, name, label, value, extra = {}) {
  return field(mode, name, label, {type: "number", value, ...extra});
}

function hiresFields(mode) {
  return element("details", {id: `${mode}-hires`}, [
    element("summary", {}, [element("label", {class: "inline"}, [
      element("input", {id: `${mode}-enable-hr`, type: "checkbox"}), "Hires. fix"])]),
    element("div", {class: "row"}, [
      element("label", {}, ["Upscaler", element("select", {id: `${mode}-hr-upscaler`})]),
      number(mode, "hr-scale", "Upscale by", 2, {min: 1, max: 8, step: 0.05}),
      number(mode, "hr-steps", "Hires steps", 0, {min: 0, max: 1000}),
    ]),
    element("div", {class: "row"}, [
      number(mode, "hr-denoise", "Denoising strength", 0.7, {min: 0, max: 1, step: 0.01}),
      number(mode, "hr-resize-x", "Resize width to", 0, {min: 0, step: 8}),
      number(mode, "hr-resize-y", "Resize height to", 0, {min: 0, step: 8}),
    ]),
  ]);
}

function img2imgFields(mode) {
  const select = (name, label, options) => element("label", {}, [label, element("select",
    {id: `${mode}-${name}`}, options.map(([value, text]) => element("option", {value, text})))]);
  return element("div", {}, [
    element("div", {class: "row"}, [
      number(mode, "denoise", "Denoising strength", 0.75, {min: 0, max: 1, step: 0.01}),
      select("resize-mode", "Resize mode", [["0", "Just resize"], ["1", "Crop and resize"],
        ["2", "Resize and fill"], ["3", "Just resize (latent upscale)"]]),
    ]),
    element("div", {class: "row"}, [
      number(mode, "mask-blur", "Mask blur", 4, {min: 0, max: 64}),
      select("fill", "Masked content", [["1", "original"], ["0", "fill"],
        ["2", "latent noise"], ["3", "latent nothing"]]),
      element("label", {class: "inline"}, [element("input",
        {id: `${mode}-full-res`, type: "checkbox"}), "Only masked"]),
      number(mode, "padding", "Only masked padding", 32, {min: 0, max: 256}),
    ]),
  ]);
}

function buildForm(mode) {
  const section = $(`tab-${mode}`);
  const form = element("div", {class: "panel form"}, [
    element("label", {}, ["Prompt", element("textarea", {id: `${mode}-prompt`, rows: 3})]),
    element("label", {}, ["Negative prompt",
      element("textarea", {id: `${mode}-negative`, rows: 2})]),
    element("div", {class: "row"}, [
      element("label", {}, ["Sampler", element("select", {id: `${mode}-sampler`})]),
      element("label", {}, ["Schedule type", element("select", {id: `${mode}-scheduler`})]),
    ]),
    element("div", {class: "row"}, [
      number(mode, "steps", "Steps", 20, {min: 1, max: 1000}),
      number(mode, "cfg", "CFG scale", 7, {min: 0, max: 30, step: 0.5}),
    ]),
    element("div", {class: "row"}, [
      number(mode, "width", "Width", 512, {min: 64, max: 8192, step: 8}),
      number(mode, "height", "Height", 512, {min: 64, max: 8192, step: 8}),
      number(mode, "n-iter", "Batch count", 1, {min: 1, max: 100}),
      number(mode, "batch", "Batch size", 1, {min: 1, max: 64}),
    ]),
    element("div", {class: "row seed"}, [
      number(mode, "seed", "Seed", -1, {min: -1}),
      element("button", {id: `${mode}-seed-random`, type: "button", title: "Random seed (-1)",
        text: "⚄", onclick: () => { $(`${mode}-seed`).value = "-1"; }}),
      element("button", {id: `${mode}-seed-reuse`, type: "button",
        title: "Reuse the seed of the last image", text: "♻", onclick: () => reuseSeed(mode)}),
    ]),
    mode === "txt2img" ? hiresFields(mode) : img2imgFields(mode),
    element("div", {class: "row"}, [
      element("button", {id: `${mode}-generate`, type: "button", class: "primary",
        text: "Generate", onclick: () => generate(mode)}),
      element("button", {id: `${mode}-skip`, type: "button", text: "Skip",
        onclick: () => sd("skip", {})}),
      element("button", {id: `${mode}-interrupt`, type: "button", text: "Interrupt",
        onclick: () => sd("interrupt", {})}),
      element("button", {id: `${mode}-networks-toggle`, type: "button", text: "Extra networks",
        onclick: () => { $(`${mode}-networks`).hidden = !$(`${mode}-networks`).hidden; }}),
    ]),
    element("div", {id: `${mode}-networks`, class: "networks", hidden: true}),
  ]);
  const output = element("div", {class: "panel output"}, [
    element("progress", {id: `${mode}-progress`, max: 1, value: 0}),
    element("div", {id: `${mode}-progress-text`, role: "status"}),
    element("img", {id: `${mode}-preview`, class: "preview", alt: "live preview", hidden: true}),
    element("div", {id: `${mode}-error`, role: "alert", class: "error"}),
    element("div", {id: `${mode}-images`, class: "thumbs"}),
    element("pre", {id: `${mode}-infotext`}),
    element("div", {class: "row"}, [
      element("button", {id: `${mode}-to-img2img`, type: "button", text: "Send to img2img",
        disabled: true, onclick: () => sendSelected(mode, "img2img")}),
      element("button", {id: `${mode}-to-txt2img`, type: "button", text: "Send to txt2img",
        disabled: true, onclick: () => sendSelected(mode, "txt2img")}),
    ]),
  ]);
  section.append(element("div", {class: "split"}, [form, output]));
  networksPanel($(`${mode}-networks`), () => $(`${mode}-prompt`));
}

const lastResult = {};

function reuseSeed(mode) {
  const result = lastResult[mode];
  if (result) $(`${mode}-seed`).value = String(result.seeds[result.selected] ?? result.seeds[0]);
}

function value(mode, name) { return $(`${mode}-${name}`).value; }
function num(mode, name) { return Number(value(mode, name)); }

export function requestBody(mode) {
  const body = {
    prompt: value(mode, "prompt"), negative_prompt: value(mode, "negative"),
    sampler_name: value(mode, "sampler"), scheduler: value(mode, "scheduler"),
    steps: num(mode, "steps"), cfg_scale: num(mode, "cfg"), seed: num(mode, "seed"),
    width: num(mode, "width"), height: num(mode, "height"),
    n_iter: num(mode, "n-iter"), batch_size: num(mode, "batch"),
  };
  if (mode === "txt2img" && $(`${mode}-enable-hr`).checked) {
    Object.assign(body, {
      enable_hr: true, hr_upscaler: value(mode, "hr-upscaler"), hr_scale: num(mode, "hr-scale"),
      hr_second_pass_steps: num(mode, "hr-steps"), denoising_strength: num(mode, "hr-denoise"),
      hr_resize_x: num(mode, "hr-resize-x"), hr_resize_y: num(mode, "hr-resize-y"),
    });
  }
  if (mode === "img2img") {
    const {init, mask} = initAndMask();
    if (!init) throw new Error("img2img needs an init image: choose, drop or send one");
    Object.assign(body, {
      init_images: [init], denoising_strength: num(mode, "denoise"),
      resize_mode: num(mode, "resize-mode"), mask_blur: num(mode, "mask-blur"),
      inpainting_fill: num(mode, "fill"), inpaint_full_res: $(`${mode}-full-res`).checked,
      inpaint_full_res_padding: num(mode, "padding"),
    });
    if (mask) body.mask = mask;
  }
  return body;
}

async function poll(mode) {
  try {
    const p = await sd("progress");
    const s = p.state;
    $(`${mode}-progress`).value = p.progress;
    const batch = s.job_no !== undefined && p.textinfo && p.textinfo.startsWith("batch")
      ? `, ${p.textinfo.split(",")[0]}` : "";
    $(`${mode}-progress-text`).textContent = s.sampling_steps
      ? `step ${s.sampling_step}/${s.sampling_steps}${batch}, ETA ${p.eta_relative.toFixed(1)} s`
      : (s.job_count ? "waiting in the queue…" : "");
    if (p.current_image) {
      const preview = $(`${mode}-preview`);
      preview.src = "data:image/png;base64," + p.current_image;
      preview.hidden = false;
    }
  } catch (error) { /* the next poll tries again */ }
}

export function showResult(mode, reply) {
  const info = JSON.parse(reply.info);
  const first = info.index_of_first_image || 0;
  const images = reply.images.slice(first);
  lastResult[mode] = {info, images, seeds: info.all_seeds, selected: 0};
  const select = (index) => {
    lastResult[mode].selected = index;
    $(`${mode}-infotext`).textContent = info.infotexts[index] || "";
    for (const [i, img] of [...$(`${mode}-images`).children].entries()) {
      img.classList.toggle("selected", i === index);
    }
  };
  $(`${mode}-images`).replaceChildren(...images.map((b64, i) => element("img", {
    src: "data:image/png;base64," + b64, alt: `image ${i + 1}`, "data-index": String(i),
    onclick: () => select(i),
  })));
  select(0);
  $(`${mode}-to-img2img`).disabled = $(`${mode}-to-txt2img`).disabled = images.length === 0;
}

function sendSelected(mode, target) {
  const result = lastResult[mode];
  if (!result) return;
  const index = result.selected;
  emit("send", {target, image: "data:image/png;base64," + result.images[index],
                infotext: result.info.infotexts[index]});
}

async function generate(mode) {
  $(`${mode}-error`).textContent = "";
  $(`${mode}-generate`).disabled = true;
  $(`${mode}-progress`).value = 0;
  $(`${mode}-preview`).hidden = true;
  const timer = setInterval(() => poll(mode), PROGRESS_MS);
  try {
    const reply = await sd(mode, requestBody(mode));
    showResult(mode, reply);
    $(`${mode}-progress`).value = 1;
    $(`${mode}-progress-text`).textContent = JSON.parse(reply.info).interrupted
      ? "interrupted" : "done";
    emit("generated", mode);
  } catch (error) {
    $(`${mode}-error`).textContent = error.message;
  } finally {
    clearInterval(timer);
    $(`${mode}-preview`).hidden = true;
    $(`${mode}-generate`).disabled = false;
  }
}

// infotext parameters (as /sdapi/v1/png-info parses them) -> the form of a tab
export function applyParameters(mode, parameters) {
  const set = (name, key) => {
    if (parameters[key] !== undefined && $(`${mode}-${name}`)) {
      $(`${mode}-${name}`).value = String(parameters[key]);
    }
  };
  set("prompt", "Prompt"); set("negative", "Negative prompt"); set("steps", "Steps");
  set("cfg", "CFG scale"); set("seed", "Seed"); set("width", "Size-1"); set("height", "Size-2");
  set("sampler", "Sampler");
  if (parameters["Schedule type"]) set("scheduler", "Schedule type");
  if (mode === "img2img") set("denoise", "Denoising strength");
  if (mode === "txt2img" && parameters["Hires upscale"] !== undefined) {
    $(`${mode}-enable-hr`).checked = true;
    set("hr-scale", "Hires upscale"); set("hr-steps", "Hires steps");
    set("hr-upscaler", "Hires upscaler"); set("hr-denoise", "Denoising strength");
  }
}

export async function loadChoices() {
  const [samplers, schedulers, upscalers, latent] = await Promise.all([
    sd("samplers"), sd("schedulers"), sd("upscalers"), sd("latent-upscale-modes"),
  ]);
  for (const mode of ["txt2img", "img2img"]) {
    fill($(`${mode}-sampler`), samplers.map((s) => s.name), "DPM++ 2M");
    fill($(`${mode}-scheduler`), schedulers.map((s) => s.label), "Automatic");
  }
  const names = [...latent.map((m) => m.name), ...upscalers.map((u) => u.name)
    .filter((n) => n !== "None")];
  fill($("txt2img-hr-upscaler"), names, "Latent");
}

export function setUpGeneration() {
  buildForm("txt2img");
  buildForm("img2img");
  on("send", async ({target, image, infotext}) => {
    const parsed = infotext ? (await sd("png-info", {image})).parameters : {};
    applyParameters(target, parsed);
    if (target === "img2img") emit("init-image", image);
    showTab(target);
  });
}
