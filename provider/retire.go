package provider

import (
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
)

// retireTransport closes the connection that brought a 503: Vault answers
// 503 when that node is sealed or cannot reach an active node, so every
// request sent on that connection would get the same. Behind a load
// balancer (a Kubernetes Service) the client holds one HTTP/2 connection,
// to whichever node it reached first, and reused it for every retry: a
// sealed node failed every publish until the idle timeout. Once closed,
// the next request dials again and the balancer may pick a healthy node.
// Requests still in flight on that connection fail (Unavailable), as they
// would have on that node anyway.
type retireTransport struct {
	base http.RoundTripper
}

func (t *retireTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var (
		mu   sync.Mutex
		conn net.Conn
	)
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		mu.Lock()
		conn = info.Conn
		mu.Unlock()
	}}
	resp, err := t.base.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		return resp, err
	}
	mu.Lock()
	c := conn
	mu.Unlock()
	if c != nil {
		resp.Body = &retireBody{ReadCloser: resp.Body, conn: c}
	}
	return resp, nil
}

// retireBody closes the connection once the 503's body was read and closed.
type retireBody struct {
	io.ReadCloser
	conn net.Conn
}

func (b *retireBody) Close() error {
	err := b.ReadCloser.Close()
	_ = b.conn.Close()
	return err
}
