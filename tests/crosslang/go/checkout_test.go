package crosslang

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	ordersv1 "github.com/wirebus/wirebus/gen/go/shop/orders/v1"
	paymentsv1 "github.com/wirebus/wirebus/gen/go/shop/payments/v1"
)

const (
	// the shop's default SHOP_PAYMENT_LIMIT_CENTS: payments over it are declined
	paymentLimitCents = 100_000
	checkoutWithin    = 60 * time.Second
)

// checkoutOrders is what TestCheckout leaves in $WIREBUS_GO_OUT/checkout.json: the
// driver reads the stock and reservations of these orders in the shops' databases.
type checkoutOrders struct {
	Sku         string `json:"sku"`
	Paid        string `json:"paid_order_id"`
	PaidQty     int32  `json:"paid_quantity"`
	Declined    string `json:"declined_order_id"`
	TimedOut    string `json:"timed_out_order_id"`
	TimedOutQty int32  `json:"timed_out_quantity"`
}

// TestCheckout follows the shop's checkout saga (reserve stock -> capture payment ->
// confirm order) from a grpc-go client placing the orders: one under the payment
// limit ends PAID, one over it CANCELLED (the payment declined, the stock released),
// one on a shop whose payments slice is not running CANCELLED after the payment
// timeout; then franz-go reads the saga's CapturePayment and the payments slice's
// answers on Kafka.
func TestCheckout(t *testing.T) {
	addr := os.Getenv("WIREBUS_GRPC_ADDR")
	if addr == "" {
		t.Skip("WIREBUS_GRPC_ADDR is not set: no shop gateway to call")
	}
	sku := os.Getenv("WIREBUS_CHECKOUT_SKU")
	if sku == "" {
		sku = "go-checkout-book"
	}
	client := orderClient(t, addr)
	customer := fmt.Sprintf("go-checkout-%d", time.Now().UnixNano())
	out := checkoutOrders{Sku: sku, PaidQty: 2, TimedOutQty: 2}
	var paid, declined *ordersv1.Order

	t.Run("an order under the payment limit is PAID", func(t *testing.T) {
		items := []*ordersv1.LineItem{{Sku: sku, Quantity: out.PaidQty, PriceCents: 1250}}
		id := placeOrder(t, client, customer, items)
		out.Paid = id
		paid = awaitOrderStatus(t, client, id, ordersv1.OrderStatus_ORDER_STATUS_PAID, checkoutWithin)
		if paid.GetTotalCents() != 2500 || paid.GetCustomerId() != customer {
			t.Errorf("GetOrder answered %v", paid)
		}
	})
	t.Run("an order over the payment limit is CANCELLED", func(t *testing.T) {
		items := []*ordersv1.LineItem{{Sku: sku, Quantity: 3, PriceCents: 40_000}}
		id := placeOrder(t, client, customer, items)
		out.Declined = id
		declined = awaitOrderStatus(t, client, id, ordersv1.OrderStatus_ORDER_STATUS_CANCELLED, checkoutWithin)
		if declined.GetTotalCents() <= paymentLimitCents {
			t.Errorf("the order's total %d is not over the limit %d", declined.GetTotalCents(), paymentLimitCents)
		}
	})
	t.Run("an order nobody pays is CANCELLED after the payment timeout", func(t *testing.T) {
		out.TimedOut = runTimeout(t, sku, customer, out.TimedOutQty)
	})
	writeCheckout(t, out)

	t.Run("on Kafka the saga's CapturePayment and the payments' answers travel as CloudEvents", func(t *testing.T) {
		bootstrap := os.Getenv("WIREBUS_KAFKA_BOOTSTRAP")
		if bootstrap == "" {
			t.Skip("WIREBUS_KAFKA_BOOTSTRAP is not set: no Kafka to read")
		}
		if paid == nil || declined == nil {
			t.Fatal("the paid or the declined subtest failed: no orders to look for on Kafka")
		}
		checkCheckoutRecords(t, bootstrap, customer, paid, declined)
	})
}

