// The chat view: conversations, the request editor, and answers streamed from
// POST {prefix}/chat/completions as they arrive.

import * as format from "./format.js";
import { parse, render } from "./markdown.js";
import * as store from "./store.js";
import { announce, copyText, el } from "./ui.js";

const $ = (id) => document.getElementById(id);

// Sampling fields of the request editor: input id -> request field and how to read it.
const NUMBER_FIELDS = [
  { id: "temperature", key: "temperature", parse: Number.parseFloat },
  { id: "top-p", key: "top_p", parse: Number.parseFloat },
  { id: "max-tokens", key: "max_tokens", parse: (v) => Number.parseInt(v, 10) },
];

export class ChatView {
  constructor(api, config) {
    this.api = api;
    this.config = config;
    this.conversations = store.load();
    this.current = this.conversations[0] || null;
    this.controller = null; // the running answer's AbortController
    this.views = new Map(); // message -> its DOM parts, for streaming updates

    this.list = $("conversation-list");
    this.messages = $("messages");
    this.modelSelect = $("model-select");
    this.prompt = $("prompt");
    this.send = $("send");
    this.stop = $("stop");

    $("composer").addEventListener("submit", (e) => { e.preventDefault(); this.submit(); });
    this.prompt.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit();
      }
    });
    this.stop.addEventListener("click", () => this.controller?.abort());
    $("new-chat").addEventListener("click", () => this.newChat());
    this.modelSelect.addEventListener("change", () => {
      if (this.current) { this.current.model = this.modelSelect.value; this.persist(); }
    });
    for (const id of ["system-prompt", "tools", ...NUMBER_FIELDS.map((f) => f.id)]) {
      $(id).addEventListener("input", () => this.readSettings());
    }
    const toggle = $("toggle-conversations");
    toggle.addEventListener("click", () => {
      const open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", String(open));
      $("conversations").classList.toggle("open", open);
    });
  }

  start() {
    if (!this.current) this.newChat();
    else this.show(this.current);
    this.refreshModels();
  }

  // Installed chat models, loaded or not (embedding models cannot chat); the choice stays
  // put across refreshes.
  async refreshModels() {
    let models;
    try {
      models = ((await this.api.json("/models")).data || []).filter((m) => m.kind !== "embedding");
    } catch {
      return; // a 401 opens the key dialog; other failures show on the next send
    }
    const wanted = this.current?.model || this.modelSelect.value || this.config.defaultModel;
    const ids = models.map((m) => m.id);
    if (wanted && !ids.includes(wanted)) ids.unshift(wanted); // default, not yet installed
    this.modelSelect.replaceChildren(...ids.map((id) => {
      const card = models.find((m) => m.id === id);
      const label = card?.loaded ? `${id} (loaded)` : id;
      return el("option", { value: id }, label);
    }));
    this.modelSelect.value = ids.includes(wanted) ? wanted : ids[0] || "";
  }

  newChat() {
    const settings = this.current ? this.current.settings : store.DEFAULT_SETTINGS;
    const model = this.modelSelect.value || this.config.defaultModel;
    const conversation = store.newConversation(model, settings);
    this.conversations.unshift(conversation);
    this.show(conversation);
    this.prompt.focus();
  }

  show(conversation) {
    this.current = conversation;
    const s = conversation.settings;
    $("system-prompt").value = s.system;
    $("tools").value = s.tools;
    for (const f of NUMBER_FIELDS) $(f.id).value = s[f.key] ?? "";
    if (conversation.model && [...this.modelSelect.options].some((o) => o.value === conversation.model)) {
      this.modelSelect.value = conversation.model;
    }
    this.renderList();
    this.renderMessages();
  }

  persist() {
    if (this.current) {
      this.current.title = store.titleOf(this.current);
      this.current.updated = Date.now();
    }
    // Empty chats are not worth keeping across loads.
    store.save(this.conversations.filter((c) => c.messages.length));
    this.renderList();
  }

  readSettings() {
    const s = this.current.settings;
    s.system = $("system-prompt").value;
    s.tools = $("tools").value;
    for (const f of NUMBER_FIELDS) s[f.key] = $(f.id).value.trim();
    this.persist();
  }

  renderList() {
    const busy = this.controller !== null;
    this.list.replaceChildren(...this.conversations.map((c) => {
      const current = c === this.current;
      return el("li", { class: current ? "current" : "" },
        el("button", {
          type: "button", class: "conversation", "aria-current": current ? "true" : null,
          disabled: busy && !current, onclick: () => this.show(c),
        }, c.title || "New chat"),
        el("button", {
          type: "button", class: "icon danger", "aria-label": `Delete conversation: ${c.title}`,
          title: "Delete", disabled: busy, onclick: () => this.remove(c),
        }, "×"));
    }));
  }

  remove(conversation) {
    this.conversations = this.conversations.filter((c) => c !== conversation);
    if (conversation === this.current) {
      this.current = null;
      if (this.conversations.length) this.show(this.conversations[0]);
      else this.newChat();
    }
    this.persist();
  }

  renderMessages() {
    this.views.clear();
    this.messages.replaceChildren(...this.current.messages.map((m, i) => this.messageItem(m, i)));
    this.updateComposer();
  }

  messageItem(message, index) {
    if (message.role === "user") return this.userItem(message, index);
    if (message.role === "tool") {
      return el("li", { class: "msg msg-tool" },
        el("div", { class: "msg-head" }, el("span", { class: "role" }, `Tool result · ${message.name || "tool"}`)),
        el("pre", { class: "tool-result", tabindex: "0" }, message.content));
    }
    return this.assistantItem(message, index);
  }

  userItem(message, index) {
    const body = el("div", { class: "msg-body" });
    body.append(render(parse(message.content), document, copyText));
    const item = el("li", { class: "msg msg-user" });
    const busy = this.controller !== null;
    const edit = el("button", {
      type: "button", class: "small", disabled: busy, onclick: () => this.edit(item, message, index),
    }, "Edit");
    // A last question with no answer (its request failed, or the page was reloaded).
    const unanswered = index === this.current.messages.length - 1;
    const answer = unanswered ? el("button", {
      type: "button", class: "small", disabled: busy, onclick: () => this.generate(),
    }, "Answer") : "";
    item.append(el("div", { class: "msg-head" }, el("span", { class: "role" }, "You"),
      el("div", { class: "actions" }, edit, answer)), body);
    return item;
  }

  assistantItem(message, index) {
    const view = {
      item: el("li", { class: "msg msg-assistant" }),
      reasoning: el("details", { class: "reasoning", hidden: true }),
      reasoningSummary: el("summary", {}, "Reasoning"),
      reasoningBody: el("div", { class: "reasoning-body" }),
      answer: el("div", { class: "msg-body answer" }),
      tools: el("div", { class: "tool-calls", hidden: true }),
      error: el("p", { class: "error", role: "alert", hidden: true }),
      stats: el("p", { class: "stats" }),
      actions: el("div", { class: "actions" }),
      frame: 0,
    };
    view.reasoning.append(view.reasoningSummary, view.reasoningBody);
    view.item.append(
      el("div", { class: "msg-head" }, el("span", { class: "role" }, message.model || "Assistant"), view.actions),
      view.reasoning, view.answer, view.tools, view.error, view.stats);
    // Tokens arrive faster than the screen refreshes: draw at most once a frame.
    view.schedule = () => {
      if (!view.frame) {
        view.frame = requestAnimationFrame(() => { view.frame = 0; this.paint(message, view, index); });
      }
    };
    this.views.set(message, view);
    this.paint(message, view, index);
    return view.item;
  }

  paint(message, view, index) {
    const streaming = message.state === "streaming";
    view.item.setAttribute("aria-busy", String(streaming));
    if (message.reasoning) {
      view.reasoning.hidden = false;
      view.reasoningSummary.textContent = streaming && !message.content
        ? "Reasoning…" : `Reasoning (${message.reasoning.length} characters)`;
      view.reasoningBody.replaceChildren(render(parse(message.reasoning), document, copyText));
    }
    view.answer.replaceChildren(render(parse(message.content), document, copyText));
    if (message.tool_calls?.length) {
      view.tools.hidden = false;
      view.tools.replaceChildren(...message.tool_calls.map((call) => el("div", { class: "tool-call" },
        el("p", { class: "tool-name" }, "Tool call: ", el("code", {}, call.function.name || "…")),
        el("pre", { tabindex: "0" }, prettyJson(call.function.arguments)))));
    }
    view.error.hidden = !message.error;
    view.error.textContent = message.error || "";
    view.stats.textContent = statsLine(message);
    const last = index === this.current.messages.length - 1;
    view.actions.replaceChildren(
      message.content ? el("button", {
        type: "button", class: "small", onclick: (e) => copyText(message.content, e.currentTarget),
      }, "Copy") : "",
      last && !streaming ? el("button", {
        type: "button", class: "small", disabled: this.controller !== null,
        onclick: () => this.regenerate(),
      }, "Regenerate") : "");
  }

  edit(item, message, index) {
    const area = el("textarea", { rows: "4", "aria-label": "Edit message" });
    area.value = message.content;
    const form = el("form", { class: "edit" }, area,
      el("div", { class: "composer-actions" },
        el("button", { type: "submit", class: "primary" }, "Save and send"),
        el("button", { type: "button", onclick: () => this.renderMessages() }, "Cancel")));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!area.value.trim()) return;
      message.content = area.value;
      // Everything after an edited message answered the old text.
      this.current.messages = this.current.messages.slice(0, index + 1);
      this.persist();
      this.renderMessages();
      this.generate();
    });
    item.replaceChildren(form);
    area.focus();
  }

  regenerate() {
    const messages = this.current.messages;
    if (messages.at(-1)?.role === "assistant") messages.pop();
    this.renderMessages();
    this.generate();
  }

  // Calls of the last answer that have no result yet: the composer answers them first.
  pendingCalls() {
    const messages = this.current.messages;
    const answer = [...messages].reverse().find((m) => m.role === "assistant");
    if (!answer?.tool_calls?.length || answer.state !== "done") return [];
    const answered = new Set(messages.filter((m) => m.role === "tool").map((m) => m.tool_call_id));
    return answer.tool_calls.filter((c) => !answered.has(c.id));
  }

  updateComposer() {
    const pending = this.pendingCalls();
    this.prompt.placeholder = pending.length
      ? `Result of ${pending[0].function.name} (sent as a tool message)`
      : "Message the model (Enter sends, Shift+Enter a new line)";
    this.prompt.setAttribute("aria-label", pending.length
      ? `Tool result for ${pending[0].function.name}` : "Message");
  }

  submit() {
    const text = this.prompt.value;
    if (!text.trim() || this.controller || !this.toolsValid()) return;
    const pending = this.pendingCalls();
    if (pending.length) {
      const call = pending[0];
      this.current.messages.push({ role: "tool", tool_call_id: call.id, name: call.function.name, content: text });
    } else {
      this.current.messages.push({ role: "user", content: text });
    }
    this.prompt.value = "";
    this.persist();
    this.renderMessages();
    if (this.pendingCalls().length === 0) this.generate();
  }

  // Shows why the tools JSON is refused, in the open request editor.
  toolsValid() {
    const { error } = parseTools(this.current.settings.tools);
    $("tools-error").hidden = error === null;
    $("tools-error").textContent = error || "";
    if (error !== null) {
      $("request-editor").open = true;
      $("tools").focus();
    }
    return error === null;
  }

  request(model) {
    const s = this.current.settings;
    const body = {
      model, messages: apiMessages(this.current.messages, s.system), stream: true,
      stream_options: { include_usage: true },
    };
    for (const f of NUMBER_FIELDS) {
      const value = f.parse(String(s[f.key] ?? ""));
      if (Number.isFinite(value)) body[f.key] = value;
    }
    const tools = parseTools(s.tools).value;
    if (tools) body.tools = tools;
    return body;
  }

  async generate() {
    if (this.controller || !this.toolsValid()) return;
    const model = this.modelSelect.value || this.config.defaultModel;
    const body = this.request(model);
    const message = { role: "assistant", model, content: "", reasoning: "", tool_calls: [], state: "streaming" };
    const conversation = this.current;
    conversation.messages.push(message);
    const index = conversation.messages.length - 1;
    this.controller = new AbortController();
    const { signal } = this.controller;
    this.setBusy(true);
    this.renderMessages(); // the question above is answered now: no "Answer" button
    const view = this.views.get(message);
    view.item.scrollIntoView({ block: "end" });
    announce("Answering…");
    const started = performance.now();
    let first = null;
    let deltas = 0;
    try {
      for await (const chunk of this.api.events("/chat/completions", body, signal)) {
        if (chunk.error) throw new Error(chunk.error.message || "The server ended the answer with an error.");
        if (chunk.usage) message.usage = chunk.usage;
        const choice = chunk.choices?.[0];
        if (!choice) continue;
        const delta = choice.delta || {};
        // The server may send reasoning under both names: take one.
        const reasoning = delta.reasoning_content ?? delta.reasoning;
        if (delta.content || reasoning || delta.tool_calls) {
          first ??= performance.now();
          deltas += 1;
        }
        if (reasoning) message.reasoning += reasoning;
        if (delta.content) message.content += delta.content;
        if (delta.tool_calls) mergeToolCalls(message.tool_calls, delta.tool_calls);
        if (choice.finish_reason) message.finish = choice.finish_reason;
        view.schedule();
      }
      message.state = "done";
      announce("Answer complete.");
    } catch (err) {
      if (signal.aborted) {
        message.state = "stopped";
        announce("Stopped.");
      } else {
        message.state = "error";
        message.error = err.message || String(err);
        announce("The answer failed.");
      }
    } finally {
      const ended = performance.now();
      message.timing = {
        ttft_s: first === null ? null : (first - started) / 1000,
        decode_s: first === null ? null : (ended - first) / 1000,
        deltas,
      };
      cancelAnimationFrame(view.frame);
      view.frame = 0;
      this.controller = null;
      this.setBusy(false);
      if (conversation === this.current) {
        this.paint(message, view, index);
        this.updateComposer();
      }
      this.persist();
      this.refreshModels(); // the model is loaded now
    }
  }

  setBusy(busy) {
    this.send.disabled = busy;
    this.stop.hidden = !busy;
    $("new-chat").disabled = busy;
    this.modelSelect.disabled = busy;
    for (const button of this.messages.querySelectorAll(".msg-user button")) button.disabled = busy;
    this.renderList();
    if (busy) this.stop.focus();
    else if (document.activeElement === this.stop || document.activeElement === document.body) this.prompt.focus();
  }
}

