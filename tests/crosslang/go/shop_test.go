package crosslang

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/wirebus/wirebus/gen/go/shop/orders/v1"
)

const (
	callTimeout = 10 * time.Second
	paidWithin  = 60 * time.Second
)

// placed is what the client subtest leaves for the consumer subtest.
type placed struct {
	Paid      *ordersv1.Order `json:"-"`
	PaidID    string          `json:"paid_order_id"`
	Cancelled string          `json:"cancelled_order_id"`
}

// TestShop drives `wirebus run examples.shop.app:app` with a grpc-go client, then
// reads the events it published from Kafka with franz-go.
func TestShop(t *testing.T) {
	addr := os.Getenv("WIREBUS_GRPC_ADDR")
	if addr == "" {
		t.Skip("WIREBUS_GRPC_ADDR is not set: no shop gateway to call")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	var orders *placed
	if !t.Run("client", func(t *testing.T) { orders = runClient(t, conn) }) {
		t.Fatal("the client subtest failed: no orders to look for on Kafka")
	}
	if out := os.Getenv("WIREBUS_GO_OUT"); out != "" {
		raw, _ := json.Marshal(orders)
		if err := os.WriteFile(filepath.Join(out, "orders.json"), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("consumer", func(t *testing.T) {
		bootstrap := os.Getenv("WIREBUS_KAFKA_BOOTSTRAP")
		if bootstrap == "" {
			t.Skip("WIREBUS_KAFKA_BOOTSTRAP is not set: no Kafka to read")
		}
		runConsumer(t, bootstrap, orders)
	})
}

func callContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "x-correlation-id", "go-crosslang")
}

func runClient(t *testing.T, conn *grpc.ClientConn) *placed {
	health, err := healthpb.NewHealthClient(conn).Check(
		callContext(t), &healthpb.HealthCheckRequest{Service: "shop.orders.v1.OrderService"})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	if health.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v", health.GetStatus())
	}

	client := ordersv1.NewOrderServiceClient(conn)
	customer := fmt.Sprintf("go-%d", time.Now().UnixNano())
	items := []*ordersv1.LineItem{
		{Sku: "book", Quantity: 2, PriceCents: 1250},
		{Sku: "pen", Quantity: 3, PriceCents: 199},
	}
	first, err := client.PlaceOrder(callContext(t),
		&ordersv1.PlaceOrderRequest{CustomerId: customer, Items: items})
	if err != nil {
		t.Fatalf("PlaceOrder: %v", err)
	}
	if first.GetOrderId() == "" {
		t.Fatal("PlaceOrder answered no order id")
	}

	// payment capture is asynchronous (OrderPlaced -> Kafka -> payments -> PaymentCaptured
	// -> Kafka -> orders): poll GetOrder, bounded
	var order *ordersv1.Order
	deadline := time.Now().Add(paidWithin)
	for {
		order, err = client.GetOrder(callContext(t), &ordersv1.GetOrderRequest{OrderId: first.GetOrderId()})
		if err != nil {
			t.Fatalf("GetOrder: %v", err)
		}
		if order.GetStatus() == ordersv1.OrderStatus_ORDER_STATUS_PAID || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if order.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_PAID {
		t.Fatalf("order %s is still %v after %v (is another process consuming the topics in the gateway's consumer group?)",
			first.GetOrderId(), order.GetStatus(), paidWithin)
	}
	if order.GetOrderId() != first.GetOrderId() || order.GetCustomerId() != customer ||
		order.GetTotalCents() != 2*1250+3*199 || len(order.GetItems()) != len(items) {
		t.Fatalf("GetOrder answered %v", order)
	}
	for i := range items {
		if !proto.Equal(order.GetItems()[i], items[i]) {
			t.Errorf("item %d: %v, want %v", i, order.GetItems()[i], items[i])
		}
	}
	if age := time.Since(order.GetPlacedAt().AsTime()); order.GetPlacedAt() == nil || age < -time.Minute || age > 10*time.Minute {
		t.Errorf("placed_at %v is not about now", order.GetPlacedAt().AsTime())
	}

	second, err := client.PlaceOrder(callContext(t), &ordersv1.PlaceOrderRequest{
		CustomerId: customer, Items: []*ordersv1.LineItem{{Sku: "mug", Quantity: 1, PriceCents: 800}}})
	if err != nil {
		t.Fatalf("second PlaceOrder: %v", err)
	}

	stream, err := client.ListOrders(callContext(t), &ordersv1.ListOrdersRequest{CustomerId: customer})
	if err != nil {
		t.Fatalf("ListOrders: %v", err)
	}
	var listed []string
	for len(listed) < 100 {
		o, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("ListOrders stream: %v", err)
		}
		listed = append(listed, o.GetOrderId())
	}
	if fmt.Sprint(listed) != fmt.Sprint([]string{first.GetOrderId(), second.GetOrderId()}) {
		t.Errorf("ListOrders streamed %v, want [%s %s] (oldest first)",
			listed, first.GetOrderId(), second.GetOrderId())
	}

	const reason = "changed mind (go)"
	cancelReq := &ordersv1.CancelOrderRequest{OrderId: second.GetOrderId(), Reason: reason}
	if _, err := client.CancelOrder(callContext(t), cancelReq); err != nil {
		t.Fatalf("CancelOrder: %v", err)
	}
	cancelled, err := client.GetOrder(callContext(t), &ordersv1.GetOrderRequest{OrderId: second.GetOrderId()})
	if err != nil || cancelled.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_CANCELLED {
		t.Errorf("GetOrder after CancelOrder: %v, %v", cancelled, err)
	}

	t.Run("empty PlaceOrder is INVALID_ARGUMENT with BadRequest items", func(t *testing.T) {
		_, err := client.PlaceOrder(callContext(t), &ordersv1.PlaceOrderRequest{CustomerId: customer})
		st := wantCode(t, err, codes.InvalidArgument)
		bad := detail[*errdetails.BadRequest](t, st)
		for _, v := range bad.GetFieldViolations() {
			if v.GetField() == "items" {
				t.Logf("field violation items: %s", v.GetDescription())
				return
			}
		}
		t.Errorf("no field violation for items in %v", bad)
	})
	t.Run("unknown GetOrder is NOT_FOUND with ErrorInfo ORDER_NOT_FOUND", func(t *testing.T) {
		unknown := "no-such-order-" + customer
		_, err := client.GetOrder(callContext(t), &ordersv1.GetOrderRequest{OrderId: unknown})
		st := wantCode(t, err, codes.NotFound)
		info := detail[*errdetails.ErrorInfo](t, st)
		if info.GetReason() != "ORDER_NOT_FOUND" || info.GetMetadata()["order_id"] != unknown {
			t.Errorf("ErrorInfo %v", info)
		}
	})
	t.Run("second CancelOrder is FAILED_PRECONDITION with ErrorInfo ORDER_ALREADY_CANCELLED", func(t *testing.T) {
		_, err := client.CancelOrder(callContext(t), cancelReq)
		st := wantCode(t, err, codes.FailedPrecondition)
		info := detail[*errdetails.ErrorInfo](t, st)
		if info.GetReason() != "ORDER_ALREADY_CANCELLED" || info.GetMetadata()["order_id"] != second.GetOrderId() {
			t.Errorf("ErrorInfo %v", info)
		}
	})
	return &placed{Paid: order, PaidID: order.GetOrderId(), Cancelled: second.GetOrderId()}
}

func wantCode(t *testing.T, err error, code codes.Code) *status.Status {
	t.Helper()
	if err == nil {
		t.Fatalf("the call succeeded, want %v", code)
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("got %v, want %v", err, code)
	}
	return st
}

// detail returns the one google.rpc detail of type T in the status (from
// grpc-status-details-bin), failing on details that do not decode.
func detail[T proto.Message](t *testing.T, st *status.Status) T {
	t.Helper()
	var found []T
	for _, d := range st.Details() {
		switch v := d.(type) {
		case T:
			found = append(found, v)
		case error:
			t.Errorf("a status detail does not decode: %v", v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want one %T in the details of %v, got %d (%v)", zero, st.Proto(), len(found), st.Details())
	}
	return found[0]
}
