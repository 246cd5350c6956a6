// Package render turns the fields of Vault secrets into the bytes of a
// file: Go templates over one or more secrets, binary encodings of one
// field (base64, hex) and PKI formats of an issued certificate (a PEM
// bundle, PKCS#12 and JKS key and trust stores). It is pure: no Vault, no
// files, no clock, no randomness, so the same secrets always give the same
// bytes and an unchanged secret never rewrites a file. Errors name the
// field or key at fault, never a value.
package render

import "errors"

// Errors callers map to gRPC codes; every error of this package wraps one.
var (
	// ErrInvalid: the request or the secret cannot be rendered as asked
	// (a bad template, a value that does not decode, a missing PKI field).
	ErrInvalid = errors.New("cannot render")
	// ErrMissingKey: a template asked for a key the secret does not have.
	ErrMissingKey = errors.New("no such key")
	// ErrTooLarge: the output passed its limit while it was rendered.
	ErrTooLarge = errors.New("rendered file too large")
)
