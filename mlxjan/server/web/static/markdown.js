// A small, safe Markdown renderer for model answers.
//
// `parse` turns text into a plain tree (no DOM, so it is testable under node); `render` builds
// DOM nodes from it with textContent and setAttribute only: model output never reaches an
// HTML parser, so no answer can inject markup or script. Links keep http(s) and mailto only.
// An unclosed code fence (an answer still streaming) renders as code so far.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const BULLET = /^(\s*)[-*+]\s+(.*)$/;
const NUMBERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const SAFE_URL = /^(https?:\/\/|mailto:)/i;

export function parse(text) {
  return parseBlocks(String(text).replace(/\r\n?/g, "\n").split("\n"));
}

function parseBlocks(lines) {
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (line.trim() === "") {
      i += 1;
    } else if ((m = FENCE.exec(line))) {
      const close = new RegExp(`^ {0,3}${m[1][0]}{${m[1].length},}\\s*$`);
      const body = [];
      i += 1;
      while (i < lines.length && !close.test(lines[i])) body.push(lines[i++]);
      i += 1; // the closing fence, if any
      blocks.push({ type: "code", lang: m[2], text: body.join("\n") });
    } else if ((m = HEADING.exec(line))) {
      blocks.push({ type: "heading", level: m[1].length, inline: parseInline(m[2]) });
      i += 1;
    } else if (RULE.test(line)) {
      blocks.push({ type: "rule" });
      i += 1;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) { body.push(m[1]); i += 1; }
      blocks.push({ type: "quote", blocks: parseBlocks(body) });
    } else if (BULLET.test(line) || NUMBERED.test(line)) {
      const ordered = !BULLET.test(line);
      const items = [];
      const start = ordered ? Number(NUMBERED.exec(line)[2]) : 1;
      while (i < lines.length) {
        const item = ordered ? NUMBERED.exec(lines[i]) : BULLET.exec(lines[i]);
        if (item) {
          items.push([ordered ? item[3] : item[2]]);
        } else if (lines[i].trim() !== "" && /^\s+/.test(lines[i]) && items.length) {
          items[items.length - 1].push(lines[i].trim()); // a wrapped item continues
        } else {
          break;
        }
        i += 1;
      }
      blocks.push({ type: "list", ordered, start, items: items.map((l) => parseInline(l.join("\n"))) });
    } else {
      const body = [];
      while (i < lines.length && lines[i].trim() !== "" && !startsBlock(lines[i])) {
        body.push(lines[i++]);
      }
      if (body.length === 0) body.push(lines[i++]);
      blocks.push({ type: "paragraph", inline: parseInline(body.join("\n")) });
    }
  }
  return blocks;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line)
    || BULLET.test(line) || NUMBERED.test(line);
}

