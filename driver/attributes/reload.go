package attributes

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"vaultcsi.dev/driver/driver/ops"
)

// AttrReload asks for a signal to a container of the pod after a refresh
// that changed the volume's files:
//
//	reload: |
//	  container: app   # required when the pod has more than one container
//	  signal: SIGHUP   # SIGHUP, SIGUSR1, SIGUSR2 or SIGTERM
const AttrReload = "reload"

// Fields of the reload attribute, as named in errors.
const (
	fieldReloadContainer = AttrReload + ".container"
	fieldReloadSignal    = AttrReload + ".signal"
	maxReloadYAML        = 1 << 10
)

// Reload is a validated reload attribute. Container is "" when the pod
// did not name one (allowed only for a pod with one container: Resolve).
type Reload struct {
	Container string
	Signal    ops.ReloadSignal
}

// reloadEntry is the attribute as the pod writes it.
type reloadEntry struct {
	Container *string `json:"container,omitempty"`
	Signal    string  `json:"signal"`
}

// containerNameRE is a Kubernetes container name (a DNS-1123 label).
var containerNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// parseReload validates the reload attribute (pure: the container's
// presence in the pod is checked by Resolve once the pod is known).
func parseReload(raw string) (*Reload, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, fieldErr(AttrReload, "empty: a YAML mapping {container, signal}, or leave the attribute out")
	}
	if len(raw) > maxReloadYAML {
		return nil, fieldErr(AttrReload, "longer than %d bytes", maxReloadYAML)
	}
	// Keys are checked as written: encoding/json would take "Signal" for signal.
	var keys map[string]any
	if err := yaml.UnmarshalStrict([]byte(raw), &keys); err != nil {
		return nil, fieldErr(AttrReload, "not a YAML mapping of {container, signal}: %s", yamlMsg(err))
	}
	for k := range keys {
		if k != "container" && k != "signal" {
			return nil, fieldErr(AttrReload, "unknown key %q (allowed: container, signal)", printable(k))
		}
	}
	var e reloadEntry
	if err := yaml.UnmarshalStrict([]byte(raw), &e); err != nil {
		return nil, fieldErr(AttrReload, "not a YAML mapping of {container, signal}: %s", yamlMsg(err))
	}
	r := &Reload{Signal: ops.ReloadSignal(e.Signal)}
	switch {
	case e.Signal == "":
		return nil, fieldErr(fieldReloadSignal, "required: one of %s", signalList())
	case !r.Signal.Valid():
		return nil, fieldErr(fieldReloadSignal, "%q is not one of %s (no numbers; SIGKILL and SIGSTOP cannot be handled)", printable(e.Signal), signalList())
	}
	if e.Container != nil {
		if !containerNameRE.MatchString(*e.Container) {
			return nil, fieldErr(fieldReloadContainer, "%q is not a container name", printable(*e.Container))
		}
		r.Container = *e.Container
	}
	return r, nil
}

func signalList() string {
	names := make([]string, len(ops.ReloadSignals))
	for i, s := range ops.ReloadSignals {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// Resolve names the container to signal among the pod's containers
// (spec.containers, in order): the one the pod named, which must be
// there, or the only one.
func (r *Reload) Resolve(containers []string) (string, error) {
	if r.Container == "" {
		if len(containers) != 1 {
			return "", fieldErr(fieldReloadContainer, "required: the pod has %d containers (%s)", len(containers), strings.Join(containers, ", "))
		}
		return containers[0], nil
	}
	if !slices.Contains(containers, r.Container) {
		return "", fieldErr(fieldReloadContainer, "%q is not a container of the pod (it has %s)", r.Container, strings.Join(containers, ", "))
	}
	return r.Container, nil
}

// String is the attribute as logs name it.
func (r *Reload) String() string { return fmt.Sprintf("%s to container %q", r.Signal, r.Container) }
