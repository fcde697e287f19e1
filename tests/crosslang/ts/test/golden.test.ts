// The golden files of tests/golden, written by Python (upb), read by protobuf-es v2:
// every .binpb decodes with its generated schema to the values of manifest.json,
// and re-encodes to the very same bytes.
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { test } from "node:test";
import {
  createRegistry,
  equals,
  fromBinary,
  fromJson,
  toBinary,
  toJson,
  type DescMessage,
  type JsonValue,
} from "@bufbuild/protobuf";
import { file_shop_orders_v1_orders } from "../gen/shop/orders/v1/orders_pb.js";
import { file_shop_payments_v1_payments } from "../gen/shop/payments/v1/payments_pb.js";

const GOLDEN = new URL("../../../golden/", import.meta.url);
const registry = createRegistry(file_shop_orders_v1_orders, file_shop_payments_v1_payments);

type Entry = { file: string; type: string; json: JsonValue };
const manifest = JSON.parse(readFileSync(new URL("manifest.json", GOLDEN), "utf8")) as Entry[];

function schemaOf(typeName: string): DescMessage {
  const schema = registry.getMessage(typeName);
  assert.ok(schema, `no generated schema for ${typeName}`);
  return schema;
}

test("the manifest names every golden file, once", () => {
  const files = readdirSync(GOLDEN).filter((f) => f.endsWith(".binpb")).sort();
  assert.ok(files.length > 0, "no golden files");
  assert.deepEqual(manifest.map((e) => e.file).sort(), files);
});

test("every shop message of the protos has a golden file", () => {
  const covered = new Set(manifest.map((e) => e.type));
  const messages = [file_shop_orders_v1_orders, file_shop_payments_v1_payments].flatMap((f) =>
    f.messages.map((m) => m.typeName),
  );
  assert.deepEqual(messages.filter((m) => !covered.has(m)), []);
});

for (const entry of manifest) {
  test(`${entry.file} (${entry.type})`, () => {
    const schema = schemaOf(entry.type);
    const bytes = new Uint8Array(readFileSync(new URL(entry.file, GOLDEN)));
    const decoded = fromBinary(schema, bytes);
    const expected = fromJson(schema, entry.json, { registry });
    assert.ok(equals(schema, decoded, expected), `${entry.file} differs from manifest.json`);
    // the same canonical JSON as Python's json_format.MessageToDict
    assert.deepEqual(toJson(schema, decoded, { registry }), entry.json);
    // re-encoded, byte for byte, both from the decoded message and from the JSON alone
    assert.deepEqual(toBinary(schema, decoded), bytes);
    assert.deepEqual(toBinary(schema, expected), bytes);
  });
}
