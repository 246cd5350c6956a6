package state

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
)

var update = flag.Bool("update", false, "rewrite the current-schema fixtures in testdata from the schema 1 ones")

// Fixture placeholders: the files in testdata are records written by the
// driver with the credentials, target and times replaced, so that a test
// can substitute live ones (the driver's TestStateFormatsRefreshAndRevoke
// puts real Vault tokens and leases in).
const (
	phToken            = "{{TOKEN}}"
	phAccessor         = "{{ACCESSOR}}"
	phIncomingToken    = "{{INCOMING_TOKEN}}"
	phIncomingAccessor = "{{INCOMING_ACCESSOR}}"
	phTarget           = "{{TARGET}}"
	phDBLease          = "{{DB_LEASE}}"
	phFetchedAt        = "{{FETCHED_AT}}"
	phTokenIssuedAt    = "{{TOKEN_ISSUED_AT}}"
	phTokenExpiresAt   = "{{TOKEN_EXPIRES_AT}}"
)

// fixtureKinds are the records the driver writes, one fixture per schema.
var fixtureKinds = []string{"volume", "volume-incoming", "pending", "revocation"}

func fixture(t *testing.T, kind string, schema int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", fixtureName(kind, schema)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fixtureName(kind string, schema int) string {
	return kind + "-v" + strconv.Itoa(schema) + ".json"
}

// dummy values, each unique so that a record can be turned back into a
// template.
func dummies() map[string]string {
	return map[string]string{
		phToken: "hvs.dummy-token", phAccessor: "dummy-accessor",
		phIncomingToken: "hvs.dummy-incoming", phIncomingAccessor: "dummy-incoming-accessor",
		phTarget:        "/var/lib/kubelet/pods/7a1e1f0c-3c3e-4f4e-9a57-2b1b7a0e0001/volumes/kubernetes.io~csi/secrets/mount",
		phDBLease:       "database/creds/app/dummyLease",
		phFetchedAt:     "2026-11-29T22:40:00.123456789Z",
		phTokenIssuedAt: "2026-11-29T22:39:59.5Z", phTokenExpiresAt: "2026-11-29T23:39:59.5Z",
	}
}

func fill(tmpl string, vals map[string]string) string {
	var pairs []string
	for k, v := range vals {
		pairs = append(pairs, k, v)
	}
	return strings.NewReplacer(pairs...).Replace(tmpl)
}

