// Gallery (the images this server's job record lists, newest first) and PNG Info (drop an
// image, read its parameters, send them on).
import {$, sd, bw, element, emit, on, readAsDataUrl, urlToDataUrl} from "./api.js";

let selected = null;

async function loadGallery() {
  const items = await bw("gallery?limit=60");
  $("gallery-count").textContent = `${items.length} images`;
  $("gallery-grid").replaceChildren(...items.map((item) => element("img", {
    src: item.url, alt: item.name, loading: "lazy", title: item.name,
    onclick: (event) => choose(item, event.target),
  })));
}

function choose(item, img) {
  selected = item;
  for (const other of $("gallery-grid").children) other.classList.toggle("selected", other === img);
  $("gallery-selected").src = item.url;
  $("gallery-selected").hidden = false;
  $("gallery-infotext").textContent = item.infotext || "(no parameters in this image)";
  $("gallery-to-img2img").disabled = $("gallery-to-txt2img").disabled = false;
}

async function sendGallery(target) {
  if (!selected) return;
  emit("send", {target, image: await urlToDataUrl(selected.url), infotext: selected.infotext});
}

let pngImage = null;

async function readPng(file) {
  try {
    pngImage = await readAsDataUrl(file);
    $("png-image").src = pngImage;
    $("png-image").hidden = false;
    const reply = await sd("png-info", {image: pngImage});
    $("png-text").textContent = reply.info || "(no generation parameters in this image)";
    $("png-to-txt2img").disabled = $("png-to-img2img").disabled = !reply.info;
  } catch (error) {
    $("png-text").textContent = error.message;
  }
}

export function setUpGallery() {
  $("gallery-refresh").addEventListener("click", () => loadGallery());
  $("gallery-to-img2img").addEventListener("click", () => sendGallery("img2img"));
  $("gallery-to-txt2img").addEventListener("click", () => sendGallery("txt2img"));
  on("tab", (name) => { if (name === "gallery") loadGallery(); });
  $("png-file").addEventListener("change", (e) => e.target.files[0] && readPng(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) readPng(e.dataTransfer.files[0]);
  });
  for (const target of ["txt2img", "img2img"]) {
    $(`png-to-${target}`).addEventListener("click", () => pngImage && emit("send",
      {target, image: pngImage, infotext: $("png-text").textContent}));
  }
}
