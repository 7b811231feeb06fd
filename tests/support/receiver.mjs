// A webhook receiver on loopback for the tests: it checks every delivery with the Standard
// Webhooks reference library (npm standardwebhooks), not with keyward's own code, against the
// endpoint's secret (set `receiver.secret` once the endpoint exists).
import http from 'node:http';
import { Webhook } from 'standardwebhooks';

/**
 * Answers its first `failures` deliveries with 500, then `receiver.status` (changeable; `status`
 * to start with), after `delayMs`. Each delivery `{id, event, body, at, status}` goes to `all`;
 * to `verified` when its signature checked out, to `accepted` once answered with a 2xx; a
 * signature that did not check out goes to `errors`.
 */
export async function startReceiver({ status = 200, failures = 0, delayMs = 0 } = {}) {
  const receiver = { status, secret: null, all: [], verified: [], accepted: [], errors: [] };
  let failed = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const headers = { 'webhook-id': req.headers['webhook-id'], 'webhook-timestamp': req.headers['webhook-timestamp'], 'webhook-signature': req.headers['webhook-signature'] };
      let event = null;
      try {
        event = new Webhook(receiver.secret).verify(body, headers);
      } catch (e) {
        receiver.errors.push(`${e.message}: ${JSON.stringify(headers)} ${body}`);
      }
      const answer = failed < failures ? (failed++, 500) : receiver.status;
      const delivery = { id: headers['webhook-id'], event, body, at: Date.now(), status: answer };
      receiver.all.push(delivery);
      if (event) receiver.verified.push(delivery);
      if (answer < 200 || answer > 299) {
        res.writeHead(answer).end('not now');
        return;
      }
      setTimeout(() => {
        receiver.accepted.push(delivery);
        res.writeHead(answer).end();
      }, delayMs);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  receiver.url = `http://127.0.0.1:${server.address().port}/hook`;
  receiver.stop = () => new Promise((r) => server.close(r));
  return receiver;
}
