package driver_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// SIGTERM: the driver stops accepting, exits 0, and leaves mounts in place
// (pods keep their files while the driver is upgraded).
func TestSIGTERMLeavesMounts(t *testing.T) {
	d := startDriver(t)
	target := newTarget(t)
	if _, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: shopPod, secrets: threeSecrets}.request()); err != nil {
		t.Fatal(err)
	}
	d.stop(syscall.SIGTERM)
	if !d.cmd.ProcessState.Success() {
		t.Fatalf("driver exit after SIGTERM: %v\n%s", d.cmd.ProcessState, tail(d.logs.String(), 2000))
	}
	if _, _, ok := mountOptions(t, target); !ok {
		t.Fatal("SIGTERM unmounted a volume")
	}
	if got := read(t, filepath.Join(target, "paypal-token")); got != paypalToken {
		t.Errorf("file after SIGTERM = %q", got)
	}
	if _, err := os.Stat(d.socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind after a clean shutdown: %v", err)
	}
}

// /healthz answers with a real CSI Probe over the socket.
func TestHealthz(t *testing.T) {
	addr, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	startDriver(t, "--health-addr="+addr)
	var resp *http.Response
	for i := 0; i < 100; i++ {
		if resp, err = http.Get("http://" + addr + "/healthz"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("/healthz = %d %q", resp.StatusCode, body)
	}
}

// The driver serves kubelet's plugin-registration API (no
// node-driver-registrar sidecar): GetInfo names a CSI plugin and its socket.
func TestKubeletRegistration(t *testing.T) {
	kubelet := t.TempDir()
	d := startDriver(t, "--kubelet-dir="+kubelet)
	conn := dialRegistration(t, kubelet)
	c := registerapi.NewRegistrationClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := c.GetInfo(ctx, &registerapi.InfoRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != "vault.csi.dev" || info.Endpoint != d.socket || len(info.SupportedVersions) == 0 {
		t.Errorf("GetInfo = %+v", info)
	}
	if _, err := c.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	// On SIGTERM the registration socket goes, so kubelet deregisters.
	d.stop(syscall.SIGTERM)
	if _, err := os.Stat(filepath.Join(kubelet, "plugins_registry", "vault.csi.dev-reg.sock")); !os.IsNotExist(err) {
		t.Errorf("registration socket left after shutdown: %v", err)
	}
}
