//go:build tools

// Package tools pins actionlint, the GitHub Actions workflow linter `make test` runs (tools.go pattern).
package tools

import _ "github.com/rhysd/actionlint/cmd/actionlint"
