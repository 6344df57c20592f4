// img2img's init image and the inpainting mask drawn over it. Two canvases at the image's own
// size (scaled by CSS): the image, and the mask painted in white on transparent. The mask sent
// is white-on-black at the image's size, as A1111 takes it.
import {$, on, readAsDataUrl, loadImage} from "./api.js";

let initDataUrl = null;
let painted = false;

function canvasPoint(canvas, event) {
  const box = canvas.getBoundingClientRect();
  return [
    (event.clientX - box.left) * canvas.width / box.width,
    (event.clientY - box.top) * canvas.height / box.height,
  ];
}

function brushRadius(canvas) {
  const box = canvas.getBoundingClientRect();
  return Number($("mask-brush").value) / 2 * canvas.width / Math.max(box.width, 1);
}

function paintLine(context, from, to, radius) {
  context.lineCap = context.lineJoin = "round";
  context.lineWidth = radius * 2;
  context.strokeStyle = context.fillStyle = "rgba(255, 255, 255, 1)";
  context.beginPath();
  context.moveTo(...from);
  context.lineTo(...to);
  context.stroke();
  context.beginPath();
  context.arc(...to, radius, 0, Math.PI * 2);
  context.fill();
}

function setUpDrawing() {
  const canvas = $("mask-canvas");
  const context = canvas.getContext("2d");
  let last = null;
  canvas.addEventListener("pointerdown", (event) => {
    if (!initDataUrl) return;
    canvas.setPointerCapture(event.pointerId);
    last = canvasPoint(canvas, event);
    paintLine(context, last, last, brushRadius(canvas));
    painted = true;
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const point = canvasPoint(canvas, event);
    paintLine(context, last, point, brushRadius(canvas));
    last = point;
  });
  const stop = () => { last = null; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  $("mask-clear").addEventListener("click", clearMask);
}

function clearMask() {
  const canvas = $("mask-canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  painted = false;
}

export async function setInitImage(dataUrl) {
  const image = await loadImage(dataUrl);
  for (const id of ["init-canvas", "mask-canvas"]) {
    $(id).width = image.naturalWidth;
    $(id).height = image.naturalHeight;
  }
  $("init-canvas").getContext("2d").drawImage(image, 0, 0);
  clearMask();
  initDataUrl = dataUrl;
  $("mask-stage").classList.add("loaded");
  $("img2img-width").value = String(image.naturalWidth - image.naturalWidth % 8);
  $("img2img-height").value = String(image.naturalHeight - image.naturalHeight % 8);
}

// {init, mask}: data URLs (mask null when nothing is painted: plain img2img)
export function initAndMask() {
  if (!initDataUrl || !painted) return {init: initDataUrl, mask: null};
  const source = $("mask-canvas");
  const mask = document.createElement("canvas");
  mask.width = source.width;
  mask.height = source.height;
  const context = mask.getContext("2d");
  context.fillStyle = "black";
  context.fillRect(0, 0, mask.width, mask.height);
  context.drawImage(source, 0, 0);
  return {init: initDataUrl, mask: mask.toDataURL("image/png")};
}

export function setUpInpaint() {
  setUpDrawing();
  $("img2img-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) await setInitImage(await readAsDataUrl(file));
  });
  const stage = $("img2img-source");
  stage.addEventListener("dragover", (event) => event.preventDefault());
  stage.addEventListener("drop", async (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) await setInitImage(await readAsDataUrl(file));
  });
  on("init-image", (dataUrl) => setInitImage(dataUrl));
}
