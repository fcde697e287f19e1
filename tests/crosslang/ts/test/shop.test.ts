// A TypeScript service against the running shop (`wirebus run examples.shop.app:app`):
// a gRPC client (Connect's gRPC transport over HTTP/2) and a Kafka consumer (kafkajs)
// of the events the gateway published for the order the client placed.
//
//   WIREBUS_GRPC_ADDRESS     host:port of the gateway, e.g. 127.0.0.1:50051
//   WIREBUS_KAFKA_BOOTSTRAP  host:port of a Kafka broker, e.g. 127.0.0.1:9092
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { create, fromBinary, type DescMessage } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { Kafka, logLevel, type IHeaders, type KafkaMessage } from "kafkajs";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import {
  LineItemSchema,
  OrderPlacedSchema,
  OrderService,
  OrderStatus,
  type Order,
} from "../gen/shop/orders/v1/orders_pb.js";
import { PaymentCapturedSchema } from "../gen/shop/payments/v1/payments_pb.js";

const GRPC_ADDRESS = process.env.WIREBUS_GRPC_ADDRESS;
const KAFKA_BOOTSTRAP = process.env.WIREBUS_KAFKA_BOOTSTRAP;
const READER_GROUP = process.env.WIREBUS_READER_GROUP || undefined;
const PAID_WITHIN_MS = 60_000;
const EVENTS_WITHIN_MS = 30_000; // the client saw PAID: both events are on Kafka by now
const CALL_TIMEOUT_MS = 10_000;

const customerId = `ts-${randomUUID()}`;
const items = [
  create(LineItemSchema, { sku: "book", quantity: 2, priceCents: 1250n }),
  create(LineItemSchema, { sku: "pen", quantity: 3, priceCents: 199n }),
];
const totalCents = 2n * 1250n + 3n * 199n;
const placed: { orderId?: string; order?: Order } = {};

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("the call succeeded");
}

