// The extra-networks panel: cards for LoRA, embeddings and hypernetworks from the library
// (preview sidecar, name, base family, trigger words). A click puts the network into the
// prompt as A1111 does: <lora:name:weight> plus its activation text, an embedding's name,
// <hypernet:name:1>; a trigger word chip adds just that word.
import {bw, element, on} from "./api.js";

const KINDS = [["lora", "Lora"], ["embedding", "Textual Inversion"],
  ["hypernetwork", "Hypernetworks"]];
let entries = null;
const panels = [];

export async function loadNetworks() {
  entries = await bw("library");
  for (const render of panels) render();
}

export function insertIntoPrompt(textarea, text) {
  const current = textarea.value.replace(/\s+$/, "");
  textarea.value = current ? `${current} ${text}` : text;
  textarea.dispatchEvent(new Event("input", {bubbles: true}));
}

function tagFor(entry) {
  if (entry.kind === "lora") {
    const tag = `<lora:${entry.name}:${entry.preferred_weight || 1}>`;
    return entry.activation_text ? `${tag} ${entry.activation_text}` : tag;
  }
  if (entry.kind === "hypernetwork") return `<hypernet:${entry.name}:1>`;
  return entry.name;
}

function card(entry, prompt) {
  const picture = entry.preview
    ? element("img", {src: entry.preview, alt: "", loading: "lazy"})
    : element("div", {class: "no-preview", text: entry.kind});
  const triggers = entry.trigger_words
    .filter((word) => word !== entry.name || entry.kind !== "embedding")
    .map((word) => element("button", {type: "button", class: "chip", text: word,
      title: "Add this trigger word", onclick: (event) => {
        event.stopPropagation();
        insertIntoPrompt(prompt(), word);
      }}));
  return element("div", {
    class: "card", role: "button", tabindex: "0", "data-name": entry.name,
    title: entry.description || entry.path,
    onclick: () => insertIntoPrompt(prompt(), tagFor(entry)),
    onkeydown: (event) => { if (event.key === "Enter") insertIntoPrompt(prompt(), tagFor(entry)); },
  }, [
    picture,
    element("div", {class: "card-name", text: entry.name}),
    element("div", {class: "card-base", text: entry.base || "unknown base"}),
    element("div", {class: "chips"}, triggers),
  ]);
}

export function networksPanel(container, prompt) {
  let kind = "lora";
  const tabs = element("div", {class: "row subtabs"});
  const search = element("input", {type: "search", placeholder: "Search", class: "grow"});
  const cards = element("div", {class: "cards"});
  const render = () => {
    tabs.replaceChildren(...KINDS.map(([value, label]) => element("button", {
      type: "button", text: label, "aria-pressed": String(value === kind), "data-kind": value,
      onclick: () => { kind = value; render(); },
    })));
    if (entries === null) {
      cards.replaceChildren(element("p", {class: "hint", text: "loading…"}));
      return;
    }
    const wanted = search.value.trim().toLowerCase();
    const shown = entries.filter((e) => e.kind === kind
      && (!wanted || e.name.toLowerCase().includes(wanted)));
    cards.replaceChildren(...(shown.length ? shown.map((e) => card(e, prompt))
      : [element("p", {class: "hint", text: "none in the library"})]));
  };
  search.addEventListener("input", render);
  container.append(element("div", {class: "row"}, [tabs, search,
    element("button", {type: "button", text: "↻", title: "Rescan", onclick: loadNetworks})]),
  cards);
  panels.push(render);
  render();
}

export function setUpNetworks() {
  on("library-changed", () => loadNetworks().catch(() => {}));
}
