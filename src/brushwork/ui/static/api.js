// Talking to the server: A1111's /sdapi/v1 and brushwork's /brushwork/v1 (same origin, so a
// browser that passed basic auth for the page sends it with every call).
export const $ = (id) => document.getElementById(id);

async function request(url, body, method) {
  const init = body === undefined ? {method: method || "GET"} : {
    method: method || "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  };
  const reply = await fetch(url, init);
  const text = await reply.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (error) { data = text; }
  if (!reply.ok) {
    const detail = data && (data.detail !== undefined ? data.detail : data);
    const message = typeof detail === "string" ? detail : JSON.stringify(detail);
    const retry = reply.headers.get("Retry-After");
    throw new Error(retry ? `${message} (retry in ${retry} s)` : message);
  }
  return data;
}

export const sd = (path, body) => request("/sdapi/v1/" + path, body);
export const bw = (path, body) => request("/brushwork/v1/" + path, body);

export function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

export function fill(select, items, chosen) {
  select.replaceChildren(...items.map((item) => {
    const [value, label] = Array.isArray(item) ? item : [item, item];
    return element("option", {value, text: label, selected: value === chosen});
  }));
}

export function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export async function urlToDataUrl(url) {
  const reply = await fetch(url);
  if (!reply.ok) throw new Error(`${url}: ${reply.status}`);
  return readAsDataUrl(await reply.blob());
}

export function loadImage(source) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("not a readable image"));
    image.src = source;
  });
}

// A tiny event bus between the tabs ("send to img2img" and friends).
const listeners = {};
export function on(name, handler) { (listeners[name] ||= []).push(handler); }
export function emit(name, detail) { for (const handler of listeners[name] || []) handler(detail); }

export function showTab(name) {
  for (const button of document.querySelectorAll("#tabs [data-tab]")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const section of document.querySelectorAll("main > .tab")) {
    section.hidden = section.id !== "tab-" + name;
  }
  emit("tab", name);
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}
