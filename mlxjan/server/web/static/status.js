// The status view: GET {prefix}/status and {prefix}/models, polled while the view is shown.

import * as format from "./format.js";
import { el } from "./ui.js";

const POLL_MS = 1500;
const $ = (id) => document.getElementById(id);

export class StatusView {
  constructor(api) {
    this.api = api;
    this.timer = null;
    this.active = false;
    this.inFlight = false;
    document.addEventListener("visibilitychange", () => this.schedule());
  }

  show() {
    this.active = true;
    this.poll();
  }

  hide() {
    this.active = false;
    clearTimeout(this.timer);
  }

  schedule() {
    clearTimeout(this.timer);
    if (this.active && !document.hidden) this.timer = setTimeout(() => this.poll(), POLL_MS);
  }

  async poll() {
    if (this.inFlight) return;
    this.inFlight = true;
    try {
      const [status, models] = await Promise.all([
        this.api.json("/status"), this.api.json("/models"),
      ]);
      this.render(status, models.data || []);
      $("status-error").hidden = true;
      $("status-updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      $("status-error").hidden = false;
      $("status-error").textContent = `Cannot read the server's status: ${err.message}`;
    } finally {
      this.inFlight = false;
      this.schedule();
    }
  }

  render(status, models) {
    const { requests, budget } = status;
    $("status-summary").replaceChildren(
      fact("Requests running or waiting", `${requests.active} of ${requests.limit}`),
      fact("Models loaded", `${budget.loaded_models} of ${budget.max_models}`),
      fact("Memory for models", `${format.bytes(budget.used_bytes)} of ${format.bytes(budget.bytes)}`),
      fact("When full", budget.when_full === "wait" ? "wait for an idle model" : "refuse"));
    const loaded = status.models.filter((m) => m.loaded);
    $("status-models").replaceChildren(...(loaded.length
      ? loaded.map((m) => modelCard(m))
      : [el("p", { class: "empty" }, "No model is loaded. A request loads its model; so does Load below.")]));
    const others = status.models.filter((m) => !m.loaded && m.worker && m.worker.state !== "stopped");
    if (others.length) $("status-models").append(...others.map((m) => modelCard(m)));
    $("installed-models").replaceChildren(...models.map((m) => this.installedRow(m)));
  }

  installedRow(model) {
    const action = model.loaded ? "unload" : "load";
    const button = el("button", {
      type: "button", class: "small", "aria-label": `${model.loaded ? "Unload" : "Load"} ${model.id}`,
      onclick: async () => {
        button.disabled = true;
        try {
          await this.api.json(`/models/${encodeURIComponent(model.id)}/${action}`, { method: "POST" });
        } catch (err) {
          $("status-error").hidden = false;
          $("status-error").textContent = `Could not ${action} ${model.id}: ${err.message}`;
        }
        this.poll();
      },
    }, model.loaded ? "Unload" : "Load");
    return el("tr", {},
      el("th", { scope: "row" }, model.kind === "embedding" ? `${model.id} (embeddings)` : model.id),
      el("td", {}, el("span", { class: "state" }, model.loaded ? "loaded" : "not loaded"), " ", button),
      el("td", {}, format.bytes(model.memory_bytes)),
      el("td", { class: "wide-only" }, model.loaded ? format.until(model.expires_at) : "–"));
  }
}

function fact(term, value) {
  return el("div", { class: "fact" }, el("dt", {}, term), el("dd", {}, value));
}

function modelCard(m) {
  const r = m.residency || {};
  const facts = [
    fact("Engine", m.engine),
    fact("Worker", m.worker ? `${m.worker.state}${m.worker.pid ? ` (pid ${m.worker.pid})` : ""}` : "–"),
    fact("Memory", r.measured_bytes ? format.bytes(r.measured_bytes)
      : `${format.bytes(r.estimated_bytes)} (estimated)`),
    fact("Keep-alive", format.keepAlive(r.keep_alive_s)),
    fact("Unloads", r.pinned ? "never (pinned)" : format.until(r.expires_at)),
  ];
  if (m.batch) {
    facts.push(fact("Requests running", `${m.batch.running} of ${m.batch.max}`),
      fact("Requests waiting", String(m.batch.waiting)));
    const speeds = Object.entries(m.batch.tokens_per_s_by_size || {});
    if (speeds.length) {
      facts.push(fact("Decode speed", speeds.map(([size, tps]) =>
        `${Number(tps).toFixed(1)} tokens/s${speeds.length > 1 || size !== "1" ? ` at ${size} at once` : ""}`).join(", ")));
    }
  }
  const c = m.prompt_cache;
  if (c) {
    facts.push(fact("Prompt cache", `${format.count(c.entries, "entry", "entries")}, ${format.bytes(c.bytes)}`),
      fact("Cache hit rate", `${format.percent(c.hits, c.hits + c.misses)} (${c.hits} hits, ${c.misses} misses)`));
    if (c.disk_entries || c.disk_hits) {
      facts.push(fact("On disk", `${format.count(c.disk_entries, "entry", "entries")}, `
        + `${format.bytes(c.disk_bytes)}, ${format.count(c.disk_hits, "hit", "hits")}`));
    }
  }
  if (m.context_length) facts.push(fact("Context", `${m.context_length} tokens`));
  if (m.threads) facts.push(fact("Threads", String(m.threads)));
  if (m.kernels) facts.push(fact("Kernels", m.kernels));
  if (typeof m.flash_attention === "boolean") {
    facts.push(fact("Flash attention", m.flash_attention ? "on" : "off"));
  }
  if (m.tokens_generated !== null && m.tokens_generated !== undefined) {
    facts.push(fact("Tokens generated", String(m.tokens_generated)));
  }
  // Speculative decoding, where an engine reports it: its figures as they come.
  const speculation = m.speculation || m.batch?.speculation;
  if (speculation && typeof speculation === "object") {
    for (const [key, value] of Object.entries(speculation)) {
      facts.push(fact(`Speculation: ${key.replaceAll("_", " ")}`, String(value)));
    }
  }
  if (m.worker?.last_error) facts.push(fact("Last error", m.worker.last_error));
  return el("article", { class: "model-card", "aria-label": m.model },
    el("h3", {}, m.model, " ", el("span", { class: `badge ${m.loaded ? "ok" : "off"}` },
      m.loaded ? "loaded" : m.worker?.state || "not loaded")),
    el("dl", {}, ...facts));
}
