// Package attributes turns the volume context and secrets kubelet sends with
// NodePublishVolume into a validated volume description. It is pure: no I/O,
// no Vault, no mounts, so it can be fuzzed and every rejection is tested.
package attributes

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"vaultcsi.dev/driver/provider"
)

// Keys kubelet puts into the volume context (CSIDriver podInfoOnMount and
// tokenRequests). kubelet's keys overwrite a pod's attributes of the same
// name, so a pod cannot spoof them.
const (
	KeyPodName        = "csi.storage.k8s.io/pod.name"
	KeyPodNamespace   = "csi.storage.k8s.io/pod.namespace"
	KeyPodUID         = "csi.storage.k8s.io/pod.uid"
	KeyServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
	KeyEphemeral      = "csi.storage.k8s.io/ephemeral"
	KeyTokens         = "csi.storage.k8s.io/serviceAccount.tokens" //nolint:gosec // a key's name, not a credential
	kubeletPrefix     = "csi.storage.k8s.io/"
)

// Attributes a pod may set in its volumeAttributes.
const (
	AttrRole           = "role"
	AttrSecrets        = "secrets"
	AttrAuthMount      = "authMount"
	AttrVaultNamespace = "vaultNamespace"
	AttrRotationPeriod = "rotationPeriod"
)

// Limits on what one volume may ask for.
const (
	MaxFiles        = 256
	MaxSecretsYAML  = 64 << 10
	MaxComponentLen = 255
	MaxPathLen      = 1024
	// DataDirName is the atomic writer's symlink; no file may take its name.
	DataDirName = "..data"
	// MaxRotationPeriod bounds a volume's rotation period (and the driver's
	// --rotation-period): 30 days is longer than any sensible refresh, and a
	// bound keeps the due-time arithmetic far from time.Duration's limit.
	MaxRotationPeriod = 720 * time.Hour
)

// Volume is a validated request for one volume.
type Volume struct {
	Request provider.Request
	// RotationPeriod is the pod's own period; zero means the driver default.
	RotationPeriod time.Duration
	// TokenExpiry is when kubelet's service-account token expires (zero if unknown).
	TokenExpiry time.Time
	// Reload is the signal to send after a refresh that changed files (nil: none).
	Reload *Reload
}

// FieldError is a rejection that names the attribute (and entry) at fault.
// Its message never contains an attribute's value beyond a file or path name.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Parse validates the volume context and the request's secrets map for the
// given token audience. Every error is a *FieldError, except a pod identity
// the service-account token does not carry: an *IdentityError.
func Parse(volumeContext, secrets map[string]string, audience string) (*Volume, error) {
	for k := range volumeContext {
		switch k {
		case AttrRole, AttrSecrets, AttrAuthMount, AttrVaultNamespace, AttrRotationPeriod, AttrReload:
		default:
			if !strings.HasPrefix(k, kubeletPrefix) {
				return nil, fieldErr("volumeAttributes", "unknown attribute %q (allowed: role, secrets, authMount, vaultNamespace, rotationPeriod, reload)", printable(k))
			}
		}
	}
	if volumeContext[KeyEphemeral] != "true" {
		return nil, fieldErr(KeyEphemeral, `must be "true": only inline ephemeral volumes are supported (is CSIDriver podInfoOnMount set?)`)
	}
	v := &Volume{}
	r := &v.Request
	r.Pod = provider.Identity{
		Namespace:      volumeContext[KeyPodNamespace],
		PodName:        volumeContext[KeyPodName],
		PodUID:         volumeContext[KeyPodUID],
		ServiceAccount: volumeContext[KeyServiceAccount],
	}
	for field, val := range map[string]string{
		KeyPodNamespace: r.Pod.Namespace, KeyPodName: r.Pod.PodName,
		KeyPodUID: r.Pod.PodUID, KeyServiceAccount: r.Pod.ServiceAccount,
	} {
		if val == "" {
			return nil, fieldErr(field, "missing: kubelet sends it when the CSIDriver has podInfoOnMount: true")
		}
		if err := checkName(val); err != nil {
			return nil, fieldErr(field, "%v", err)
		}
	}
	if !IsUUID(r.Pod.PodUID) {
		return nil, fieldErr(KeyPodUID, "%q is not a UUID", printable(r.Pod.PodUID))
	}

	r.Role = volumeContext[AttrRole]
	if r.Role == "" {
		return nil, fieldErr(AttrRole, "required: the Vault role to log in as")
	}
	if err := checkName(r.Role); err != nil {
		return nil, fieldErr(AttrRole, "%v", err)
	}
	if m, ok := volumeContext[AttrAuthMount]; ok {
		if err := checkVaultPath(m); err != nil {
			return nil, fieldErr(AttrAuthMount, "%v", err)
		}
		r.AuthMount = m
	}
	if ns, ok := volumeContext[AttrVaultNamespace]; ok {
		if err := checkVaultPath(strings.TrimSuffix(ns, "/")); err != nil {
			return nil, fieldErr(AttrVaultNamespace, "%v", err)
		}
		r.VaultNamespace = ns
	}
	if p, ok := volumeContext[AttrRotationPeriod]; ok {
		d, err := time.ParseDuration(p)
		if err != nil || d <= 0 || d > MaxRotationPeriod {
			return nil, fieldErr(AttrRotationPeriod, "must be a positive duration of at most %s, such as 5m", fmtHours(MaxRotationPeriod))
		}
		v.RotationPeriod = d
	}

	if raw, ok := volumeContext[AttrReload]; ok {
		rl, err := parseReload(raw)
		if err != nil {
			return nil, err
		}
		v.Reload = rl
	}

	specs, err := cachedSecrets(volumeContext[AttrSecrets])
	if err != nil {
		return nil, err
	}
	r.Secrets = specs

	tok, exp, err := token(volumeContext, secrets, audience)
	if err != nil {
		return nil, err
	}
	// Before anything trusts the pod keys (policy, Vault), they must be
	// the identity the token was issued to.
	if err := BindIdentity(tok, r.Pod, audience); err != nil {
		return nil, err
	}
	r.JWT, v.TokenExpiry = tok, exp
	return v, nil
}

