package driver_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/provider/vaulttest"
)

const threeSecrets = `
- file: db/password
  path: secret/data/db
  key: password
- file: paypal-token
  path: secret/data/paypal
  key: token
  mode: "0400"
- file: api.json
  path: kv/api
`

func TestPublishUnpublish(t *testing.T) {
	d := startDriver(t)
	for _, inSecrets := range []bool{false, true} {
		name := map[bool]string{false: "token in volume context", true: "token in request secrets"}[inSecrets]
		t.Run(name, func(t *testing.T) {
			target := newTarget(t)
			v := volume{target: target, pod: shopPod, secrets: threeSecrets, gid: "2345", inSecrets: inSecrets}
			if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
				t.Fatalf("publish: %v", err)
			}
			fstype, opts, ok := mountOptions(t, target)
			if !ok || fstype != "tmpfs" {
				t.Fatalf("target is not a tmpfs mount (fstype %q)", fstype)
			}
			for _, o := range []string{"nosuid", "nodev", "noexec", "size=", "gid=2345"} {
				if !strings.Contains(opts, o) {
					t.Errorf("mount options %q lack %s", opts, o)
				}
			}
			want := map[string]struct {
				data string
				mode os.FileMode
			}{
				"db/password":  {dbPassword, 0o440},
				"paypal-token": {paypalToken, 0o400},
				"api.json":     {`{"key":"` + kv1APIKey + `"}`, 0o440},
			}
			for name, w := range want {
				p := filepath.Join(target, name)
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatalf("read %s: %v", name, err)
				}
				if string(b) != w.data {
					t.Errorf("%s = %q, want %q", name, b, w.data)
				}
				info, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if info.Mode().Perm() != w.mode {
					t.Errorf("%s mode %#o, want %#o", name, info.Mode().Perm(), w.mode)
				}
				if gid := info.Sys().(*syscall.Stat_t).Gid; gid != 2345 {
					t.Errorf("%s group %d, want 2345 (volume_mount_group)", name, gid)
				}
			}
			// Visible names are links into ..data, as kubelet's AtomicWriter makes them.
			if l, err := os.Readlink(filepath.Join(target, "paypal-token")); err != nil || l != "..data/paypal-token" {
				t.Errorf("paypal-token link = %q, %v", l, err)
			}

			// A second publish of the same target succeeds and changes nothing.
			before, _ := os.Readlink(filepath.Join(target, "..data"))
			if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
				t.Fatalf("second publish: %v", err)
			}
			if after, _ := os.Readlink(filepath.Join(target, "..data")); after != before {
				t.Errorf("second publish rewrote the payload: %s -> %s", before, after)
			}

			un := &csi.NodeUnpublishVolumeRequest{VolumeId: v.request().VolumeId, TargetPath: target}
			for i := 0; i < 2; i++ {
				if _, err := d.node.NodeUnpublishVolume(ctxT(t), un); err != nil {
					t.Fatalf("unpublish #%d: %v", i+1, err)
				}
			}
			if _, _, ok := mountOptions(t, target); ok {
				t.Error("still mounted after unpublish")
			}
			if _, err := os.Stat(target); !os.IsNotExist(err) {
				t.Errorf("target still exists after unpublish: %v", err)
			}
		})
	}
	// Unpublish of a target the driver never saw succeeds.
	if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{
		VolumeId: "csi-unknown", TargetPath: filepath.Join(t.TempDir(), "never-published"),
	}); err != nil {
		t.Errorf("unpublish of unknown target: %v", err)
	}
}

