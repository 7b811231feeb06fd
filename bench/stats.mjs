// Order statistics shared by the benchmark scripts.
export function median(xs) { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; }
export function pct(xs, q) { const s = [...xs].sort((a, b) => a - b); return s[Math.round((s.length - 1) * q)]; }