// The conversation as the API wants it: reasoning stays in the page (OpenAI convention),
// failed empty answers are left out.
export function apiMessages(messages, system) {
  const out = system && system.trim() ? [{ role: "system", content: system }] : [];
  for (const m of messages) {
    if (m.role === "user") {
      out.push({ role: "user", content: m.content });
    } else if (m.role === "tool") {
      out.push({ role: "tool", tool_call_id: m.tool_call_id, content: m.content });
    } else if (m.content || m.tool_calls?.length) {
      const calls = m.state === "done" ? m.tool_calls || [] : [];
      const message = { role: "assistant", content: m.content || (calls.length ? null : "") };
      if (calls.length) message.tool_calls = calls;
      if (message.content !== "" || calls.length) out.push(message);
    }
  }
  return out;
}

// Streamed tool-call pieces into whole calls: id and name come first, arguments in parts.
export function mergeToolCalls(calls, deltas) {
  for (const d of deltas) {
    const index = d.index ?? calls.length;
    calls[index] ??= { id: "", type: "function", function: { name: "", arguments: "" } };
    const call = calls[index];
    if (d.id) call.id = d.id;
    if (d.function?.name) call.function.name = d.function.name;
    if (d.function?.arguments) call.function.arguments += d.function.arguments;
  }
  return calls;
}

