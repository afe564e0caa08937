// The connect view: settings for Claude Code, Codex and the OpenAI SDK, for this server as
// the browser reached it (the same blocks as the README's, with this URL).

import { copyText } from "./ui.js";

const $ = (id) => document.getElementById(id);

// Anthropic clients add /v1/messages to their base URL themselves.
export function anthropicBase(origin, prefix) {
  return prefix.endsWith("/v1") ? `${origin}${prefix.slice(0, -3)}` : null;
}

export function snippets(origin, prefix, model, keyRequired) {
  const key = keyRequired ? "<your api key>" : "unused";
  const base = `${origin}${prefix}`;
  const anthropic = anthropicBase(origin, prefix);
  return {
    claude: anthropic === null
      ? `# Claude Code posts to <base>/v1/messages: this server's api_prefix (${prefix}) does not end in /v1.`
      : [
        `export ANTHROPIC_BASE_URL=${anthropic}`,
        `export ANTHROPIC_AUTH_TOKEN=${key}${keyRequired ? "" : "            # or your api_key, if you set one"}`,
        "export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
        "export CLAUDE_CODE_ATTRIBUTION_HEADER=0       # no per-request billing line in the prompt",
        "claude",
      ].join("\n"),
    codex: [
      `model = ${JSON.stringify(model)}`,
      'model_provider = "mlxjan"',
      "",
      "[model_providers.mlxjan]",
      'name = "mlxjan"',
      `base_url = ${JSON.stringify(base)}`,
      'wire_api = "responses"',
      `env_key = "MLXJAN_API_KEY"   # ${keyRequired ? "export MLXJAN_API_KEY=<your api key>" : "any value, or your api_key if you set one"}`,
    ].join("\n"),
    openai: [
      "from openai import OpenAI",
      "",
      `client = OpenAI(base_url=${JSON.stringify(base)}, api_key=${JSON.stringify(key)})`,
      "reply = client.chat.completions.create(",
      `    model=${JSON.stringify(model)},`,
      '    messages=[{"role": "user", "content": "Write a haiku about local models."}],',
      "    stream=True,",
      ")",
      "for chunk in reply:",
      '    print(chunk.choices[0].delta.content or "", end="", flush=True)',
    ].join("\n"),
  };
}

export class ConnectView {
  constructor(config) {
    this.config = config;
    for (const button of document.querySelectorAll("[data-copy]")) {
      button.addEventListener("click", () => copyText($(button.dataset.copy).textContent, button));
    }
  }

  show() {
    const { apiPrefix, defaultModel, keyRequired } = this.config;
    const text = snippets(window.location.origin, apiPrefix, defaultModel, keyRequired);
    $("connect-claude").textContent = text.claude;
    $("connect-codex").textContent = text.codex;
    $("connect-openai").textContent = text.openai;
    for (const node of document.querySelectorAll(".server-url")) {
      node.textContent = `${window.location.origin}${apiPrefix}`;
    }
  }
}
