package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	vault "github.com/hashicorp/vault/api"
)

// get and put are vault/api's Logical ReadWithContext and WriteWithContext
// with one difference: the response is decoded straight from the body.
// vault/api's ParseSecret first copies the whole body into two buffers (to
// tell an empty body and a bare JSON object apart), holding about 7 bytes
// per response byte at its peak; this holds the decoder's buffer and the
// values (DecodeFactor).
func (k *call) get(ctx context.Context, path string) (*vault.Secret, error) {
	ctx, cancel := k.timeout(ctx)
	defer cancel() // only after the body is decoded: vault/api's own raw calls cancel too early
	resp, err := k.c.Logical().ReadRawWithContext(ctx, path)
	return parseResponse(resp, err, false)
}

func (k *call) put(ctx context.Context, path string, data map[string]any) (*vault.Secret, error) {
	ctx, cancel := k.timeout(ctx)
	defer cancel()
	r := k.c.NewRequest(http.MethodPut, "/v1/"+path)
	if err := r.SetJSONBody(data); err != nil {
		return nil, fmt.Errorf("encode the request body: %w", err)
	}
	resp, err := k.c.RawRequestWithContext(ctx, r) //nolint:staticcheck // SA1019: the only raw write that does not cancel its context before the body is read
	return parseResponse(resp, err, true)
}

func (k *call) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if t := k.c.ClientTimeout(); t > 0 {
		return context.WithTimeout(ctx, t)
	}
	return context.WithCancel(ctx)
}

// parseResponse is vault/api's ParseRawResponseAndCloseBody (reads) and
// the tail of Logical.write (writes): a 404 is no secret and no error
// unless Vault put data or warnings in it.
func parseResponse(resp *vault.Response, err error, write bool) (*vault.Secret, error) {
	if resp != nil {
		defer func() { _ = resp.Body.Close() }() // fully read or abandoned: a close error changes nothing
	}
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		secret, perr := decodeSecret(resp.Body)
		if perr != nil {
			return nil, perr
		}
		if secret != nil && (len(secret.Warnings) > 0 || len(secret.Data) > 0) {
			if write {
				return secret, err
			}
			return secret, nil
		}
		if write && err != nil {
			return nil, err
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeSecret(resp.Body)
}

// decodeSecret decodes one response body; an empty body is no secret.
// Vault answers secret reads and issuing writes in its secret envelope
// (data, lease_id, ...); ParseSecret's fallback for a bare JSON object,
// which needed the body twice, is for other endpoints: such a body
// decodes here to a secret without data, which read reports as not found.
func decodeSecret(r io.Reader) (*vault.Secret, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	var s vault.Secret
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	return &s, nil
}
