// The client side against app.js: service invocation, publish to a topic app.js subscribes
// to, and the HTTP actor client (ActorProxyBuilder) with a reminder. TARGET_APP_ID names app.js's app.
"use strict";
const { ActorId, ActorProxyBuilder, HttpMethod } = require("@dapr/dapr");
const { newClient, check, main, until } = require("./common");
const { CounterActor } = require("./actor");

main(async (r) => {
  const target = process.env.TARGET_APP_ID;
  const client = newClient();
  await client.start();

  const echoed = await client.invoker.invoke(target, "echo?x=1", HttpMethod.POST, { order: 7 });
  // The SDK's HTTP server hands the callback req.originalUrl as "query": the query string must arrive.
  check(r, "invoker.invoke", echoed && echoed.body && echoed.body.order === 7
    && String(echoed.query).endsWith("/echo?x=1") && echoed.contentType === "application/json", echoed);

  const published = await client.pubsub.publish("pubsub", "orders", { order: 8 });
  check(r, "pubsub.publish", published && !published.error, published);
  const got = await until(async () => {
    const list = await client.invoker.invoke(target, "received", HttpMethod.GET);
    return Array.isArray(list) && list.find((m) => m.data && m.data.order === 8);
  }, 15000, "the subscriber to get the message");
  check(r, "server.pubsub.subscribe", got.topic === undefined || got.topic === "orders", got);

  const bulk = await client.pubsub.publishBulk("pubsub", "orders", [{ order: 9 }, { order: 10 }]);
  check(r, "pubsub.publishBulk", bulk && bulk.failedMessages && bulk.failedMessages.length === 0, bulk);
  const raw = await client.pubsub.publish("pubsub", "orders", { order: 11 }, { metadata: { rawPayload: "true" } });
  check(r, "pubsub.publish.rawPayload", raw && !raw.error, raw);
  const all = await until(async () => {
    const list = await client.invoker.invoke(target, "received", HttpMethod.GET);
    const orders = new Set(list.map((m) => m.data && m.data.order));
    return [9, 10, 11].every((n) => orders.has(n)) && list;
  }, 15000, "the bulk and raw messages");
  check(r, "server.pubsub.bulk+raw", all.length >= 4, all);

  const bulkSub = await client.pubsub.publishBulk("pubsub", "bulk-orders", [{ order: 12 }, { order: 13 }]);
  check(r, "pubsub.publishBulk.to-bulk-subscriber", bulkSub.failedMessages.length === 0, bulkSub);
  const inBulk = await until(async () => {
    const list = await client.invoker.invoke(target, "received", HttpMethod.GET);
    const orders = list.filter((m) => m.topic === "bulk-orders").map((m) => m.data && m.data.order);
    return orders.includes(12) && orders.includes(13) && orders;
  }, 15000, "the bulk subscriber to get both messages");
  check(r, "server.pubsub.subscribeBulk", inBulk.length === 2, inBulk);

  const ticked = await until(async () => {
    const t = await client.invoker.invoke(target, "ticks", HttpMethod.GET);
    return t.count >= 1 && t;
  }, 15000, "the cron input binding to reach the app");
  check(r, "server.binding.receive", ticked.count >= 1, ticked);

  const builder = new ActorProxyBuilder(CounterActor, client);
  const actor = builder.build(new ActorId("c1"));
  const one = await actor.increment(2);
  const two = await actor.increment(3);
  const count = await actor.count();
  check(r, "actor.invoke+state", one === 2 && two === 5 && count === 5, { one, two, count });
  const other = await builder.build(new ActorId("c2")).count();
  check(r, "actor.isolation", other === 0, other);

  await actor.startReminder();
  const fired = await until(async () => {
    const list = await actor.reminders();
    return list.length >= 2 && list;
  }, 15000, "two reminder calls");
  check(r, "actor.reminder", fired[0] === "tock", fired);
  await actor.stopReminder();

  const timer = builder.build(new ActorId("t1"));
  await timer.startTimer();
  const ticks = await until(async () => {
    const list = await timer.ticks();
    return list.length >= 2 && list;
  }, 15000, "two timer calls");
  check(r, "actor.timer", ticks[0] === "tick-state", ticks);
  await timer.stopTimer();

  await client.stop();
});