describe("gRPC client", { skip: !GRPC_ADDRESS && "WIREBUS_GRPC_ADDRESS is not set" }, () => {
  let sessions: Http2SessionManager;
  let client: Client<typeof OrderService>;
  const opts = { timeoutMs: CALL_TIMEOUT_MS };

  before(() => {
    const baseUrl = `http://${GRPC_ADDRESS}`;
    sessions = new Http2SessionManager(baseUrl);
    client = createClient(OrderService, createGrpcTransport({ baseUrl, sessionManager: sessions }));
  });
  after(() => sessions?.abort());

  test("PlaceOrder, then GetOrder until the payment (via Kafka) made it PAID", async () => {
    const reply = await client.placeOrder({ customerId, items }, opts);
    assert.match(reply.orderId, /\S/);
    placed.orderId = reply.orderId;

    const deadline = Date.now() + PAID_WITHIN_MS;
    let order = await client.getOrder({ orderId: reply.orderId }, opts);
    while (order.status !== OrderStatus.PAID && Date.now() < deadline) {
      assert.equal(order.status, OrderStatus.PENDING);
      await sleep(200);
      order = await client.getOrder({ orderId: reply.orderId }, opts);
    }
    assert.equal(OrderStatus[order.status], "PAID", `not PAID within ${PAID_WITHIN_MS} ms`);
    assert.equal(order.orderId, reply.orderId);
    assert.equal(order.customerId, customerId);
    assert.equal(order.totalCents, totalCents);
    assert.deepEqual(
      order.items.map((i) => [i.sku, i.quantity, i.priceCents]),
      items.map((i) => [i.sku, i.quantity, i.priceCents]),
    );
    assert.ok(order.placedAt, "placedAt is set");
    const placedAt = timestampDate(order.placedAt).getTime();
    assert.ok(Math.abs(Date.now() - placedAt) < 10 * 60_000, `placedAt ${placedAt} is not now`);
    placed.order = order;
  });

  test("ListOrders streams the customer's orders, oldest first", async () => {
    const second = await client.placeOrder(
      { customerId, items: [create(LineItemSchema, { sku: "mug", quantity: 1, priceCents: 800n })] },
      opts,
    );
    const streamed: string[] = [];
    for await (const order of client.listOrders({ customerId }, opts)) {
      assert.equal(order.customerId, customerId);
      streamed.push(order.orderId);
    }
    assert.deepEqual(streamed, [placed.orderId, second.orderId]);
  });

  test("CancelOrder succeeds once, then FAILED_PRECONDITION", async () => {
    const orderId = placed.orderId;
    assert.ok(orderId, "PlaceOrder ran first");
    await client.cancelOrder({ orderId, reason: "changed mind" }, opts);
    assert.equal((await client.getOrder({ orderId }, opts)).status, OrderStatus.CANCELLED);
    const err = await rejection(client.cancelOrder({ orderId, reason: "again" }, opts));
    assert.equal(Code[err.code], "FailedPrecondition", err.message);
    const [info] = err.findDetails(ErrorInfoSchema);
    assert.equal(info?.reason, "ORDER_ALREADY_CANCELLED");
  });

  test("PlaceOrder without items: INVALID_ARGUMENT with a BadRequest field violation", async () => {
    const err = await rejection(client.placeOrder({ customerId, items: [] }, opts));
    assert.equal(Code[err.code], "InvalidArgument", err.message);
    const [bad] = err.findDetails(BadRequestSchema);
    assert.ok(bad, `no google.rpc.BadRequest in ${JSON.stringify(err.details)}`);
    assert.deepEqual(
      bad.fieldViolations.map((v) => v.field),
      ["items"],
    );
    assert.match(bad.fieldViolations[0].description, /item/);
  });

  test("GetOrder of an unknown order: NOT_FOUND with ErrorInfo ORDER_NOT_FOUND", async () => {
    const orderId = `missing-${randomUUID()}`;
    const err = await rejection(client.getOrder({ orderId }, opts));
    assert.equal(Code[err.code], "NotFound", err.message);
    const [info] = err.findDetails(ErrorInfoSchema);
    assert.ok(info, `no google.rpc.ErrorInfo in ${JSON.stringify(err.details)}`);
    assert.equal(info.reason, "ORDER_NOT_FOUND");
    assert.equal(info.domain, "shop");
    assert.equal(info.metadata.order_id, orderId);
  });
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

function headerText(headers: IHeaders | undefined, name: string): string | undefined {
  const value = headers?.[name];
  const one = Array.isArray(value) ? value[0] : value;
  return one === undefined ? undefined : one.toString();
}

/** The CloudEvents binary-mode headers wirebus writes, checked; returns the record's value. */
function checkEvent(record: KafkaMessage, schema: DescMessage, orderId: string): Uint8Array {
  const h = (name: string) => headerText(record.headers, name);
  assert.equal(record.key?.toString(), orderId, "the key is the order id");
  assert.equal(h("ce_specversion"), "1.0");
  assert.match(h("ce_id") ?? "", UUID);
  assert.equal(h("ce_source"), "shop");
  assert.equal(h("ce_type"), schema.typeName);
  const time = h("ce_time") ?? "";
  assert.match(time, RFC3339);
  assert.ok(Math.abs(Date.now() - Date.parse(time)) < 10 * 60_000, `ce_time ${time} is not now`);
  assert.equal(h("content-type"), "application/protobuf");
  assert.equal(h("ce_dataschema"), `type.googleapis.com/${schema.typeName}`);
  assert.ok(record.value, "the record has a value");
  return new Uint8Array(record.value);
}

/**
 * Reads `topics` from the start (a fresh group) until a record with key `key` of every
 * type in `wanted` has arrived, skipping other orders' events and other types (the
 * backlog of topics that served other runs; this order's OrderCancelled). Resolves to
 * ce_type -> the first such record; rejects naming the missing types after `withinMs`.
 *
 *   const found = await awaitEvents(["shop.orders.v1"], orderId, [OrderPlacedSchema.typeName]);
 */
async function awaitEvents(
  topics: string[],
  key: string,
  wanted: string[],
  withinMs = EVENTS_WITHIN_MS,
): Promise<Map<string, KafkaMessage>> {
  const kafka = new Kafka({
    clientId: "wirebus-crosslang-ts",
    brokers: [KAFKA_BOOTSTRAP!],
    logLevel: logLevel.ERROR,
    retry: { retries: 5 },
  });
  // WIREBUS_READER_GROUP (set by the Python driver) starts at the shop topics' ends as
  // they were when the shop started: only this run's events, not a long-lived broker's
  // backlog. Without it (or for topics it has no offsets for), read from the beginning.
  const readerGroup = topics.every((topic) => topic.startsWith("shop.")) ? READER_GROUP : undefined;
  const consumer = kafka.consumer({ groupId: readerGroup ?? `wirebus-crosslang-ts-${randomUUID()}` });
  const found = new Map<string, KafkaMessage>();
  let read = 0;
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics, fromBeginning: readerGroup === undefined });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => {
        const missing = wanted.filter((type) => !found.has(type)).join(", ");
        reject(new Error(`within ${withinMs} ms no ${missing} with key ${key} on ${topics} (${read} records read)`));
      }, withinMs);
      consumer
        .run({
          eachMessage: async ({ message }) => {
            read++;
            const type = headerText(message.headers, "ce_type");
            if (message.key?.toString() !== key || !type || !wanted.includes(type)) return;
            if (!found.has(type)) found.set(type, message);
            if (found.size === wanted.length) resolve();
          },
        })
        .catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await consumer.disconnect();
  }
  return found;
}

