// Package csitest builds NodePublishVolume requests shaped exactly as
// kubelet sends them for an inline CSI volume (podInfoOnMount, a token
// request), for the integration tests, the demo and the benchmark.
package csitest

import (
	"github.com/container-storage-interface/spec/lib/go/csi"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// Publish describes one kubelet NodePublishVolume call.
type Publish struct {
	VolumeID, Target string
	Pod              vaulttest.Pod
	// Attributes are the pod's volumeAttributes (role, secrets, ...).
	Attributes map[string]string
	// Tokens is the csi.storage.k8s.io/serviceAccount.tokens JSON
	// (vaulttest.TokensJSON); TokenInSecrets puts it in the request's
	// Secrets as Kubernetes 1.35+ does, instead of the volume context.
	// The token must be minted for Pod (vaulttest.MintToken), whose UID
	// must be a UUID: the driver refuses a token of another identity.
	Tokens         string
	TokenInSecrets bool
	// MountGroup is the pod's fsGroup ("" for none).
	MountGroup string
}

// Request returns the request. kubelet's keys overwrite attributes of the
// same name, as kubelet does.
func (p Publish) Request() *csi.NodePublishVolumeRequest {
	vc := make(map[string]string, len(p.Attributes)+6)
	for k, v := range p.Attributes {
		vc[k] = v
	}
	vc[attributes.KeyPodName], vc[attributes.KeyPodNamespace] = p.Pod.PodName, p.Pod.Namespace
	vc[attributes.KeyPodUID], vc[attributes.KeyServiceAccount] = p.Pod.PodUID, p.Pod.ServiceAccount
	vc[attributes.KeyEphemeral] = "true"
	var secrets map[string]string
	if p.TokenInSecrets {
		secrets = map[string]string{attributes.KeyTokens: p.Tokens}
	} else {
		vc[attributes.KeyTokens] = p.Tokens
	}
	return &csi.NodePublishVolumeRequest{
		VolumeId:   p.VolumeID,
		TargetPath: p.Target,
		Readonly:   true,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{VolumeMountGroup: p.MountGroup}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: vc,
		Secrets:       secrets,
	}
}
