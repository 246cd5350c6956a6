package ops

import "testing"

// The values are a contract (audit lines, metric labels): pinned here.
func TestValues(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{string(Publish), "publish"}, {string(Republish), "republish"}, {string(Refresh), "refresh"},
		{string(Unpublish), "unpublish"}, {string(Deny), "deny"}, {string(Reject), "reject"},
		{string(RevokeRetry), "revoke-retry"},
		{string(OK), "ok"}, {string(Unchanged), "unchanged"}, {string(Skipped), "skipped"},
		{string(Failed), "failed"}, {string(KeptOld), "kept-old"}, {string(Expired), "expired"},
		{string(ActionPublish), "publish"}, {string(ActionRefresh), "refresh"}, {string(ActionRevoke), "revoke"},
		{string(ActionDeny), "deny"}, {string(ActionFail), "fail"}, {string(ActionReject), "reject"},
		{string(DecisionAllow), "allow"}, {string(DecisionDeny), "deny"},
		{string(Signal), "signal"}, {string(ActionSignal), "signal"},
		{string(NotRunning), "not-running"}, {string(NotFound), "not-found"},
	} {
		if c.got != c.want {
			t.Errorf("value %q, want %q", c.got, c.want)
		}
	}
}

func TestMetricOperation(t *testing.T) {
	for k, want := range map[Kind]Kind{
		Publish: Publish, Deny: Publish, Reject: Publish,
		Republish: Refresh, Refresh: Refresh, Unpublish: Unpublish, RevokeRetry: RevokeRetry,
	} {
		if got := k.MetricOperation(); got != want {
			t.Errorf("%s.MetricOperation() = %s, want %s", k, got, want)
		}
	}
}

func TestReloadSignalValid(t *testing.T) {
	for s, want := range map[ReloadSignal]bool{
		SIGHUP: true, SIGUSR1: true, SIGUSR2: true, SIGTERM: true,
		"SIGKILL": false, "SIGSTOP": false, "9": false, "sighup": false, "HUP": false, "": false,
	} {
		if got := s.Valid(); got != want {
			t.Errorf("%q.Valid() = %v, want %v", s, got, want)
		}
	}
}
