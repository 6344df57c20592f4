// brushwork web UI: plain ES modules over the HTTP API (no build step).
import {$, sd, fill, showTab, on, emit} from "./api.js";
import {setUpGeneration, loadChoices} from "./generate.js";
import {setUpInpaint} from "./inpaint.js";
import {loadNetworks, setUpNetworks} from "./networks.js";
import {setUpGallery} from "./gallery.js";
import {setUpLibrary} from "./library.js";
import {setUpTraining} from "./train.js";
import {setUpXyz} from "./xyz.js";

async function loadModels() {
  const [models, vaes, options] = await Promise.all([sd("sd-models"), sd("sd-vae"),
    sd("options")]);
  fill($("model"), models.map((m) => m.title), options.sd_model_checkpoint);
  fill($("vae"), ["Automatic", "None", ...vaes.map((v) => v.model_name)], options.sd_vae);
}

async function setOption(values) {
  $("model-status").textContent = "loading…";
  try {
    await sd("options", values);
    $("model-status").textContent = "";
    emit("model-changed");
  } catch (error) {
    $("model-status").textContent = error.message;
  }
}

async function refresh() {
  await sd("refresh-checkpoints", {});
  await loadModels();
  emit("library-changed");
}

function setUp() {
  setUpGeneration();
  setUpInpaint();
  setUpNetworks();
  setUpGallery();
  setUpLibrary();
  setUpTraining();
  setUpXyz();
  for (const button of document.querySelectorAll("#tabs [data-tab]")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("model").addEventListener("change", () => setOption({sd_model_checkpoint: $("model").value}));
  $("vae").addEventListener("change", () => setOption({sd_vae: $("vae").value}));
  $("refresh-models").addEventListener("click", () => refresh().catch((error) => {
    $("model-status").textContent = error.message;
  }));
  on("library-changed", () => loadModels().catch(() => {}));
  const failed = (error) => { $("txt2img-error").textContent = error.message; };
  Promise.all([loadModels(), loadChoices(), loadNetworks()]).then(() => {
    document.body.dataset.ready = "true";
  }, failed);
}

setUp();
