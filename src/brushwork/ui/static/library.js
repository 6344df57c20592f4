// The library tab: every model file with kind, base family, format, size, hashes, trigger
// words and problems; hash a file, convert a pickle to safetensors; the health check.
import {$, sd, bw, element, emit, on} from "./api.js";

let entries = [];

function size(bytes) {
  if (bytes === null || bytes === undefined) return "?";
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

async function act(button, work) {
  button.disabled = true;
  $("library-status").textContent = "";
  try {
    await work();
  } catch (error) {
    $("library-status").textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

function hashCell(entry) {
  if (entry.sha256) {
    return element("td", {title: `sha256 ${entry.sha256}`},
      [element("code", {text: entry.short_hash || entry.autov2})]);
  }
  const button = element("button", {type: "button", text: "Hash"});
  button.addEventListener("click", () => act(button, async () => {
    const hashed = await bw(`library/${entry.id}/hash`, {});
    entries = entries.map((e) => (e.id === hashed.id ? hashed : e));
    render();
  }));
  return element("td", {}, [button]);
}

function actionsCell(entry) {
  if (entry.format !== "pickle" || entry.kind === "hypernetwork") return element("td");
  const button = element("button", {type: "button", text: "Convert to safetensors"});
  button.addEventListener("click", () => act(button, async () => {
    const done = await bw(`library/${entry.id}/convert`, {half: false, prune: false});
    $("library-status").textContent = `wrote ${done.target}`;
    await loadLibrary(true);
  }));
  return element("td", {}, [button]);
}

function row(entry) {
  const thumb = entry.preview ? element("img", {src: entry.preview, alt: "", class: "mini"}) : "";
  return element("tr", {"data-id": entry.id, class: entry.problems.length ? "has-problems" : ""}, [
    element("td", {}, [thumb]),
    element("td", {title: entry.path, text: entry.name}),
    element("td", {text: entry.kind}),
    element("td", {text: entry.base || ""}),
    element("td", {text: entry.format || ""}),
    element("td", {text: size(entry.size)}),
    hashCell(entry),
    element("td", {text: entry.trigger_words.join(", ")}),
    element("td", {class: "problems", text: entry.problems.join("; ")}),
    actionsCell(entry),
  ]);
}

function render() {
  const kind = $("library-kind").value;
  const wanted = $("library-search").value.trim().toLowerCase();
  const shown = entries.filter((e) => (!kind || e.kind === kind)
    && (!wanted || e.name.toLowerCase().includes(wanted)
        || (e.path || "").toLowerCase().includes(wanted)));
  $("library-table").tBodies[0].replaceChildren(...shown.map(row));
  $("library-status").textContent ||= `${shown.length} of ${entries.length} files`;
}

async function loadProblems() {
  const report = await bw("library/problems");
  $("library-problems").replaceChildren(...(report.findings.length
    ? report.findings.map((f) => element("li", {text: `${f.category}: ${f.message} — ${f.paths.join(", ")}`}))
    : [element("li", {text: `${report.checked} files, no problems found`})]));
}

export async function loadLibrary(rescan = false) {
  if (rescan) await sd("refresh-checkpoints", {});
  entries = await bw("library");
  $("library-status").textContent = "";
  render();
  await loadProblems();
  if (rescan) emit("library-changed");
}

export function setUpLibrary() {
  $("library-kind").addEventListener("change", () => { $("library-status").textContent = ""; render(); });
  $("library-search").addEventListener("input", () => { $("library-status").textContent = ""; render(); });
  $("library-refresh").addEventListener("click", () => loadLibrary(true));
  on("tab", (name) => { if (name === "library") loadLibrary().catch((error) => {
    $("library-status").textContent = error.message;
  }); });
}
