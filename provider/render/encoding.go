package render

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Encoding is how a field's value is stored in Vault; the file holds the
// decoded bytes.
type Encoding string

// Encodings a secrets entry may name.
const (
	EncodingNone   Encoding = ""
	EncodingBase64 Encoding = "base64" // standard or URL alphabet, padded or not
	EncodingHex    Encoding = "hex"
)

// Encodings lists the valid names, for error messages.
const Encodings = "base64, hex"

// ParseEncoding checks a name from a secrets entry.
func ParseEncoding(s string) (Encoding, error) {
	switch e := Encoding(s); e {
	case EncodingBase64, EncodingHex:
		return e, nil
	case EncodingNone:
	}
	return EncodingNone, fmt.Errorf("%w: unknown encoding (want one of %s)", ErrInvalid, Encodings)
}

// Decode returns the bytes v encodes. ASCII whitespace is ignored, so a
// value wrapped at 64 or 76 columns decodes. The error never holds v.
func Decode(e Encoding, v []byte) ([]byte, error) {
	s := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, string(v))
	switch e {
	case EncodingNone:
		return v, nil
	case EncodingHex:
		out, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: the value is not hex (%d characters)", ErrInvalid, len(s))
		}
		return out, nil
	case EncodingBase64:
		enc := base64.StdEncoding
		if strings.ContainsAny(s, "-_") {
			enc = base64.URLEncoding
		}
		if !strings.HasSuffix(s, "=") {
			enc = enc.WithPadding(base64.NoPadding)
		}
		out, err := enc.Strict().DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: the value is not base64 (%d characters)", ErrInvalid, len(s))
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: unknown encoding", ErrInvalid)
}
