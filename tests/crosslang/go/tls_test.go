package crosslang

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	ordersv1 "github.com/wirebus/wirebus/gen/go/shop/orders/v1"
)

// TestGatewayTLS calls `wirebus serve --tls-cert --tls-key --client-ca` (mutual TLS):
// with the client certificate an order is placed and read back; without one the
// server refuses the handshake and the call fails UNAVAILABLE.
// tests/crosslang/test_go.py runs it with -run on a server of its own (WIREBUS_TLS_*)
// and leaves it out (-skip) of the plaintext run.
func TestGatewayTLS(t *testing.T) {
	addr := os.Getenv("WIREBUS_TLS_GATEWAY")
	if addr == "" {
		t.Skip("WIREBUS_TLS_GATEWAY is not set: no TLS gateway to call")
	}
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(os.Getenv("WIREBUS_TLS_CA"))
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("reading the CA of WIREBUS_TLS_CA: %v", err)
	}
	cert, err := tls.LoadX509KeyPair(os.Getenv("WIREBUS_TLS_CLIENT_CERT"), os.Getenv("WIREBUS_TLS_CLIENT_KEY"))
	if err != nil {
		t.Fatalf("reading the client certificate: %v", err)
	}

	t.Run("with_a_client_certificate_an_order_is_placed_and_read_back", func(t *testing.T) {
		conn := dialTLS(t, addr, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}})
		client := ordersv1.NewOrderServiceClient(conn)
		customer := fmt.Sprintf("go-tls-%d", time.Now().UnixNano())
		items := []*ordersv1.LineItem{{Sku: "book", Quantity: 2, PriceCents: 1250}}
		placed, err := client.PlaceOrder(callContext(t), &ordersv1.PlaceOrderRequest{CustomerId: customer, Items: items})
		if err != nil {
			t.Fatalf("PlaceOrder over TLS: %v", err)
		}
		order, err := client.GetOrder(callContext(t), &ordersv1.GetOrderRequest{OrderId: placed.GetOrderId()})
		if err != nil {
			t.Fatalf("GetOrder over TLS: %v", err)
		}
		if order.GetOrderId() != placed.GetOrderId() || order.GetCustomerId() != customer || order.GetTotalCents() != 2500 {
			t.Fatalf("GetOrder answered %v for the order %s of %s", order, placed.GetOrderId(), customer)
		}
	})

	t.Run("without_a_client_certificate_the_call_is_UNAVAILABLE", func(t *testing.T) {
		conn := dialTLS(t, addr, &tls.Config{RootCAs: roots})
		_, err := ordersv1.NewOrderServiceClient(conn).PlaceOrder(callContext(t),
			&ordersv1.PlaceOrderRequest{CustomerId: "no-cert", Items: []*ordersv1.LineItem{{Sku: "a", Quantity: 1, PriceCents: 1}}})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("PlaceOrder without a client certificate: want UNAVAILABLE, got %v", err)
		}
	})
}

func dialTLS(t *testing.T, addr string, config *tls.Config) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(config)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
