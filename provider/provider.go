package provider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vault "github.com/hashicorp/vault/api"

	"vaultcsi.dev/driver/provider/render"
)

// Auth methods the driver logs in with.
const (
	AuthKubernetes = "kubernetes"
	AuthJWT        = "jwt"
)

// How long a login may run on after its caller gave up, so that a token
// Vault issues late is revoked rather than lost; and the deadline of that
// revocation when no orphan handler is set.
const (
	loginTimeout      = 30 * time.Second
	lateRevokeTimeout = 3 * time.Second
)

// Limits on what one Fetch returns.
const (
	MaxSecretBytes = 1 << 20
	// maxParallel caps one volume's reads in flight. 16 sends a volume of
	// up to 16 paths in one Vault round trip (at 8, a 10-secret volume
	// paid two: +20 ms at 20 ms RTT). Vault sets no request quota by
	// default; the driver as a whole has at most --max-concurrent-fetches
	// (16) volumes fetching, so at most 256 reads in flight, which over
	// TLS share one HTTP/2 connection (Go's server allows 250 streams on
	// it, the transport opens a second past that) and over plain HTTP
	// take a pooled connection each (maxIdlePerHost kept).
	maxParallel = 16
	// maxIdlePerHost keeps the connections of four volumes' parallel reads
	// for reuse: a burst of pods does not reconnect for every read.
	maxIdlePerHost = 64
)

// Config is the driver-wide Vault configuration (flags and Helm values).
type Config struct {
	Addr       string
	CACertFile string
	Namespace  string
	AuthMethod string // kubernetes or jwt
	AuthMount  string // defaults to the method's name
	// OnRequest, when set, is told of every request sent to Vault: op is
	// login, read, write, renew or revoke; code is the HTTP status (0 when
	// no response came back).
	OnRequest func(op string, code int)
}

// Provider fetches secrets from one Vault server. It is safe for concurrent
// use and shares one HTTP connection pool across all volumes.
type Provider struct {
	cfg     Config
	base    *vault.Client
	mounts  *mountCache // mount types, for the issuing-endpoint check
	orphans atomic.Pointer[func(*Session, Identity)]
}

// New checks the configuration and prepares the shared HTTP client.
func New(cfg Config) (*Provider, error) {
	switch cfg.AuthMethod {
	case AuthKubernetes, AuthJWT:
	case "":
		cfg.AuthMethod = AuthKubernetes
	default:
		return nil, fmt.Errorf("auth method %q: want kubernetes or jwt", cfg.AuthMethod)
	}
	if cfg.AuthMount == "" {
		cfg.AuthMount = cfg.AuthMethod
	}
	if cfg.Addr == "" {
		return nil, errors.New("vault address is required")
	}
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vault client defaults: %w", vc.Error)
	}
	vc.Address = cfg.Addr
	vc.MaxRetries = 0 // the driver decides when to retry (kubelet or the rotation backoff)
	tr := &http.Transport{
		Proxy:               nil, // Vault is reached directly; a proxy env var must not reroute tokens
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxIdlePerHost,
		MaxIdleConnsPerHost: maxIdlePerHost,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
		ForceAttemptHTTP2:   true,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
		// A read that waits for its fetch's large-response turn (limit.go)
		// leaves its stream unread: keep what HTTP/2 buffers for it small.
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 256 << 10},
	}
	vc.HttpClient = &http.Client{Transport: tr, CheckRedirect: noRedirect}
	if cfg.CACertFile != "" {
		if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: cfg.CACertFile}); err != nil {
			return nil, fmt.Errorf("vault CA certificate %s: %w", cfg.CACertFile, err)
		}
	}
	base, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	base.ClearToken() // never inherit VAULT_TOKEN from the environment
	// After NewClient: vault/api type-asserts *http.Transport while it
	// configures TLS and the address.
	vc.HttpClient.Transport = &limitTransport{base: &retireTransport{base: tr}, max: MaxResponseBytes}
	return &Provider{cfg: cfg, base: base, mounts: newMountCache(time.Now)}, nil
}

// noRedirect hands a redirect (a standby's 307) back to vault/api, which
// follows one hop with the same client, so the same CA, and refuses an
// https to http downgrade. net/http would follow up to ten hops itself, to
// any scheme, sending X-Vault-Token along.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Config returns the effective configuration.
func (p *Provider) Config() Config { return p.cfg }