func unfill(s string, vals map[string]string) string {
	var pairs []string
	for k, v := range vals {
		pairs = append(pairs, v, k)
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Every recorded schema of every record kind reads back to the same
// in-memory record, field by field; the current encoder writes exactly the
// newest fixture (so a format change without a new fixture fails here).
func TestRecordedFormats(t *testing.T) {
	d := dummies()
	fetched, issued, expires := mustTime(t, d[phFetchedAt]), mustTime(t, d[phTokenIssuedAt]), mustTime(t, d[phTokenExpiresAt])
	pod := provider.Identity{Namespace: "shop", PodName: "payment-7d9f", PodUID: "7a1e1f0c-3c3e-4f4e-9a57-2b1b7a0e0001", ServiceAccount: "payment"}
	session := &provider.Session{Token: d[phToken], Accessor: d[phAccessor], Renewable: true, IssuedAt: issued, ExpiresAt: expires}
	published := &Volume{
		Target: d[phTarget], VolumeID: "csi-7a1e1f0c-3c3e-4f4e-9a57-2b1b7a0e0001", Pod: pod, Role: "dyn",
		RequestHash: "1c91cfd09b1a1ced", FetchedAt: fetched,
		Secrets: []provider.SecretInfo{
			{Path: "database/creds/app", LeaseID: d[phDBLease], LeaseDuration: time.Hour, Renewable: true, IssuedTTL: time.Hour, FetchedAt: fetched},
			{Path: "pki/issue/web", LeaseDuration: 3599 * time.Second, IssuedTTL: 3599 * time.Second, FetchedAt: fetched},
			{Path: "secret/data/db", Version: 1, FetchedAt: fetched},
		},
		Session: session, RotationPeriod: 10 * time.Second, Jitter: 70233653,
	}
	incoming := clone(published)
	incoming.Incoming = &provider.Session{Token: d[phIncomingToken], Accessor: d[phIncomingAccessor], Renewable: true, IssuedAt: issued, ExpiresAt: expires}
	pending := &Volume{Target: published.Target, VolumeID: published.VolumeID, Pod: pod, Role: "dyn",
		RequestHash: published.RequestHash, Session: session, RotationPeriod: 10 * time.Second, Pending: true}
	wantVolume := map[string]*Volume{"volume": published, "volume-incoming": incoming, "pending": pending}
	wantRevocation := Revocation{Token: d[phToken], Accessor: d[phAccessor], ExpiresAt: expires, Target: d[phTarget],
		PodNamespace: pod.Namespace, PodName: pod.PodName, PodUID: pod.PodUID, ServiceAccount: pod.ServiceAccount,
		Reason: "unpublish", Added: fetched, Attempts: 2, NextAttempt: fetched, LastError: "vault unavailable"}

	for _, kind := range fixtureKinds {
		for schema := schemaV1; schema <= SchemaVersion; schema++ {
			t.Run(fixtureName(kind, schema), func(t *testing.T) {
				if *update && schema == SchemaVersion {
					writeCurrent(t, kind)
				}
				filled := fill(fixture(t, kind, schema), d)
				if strings.Contains(filled, "{{") {
					t.Fatalf("unknown placeholder left in %s", filled)
				}
				var current []byte
				if kind == "revocation" {
					s := newStoreT(t)
					r := dirRevocation(t, s, filled)
					want := wantRevocation
					if schema > schemaV1 {
						want.Schema = schema
					}
					if !reflect.DeepEqual(*r, want) {
						t.Fatalf("read\n%+v\nwant\n%+v", *r, want)
					}
					if err := s.PutRevocation(r); err != nil {
						t.Fatal(err)
					}
					current, _ = os.ReadFile(s.revocationFile(r.Key()))
				} else {
					v, err := decodeVolume([]byte(filled))
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(v, wantVolume[kind]) {
						t.Fatalf("read\n%+v\nwant\n%+v", v, wantVolume[kind])
					}
					if current, err = encodeVolume(v); err != nil {
						t.Fatal(err)
					}
				}
				// Rewritten by this driver: the newest schema, byte for byte.
				if got, want := unfill(string(current), d), strings.TrimSpace(fixture(t, kind, SchemaVersion)); got != want {
					t.Errorf("this driver writes\n%s\nbut the newest fixture is\n%s\n(a format change needs a new schema and fixture)", got, want)
				}
			})
		}
	}
}

// writeCurrent regenerates the newest fixture of a kind from its schema 1
// fixture (go test -run TestRecordedFormats -update).
func writeCurrent(t *testing.T, kind string) {
	t.Helper()
	d := dummies()
	filled := fill(fixture(t, kind, schemaV1), d)
	var b []byte
	if kind == "revocation" {
		s := newStoreT(t)
		r := dirRevocation(t, s, filled)
		if err := s.PutRevocation(r); err != nil {
			t.Fatal(err)
		}
		b, _ = os.ReadFile(s.revocationFile(r.Key()))
	} else {
		v, err := decodeVolume([]byte(filled))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = encodeVolume(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join("testdata", fixtureName(kind, SchemaVersion)), []byte(unfill(string(b), d)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newStoreT(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dirRevocation places a revocation file as an earlier driver left it and
// reads it back through the store.
func dirRevocation(t *testing.T, s *Store, body string) *Revocation {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(s.Dir(), revocationsDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), revocationsDir, "r.json"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Revocations()
	if err != nil || len(rs) != 1 {
		t.Fatalf("Revocations = %d, %v", len(rs), err)
	}
	if err := s.DeleteRevocation("r"); err != nil {
		t.Fatal(err)
	}
	return rs[0]
}

// A record of a schema newer than the driver is an error naming the
// schema, for volumes and revocations alike: never a guess.
func TestNewerSchemaRefused(t *testing.T) {
	s := newStoreT(t)
	const target = "/t/mount"
	if err := os.WriteFile(s.Path(target), []byte(`{"schema":3,"target":"/t/mount"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(target); err == nil || !strings.Contains(err.Error(), "schema 3") {
		t.Errorf("Get of a schema 3 record: %v, want an error naming schema 3", err)
	}
	if _, err := s.Summarize(); err == nil {
		t.Error("Summarize read a schema 3 record")
	}
	if err := os.MkdirAll(filepath.Join(s.Dir(), revocationsDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), revocationsDir, "x.json"), []byte(`{"schema":3,"token":"t"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if rs, err := s.Revocations(); len(rs) != 0 || err == nil || !strings.Contains(err.Error(), "schema 3") {
		t.Errorf("Revocations of a schema 3 record = %d, %v", len(rs), err)
	}
}

// Every field of the file types has an explicit JSON name (what musttag
// checks at lint time, here as a test too): a Go rename cannot change the
// format.
func TestRecordFieldsNamed(t *testing.T) {
	for _, typ := range []reflect.Type{
		reflect.TypeFor[record](), reflect.TypeFor[podRecord](), reflect.TypeFor[secretRecord](), reflect.TypeFor[sessionRecord](),
		reflect.TypeFor[recordV1](), reflect.TypeFor[podRecordV1](), reflect.TypeFor[secretRecordV1](), reflect.TypeFor[sessionRecordV1](),
		reflect.TypeFor[Revocation](),
	} {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name == "" {
				t.Errorf("%s.%s has no JSON name", typ.Name(), f.Name)
			}
		}
	}
}

// A driver rolled back to schema 1 decodes records into the Go-named
// structs of its time: it must read a schema 2 record whole, so that it
// can still refresh and revoke what this driver recorded.
func TestRollbackReadsSchema2(t *testing.T) {
	d := dummies()
	for _, kind := range fixtureKinds {
		t.Run(kind, func(t *testing.T) {
			body := []byte(fill(fixture(t, kind, SchemaVersion), d))
			if kind == "revocation" {
				return // the same type and names in both schemas
			}
			want, err := decodeVolume(body)
			if err != nil {
				t.Fatal(err)
			}
			var old recordV1
			if err := json.Unmarshal(body, &old); err != nil {
				t.Fatal(err)
			}
			if got := old.volume(); !reflect.DeepEqual(got, want) {
				t.Errorf("a schema 1 driver reads\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}
