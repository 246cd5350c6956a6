// Package reload finds a Kubernetes container's main process on the node
// and signals it through a pidfd. It reads the host's /proc (the driver
// pod runs with hostPID when reload signals are on): the container ID
// from the pod's status names the process's cgroup in every runtime and
// cgroup layout kubelet uses, which this file parses.
package reload

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotFound means no process of the container was found on this node
// (it exited, or the ID names no container here).
var ErrNotFound = errors.New("no process of the container on this node")

// ParseContainerID splits a containerStatus.containerID,
// "<runtime>://<id>", and checks the id is 64 lower-case hex digits (what
// containerd, CRI-O and Docker use): a shorter string could match a
// component of an unrelated cgroup path.
func ParseContainerID(s string) (runtime, id string, err error) {
	runtime, id, ok := strings.Cut(s, "://")
	if !ok || runtime == "" {
		return "", "", fmt.Errorf("container id %q is not <runtime>://<id>", s)
	}
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", "", fmt.Errorf("container id %q: the id is not 64 hex digits", s)
	}
	return runtime, id, nil
}

// cgroupPaths returns the path field of each line of a /proc/<pid>/cgroup
// file ("hierarchy-ID:controllers:path"; cgroup v2 is one "0::path" line,
// v1 one line per hierarchy, hybrid both).
func cgroupPaths(content string) []string {
	var out []string
	for _, line := range strings.Split(content, "\n") {
		_, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if _, p, ok := strings.Cut(rest, ":"); ok && p != "" {
			out = append(out, p)
		}
	}
	return out
}

// containerComponent reports whether one path component names the
// container id, in the names runtimes give it:
//
//	<id>                        containerd and CRI-O with kubelet's cgroupfs driver
//	cri-containerd-<id>.scope   containerd with the systemd driver
//	crio-<id>.scope, crio-<id>  CRI-O with the systemd and cgroupfs drivers
//	docker-<id>.scope           cri-dockerd with the systemd driver
//
// CRI-O's monitor, crio-conmon-<id>.scope, is not the container.
func containerComponent(c, id string) bool {
	switch c {
	case id, "cri-containerd-" + id + ".scope", "crio-" + id + ".scope", "crio-" + id, "docker-" + id + ".scope":
		return true
	}
	return false
}

// podComponent reports whether one path component is the pod's cgroup:
// pod<uid> (cgroupfs driver) or [<root>-]kubepods[-<qos>]-pod<uid_with_underscores>.slice
// (systemd driver, which writes the whole cgroup path into the slice's
// name: kind's kubelet, with cgroupRoot /kubelet, names it
// kubelet-kubepods-besteffort-pod<uid>.slice).
func podComponent(c, uid string) bool {
	if c == "pod"+uid {
		return true
	}
	us := "pod" + strings.ReplaceAll(uid, "-", "_") + ".slice"
	return strings.HasSuffix(c, "-"+us) &&
		(strings.HasPrefix(c, "kubepods-") || strings.Contains(c, "-kubepods-"))
}

// InContainer reports whether a /proc/<pid>/cgroup file places the process
// in the container id of the pod uid: some cgroup path has the pod's
// component and, below it, the container's. A path is read as components,
// so a namespaced view ("/../../pod<uid>/<id>") matches too.
func InContainer(content, podUID, id string) bool {
	if !strings.Contains(content, id) {
		return false // the common case when scanning every process: cheap
	}
	for _, p := range cgroupPaths(content) {
		pod := false
		for _, c := range strings.Split(p, "/") {
			switch {
			case podComponent(c, podUID):
				pod = true
			case pod && containerComponent(c, id):
				return true
			}
		}
	}
	return false
}
