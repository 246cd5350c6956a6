//go:build tools

// Package tools pins modules that packages are about to import, so go.mod is
// settled once rather than edited by several changes at a time.
package tools

import (
	_ "github.com/container-storage-interface/spec/lib/go/csi"
	_ "github.com/hashicorp/vault/api"
	_ "github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "google.golang.org/grpc"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/klog/v2"
	_ "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	_ "k8s.io/mount-utils"
	_ "sigs.k8s.io/yaml"
)
