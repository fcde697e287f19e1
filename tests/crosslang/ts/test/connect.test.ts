// A TypeScript service calling the shop's Connect port (`wirebus run ... --connect-port`)
// with @connectrpc/connect-node: the Connect protocol (JSON and binary, HTTP/1.1) and
// gRPC-Web; the errors carry the same google.rpc details as on the gRPC port.
//
//   WIREBUS_CONNECT_URL  base URL of the Connect port, e.g. http://127.0.0.1:8080
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { LineItemSchema, OrderService } from "../gen/shop/orders/v1/orders_pb.js";

const CONNECT_URL = process.env.WIREBUS_CONNECT_URL;
const opts = { timeoutMs: 10_000 };

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("the call succeeded");
}

function transports(baseUrl: string): Record<string, Transport> {
  return {
    "Connect, JSON": createConnectTransport({ baseUrl, httpVersion: "1.1" }),
    "Connect, binary": createConnectTransport({
      baseUrl,
      httpVersion: "1.1",
      useBinaryFormat: true,
    }),
    "gRPC-Web": createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
  };
}

describe("Connect clients", { skip: !CONNECT_URL && "WIREBUS_CONNECT_URL is not set" }, () => {
  for (const [name, transport] of Object.entries(transports(CONNECT_URL ?? "http://x"))) {
    test(`${name}: place, read back, list, and the errors' details`, async () => {
      const client = createClient(OrderService, transport);
      const customerId = `ts-connect-${randomUUID()}`;
      const items = [create(LineItemSchema, { sku: "book", quantity: 2, priceCents: 1250n })];
      const { orderId } = await client.placeOrder({ customerId, items }, opts);
      const order = await client.getOrder({ orderId }, opts);
      assert.equal(order.customerId, customerId);
      assert.equal(order.totalCents, 2500n);
      const listed: string[] = [];
      for await (const o of client.listOrders({ customerId }, opts)) listed.push(o.orderId);
      assert.deepEqual(listed, [orderId]);
      const missing = await rejection(client.getOrder({ orderId: "no-such-order" }, opts));
      assert.equal(Code[missing.code], "NotFound", missing.message);
      assert.equal(missing.findDetails(ErrorInfoSchema)[0]?.reason, "ORDER_NOT_FOUND");
      const invalid = await rejection(client.placeOrder({ customerId, items: [] }, opts));
      assert.equal(Code[invalid.code], "InvalidArgument", invalid.message);
      const [bad] = invalid.findDetails(BadRequestSchema);
      assert.deepEqual(
        bad?.fieldViolations.map((v) => v.field),
        ["items"],
      );
    });
  }
});
