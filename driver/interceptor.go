package driver

import (
	"context"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"

	"vaultcsi.dev/driver/driver/attributes"
)

const redacted = "***redacted***"

// logInterceptor logs every call at -v=4 and failures at -v=2, with the
// request redacted first: a publish request carries the pod's service-account
// token in Secrets or in the volume context (CVE-2023-2878 was a peer driver
// logging exactly that). Nothing else in the driver logs a request.
func logInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	if klog.V(5).Enabled() {
		klog.V(5).InfoS("CSI call", "method", info.FullMethod, "request", Redact(req))
	}
	resp, err := handler(ctx, req)
	if err != nil {
		klog.V(2).InfoS("CSI call failed", "method", info.FullMethod, "code", status.Code(err).String(),
			"error", err.Error(), "latency", time.Since(start))
	} else {
		klog.V(4).InfoS("CSI call done", "method", info.FullMethod, "latency", time.Since(start))
	}
	return resp, err
}

// Redact returns a copy of a CSI request fit for a log line: every Secrets
// value and the token entry of the volume context are replaced.
func Redact(req any) any {
	m, ok := req.(proto.Message)
	if !ok {
		return "<non-proto request>"
	}
	c := proto.Clone(m)
	switch r := c.(type) {
	case *csi.NodePublishVolumeRequest:
		r.Secrets = redactMap(r.Secrets)
		if _, ok := r.VolumeContext[attributes.KeyTokens]; ok {
			r.VolumeContext[attributes.KeyTokens] = redacted
		}
	case *csi.NodeStageVolumeRequest:
		r.Secrets = redactMap(r.Secrets)
		if _, ok := r.VolumeContext[attributes.KeyTokens]; ok {
			r.VolumeContext[attributes.KeyTokens] = redacted
		}
	}
	return c
}

func redactMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k := range m {
		out[k] = redacted
	}
	return out
}
