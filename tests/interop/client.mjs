// A SessionStore client built from the .proto alone (no dspex_actors code), so the
// bridge is shown usable from another language.
//
//   node client.mjs ADDRESS SESSION_ID TOKEN
//
// Attaches to a session a Python handle created, reads the Python variable
// "greeting", registers and sets "from_node", reads it back, provokes a validation
// error and a version conflict and decodes their ErrorDetail trailers, imports a
// variable as SessionColumns and exports the session as columns. Prints one JSON
// object with what it saw; tests/test_bridge_interop.py checks it and the session.

import path from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { decode, encode } from "@msgpack/msgpack";
import protobuf from "protobufjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.resolve(here, "..", "..", "proto");
const protoFile = "dspex_actors/v1/session_store.proto";

const [address, sessionId, token] = process.argv.slice(2);
if (!address || !sessionId || !token) {
  console.error("usage: node client.mjs ADDRESS SESSION_ID TOKEN");
  process.exit(2);
}

const definition = protoLoader.loadSync(protoFile, {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: Number,
  defaults: true,
});
const { SessionStore } = grpc.loadPackageDefinition(definition).dspex_actors.v1;
const client = new SessionStore(address, grpc.credentials.createInsecure());

const root = new protobuf.Root();
root.resolvePath = (_origin, target) => path.resolve(protoRoot, target);
root.loadSync(protoFile, { keepCase: true });
const ErrorDetail = root.lookupType("dspex_actors.v1.ErrorDetail");

// Every call carries the token and a deadline.
function call(method, request) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const deadline = new Date(Date.now() + 5000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

// The status of a failed call, with its ErrorDetail decoded from the trailers.
async function failure(method, request) {
  try {
    await call(method, request);
  } catch (error) {
    const [raw] = error.metadata.get("dspex-error-bin");
    const detail = ErrorDetail.decode(raw);
    return {
      code: grpc.status[error.code],
      error_class: detail.error_class,
      message: detail.message,
      details: detail.details.length ? decode(detail.details) : {},
    };
  }
  throw new Error(`${method} was expected to fail`);
}

const opened = await call("OpenSession", { session_id: sessionId, create_if_missing: false });
const greeting = decode(
  (await call("GetVariable", { session_id: sessionId, identifier: "greeting" })).value,
);
const registered = await call("RegisterVariable", {
  session_id: sessionId,
  name: "from_node",
  type: "float",
  initial_value: encode(0.25),
  constraints: encode({ min: 0.0, max: 1.0 }),
  description: "written by the Node.js client",
});
const set = await call("SetVariable", {
  session_id: sessionId,
  identifier: "from_node",
  value: encode(0.75),
  metadata: encode({ source: "node" }),
});
const readBack = decode(
  (await call("GetVariable", { session_id: sessionId, identifier: registered.var_id })).value,
);
const invalid = await failure("SetVariable", {
  session_id: sessionId,
  identifier: "from_node",
  value: encode(5.5),
});
const conflict = await failure("SetVariable", {
  session_id: sessionId,
  identifier: "from_node",
  value: encode(0.5),
  expected_version: 0,
});
const listed = await call("ListVariables", { session_id: sessionId, pattern: "from_*" });

// A variable imported as SessionColumns built by hand, then the session exported as
// columns: the fast whole-session form, from the .proto alone too.
const now = Date.now() / 1000;
const imported = await call("ImportSession", {
  session_id: sessionId,
  columns: {
    session_id: "made-in-node",
    ids: [`var_${"0".repeat(31)}1`],
    names: ["node_columns"],
    definitions: [{ type: "integer", constraints: encode({ min: 0 }) }],
    definition: [0],
    values: encode([42]),
    versions: [3],
    created_at: [now],
    last_updated_at: [now],
    variable_metadata: encode([{ via: "columns" }]),
  },
});
const { columns } = await call("ExportSession", { session_id: sessionId, columnar: true });

client.close();
console.log(
  JSON.stringify({
    attached: !opened.created,
    greeting,
    var_id: registered.var_id,
    version: set.version,
    read_back: readBack,
    invalid,
    conflict,
    listed: listed.variables.map((v) => ({ name: v.name, type: v.type, version: v.version })),
    imported: imported.count,
    exported: {
      names: columns.names,
      types: columns.definition.map((i) => columns.definitions[i].type),
      values: decode(columns.values),
      versions: columns.versions,
    },
  }),
);
