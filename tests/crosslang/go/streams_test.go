package crosslang

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	ordersv1 "github.com/wirebus/wirebus/gen/go/shop/orders/v1"
)

// TestStreams calls each of the four RPC shapes of the shop from grpc-go:
// unary PlaceOrder, server-streaming ListOrders, client-streaming
// ImportOrders and bidirectional WatchOrders.
func TestStreams(t *testing.T) {
	addr := os.Getenv("WIREBUS_GRPC_ADDR")
	if addr == "" {
		t.Skip("WIREBUS_GRPC_ADDR is not set: no shop gateway to call")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := ordersv1.NewOrderServiceClient(conn)
	customer := fmt.Sprintf("go-streams-%d", time.Now().UnixNano())
	item := &ordersv1.LineItem{Sku: "sku-go", Quantity: 1, PriceCents: 300}
	order := func(customerID string) *ordersv1.PlaceOrderRequest {
		return &ordersv1.PlaceOrderRequest{CustomerId: customerID, Items: []*ordersv1.LineItem{item}}
	}

	var placedID string
	var imported []string
	t.Run("unary PlaceOrder answers the new order id", func(t *testing.T) {
		reply, err := client.PlaceOrder(callContext(t), order(customer))
		if err != nil || reply.GetOrderId() == "" {
			t.Fatalf("PlaceOrder: %v, %v", reply, err)
		}
		placedID = reply.GetOrderId()
	})
	t.Run("client stream ImportOrders places every order and answers their ids", func(t *testing.T) {
		stream, err := client.ImportOrders(callContext(t))
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := stream.Send(order(customer)); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
		reply, err := stream.CloseAndRecv()
		if err != nil {
			t.Fatalf("ImportOrders: %v", err)
		}
		if reply.GetImported() != 3 || len(reply.GetOrderIds()) != 3 {
			t.Fatalf("ImportOrders answered %v", reply)
		}
		imported = reply.GetOrderIds()
	})
	t.Run("client stream ImportOrders with an invalid order is INVALID_ARGUMENT and places none", func(t *testing.T) {
		other := customer + "-rejected"
		stream, err := client.ImportOrders(callContext(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, req := range []*ordersv1.PlaceOrderRequest{order(other), {CustomerId: other}} {
			if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("Send: %v", err)
			}
		}
		_, err = stream.CloseAndRecv()
		st := wantCode(t, err, codes.InvalidArgument)
		bad := detail[*errdetails.BadRequest](t, st)
		if len(bad.GetFieldViolations()) != 1 || bad.GetFieldViolations()[0].GetField() != "items" {
			t.Errorf("BadRequest %v", bad)
		}
		if ids := listed(t, client, other); len(ids) != 0 {
			t.Errorf("the rejected import placed %v", ids)
		}
	})
	t.Run("server stream ListOrders streams the placed and imported orders in order", func(t *testing.T) {
		want := append([]string{placedID}, imported...)
		if got := listed(t, client, customer); !slices.Equal(got, want) {
			t.Errorf("ListOrders streamed %v, want %v", got, want)
		}
	})
	t.Run("bidi WatchOrders answers the status then each change", func(t *testing.T) {
		if len(imported) < 2 {
			t.Skip("ImportOrders did not place the orders to watch")
		}
		stream, err := client.WatchOrders(callContext(t))
		if err != nil {
			t.Fatal(err)
		}
		watched := imported[1]
		if err := stream.Send(&ordersv1.WatchOrdersRequest{OrderId: watched}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		first, err := stream.Recv()
		if err != nil || first.GetOrderId() != watched || first.GetStatus() == ordersv1.OrderStatus_ORDER_STATUS_CANCELLED {
			t.Fatalf("first update %v, %v", first, err)
		}
		cancel := &ordersv1.CancelOrderRequest{OrderId: watched, Reason: "go watched it"}
		if _, err := client.CancelOrder(callContext(t), cancel); err != nil {
			t.Fatalf("CancelOrder: %v", err)
		}
		for { // PENDING may become PAID (the payments slice) before CANCELLED shows
			update, err := stream.Recv()
			if err != nil {
				t.Fatalf("waiting for CANCELLED: %v", err)
			}
			if update.GetStatus() == ordersv1.OrderStatus_ORDER_STATUS_CANCELLED {
				break
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("after CloseSend: %v, want io.EOF (the call ends OK)", err)
		}
	})
	t.Run("bidi WatchOrders of an unknown order is NOT_FOUND with ErrorInfo ORDER_NOT_FOUND", func(t *testing.T) {
		stream, err := client.WatchOrders(callContext(t))
		if err != nil {
			t.Fatal(err)
		}
		unknown := "no-such-order-" + customer
		if err := stream.Send(&ordersv1.WatchOrdersRequest{OrderId: unknown}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		_, err = stream.Recv()
		st := wantCode(t, err, codes.NotFound)
		info := detail[*errdetails.ErrorInfo](t, st)
		if info.GetReason() != "ORDER_NOT_FOUND" || info.GetMetadata()["order_id"] != unknown {
			t.Errorf("ErrorInfo %v", info)
		}
	})
}

// listed returns the ids ListOrders streams for a customer.
func listed(t *testing.T, client ordersv1.OrderServiceClient, customer string) []string {
	t.Helper()
	stream, err := client.ListOrders(callContext(t), &ordersv1.ListOrdersRequest{CustomerId: customer})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		o, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return ids
		}
		if err != nil {
			t.Fatalf("ListOrders: %v", err)
		}
		ids = append(ids, o.GetOrderId())
	}
}
