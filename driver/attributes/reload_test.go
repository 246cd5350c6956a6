package attributes

import (
	"errors"
	"strings"
	"testing"

	"vaultcsi.dev/driver/driver/ops"
)

func TestParseReloadValid(t *testing.T) {
	for _, tt := range []struct {
		name, raw string
		want      Reload
	}{
		{"container and signal", "container: app\nsignal: SIGHUP\n", Reload{Container: "app", Signal: ops.SIGHUP}},
		{"signal only", "signal: SIGUSR1", Reload{Signal: ops.SIGUSR1}},
		{"flow style", "{container: web-2, signal: SIGUSR2}", Reload{Container: "web-2", Signal: ops.SIGUSR2}},
		{"SIGTERM", "signal: SIGTERM\ncontainer: a", Reload{Container: "a", Signal: ops.SIGTERM}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := baseContext()
			ctx[AttrReload] = tt.raw
			v, err := Parse(ctx, nil, audience)
			if err != nil {
				t.Fatal(err)
			}
			if v.Reload == nil || *v.Reload != tt.want {
				t.Fatalf("Reload = %+v, want %+v", v.Reload, tt.want)
			}
		})
	}
	v, err := Parse(baseContext(), nil, audience)
	if err != nil || v.Reload != nil {
		t.Fatalf("without the attribute: Reload = %+v, %v; want nil", v.Reload, err)
	}
}

func TestParseReloadRejected(t *testing.T) {
	for _, tt := range []struct{ name, raw, field string }{
		{"SIGKILL", "signal: SIGKILL", "reload.signal"},
		{"SIGSTOP", "signal: SIGSTOP", "reload.signal"},
		{"a number", "signal: 9", "reload.signal"},
		{"a quoted number", `signal: "1"`, "reload.signal"},
		{"lower case", "signal: sighup", "reload.signal"},
		{"without SIG", "signal: HUP", "reload.signal"},
		{"missing signal", "container: app", "reload.signal"},
		{"empty signal", `signal: ""`, "reload.signal"},
		{"bad container name", "container: App_1\nsignal: SIGHUP", "reload.container"},
		{"empty container name", "container: \"\"\nsignal: SIGHUP", "reload.container"},
		{"container name with slash", "container: a/b\nsignal: SIGHUP", "reload.container"},
		{"unknown key", "signal: SIGHUP\npid: 1", "reload"},
		{"case-folded key", "Signal: SIGHUP", "reload"},
		{"malformed YAML", "signal: [SIGHUP", "reload"},
		{"a list", "- signal: SIGHUP", "reload"},
		{"a bare word", "SIGHUP", "reload"},
		{"empty", " \n", "reload"},
		{"too long", "signal: SIGHUP\n#" + strings.Repeat("x", maxReloadYAML), "reload"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := baseContext()
			ctx[AttrReload] = tt.raw
			v, err := Parse(ctx, nil, audience)
			if err == nil {
				t.Fatalf("accepted: %+v", v.Reload)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("error %v: want a FieldError naming %q", err, tt.field)
			}
			if strings.ContainsAny(err.Error(), "\n\x00") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestReloadResolve(t *testing.T) {
	for _, tt := range []struct {
		name       string
		r          Reload
		containers []string
		want       string // "" : an error naming reload.container
	}{
		{"named and present", Reload{Container: "app"}, []string{"proxy", "app"}, "app"},
		{"unnamed, one container", Reload{}, []string{"app"}, "app"},
		{"unnamed, two containers", Reload{}, []string{"app", "proxy"}, ""},
		{"named, absent", Reload{Container: "db"}, []string{"app", "proxy"}, ""},
		{"named, no containers", Reload{Container: "app"}, nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.r.Resolve(tt.containers)
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("Resolve = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "reload.container" {
				t.Fatalf("Resolve = %q, %v; want an error naming reload.container", got, err)
			}
		})
	}
}