describe("Kafka consumer", { skip: !KAFKA_BOOTSTRAP && "WIREBUS_KAFKA_BOOTSTRAP is not set" }, () => {
  test("reads OrderPlaced and PaymentCaptured of the placed order", async (t) => {
    if (!placed.orderId) return t.skip("the gRPC client placed no order");
    const orderId = placed.orderId;
    // the order's OrderCancelled is on Kafka too, and may come before its PaymentCaptured
    const found = await awaitEvents(
      ["shop.orders.v1", "shop.payments.v1"],
      orderId,
      [OrderPlacedSchema.typeName, PaymentCapturedSchema.typeName],
    );

    const orderPlaced = fromBinary(
      OrderPlacedSchema,
      checkEvent(found.get(OrderPlacedSchema.typeName)!, OrderPlacedSchema, orderId),
    );
    assert.equal(orderPlaced.orderId, orderId);
    assert.equal(orderPlaced.customerId, customerId);
    assert.equal(orderPlaced.totalCents, totalCents);
    assert.deepEqual(
      orderPlaced.items.map((i) => [i.sku, i.quantity, i.priceCents]),
      items.map((i) => [i.sku, i.quantity, i.priceCents]),
    );
    assert.deepEqual(orderPlaced.placedAt, placed.order?.placedAt, "the event's placedAt is the order's");

    const captured = fromBinary(
      PaymentCapturedSchema,
      checkEvent(found.get(PaymentCapturedSchema.typeName)!, PaymentCapturedSchema, orderId),
    );
    assert.equal(captured.orderId, orderId);
    assert.equal(captured.amountCents, totalCents);
    assert.match(captured.paymentId, UUID);
    assert.ok(captured.capturedAt && orderPlaced.placedAt);
    assert.ok(
      timestampDate(captured.capturedAt) >= timestampDate(orderPlaced.placedAt),
      "captured after placed",
    );
  });
});

const BACKLOG = {
  orders: process.env.WIREBUS_BACKLOG_ORDERS_TOPIC,
  payments: process.env.WIREBUS_BACKLOG_PAYMENTS_TOPIC,
  orderId: process.env.WIREBUS_BACKLOG_ORDER_ID,
  customerId: process.env.WIREBUS_BACKLOG_CUSTOMER_ID,
  totalCents: process.env.WIREBUS_BACKLOG_TOTAL_CENTS,
};

describe(
  "Kafka consumer on topics with a backlog",
  { skip: !(KAFKA_BOOTSTRAP && BACKLOG.orders && BACKLOG.orderId) && "no backlog topics (run test_ts.py)" },
  () => {
    // tests/crosslang/backlog.py wrote the order's OrderCancelled first, its PaymentCaptured
    // before its OrderPlaced, and other orders' events and records without ce_type or key
    // all around
    test("waits for every wanted type of its order and returns exactly those records", async () => {
      const { orders, payments, orderId, customerId } = BACKLOG;
      const total = BigInt(BACKLOG.totalCents ?? "");
      const found = await awaitEvents(
        [orders!, payments!],
        orderId!,
        [OrderPlacedSchema.typeName, PaymentCapturedSchema.typeName],
        60_000,
      );
      assert.deepEqual([...found.keys()].sort(), [OrderPlacedSchema.typeName, PaymentCapturedSchema.typeName]);
      const orderPlaced = fromBinary(
        OrderPlacedSchema,
        checkEvent(found.get(OrderPlacedSchema.typeName)!, OrderPlacedSchema, orderId!),
      );
      assert.equal(orderPlaced.orderId, orderId);
      assert.equal(orderPlaced.customerId, customerId, "the order's OrderPlaced, not a decoy");
      assert.equal(orderPlaced.totalCents, total);
      const captured = fromBinary(
        PaymentCapturedSchema,
        checkEvent(found.get(PaymentCapturedSchema.typeName)!, PaymentCapturedSchema, orderId!),
      );
      assert.equal(captured.orderId, orderId);
      assert.equal(captured.amountCents, total);
    });
  },
);
