// Command kubeadm is the upstream cluster bootstrapper kind runs inside its node, pinned by ../../go.mod.
package main

import (
	"k8s.io/kubernetes/cmd/kubeadm/app"
	utilerrors "k8s.io/kubernetes/cmd/kubeadm/app/util/errors"
)

func main() {
	utilerrors.HandleError(app.Run())
}