// Every bad request fails with the right code and a message naming the
// field, and leaves nothing mounted or written at the target.
func TestPublishRejects(t *testing.T) {
	d := startDriver(t)
	otherNS := vaulttest.Pod{Namespace: "elsewhere", PodName: "p", PodUID: vaulttest.PodUID("elsewhere/p"), ServiceAccount: "payment"}
	one := func(path, key string) string {
		return "- file: f\n  path: " + path + "\n  key: " + key + "\n"
	}
	tests := []struct {
		name   string
		mutate func(*volume, *csi.NodePublishVolumeRequest)
		code   codes.Code
		field  string
	}{
		{"missing role", func(v *volume, r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, "role") }, codes.InvalidArgument, "role"},
		{"absolute file", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeContext["secrets"] = "- file: /etc/passwd\n  path: secret/data/db\n"
		}, codes.InvalidArgument, "secrets[0].file"},
		{"dotdot file", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeContext["secrets"] = "- file: a/../../x\n  path: secret/data/db\n"
		}, codes.InvalidArgument, "secrets[0].file"},
		{"file named ..data", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeContext["secrets"] = "- file: ..data\n  path: secret/data/db\n"
		}, codes.InvalidArgument, "secrets[0].file"},
		{"duplicate file", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeContext["secrets"] = "- file: a\n  path: secret/data/db\n- file: a\n  path: kv/api\n"
		}, codes.InvalidArgument, "secrets[1].file"},
		{"unknown attribute", func(v *volume, r *csi.NodePublishVolumeRequest) { r.VolumeContext["rol"] = "x" }, codes.InvalidArgument, "volumeAttributes"},
		{"malformed YAML", func(v *volume, r *csi.NodePublishVolumeRequest) { r.VolumeContext["secrets"] = "- file: [" }, codes.InvalidArgument, "secrets"},
		{"unknown YAML key", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeContext["secrets"] = "- file: a\n  path: secret/data/db\n  methd: POST\n"
		}, codes.InvalidArgument, "secrets"},
		{"sys path", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeContext["secrets"] = one("sys/policies/acl/root", "x")
		}, codes.InvalidArgument, "secrets[0].path"},
		{"not read-only", func(v *volume, r *csi.NodePublishVolumeRequest) { r.Readonly = false }, codes.InvalidArgument, "readonly"},
		{"not ephemeral", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeContext[attributes.KeyEphemeral] = "false"
		}, codes.InvalidArgument, attributes.KeyEphemeral},
		{"no token", func(v *volume, r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, attributes.KeyTokens) }, codes.InvalidArgument, attributes.KeyTokens},
		{"block access", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		}, codes.InvalidArgument, "volume_capability"},
		{"bad fsGroup", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.GetMount().VolumeMountGroup = "wheel"
		}, codes.InvalidArgument, "volume_mount_group"},
		{"path outside Vault policy", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeContext["secrets"] = one("secret/data/other", "x")
		}, codes.PermissionDenied, "secret/data/other"},
		{"role bound to another namespace", func(v *volume, r *csi.NodePublishVolumeRequest) {
			*r = *volume{target: v.target, pod: otherNS, secrets: threeSecrets}.request()
		}, codes.PermissionDenied, "login"},
		{"unknown role", func(v *volume, r *csi.NodePublishVolumeRequest) { r.VolumeContext["role"] = "nobody" }, codes.PermissionDenied, "nobody"},
		{"missing path", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeContext["secrets"] = one("secret/data/missing", "x")
		}, codes.NotFound, "secret/data/missing"},
		{"missing key among good ones", func(v *volume, r *csi.NodePublishVolumeRequest) {
			r.VolumeContext["secrets"] = threeSecrets + "- file: g\n  path: secret/data/db\n  key: nokey\n"
		}, codes.NotFound, "nokey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := newTarget(t)
			v := volume{target: target, pod: shopPod, secrets: threeSecrets}
			req := v.request()
			tt.mutate(&v, req)
			_, err := d.node.NodePublishVolume(ctxT(t), req)
			if status.Code(err) != tt.code {
				t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tt.code)
			}
			if !strings.Contains(status.Convert(err).Message(), tt.field) {
				t.Errorf("message %q does not name %q", status.Convert(err).Message(), tt.field)
			}
			for _, secret := range []string{dbPassword, paypalToken, kv1APIKey, otherValue} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error leaks a secret value: %v", err)
				}
			}
			if _, _, ok := mountOptions(t, target); ok {
				t.Error("target left mounted after a failed publish")
			}
			if _, err := os.Stat(target); !os.IsNotExist(err) {
				t.Errorf("target left behind after a failed publish: %v", err)
			}
		})
	}
}

// With --kubelet-dir the target must be kubelet's path for the pod in the
// request: one pod cannot aim a publish at another pod's directory.
func TestTargetPinnedToKubeletLayout(t *testing.T) {
	kubelet := t.TempDir()
	d := startDriver(t, "--kubelet-dir="+kubelet)
	good := filepath.Join(kubelet, "pods", shopPod.PodUID, "volumes", "kubernetes.io~csi", "secrets", "mount")
	if err := os.MkdirAll(filepath.Dir(good), 0o750); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(good, syscall.MNT_DETACH) })
	otherPod := filepath.Join(kubelet, "pods", "another-uid", "volumes", "kubernetes.io~csi", "secrets", "mount")
	for _, tt := range []struct {
		target string
		code   codes.Code
	}{
		{otherPod, codes.InvalidArgument},
		{filepath.Join(t.TempDir(), "mount"), codes.InvalidArgument},
		{filepath.Join(kubelet, "pods", shopPod.PodUID, "volumes", "kubernetes.io~csi", "secrets", "mount", "x", "mount"), codes.InvalidArgument},
		{good, codes.OK},
	} {
		req := volume{target: tt.target, pod: shopPod, secrets: threeSecrets}.request()
		_, err := d.node.NodePublishVolume(ctxT(t), req)
		if status.Code(err) != tt.code {
			t.Errorf("%s: code %v (%v), want %v", tt.target, status.Code(err), err, tt.code)
		}
	}
	if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: good}); err != nil {
		t.Fatal(err)
	}
	// The driver also serves kubelet's plugin registration socket.
	if _, err := os.Stat(filepath.Join(kubelet, "plugins_registry", "vault.csi.dev-reg.sock")); err != nil {
		t.Errorf("registration socket: %v", err)
	}
}

func TestTargetSymlinkRejected(t *testing.T) {
	d := startDriver(t)
	parent := t.TempDir()
	elsewhere := t.TempDir()
	target := filepath.Join(parent, "mount")
	if err := os.Symlink(elsewhere, target); err != nil {
		t.Fatal(err)
	}
	_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: shopPod, secrets: threeSecrets}.request())
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("err = %v, want InvalidArgument naming the symlink", err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("files written through the symlink: %v", entries)
	}
}
