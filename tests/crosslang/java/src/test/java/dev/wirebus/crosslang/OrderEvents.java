package dev.wirebus.crosslang;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Reads topics from the start until one order's events of every wanted type have arrived.
 *
 * <p>Topics that served other runs hold a backlog: other orders' events, and this order's
 * events of other types, in any order across topics (OrderCancelled can come before
 * PaymentCaptured). So the wait ends only when every wanted type is there, or fails after a
 * bound:
 *
 * <pre>{@code
 * Map<String, ConsumerRecord<byte[], byte[]>> found =
 *     OrderEvents.await(bootstrap, List.of("shop.orders.v1", "shop.payments.v1"), orderId,
 *         List.of("shop.orders.v1.OrderPlaced", "shop.payments.v1.PaymentCaptured"),
 *         Duration.ofSeconds(60));
 * }</pre>
 */
final class OrderEvents {

  private OrderEvents() {}

  /** The last value of a header as UTF-8 text, or null when the record has none. */
  static String headerText(ConsumerRecord<byte[], byte[]> record, String name) {
    Header header = record.headers().lastHeader(name);
    return header == null ? null : new String(header.value(), StandardCharsets.UTF_8);
  }

  /**
   * ce_type -> the first record with key {@code key} of that type, for every type in {@code
   * wanted}; records of other keys or types are skipped. Throws AssertionError naming the
   * missing types when {@code within} passes first.
   */
  static Map<String, ConsumerRecord<byte[], byte[]>> await(
      String bootstrap, List<String> topics, String key, List<String> wanted, Duration within) {
    Map<String, ConsumerRecord<byte[], byte[]>> found = new LinkedHashMap<>();
    long read = 0;
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(properties(bootstrap))) {
      consumer.subscribe(topics);
      long deadline = System.nanoTime() + within.toNanos();
      while (found.size() < wanted.size() && System.nanoTime() < deadline) {
        for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(500))) {
          read++;
          String type = headerText(record, "ce_type");
          if (record.key() != null
              && key.equals(new String(record.key(), StandardCharsets.UTF_8))
              && type != null
              && wanted.contains(type)) {
            found.putIfAbsent(type, record);
          }
        }
      }
    }
    if (found.size() < wanted.size()) {
      List<String> missing = wanted.stream().filter(t -> !found.containsKey(t)).toList();
      throw new AssertionError(
          String.format(
              "no %s with key %s on %s within %s (%d records read; found %s)",
              missing, key, topics, within, read, found.keySet()));
    }
    return found;
  }

  private static Properties properties(String bootstrap) {
    Properties props = new Properties();
    props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(ConsumerConfig.GROUP_ID_CONFIG, "java-crosslang-" + UUID.randomUUID());
    props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    return props;
  }
}
