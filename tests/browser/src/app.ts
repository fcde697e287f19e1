// The shop in a browser: place an order over Connect, read it back over Connect's
// binary codec, and list the customer's orders over gRPC-Web (server streaming).
// The page is served from another origin than the API, so CORS is part of it.
//
//   index.html?api=http://127.0.0.1:8080&customer=alice
import { create } from "@bufbuild/protobuf";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { LineItemSchema, OrderService, OrderStatus } from "../gen/shop/orders/v1/orders_pb.js";

const params = new URLSearchParams(location.search);
const baseUrl = params.get("api") ?? "http://127.0.0.1:8080";
const customerId = params.get("customer") ?? "browser";

const json = createClient(OrderService, createConnectTransport({ baseUrl }));
const binary = createClient(
  OrderService,
  createConnectTransport({ baseUrl, useBinaryFormat: true }),
);
const grpcWeb = createClient(OrderService, createGrpcWebTransport({ baseUrl }));

function show(id: string, text: string): void {
  const element = document.getElementById(id);
  if (element) element.textContent = text;
}

async function main(): Promise<void> {
  const items = [create(LineItemSchema, { sku: "book", quantity: 2, priceCents: 1250n })];
  const { orderId } = await json.placeOrder({ customerId, items });
  show("placed", orderId);
  const order = await binary.getOrder({ orderId });
  show("total", `${order.totalCents} cents, ${OrderStatus[order.status]}`);
  const list = document.getElementById("orders");
  for await (const listed of grpcWeb.listOrders({ customerId })) {
    const row = document.createElement("li");
    row.textContent = `${listed.orderId} ${listed.customerId} ${listed.totalCents}`;
    list?.appendChild(row);
  }
  try {
    await json.getOrder({ orderId: "no-such-order" });
  } catch (err) {
    show("error", `${ConnectError.from(err).code}`); // Code.NotFound = 5
  }
  show("status", "done");
}

main().catch((err: unknown) => show("status", `failed: ${ConnectError.from(err).message}`));
