// Package reflexion is a small Go client of reflexion-server: it dials the
// server and exposes the generated stubs of reflexion.v1.ReflexionService
// and grpc.health.v1.Health. Build it in GOPATH mode after
// client/go/generate.sh (see the README, "Go client").
package reflexion

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/ioutil"

	healthv1 "github.com/reflexion-dev/reflexion/client/go/healthv1"
	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
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

// Options say how to authenticate to a server that requires it (README,
// "Authentication and TLS"). The zero value is plaintext without a token.
type Options struct {
	// Token is sent on every call as metadata "authorization: Bearer
	// <token>" ("" = none).
	Token string
	// TLSCA is a PEM file of the CA the server's certificate chains to;
	// set, the connection uses TLS ("" = plaintext).
	TLSCA string
	// TLSCert and TLSKey are this client's certificate and key (PEM files)
	// for mTLS; both or neither, and only with TLSCA.
	TLSCert, TLSKey string
	// TLSServerName overrides the name the server's certificate is checked
	// against (default: the host of addr).
	TLSServerName string
}

// bearer sends the token on every call. It does not require TLS: the server
// accepts tokens over plaintext on loopback only (or with --insecure_listen).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (b bearer) RequireTransportSecurity() bool { return false }

// DialOptions returns the transport and per-call credentials for o. Errors
// name the option (a file that cannot be read, a certificate without its
// key, mTLS without TLSCA).
func (o Options) DialOptions() ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, errors.New("TLSCert and TLSKey (-tls-cert, -tls-key): give both or neither")
	}
	if o.TLSCA == "" {
		if o.TLSCert != "" || o.TLSServerName != "" {
			return nil, errors.New("TLSCert, TLSKey, TLSServerName: need TLSCA (-tls-ca)")
		}
		opts = append(opts, grpc.WithInsecure())
	} else {
		pem, err := ioutil.ReadFile(o.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("TLSCA (-tls-ca): %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLSCA (-tls-ca): no PEM certificate in %s", o.TLSCA)
		}
		cfg := &tls.Config{RootCAs: roots, ServerName: o.TLSServerName, MinVersion: tls.VersionTLS12}
		if o.TLSCert != "" {
			pair, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
			if err != nil {
				return nil, fmt.Errorf("TLSCert, TLSKey (-tls-cert, -tls-key): %w", err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(o.Token)))
	}
	return opts, nil
}

// Dial connects to addr ("host:port") without TLS and without a token (a
// server with authentication off, on loopback) and blocks until the
// connection is up or ctx ends, so a wrong address fails here rather than
// on the first call. opts are appended to the defaults.
func Dial(ctx context.Context, addr string, opts ...grpc.DialOption) (*Client, error) {
	return DialWith(ctx, addr, Options{}, opts...)
}

// DialWith is Dial with credentials: TLS, mTLS and a bearer token as o says.
func DialWith(ctx context.Context, addr string, o Options, opts ...grpc.DialOption) (*Client, error) {
	creds, err := o.DialOptions()
	if err != nil {
		return nil, err
	}
	all := append(append(creds, grpc.WithBlock()), opts...)
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
