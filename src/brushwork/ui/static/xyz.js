// The X/Y/Z plot tab: A1111's script, drawn with the txt2img tab's settings. Up to three axes
// (type + values as A1111 writes them: "10,20,30", "1-10 (+2)", "5-9 [3]"); the grid comes
// back with every cell's infotext recorded in it.
import {$, sd, bw, element, fill, on} from "./api.js";
import {requestBody} from "./generate.js";

const PROGRESS_MS = 300;
let built = false;

function axisRow(axis, types) {
  const select = element("select", {id: `xyz-${axis}-type`});
  fill(select, [["", "Nothing"], ...types.map((t) => [t.key, t.label])], "");
  return element("div", {class: "row"}, [
    element("label", {}, [`${axis.toUpperCase()} type`, select]),
    element("label", {class: "grow"}, [`${axis.toUpperCase()} values`,
      element("input", {id: `xyz-${axis}-values`, type: "text"})]),
  ]);
}

function build(types) {
  $("xyz-form").append(element("div", {class: "split"}, [
    element("div", {class: "panel form"}, [
      element("p", {class: "hint", text: "Every cell is the txt2img tab's request with the "
        + "axis values applied (prompt, sampler, steps, CFG, seed, size...)."}),
      ...["x", "y", "z"].map((axis) => axisRow(axis, types)),
      element("div", {class: "row"}, [
        element("label", {}, ["Grid margin (px)",
          element("input", {id: "xyz-margin", type: "number", value: 0, min: 0, max: 256})]),
        element("label", {class: "inline"}, [
          element("input", {id: "xyz-legend", type: "checkbox", checked: true}), "Draw legend"]),
      ]),
      element("div", {class: "row"}, [
        element("button", {id: "xyz-generate", type: "button", class: "primary", text: "Draw grid",
          onclick: draw}),
        element("button", {type: "button", text: "Interrupt", onclick: () => sd("interrupt", {})}),
      ]),
      element("div", {id: "xyz-error", role: "alert", class: "error"}),
    ]),
    element("div", {class: "panel output"}, [
      element("progress", {id: "xyz-progress", max: 1, value: 0}),
      element("div", {id: "xyz-progress-text", role: "status"}),
      element("div", {id: "xyz-images", class: "thumbs"}),
      element("pre", {id: "xyz-infotext"}),
    ]),
  ]));
}

export function showGrid(target, reply) {
  const info = JSON.parse(reply.info);
  $(`${target}-images`).replaceChildren(...reply.images.map((b64, i) => element("img", {
    src: "data:image/png;base64," + b64, alt: i ? `grid ${i}` : "grid", class: "grid"})));
  $(`${target}-infotext`).textContent = `${info.drawn} of ${info.cells} cells`
    + (info.interrupted ? " (interrupted)" : "") + (info.saved.length ? `\nsaved ${info.saved[0]}` : "");
  return info;
}

export async function followProgress(target, work) {
  const timer = setInterval(async () => {
    try {
      const p = await sd("progress?skip_current_image=true");
      $(`${target}-progress`).value = p.progress;
      $(`${target}-progress-text`).textContent = p.textinfo || "";
    } catch (error) { /* the next poll tries again */ }
  }, PROGRESS_MS);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}

async function draw() {
  $("xyz-error").textContent = "";
  $("xyz-generate").disabled = true;
  try {
    const body = requestBody("txt2img");
    for (const axis of ["x", "y", "z"]) {
      body[`${axis}_type`] = $(`xyz-${axis}-type`).value || null;
      body[`${axis}_values`] = $(`xyz-${axis}-values`).value;
    }
    body.margin = Number($("xyz-margin").value);
    body.draw_legend = $("xyz-legend").checked;
    const reply = await followProgress("xyz", () => bw("xyz", body));
    showGrid("xyz", reply);
    $("xyz-progress").value = 1;
  } catch (error) {
    $("xyz-error").textContent = error.message;
  } finally {
    $("xyz-generate").disabled = false;
  }
}

async function load() {
  if (built) return;
  try {
    const types = await bw("xyz/axes");
    build(types);
    built = true;
    $("xyz-status").textContent = "";
  } catch (error) {
    $("xyz-status").textContent = `The X/Y/Z plot is not available on this server (${error.message}).`;
  }
}

export function setUpXyz() {
  on("tab", (name) => { if (name === "xyz") load(); });
}
