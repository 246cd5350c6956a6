package attributes

import (
	"strings"

	"vaultcsi.dev/driver/provider"
	"vaultcsi.dev/driver/provider/render"
)

// passwordFrom names the field of another secret that holds a keystore's
// password: {path, key}.
type passwordFrom struct {
	Path string `json:"path"`
	Key  string `json:"key"`
}

// Entry fields, as error messages name them.
const (
	fieldTemplate     = ".template"
	fieldEncoding     = ".encoding"
	fieldFormat       = ".format"
	fieldPasswordFrom = ".passwordFrom"
)

// renderedEntry checks one entry: a plain one, one with an encoding or a
// format, or a template. Every Vault path a template reads is found here,
// from its string literals, so the access policy sees it before any read.
func renderedEntry(field string, i int, e secretEntry) (provider.SecretSpec, error) {
	if e.Template != nil {
		return templateEntry(field, i, e)
	}
	s, err := plainEntry(field, i, e)
	if err != nil {
		return s, err
	}
	if e.Encoding != nil {
		if s.Encoding, err = render.ParseEncoding(*e.Encoding); err != nil {
			return s, fieldErr(field+fieldEncoding, "%q: unknown (want one of %s)", printable(*e.Encoding), render.Encodings)
		}
		switch {
		case e.Key == nil:
			return s, fieldErr(field+fieldEncoding, "needs key: the one field whose value is decoded")
		case e.Format != nil:
			return s, fieldErr(field+fieldEncoding, "not allowed with format")
		}
	}
	if e.Format != nil {
		if s.Format, err = render.ParseFormat(*e.Format); err != nil {
			return s, fieldErr(field+fieldFormat, "%q: unknown (want one of %s)", printable(*e.Format), render.Formats)
		}
		switch {
		case e.Args == nil:
			return s, fieldErr(field+fieldFormat, "only for a certificate issued by a PKI issuing endpoint (<pki mount>/issue/<role> with args); %q is read", e.Path)
		case e.Key != nil:
			return s, fieldErr(field+".key", "not allowed with format: the format uses the whole issued certificate")
		}
	}
	if e.PasswordFrom != nil {
		if !s.Format.TakesPassword() {
			return s, fieldErr(field+fieldPasswordFrom, "only for a keystore format (pkcs12, pkcs12-truststore, jks, jks-truststore)")
		}
		pf := *e.PasswordFrom
		if err := checkVaultPath(pf.Path); err != nil {
			return s, fieldErr(field+fieldPasswordFrom+".path", "%v", err)
		}
		if err := checkReadablePath(pf.Path); err != nil {
			return s, fieldErr(field+fieldPasswordFrom+".path", "%v", err)
		}
		if IsIssuingPath(pf.Path) {
			return s, fieldErr(field+fieldPasswordFrom+".path", "%q is an issuing endpoint; a password is read from a secret", pf.Path)
		}
		if pf.Key == "" || strings.ContainsRune(pf.Key, 0) {
			return s, fieldErr(field+fieldPasswordFrom+".key", "required: the field that holds the password")
		}
		s.PasswordFrom = &provider.FieldRef{Path: pf.Path, Key: pf.Key}
	} else if s.Format.NeedsPassword() {
		return s, fieldErr(field+fieldPasswordFrom, "required for %s: a JKS key entry needs a password of at least %d characters", s.Format, render.MinJKSPassword)
	}
	return s, nil
}

// templateEntry checks a template entry: only file, template and mode.
func templateEntry(field string, i int, e secretEntry) (provider.SecretSpec, error) {
	s := provider.SecretSpec{File: e.File, Index: i}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{".path", e.Path != ""}, {".key", e.Key != nil}, {".args", e.Args != nil},
		{fieldEncoding, e.Encoding != nil}, {fieldFormat, e.Format != nil}, {fieldPasswordFrom, e.PasswordFrom != nil},
	} {
		if f.set {
			return s, fieldErr(field+f.name, "not allowed with template: a template names its secrets itself (secret \"<path>\")")
		}
	}
	var err error
	if s.Mode, err = entryMode(field, e); err != nil {
		return s, err
	}
	t, err := render.Parse(e.File, *e.Template)
	if err != nil {
		return s, fieldErr(field+fieldTemplate, "%v", strings.TrimPrefix(err.Error(), render.ErrInvalid.Error()+": "))
	}
	for _, r := range t.Refs {
		if err := checkVaultPath(r.Path); err != nil {
			return s, fieldErr(field+fieldTemplate, "secret %q: %v", printable(r.Path), err)
		}
		if err := checkReadablePath(r.Path); err != nil {
			return s, fieldErr(field+fieldTemplate, "secret %q: %v", printable(r.Path), err)
		}
		if r.Args != nil && !IsIssuingPath(r.Path) {
			return s, fieldErr(field+fieldTemplate, "secret %q: args only with a PKI issuing endpoint (<pki mount>/issue/<role>)", r.Path)
		}
	}
	s.Template, s.Tmpl = *e.Template, t
	return s, nil
}
