//go:build tools

// Package tools pins promtool, which `make test` runs on the platform's alert rules (tools.go pattern).
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
