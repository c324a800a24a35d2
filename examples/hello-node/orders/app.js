// Hello, Pillion (Node.js half): the "orders" app. Plain `http` module, no npm packages.
// POST /orders arrives by service invocation; each order is saved in the state store through
// this app's sidecar. GET /orders reads the orders back from the state store.
"use strict";
const http = require("node:http");

const APP_PORT = Number(process.env.APP_PORT || 3000);
const SIDECAR = `http://127.0.0.1:${process.env.DAPR_HTTP_PORT || 3500}`;
const STORE = process.env.STATE_STORE || "statestore";
const ids = []; // keys of the orders saved so far, oldest first

async function sidecar(path, body) {
  const resp = await fetch(`${SIDECAR}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${await resp.text()}`);
  return resp.status === 204 ? null : resp.json();
}

function reply(res, status, payload) {
  const body = JSON.stringify(payload);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

async function handle(req, res) {
  if (req.method === "POST" && req.url === "/orders") {
    let raw = "";
    for await (const chunk of req) raw += chunk;
    const order = JSON.parse(raw);
    const key = `order-${order.id}`;
    await sidecar(`/v1.0/state/${STORE}`, [{ key, value: order }]);
    ids.push(key);
    console.log(`received order ${order.id}, saved as ${key}`);
    return reply(res, 201, { saved: key });
  }
  if (req.method === "GET" && req.url === "/orders") {
    const keys = ids.slice(-10);
    const items = keys.length ? await sidecar(`/v1.0/state/${STORE}/bulk`, { keys }) : [];
    return reply(res, 200, items.filter((i) => i.data !== undefined).map((i) => i.data));
  }
  reply(res, 404, { error: "not found" });
}

http
  .createServer((req, res) => handle(req, res).catch((err) => reply(res, 500, { error: String(err) })))
  .listen(APP_PORT, "127.0.0.1", () => console.log(`orders listening on ${APP_PORT}`));