// call is one Fetch or Release in progress: a Vault client with the right
// namespace and token, and a request counter.
type call struct {
	p        *Provider
	c        *vault.Client
	requests atomic.Int32
	scrub    []string // credentials to cut out of any error text
	// The request's volume limit and memory reservation (see Request).
	maxVolume int64
	mem       *Reservation
}

func (p *Provider) newCall(namespace string) (*call, error) {
	c, err := p.base.Clone()
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	c.ClearToken()
	c.ClearNamespace()
	if namespace == "" {
		namespace = p.cfg.Namespace
	}
	if namespace != "" {
		c.SetNamespace(namespace)
	}
	return &call{p: p, c: c}, nil
}

func (k *call) observe(op string, err error) {
	code := 200
	var re *vault.ResponseError
	switch {
	case errors.As(err, &re):
		code = re.StatusCode
	case err != nil:
		code = 0
	}
	k.observeCode(op, code)
}

func (k *call) observeCode(op string, code int) {
	k.requests.Add(1)
	if k.p.cfg.OnRequest != nil {
		k.p.cfg.OnRequest(op, code)
	}
}

// Fetch logs in (or reuses req.Session) and reads every secret of the
// request. It returns either all files or an error: never a partial set.
// On error the result is still returned, without files or session, so the
// caller can account for the Vault requests that were made and revoke the
// token of a login it made (Result.Orphan).
func (p *Provider) Fetch(ctx context.Context, req *Request) (*Result, error) {
	res := &Result{}
	k, err := p.newCall(req.VaultNamespace)
	if err != nil {
		return res, err
	}
	k.scrub = []string{req.JWT}
	k.maxVolume, k.mem = req.MaxVolumeBytes, req.Memory
	sess := req.Session
	if sess != nil && !sess.Usable(time.Now()) {
		sess = nil
	}
	fail := func(err error) (*Result, error) {
		res.VaultRequests = int(k.requests.Load())
		if res.LoggedIn {
			// Do not leave a token (and leases) behind for a fetch that
			// failed: the caller revokes it, once it holds nothing that
			// others wait for (Vault may be what hangs).
			res.Orphan = sess
		}
		return res, err
	}
	// login logs in and hands the new token to the caller before any read.
	login := func() error {
		s, err := k.login(ctx, req)
		if err != nil {
			return err
		}
		sess, res.LoggedIn = s, true
		k.scrub = append(k.scrub, sess.Token)
		if req.OnLogin != nil {
			if err := req.OnLogin(sess); err != nil {
				return fmt.Errorf("record the new Vault token: %w", err)
			}
		}
		return nil
	}
	if sess == nil {
		if err := login(); err != nil {
			return fail(err)
		}
	}
	k.scrub = append(k.scrub, sess.Token)
	k.c.SetToken(sess.Token)
	files, infos, err := k.readAll(ctx, req.Secrets)
	if err != nil && !res.LoggedIn && errors.Is(err, ErrDenied) && req.JWT != "" {
		// The reused token may have been revoked out of band: log in once more.
		if err := login(); err != nil {
			return fail(err)
		}
		k.c.SetToken(sess.Token)
		files, infos, err = k.readAll(ctx, req.Secrets)
	}
	if err != nil {
		return fail(err)
	}
	res.VaultRequests = int(k.requests.Load())
	res.Files, res.Secrets, res.Session = files, infos, sess
	return res, nil
}

// Usable reports whether the session's token can still be used for a fetch
// at now: it must not be within the last third of its lifetime, or 10s.
func (s *Session) Usable(now time.Time) bool {
	if s == nil || s.Token == "" {
		return false
	}
	if s.ExpiresAt.IsZero() {
		return true
	}
	// Usable until the renewal point, and never in the last 10s.
	until := s.ExpiresAt.Add(-10 * time.Second)
	if !s.IssuedAt.IsZero() {
		if due := RenewDue(s.IssuedAt, s.ExpiresAt.Sub(s.IssuedAt)); due.Before(until) {
			until = due
		}
	}
	return now.Before(until)
}