// token finds the service-account token for the audience: in the request's
// Secrets (Kubernetes 1.35+ serviceAccountTokenInSecrets) first, then in the
// volume context. Errors never include the JSON, which holds the token.
func token(volumeContext, secrets map[string]string, audience string) (string, time.Time, error) {
	raw, ok := secrets[KeyTokens]
	if !ok {
		raw, ok = volumeContext[KeyTokens]
	}
	if !ok || raw == "" {
		return "", time.Time{}, fieldErr(KeyTokens, "missing: set tokenRequests with audience %q on the CSIDriver", audience)
	}
	var tokens map[string]struct {
		Token               string `json:"token"`
		ExpirationTimestamp string `json:"expirationTimestamp"`
	}
	if err := json.Unmarshal([]byte(raw), &tokens); err != nil {
		return "", time.Time{}, fieldErr(KeyTokens, "not a JSON map of audience to token")
	}
	t, ok := tokens[audience]
	if !ok || t.Token == "" {
		return "", time.Time{}, fieldErr(KeyTokens, "no token for audience %q", audience)
	}
	var exp time.Time
	if t.ExpirationTimestamp != "" {
		var err error
		if exp, err = time.Parse(time.RFC3339, t.ExpirationTimestamp); err != nil {
			return "", time.Time{}, fieldErr(KeyTokens, "expirationTimestamp is not RFC 3339")
		}
	}
	return t.Token, exp, nil
}

// secretEntry is one item of the secrets attribute as the pod writes it.
type secretEntry struct {
	File string            `json:"file"`
	Path string            `json:"path"`
	Key  *string           `json:"key,omitempty"`
	Mode *fileMode         `json:"mode,omitempty"`
	Args map[string]string `json:"args,omitempty"`
	// Rendered files (formats.go).
	Template     *string       `json:"template,omitempty"`
	Encoding     *string       `json:"encoding,omitempty"`
	Format       *string       `json:"format,omitempty"`
	PasswordFrom *passwordFrom `json:"passwordFrom,omitempty"`
}

// fileMode accepts "0440" (octal string) or a YAML number (YAML 1.1 reads
// 0440 as octal already).
type fileMode os.FileMode

func (m *fileMode) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := strconv.ParseUint(s, 8, 32)
		if err != nil {
			return errors.New("mode must be octal, such as \"0440\"")
		}
		*m = fileMode(v)
		return nil
	}
	var n uint32
	if err := json.Unmarshal(b, &n); err != nil {
		return errors.New("mode must be octal, such as \"0440\"")
	}
	*m = fileMode(n)
	return nil
}

// specCache remembers parsed secrets attributes: kubelet re-sends the same
// string on every re-publish, and YAML parsing was the largest cost of a
// re-publish. Parsing is pure, so a hit is the same result. Bounded: the
// map is dropped when full (entries are one per distinct volume spec).
var specCache struct {
	sync.Mutex
	m map[string][]provider.SecretSpec
}

