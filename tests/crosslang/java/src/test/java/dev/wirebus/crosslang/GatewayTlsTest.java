package dev.wirebus.crosslang;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.wirebus.shop.orders.v1.GetOrderRequest;
import dev.wirebus.shop.orders.v1.LineItem;
import dev.wirebus.shop.orders.v1.Order;
import dev.wirebus.shop.orders.v1.OrderServiceGrpc;
import dev.wirebus.shop.orders.v1.PlaceOrderRequest;
import dev.wirebus.shop.orders.v1.PlaceOrderResponse;
import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import java.io.File;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * grpc-java over mutual TLS ({@code TlsChannelCredentials}) against {@code wirebus serve
 * --tls-cert --tls-key --client-ca}: with the client certificate an order is placed and read
 * back; without one the server refuses the handshake and the call fails UNAVAILABLE.
 *
 * <p>Needs WIREBUS_TLS_GATEWAY, WIREBUS_TLS_CA, WIREBUS_TLS_CLIENT_CERT and
 * WIREBUS_TLS_CLIENT_KEY (PEM, the key in PKCS#8); tests/crosslang/test_java.py runs this class
 * alone on a TLS server of its own.
 */
class GatewayTlsTest {

  static final String GATEWAY = System.getenv("WIREBUS_TLS_GATEWAY");

  @BeforeAll
  static void needsAGateway() {
    assumeTrue(GATEWAY != null, "WIREBUS_TLS_GATEWAY is not set (run tests/crosslang/test_java.py)");
  }

  static File file(String variable) {
    return new File(System.getenv(variable));
  }

  static <T> T withChannel(ChannelCredentials credentials, Call<T> call) throws Exception {
    ManagedChannel channel = Grpc.newChannelBuilder(GATEWAY, credentials).build();
    try {
      return call.on(OrderServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS));
    } finally {
      channel.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
    }
  }

  interface Call<T> {
    T on(OrderServiceGrpc.OrderServiceBlockingStub stub) throws Exception;
  }

  static PlaceOrderRequest order(String customer) {
    return PlaceOrderRequest.newBuilder()
        .setCustomerId(customer)
        .addItems(LineItem.newBuilder().setSku("book").setQuantity(2).setPriceCents(1250))
        .build();
  }

  @Test
  void withAClientCertificateAnOrderIsPlacedAndReadBack() throws Exception {
    ChannelCredentials mutual =
        TlsChannelCredentials.newBuilder()
            .trustManager(file("WIREBUS_TLS_CA"))
            .keyManager(file("WIREBUS_TLS_CLIENT_CERT"), file("WIREBUS_TLS_CLIENT_KEY"))
            .build();
    String customer = "java-tls-" + UUID.randomUUID();
    Order order =
        withChannel(
            mutual,
            stub -> {
              PlaceOrderResponse placed = stub.placeOrder(order(customer));
              assertFalse(placed.getOrderId().isEmpty(), "PlaceOrder answered no order id");
              Order read =
                  stub.getOrder(GetOrderRequest.newBuilder().setOrderId(placed.getOrderId()).build());
              assertEquals(placed.getOrderId(), read.getOrderId());
              return read;
            });
    assertEquals(customer, order.getCustomerId());
    assertEquals(2500, order.getTotalCents());
  }

  @Test
  void withoutAClientCertificateTheCallIsUnavailable() throws Exception {
    ChannelCredentials serverOnly =
        TlsChannelCredentials.newBuilder().trustManager(file("WIREBUS_TLS_CA")).build();
    StatusRuntimeException refused =
        assertThrows(
            StatusRuntimeException.class,
            () -> withChannel(serverOnly, stub -> stub.placeOrder(order("java-no-cert"))));
    assertEquals(Status.Code.UNAVAILABLE, refused.getStatus().getCode(), refused.toString());
  }
}
