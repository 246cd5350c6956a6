package provider

import (
	"errors"
	"fmt"

	"vaultcsi.dev/driver/provider/render"
)

// fieldsOf returns the fields of a read the volume made, by path and args.
type fieldsOf func(render.Ref) (map[string]any, error)

// produce makes the bytes of a file that is more than one raw field: a
// template over the reads it names, a decoded field, or an issued
// certificate in a keystore format (with its password from another read).
// own is the fields of the spec's own read (nil for a template); max bounds
// a template's output while it is written. Errors name the file, path and
// key, never a value.
func produce(spec SecretSpec, own map[string]any, get fieldsOf, max int64) ([]byte, error) {
	switch {
	case spec.Template != "":
		if spec.Tmpl == nil {
			return nil, fmt.Errorf("file %s: %w: the template was not parsed", spec.File, ErrInvalid)
		}
		out, err := spec.Tmpl.Execute(render.Lookup(get), max)
		if err != nil {
			return nil, renderErr(fmt.Sprintf("file %s: template", spec.File), err)
		}
		return out, nil
	case spec.Format != render.FormatNone:
		var password string
		if pf := spec.PasswordFrom; pf != nil {
			m, err := get(render.Ref{Path: pf.Path})
			if err != nil {
				return nil, err
			}
			v, ok := m[pf.Key]
			if !ok {
				return nil, fmt.Errorf("passwordFrom key %q of %s for file %s: %w: the secret has no such key", pf.Key, pf.Path, spec.File, ErrNotFound)
			}
			if password, ok = v.(string); !ok {
				return nil, fmt.Errorf("passwordFrom key %q of %s for file %s: %w: not a string", pf.Key, pf.Path, spec.File, ErrInvalid)
			}
		}
		out, err := render.Write(spec.Format, own, password)
		if err != nil {
			return nil, renderErr(fmt.Sprintf("file %s: format %s of %s", spec.File, spec.Format, spec.Path), err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("file %s: %w: nothing to render", spec.File, ErrInvalid)
}

// renderErr maps a render error onto the provider's kinds.
func renderErr(what string, err error) error {
	switch {
	case errors.Is(err, render.ErrTooLarge):
		return fmt.Errorf("%s: %w: the output passed the volume's limit or %d bytes while it was rendered", what, ErrTooLarge, MaxSecretBytes)
	case errors.Is(err, render.ErrMissingKey):
		return fmt.Errorf("%s: %w: %w", what, ErrNotFound, err)
	case errors.Is(err, render.ErrInvalid):
		return fmt.Errorf("%s: %w: %w", what, ErrInvalid, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
