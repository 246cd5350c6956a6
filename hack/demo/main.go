// Command demo shows the driver end to end on one machine, as kubelet would
// use it: a real Vault dev server with a sample secret, the driver binary on
// a unix socket, one NodePublishVolume with a kubelet-shaped request, the
// files in the tmpfs, then unpublish and clean-up. Run it with `make demo`.
package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"vaultcsi.dev/driver/driver/csitest"
	"vaultcsi.dev/driver/provider/vaulttest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

const secrets = `- file: db/password
  path: secret/data/db
  key: password
- file: db/user
  path: secret/data/db
  key: username
- file: paypal.json
  path: secret/data/paypal
`

func run() error {
	driverBin := os.Getenv("DRIVER_BIN")
	if driverBin == "" {
		driverBin = "bin/vault-csi-driver"
	}
	step("starting a Vault dev server on 127.0.0.1 (jwt auth, KV v2)")
	v, err := vaulttest.Run()
	if err != nil {
		return err
	}
	defer v.Stop()
	fmt.Println("  vault at", v.Addr)
	ctx := context.Background()
	pod := vaulttest.Pod{Namespace: "shop", PodName: "payment-0", PodUID: "0b0e3c6e-de70-4f00-9c8e-5a1d7f2c0001", ServiceAccount: "payment"}
	if err := v.Root.Sys().PutPolicy("payments", vaulttest.ReadPolicy("secret/data/db", "secret/data/paypal")); err != nil {
		return err
	}
	if err := v.CreateRole("payments", pod.Namespace, pod.ServiceAccount, 0, "payments"); err != nil {
		return err
	}
	if _, err := v.Root.KVv2("secret").Put(ctx, "db", map[string]any{"username": "payments", "password": "correct-horse-battery-staple"}); err != nil {
		return err
	}
	if _, err := v.Root.KVv2("secret").Put(ctx, "paypal", map[string]any{"client_id": "AYS-demo", "token": "demo-paypal-token"}); err != nil {
		return err
	}
	fmt.Println("  wrote secret/db and secret/paypal; role payments may read them as shop/payment")

	work, err := os.MkdirTemp("", "vault-csi-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	stateDir, err := os.MkdirTemp("/dev/shm", "vault-csi-demo-state-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stateDir)
	sock := filepath.Join(work, "csi.sock")

	step("starting the driver")
	cmd := exec.Command(driverBin, "--endpoint=unix://"+sock, "--node-id=demo-node",
		"--vault-addr="+v.Addr, "--auth-method=jwt", "--auth-mount="+v.JWTMount,
		"--state-dir="+stateDir, "-v=2")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w (run `make build` first)", driverBin, err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	node := csi.NewNodeClient(conn)
	info, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil {
		return fmt.Errorf("GetPluginInfo: %w", err)
	}
	fmt.Printf("  driver %s %s on %s\n", info.Name, info.VendorVersion, sock)

	step("NodePublishVolume, as kubelet sends it for an inline volume (3 files, fsGroup 2000)")
	fmt.Print(indent(secrets, "    "))
	target := filepath.Join(work, "pods", pod.PodUID, "volumes", "kubernetes.io~csi", "secrets", "mount")
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return err
	}
	req := csitest.Publish{
		VolumeID: "csi-demo", Target: target, Pod: pod, MountGroup: "2000",
		Attributes:     map[string]string{"role": "payments", "secrets": secrets},
		Tokens:         vaulttest.TokensJSON("vault", v.Token(pod, time.Hour), time.Now().Add(time.Hour)),
		TokenInSecrets: true,
	}.Request()
	start := time.Now()
	if _, err := node.NodePublishVolume(ctx, req); err != nil {
		return fmt.Errorf("NodePublishVolume: %w", err)
	}
	fmt.Printf("  published in %s\n", time.Since(start).Round(10*time.Microsecond))

	step("what the pod sees")
	if line := mountLine(target); line != "" {
		fmt.Println("  mount:", line)
	}
	if err := list(target); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(target, "db/password"))
	if err != nil {
		return err
	}
	fmt.Printf("  cat db/password -> %s\n", b)

	step("NodeUnpublishVolume: revoke the Vault token and its leases, unmount")
	if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-demo", TargetPath: target}); err != nil {
		return fmt.Errorf("NodeUnpublishVolume: %w", err)
	}
	if _, err := os.Stat(target); os.IsNotExist(err) && mountLine(target) == "" {
		fmt.Println("  target unmounted and removed")
	} else {
		return fmt.Errorf("target still present after unpublish")
	}
	step("done: driver stopped, Vault stopped, temp dirs removed")
	return nil
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return pre + strings.Join(lines, "\n"+pre) + "\n"
}

func mountLine(target string) string {
	b, _ := os.ReadFile("/proc/self/mounts")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == target {
			return strings.Join(f[:4], " ")
		}
	}
	return ""
}

// list prints the volume like ls -l, following the visible links.
func list(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if strings.HasPrefix(rel, "..") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		lst, _ := os.Lstat(p)
		if lst.Mode()&os.ModeSymlink != 0 {
			dest, _ := os.Readlink(p)
			fmt.Printf("  %-22s -> %s\n", rel, dest)
			st, err := os.Stat(p)
			if err == nil && st.IsDir() {
				return list2(root, p)
			}
			if err == nil {
				sys := st.Sys().(*syscall.Stat_t)
				fmt.Printf("  %-22s    %v uid=%d gid=%d %d bytes\n", "", st.Mode().Perm(), sys.Uid, sys.Gid, st.Size())
			}
		}
		return nil
	})
}

func list2(root, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		sys := st.Sys().(*syscall.Stat_t)
		fmt.Printf("  %-22s    %v uid=%d gid=%d %d bytes\n", rel, st.Mode().Perm(), sys.Uid, sys.Gid, st.Size())
	}
	return nil
}
