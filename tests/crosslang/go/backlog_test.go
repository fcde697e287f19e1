package crosslang

import (
	"os"
	"strconv"
	"testing"

	ordersv1 "github.com/wirebus/wirebus/gen/go/shop/orders/v1"
	paymentsv1 "github.com/wirebus/wirebus/gen/go/shop/payments/v1"
)

// TestBacklog runs awaitEvents on topics with a backlog (written by
// tests/crosslang/backlog.py): the order's OrderCancelled first, its PaymentCaptured
// before its OrderPlaced, other orders' events of the wanted types and records without
// ce_type or key all around. It must wait for both wanted types of that order and
// return exactly those records.
func TestBacklog(t *testing.T) {
	bootstrap := os.Getenv("WIREBUS_KAFKA_BOOTSTRAP")
	orders, payments := os.Getenv("WIREBUS_BACKLOG_ORDERS_TOPIC"), os.Getenv("WIREBUS_BACKLOG_PAYMENTS_TOPIC")
	orderID, customerID := os.Getenv("WIREBUS_BACKLOG_ORDER_ID"), os.Getenv("WIREBUS_BACKLOG_CUSTOMER_ID")
	if bootstrap == "" || orders == "" || orderID == "" {
		t.Skip("no backlog topics (run tests/crosslang/test_go.py)")
	}
	total, err := strconv.ParseInt(os.Getenv("WIREBUS_BACKLOG_TOTAL_CENTS"), 10, 64)
	if err != nil {
		t.Fatalf("WIREBUS_BACKLOG_TOTAL_CENTS: %v", err)
	}
	types := []string{"shop.orders.v1.OrderPlaced", "shop.payments.v1.PaymentCaptured"}
	found := awaitEvents(t, bootstrap, []string{orders, payments}, orderID, types)
	if len(found) != len(types) {
		t.Fatalf("found %d types, want exactly %v", len(found), types)
	}

	var placedEvent ordersv1.OrderPlaced
	r := found[types[0]]
	decodeBare(t, r, &placedEvent)
	if r.Topic != orders || placedEvent.GetOrderId() != orderID ||
		placedEvent.GetCustomerId() != customerID || placedEvent.GetTotalCents() != total {
		t.Errorf("OrderPlaced on %s: %v, want the order %s of %s (not a decoy)",
			r.Topic, &placedEvent, orderID, customerID)
	}
	var captured paymentsv1.PaymentCaptured
	r = found[types[1]]
	decodeBare(t, r, &captured)
	if r.Topic != payments || captured.GetOrderId() != orderID || captured.GetAmountCents() != total {
		t.Errorf("PaymentCaptured on %s: %v, want order %s, %d cents", r.Topic, &captured, orderID, total)
	}
}
