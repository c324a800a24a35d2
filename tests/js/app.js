// The app side: a DaprServer (HTTP) that subscribes to a topic, serves invocation methods
// and hosts CounterActor. Started by the sidecar (`pillion run ... -- node app.js`) or
// beside one started with --app-port; APP_PORT and DAPR_HTTP_PORT come from the environment.
"use strict";
const { DaprServer, CommunicationProtocolEnum, HttpMethod, LogLevel } = require("@dapr/dapr");
const { clientOptions } = require("./common");
const { CounterActor } = require("./actor");

async function start() {
  const server = new DaprServer({
    serverHost: "127.0.0.1",
    serverPort: process.env.APP_PORT,
    communicationProtocol: CommunicationProtocolEnum.HTTP,
    clientOptions: clientOptions(),
    logger: { level: LogLevel.Error },
  });
  const received = [];

  await server.pubsub.subscribe("pubsub", "orders", async (data, headers) => {
    received.push({ data, topic: headers && headers["ce-topic"] });
  });
  // Bulk subscription: the sidecar delivers {entries: [...]} and the SDK calls back per entry.
  await server.pubsub.subscribeBulk("pubsub", "bulk-orders", async (data) => {
    received.push({ data, topic: "bulk-orders" });
  }, { maxMessagesCount: 10, maxAwaitDurationMs: 200 });
  await server.invoker.listen("received", async () => received, { method: HttpMethod.GET });

  // Input binding: bindings.cron named "tick" (the SDK answers the sidecar's OPTIONS probe).
  const ticks = [];
  await server.binding.receive("tick", async (data) => {
    ticks.push(data === undefined ? null : data);
  });
  await server.invoker.listen("ticks", async () => ({ count: ticks.length }), { method: HttpMethod.GET });
  await server.invoker.listen("echo", async ({ body, query, headers }) => ({
    body: typeof body === "string" ? JSON.parse(body) : body,
    query,
    contentType: headers["content-type"],
  }), { method: HttpMethod.POST });

  await server.actor.init();
  await server.actor.registerActor(CounterActor);
  await server.start();
  console.log(`js app listening on ${process.env.APP_PORT}`);
}

start().catch((err) => {
  console.error(err);
  process.exit(1);
});
