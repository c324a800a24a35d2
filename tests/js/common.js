// Shared by the scripts: a DaprClient over HTTP on the sidecar named by the environment,
// and the "one JSON line, non-zero exit on failure" convention the pytest driver reads.
"use strict";
const { DaprClient, CommunicationProtocolEnum, LogLevel } = require("@dapr/dapr");

function clientOptions() {
  return {
    daprHost: process.env.DAPR_HOST || "127.0.0.1",
    daprPort: process.env.DAPR_HTTP_PORT,
    communicationProtocol: CommunicationProtocolEnum.HTTP,
    logger: { level: LogLevel.Error },
  };
}

function newClient() {
  if (!process.env.DAPR_HTTP_PORT) throw new Error("DAPR_HTTP_PORT is not set");
  return new DaprClient(clientOptions());
}

function check(results, name, ok, detail) {
  results[name] = ok ? "ok" : `FAIL: ${JSON.stringify(detail)}`;
}

// Runs fn(results), prints the results as one JSON line, exits 1 when any check failed or fn threw.
async function main(fn) {
  const results = {};
  let code = 0;
  try {
    await fn(results);
  } catch (err) {
    results.error = String(err && err.stack ? err.stack : err);
  }
  if (results.error || Object.values(results).some((v) => typeof v === "string" && v.startsWith("FAIL"))) code = 1;
  process.stdout.write(JSON.stringify(results) + "\n");
  process.exit(code);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

module.exports = { clientOptions, newClient, check, main, sleep, until };