// runTimeout places an order on the shop without payments ($WIREBUS_NO_PAYMENTS_GRPC_ADDR,
// payment timeout $WIREBUS_PAYMENT_TIMEOUT_SECONDS) and waits for it to be CANCELLED, not
// before the timeout; it returns the order id.
func runTimeout(t *testing.T, sku, customer string, quantity int32) string {
	addr := os.Getenv("WIREBUS_NO_PAYMENTS_GRPC_ADDR")
	if addr == "" {
		t.Skip("WIREBUS_NO_PAYMENTS_GRPC_ADDR is not set: no shop without payments to call")
	}
	seconds, err := strconv.ParseFloat(os.Getenv("WIREBUS_PAYMENT_TIMEOUT_SECONDS"), 64)
	if err != nil || seconds <= 0 {
		t.Fatalf("WIREBUS_PAYMENT_TIMEOUT_SECONDS=%q is not a positive number of seconds",
			os.Getenv("WIREBUS_PAYMENT_TIMEOUT_SECONDS"))
	}
	timeout := time.Duration(seconds * float64(time.Second))
	client := orderClient(t, addr)
	items := []*ordersv1.LineItem{{Sku: sku, Quantity: quantity, PriceCents: 1250}}
	id := placeOrder(t, client, customer, items)
	placedAt := time.Now()
	awaitOrderStatus(t, client, id, ordersv1.OrderStatus_ORDER_STATUS_CANCELLED, timeout+checkoutWithin)
	if waited := time.Since(placedAt); waited < timeout {
		t.Errorf("order %s was CANCELLED %v after it was placed, before the payment timeout of %v",
			id, waited, timeout)
	} else {
		t.Logf("order %s CANCELLED %v after it was placed (payment timeout %v)", id, waited, timeout)
	}
	return id
}

func orderClient(t *testing.T, addr string) ordersv1.OrderServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return ordersv1.NewOrderServiceClient(conn)
}

func placeOrder(t *testing.T, client ordersv1.OrderServiceClient, customer string, items []*ordersv1.LineItem) string {
	t.Helper()
	placed, err := client.PlaceOrder(callContext(t),
		&ordersv1.PlaceOrderRequest{CustomerId: customer, Items: items})
	if err != nil {
		t.Fatalf("PlaceOrder: %v", err)
	}
	if placed.GetOrderId() == "" {
		t.Fatal("PlaceOrder answered no order id")
	}
	return placed.GetOrderId()
}

