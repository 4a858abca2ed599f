// A SessionStore client built from the .proto alone (no dspex_actors code), so the
// bridge is shown usable from another language.
//
//   node client.mjs ADDRESS SESSION_ID TOKEN
//
// Attaches to a session a Python handle created, reads the Python variable
// "greeting", registers and sets "from_node", reads it back, provokes a validation
// error and a version conflict and reads them as any gRPC client would: the
// standard rich status (`grpc-status-details-bin` -> google.rpc.Status, whose
// details are google.rpc.ErrorInfo, google.rpc.BadRequest and our ErrorDetail; the
// google.rpc protos come from the google-proto-files package). Sets the Python
// float choice "py_choice" to 1.0 (which msgpack sends as the integer 1), registers
// a choice whose choices are whole numbers as JavaScript writes them, imports a
// variable as SessionColumns and exports the session as columns. Prints one JSON
// object with what it saw; tests/test_bridge_interop.py checks it and the session.

import path from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { decode, encode } from "@msgpack/msgpack";
import { getProtoPath } from "google-proto-files";
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

// Our .proto, and Google's status.proto and error_details.proto (with their imports).
const googleRoot = path.dirname(getProtoPath());
const root = new protobuf.Root();
root.resolvePath = (_origin, target) =>
  path.resolve(target.startsWith("google/") ? googleRoot : protoRoot, target);
root.loadSync([protoFile, "google/rpc/status.proto", "google/rpc/error_details.proto"], {
  keepCase: true,
});
const Status = root.lookupType("google.rpc.Status");
const asObject = { longs: Number, defaults: true, arrays: true, objects: true };

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

// The rich status of a failed call: google.rpc.Status from the trailer
// grpc-status-details-bin, each of its details unpacked by its type URL.
function richStatus(error) {
  const [raw] = error.metadata.get("grpc-status-details-bin");
  const status = Status.decode(raw);
  const details = {};
  for (const any of status.details) {
    const type = root.lookupType(any.type_url.slice(any.type_url.lastIndexOf("/") + 1));
    details[type.fullName.slice(1)] = type.toObject(type.decode(any.value), asObject);
  }
  return { code: status.code, message: status.message, details };
}

// What a failed call said: its code, the standard details, and our ErrorDetail.
async function failure(method, request) {
  try {
    await call(method, request);
  } catch (error) {
    const status = richStatus(error);
    const info = status.details["google.rpc.ErrorInfo"];
    const badRequest = status.details["google.rpc.BadRequest"];
    const detail = status.details["dspex_actors.v1.ErrorDetail"];
    return {
      code: grpc.status[error.code],
      status_code_matches: status.code === error.code,
      status_message_matches: status.message === error.details,
      detail_types: Object.keys(status.details),
      reason: info.reason,
      domain: info.domain,
      info: info.metadata,
      violations: (badRequest ? badRequest.field_violations : []).map((v) => ({
        field: v.field,
        description: v.description,
        reason: v.reason,
      })),
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

// Choices compare numbers by value: JavaScript has one number type, and msgpack
// sends a whole 1.0 as the integer 1.
const oneOnTheWire = [...encode(1.0)];
const pyChoiceSet = await call("SetVariable", {
  session_id: sessionId,
  identifier: "py_choice",
  value: encode(1.0),
});
const pyChoice = decode(
  (await call("GetVariable", { session_id: sessionId, identifier: "py_choice" })).value,
);
const choiceNotABoolean = await failure("SetVariable", {
  session_id: sessionId,
  identifier: "py_choice",
  value: encode(true),
});
await call("RegisterVariable", {
  session_id: sessionId,
  name: "node_choice",
  type: "choice",
  initial_value: encode(2),
  constraints: encode({ choices: [0.5, 1, 2] }),
});
const nodeChoiceSet = await call("SetVariable", {
  session_id: sessionId,
  identifier: "node_choice",
  value: encode(1.0),
});
const nodeChoice = decode(
  (await call("GetVariable", { session_id: sessionId, identifier: "node_choice" })).value,
);

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
    choices: {
      one_on_the_wire: oneOnTheWire,
      py_choice: { version: pyChoiceSet.version, value: pyChoice },
      not_a_boolean: choiceNotABoolean,
      node_choice: { version: nodeChoiceSet.version, value: nodeChoice },
    },
    imported: imported.count,
    exported: {
      names: columns.names,
      types: columns.definition.map((i) => columns.definitions[i].type),
      values: decode(columns.values),
      versions: columns.versions,
    },
  }),
);