func (k *call) login(ctx context.Context, req *Request) (*Session, error) {
	if req.JWT == "" {
		return nil, fmt.Errorf("vault login: %w: no service-account token", ErrDenied)
	}
	mount := req.AuthMount
	if mount == "" {
		mount = k.p.cfg.AuthMount
	}
	what := fmt.Sprintf("vault login as role %q at auth/%s", req.Role, mount)
	start := time.Now()
	// The login runs on past the caller's deadline (up to loginTimeout): a
	// token Vault issues after the caller gave up must still reach someone
	// who revokes it, or it lives for its whole TTL.
	type answer struct {
		secret *vault.Secret
		err    error
	}
	answers := make(chan answer, 1)
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loginTimeout)
	go func() {
		defer cancel()
		secret, err := k.c.Logical().WriteWithContext(lctx, "auth/"+mount+"/login", map[string]any{
			"role": req.Role,
			"jwt":  req.JWT,
		})
		k.observe("login", err)
		answers <- answer{secret, err}
	}()
	var a answer
	select {
	case a = <-answers:
	case <-ctx.Done():
		go func() {
			if a := <-answers; a.err == nil {
				if s := k.session(a.secret, start); s != nil {
					k.p.lateLogin(s, req.Pod)
				}
			}
		}()
		return nil, k.wrap(ctx, what, ctx.Err())
	}
	if a.err != nil {
		return nil, k.wrap(ctx, what, a.err)
	}
	s := k.session(a.secret, start)
	if s == nil {
		return nil, fmt.Errorf("%s: %w: no token in the response", what, ErrUnavailable)
	}
	return s, nil
}

// session is the Session of a login's answer; nil without a token.
func (k *call) session(secret *vault.Secret, start time.Time) *Session {
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil
	}
	s := &Session{
		Token:     secret.Auth.ClientToken,
		Accessor:  secret.Auth.Accessor,
		Namespace: k.c.Namespace(),
		Renewable: secret.Auth.Renewable,
		IssuedAt:  start,
	}
	if secret.Auth.LeaseDuration > 0 {
		s.ExpiresAt = start.Add(time.Duration(secret.Auth.LeaseDuration) * time.Second)
	}
	return s
}

// SetOrphanHandler names who takes a token that Vault issued for a login
// whose caller had already given up (its deadline passed mid-login). The
// driver hands it to its revocation queue. Without a handler the provider
// revokes such a token itself, once, with a short deadline.
func (p *Provider) SetOrphanHandler(f func(*Session, Identity)) { p.orphans.Store(&f) }

// lateLogin disposes of a token that came back after its caller left.
func (p *Provider) lateLogin(s *Session, pod Identity) {
	if f := p.orphans.Load(); f != nil && *f != nil {
		(*f)(s, pod)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), lateRevokeTimeout)
	defer cancel()
	_ = p.revokeToken(ctx, s)
}

// readKey identifies one Vault request: files that name the same path (and
// args) share one read.
type readKey struct {
	path string
	args string
}

func keyOf(r render.Ref) readKey {
	if r.Args == nil {
		return readKey{path: r.Path}
	}
	var b strings.Builder
	for _, k := range sortedKeys(r.Args) {
		fmt.Fprintf(&b, "%s=%s\x00", k, r.Args[k])
	}
	return readKey{path: r.Path, args: b.String()}
}

type readResult struct {
	info SecretInfo
	err  error
}

