'use strict';
// A conversation socket service as the seed's dashboard side runs it: POST /emit with a Bearer JWT
// verified by jsonwebtoken (HS256, APP_SECRET); GET /emits lists what it accepted, with the claims.
// Usage: APP_SECRET=... node socket-service.js; prints "listening <port>" once it accepts connections.

const http = require('node:http');
const jwt = require('jsonwebtoken');

const secret = process.env.APP_SECRET;
if (!secret) {
  console.error('socket-service: APP_SECRET is not set');
  process.exit(2);
}
const emits = [];
const refused = [];

function body(request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function answer(response, status, payload) {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(payload));
}

const server = http.createServer(async (request, response) => {
  if (request.method === 'GET' && request.url === '/emits') return answer(response, 200, { emits, refused });
  if (request.method !== 'POST' || request.url !== '/emit') return answer(response, 404, { error: 'not found' });
  const token = (request.headers.authorization || '').replace(/^Bearer /, '');
  let claims;
  try {
    claims = jwt.verify(token, secret, { algorithms: ['HS256'] });
  } catch (error) {
    refused.push(String(error.message));
    return answer(response, 401, { error: error.message });
  }
  const { event, data } = JSON.parse(await body(request));
  emits.push({ event, data, claims, idempotencyKey: request.headers['idempotency-key'] || null });
  return answer(response, 200, { ok: true });
});

server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
