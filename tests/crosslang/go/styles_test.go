package crosslang

import (
	"context"
	"os"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/wirebus/wirebus/gen/go/shop/orders/v1"
)

const (
	notificationsTopic = "shop.orders.v1.notifications"
	snapshotsTopic     = "shop.orders.v1.snapshots"
	statusChangedType  = "shop.orders.v1.OrderStatusChanged"
	snapshotType       = "shop.orders.v1.OrderSnapshot"
)

// TestEventStyles places and cancels an order on `wirebus run examples.shop.app:app`,
// then reads its two kinds of events with franz-go and the generated Go types:
// the notification OrderStatusChanged (ids and status only) on
// shop.orders.v1.notifications, and the state transfer OrderSnapshot (the whole
// order) on shop.orders.v1.snapshots, both keyed by the order id. The last
// snapshot equals what GetOrder answers: a Go service can keep its own copy
// without calling back.
func TestEventStyles(t *testing.T) {
	addr := os.Getenv("WIREBUS_GRPC_ADDR")
	bootstrap := os.Getenv("WIREBUS_KAFKA_BOOTSTRAP")
	if addr == "" || bootstrap == "" {
		t.Skip("WIREBUS_GRPC_ADDR or WIREBUS_KAFKA_BOOTSTRAP is not set: no shop to call and read")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := ordersv1.NewOrderServiceClient(conn)

	placed, err := client.PlaceOrder(callContext(t), &ordersv1.PlaceOrderRequest{
		CustomerId: "go-styles",
		Items:      []*ordersv1.LineItem{{Sku: "map", Quantity: 1, PriceCents: 700}},
	})
	if err != nil {
		t.Fatalf("PlaceOrder: %v", err)
	}
	id := placed.GetOrderId()
	if _, err := client.CancelOrder(callContext(t), &ordersv1.CancelOrderRequest{OrderId: id}); err != nil {
		t.Fatalf("CancelOrder: %v", err)
	}
	order, err := client.GetOrder(callContext(t), &ordersv1.GetOrderRequest{OrderId: id})
	if err != nil || order.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_CANCELLED {
		t.Fatalf("GetOrder after CancelOrder: %v, %v", order, err)
	}

	// PENDING, then CANCELLED; PAID in between when the payment came first.
	records := awaitStatus(t, bootstrap, id, ordersv1.OrderStatus_ORDER_STATUS_CANCELLED)

	var changes []ordersv1.OrderStatus
	var last *ordersv1.OrderSnapshot
	for _, r := range records {
		checkCloudEvents(t, r, header(r, "ce_type"))
		switch r.Topic {
		case notificationsTopic:
			var changed ordersv1.OrderStatusChanged
			decodeBare(t, r, &changed)
			if changed.GetOrderId() != id || !changed.GetChangedAt().IsValid() {
				t.Errorf("OrderStatusChanged of %s: %v", id, &changed)
			}
			changes = append(changes, changed.GetStatus())
		case snapshotsTopic:
			var snapshot ordersv1.OrderSnapshot
			decodeBare(t, r, &snapshot)
			last = &snapshot
		}
	}
	if len(changes) < 2 || changes[0] != ordersv1.OrderStatus_ORDER_STATUS_PENDING ||
		changes[len(changes)-1] != ordersv1.OrderStatus_ORDER_STATUS_CANCELLED {
		t.Errorf("status changes of %s: %v, want PENDING first and CANCELLED last", id, changes)
	}
	if last == nil || !proto.Equal(last.GetOrder(), order) {
		t.Errorf("the last OrderSnapshot of %s: %v\nGetOrder said: %v", id, last, order)
	}
}

// awaitStatus reads both topics from the start until both the notification and the
// snapshot of order id in status want have arrived; it returns every record of that
// order on them, in topic order.
func awaitStatus(t *testing.T, bootstrap, id string, want ordersv1.OrderStatus) []*kgo.Record {
	t.Helper()
	client, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.ClientID("wirebus-crosslang-go-styles"),
		kgo.ConsumeTopics(notificationsTopic, snapshotsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), consumeWithin)
	defer cancel()
	var records []*kgo.Record
	seen := map[string]bool{}
	for !(seen[notificationsTopic] && seen[snapshotsTopic]) && ctx.Err() == nil {
		fetches := client.PollFetches(ctx)
		if fetches.IsClientClosed() {
			break
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if string(r.Key) != id {
				return
			}
			records = append(records, r)
			if reachedStatus(r, want) {
				seen[r.Topic] = true
			}
		})
	}
	if !(seen[notificationsTopic] && seen[snapshotsTopic]) {
		t.Fatalf("no %v notification and snapshot of %s within %v (%d records of it)",
			want, id, consumeWithin, len(records))
	}
	return records
}

// reachedStatus reports whether r is a notification or a snapshot of status want.
func reachedStatus(r *kgo.Record, want ordersv1.OrderStatus) bool {
	switch header(r, "ce_type") {
	case statusChangedType:
		var changed ordersv1.OrderStatusChanged
		return proto.Unmarshal(r.Value, &changed) == nil && changed.GetStatus() == want
	case snapshotType:
		var snapshot ordersv1.OrderSnapshot
		return proto.Unmarshal(r.Value, &snapshot) == nil && snapshot.GetOrder().GetStatus() == want
	}
	return false
}
