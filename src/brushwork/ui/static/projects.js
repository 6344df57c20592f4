// The projects page: a project's dataset (thumbnails with tags, a tag filter, bulk edits with
// undo, the frequency table) and its versions (make, train, watch, preview, compare grids).
// It talks to /brushwork/v1/projects only.
import {$, bw, element, fill} from "./api.js";

const POLL_MS = 700;
const state = {project: null, pictures: [], selected: new Set(), version: null, versions: []};

const splitTags = (text) => text.split(",").map((t) => t.trim()).filter(Boolean);
const base = () => `projects/${encodeURIComponent(state.project)}`;

function report(error) { $("error").textContent = error ? String(error.message || error) : ""; }

async function guarded(work) {
  report(null);
  try { await work(); } catch (error) { report(error); }
}

async function loadProjects() {
  const listed = await bw("projects");
  const names = listed.projects.map((p) => p.name);
  $("empty").hidden = names.length > 0;
  fill($("project"), names, state.project && names.includes(state.project) ? state.project : names[0]);
  state.project = $("project").value || null;
  if (state.project) await loadProject();
}

async function loadProject() {
  state.selected.clear();
  const project = await bw(base());
  const dataset = project.dataset;
  $("dataset-count").textContent = `${dataset.images} pictures, ${dataset.tags} tags` +
    (project.concept ? ` · teaches ${project.concept.shape} as “${project.concept.trigger}”` : "");
  state.versions = project.versions;
  showVersions();
  await Promise.all([loadPictures(), loadFrequency()]);
}

// -- dataset ----------------------------------------------------------------------------------

async function loadPictures() {
  const query = new URLSearchParams();
  for (const tag of splitTags($("filter-tags").value)) query.append("tag", tag);
  for (const tag of splitTags($("filter-without").value)) query.append("without", tag);
  query.set("limit", "1000");
  const listed = await bw(`${base()}/dataset/images?${query}`);
  state.pictures = listed.images;
  $("pictures").replaceChildren(...listed.images.map(pictureCard));
  showSelection(listed);
}

function pictureCard(picture) {
  const card = element("div", {class: "picture", title: picture.path, tabindex: 0}, [
    element("img", {src: picture.thumbnail + "?size=192", alt: picture.path, loading: "lazy"}),
    element("div", {class: "chips"}, picture.tags.map((tag) => element("span", {
      class: "chip", text: tag, title: "show only pictures with this tag",
      onclick: (event) => { event.stopPropagation(); filterBy(tag); },
    }))),
  ]);
  card.classList.toggle("selected", state.selected.has(picture.path));
  card.addEventListener("click", () => {
    if (state.selected.has(picture.path)) state.selected.delete(picture.path);
    else state.selected.add(picture.path);
    card.classList.toggle("selected", state.selected.has(picture.path));
    showSelection();
  });
  return card;
}

function showSelection(listed) {
  const shown = listed ? `${listed.matching} of ${listed.total} shown; ` : "";
  $("selection").textContent = `${shown}${state.selected.size} selected`;
}

function filterBy(tag) {
  const tags = splitTags($("filter-tags").value);
  if (!tags.includes(tag)) tags.push(tag);
  $("filter-tags").value = tags.join(", ");
  guarded(loadPictures);
}

async function loadFrequency() {
  const table = await bw(`${base()}/dataset/tags`);
  $("frequency").replaceChildren(...table.tags.map((row) => element("tr", {}, [
    element("td", {text: row.tag, onclick: () => filterBy(row.tag)}),
    element("td", {text: String(row.images)}),
    element("td", {text: `${(row.share * 100).toFixed(0)}%`}),
  ])));
}

function editBody(dryRun) {
  const action = $("edit-action").value;
  const text = $("edit-tags").value;
  const tags = action === "replace" ? text.split("\n").map((t) => t.trim()).slice(0, 2)
    : ["dedupe", "sort"].includes(action) ? [] : splitTags(text);
  const body = {action, tags, front: $("edit-front").checked, pattern: $("edit-pattern").checked,
    order: $("edit-order").value, dry_run: dryRun};
  const scope = $("edit-scope").value;
  if (scope === "selection") {
    if (!state.selected.size) throw new Error("select pictures first (click them), or pick another scope");
    body.images = [...state.selected];
  } else if (scope === "shown") {
    body.images = state.pictures.map((p) => p.path);
  }
  return body;
}

async function editTags(dryRun) {
  const result = await bw(`${base()}/dataset/tags`, editBody(dryRun));
  const lines = result.changes.map((c) => `${c.image}: ${(c.before || "(new)").trim()} → ${c.after.trim()}`);
  const verb = dryRun ? "would change" : "changed";
  if (!dryRun) await Promise.all([loadPictures(), loadFrequency()]);
  $("edit-result").textContent = `${result.action}: ${result.changes.length} captions ${verb}\n` + lines.join("\n");
}

async function undoTags() {
  const result = await bw(`${base()}/dataset/tags/undo`, {});
  await Promise.all([loadPictures(), loadFrequency()]);
  $("edit-result").textContent = `undid “${result.undone}”: ${result.restored.length} restored, ` +
    `${result.deleted.length} deleted; ${result.remaining_levels} earlier edits can be undone`;
}

// -- versions ---------------------------------------------------------------------------------

