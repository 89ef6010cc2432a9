//go:build tools

// Package tools pins the kwok command (tools.go pattern).
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