const specCacheMax = 4096

// cachedSecrets parses raw or returns the earlier result. Callers must not
// modify the returned slice or its Args maps.
func cachedSecrets(raw string) ([]provider.SecretSpec, error) {
	specCache.Lock()
	specs, ok := specCache.m[raw]
	specCache.Unlock()
	if ok {
		return specs, nil
	}
	specs, err := parseSecrets(raw)
	if err != nil {
		return nil, err
	}
	specCache.Lock()
	if specCache.m == nil || len(specCache.m) >= specCacheMax {
		specCache.m = make(map[string][]provider.SecretSpec)
	}
	specCache.m[raw] = specs
	specCache.Unlock()
	return specs, nil
}

func parseSecrets(raw string) ([]provider.SecretSpec, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, fieldErr(AttrSecrets, "required: a YAML list of {file, path, key, mode} or {file, template}")
	}
	if len(raw) > MaxSecretsYAML {
		return nil, fieldErr(AttrSecrets, "longer than %d bytes", MaxSecretsYAML)
	}
	var entries []secretEntry
	if err := yaml.UnmarshalStrict([]byte(raw), &entries); err != nil {
		return nil, fieldErr(AttrSecrets, "not a YAML list of {file, path, key, mode, args, encoding, format, passwordFrom} or {file, template, mode}: %s", yamlMsg(err))
	}
	if len(entries) == 0 {
		return nil, fieldErr(AttrSecrets, "empty list")
	}
	if len(entries) > MaxFiles {
		return nil, fieldErr(AttrSecrets, "%d entries; at most %d files per volume", len(entries), MaxFiles)
	}
	specs := make([]provider.SecretSpec, 0, len(entries))
	files := make(map[string]int, len(entries))
	dirs := make(map[string]int)
	for i, e := range entries {
		field := fmt.Sprintf("secrets[%d]", i)
		if err := CheckFileName(e.File); err != nil {
			return nil, fieldErr(field+".file", "%v", err)
		}
		// A file may not share its name with another file or with a
		// directory another file needs.
		if j, ok := files[e.File]; ok {
			return nil, fieldErr(field+".file", "%q is also secrets[%d].file", e.File, j)
		}
		if j, ok := dirs[e.File]; ok {
			return nil, fieldErr(field+".file", "%q is a directory of secrets[%d].file", e.File, j)
		}
		for d := path.Dir(e.File); d != "."; d = path.Dir(d) {
			if j, ok := files[d]; ok {
				return nil, fieldErr(field+".file", "%q is under secrets[%d].file, which is a file", e.File, j)
			}
			dirs[d] = i
		}
		files[e.File] = i
		s, err := renderedEntry(field, i, e)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	return specs, nil
}

// plainEntry checks an entry's path, key, mode and args.
func plainEntry(field string, i int, e secretEntry) (provider.SecretSpec, error) {
	if err := checkVaultPath(e.Path); err != nil {
		return provider.SecretSpec{}, fieldErr(field+".path", "%v", err)
	}
	if err := checkReadablePath(e.Path); err != nil {
		return provider.SecretSpec{}, fieldErr(field+".path", "%v", err)
	}
	s := provider.SecretSpec{File: e.File, Path: e.Path, Index: i}
	if e.Key != nil {
		if *e.Key == "" || strings.ContainsRune(*e.Key, 0) {
			return s, fieldErr(field+".key", "must be a non-empty field name (omit it to write the whole secret as JSON)")
		}
		s.Key = *e.Key
	}
	var err error
	if s.Mode, err = entryMode(field, e); err != nil {
		return s, err
	}
	if e.Args != nil {
		if !IsIssuingPath(e.Path) {
			return s, fieldErr(field+".args", "only allowed with a PKI issuing endpoint (<pki mount>/issue/<role>); %q is read", e.Path)
		}
		s.Args = e.Args
	}
	return s, nil
}

// entryMode checks an entry's mode: read bits only; 0: the default.
func entryMode(field string, e secretEntry) (os.FileMode, error) {
	if e.Mode == nil {
		return 0, nil
	}
	m := os.FileMode(*e.Mode)
	if m == 0 || m&^0o444 != 0 {
		return 0, fieldErr(field+".mode", "%#o: only read bits (such as 0400, 0440, 0444) are allowed", uint32(m))
	}
	return m, nil
}

// fmtHours prints a whole-hour duration as 720h rather than 720h0m0s.
func fmtHours(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
}