function showVersions() {
  $("versions").replaceChildren(...state.versions.map((version) => element("tr", {}, [
    element("td", {}, [element("button", {type: "button", text: version.name,
      onclick: () => guarded(() => openVersion(version.name))})]),
    element("td", {text: version.status + (version.error ? `: ${version.error}` : "")}),
    element("td", {text: version.steps == null ? "" : String(version.steps)}),
    element("td", {text: String(version.files.checkpoints.length)}),
    element("td", {}, [element("button", {type: "button", text: version.status === "done" ? "Train again" : "Train",
      onclick: () => guarded(() => train(version))})]),
  ])));
  fill($("new-from"), [["", "(nothing)"], ...state.versions.map((v) => [v.name, v.name])], "");
  const grids = state.versions.flatMap((v) => v.preview_urls.map((p) => [p.url, `${v.name} · ${p.file} · ${p.prompt}`]));
  fill($("compare-a"), [["", "(none)"], ...grids], $("compare-a").value);
  fill($("compare-b"), [["", "(none)"], ...grids], $("compare-b").value);
  if (!state.version && state.versions.length) openVersion(state.versions.at(-1).name).catch(report);
}

async function openVersion(name) {
  const version = await bw(`${base()}/versions/${name}`);
  state.version = name;
  $("version-name").textContent = `${name} (${version.status})`;
  $("loss-curve").hidden = !version.loss_curve_url;
  if (version.loss_curve_url) $("loss-curve").src = version.loss_curve_url + `?t=${Date.now()}`;
  $("version-grids").replaceChildren(...version.preview_urls.slice().reverse().map((p) => figure(p.url,
    `${p.file}: ${p.prompt} · weights ${p.weights.join(", ")} · seed ${p.seeds.join(", ")}`)));
}

function figure(url, caption) {
  return element("figure", {}, [element("img", {src: url, alt: caption}), element("figcaption", {text: caption})]);
}

async function train(version) {
  const force = version.status === "done";
  if (force && !confirm(`Train ${version.name} again? Its checkpoints and previews are replaced.`)) return;
  const job = await bw(`${base()}/versions/${version.name}/train`, {force});
  await watch(job, `training ${version.name}`);
  state.version = version.name;
  await loadProject();
  await openVersion(version.name);
}

async function watch(job, what) {
  const bar = $("job-progress");
  bar.hidden = false;
  for (;;) {
    const current = await bw(`jobs/${job.id}`);
    const progress = current.progress || {};
    bar.value = progress.fraction || 0;
    const loss = progress.average_loss != null ? ` · loss ${progress.average_loss.toFixed(4)}` : "";
    const epoch = progress.epoch != null ? ` · epoch ${progress.epoch}/${progress.epochs}` : "";
    $("job-status").textContent = `${what}: ${current.state} ${progress.step || 0}/${progress.total || "?"}${epoch}${loss}`;
    if (["done", "failed", "cancelled", "lost"].includes(current.state)) {
      bar.hidden = true;
      if (current.state !== "done") throw new Error(`${what} ${current.state}: ${current.error || ""}`);
      return current;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function parseOptions(text) {
  const options = {};
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    if (!line) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`not key = value: ${line}`);
    const key = line.slice(0, at).trim();
    const value = line.slice(at + 1).trim();
    try { options[key] = JSON.parse(value); } catch (error) { options[key] = value.replace(/^'|'$/g, ""); }
  }
  return options;
}

async function makeVersion() {
  const body = {options: parseOptions($("new-options").value), sample_prompts_text: $("new-prompts").value};
  if ($("new-from").value) body.from = $("new-from").value;
  const made = await bw(`${base()}/versions`, body);
  state.version = made.name;
  await loadProject();
  await openVersion(made.name);
}

async function drawPreview() {
  if (!state.version) throw new Error("open a version first");
  const seed = Number($("preview-seed").value);
  const body = {prompt: $("preview-prompt").value, weights: $("preview-weights").value,
    seeds: Number.isFinite(seed) ? [seed] : [], steps: Number($("preview-steps").value) || null};
  const job = await bw(`${base()}/versions/${state.version}/preview`, body);
  await watch(job, `preview of ${state.version}`);
  await loadProject();
  await openVersion(state.version);
}

function compare() {
  $("compare").replaceChildren(...["compare-a", "compare-b"].map((id) => $(id))
    .filter((select) => select.value)
    .map((select) => figure(select.value, select.selectedOptions[0].textContent)));
}

$("refresh").addEventListener("click", () => guarded(loadProjects));
$("project").addEventListener("change", () => guarded(async () => {
  state.project = $("project").value; state.version = null; await loadProject();
}));
$("filter-apply").addEventListener("click", () => guarded(loadPictures));
$("select-shown").addEventListener("click", () => {
  for (const picture of state.pictures) state.selected.add(picture.path);
  for (const card of $("pictures").children) card.classList.add("selected");
  showSelection();
});
$("select-none").addEventListener("click", () => {
  state.selected.clear();
  for (const card of $("pictures").children) card.classList.remove("selected");
  showSelection();
});
$("edit-dry").addEventListener("click", () => guarded(() => editTags(true)));
$("edit-apply").addEventListener("click", () => guarded(() => editTags(false)));
$("edit-undo").addEventListener("click", () => guarded(undoTags));
$("new-make").addEventListener("click", () => guarded(makeVersion));
$("preview-draw").addEventListener("click", () => guarded(drawPreview));
$("compare-a").addEventListener("change", compare);
$("compare-b").addEventListener("change", compare);
guarded(loadProjects);