// readAll is readOnce, and once more when the driver's memory budget ran
// out: the failed attempt gave back all it charged, so the fetch holds only
// its up-front reservation and may wait in line for what a whole volume
// may need (Reservation.Await). Then the second attempt cannot run out.
func (k *call) readAll(ctx context.Context, specs []SecretSpec) ([]File, []SecretInfo, error) {
	// Args make a write: Vault must confirm every such path is an issuing
	// endpoint before anything at all is sent with them (all or nothing).
	for _, s := range specs {
		for _, r := range s.Reads() {
			if r.Args != nil {
				if err := k.checkIssuing(ctx, SecretSpec{Path: r.Path, Index: s.Index, Template: s.Template}); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	files, infos, err := k.readOnce(ctx, specs)
	if !errors.Is(err, ErrBusy) || k.mem == nil {
		return files, infos, err
	}
	if werr := k.mem.Await(ctx, MinBudget(k.maxVolume)); werr != nil {
		if ctx.Err() != nil {
			return nil, nil, werr
		}
		return nil, nil, err
	}
	return k.readOnce(ctx, specs)
}

// readOnce reads each distinct path once and renders its files as soon as
// it arrives, charging the response and the rendered copies to the
// request's memory reservation and stopping at the volume limit.
func (k *call) readOnce(ctx context.Context, specs []SecretSpec) (_ []File, _ []SecretInfo, err error) {
	order := make([]readKey, 0, len(specs))
	results := make(map[readKey]*readResult, len(specs))
	filesOf := make(map[readKey][]int, len(specs))
	argsOf := make(map[readKey]map[string]string, len(specs))
	// Files made of several reads (templates, passwordFrom) are rendered
	// once every read is in: the reads they need are kept until then.
	var composite []int
	keep := map[readKey]bool{}
	for i, s := range specs {
		if s.Composite() {
			composite = append(composite, i)
		}
		for _, r := range s.Reads() {
			rk := keyOf(r)
			if _, ok := results[rk]; !ok {
				results[rk] = &readResult{}
				order = append(order, rk)
				argsOf[rk] = r.Args
			}
			if s.Composite() {
				keep[rk] = true
			} else {
				filesOf[rk] = append(filesOf[rk], i)
			}
		}
	}
	rd := &renderer{specs: specs, files: make([]File, len(specs)), limit: k.maxVolume, mem: k.mem}
	var (
		keptMu sync.Mutex
		kept   = map[readKey]map[string]any{}
		meters []*meter // of kept reads, refunded when the fetch is done
	)
	defer func() {
		for _, m := range meters {
			m.refund()
		}
		if err != nil {
			rd.refund()
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	large := make(chan struct{}, 1) // one large response decoded at a time
	readOne := func(rk readKey, r *readResult) {
		m := &meter{res: k.mem, large: large}
		var secret *vault.Secret
		secret, r.info, r.err = k.read(withMeter(ctx, m), rk.path, argsOf[rk])
		if r.err == nil {
			r.err = rd.renderRead(secret, r.info, filesOf[rk])
		}
		if r.err != nil || !keep[rk] {
			m.refund() // the response is garbage once its files are rendered
			return
		}
		// Still charged until the composite files are rendered, but another
		// large response may be decoded meanwhile.
		m.releaseLarge()
		keptMu.Lock()
		kept[rk] = fields(secret, r.info)
		meters = append(meters, m)
		keptMu.Unlock()
	}
	if len(order) == 1 {
		readOne(order[0], results[order[0]])
	} else {
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxParallel)
		for _, rk := range order {
			wg.Add(1)
			sem <- struct{}{}
			go func(rk readKey, r *readResult) {
				defer func() { <-sem; wg.Done() }()
				readOne(rk, r)
				if r.err != nil {
					cancel() // all or nothing: stop the other reads early
				}
			}(rk, results[rk])
		}
		wg.Wait()
	}
	// Report the first failure in the volume's own order, preferring a
	// real cause over the cancellation it triggered in its siblings.
	var firstErr error
	for _, rk := range order {
		if err := results[rk].err; err != nil {
			if firstErr == nil || (errors.Is(firstErr, context.Canceled) && !errors.Is(err, context.Canceled)) {
				firstErr = err
			}
		}
	}
	if firstErr != nil {
		return nil, nil, firstErr
	}
	get := func(r render.Ref) (map[string]any, error) {
		m, ok := kept[keyOf(r)]
		if !ok { // Parse found every read, so this is a bug, not bad input
			return nil, fmt.Errorf("%s: %w: not read for this file", r.Path, ErrInvalid)
		}
		return m, nil
	}
	for _, i := range composite {
		if err := rd.renderComposite(i, get); err != nil {
			return nil, nil, err
		}
	}
	infos := make([]SecretInfo, 0, len(order))
	for _, rk := range order {
		infos = append(infos, results[rk].info)
	}
	return rd.files, infos, nil
}

// read fetches one path: a GET for plain secrets, a PUT with args for
// issuing endpoints.
func (k *call) read(ctx context.Context, path string, args map[string]string) (*vault.Secret, SecretInfo, error) {
	info := SecretInfo{Path: path, FetchedAt: time.Now()}
	var (
		secret *vault.Secret
		err    error
		op     = "read"
	)
	if args != nil {
		op = "write"
		body := make(map[string]any, len(args))
		for k, v := range args {
			body[k] = v
		}
		secret, err = k.put(ctx, path, body)
	} else {
		secret, err = k.get(ctx, path)
	}
	if err == nil && secret == nil {
		// vault/api answers a 404 with no secret and no error.
		k.observeCode(op, http.StatusNotFound)
	} else {
		k.observe(op, err)
	}
	if err != nil {
		return nil, info, k.wrap(ctx, fmt.Sprintf("vault %s %s", op, path), err)
	}
	if secret == nil || secret.Data == nil {
		return nil, info, fmt.Errorf("vault %s %s: %w: no secret at this path", op, path, ErrNotFound)
	}
	if isKVv2(path, secret) {
		if inner, _ := secret.Data["data"].(map[string]any); inner == nil {
			return nil, info, fmt.Errorf("vault %s %s: %w: the current version is deleted or destroyed", op, path, ErrNotFound)
		}
		info.Version = kvVersion(secret)
	}
	info.LeaseID = secret.LeaseID
	info.Renewable = secret.Renewable
	info.LeaseDuration = time.Duration(secret.LeaseDuration) * time.Second
	info.IssuedTTL = info.LeaseDuration
	if secret.LeaseID == "" {
		// PKI certificates carry no lease by default; their expiry is the clock.
		if exp, ok := secret.Data["expiration"]; ok {
			if n, err := toInt64(exp); err == nil && n > 0 {
				info.LeaseDuration = time.Until(time.Unix(n, 0)).Round(time.Second)
				info.IssuedTTL = info.LeaseDuration
			}
		}
	}
	return secret, info, nil
}

// revokeToken revokes a session's token, and with it every lease the token
// created. A token that is already gone counts as revoked.
func (p *Provider) revokeToken(ctx context.Context, s *Session) error {
	if s == nil || s.Token == "" {
		return nil
	}
	k, err := p.newCall(s.Namespace)
	if err != nil {
		return err
	}
	k.scrub = []string{s.Token}
	k.c.SetToken(s.Token)
	_, err = k.c.Logical().WriteWithContext(ctx, "auth/token/revoke-self", nil)
	k.observe("revoke", err)
	var re *vault.ResponseError
	if errors.As(err, &re) && (re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized) {
		return nil // expired or revoked already; its leases went with it
	}
	if err != nil {
		return k.wrap(ctx, "vault revoke token", err)
	}
	return nil
}

// Release revokes the session's token and so every lease it created.
func (p *Provider) Release(ctx context.Context, s *Session) error {
	return p.revokeToken(ctx, s)
}

// wrap classifies a Vault client error into one of the package's sentinel
// errors, keeping Vault's own message minus any credential.
func (k *call) wrap(ctx context.Context, what string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", what, ctxErr)
	}
	var be *bodyError
	if errors.As(err, &be) {
		return fmt.Errorf("%s: %w", what, be.err)
	}
	var re *vault.ResponseError
	if errors.As(err, &re) {
		msg := k.clean(strings.Join(re.Errors, "; "))
		if msg == "" {
			msg = http.StatusText(re.StatusCode)
		}
		var kind error
		switch re.StatusCode {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
			kind = ErrDenied
		case http.StatusNotFound:
			kind = ErrNotFound
		default:
			kind = ErrUnavailable
		}
		return fmt.Errorf("%s: %w: Vault answered %d: %s", what, kind, re.StatusCode, msg)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if cause := tlsVerifyCause(err); cause != nil {
		return fmt.Errorf("%s: %w: %w: %s", what, ErrUnavailable, ErrTLSVerify, k.clean(cause.Error()))
	}
	return fmt.Errorf("%s: %w: %s", what, ErrUnavailable, k.clean(err.Error()))
}

// tlsVerifyCause returns the certificate check that failed in err, or nil
// when err is not a failed verification of Vault's certificate.
func tlsVerifyCause(err error) error {
	var (
		ve  *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		cie x509.ConstraintViolationError
	)
	switch {
	case errors.As(err, &ve):
		return ve.Err
	case errors.As(err, &ua):
		return ua
	case errors.As(err, &he):
		return he
	case errors.As(err, &ci):
		return ci
	case errors.As(err, &cie):
		return cie
	}
	return nil
}

// errorCountRE matches the header Vault's multierror puts before its list.
var errorCountRE = regexp.MustCompile(`^\d+ errors? occurred:$`)

// clean makes Vault's error text one line fit for an Event ("1 error
// occurred:\n\t* permission denied" -> "permission denied") and cuts out
// any credential of this call.
func (k *call) clean(s string) string {
	var parts []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "* ")
		if line != "" && !errorCountRE.MatchString(line) {
			parts = append(parts, line)
		}
	}
	s = strings.Join(parts, "; ")
	for _, c := range k.scrub {
		if c != "" {
			s = strings.ReplaceAll(s, c, "[redacted]")
		}
	}
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	return s
}
