package crosslang

import (
	"context"
	"errors"
	"net/http"
	"os"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	ordersv1 "github.com/wirebus/wirebus/gen/go/shop/orders/v1"
)

const orderService = "/shop.orders.v1.OrderService/"

// TestShopOverConnect calls the shop's Connect port (`wirebus run ... --connect-port`)
// with connect-go's generic clients over the protoc-gen-go types: the Connect protocol
// with the binary and the JSON codec, and gRPC-Web; errors carry the same details.
// ImportOrders streams its orders over HTTP/1.1 (client streaming needs no HTTP/2).
func TestShopOverConnect(t *testing.T) {
	base := os.Getenv("WIREBUS_CONNECT_URL")
	if base == "" {
		t.Skip("WIREBUS_CONNECT_URL is not set: no Connect port to call")
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	protocols := map[string][]connect.ClientOption{
		"connect+proto": nil,
		"connect+json":  {connect.WithProtoJSON()},
		"grpc-web":      {connect.WithGRPCWeb()},
	}
	for name, options := range protocols {
		t.Run(name, func(t *testing.T) {
			place := connect.NewClient[ordersv1.PlaceOrderRequest, ordersv1.PlaceOrderResponse](
				http.DefaultClient, base+orderService+"PlaceOrder", options...)
			get := connect.NewClient[ordersv1.GetOrderRequest, ordersv1.Order](
				http.DefaultClient, base+orderService+"GetOrder", options...)
			list := connect.NewClient[ordersv1.ListOrdersRequest, ordersv1.Order](
				http.DefaultClient, base+orderService+"ListOrders", options...)
			importer := connect.NewClient[ordersv1.PlaceOrderRequest, ordersv1.ImportOrdersResponse](
				http.DefaultClient, base+orderService+"ImportOrders", options...)
			customer := "go-connect-" + name
			reply, err := place.CallUnary(ctx, connect.NewRequest(&ordersv1.PlaceOrderRequest{
				CustomerId: customer,
				Items:      []*ordersv1.LineItem{{Sku: "book", Quantity: 2, PriceCents: 1250}},
			}))
			if err != nil {
				t.Fatalf("PlaceOrder: %v", err)
			}
			orderID := reply.Msg.GetOrderId()
			order, err := get.CallUnary(ctx, connect.NewRequest(&ordersv1.GetOrderRequest{OrderId: orderID}))
			if err != nil {
				t.Fatalf("GetOrder: %v", err)
			}
			if order.Msg.GetTotalCents() != 2500 || order.Msg.GetCustomerId() != customer {
				t.Fatalf("GetOrder answered %v", order.Msg)
			}
			stream, err := list.CallServerStream(ctx, connect.NewRequest(&ordersv1.ListOrdersRequest{CustomerId: customer}))
			if err != nil {
				t.Fatalf("ListOrders: %v", err)
			}
			var listed []string
			for stream.Receive() {
				listed = append(listed, stream.Msg().GetOrderId())
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("ListOrders stream: %v", err)
			}
			if len(listed) == 0 || listed[len(listed)-1] != orderID {
				t.Fatalf("ListOrders streamed %v, want it to end with %s", listed, orderID)
			}
			imports := importer.CallClientStream(ctx)
			for range 3 {
				err := imports.Send(&ordersv1.PlaceOrderRequest{
					CustomerId: customer + "-import",
					Items:      []*ordersv1.LineItem{{Sku: "pen", Quantity: 1, PriceCents: 99}},
				})
				if err != nil {
					t.Fatalf("ImportOrders send: %v", err)
				}
			}
			imported, err := imports.CloseAndReceive()
			if err != nil {
				t.Fatalf("ImportOrders: %v", err)
			}
			if imported.Msg.GetImported() != 3 || len(imported.Msg.GetOrderIds()) != 3 {
				t.Fatalf("ImportOrders answered %v, want 3 orders", imported.Msg)
			}
			for _, id := range imported.Msg.GetOrderIds() {
				if _, err := get.CallUnary(ctx, connect.NewRequest(&ordersv1.GetOrderRequest{OrderId: id})); err != nil {
					t.Fatalf("imported order %s: %v", id, err)
				}
			}
			_, err = get.CallUnary(ctx, connect.NewRequest(&ordersv1.GetOrderRequest{OrderId: "no-such-order"}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("unknown order: %v, want not_found", err)
			}
			if reason := errorInfoReason(t, err); reason != "ORDER_NOT_FOUND" {
				t.Fatalf("ErrorInfo reason %q, want ORDER_NOT_FOUND", reason)
			}
			_, err = place.CallUnary(ctx, connect.NewRequest(&ordersv1.PlaceOrderRequest{CustomerId: customer}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("no items: %v, want invalid_argument", err)
			}
			if field := firstViolation(t, err); field != "items" {
				t.Fatalf("BadRequest field %q, want items", field)
			}
		})
	}
}

func connectDetails(t *testing.T, err error) []any {
	t.Helper()
	var connectErr *connect.Error
	if !errors.As(err, &connectErr) {
		t.Fatalf("%v is not a *connect.Error", err)
	}
	var values []any
	for _, detail := range connectErr.Details() {
		value, valueErr := detail.Value()
		if valueErr != nil {
			t.Fatalf("detail %s: %v", detail.Type(), valueErr)
		}
		values = append(values, value)
	}
	return values
}

func errorInfoReason(t *testing.T, err error) string {
	for _, value := range connectDetails(t, err) {
		if info, ok := value.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func firstViolation(t *testing.T, err error) string {
	for _, value := range connectDetails(t, err) {
		if bad, ok := value.(*errdetails.BadRequest); ok && len(bad.GetFieldViolations()) > 0 {
			return bad.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}
