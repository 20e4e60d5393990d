package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// kubectlTimeout bounds each kubectl call.
const kubectlTimeout = 30 * time.Second

// kubeList is a `kubectl get -o json` reply: a List, or one object.
type kubeList struct {
	Kind  string            `json:"kind"`
	Items []json.RawMessage `json:"items"`
}

func items(data []byte) ([]json.RawMessage, error) {
	var l kubeList
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("want the JSON of `kubectl get ... -o json`: %w", err)
	}
	if strings.HasSuffix(l.Kind, "List") {
		return l.Items, nil
	}
	return []json.RawMessage{data}, nil
}

// NodesFromJSON reads the nodes' kernels from `kubectl get nodes -o json`.
func NodesFromJSON(data []byte) ([]Node, error) {
	raw, err := items(data)
	if err != nil {
		return nil, err
	}
	var out []Node
	for _, r := range raw {
		var n struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status struct {
				NodeInfo struct {
					KernelVersion string `json:"kernelVersion"`
				} `json:"nodeInfo"`
			} `json:"status"`
		}
		if err := json.Unmarshal(r, &n); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		out = append(out, Node{Name: n.Metadata.Name, Kernel: n.Status.NodeInfo.KernelVersion})
	}
	return out, nil
}

// StorageClassesFromJSON reads the StorageClasses of driver (their
// provisioner) from `kubectl get storageclass -o json`.
func StorageClassesFromJSON(data []byte, driver string) ([]StorageClass, error) {
	raw, err := items(data)
	if err != nil {
		return nil, err
	}
	var out []StorageClass
	for _, r := range raw {
		var sc struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Provisioner string            `json:"provisioner"`
			Parameters  map[string]string `json:"parameters"`
		}
		if err := json.Unmarshal(r, &sc); err != nil {
			return nil, fmt.Errorf("storageclass: %w", err)
		}
		if sc.Provisioner == driver {
			out = append(out, StorageClass{Name: sc.Metadata.Name, Parameters: sc.Parameters})
		}
	}
	return out, nil
}

// Kubectl runs `kubectl get KIND -o json` with a deadline.
func Kubectl(ctx context.Context, kubectl, kind string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, kubectlTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectl, "get", kind, "-o", "json")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s get %s -o json: %w: %s", kubectl, kind, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// KernelList turns --kernels "3.10,5.10.0-28-amd64" into nodes named by
// their kernel.
func KernelList(s string) []Node {
	var out []Node
	for _, k := range strings.Split(s, ",") {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, Node{Name: k, Kernel: k})
		}
	}
	return out
}
