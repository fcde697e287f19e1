package crosslang

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	ordersv1 "github.com/wirebus/wirebus/gen/go/shop/orders/v1"
	paymentsv1 "github.com/wirebus/wirebus/gen/go/shop/payments/v1"
)

// goldenTypes maps the protobuf full names of manifest.json to the generated Go types.
var goldenTypes = map[string]func() proto.Message{
	"shop.orders.v1.LineItem":             func() proto.Message { return &ordersv1.LineItem{} },
	"shop.orders.v1.PlaceOrderRequest":    func() proto.Message { return &ordersv1.PlaceOrderRequest{} },
	"shop.orders.v1.PlaceOrderResponse":   func() proto.Message { return &ordersv1.PlaceOrderResponse{} },
	"shop.orders.v1.GetOrderRequest":      func() proto.Message { return &ordersv1.GetOrderRequest{} },
	"shop.orders.v1.Order":                func() proto.Message { return &ordersv1.Order{} },
	"shop.orders.v1.CancelOrderRequest":   func() proto.Message { return &ordersv1.CancelOrderRequest{} },
	"shop.orders.v1.CancelOrderResponse":  func() proto.Message { return &ordersv1.CancelOrderResponse{} },
	"shop.orders.v1.ListOrdersRequest":    func() proto.Message { return &ordersv1.ListOrdersRequest{} },
	"shop.orders.v1.ImportOrdersResponse": func() proto.Message { return &ordersv1.ImportOrdersResponse{} },
	"shop.orders.v1.WatchOrdersRequest":   func() proto.Message { return &ordersv1.WatchOrdersRequest{} },
	"shop.orders.v1.OrderStatusUpdate":    func() proto.Message { return &ordersv1.OrderStatusUpdate{} },
	"shop.orders.v1.OrderPlaced":          func() proto.Message { return &ordersv1.OrderPlaced{} },
	"shop.orders.v1.OrderCancelled":       func() proto.Message { return &ordersv1.OrderCancelled{} },
	"shop.payments.v1.PaymentCaptured":    func() proto.Message { return &paymentsv1.PaymentCaptured{} },
	"shop.orders.v1.OrderStatusChanged":   func() proto.Message { return &ordersv1.OrderStatusChanged{} },
	"shop.orders.v1.OrderSnapshot":        func() proto.Message { return &ordersv1.OrderSnapshot{} },
	"shop.payments.v1.CapturePayment":     func() proto.Message { return &paymentsv1.CapturePayment{} },
	"shop.payments.v1.PaymentDeclined":    func() proto.Message { return &paymentsv1.PaymentDeclined{} },
}

type goldenEntry struct {
	File string          `json:"file"`
	Type string          `json:"type"`
	JSON json.RawMessage `json:"json"`
}

func goldenDir() string {
	if dir := os.Getenv("WIREBUS_GOLDEN_DIR"); dir != "" {
		return dir
	}
	return filepath.Join("..", "..", "golden")
}

func readManifest(t *testing.T, dir string) []goldenEntry {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatalf("read manifest: %v", err)
	}
	var entries []goldenEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		t.Fatalf("parse manifest: %v", err)
	}
	if len(entries) == 0 {
		t.Fatal("manifest.json lists no golden files")
	}
	return entries
}

// sameJSON reports whether two JSON documents are equal as values (key order and
// whitespace aside).
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("parse %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("parse %s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

// TestGolden decodes every file Python wrote with its generated Go type, compares
// the fields with the manifest's canonical JSON and re-encodes to the same bytes;
// it also writes Go's encoding of each manifest message to WIREBUS_GO_OUT for the
// Python side to decode.
func TestGolden(t *testing.T) {
	dir := goldenDir()
	out := os.Getenv("WIREBUS_GO_OUT")
	if out != "" {
		if err := os.MkdirAll(out, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, entry := range readManifest(t, dir) {
		t.Run(entry.File, func(t *testing.T) {
			newMessage, ok := goldenTypes[entry.Type]
			if !ok {
				t.Fatalf("no generated Go type mapped for %s", entry.Type)
			}
			seen[entry.Type] = true
			golden, err := os.ReadFile(filepath.Join(dir, entry.File))
			if err != nil {
				t.Fatal(err)
			}

			decoded := newMessage()
			if err := proto.Unmarshal(golden, decoded); err != nil {
				t.Fatalf("decode %s as %s: %v", entry.File, entry.Type, err)
			}
			if got := string(decoded.ProtoReflect().Descriptor().FullName()); got != entry.Type {
				t.Fatalf("mapped Go type is %s, manifest says %s", got, entry.Type)
			}
			fromJSON := newMessage()
			if err := protojson.Unmarshal(entry.JSON, fromJSON); err != nil {
				t.Fatalf("protojson.Unmarshal of the manifest JSON: %v", err)
			}
			if !proto.Equal(decoded, fromJSON) {
				t.Fatalf("decoded %v\nmanifest JSON says %v", decoded, fromJSON)
			}
			goJSON, err := protojson.Marshal(decoded)
			if err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, goJSON, entry.JSON) {
				t.Errorf("Go's canonical JSON %s differs from Python's %s", goJSON, entry.JSON)
			}

			reencoded, err := proto.MarshalOptions{Deterministic: true}.Marshal(decoded)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(reencoded, golden) {
				t.Fatalf("re-encoded bytes differ\n go:     %x\n python: %x", reencoded, golden)
			}

			written, err := proto.MarshalOptions{Deterministic: true}.Marshal(fromJSON)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(written, golden) {
				t.Errorf("Go's encoding of the manifest JSON differs\n go:     %x\n python: %x",
					written, golden)
			}
			if out != "" {
				if err := os.WriteFile(filepath.Join(out, entry.File), written, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	for name := range goldenTypes {
		if !seen[name] {
			t.Errorf("manifest.json has no golden file of %s", name)
		}
	}
}
