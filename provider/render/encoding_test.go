package render

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// Every base64 flavour and hex decode byte-exact, a 1 MiB random blob
// included; what does not decode is ErrInvalid without the value.
func TestDecode(t *testing.T) {
	blob := make([]byte, 1<<20)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	small := []byte{0, 1, 0xfe, 0xff, 'x'}
	for _, tc := range []struct {
		name string
		enc  Encoding
		in   string
		want []byte
	}{
		{"std padded", EncodingBase64, base64.StdEncoding.EncodeToString(small), small},
		{"std raw", EncodingBase64, base64.RawStdEncoding.EncodeToString(small), small},
		{"url padded", EncodingBase64, base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff}), []byte{0xfb, 0xff}},
		{"url raw", EncodingBase64, base64.RawURLEncoding.EncodeToString([]byte{0xfb, 0xff}), []byte{0xfb, 0xff}},
		{"wrapped lines", EncodingBase64, base64.StdEncoding.EncodeToString(small) + "\n", small},
		{"hex", EncodingHex, hex.EncodeToString(small), small},
		{"hex upper", EncodingHex, strings.ToUpper(hex.EncodeToString(small)), small},
		{"1 MiB base64", EncodingBase64, base64.StdEncoding.EncodeToString(blob), blob},
		{"1 MiB hex", EncodingHex, hex.EncodeToString(blob), blob},
	} {
		got, err := Decode(tc.enc, []byte(tc.in))
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: %d bytes, err %v", tc.name, len(got), err)
		}
	}
	for _, tc := range []struct {
		name string
		enc  Encoding
		in   string
	}{
		{"base64 bad char", EncodingBase64, "not*base64!"},
		{"base64 bad length", EncodingBase64, "abcde"},
		{"base64 mixed alphabets", EncodingBase64, "ab+_"},
		{"hex odd", EncodingHex, "abc"},
		{"hex bad", EncodingHex, "zz-secret-zz"},
	} {
		_, err := Decode(tc.enc, []byte(tc.in))
		if !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), tc.in) {
			t.Errorf("%s: err %v, want ErrInvalid without the value", tc.name, err)
		}
	}
	for _, name := range []string{"", "base32", "BASE64", "b64"} {
		if _, err := ParseEncoding(name); err == nil {
			t.Errorf("encoding %q accepted", name)
		}
	}
}