// CheckFileName enforces that a volume-relative file name cannot escape the
// volume or collide with the atomic writer's own entries (CVE-2020-8567).
func CheckFileName(name string) error {
	switch {
	case name == "":
		return errors.New("required")
	case strings.ContainsRune(name, 0):
		return errors.New("contains a NUL byte")
	case len(name) > MaxPathLen:
		return fmt.Errorf("longer than %d bytes", MaxPathLen)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("%q is absolute; it must be relative to the volume", printable(name))
	case path.Clean(name) != name:
		return fmt.Errorf("%q is not in clean form (no ./, //, trailing /)", printable(name))
	}
	for i, c := range strings.Split(name, "/") {
		if c == ".." || c == "." {
			return fmt.Errorf("%q contains a . or .. component", printable(name))
		}
		if len(c) > MaxComponentLen {
			return fmt.Errorf("a component is longer than %d bytes", MaxComponentLen)
		}
		if i == 0 && strings.HasPrefix(c, "..") {
			return fmt.Errorf("%q starts with .., which is reserved for the writer's own entries", printable(name))
		}
	}
	return nil
}

// checkVaultPath accepts a relative Vault API path in clean form with no
// characters that could change the request's meaning.
func checkVaultPath(p string) error {
	switch {
	case p == "":
		return errors.New("required")
	case len(p) > MaxPathLen:
		return fmt.Errorf("longer than %d bytes", MaxPathLen)
	case strings.HasPrefix(p, "/"), strings.HasSuffix(p, "/"):
		return fmt.Errorf("%q must not start or end with /", printable(p))
	case path.Clean(p) != p:
		return fmt.Errorf("%q is not in clean form", printable(p))
	}
	for _, c := range p {
		if c < 0x21 || c == 0x7f || strings.ContainsRune(`?#%\"'`, c) {
			return fmt.Errorf("%q contains a character not allowed in a Vault path", printable(p))
		}
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." || c == "." {
			return fmt.Errorf("%q contains a . or .. component", printable(p))
		}
	}
	return nil
}

// checkReadablePath refuses Vault's system and auth APIs: a volume reads
// secrets, it never configures Vault (peers let any path through).
func checkReadablePath(p string) error {
	first, _, _ := strings.Cut(p, "/")
	switch first {
	case "sys", "auth", "identity":
		return fmt.Errorf("%s/ paths are not secrets and cannot be mounted", first)
	}
	return nil
}

// IsIssuingPath reports whether a path has the shape of an endpoint that
// issues a credential on write (and so takes args): <mount>/issue/<role>,
// which also covers <mount>/issuer/<ref>/issue/<role>. It is only a first
// filter: the mount may have any name, so whether the path really is a PKI
// issuing endpoint is asked of Vault before anything is written (the
// provider's checkIssuing); a KV path spelled like one is never written.
func IsIssuingPath(p string) bool {
	parts := strings.Split(p, "/")
	n := len(parts)
	return n >= 3 && parts[n-2] == "issue" && parts[n-1] != "" && parts[0] != ""
}

// checkName accepts the short identifiers kubelet and pods pass: no
// control characters, slashes or NULs, at most 253 bytes.
func checkName(s string) error {
	if len(s) > 253 {
		return errors.New("longer than 253 bytes")
	}
	for _, c := range s {
		if c < 0x21 || c == 0x7f || c == '/' {
			return fmt.Errorf("%q contains a character that is not allowed", printable(s))
		}
	}
	return nil
}

// printable keeps error messages on one line and short.
func printable(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// yamlMsg trims a YAML error to its first line; it names the line and field
// but not the value.
func yamlMsg(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "error unmarshaling JSON: while decoding JSON: ")
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return printable(msg)
}

// maxClaimedLen bounds each value Claimed returns: a Kubernetes name is at
// most 253 bytes, anything longer is not one.
const maxClaimedLen = 253

// Claimed returns the pod identity and role the volume context claims,
// without validating them, for the audit line of a request that failed
// validation (possibly because of these very values). Values are cut to
// maxClaimedLen bytes and control characters replaced; missing ones are "".
func Claimed(volumeContext map[string]string) (provider.Identity, string) {
	clip := func(key string) string {
		s := volumeContext[key]
		if len(s) > maxClaimedLen {
			s = s[:maxClaimedLen] + "..."
		}
		return strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return '?'
			}
			return r
		}, s)
	}
	return provider.Identity{
		Namespace:      clip(KeyPodNamespace),
		PodName:        clip(KeyPodName),
		PodUID:         clip(KeyPodUID),
		ServiceAccount: clip(KeyServiceAccount),
	}, clip(AttrRole)
}
