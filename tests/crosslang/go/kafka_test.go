package crosslang

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/wirebus/wirebus/gen/go/shop/orders/v1"
	paymentsv1 "github.com/wirebus/wirebus/gen/go/shop/payments/v1"
)

const (
	ordersTopic   = "shop.orders.v1"
	paymentsTopic = "shop.payments.v1"
	consumeWithin = 60 * time.Second
)

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// runConsumer reads both topics from the start until it has the OrderPlaced and
// PaymentCaptured records of the order the client saw PAID, then checks their headers
// and decodes their values with the generated types.
func runConsumer(t *testing.T, bootstrap string, orders *placed) {
	types := []string{"shop.orders.v1.OrderPlaced", "shop.payments.v1.PaymentCaptured"}
	found := awaitEvents(t, bootstrap, []string{ordersTopic, paymentsTopic}, orders.PaidID, types)

	ids := map[string]bool{}
	for _, ceType := range types {
		r := found[ceType]
		checkCloudEvents(t, r, ceType)
		ids[header(r, "ce_id")] = true
	}
	if len(ids) != len(types) {
		t.Errorf("ce_id is not unique per event: %v", ids)
	}

	paid := orders.Paid
	var placedEvent ordersv1.OrderPlaced
	r := found[types[0]]
	decodeBare(t, r, &placedEvent)
	if r.Topic != ordersTopic || placedEvent.GetOrderId() != paid.GetOrderId() ||
		placedEvent.GetCustomerId() != paid.GetCustomerId() ||
		placedEvent.GetTotalCents() != paid.GetTotalCents() ||
		!proto.Equal(placedEvent.GetPlacedAt(), paid.GetPlacedAt()) ||
		len(placedEvent.GetItems()) != len(paid.GetItems()) {
		t.Errorf("OrderPlaced on %s: %v\nGetOrder said: %v", r.Topic, &placedEvent, paid)
	}
	for i := range placedEvent.GetItems() {
		if !proto.Equal(placedEvent.GetItems()[i], paid.GetItems()[i]) {
			t.Errorf("OrderPlaced item %d: %v, want %v", i, placedEvent.GetItems()[i], paid.GetItems()[i])
		}
	}

	var captured paymentsv1.PaymentCaptured
	r = found[types[1]]
	decodeBare(t, r, &captured)
	if r.Topic != paymentsTopic || captured.GetOrderId() != paid.GetOrderId() ||
		captured.GetAmountCents() != paid.GetTotalCents() || !uuidPattern.MatchString(captured.GetPaymentId()) ||
		captured.GetCapturedAt().AsTime().Before(paid.GetPlacedAt().AsTime()) {
		t.Errorf("PaymentCaptured on %s: %v\nGetOrder said: %v", r.Topic, &captured, paid)
	}
}

// awaitEvents reads topics from the start with a plain franz-go client (no consumer
// group) until, for every type in types, a record with key key and that ce_type has
// arrived; records of other orders or other types (a backlog, this order's
// OrderCancelled) are skipped. It returns ce_type -> the first such record, and fails
// the test naming the missing types after consumeWithin.
func awaitEvents(t *testing.T, bootstrap string, topics []string, key string, types []string) map[string]*kgo.Record {
	t.Helper()
	client, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.ClientID("wirebus-crosslang-go"),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	wanted := map[string]bool{}
	for _, ceType := range types {
		wanted[ceType] = true
	}
	found := map[string]*kgo.Record{}
	ctx, cancel := context.WithTimeout(context.Background(), consumeWithin)
	defer cancel()
	records := 0
	for len(found) < len(types) && ctx.Err() == nil {
		fetches := client.PollFetches(ctx)
		if fetches.IsClientClosed() {
			break
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if ctx.Err() == nil {
				t.Logf("fetch %s[%d]: %v (retrying)", topic, partition, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			records++
			ceType := header(r, "ce_type")
			if r.Key != nil && string(r.Key) == key && wanted[ceType] && found[ceType] == nil {
				found[ceType] = r
			}
		})
	}
	t.Logf("read %d records from %v", records, topics)
	for _, ceType := range types {
		if found[ceType] == nil {
			t.Fatalf("no %s record with key %s on %v within %v (%d records read, found %d of %v)",
				ceType, key, topics, consumeWithin, records, len(found), types)
		}
	}
	return found
}

// header is the first value of a record header ("" when absent).
func header(r *kgo.Record, name string) string {
	for _, h := range r.Headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}

// checkCloudEvents checks the binary-mode CloudEvents headers wirebus writes.
func checkCloudEvents(t *testing.T, r *kgo.Record, ceType string) {
	t.Helper()
	exact := map[string]string{
		"ce_specversion": "1.0",
		"ce_source":      "shop",
		"ce_type":        ceType,
		"content-type":   "application/protobuf",
		"ce_dataschema":  "type.googleapis.com/" + ceType,
	}
	for name, value := range exact {
		if got := header(r, name); got != value {
			t.Errorf("%s record %s: header %s = %q, want %q", ceType, r.Key, name, got, value)
		}
	}
	if id := header(r, "ce_id"); !uuidPattern.MatchString(id) {
		t.Errorf("%s record %s: ce_id %q is not a UUID", ceType, r.Key, id)
	}
	raw := header(r, "ce_time")
	at, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		t.Errorf("%s record %s: ce_time %q is not RFC 3339: %v", ceType, r.Key, raw, err)
	} else if age := time.Since(at); age < -time.Minute || age > 10*time.Minute {
		t.Errorf("%s record %s: ce_time %s is not about now", ceType, r.Key, raw)
	}
}

// decodeBare decodes a record value with the generated type and checks it is the
// bare message: no unknown fields, and it re-encodes to the same bytes.
func decodeBare(t *testing.T, r *kgo.Record, m proto.Message) {
	t.Helper()
	if err := proto.Unmarshal(r.Value, m); err != nil {
		t.Fatalf("%s: the value does not decode as %T: %v", header(r, "ce_type"), m, err)
	}
	if unknown := m.ProtoReflect().GetUnknown(); len(unknown) > 0 {
		t.Errorf("%s: unknown fields in the value: %x", header(r, "ce_type"), unknown)
	}
	again, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil || !bytes.Equal(again, r.Value) {
		t.Errorf("%s: the value is not exactly the message (%v)\n value: %x\n again: %x",
			header(r, "ce_type"), err, r.Value, again)
	}
}
