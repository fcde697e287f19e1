package dev.wirebus.crosslang;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import dev.wirebus.shop.orders.v1.CancelOrderRequest;
import dev.wirebus.shop.orders.v1.GetOrderRequest;
import dev.wirebus.shop.orders.v1.LineItem;
import dev.wirebus.shop.orders.v1.ListOrdersRequest;
import dev.wirebus.shop.orders.v1.Order;
import dev.wirebus.shop.orders.v1.OrderPlaced;
import dev.wirebus.shop.orders.v1.OrderServiceGrpc;
import dev.wirebus.shop.orders.v1.OrderStatus;
import dev.wirebus.shop.orders.v1.PlaceOrderRequest;
import dev.wirebus.shop.payments.v1.PaymentCaptured;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.Header;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * A Java service against the Python shop ({@code wirebus run examples.shop.app:app}): grpc-java
 * calls to its gateway, then a plain kafka-clients consumer reading the events it published.
 *
 * <p>Needs WIREBUS_GATEWAY (host:port of the gateway) and WIREBUS_KAFKA_BOOTSTRAP; without
 * them the tests are skipped (tests/crosslang/test_java.py sets both and refuses skips).
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class ShopInteropTest {

  static final String GATEWAY = System.getenv("WIREBUS_GATEWAY");
  static final String BOOTSTRAP = System.getenv("WIREBUS_KAFKA_BOOTSTRAP");
  static final Duration PAID_WITHIN = Duration.ofSeconds(60);
  static final Duration EVENTS_WITHIN = Duration.ofSeconds(60);
  static final Pattern CANONICAL_UUID =
      Pattern.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}");

  static final String CUSTOMER = "java-" + UUID.randomUUID();
  static final List<LineItem> ITEMS =
      List.of(
          LineItem.newBuilder().setSku("book").setQuantity(2).setPriceCents(1250).build(),
          LineItem.newBuilder().setSku("pen").setQuantity(3).setPriceCents(199).build());
  static final long TOTAL = 2 * 1250 + 3 * 199;

  static ManagedChannel channel;
  static Instant started;
  /** The order the client test placed, paid and cancelled; the consumer test reads its events. */
  static String orderId;

  @BeforeAll
  static void connect() {
    assumeTrue(
        GATEWAY != null && BOOTSTRAP != null,
        "WIREBUS_GATEWAY and WIREBUS_KAFKA_BOOTSTRAP are not set (run tests/crosslang/test_java.py)");
    started = Instant.now();
    channel = ManagedChannelBuilder.forTarget(GATEWAY).usePlaintext().build();
  }

  @AfterAll
  static void disconnect() throws InterruptedException {
    if (channel != null) {
      channel.shutdown().awaitTermination(10, TimeUnit.SECONDS);
    }
  }

  static OrderServiceGrpc.OrderServiceBlockingStub stub() {
    return OrderServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS);
  }

  static <T extends Message> T detail(StatusRuntimeException e, Class<T> type)
      throws InvalidProtocolBufferException {
    com.google.rpc.Status status = StatusProto.fromThrowable(e);
    assertNotNull(status, "no grpc-status-details-bin on " + e);
    assertEquals(e.getStatus().getCode().value(), status.getCode());
    for (Any any : status.getDetailsList()) {
      if (any.is(type)) {
        return any.unpack(type);
      }
    }
    throw new AssertionError("no " + type.getSimpleName() + " in " + status.getDetailsList());
  }

  static String placeOrder() {
    return stub()
        .placeOrder(
            PlaceOrderRequest.newBuilder().setCustomerId(CUSTOMER).addAllItems(ITEMS).build())
        .getOrderId();
  }

  static Order getOrder(String id) {
    return stub().getOrder(GetOrderRequest.newBuilder().setOrderId(id).build());
  }

  @Test
  @org.junit.jupiter.api.Order(1)
  void grpcJavaClientPlacesReadsListsAndCancelsOrders() throws Exception {
    String id = placeOrder();
    assertTrue(CANONICAL_UUID.matcher(id).matches(), "order id " + id);

    // the payment is captured asynchronously (OrderPlaced -> payments -> PaymentCaptured)
    long deadline = System.nanoTime() + PAID_WITHIN.toNanos();
    Order order = getOrder(id);
    while (order.getStatus() != OrderStatus.ORDER_STATUS_PAID && System.nanoTime() < deadline) {
      Thread.sleep(100);
      order = getOrder(id);
    }
    assertEquals(OrderStatus.ORDER_STATUS_PAID, order.getStatus(), "not PAID within " + PAID_WITHIN);
    assertEquals(id, order.getOrderId());
    assertEquals(CUSTOMER, order.getCustomerId());
    assertEquals(ITEMS, order.getItemsList());
    assertEquals(TOTAL, order.getTotalCents());
    Instant placedAt =
        Instant.ofEpochSecond(order.getPlacedAt().getSeconds(), order.getPlacedAt().getNanos());
    assertFalse(placedAt.isBefore(started.minusSeconds(60)), "placed_at " + placedAt);
    assertFalse(placedAt.isAfter(Instant.now().plusSeconds(60)), "placed_at " + placedAt);

    // server streaming: the customer's orders, oldest first
    String second = placeOrder();
    List<String> listed = new ArrayList<>();
    Iterator<Order> stream =
        stub().listOrders(ListOrdersRequest.newBuilder().setCustomerId(CUSTOMER).build());
    while (stream.hasNext()) {
      Order o = stream.next();
      assertEquals(CUSTOMER, o.getCustomerId());
      listed.add(o.getOrderId());
    }
    assertEquals(List.of(id, second), listed);

    // cancel; cancelling again is FAILED_PRECONDITION with an ErrorInfo
    stub()
        .cancelOrder(
            CancelOrderRequest.newBuilder().setOrderId(id).setReason("changed mind").build());
    assertEquals(OrderStatus.ORDER_STATUS_CANCELLED, getOrder(id).getStatus());
    StatusRuntimeException again =
        assertThrows(
            StatusRuntimeException.class,
            () -> stub().cancelOrder(CancelOrderRequest.newBuilder().setOrderId(id).build()));
    assertEquals(Status.Code.FAILED_PRECONDITION, again.getStatus().getCode());
    ErrorInfo cancelled = detail(again, ErrorInfo.class);
    assertEquals("ORDER_ALREADY_CANCELLED", cancelled.getReason());
    assertEquals(id, cancelled.getMetadataMap().get("order_id"));

    orderId = id;
  }

  @Test
  @org.junit.jupiter.api.Order(2)
  void placingAnOrderWithoutItemsIsInvalidArgumentWithABadRequest() throws Exception {
    StatusRuntimeException e =
        assertThrows(
            StatusRuntimeException.class,
            () -> stub().placeOrder(PlaceOrderRequest.newBuilder().setCustomerId(CUSTOMER).build()));
    assertEquals(Status.Code.INVALID_ARGUMENT, e.getStatus().getCode());
    BadRequest bad = detail(e, BadRequest.class);
    assertTrue(
        bad.getFieldViolationsList().stream().anyMatch(v -> v.getField().equals("items")),
        "field violations: " + bad.getFieldViolationsList());
  }

  @Test
  @org.junit.jupiter.api.Order(3)
  void anUnknownOrderIsNotFoundWithAnErrorInfo() throws Exception {
    String unknown = "no-such-order-" + UUID.randomUUID();
    StatusRuntimeException e = assertThrows(StatusRuntimeException.class, () -> getOrder(unknown));
    assertEquals(Status.Code.NOT_FOUND, e.getStatus().getCode());
    ErrorInfo info = detail(e, ErrorInfo.class);
    assertEquals("ORDER_NOT_FOUND", info.getReason());
    assertEquals(unknown, info.getMetadataMap().get("order_id"));
  }

  static String header(ConsumerRecord<byte[], byte[]> record, String name) {
    Header header = record.headers().lastHeader(name);
    assertNotNull(header, "no " + name + " header on " + record.topic() + "@" + record.offset());
    return new String(header.value(), StandardCharsets.UTF_8);
  }

  /** The CloudEvents binary-mode headers of one shop event of type {@code fullName}. */
  static void assertCloudEvent(ConsumerRecord<byte[], byte[]> record, String fullName) {
    assertEquals("1.0", header(record, "ce_specversion"));
    String ceId = header(record, "ce_id");
    assertEquals(ceId, UUID.fromString(ceId).toString(), "ce_id is a UUID");
    assertEquals("shop", header(record, "ce_source"));
    assertEquals(fullName, header(record, "ce_type"));
    String ceTime = header(record, "ce_time");
    Instant time = OffsetDateTime.parse(ceTime).toInstant(); // RFC 3339
    assertEquals(time, Instant.parse(ceTime));
    assertFalse(time.isBefore(started.minusSeconds(60)), "ce_time " + ceTime);
    assertFalse(time.isAfter(Instant.now().plusSeconds(60)), "ce_time " + ceTime);
    assertEquals("application/protobuf", header(record, "content-type"));
    assertEquals("type.googleapis.com/" + fullName, header(record, "ce_dataschema"));
    assertEquals(orderId, new String(record.key(), StandardCharsets.UTF_8), "record key");
  }

  @Test
  @org.junit.jupiter.api.Order(4)
  void kafkaConsumerReadsTheEventsAsBareProtobufWithCloudEventsHeaders() throws Exception {
    assertNotNull(orderId, "the client test did not place an order");
    // the order's OrderCancelled is on Kafka too, and may come before its PaymentCaptured:
    // wait for the two wanted types, whatever else this order or others published
    List<String> wanted =
        List.of(
            OrderPlaced.getDescriptor().getFullName(),
            PaymentCaptured.getDescriptor().getFullName());
    Map<String, ConsumerRecord<byte[], byte[]>> found =
        OrderEvents.await(
            BOOTSTRAP, List.of("shop.orders.v1", "shop.payments.v1"), orderId, wanted, EVENTS_WITHIN);

    ConsumerRecord<byte[], byte[]> placedRecord = found.get(wanted.get(0));
    assertEquals("shop.orders.v1", placedRecord.topic());
    assertCloudEvent(placedRecord, wanted.get(0));
    OrderPlaced placed = OrderPlaced.parseFrom(placedRecord.value());
    assertEquals(orderId, placed.getOrderId());
    assertEquals(CUSTOMER, placed.getCustomerId());
    assertEquals(ITEMS, placed.getItemsList());
    assertEquals(TOTAL, placed.getTotalCents());
    assertTrue(placed.getUnknownFields().asMap().isEmpty());
    // the value is the bare message: nothing before or after it
    assertArrayEquals(placedRecord.value(), placed.toByteArray());

    ConsumerRecord<byte[], byte[]> paidRecord = found.get(wanted.get(1));
    assertEquals("shop.payments.v1", paidRecord.topic());
    assertCloudEvent(paidRecord, wanted.get(1));
    PaymentCaptured paid = PaymentCaptured.parseFrom(paidRecord.value());
    assertEquals(orderId, paid.getOrderId());
    assertEquals(TOTAL, paid.getAmountCents());
    assertTrue(CANONICAL_UUID.matcher(paid.getPaymentId()).matches(), paid.getPaymentId());
    assertTrue(paid.hasCapturedAt());
    assertArrayEquals(paidRecord.value(), paid.toByteArray());

    assertFalse(
        header(placedRecord, "ce_id").equals(header(paidRecord, "ce_id")),
        "two events, two CloudEvents ids");
  }
}