// awaitOrderStatus polls GetOrder (bounded by within) until the order has status want; it
// fails as soon as the order reaches the other final status, or is still open at the end.
func awaitOrderStatus(t *testing.T, client ordersv1.OrderServiceClient, id string, want ordersv1.OrderStatus, within time.Duration) *ordersv1.Order {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		order, err := client.GetOrder(callContext(t), &ordersv1.GetOrderRequest{OrderId: id})
		if err != nil {
			t.Fatalf("GetOrder %s: %v", id, err)
		}
		switch status := order.GetStatus(); {
		case status == want:
			return order
		case status != ordersv1.OrderStatus_ORDER_STATUS_PENDING:
			t.Fatalf("order %s is %v, want %v", id, status, want)
		case time.Now().After(deadline):
			t.Fatalf("order %s is still %v after %v, want %v", id, status, within, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writeCheckout(t *testing.T, orders checkoutOrders) {
	dir := os.Getenv("WIREBUS_GO_OUT")
	if dir == "" {
		return
	}
	raw, err := json.Marshal(orders)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "checkout.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkCheckoutRecords reads the shop's topics until it has, for the paid order, the
// saga's CapturePayment and a PaymentCaptured, and for the declined one its
// CapturePayment, a PaymentDeclined and the OrderCancelled of the compensation; each
// with key = order id, the CloudEvents headers and a bare value of the generated type.
func checkCheckoutRecords(t *testing.T, bootstrap, customer string, paid, declined *ordersv1.Order) {
	capture, captured := "shop.payments.v1.CapturePayment", "shop.payments.v1.PaymentCaptured"
	refused, cancelled := "shop.payments.v1.PaymentDeclined", "shop.orders.v1.OrderCancelled"
	want := map[string][]string{
		paid.GetOrderId():     {capture, captured},
		declined.GetOrderId(): {capture, refused, cancelled},
	}
	found := awaitKeyed(t, bootstrap, os.Getenv("WIREBUS_READER_GROUP"), []string{ordersTopic, paymentsTopic}, want)
	for key, types := range want {
		for _, ceType := range types {
			checkCloudEvents(t, found[key][ceType], ceType)
		}
	}
	for _, order := range []*ordersv1.Order{paid, declined} {
		var cmd paymentsv1.CapturePayment
		r := found[order.GetOrderId()][capture]
		decodeBare(t, r, &cmd)
		if r.Topic != paymentsTopic || cmd.GetOrderId() != order.GetOrderId() ||
			cmd.GetCustomerId() != customer || cmd.GetAmountCents() != order.GetTotalCents() {
			t.Errorf("CapturePayment on %s: %v\nGetOrder said: %v", r.Topic, &cmd, order)
		}
	}
	var ok paymentsv1.PaymentCaptured
	r := found[paid.GetOrderId()][captured]
	decodeBare(t, r, &ok)
	if r.Topic != paymentsTopic || ok.GetOrderId() != paid.GetOrderId() ||
		ok.GetAmountCents() != paid.GetTotalCents() || !uuidPattern.MatchString(ok.GetPaymentId()) {
		t.Errorf("PaymentCaptured on %s: %v\nGetOrder said: %v", r.Topic, &ok, paid)
	}
	var no paymentsv1.PaymentDeclined
	r = found[declined.GetOrderId()][refused]
	decodeBare(t, r, &no)
	if r.Topic != paymentsTopic || no.GetOrderId() != declined.GetOrderId() ||
		no.GetAmountCents() != declined.GetTotalCents() || !strings.Contains(no.GetReason(), "limit") {
		t.Errorf("PaymentDeclined on %s: %v\nGetOrder said: %v", r.Topic, &no, declined)
	}
	var gone ordersv1.OrderCancelled
	r = found[declined.GetOrderId()][cancelled]
	decodeBare(t, r, &gone)
	if r.Topic != ordersTopic || gone.GetOrderId() != declined.GetOrderId() ||
		!strings.Contains(gone.GetReason(), "PaymentDeclined") {
		t.Errorf("OrderCancelled on %s: %v (the reason should name the PaymentDeclined)", r.Topic, &gone)
	}
	t.Logf("declined: %q; cancelled: %q", no.GetReason(), gone.GetReason())
}

// awaitKeyed reads topics until, for every key of want, a record of each of its
// ce_types has come, and returns key -> ce_type -> the first such record. With a
// group (the driver's reader group, whose committed offsets are the topics' ends when
// the shop started) it reads only what came since; without one, from the start.
func awaitKeyed(t *testing.T, bootstrap, group string, topics []string, want map[string][]string) map[string]map[string]*kgo.Record {
	t.Helper()
	opts := []kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.ClientID("wirebus-crosslang-go-checkout"),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}
	if group != "" {
		opts = append(opts, kgo.ConsumerGroup(group), kgo.DisableAutoCommit())
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	found := map[string]map[string]*kgo.Record{}
	missing := 0
	for key, types := range want {
		found[key] = map[string]*kgo.Record{}
		missing += len(types)
	}
	wanted := func(key, ceType string) bool {
		for _, w := range want[key] {
			if w == ceType {
				return found[key][ceType] == nil
			}
		}
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), consumeWithin)
	defer cancel()
	records := 0
	for missing > 0 && ctx.Err() == nil {
		fetches := client.PollFetches(ctx)
		fetches.EachError(func(topic string, partition int32, err error) {
			if ctx.Err() == nil {
				t.Logf("fetch %s[%d]: %v (retrying)", topic, partition, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			records++
			if key, ceType := string(r.Key), header(r, "ce_type"); wanted(key, ceType) {
				found[key][ceType] = r
				missing--
			}
		})
	}
	t.Logf("read %d records from %v (group %q)", records, topics, group)
	for key, types := range want {
		for _, ceType := range types {
			if found[key][ceType] == nil {
				t.Fatalf("no %s record with key %s on %v within %v (%d records read)",
					ceType, key, topics, consumeWithin, records)
			}
		}
	}
	return found
}
