// Numbers as people read them: bytes, durations, rates.

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

export function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function rate(tokens, elapsed) {
  return elapsed > 0 && tokens > 0 ? `${(tokens / elapsed).toFixed(1)} tokens/s` : "–";
}

export function count(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

export function percent(part, whole) {
  return whole > 0 ? `${Math.round((100 * part) / whole)}%` : "–";
}

// A keep-alive as the server means it: null is "until unloaded", 0 "unloads at once".
export function keepAlive(s) {
  if (s === null || s === undefined) return "until unloaded";
  return s === 0 ? "unloads when idle" : seconds(s);
}

// A Unix time in the future, as "in 4 min 10 s".
export function until(unixTime, now = Date.now() / 1000) {
  if (unixTime === null || unixTime === undefined) return "not timed";
  const left = unixTime - now;
  return left <= 0 ? "now" : `in ${seconds(left)}`;
}
