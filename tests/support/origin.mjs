// A real origin server on loopback: it answers every request with a JSON echo of what reached
// it (method, path, query, headers, body) and remembers the requests, so tests can check exactly
// what the gate forwarded. Also runnable on its own: `node tests/support/origin.mjs [port]`.
import http from 'node:http';
import { pathToFileURL } from 'node:url';

export async function startOrigin({ port = 0, host = '127.0.0.1', quiet = true } = {}) {
  const seen = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url, 'http://origin');
      const record = {
        origin: true,
        method: req.method,
        path: url.pathname,
        query: url.search.replace(/^\?/, ''),
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      seen.push(record);
      if (!quiet) console.log(`origin: ${req.method} ${req.url}`);
      const text = JSON.stringify(record);
      // A bad day on demand, for the tests: x-test-destroy drops the connection unanswered,
      // x-test-delay-ms waits before answering, x-test-status answers with that status,
      // x-test-body-delay-ms sends the headers at once and the body after a pause,
      // x-test-response-headers (JSON) adds response headers.
      if (req.headers['x-test-destroy']) return req.socket.destroy();
      const status = Number(req.headers['x-test-status'] ?? 200);
      const delay = Number(req.headers['x-test-delay-ms'] ?? 0);
      const bodyDelay = Number(req.headers['x-test-body-delay-ms'] ?? 0);
      let extra = {};
      try { extra = JSON.parse(req.headers['x-test-response-headers'] ?? '{}'); } catch { /* none */ }
      setTimeout(() => {
        if (res.destroyed) return;
        res.writeHead(status, { ...extra, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'x-test-origin': 'yes' });
        if (!bodyDelay) return res.end(text);
        res.flushHeaders();
        setTimeout(() => res.end(text), bodyDelay);
      }, delay);
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const { port: actual } = server.address();
  return {
    url: `http://${host}:${actual}`,
    port: actual,
    seen,
    last: () => seen[seen.length - 1],
    clear: () => { seen.length = 0; },
    stop: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); }),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const origin = await startOrigin({ port: Number(process.argv[2] ?? 8788), quiet: false });
  console.log(`origin: demo origin listening on ${origin.url}`);
}
