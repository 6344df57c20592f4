"use strict";
// brushwork web UI: plain JS over the A1111-compatible API (/sdapi/v1).
const $ = (id) => document.getElementById(id);
const api = (path) => "/sdapi/v1/" + path;

async function call(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const reply = await fetch(api(path), init);
  const text = await reply.text();
  const data = text ? JSON.parse(text) : null;
  if (!reply.ok) {
    const detail = data && data.detail;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail || data));
  }
  return data;
}

function fill(select, items, chosen) {
  select.replaceChildren(...items.map((item) => {
    const option = document.createElement("option");
    option.value = option.textContent = item;
    option.selected = item === chosen;
    return option;
  }));
}

async function loadLists() {
  const [models, options, samplers, schedulers] = await Promise.all([
    call("sd-models"), call("options"), call("samplers"), call("schedulers"),
  ]);
  fill($("model"), models.map((m) => m.title), options.sd_model_checkpoint);
  fill($("sampler"), samplers.map((s) => s.name), "Euler a");
  fill($("scheduler"), schedulers.map((s) => s.label), "Automatic");
}

async function chooseModel() {
  $("model-status").textContent = "loading…";
  try {
    await call("options", {sd_model_checkpoint: $("model").value});
    $("model-status").textContent = "";
  } catch (error) {
    $("model-status").textContent = error.message;
  }
}

let polling = null;
async function poll() {
  try {
    const p = await call("progress");
    $("progress").value = p.progress;
    const s = p.state;
    $("progress-text").textContent = s.sampling_steps
      ? `step ${s.sampling_step}/${s.sampling_steps}, ETA ${p.eta_relative.toFixed(1)} s`
      : (s.job_count ? "waiting…" : "");
  } catch (error) { /* the next poll tries again */ }
}

function showImages(reply) {
  const info = JSON.parse(reply.info);
  const first = info.index_of_first_image || 0;
  $("gallery").replaceChildren(...reply.images.slice(first).map((b64, i) => {
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + b64;
    img.alt = `image ${i + 1}`;
    img.dataset.index = String(i);
    img.addEventListener("click", () => { $("infotext").textContent = info.infotexts[i]; });
    return img;
  }));
  $("infotext").textContent = info.infotexts[0] || "";
}

async function generate() {
  $("error").textContent = "";
  $("generate").disabled = true;
  $("progress").value = 0;
  polling = setInterval(poll, 250);
  try {
    const reply = await call("txt2img", {
      prompt: $("prompt").value, negative_prompt: $("negative").value,
      sampler_name: $("sampler").value, scheduler: $("scheduler").value,
      steps: Number($("steps").value), cfg_scale: Number($("cfg").value),
      seed: Number($("seed").value), width: Number($("width").value),
      height: Number($("height").value), batch_size: Number($("batch").value),
    });
    showImages(reply);
    $("progress").value = 1;
    $("progress-text").textContent = "done";
  } catch (error) {
    $("error").textContent = error.message;
  } finally {
    clearInterval(polling);
    $("generate").disabled = false;
  }
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function pngInfo(file) {
  try {
    const reply = await call("png-info", {image: await readAsDataUrl(file)});
    $("png-text").textContent = reply.info || "(no generation parameters in this image)";
  } catch (error) {
    $("png-text").textContent = error.message;
  }
}

function setUp() {
  $("generate").addEventListener("click", generate);
  $("interrupt").addEventListener("click", () => call("interrupt", {}));
  $("model").addEventListener("change", chooseModel);
  $("png-file").addEventListener("change", (e) => e.target.files[0] && pngInfo(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) pngInfo(e.dataTransfer.files[0]);
  });
  loadLists().catch((error) => { $("error").textContent = error.message; });
}

setUp();
