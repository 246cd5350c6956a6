package reload

import (
	"os"
	"strings"
	"testing"
)

const (
	testPodUID = "6f1c2b7e-3a4d-4e5f-8a9b-0c1d2e3f4a5b"
	testPodUS  = "6f1c2b7e_3a4d_4e5f_8a9b_0c1d2e3f4a5b" // as the systemd driver writes it
	testID     = "4b8c0e7a9d2f1a3b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b"
	otherID    = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"
	otherPod   = "11111111-2222-4333-8444-555555555555"
)

// cgroupCases are /proc/<pid>/cgroup files. "captured" rows are the real
// lines from the local cluster (hack/cluster: containerd 1.6, runc,
// kubelet's cgroupfs driver, cgroup v1 hybrid: nine v1 hierarchies and the
// unified 0:: line all name the container) with their ids replaced by the
// test ids; the others are written from the runtimes' documented
// naming (kubelet cm/cgroup_manager, containerd's and CRI-O's systemd
// scope names) and are proved only by this table.
var cgroupCases = []struct {
	name, content string
	want          bool
}{
	{"captured: v1 hybrid, containerd, cgroupfs driver", captured(testPodUID, testID), true},
	{"captured: the same lines, another container of the pod", captured(testPodUID, otherID), false},
	{"captured: the same lines, another pod", captured(otherPod, testID), false},
	{"v2, containerd, cgroupfs driver", "0::/kubepods/burstable/pod" + testPodUID + "/" + testID + "\n", true},
	{"v2, containerd, systemd driver", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testPodUS + ".slice/cri-containerd-" + testID + ".scope\n", true},
	{"v2, guaranteed QoS, systemd driver", "0::/kubepods.slice/kubepods-pod" + testPodUS + ".slice/cri-containerd-" + testID + ".scope\n", true},
	{"v1, containerd, systemd driver", "12:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testPodUS + ".slice/cri-containerd-" + testID + ".scope\n11:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testPodUS + ".slice/cri-containerd-" + testID + ".scope\n", true},
	{"v1, containerd, systemd driver, kubelet cgroupRoot /kubelet (kind)", "4:memory:/docker/fc75/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + testPodUS + ".slice/cri-containerd-" + testID + ".scope\n", true},
	{"kind layout, another pod", "4:memory:/docker/fc75/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + strings.ReplaceAll(otherPod, "-", "_") + ".slice/cri-containerd-" + testID + ".scope\n", false},
	{"a slice that is not kubelet's", "0::/system.slice/other-pod" + testPodUS + ".slice/cri-containerd-" + testID + ".scope\n", false},
	{"v2, CRI-O, systemd driver", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testPodUS + ".slice/crio-" + testID + ".scope\n", true},
	{"v2, CRI-O, systemd driver, nested container cgroup", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testPodUS + ".slice/crio-" + testID + ".scope/container\n", true},
	{"v1, CRI-O, cgroupfs driver", "10:memory:/kubepods/besteffort/pod" + testPodUID + "/crio-" + testID + "\n", true},
	{"v2, CRI-O's monitor is not the container", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testPodUS + ".slice/crio-conmon-" + testID + ".scope\n", false},
	{"v2, cri-dockerd, systemd driver", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testPodUS + ".slice/docker-" + testID + ".scope\n", true},
	{"v2, seen from a cgroup namespace", "0::/../../kubepods/besteffort/pod" + testPodUID + "/" + testID + "\n", true},
	{"v2, the pod's sandbox cgroup only", "0::/kubepods/besteffort/pod" + testPodUID + "\n", false},
	{"the id outside a pod cgroup", "0::/system.slice/containerd.service/" + testID + "\n", false},
	{"the id above the pod component", "0::/" + testID + "/pod" + testPodUID + "\n", false},
	{"a systemd pod slice of another pod", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(otherPod, "-", "_") + ".slice/cri-containerd-" + testID + ".scope\n", false},
	{"the id as part of a component", "0::/kubepods/besteffort/pod" + testPodUID + "/x" + testID + "\n", false},
	{"the id in the controller field only", "4:" + testID + ":/\n", false},
	{"the host's own cgroups", "0::/init.scope\n1:name=systemd:/\n", false},
	{"empty", "", false},
}

// capturedFile is /proc/<pid>/cgroup of a test pod's main process on the
// local cluster (e2e scenario 12a logs it), verbatim; capturedPod and
// capturedID are that pod's UID and container ID.
const (
	capturedFile = "testdata/containerd-cgroupfs-v1-hybrid.cgroup"
	capturedPod  = "c631ece3-565b-414e-8168-eed5f68b07a6"
	capturedID   = "c0afbc0327f1ff2c8a8b080d0400944802252db1d215a911c11eb5c3867436c3"
)

// captured is the captured file with its pod UID and container ID
// replaced by uid and id, so the table can ask about other pods and
// containers with the same layout.
func captured(uid, id string) string {
	b, err := os.ReadFile(capturedFile)
	if err != nil {
		panic(err)
	}
	return strings.NewReplacer(capturedPod, uid, capturedID, id).Replace(string(b))
}

func TestInContainer(t *testing.T) {
	for _, tt := range cgroupCases {
		t.Run(tt.name, func(t *testing.T) {
			if got := InContainer(tt.content, testPodUID, testID); got != tt.want {
				t.Errorf("InContainer = %v, want %v for\n%s", got, tt.want, tt.content)
			}
		})
	}
}

func TestParseContainerID(t *testing.T) {
	for _, tt := range []struct {
		in, runtime, id string
		ok              bool
	}{
		{"containerd://" + testID, "containerd", testID, true},
		{"cri-o://" + testID, "cri-o", testID, true},
		{"docker://" + testID, "docker", testID, true},
		{testID, "", "", false},
		{"containerd://" + testID[:12], "", "", false},
		{"containerd://" + strings.ToUpper(testID), "", "", false},
		{"containerd://../../" + testID[6:], "", "", false},
		{"://" + testID, "", "", false},
		{"", "", "", false},
	} {
		rt, id, err := ParseContainerID(tt.in)
		if (err == nil) != tt.ok || rt != tt.runtime || id != tt.id {
			t.Errorf("ParseContainerID(%q) = %q, %q, %v; want %q, %q, ok=%v", tt.in, rt, id, err, tt.runtime, tt.id, tt.ok)
		}
	}
}

func TestParseStat(t *testing.T) {
	// The command may hold spaces and ')': fields are counted after the last ')'.
	line := "4242 (sh -c ) (x)) S 17 4242 4242 0 -1 4194560 120 0 0 0 0 0 0 0 20 0 1 0 987654 4304896 200 18446744073709551615 1 1 0 0 0 0 0 0 65536 0 0 0 17 1 0 0 0 0 0\n"
	p, err := parseStat(line)
	if err != nil || p.ppid != 17 || p.start != 987654 || p.dead {
		t.Fatalf("parseStat = %+v, %v; want ppid 17, start 987654, alive", p, err)
	}
	if p, err := parseStat(strings.Replace(line, ") S ", ") Z ", 1)); err != nil || !p.dead {
		t.Errorf("parseStat of a zombie = %+v, %v; want dead", p, err)
	}
	for _, bad := range []string{"", "4242 (sh", "4242 (sh) S 17"} {
		if _, err := parseStat(bad); err == nil {
			t.Errorf("parseStat(%q): no error", bad)
		}
	}
}

func TestNSInit(t *testing.T) {
	for status, want := range map[string]bool{
		"Name:\tsh\nNSpid:\t4242\t1\n":       true,  // PID 1 of the container's namespace
		"Name:\tsh\nNSpid:\t4242\t7\n":       false, // another process of the container
		"Name:\tsh\nNSpid:\t1\n":             false, // the host's init: one namespace only
		"Name:\tsh\nNSpid:\t4242\t9\t1\n":    true,  // nested namespaces
		"Name:\tsh\nPid:\t4242\nPPid:\t17\n": false, // an old kernel without NSpid
	} {
		if got := nsInit(status); got != want {
			t.Errorf("nsInit(%q) = %v, want %v", status, got, want)
		}
	}
}

// The captured file, unchanged, names its own pod and container.
// TestInContainerKindCaptured: /proc/<pid>/cgroup of a pod's main process
// on the kind cluster of make e2e-kind (kind v0.33, containerd's systemd
// cgroup driver under kubelet's cgroupRoot /kubelet, in a node container
// on this cgroup v1 host), verbatim. The first version of podComponent
// missed it, and e2e scenario 12 found no process on kind.
func TestInContainerKindCaptured(t *testing.T) {
	b, err := os.ReadFile("testdata/kind-containerd-systemd-v1.cgroup")
	if err != nil {
		t.Fatal(err)
	}
	const pod, id = "3f198675-d59d-4b6d-abd2-a756cbc7d7e1", "6335525c0169657d0b1bf362c2412e1a1d0cf0ac1bb36c99539d9727c84fb621"
	if !InContainer(string(b), pod, id) {
		t.Errorf("the captured kind cgroup file does not name its own container:\n%s", b)
	}
	if InContainer(string(b), otherPod, id) || InContainer(string(b), pod, otherID) {
		t.Error("the captured kind cgroup file names another pod or container")
	}
}

func TestInContainerCaptured(t *testing.T) {
	b, err := os.ReadFile(capturedFile)
	if err != nil {
		t.Fatal(err)
	}
	if !InContainer(string(b), capturedPod, capturedID) {
		t.Errorf("the captured cgroup file does not name its own container:\n%s", b)
	}
	if len(cgroupPaths(string(b))) != 10 {
		t.Errorf("cgroupPaths found %d paths, want 10 (9 v1 hierarchies and the unified line)", len(cgroupPaths(string(b))))
	}
}