// The request editor's tools: blank, or a JSON array of OpenAI function tools.
export function parseTools(text) {
  if (!text || !text.trim()) return { value: null, error: null };
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { value: null, error: `Tools are not valid JSON: ${err.message}` };
  }
  if (!Array.isArray(value)) value = [value];
  const named = value.every((t) => t && typeof t === "object"
    && (t.type === "function" ? typeof t.function?.name === "string" : typeof t.name === "string"));
  if (!named) return { value: null, error: "Each tool needs a name: {\"type\": \"function\", \"function\": {\"name\": …, \"parameters\": {…}}}." };
  // A bare {name, parameters} is accepted as shorthand for a function tool.
  return { value: value.map((t) => (t.type === "function" ? t : { type: "function", function: t })), error: null };
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text; // still streaming, or not JSON
  }
}

export function statsLine(message) {
  const t = message.timing;
  if (!t) return message.state === "streaming" ? "Waiting for the first token…" : "";
  const parts = [];
  const usage = message.usage;
  const tokens = usage?.completion_tokens ?? t.deltas;
  if (tokens) parts.push(`${tokens} tokens`);
  // Decode speed: the tokens after the first, over the time after the first.
  if (t.decode_s && tokens > 1) parts.push(format.rate(tokens - 1, t.decode_s));
  if (t.ttft_s !== null) parts.push(`first token ${format.seconds(t.ttft_s)}`);
  const cached = usage?.prompt_tokens_details?.cached_tokens;
  if (usage && cached) parts.push(`${cached} of ${usage.prompt_tokens} prompt tokens cached`);
  if (message.state === "stopped") parts.push("stopped");
  if (message.finish === "length") parts.push("hit max tokens");
  return parts.join(" · ");
}
