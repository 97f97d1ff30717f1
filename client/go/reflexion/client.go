// Package reflexion is a small Go client of reflexion-server: it dials the
// server and exposes the generated stubs of reflexion.v1.ReflexionService
// and grpc.health.v1.Health. Build it in GOPATH mode after
// client/go/generate.sh (see the README, "Go client").
package reflexion

import (
	"context"
	"fmt"

	healthv1 "github.com/reflexion-dev/reflexion/client/go/healthv1"
	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
	"google.golang.org/grpc"
)

// Client is a connection to one reflexion-server. Safe for concurrent use
// (as the gRPC stubs are); Close it when done.
type Client struct {
	conn *grpc.ClientConn
	// Reflexion is the reflexion.v1.ReflexionService stub.
	Reflexion reflexionv1.ReflexionServiceClient
	// Health is the grpc.health.v1.Health stub.
	Health healthv1.HealthClient
}

// Dial connects to addr ("host:port") without TLS (the server serves
// plaintext) and blocks until the connection is up or ctx ends, so a wrong
// address fails here rather than on the first call. opts are appended to
// the defaults.
func Dial(ctx context.Context, addr string, opts ...grpc.DialOption) (*Client, error) {
	all := append([]grpc.DialOption{grpc.WithInsecure(), grpc.WithBlock()}, opts...)
	conn, err := grpc.DialContext(ctx, addr, all...)
	if err != nil {
		return nil, fmt.Errorf("dial reflexion-server at %s: %w", addr, err)
	}
	return &Client{
		conn:      conn,
		Reflexion: reflexionv1.NewReflexionServiceClient(conn),
		Health:    healthv1.NewHealthClient(conn),
	}, nil
}

// Serving reports whether the server's health service answers SERVING for
// service ("" is the server as a whole).
func (c *Client) Serving(ctx context.Context, service string) (bool, error) {
	resp, err := c.Health.Check(ctx, &healthv1.HealthCheckRequest{Service: service})
	if err != nil {
		return false, err
	}
	return resp.GetStatus() == healthv1.HealthCheckResponse_SERVING, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
