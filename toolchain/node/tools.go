//go:build tools

// Package tools pins the node commands (tools.go pattern; go.mod also lists them as `tool`
// directives).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
