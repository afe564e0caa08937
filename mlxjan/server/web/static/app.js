// The page's entry point: its settings from the server-rendered <meta>, the three views
// (#chat, #status, #connect), and the API key dialog.

import { Api, keyStore } from "./api.js";
import { ChatView } from "./chat.js";
import { ConnectView } from "./connect.js";
import { StatusView } from "./status.js";

const VIEWS = ["chat", "status", "connect"];

export function readConfig(doc = document) {
  const meta = doc.querySelector('meta[name="mlxjan-config"]');
  const defaults = { apiPrefix: "/v1", defaultModel: "", keyRequired: false, version: "" };
  try {
    return { ...defaults, ...JSON.parse(meta?.content || "{}") };
  } catch {
    return defaults;
  }
}

function main() {
  const config = readConfig();
  const dialog = document.getElementById("key-dialog");
  const keyInput = document.getElementById("key-input");
  const keyError = document.getElementById("key-error");

  const askForKey = (wrong) => {
    keyError.hidden = !wrong;
    if (!dialog.open) {
      keyInput.value = "";
      dialog.showModal();
      keyInput.focus();
    }
  };
  const api = new Api(config.apiPrefix, (wrong) => askForKey(wrong), config.keyRequired);

  const chat = new ChatView(api, config);
  const status = new StatusView(api);
  const connect = new ConnectView(config);

  dialog.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = keyInput.value.trim();
    if (!key) return;
    keyStore.set(key);
    dialog.close();
    chat.refreshModels();
    if (currentView() === "status") status.poll();
  });
  document.getElementById("key-button").addEventListener("click", () => askForKey(false));
  document.getElementById("key-button").hidden = !config.keyRequired;
  document.getElementById("version").textContent = config.version ? `v${config.version}` : "";

  const show = () => {
    const view = currentView();
    for (const name of VIEWS) {
      document.getElementById(`view-${name}`).hidden = name !== view;
      const link = document.querySelector(`nav a[data-view="${name}"]`);
      if (name === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (view === "status") status.show();
    else status.hide();
    if (view === "connect") connect.show();
    if (view === "chat") chat.refreshModels();
    document.title = `${view[0].toUpperCase()}${view.slice(1)} · mlxjan`;
  };
  window.addEventListener("hashchange", show);

  chat.start();
  show();
  document.body.dataset.ready = "true"; // for tests and scripts: the page is wired up
}

function currentView() {
  const name = window.location.hash.slice(1);
  return VIEWS.includes(name) ? name : "chat";
}

main();
