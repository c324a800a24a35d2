// The DaprClient (HTTP) building blocks that need no app: state, publish, output binding,
// secrets, metadata, lock and configuration. Component names are the ones
// tests/integration/test_js_sdk.py writes.
"use strict";
const { newClient, check, main, sleep } = require("./common");

main(async (r) => {
  const client = newClient();
  await client.start(); // waits on GET /v1.0/metadata, as the SDK does

  // State
  const saved = await client.state.save("statestore", [
    { key: "a", value: { kind: "fruit", name: "apple" } },
    { key: "b", value: { kind: "fruit", name: "banana" } },
    { key: "c", value: { kind: "veg", name: "carrot" } },
  ]);
  check(r, "state.save", !saved.error, saved);
  const a = await client.state.get("statestore", "a");
  check(r, "state.get", a && a.name === "apple", a);
  const missing = await client.state.get("statestore", "nope");
  check(r, "state.get.missing", missing === "" || missing === undefined || missing === null, missing);
  const bulk = await client.state.getBulk("statestore", ["a", "b", "nope"]);
  const byKey = Object.fromEntries(bulk.map((i) => [i.key, i.data]));
  check(r, "state.getBulk", bulk.length === 3 && byKey.b.name === "banana" && byKey.nope === undefined, bulk);
  const deleted = await client.state.delete("statestore", "b");
  const afterDelete = await client.state.get("statestore", "b");
  check(r, "state.delete", !deleted.error && !afterDelete, { deleted, afterDelete });
  await client.state.transaction("statestore", [
    { operation: "upsert", request: { key: "t1", value: { kind: "fruit", name: "tomato" } } },
    { operation: "delete", request: { key: "c" } },
  ]);
  const t1 = await client.state.get("statestore", "t1");
  const c = await client.state.get("statestore", "c");
  check(r, "state.transaction", t1 && t1.name === "tomato" && !c, { t1, c });
  const query = await client.state.query("statestore", {
    filter: { EQ: { kind: "fruit" } },
    sort: [{ key: "name", order: "ASC" }],
    page: { limit: 10 },
  });
  const names = (query.results || []).map((i) => i.data.name);
  check(r, "state.query", JSON.stringify(names) === JSON.stringify(["apple", "tomato"]), query);

  // Optimistic concurrency: the etag read by getBulk is accepted once, then it is stale.
  const [itemA] = await client.state.getBulk("statestore", ["a"]);
  const fresh = await client.state.save("statestore", [
    { key: "a", value: { kind: "fruit", name: "apple" }, etag: itemA.etag, options: { concurrency: "first-write" } },
  ]);
  const stale = await client.state.save("statestore", [
    { key: "a", value: { kind: "fruit", name: "apricot" }, etag: itemA.etag, options: { concurrency: "first-write" } },
  ]);
  const stillApple = await client.state.get("statestore", "a");
  check(r, "state.save.etag", itemA.etag && !fresh.error && stale.error && stillApple.name === "apple",
    { itemA, fresh, stale: String(stale.error), stillApple });
  const staleDelete = await client.state.delete("statestore", "a", { etag: itemA.etag });
  const survived = await client.state.get("statestore", "a");
  check(r, "state.delete.etag", staleDelete.error && survived, String(staleDelete.error));

  // Request metadata goes in the query string (?metadata.ttlInSeconds=1)
  const ttl = await client.state.save("statestore", [{ key: "brief", value: "soon gone" }],
    { metadata: { ttlInSeconds: "1" } });
  const before = await client.state.get("statestore", "brief");
  await sleep(2200);
  const after = await client.state.get("statestore", "brief");
  check(r, "state.save.ttl-metadata", !ttl.error && before === "soon gone" && !after, { ttl, before, after });

  // Pub/sub: publish only (the subscriber side is app.js / drive.js)
  const published = await client.pubsub.publish("pubsub", "nobody-listens", { hello: "world" });
  check(r, "pubsub.publish", published && !published.error, published);

  // Output binding on bindings.localstorage
  await client.binding.send("files", "create", "hello from js", { fileName: "js.txt" });
  const read = await client.binding.send("files", "get", "", { fileName: "js.txt" });
  check(r, "binding.send", read === "hello from js", read);

  // Secrets on secretstores.local.file
  const secret = await client.secret.get("secrets", "db-password");
  check(r, "secret.get", secret && secret["db-password"] === "s3cret", secret);
  const allSecrets = await client.secret.getBulk("secrets");
  const apiKey = allSecrets && allSecrets["api-key"];
  check(r, "secret.getBulk", apiKey && apiKey["api-key"] === "k-123", allSecrets);

  // Metadata
  const meta = await client.metadata.get();
  const comps = (meta.components || []).map((x) => x.name).sort();
  check(r, "metadata.get",
    meta.id === process.env.EXPECT_APP_ID && comps.includes("statestore") && comps.includes("lockstore"), meta);
  await client.metadata.set("js-sdk", "yes");
  const meta2 = await client.metadata.get();
  check(r, "metadata.set", meta2.extended && meta2.extended["js-sdk"] === "yes", meta2.extended);

  // Distributed lock on lock.lmdb (v1.0-alpha1)
  const first = await client.lock.lock("lockstore", "res1", "owner-a", 30);
  const second = await client.lock.lock("lockstore", "res1", "owner-b", 30);
  check(r, "lock.lock", first.success === true && second.success === false, { first, second });
  const wrongOwner = await client.lock.unlock("lockstore", "res1", "owner-b");
  const unlocked = await client.lock.unlock("lockstore", "res1", "owner-a");
  const gone = await client.lock.unlock("lockstore", "res1", "owner-a");
  // LockStatus enum: 0 Success, 1 LockDoesNotExist, 2 LockBelongsToOthers, 3 InternalError
  check(r, "lock.unlock", unlocked.status === 0 && wrongOwner.status === 2 && gone.status === 1,
    { wrongOwner, unlocked, gone });

  // Configuration: the SDK itself refuses configuration over HTTP; record what it does.
  try {
    const cfg = await client.configuration.get("configstore", ["greeting"]);
    r["configuration.get"] = cfg && cfg.items && cfg.items.greeting ? "ok" : `FAIL: ${JSON.stringify(cfg)}`;
  } catch (err) {
    r["configuration.get"] = `http-not-supported-by-sdk: ${err.name || err.constructor.name}`;
  }

  const healthy = await client.health.isHealthy();
  check(r, "health.isHealthy", healthy === true, healthy);

  // Last: ask the sidecar to shut down (POST /v1.0/shutdown); the driver checks it exits.
  await client.sidecar.shutdown();
  r["sidecar.shutdown"] = "ok";
  await client.stop();
});