// Inline: `code`, **strong**, *em* / _em_, [text](url), backslash escapes, line breaks.
export function parseInline(text) {
  const out = [];
  let plain = "";
  const flush = () => { if (plain) { out.push({ type: "text", text: plain }); plain = ""; } };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && /[\\`*_[\]()#+\-.!>~|]/.test(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "\n") { flush(); out.push({ type: "br" }); i += 1; continue; }
    if (c === "`") {
      const run = /^`+/.exec(text.slice(i))[0];
      const end = text.indexOf(run, i + run.length);
      if (end > 0) {
        flush();
        out.push({ type: "code", text: text.slice(i + run.length, end).trim() || " " });
        i = end + run.length;
        continue;
      }
    }
    const strong = delimited(text, i, "**") || delimited(text, i, "__");
    if (strong) {
      flush();
      out.push({ type: "strong", children: parseInline(strong.inner) });
      i = strong.end;
      continue;
    }
    const em = (c === "*" || (c === "_" && !/\w/.test(text[i - 1] || "")))
      ? delimited(text, i, c) : null;
    if (em && (c === "*" || !/\w/.test(text[em.end] || ""))) {
      flush();
      out.push({ type: "em", children: parseInline(em.inner) });
      i = em.end;
      continue;
    }
    if (c === "[") {
      const link = /^\[([^\]\n]+)\]\(([^)\s]+)\)/.exec(text.slice(i));
      if (link) {
        flush();
        const children = parseInline(link[1]);
        out.push(SAFE_URL.test(link[2])
          ? { type: "link", href: link[2], children }
          : { type: "span", children });
        i += link[0].length;
        continue;
      }
    }
    plain += c;
    i += 1;
  }
  flush();
  return out;
}

// `mark` … `mark` starting at i, with text inside that neither starts nor ends with a space.
function delimited(text, i, mark) {
  if (!text.startsWith(mark, i)) return null;
  const from = i + mark.length;
  if (from >= text.length || /\s/.test(text[from])) return null;
  let end = text.indexOf(mark, from);
  while (end > 0 && /\s/.test(text[end - 1])) end = text.indexOf(mark, end + 1);
  if (end <= from) return null;
  return { inner: text.slice(from, end), end: end + mark.length };
}

// DOM from the tree. `onCopy(text)` is called by the copy button under each code block.
export function render(blocks, doc, onCopy) {
  const fragment = doc.createDocumentFragment();
  for (const block of blocks) fragment.append(renderBlock(block, doc, onCopy));
  return fragment;
}

function renderBlock(block, doc, onCopy) {
  switch (block.type) {
    case "code": {
      const wrap = doc.createElement("div");
      wrap.className = "code";
      const pre = doc.createElement("pre");
      const code = doc.createElement("code");
      if (block.lang) {
        code.className = `language-${block.lang}`;
        pre.dataset.lang = block.lang;
      }
      code.textContent = block.text;
      pre.append(code);
      pre.tabIndex = 0; // scrollable by keyboard
      wrap.append(pre);
      if (onCopy) {
        const button = doc.createElement("button");
        button.type = "button";
        button.className = "copy small";
        button.textContent = "Copy code";
        button.addEventListener("click", () => onCopy(block.text, button));
        wrap.append(button);
      }
      return wrap;
    }
    case "heading": {
      // Answers sit under the page's own headings: start them at h3.
      const h = doc.createElement(`h${Math.min(block.level + 2, 6)}`);
      h.append(renderInline(block.inline, doc));
      return h;
    }
    case "rule":
      return doc.createElement("hr");
    case "quote": {
      const q = doc.createElement("blockquote");
      q.append(render(block.blocks, doc, onCopy));
      return q;
    }
    case "list": {
      const list = doc.createElement(block.ordered ? "ol" : "ul");
      if (block.ordered && block.start !== 1) list.start = block.start;
      for (const item of block.items) {
        const li = doc.createElement("li");
        li.append(renderInline(item, doc));
        list.append(li);
      }
      return list;
    }
    default: {
      const p = doc.createElement("p");
      p.append(renderInline(block.inline, doc));
      return p;
    }
  }
}

function renderInline(nodes, doc) {
  const fragment = doc.createDocumentFragment();
  for (const node of nodes) {
    switch (node.type) {
      case "text":
        fragment.append(doc.createTextNode(node.text));
        break;
      case "br":
        fragment.append(doc.createElement("br"));
        break;
      case "code": {
        const code = doc.createElement("code");
        code.textContent = node.text;
        fragment.append(code);
        break;
      }
      case "link": {
        const a = doc.createElement("a");
        a.setAttribute("href", node.href);
        a.setAttribute("rel", "noopener noreferrer nofollow");
        a.setAttribute("target", "_blank");
        a.append(renderInline(node.children, doc));
        fragment.append(a);
        break;
      }
      default: {
        const tag = { strong: "strong", em: "em" }[node.type] || "span";
        const el = doc.createElement(tag);
        el.append(renderInline(node.children, doc));
        fragment.append(el);
      }
    }
  }
  return fragment;
}
