package dev.wirebus.crosslang;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.wirebus.shop.orders.v1.OrderPlaced;
import dev.wirebus.shop.payments.v1.PaymentCaptured;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.junit.jupiter.api.Test;

/**
 * {@link OrderEvents#await} on topics with a backlog (written by tests/crosslang/backlog.py):
 * the order's OrderCancelled first, its PaymentCaptured before its OrderPlaced, other orders'
 * events of the wanted types, records without ce_type or key all around. It must wait for
 * both wanted types of that order and return exactly those records.
 */
class BacklogConsumerTest {

  static final String BOOTSTRAP = System.getenv("WIREBUS_KAFKA_BOOTSTRAP");
  static final String ORDERS = System.getenv("WIREBUS_BACKLOG_ORDERS_TOPIC");
  static final String PAYMENTS = System.getenv("WIREBUS_BACKLOG_PAYMENTS_TOPIC");
  static final String ORDER_ID = System.getenv("WIREBUS_BACKLOG_ORDER_ID");
  static final String CUSTOMER_ID = System.getenv("WIREBUS_BACKLOG_CUSTOMER_ID");
  static final String TOTAL_CENTS = System.getenv("WIREBUS_BACKLOG_TOTAL_CENTS");

  @Test
  void waitsForEveryWantedTypeOfItsOrderThroughABacklog() throws Exception {
    assumeTrue(
        BOOTSTRAP != null && ORDERS != null && ORDER_ID != null,
        "no backlog topics (run tests/crosslang/test_java.py)");
    String placedType = OrderPlaced.getDescriptor().getFullName();
    String capturedType = PaymentCaptured.getDescriptor().getFullName();
    Map<String, ConsumerRecord<byte[], byte[]>> found =
        OrderEvents.await(
            BOOTSTRAP,
            List.of(ORDERS, PAYMENTS),
            ORDER_ID,
            List.of(placedType, capturedType),
            Duration.ofSeconds(60));

    assertEquals(Set.of(placedType, capturedType), found.keySet());
    for (ConsumerRecord<byte[], byte[]> record : found.values()) {
      assertEquals(ORDER_ID, new String(record.key(), StandardCharsets.UTF_8));
    }
    ConsumerRecord<byte[], byte[]> placedRecord = found.get(placedType);
    assertEquals(ORDERS, placedRecord.topic());
    OrderPlaced placed = OrderPlaced.parseFrom(placedRecord.value());
    assertEquals(ORDER_ID, placed.getOrderId());
    assertEquals(CUSTOMER_ID, placed.getCustomerId(), "the order's OrderPlaced, not a decoy");
    assertEquals(Long.parseLong(TOTAL_CENTS), placed.getTotalCents());

    ConsumerRecord<byte[], byte[]> capturedRecord = found.get(capturedType);
    assertEquals(PAYMENTS, capturedRecord.topic());
    PaymentCaptured captured = PaymentCaptured.parseFrom(capturedRecord.value());
    assertEquals(ORDER_ID, captured.getOrderId());
    assertEquals(Long.parseLong(TOTAL_CENTS), captured.getAmountCents());
    assertTrue(captured.hasCapturedAt());
  }
}
