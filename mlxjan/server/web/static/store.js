// Conversations, kept in this browser's localStorage (never sent anywhere but the model).

const ITEM = "mlxjan.conversations";
const MAX_CONVERSATIONS = 100;

export const DEFAULT_SETTINGS = Object.freeze({
  system: "", temperature: "", top_p: "", max_tokens: "", tools: "",
});

export function newConversation(model, settings = DEFAULT_SETTINGS) {
  return {
    id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`,
    title: "New chat",
    model,
    settings: { ...DEFAULT_SETTINGS, ...settings },
    messages: [],
    updated: Date.now(),
  };
}

export function titleOf(conversation) {
  const first = conversation.messages.find((m) => m.role === "user");
  if (!first) return "New chat";
  const line = first.content.trim().split("\n")[0];
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}

export function load() {
  try {
    const list = JSON.parse(localStorage.getItem(ITEM) || "[]");
    if (!Array.isArray(list)) return [];
    const conversations = list.filter((c) => c && Array.isArray(c.messages));
    // An answer saved while it streamed (the page was closed) ended there.
    for (const m of conversations.flatMap((c) => c.messages)) {
      if (m.state === "streaming") m.state = "stopped";
    }
    return conversations;
  } catch {
    return [];
  }
}

// Newest first, at most MAX_CONVERSATIONS; a full storage drops the oldest until it fits.
export function save(conversations) {
  const list = [...conversations].sort((a, b) => b.updated - a.updated)
    .slice(0, MAX_CONVERSATIONS);
  for (;;) {
    try {
      localStorage.setItem(ITEM, JSON.stringify(list));
      return;
    } catch {
      if (!list.length) return; // storage off: conversations last for this load only
      list.pop();
    }
  }
}
